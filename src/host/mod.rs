//! Host facts read from `/proc` and `/sys` (no crate needed): CPU times, memory, whole-disk IO
//! counters, CPU count, distribution, cgroup memory limits. `HOST_PROC` relocates `/proc` as in
//! the Go agent; `HOST_SYS` and `HOST_ETC` do the same for `/sys` and `/etc` (tests use them).

pub mod cgroup;
pub mod cpu;
pub mod disk;
pub mod distro;
pub mod memory;

use std::path::PathBuf;

fn root(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

pub fn proc_path(rel: &str) -> PathBuf {
    root("HOST_PROC", "/proc").join(rel)
}

pub fn sys_path(rel: &str) -> PathBuf {
    root("HOST_SYS", "/sys").join(rel)
}

pub fn etc_path(rel: &str) -> PathBuf {
    root("HOST_ETC", "/etc").join(rel)
}

pub(crate) fn read(path: &std::path::Path) -> crate::error::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| crate::error::Error::other(format!("reading {}: {e}", path.display())))
}
