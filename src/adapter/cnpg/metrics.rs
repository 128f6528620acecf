//! The CloudNativePG `hardware` collector (adapters.md §5.5) and system info (§5.6). Per
//! collection: the (cached) Cluster read of the failover check, one pod GET, one
//! metrics-server GET and one cAdvisor scrape. Counter deltas restart their baseline on a
//! reset or a different pod (no wrapped deltas, §5.8.6); system info is complete or an error
//! (never an empty map, §5.8.5).

use super::{recovery, Inner, Sample};
use crate::error::{Context, Error, Result};
use crate::metrics::MetricCollector;
use crate::model::Metric;
use std::sync::Arc;
use std::time::Instant;

/// The counters of the previous collection.
struct Counters {
    pod_uid: String,
    at: Instant,
    timestamp: Option<i64>,
    reads: Option<f64>,
    writes: Option<f64>,
    rx: Option<f64>,
    tx: Option<f64>,
}

pub struct CnpgHardware {
    inner: Arc<Inner>,
    prev: Option<Counters>,
}

impl CnpgHardware {
    pub fn new(inner: Arc<Inner>) -> CnpgHardware {
        CnpgHardware { inner, prev: None }
    }
}

/// `now - prev` for a counter, None on a reset (the counter went down) or when missing.
fn delta(now: Option<f64>, prev: Option<f64>) -> Option<f64> {
    match (now, prev) {
        (Some(n), Some(p)) if n >= p => Some(n - p),
        _ => None,
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Metrics of one sample given the previous counters (pure, for tests).
fn metrics_of(
    s: &Sample,
    prev: Option<&Counters>,
    now: Instant,
) -> (Vec<Metric>, Option<Counters>) {
    let mut out = Vec::with_capacity(16);
    let cpu = (s.cpu_m as f64 / s.limits.cpu_m as f64 * 100.0).clamp(0.0, 100.0);
    out.push(Metric::float("node_cpu_usage", round3(cpu)));
    out.push(Metric::bytes("node_memory_used", s.mem));
    out.push(Metric::percentage(
        "node_memory_used_percentage",
        round3(s.mem as f64 / s.limits.mem as f64 * 100.0),
    ));
    let Some(series) = &s.series else {
        return (out, None);
    };
    if let (Some(u), Some(l)) = (series.fs_usage, series.fs_limit) {
        if l > 0.0 {
            out.push(Metric::percentage(
                "node_disk_used_percentage",
                round3(u / l * 100.0),
            ));
        }
    }
    if let Some(load) = series.load_average {
        out.push(Metric::float("node_load_average", load));
    }
    let counters = Counters {
        pod_uid: s.pod.uid.clone(),
        at: now,
        timestamp: series.timestamp,
        reads: series.fs_reads,
        writes: series.fs_writes,
        rx: series.net_rx,
        tx: series.net_tx,
    };
    let Some(p) = prev.filter(|p| p.pod_uid == counters.pod_uid) else {
        // First sample, or another pod (failover, restart): prime only.
        return (out, Some(counters));
    };
    if counters.timestamp.is_some() && counters.timestamp == p.timestamp {
        // cAdvisor has not refreshed: no new interval; keep the older baseline.
        return (
            out,
            Some(Counters {
                pod_uid: p.pod_uid.clone(),
                at: p.at,
                timestamp: p.timestamp,
                reads: p.reads,
                writes: p.writes,
                rx: p.rx,
                tx: p.tx,
            }),
        );
    }
    let secs = match (counters.timestamp, p.timestamp) {
        (Some(a), Some(b)) if a > b => (a - b) as f64 / 1000.0,
        _ => now.duration_since(p.at).as_secs_f64(),
    };
    let (r, w) = (
        delta(counters.reads, p.reads),
        delta(counters.writes, p.writes),
    );
    if let (Some(r), Some(w)) = (r, w) {
        out.push(Metric::int("node_disk_io_ops_read", r as i64));
        out.push(Metric::int("node_disk_io_ops_write", w as i64));
        out.push(Metric::int("node_disk_io_ops_total", (r + w) as i64));
        if secs > 0.0 {
            out.push(Metric::float("node_disk_iops_read", round3(r / secs)));
            out.push(Metric::float("node_disk_iops_write", round3(w / secs)));
            out.push(Metric::float(
                "node_disk_iops_total",
                round3((r + w) / secs),
            ));
        }
    }
    for (key_count, key_rate, d) in [
        (
            "node_net_receive_count",
            "node_net_receive_per_second",
            delta(counters.rx, p.rx),
        ),
        (
            "node_net_send_count",
            "node_net_send_per_second",
            delta(counters.tx, p.tx),
        ),
    ] {
        if let Some(d) = d {
            out.push(Metric::int(key_count, d as i64));
            if secs > 0.0 {
                out.push(Metric::float(key_rate, round3(d / secs)));
            }
        }
    }
    (out, Some(counters))
}

impl MetricCollector for CnpgHardware {
    fn key(&self) -> &'static str {
        "hardware"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        let cluster = self.inner.check_failover().map_err(|e| recovery(&e))?;
        let s = self.inner.sample(cluster.as_ref(), true)?;
        let (out, counters) = metrics_of(&s, self.prev.as_ref(), Instant::now());
        if counters.is_some() {
            self.prev = counters;
        }
        Ok(out)
    }
}

/// System info of the primary: PostgreSQL facts, the container's CPU and memory, the PGDATA
/// volume's size, the node's OS. Everything or an error.
pub fn system_info(inner: &Inner) -> Result<Vec<Metric>> {
    let cluster = inner.check_failover().map_err(|e| recovery(&e))?;
    let mut c = inner.pg.conn()?;
    let facts = crate::pg::queries::pg_facts(&mut c).context("reading PostgreSQL facts")?;
    drop(c);
    let s = inner.recent_sample(cluster.as_ref())?;
    let node = inner.node(&s.pod.node)?;
    let info = &node["status"]["nodeInfo"];
    let field = |k: &str| {
        info[k]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::other(format!(
                    "node {} reports no status.nodeInfo.{k}",
                    s.pod.node
                ))
            })
    };
    let claim = s.pod.pgdata_claim.clone().ok_or_else(|| {
        Error::other(format!(
            "pod {} mounts no PersistentVolumeClaim for PGDATA",
            s.pod.name
        ))
    })?;
    let pvc = inner
        .api
        .pvc(&claim)
        .map_err(|e| Error::other(format!("reading PersistentVolumeClaim {claim}: {e}")))?;
    let size = pvc["status"]["capacity"]["storage"]
        .as_str()
        .or(pvc["spec"]["resources"]["requests"]["storage"].as_str())
        .and_then(|q| crate::cloud::k8s::Quantity::parse(q).ok())
        .and_then(|q| q.value())
        .ok_or_else(|| {
            Error::other(format!(
                "PersistentVolumeClaim {claim} reports no storage capacity"
            ))
        })?;
    Ok(vec![
        Metric::string("pg_version", facts.version.wire()),
        Metric::int("pg_max_connections", facts.max_connections),
        Metric::string("pg_current_database", facts.current_database),
        Metric::int("pg_database_count", facts.database_count),
        // Rounded up: a 500m container has one (partial) CPU, not none.
        Metric::int("node_cpu_count", (s.limits.cpu_m + 999) / 1000),
        Metric::bytes("node_memory_total", s.limits.mem),
        Metric::bytes("node_disk_size", size),
        Metric::string("node_os_info", field("osImage")?),
        Metric::string("system_info_platform", field("operatingSystem")?),
        Metric::string("system_info_platform_version", field("kernelVersion")?),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::cadvisor::ContainerSeries;
    use super::super::resources::{Limits, PodView};
    use super::*;
    use std::time::Duration;

    fn sample(uid: &str, ts: i64, reads: f64, rx: f64) -> Sample {
        Sample {
            at: Instant::now(),
            pod: PodView {
                name: "pg-1".into(),
                uid: uid.into(),
                node: "n1".into(),
                ready: true,
                cpu_limit_m: Some(2000),
                cpu_request_m: None,
                mem_limit: Some(1 << 30),
                mem_request: None,
                pgdata_claim: Some("pg-1".into()),
            },
            limits: Limits {
                cpu_m: 2000,
                mem: 1 << 30,
            },
            cpu_m: 500,
            mem: 1 << 29,
            series: Some(ContainerSeries {
                fs_reads: Some(reads),
                fs_writes: Some(reads / 2.0),
                net_rx: Some(rx),
                net_tx: Some(rx),
                fs_usage: Some(25.0),
                fs_limit: Some(100.0),
                timestamp: Some(ts),
                ..Default::default()
            }),
        }
    }

    fn get<'a>(m: &'a [Metric], k: &str) -> Option<&'a Metric> {
        m.iter().find(|x| x.key == k)
    }

    #[test]
    fn deltas_prime_then_count_and_never_wrap_on_reset_or_pod_change() {
        let t0 = Instant::now();
        let (m, c) = metrics_of(&sample("a", 1000, 100.0, 1000.0), None, t0);
        assert!(
            get(&m, "node_disk_io_ops_read").is_none(),
            "first run primes"
        );
        assert_eq!(
            get(&m, "node_cpu_usage").unwrap().value,
            serde_json::json!(25.0)
        );
        assert_eq!(
            get(&m, "node_disk_used_percentage").unwrap().value,
            serde_json::json!(25.0)
        );
        let t1 = t0 + Duration::from_secs(5);
        let (m, c) = metrics_of(&sample("a", 6000, 150.0, 1500.0), c.as_ref(), t1);
        assert_eq!(
            get(&m, "node_disk_io_ops_read").unwrap().value,
            serde_json::json!(50)
        );
        assert_eq!(
            get(&m, "node_disk_iops_read").unwrap().value,
            serde_json::json!(10.0)
        );
        assert_eq!(
            get(&m, "node_net_receive_per_second").unwrap().value,
            serde_json::json!(100.0)
        );
        // Same cAdvisor timestamp: no interval, the baseline stays.
        let (m, c) = metrics_of(&sample("a", 6000, 150.0, 1500.0), c.as_ref(), t1);
        assert!(get(&m, "node_disk_io_ops_read").is_none());
        // Counter reset (the container restarted): nothing sent, new baseline.
        let (m, c) = metrics_of(&sample("a", 11000, 3.0, 10.0), c.as_ref(), t1);
        assert!(get(&m, "node_disk_io_ops_read").is_none());
        assert!(get(&m, "node_net_receive_count").is_none());
        // Another pod (failover): prime again.
        let (m, _) = metrics_of(&sample("b", 16000, 500.0, 9999.0), c.as_ref(), t1);
        assert!(get(&m, "node_disk_io_ops_read").is_none());
    }
}
