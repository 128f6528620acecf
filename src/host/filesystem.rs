//! Size and fill of the filesystem holding a path (the data directory), from the mount table
//! and statvfs as read by sysinfo. The mount is the longest mount point that is a prefix of the
//! canonical path, so `/var/lib/postgresql` on its own volume is not reported as `/`. sysinfo
//! skips pseudo filesystems and network mounts (NFS, CIFS: statvfs can hang on them); tmpfs is
//! kept (feature `linux-tmpfs`) since test and CI clusters often live there.

use std::path::{Path, PathBuf};
use sysinfo::{DiskRefreshKind, Disks};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsUsage {
    pub total: u64,
    /// Space an unprivileged writer (PostgreSQL) can still use; root-reserved blocks count
    /// as used.
    pub available: u64,
}

impl FsUsage {
    pub fn used_percent(&self) -> f64 {
        super::percent_of(self.total.saturating_sub(self.available), self.total)
    }
}

/// Keeps sysinfo's mount list between samples (refreshed each time: volumes come and go).
pub struct Filesystems {
    /// `None` where sysinfo does not support the platform.
    disks: Option<Disks>,
}

impl Default for Filesystems {
    fn default() -> Self {
        Filesystems {
            disks: Disks::new().ok(),
        }
    }
}

impl Filesystems {
    /// Usage of the filesystem holding `path`; `None` when the path does not exist here or no
    /// mount holds it.
    pub fn containing(&mut self, path: &Path) -> Option<FsUsage> {
        let path = std::fs::canonicalize(path).ok()?;
        let disks = self.disks.as_mut()?;
        disks.refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        let mounts: Vec<(PathBuf, FsUsage)> = disks
            .iter()
            .map(|d| {
                (
                    d.mount_point().to_path_buf(),
                    FsUsage {
                        total: d.total_space(),
                        available: d.available_space(),
                    },
                )
            })
            .collect();
        holding(&mounts, &path)
    }
}

/// The deepest mount point that contains `path` (the last one listed wins a tie: over-mounts).
fn holding(mounts: &[(PathBuf, FsUsage)], path: &Path) -> Option<FsUsage> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, (m, _))| path.starts_with(m))
        .max_by_key(|(i, (m, _))| (m.components().count(), *i))
        .map(|(_, (_, u))| *u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(total: u64) -> FsUsage {
        FsUsage {
            total,
            available: total / 4,
        }
    }

    #[test]
    fn deepest_mount_wins() {
        let mounts = vec![
            (PathBuf::from("/"), u(100)),
            (PathBuf::from("/var/lib"), u(200)),
            (PathBuf::from("/var/lib/postgresql"), u(300)),
            (PathBuf::from("/var/lib/postgresql-other"), u(400)),
            (PathBuf::from("/var/lib"), u(500)),
        ];
        let at = |p: &str| holding(&mounts, Path::new(p)).map(|u| u.total);
        assert_eq!(at("/var/lib/postgresql/16/main"), Some(300));
        // Prefix by path component, not by string.
        assert_eq!(at("/var/lib/postgresql2/x"), Some(500));
        assert_eq!(at("/srv/pg"), Some(100));
        assert_eq!(holding(&mounts[1..2], Path::new("/srv")), None);
        assert!((u(100).used_percent() - 75.0).abs() < 1e-9);
    }

    /// Against the kernel's own answer for this test's directory.
    #[test]
    fn matches_statvfs_of_a_real_directory() {
        let dir = std::env::temp_dir();
        let got = Filesystems::default()
            .containing(&dir)
            .expect("a mount holds the temp directory");
        let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        assert_eq!(got.total, s.f_blocks as u64 * s.f_frsize as u64);
        // Free space moves while other tests write: within 1 GiB.
        let avail = s.f_bavail as u64 * s.f_frsize as u64;
        assert!(
            got.available.abs_diff(avail) < 1 << 30,
            "{got:?} vs {avail}"
        );
        assert!(Filesystems::default()
            .containing(Path::new("/no/such/dir"))
            .is_none());
    }
}
