//! Host memory from /proc/meminfo (parsed by procfs).

use super::{proc_error, proc_path};
use crate::error::Result;
use procfs::{FromRead, Meminfo};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
}

impl Memory {
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
    pub fn used_percent(&self) -> f64 {
        super::percent_of(self.used(), self.total)
    }
}

/// Kernels before 3.14 have no MemAvailable: free + buffers + page cache stands in for it.
fn memory_at(path: &Path) -> Result<Memory> {
    let m = Meminfo::from_file(path).map_err(|e| proc_error(path, e))?;
    Ok(Memory {
        total: m.mem_total,
        available: m.mem_available.unwrap_or(m.mem_free + m.buffers + m.cached),
    })
}

pub fn host() -> Result<Memory> {
    memory_at(&proc_path("meminfo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/proc");
        let m = memory_at(&dir.join("meminfo")).unwrap();
        assert_eq!(m.total, 16000 * 1024);
        assert_eq!(m.used(), 12000 * 1024);
        assert!((m.used_percent() - 75.0).abs() < 1e-9);
        // Old kernel: MemFree 1000 + Buffers 500 + Cached 2000 kB.
        let old = memory_at(&dir.join("meminfo.no-available")).unwrap();
        assert_eq!(old.available, 3500 * 1024);
        let err = memory_at(&dir.join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
