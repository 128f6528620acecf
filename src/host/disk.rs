//! Completed read/write operations of whole disks from /proc/diskstats (parsed by procfs).
//! Partitions, loop, ram, zram and device-mapper devices are left out so nothing is counted
//! twice (the Go agent sums every line). A device is a whole disk when /sys/block/<name> exists
//! and it is not virtual stacking (dm-*, md*, loop*, ram*, zram*); without /sys, partition names
//! are recognised.

use super::{proc_error, proc_path, sys_path};
use crate::error::Result;
use procfs::{DiskStat, DiskStats, FromRead};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskOps {
    pub reads: u64,
    pub writes: u64,
}

fn is_virtual(name: &str) -> bool {
    ["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Heuristic for partitions when /sys/block is not available: sda1, vda2, nvme0n1p1, mmcblk0p1.
fn looks_like_partition(name: &str) -> bool {
    if name.starts_with("nvme") || name.starts_with("mmcblk") {
        return name.rsplit_once('p').is_some_and(|(a, b)| {
            a.ends_with(|c: char| c.is_ascii_digit())
                && !b.is_empty()
                && b.bytes().all(|c| c.is_ascii_digit())
        });
    }
    name.ends_with(|c: char| c.is_ascii_digit())
}

fn sum_whole_disks(stats: &[DiskStat], is_whole_disk: &dyn Fn(&str) -> bool) -> DiskOps {
    stats
        .iter()
        .filter(|d| !is_virtual(&d.name) && is_whole_disk(&d.name))
        .fold(DiskOps::default(), |acc, d| DiskOps {
            reads: acc.reads + d.reads,
            writes: acc.writes + d.writes,
        })
}

pub fn whole_disk_ops() -> Result<DiskOps> {
    let path = proc_path("diskstats");
    let stats = DiskStats::from_file(&path).map_err(|e| proc_error(&path, e))?;
    let sys_block = sys_path("block");
    let have_sys = sys_block.is_dir();
    Ok(sum_whole_disks(&stats.0, &|name| {
        if have_sys {
            sys_block.join(name).exists()
        } else {
            !looks_like_partition(name)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_disks_only() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/host/proc/diskstats");
        let stats = DiskStats::from_file(path).unwrap();
        let ops = sum_whole_disks(&stats.0, &|n| !looks_like_partition(n));
        assert_eq!(
            ops,
            DiskOps {
                reads: 1010,
                writes: 2020
            }
        );
        // With /sys/block listing only vda, nvme0n1 is not counted either.
        let ops = sum_whole_disks(&stats.0, &|n| n == "vda");
        assert_eq!(
            ops,
            DiskOps {
                reads: 1000,
                writes: 2000
            }
        );
    }
}
