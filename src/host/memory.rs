//! Host memory from /proc/meminfo.

use super::{proc_path, read};
use crate::error::{Error, Result};

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
        if self.total == 0 {
            0.0
        } else {
            self.used() as f64 / self.total as f64 * 100.0
        }
    }
}

pub fn parse_meminfo(text: &str) -> Result<Memory> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let total =
        field("MemTotal").ok_or_else(|| Error::other("MemTotal missing from /proc/meminfo"))?;
    let available = field("MemAvailable")
        .or_else(|| {
            Some(field("MemFree")? + field("Buffers").unwrap_or(0) + field("Cached").unwrap_or(0))
        })
        .ok_or_else(|| Error::other("MemAvailable missing from /proc/meminfo"))?;
    Ok(Memory { total, available })
}

pub fn host() -> Result<Memory> {
    parse_meminfo(&read(&proc_path("meminfo"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let m =
            parse_meminfo("MemTotal:       16000 kB\nMemFree: 1 kB\nMemAvailable:    4000 kB\n")
                .unwrap();
        assert_eq!(m.total, 16000 * 1024);
        assert_eq!(m.used(), 12000 * 1024);
        assert!((m.used_percent() - 75.0).abs() < 1e-9);
    }
}
