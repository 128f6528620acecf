//! CPU utilisation from the aggregate `cpu` line of /proc/stat, and the logical CPU count.

use super::{proc_path, read};
use crate::error::{Error, Result};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the `cpu ` line: total = user+nice+system+idle+iowait+irq+softirq+steal (guest and
/// guest_nice are already inside user/nice on Linux, so they are not added), busy = total −
/// idle − iowait.
pub fn parse_stat(text: &str) -> Result<CpuTimes> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| Error::other("no aggregate cpu line in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let total = (0..8).map(get).sum::<u64>();
    let busy = total.saturating_sub(get(3) + get(4));
    Ok(CpuTimes { busy, total })
}

pub fn times() -> Result<CpuTimes> {
    parse_stat(&read(&proc_path("stat"))?)
}

/// Busy percentage between two samples, clamped to 0–100.
pub fn busy_percent(a: CpuTimes, b: CpuTimes) -> f64 {
    if b.busy <= a.busy {
        return 0.0;
    }
    if b.total <= a.total {
        return 100.0;
    }
    let p = (b.busy - a.busy) as f64 / (b.total - a.total) as f64 * 100.0;
    p.clamp(0.0, 100.0)
}

/// Samples CPU over `window` (the Go agent uses 100 ms).
pub fn usage(window: Duration) -> Result<f64> {
    let a = times()?;
    std::thread::sleep(window);
    let b = times()?;
    Ok(busy_percent(a, b))
}

/// Logical CPUs: `processor : N` lines of /proc/cpuinfo, else `cpuN` lines of /proc/stat.
pub fn count() -> Result<i64> {
    let info = read(&proc_path("cpuinfo")).unwrap_or_default();
    let n = info
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    if n > 0 {
        return Ok(n as i64);
    }
    let stat = read(&proc_path("stat"))?;
    Ok(stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_computes() {
        let a = parse_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        let b = parse_stat("cpu  200 0 100 850 50 0 0 0 0 0").unwrap();
        assert!((busy_percent(a, b) - 75.0).abs() < 1e-9);
        assert_eq!(busy_percent(b, a), 0.0);
    }
}
