//! Memory of the cgroup that limits a process (cgroup v2, then v1). Used by the memory
//! guardrail so a PostgreSQL service with `MemoryMax=` (or a container limit) is judged against
//! its own limit, not the host's RAM.

use super::{proc_path, sys_path};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    pub limit: u64,
    /// Working set: usage minus inactive file cache (what the kernel cannot simply drop).
    pub used: u64,
}

impl CgroupMemory {
    pub fn used_percent(&self) -> f64 {
        super::percent_of(self.used, self.limit)
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Where the limit that applies to a process is kept: the cgroup directory (the nearest
/// ancestor with a limit on v2, the memory controller's group on v1). Finding it walks the
/// hierarchy; reading it afterwards is three small files, so the guardrail (every second)
/// locates once a minute and reads every time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limited {
    V2(PathBuf),
    V1(PathBuf),
}

/// Limit and usage for `pid`'s cgroup; `None` when no limit applies (or nothing is readable).
pub fn memory_of(pid: u32) -> Option<CgroupMemory> {
    locate(pid).as_ref().and_then(read)
}

/// The cgroup directory whose limit applies to `pid`; `None` when none does.
pub fn locate(pid: u32) -> Option<Limited> {
    locate_at(&proc_path(""), &sys_path(""), pid)
}

/// [`locate`] with explicit `/proc` and `/sys` roots. The membership (/proc/<pid>/cgroup) is
/// parsed by procfs; the limits are cgroupfs files.
fn locate_at(proc_root: &Path, sys_root: &Path, pid: u32) -> Option<Limited> {
    let groups = procfs::process::Process::new_with_root(proc_root.join(pid.to_string()))
        .ok()?
        .cgroups()
        .ok()?
        .0;
    // v2: the unified hierarchy `0::/path`.
    if let Some(g) = groups
        .iter()
        .find(|g| g.hierarchy == 0 && g.controllers.is_empty())
    {
        let base = sys_root.join("fs/cgroup");
        let mut dir = base.join(g.pathname.trim_start_matches('/'));
        // The nearest ancestor with a limit is what applies.
        loop {
            let limited = Limited::V2(dir.clone());
            if read(&limited).is_some() {
                return Some(limited);
            }
            if dir == base || !dir.pop() || !dir.starts_with(&base) {
                return None;
            }
        }
    }
    // v1: the hierarchy whose controllers include `memory` (they may be combined).
    let g = groups
        .iter()
        .find(|g| g.controllers.iter().any(|c| c == "memory"))?;
    let limited = Limited::V1(
        sys_root
            .join("fs/cgroup/memory")
            .join(g.pathname.trim_start_matches('/')),
    );
    read(&limited).map(|_| limited)
}

/// Limit and working set kept in `at`; `None` when it holds no limit (any more).
pub fn read(at: &Limited) -> Option<CgroupMemory> {
    match at {
        Limited::V2(dir) => {
            let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
            let limit = max.trim().parse::<u64>().ok()?; // "max": no limit here
            let current = read_u64(&dir.join("memory.current"))?;
            let inactive = stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
            Some(CgroupMemory {
                limit,
                used: current.saturating_sub(inactive),
            })
        }
        Limited::V1(dir) => {
            let limit = read_u64(&dir.join("memory.limit_in_bytes"))?;
            // v1 reports "no limit" as a huge page-rounded number.
            if limit >= (1u64 << 60) {
                return None;
            }
            let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
            let inactive = stat_field(&dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
            Some(CgroupMemory {
                limit,
                used: usage.saturating_sub(inactive),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn memory_at(proc_root: &Path, sys_root: &Path, pid: u32) -> Option<CgroupMemory> {
        locate_at(proc_root, sys_root, pid).as_ref().and_then(read)
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn v2_nearest_limit_and_working_set() {
        let root = std::env::temp_dir().join(format!("dbtune-cg2-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (proc_root, sys_root) = (root.join("proc"), root.join("sys"));
        write(
            &proc_root,
            "42/cgroup",
            "0::/system.slice/postgresql@16-main.service\n",
        );
        let unit = "fs/cgroup/system.slice/postgresql@16-main.service";
        // The unit itself has no limit; its slice does.
        write(&sys_root, &format!("{unit}/memory.max"), "max\n");
        write(&sys_root, "fs/cgroup/system.slice/memory.max", "1000\n");
        write(&sys_root, "fs/cgroup/system.slice/memory.current", "950\n");
        write(
            &sys_root,
            "fs/cgroup/system.slice/memory.stat",
            "anon 700\ninactive_file 100\nactive_file 150\n",
        );
        let m = memory_at(&proc_root, &sys_root, 42).unwrap();
        assert_eq!(
            m,
            CgroupMemory {
                limit: 1000,
                used: 850
            }
        );
        assert!((m.used_percent() - 85.0).abs() < 1e-9);
        // No limit anywhere: the host's memory applies.
        write(&sys_root, "fs/cgroup/system.slice/memory.max", "max\n");
        assert_eq!(memory_at(&proc_root, &sys_root, 42), None);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn v1_memory_controller() {
        let root = std::env::temp_dir().join(format!("dbtune-cg1-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (proc_root, sys_root) = (root.join("proc"), root.join("sys"));
        write(
            &proc_root,
            "7/cgroup",
            "12:cpu,cpuacct:/x\n4:memory:/docker/abc\n",
        );
        write(
            &sys_root,
            "fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
            "2048\n",
        );
        write(
            &sys_root,
            "fs/cgroup/memory/docker/abc/memory.usage_in_bytes",
            "1024\n",
        );
        write(
            &sys_root,
            "fs/cgroup/memory/docker/abc/memory.stat",
            "total_inactive_file 24\n",
        );
        assert_eq!(
            memory_at(&proc_root, &sys_root, 7),
            Some(CgroupMemory {
                limit: 2048,
                used: 1000
            })
        );
        // v1 "unlimited" is a huge number.
        write(
            &sys_root,
            "fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(memory_at(&proc_root, &sys_root, 7), None);
        let _ = fs::remove_dir_all(&root);
    }
}
