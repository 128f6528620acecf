//! The `hardware` collector of the self-managed adapter (collectors.md §6): CPU %, memory used,
//! whole-disk IO operations since the previous sample, and network bytes per second (loopback
//! excluded; the `node_net_*_per_second` keys the platform takes from Aiven and Kubernetes).

use super::MetricCollector;
use crate::error::{Context, Result};
use crate::host::network::{Interfaces, NetBytes};
use crate::host::{cpu, disk, memory};
use crate::model::Metric;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Hardware {
    prev_disk: Option<disk::DiskOps>,
    net: Interfaces,
    prev_net: Option<(Instant, NetBytes)>,
}

/// Bytes per second between two samples; `None` over a counter reset or a zero interval.
fn net_rates(prev: (Instant, NetBytes), now: (Instant, NetBytes)) -> Option<(f64, f64)> {
    let secs = now.0.checked_duration_since(prev.0)?.as_secs_f64();
    if secs <= 0.0 || now.1.received < prev.1.received || now.1.sent < prev.1.sent {
        return None;
    }
    Some((
        (now.1.received - prev.1.received) as f64 / secs,
        (now.1.sent - prev.1.sent) as f64 / secs,
    ))
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
        if let Some(now) = self.net.totals().map(|t| (Instant::now(), t)) {
            if let Some((rx, tx)) = self.prev_net.and_then(|prev| net_rates(prev, now)) {
                out.push(Metric::float("node_net_receive_per_second", rx));
                out.push(Metric::float("node_net_send_per_second", tx));
            }
            self.prev_net = Some(now);
        }
        let mem = memory::host().context("reading /proc/meminfo")?;
        out.push(Metric::bytes("node_memory_used", mem.used() as i64));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_per_second_and_resets() {
        let t0 = Instant::now();
        let b = |received, sent| NetBytes { received, sent };
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(
            net_rates((t0, b(1000, 500)), (t2, b(3000, 1500))),
            Some((1000.0, 500.0))
        );
        // A counter going backwards (interface re-created) restarts the baseline.
        assert_eq!(net_rates((t0, b(1000, 500)), (t2, b(10, 1500))), None);
        assert_eq!(net_rates((t0, b(0, 0)), (t0, b(10, 10))), None);
    }

    /// The real host: the second sample carries both rates, finite and non-negative.
    #[test]
    fn second_sample_has_network_rates() {
        let mut h = Hardware::default();
        let first = h.collect().unwrap();
        assert!(!first.iter().any(|m| m.key == "node_net_receive_per_second"));
        std::thread::sleep(Duration::from_millis(50));
        let second = h.collect().unwrap();
        for key in ["node_net_receive_per_second", "node_net_send_per_second"] {
            let m = second.iter().find(|m| m.key == key).expect(key);
            assert_eq!(m.kind, crate::model::MetricType::Float, "{m:?}");
            assert!(
                m.value.as_f64().is_some_and(|v| v >= 0.0 && v.is_finite()),
                "{m:?}"
            );
        }
    }
}
