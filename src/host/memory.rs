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

/// [`host`] for the memory guardrail, which asks every second: only the two lines it needs are
/// read from /proc/meminfo, without building procfs's map of all ~55 fields (a sixth of a
/// millisecond each time). Kernels without MemAvailable take the full path.
pub fn host_available() -> Result<Memory> {
    let path = proc_path("meminfo");
    quick_at(&path).map_or_else(|| memory_at(&path), Ok)
}

fn quick_at(path: &Path) -> Option<Memory> {
    let text = std::fs::read_to_string(path).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let v = line[key.len()..].trim().strip_suffix("kB")?.trim();
        v.parse::<u64>().ok()?.checked_mul(1024)
    };
    Some(Memory {
        total: kib("MemTotal:")?,
        available: kib("MemAvailable:")?,
    })
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
        // The guardrail's two-line read agrees; without MemAvailable it is not used.
        assert_eq!(quick_at(&dir.join("meminfo")), Some(m));
        assert_eq!(quick_at(&dir.join("meminfo.no-available")), None);
        let live = Path::new("/proc/meminfo");
        let (full, quick) = (memory_at(live).unwrap(), quick_at(live).unwrap());
        assert_eq!(full.total, quick.total);
        let err = memory_at(&dir.join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
