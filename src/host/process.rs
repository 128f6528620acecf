//! A process's name and parent from /proc/<pid>/stat (parsed by procfs). Used to find the
//! postmaster (our backend's parent) for the memory guardrail's cgroup.

use super::proc_path;
use procfs::process::Process;
use std::path::Path;

fn stat_at(proc_root: &Path, pid: u32) -> Option<procfs::process::Stat> {
    Process::new_with_root(proc_root.join(pid.to_string()))
        .ok()?
        .stat()
        .ok()
}

/// `pid`'s parent, when `pid` exists on this host.
pub fn parent_of(pid: u32) -> Option<u32> {
    parent_at(&proc_path(""), pid)
}

fn parent_at(proc_root: &Path, pid: u32) -> Option<u32> {
    u32::try_from(stat_at(proc_root, pid)?.ppid).ok()
}

/// True when `pid` on this host is a PostgreSQL process (so its cgroup is PostgreSQL's).
pub fn is_postgres_process(pid: u32) -> bool {
    is_postgres_at(&proc_path(""), pid)
}

fn is_postgres_at(proc_root: &Path, pid: u32) -> bool {
    stat_at(proc_root, pid).is_some_and(|s| {
        s.comm == "postgres" || s.comm == "postmaster" || s.comm.starts_with("postgres")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_and_name_from_stat() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/proc");
        assert_eq!(parent_at(&root, 43), Some(42));
        assert!(is_postgres_at(&root, 43));
        assert!(is_postgres_at(&root, 42));
        assert!(!is_postgres_at(&root, 99));
        assert!(!is_postgres_at(&root, 12345));
        assert_eq!(parent_at(&root, 12345), None);
    }

    #[test]
    fn this_process_is_found() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
        assert!(!is_postgres_process(me));
    }
}
