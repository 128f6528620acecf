//! The `hardware` collector of the self-managed adapter (collectors.md §6): CPU %, memory used
//! and whole-disk IO operations since the previous sample.

use super::MetricCollector;
use crate::error::{Context, Result};
use crate::host::{cpu, disk, memory};
use crate::model::Metric;
use std::time::Duration;

#[derive(Default)]
pub struct Hardware {
    prev_disk: Option<disk::DiskOps>,
}

impl MetricCollector for Hardware {
    fn key(&self) -> &'static str {
        "hardware"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        let mut out = Vec::with_capacity(5);
        let busy = cpu::usage(Duration::from_millis(100)).context("sampling CPU usage")?;
        out.push(Metric::float("node_cpu_usage", busy));
        // Disk deltas need a previous sample; a counter going backwards (device removed,
        // wrap) restarts the baseline instead of sending garbage.
        if let Ok(now) = disk::whole_disk_ops() {
            if let Some(prev) = self.prev_disk {
                if now.reads >= prev.reads
                    && now.writes >= prev.writes
                    && (prev.reads, prev.writes) != (0, 0)
                {
                    let r = (now.reads - prev.reads) as i64;
                    let w = (now.writes - prev.writes) as i64;
                    out.push(Metric::int("node_disk_io_ops_total", r + w));
                    out.push(Metric::int("node_disk_io_ops_read", r));
                    out.push(Metric::int("node_disk_io_ops_write", w));
                }
            }
            self.prev_disk = Some(now);
        }
        let mem = memory::host().context("reading /proc/meminfo")?;
        out.push(Metric::bytes("node_memory_used", mem.used() as i64));
        Ok(out)
    }
}
