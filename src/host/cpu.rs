//! CPU utilisation from the aggregate `cpu` line of /proc/stat, and the logical CPU count
//! (both parsed by procfs).

use super::{proc_error, proc_path};
use crate::error::Result;
use procfs::{CpuInfo, FromRead, FromReadSI, KernelStats};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

fn kernel_stats(path: &Path) -> Result<KernelStats> {
    KernelStats::from_file(path, procfs::current_system_info()).map_err(|e| proc_error(path, e))
}

/// total = user+nice+system+idle+iowait+irq+softirq+steal (guest and guest_nice are already
/// inside user/nice on Linux, so they are not added), busy = total − idle − iowait.
fn times_at(path: &Path) -> Result<CpuTimes> {
    let t = kernel_stats(path)?.total;
    let (iowait, irq, softirq, steal) = (
        t.iowait.unwrap_or(0),
        t.irq.unwrap_or(0),
        t.softirq.unwrap_or(0),
        t.steal.unwrap_or(0),
    );
    let total = t.user + t.nice + t.system + t.idle + iowait + irq + softirq + steal;
    Ok(CpuTimes {
        busy: total.saturating_sub(t.idle + iowait),
        total,
    })
}

pub fn times() -> Result<CpuTimes> {
    times_at(&proc_path("stat"))
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

/// Logical CPUs: the entries of /proc/cpuinfo, else the `cpuN` lines of /proc/stat.
fn count_at(root: &Path) -> Result<i64> {
    let n = CpuInfo::from_file(root.join("cpuinfo"))
        .map(|c| c.num_cores())
        .unwrap_or(0);
    if n > 0 {
        return Ok(n as i64);
    }
    Ok(kernel_stats(&root.join("stat"))?.cpu_time.len() as i64)
}

pub fn count() -> Result<i64> {
    count_at(&proc_path(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/proc")
    }

    #[test]
    fn parses_and_computes() {
        let a = times_at(&fixtures().join("stat")).unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 150,
                total: 1000
            }
        );
        let b = times_at(&fixtures().join("stat.later")).unwrap();
        assert!((busy_percent(a, b) - 75.0).abs() < 1e-9);
        assert_eq!(busy_percent(b, a), 0.0);
    }

    #[test]
    fn counts_cpuinfo_then_stat() {
        assert_eq!(count_at(&fixtures()).unwrap(), 3);
        // Without cpuinfo (some containers hide it) the per-CPU lines of /proc/stat count.
        let dir = std::env::temp_dir().join(format!("dbtune-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixtures().join("stat"), dir.join("stat")).unwrap();
        assert_eq!(count_at(&dir).unwrap(), 2);
        let err = count_at(&dir.join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing/stat"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
