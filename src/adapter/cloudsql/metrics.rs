//! Cloud Monitoring reads for Cloud SQL (adapters.md §2.5–§2.6): one `timeSeries.list` per
//! value, exactly one series expected, its newest point used. Cloud SQL samples once a minute,
//! so values are cached for most of a minute: the 5-s collector and the guardrail share them
//! (about 11 calls a minute instead of ~180). Unlike the Go agent, a value that cannot be read
//! is left out (never sent as 0), IOPS are real per-second rates (delta / 60 s, not integer
//! division) and each minute's delta is added to the running I/O totals once, not on every
//! 5-s collection.

use crate::cloud::gcp::monitoring::Point;
use crate::cloud::gcp::Google;
use crate::error::{Error, Result};
use crate::metrics::MetricCollector;
use crate::model::Metric;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &str = "cloudsql.googleapis.com/database/";
/// Cloud SQL writes a point a minute; a cached value younger than this is as new as it gets.
const CACHE_FOR: Duration = Duration::from_secs(55);
/// Look-back window of each query (a point can take a few minutes to appear).
const WINDOW_SECS: i64 = 600;
/// `*_count` metrics are deltas over a 60-s sampling period.
const SAMPLE_SECS: f64 = 60.0;

pub struct Monitor {
    google: Google,
    project: String,
    database_id: String,
    cache: Mutex<HashMap<String, (Instant, Point)>>,
    pub calls: std::sync::atomic::AtomicU64,
}

/// Memory block: quota (bytes) and the Usage / Cache / Free percentages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    pub quota: f64,
    pub usage: f64,
    pub cache: f64,
    pub free: f64,
}

impl Monitor {
    pub fn new(google: Google, project: &str, database_id: String) -> Monitor {
        Monitor {
            google,
            project: project.to_string(),
            database_id,
            cache: Mutex::new(HashMap::new()),
            calls: Default::default(),
        }
    }

    fn filter(&self, metric: &str, component: Option<&str>) -> String {
        let mut f = format!(
            "metric.type = \"{PREFIX}{metric}\" AND resource.label.database_id = \"{}\"",
            self.database_id
        );
        if let Some(c) = component {
            f.push_str(&format!(" AND metric.labels.component = \"{c}\""));
        }
        f
    }

    /// The newest point of `metric` (optionally one memory component).
    pub fn latest(&self, metric: &str, component: Option<&str>) -> Result<Point> {
        let filter = self.filter(metric, component);
        if let Some((at, p)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&filter)
        {
            if at.elapsed() < CACHE_FOR {
                return Ok(p.clone());
            }
        }
        let what = match component {
            Some(c) => format!("{metric} ({c})"),
            None => metric.to_string(),
        };
        let end = crate::cloud::time::now_unix();
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let series = self
            .google
            .time_series_list(&self.project, &filter, end - WINDOW_SECS, end, 2)
            .map_err(|e| {
                Error::from(e).context(format!(
                    "reading Cloud SQL metric {what} of {}",
                    self.database_id
                ))
            })?;
        let s = match series.as_slice() {
            [one] => one,
            [] => {
                return Err(Error::other(format!(
                "Cloud Monitoring returned no time series for {what} of {} in the last {} minutes",
                self.database_id,
                WINDOW_SECS / 60
            )))
            }
            many => {
                return Err(Error::other(format!(
                    "Cloud Monitoring returned {} time series for {what} of {}, expected one",
                    many.len(),
                    self.database_id
                )))
            }
        };
        let p = s.latest().cloned().ok_or_else(|| {
            Error::other(format!(
                "the time series of {what} of {} has no point",
                self.database_id
            ))
        })?;
        if p.value.as_f64().is_none() {
            return Err(Error::other(format!(
                "the newest point of {what} of {} is not a number",
                self.database_id
            )));
        }
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(filter, (Instant::now(), p.clone()));
        Ok(p)
    }

    pub fn value(&self, metric: &str, component: Option<&str>) -> Result<f64> {
        // `latest` only returns numeric points.
        Ok(self
            .latest(metric, component)?
            .value
            .as_f64()
            .unwrap_or_default())
    }

    pub fn memory(&self) -> Result<Memory> {
        Ok(Memory {
            quota: self.value("memory/quota", None)?,
            usage: self.value("memory/components", Some("Usage"))?,
            cache: self.value("memory/components", Some("Cache"))?,
            free: self.value("memory/components", Some("Free"))?,
        })
    }
}

/// The `hardware` collector: running I/O totals live here between rounds.
pub struct Hardware {
    monitor: Arc<Monitor>,
    /// (end time of the last point added, running total) for reads and writes.
    reads: (i64, i64),
    writes: (i64, i64),
}

impl Hardware {
    pub fn new(monitor: Arc<Monitor>) -> Hardware {
        Hardware {
            monitor,
            reads: (0, 0),
            writes: (0, 0),
        }
    }
}

/// Adds a minute's delta to `acc` once: only a point newer than the last one counted.
fn accumulate(acc: &mut (i64, i64), p: &Point) -> f64 {
    let v = p.value.as_f64().unwrap_or_default();
    if p.end_time > acc.0 {
        acc.0 = p.end_time;
        acc.1 += v as i64;
    }
    v
}

impl MetricCollector for Hardware {
    fn key(&self) -> &'static str {
        "hardware"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        let m = self.monitor.clone();
        let mut out = Vec::new();
        let mut failed = Vec::new();
        let note = |e: Error, failed: &mut Vec<String>| {
            log::warn!("{e}");
            failed.push(e.to_string());
        };
        match m.value("cpu/utilization", None) {
            Ok(v) => out.push(Metric::float("node_cpu_usage", v * 100.0)),
            Err(e) => note(e, &mut failed),
        }
        let reads = m.latest("disk/read_ops_count", None);
        let writes = m.latest("disk/write_ops_count", None);
        let r = match reads {
            Ok(p) => {
                let v = accumulate(&mut self.reads, &p);
                out.push(Metric::float("node_disk_iops_read", v / SAMPLE_SECS));
                out.push(Metric::int("node_disk_io_ops_read", self.reads.1));
                Some(v)
            }
            Err(e) => {
                note(e, &mut failed);
                None
            }
        };
        let w = match writes {
            Ok(p) => {
                let v = accumulate(&mut self.writes, &p);
                out.push(Metric::float("node_disk_iops_write", v / SAMPLE_SECS));
                out.push(Metric::int("node_disk_io_ops_write", self.writes.1));
                Some(v)
            }
            Err(e) => {
                note(e, &mut failed);
                None
            }
        };
        if let (Some(r), Some(w)) = (r, w) {
            out.push(Metric::float("node_disk_iops_total", (r + w) / SAMPLE_SECS));
            out.push(Metric::int(
                "node_disk_io_ops_total",
                self.reads.1 + self.writes.1,
            ));
        }
        match m.value("disk/quota", None) {
            Ok(v) => out.push(Metric::bytes("node_disk_size", v as i64)),
            Err(e) => note(e, &mut failed),
        }
        match m.value("disk/utilization", None) {
            Ok(v) => out.push(Metric::percentage("node_disk_used_percentage", v * 100.0)),
            Err(e) => note(e, &mut failed),
        }
        match m.value("network/received_bytes_count", None) {
            Ok(v) => out.push(Metric::int("node_net_receive_count", v as i64)),
            Err(e) => note(e, &mut failed),
        }
        match m.value("network/sent_bytes_count", None) {
            Ok(v) => out.push(Metric::int("node_net_send_count", v as i64)),
            Err(e) => note(e, &mut failed),
        }
        match m.memory() {
            Ok(mem) => {
                out.push(Metric::bytes(
                    "node_memory_used",
                    (mem.quota * mem.usage / 100.0) as i64,
                ));
                out.push(Metric::percentage("node_memory_used_percentage", mem.usage));
                out.push(Metric::bytes(
                    "node_memory_freeable",
                    (mem.quota * (mem.free + mem.cache) / 100.0) as i64,
                ));
                out.push(Metric::percentage(
                    "node_memory_available_percentage",
                    mem.free + mem.cache,
                ));
            }
            Err(e) => note(e, &mut failed),
        }
        if out.is_empty() && !failed.is_empty() {
            return Err(Error::other(format!(
                "no Cloud SQL metric could be read: {}",
                failed.join("; ")
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::gcp::monitoring::PointValue;

    #[test]
    fn each_minute_is_counted_once() {
        let mut acc = (0, 0);
        let p = |t, v| Point {
            end_time: t,
            value: PointValue::Int64(v),
        };
        assert_eq!(accumulate(&mut acc, &p(60, 600)), 600.0);
        // The same point seen by the next 5-s collections is not added again.
        accumulate(&mut acc, &p(60, 600));
        accumulate(&mut acc, &p(60, 600));
        assert_eq!(acc, (60, 600));
        accumulate(&mut acc, &p(120, 30));
        assert_eq!(acc, (120, 630));
    }
}
