//! Aiven's service metrics (adapters.md §4.5): one `ServiceMetricsFetch` (period `hour`) gives
//! every series; the value of each is the last row's `(master)` column. The fetch is cached
//! for `metric_resolution_seconds` and shared by the `hardware` collector and the memory
//! guardrail, so the collector reports on every round (the Go agent skips it for 30 s after
//! each system-info run) while Aiven is asked at most once per resolution.

use super::api::AivenApi;
use crate::error::{Error, Result};
use crate::metrics::MetricCollector;
use crate::model::Metric;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Aiven metric → agent key, and the kind of value.
const KEYS: &[(&str, &str, bool)] = &[
    ("cpu_usage", "node_cpu_usage", false),
    ("disk_usage", "node_disk_used_percentage", true),
    ("diskio_read", "node_disk_iops_read", false),
    ("diskio_writes", "node_disk_iops_write", false),
    ("load_average", "node_load_average", false),
    ("mem_available", "node_memory_available_percentage", true),
    ("mem_usage", "node_memory_used_percentage", true),
    ("net_receive", "node_net_receive_per_second", false),
    ("net_send", "node_net_send_per_second", false),
];

/// One parsed series: the newest value of the primary node and Aiven's timestamp of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub at: i64,
}

/// The values of one fetch, by Aiven metric name.
pub type Samples = Vec<(&'static str, Sample)>;

/// Parses the `metrics` object; entries that do not fit the rules are skipped (logged at
/// debug), unknown names ignored.
pub fn parse(metrics: &Value) -> Samples {
    let mut out = Vec::new();
    let Some(obj) = metrics.as_object() else {
        return out;
    };
    for (name, _, _) in KEYS {
        let Some(e) = obj.get(*name) else { continue };
        match sample(e) {
            Ok(s) => out.push((*name, s)),
            Err(why) => log::debug!("Aiven metric {name} skipped: {why}"),
        }
    }
    out
}

fn sample(e: &Value) -> std::result::Result<Sample, &'static str> {
    let cols = e["data"]["cols"].as_array().ok_or("no data.cols")?;
    let rows = e["data"]["rows"].as_array().ok_or("no data.rows")?;
    let at = e["max_timestamp"].as_f64().unwrap_or(0.0) as i64;
    if at == 0 {
        return Err("no max_timestamp");
    }
    if rows.len() < 2 {
        return Err("fewer than 2 rows");
    }
    let col = cols
        .iter()
        .position(|c| c["label"].as_str().is_some_and(|l| l.contains("(master)")))
        .ok_or("no (master) column")?;
    let last = rows
        .last()
        .and_then(Value::as_array)
        .ok_or("empty last row")?;
    let value = last.get(col).and_then(Value::as_f64).ok_or("no value")?;
    Ok(Sample { value, at })
}

pub fn get(s: &Samples, name: &str) -> Option<Sample> {
    s.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The agent's metrics from one fetch.
pub fn to_metrics(s: &Samples) -> Vec<Metric> {
    let mut out = Vec::new();
    for (name, key, pct) in KEYS {
        if let Some(v) = get(s, name) {
            out.push(if *pct {
                Metric::percentage(key, v.value)
            } else {
                Metric::float(key, v.value)
            });
        }
    }
    if let (Some(r), Some(w)) = (get(s, "diskio_read"), get(s, "diskio_writes")) {
        out.push(Metric::float("node_disk_iops_total", r.value + w.value));
    }
    out
}

pub struct Monitor {
    api: AivenApi,
    resolution: Duration,
    cache: Mutex<Option<(Instant, Samples)>>,
    pub calls: AtomicU64,
}

impl Monitor {
    pub fn new(api: AivenApi, resolution: Duration) -> Monitor {
        Monitor {
            api,
            resolution,
            cache: Mutex::new(None),
            calls: AtomicU64::new(0),
        }
    }

    /// The newest samples: cached while younger than the resolution, else fetched.
    pub fn samples(&self) -> Result<Samples> {
        if let Some((at, s)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if at.elapsed() < self.resolution {
                return Ok(s.clone());
            }
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let m = self.api.metrics_fetch().map_err(|e| {
            Error::from(e).context(format!("reading the metrics of {}", self.api.resource()))
        })?;
        let s = parse(&m);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), s.clone()));
        Ok(s)
    }
}

/// The `hardware` collector.
pub struct Hardware {
    monitor: Arc<Monitor>,
}

impl Hardware {
    pub fn new(monitor: Arc<Monitor>) -> Hardware {
        Hardware { monitor }
    }
}

impl MetricCollector for Hardware {
    fn key(&self) -> &'static str {
        "hardware"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        Ok(to_metrics(&self.monitor.samples()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn series(rows: Value, ts: i64) -> Value {
        json!({"data": {"cols": [{"label": "time", "type": "date"},
            {"label": "pg-1 (standby)", "type": "number"}, {"label": "pg-2 (master)", "type": "number"}],
            "rows": rows}, "max_timestamp": ts, "total_series": 2, "hints": {"title": "x"}})
    }

    #[test]
    fn last_row_master_column_and_the_skip_rules() {
        let m = json!({
            "cpu_usage": series(json!([["t1", 1.0, 2.0], ["t2", 3.0, 4.5]]), 100),
            "mem_available": series(json!([["t1", 1.0, 70.0], ["t2", 3.0, 60.0]]), 100),
            "diskio_read": series(json!([["t1", 1.0, 2.0], ["t2", 3.0, 10.0]]), 100),
            "diskio_writes": series(json!([["t1", 1.0, 2.0], ["t2", 3.0, 20.0]]), 100),
            "load_average": series(json!([["t2", 3.0, 4.5]]), 100),
            "net_send": series(json!([["t1", 1.0, 2.0], ["t2", 3.0, null]]), 100),
            "net_receive": series(json!([["t1", 1.0, 2.0], ["t2", 3.0, 5.0]]), 0),
            "disk_usage": {"data": {"cols": [{"label": "a (standby)"}], "rows": [[1], [2]]}, "max_timestamp": 5},
            "something_new": series(json!([["t1", 1.0, 2.0], ["t2", 3.0, 5.0]]), 100),
        });
        let s = parse(&m);
        assert_eq!(
            get(&s, "cpu_usage"),
            Some(Sample {
                value: 4.5,
                at: 100
            })
        );
        assert_eq!(get(&s, "mem_available").unwrap().value, 60.0);
        for skipped in ["load_average", "net_send", "net_receive", "disk_usage"] {
            assert_eq!(get(&s, skipped), None, "{skipped}");
        }
        let out = to_metrics(&s);
        let total = out
            .iter()
            .find(|m| m.key == "node_disk_iops_total")
            .unwrap();
        assert_eq!(total.value, json!(30.0));
        assert_eq!(out.len(), 5);
    }
}
