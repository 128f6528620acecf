//! Host facts: CPU times, memory, whole-disk IO counters, CPU count, a process's parent and
//! cgroup (all parsed by the `procfs` crate), cgroup memory limits (cgroupfs under `/sys`), the
//! data directory's filesystem and network counters (`sysinfo`), and the distribution (vendor
//! release files, see distro.rs for why not sysinfo). `HOST_PROC` relocates `/proc` as in the Go
//! agent; `HOST_SYS` and `HOST_ETC` do the same for `/sys` and `/etc` (tests use them).

pub mod cgroup;
pub mod cpu;
pub mod disk;
pub mod distro;
pub mod filesystem;

pub mod memory;
pub mod network;

pub mod process;

use std::path::{Path, PathBuf};

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

/// `part` as a percentage of `whole` (0 when `whole` is 0): memory, cgroup and disk fill.
pub(crate) fn percent_of(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

/// A procfs parse/read failure as our error, naming the file.
pub(crate) fn proc_error(path: &Path, e: procfs::ProcError) -> crate::error::Error {
    crate::error::Error::other(format!("reading {}: {e}", path.display()))
}
