//! Completed read/write operations of whole disks from /proc/diskstats. Partitions, loop, ram,
//! zram and device-mapper devices are left out so nothing is counted twice (the Go agent sums
//! every line). A device is a whole disk when /sys/block/<name> exists and it is not virtual
//! stacking (dm-*, md*, loop*, ram*, zram*); without /sys, partition names are recognised.

use super::{proc_path, read, sys_path};
use crate::error::Result;

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

pub fn parse_diskstats(text: &str, is_whole_disk: &dyn Fn(&str) -> bool) -> DiskOps {
    let mut ops = DiskOps::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let name = f[2];
        if is_virtual(name) || !is_whole_disk(name) {
            continue;
        }
        ops.reads += f[3].parse::<u64>().unwrap_or(0);
        ops.writes += f[7].parse::<u64>().unwrap_or(0);
    }
    ops
}

pub fn whole_disk_ops() -> Result<DiskOps> {
    let text = read(&proc_path("diskstats"))?;
    let sys_block = sys_path("block");
    let have_sys = sys_block.is_dir();
    Ok(parse_diskstats(&text, &|name| {
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

    const SAMPLE: &str = "\
 253       0 vda 1000 0 0 0 2000 0 0 0 0 0 0 0 0 0 0 0 0
 253       1 vda1 900 0 0 0 1900 0 0 0 0 0 0 0 0 0 0 0 0
   7       0 loop0 50 0 0 0 0 0 0 0 0 0 0 0 0 0
 259       0 nvme0n1 10 0 0 0 20 0 0 0 0 0 0 0 0 0
 259       1 nvme0n1p1 9 0 0 0 19 0 0 0 0 0 0 0 0 0
 254       0 dm-0 800 0 0 0 1800 0 0 0 0 0 0 0 0 0";

    #[test]
    fn whole_disks_only() {
        let ops = parse_diskstats(SAMPLE, &|n| !looks_like_partition(n));
        assert_eq!(
            ops,
            DiskOps {
                reads: 1010,
                writes: 2020
            }
        );
    }
}
