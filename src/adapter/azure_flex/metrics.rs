//! Azure Monitor `Metrics_List` for the server (adapters.md §3.6): `cpu_percent` and
//! `memory_percent`, average over PT1M in the last few minutes, both in one call. The value is
//! the last datapoint *that has* an `average` (the current minute usually has none yet: the Go
//! agent then fails the collection). Azure writes a point a minute, so an answer is reused for
//! 30 s: the 5-s collector and the 1-s guardrail share it (about 2 calls a minute).

use crate::cloud::azure::Arm;
use crate::cloud::time::rfc3339;
use crate::error::{Error, Result};
use crate::metrics::MetricCollector;
use crate::model::Metric;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Azure Monitor metrics API version (the vendor description in the repository).
pub const API_VERSION: &str = "2024-02-01";
const CACHE_FOR: Duration = Duration::from_secs(30);
const NAMES: &str = "cpu_percent,memory_percent";

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
}

pub struct Monitor {
    arm: Arm,
    id: String,
    cache: Mutex<Option<(Instant, Sample)>>,
}

/// The last datapoint of a metric's first series that has an `average`.
pub fn last_average(metric: &Value) -> Option<f64> {
    metric["timeseries"][0]["data"]
        .as_array()?
        .iter()
        .rev()
        .find_map(|d| d["average"].as_f64())
}

impl Monitor {
    pub fn new(arm: Arm, id: String) -> Monitor {
        Monitor {
            arm,
            id,
            cache: Mutex::new(None),
        }
    }

    pub fn sample(&self) -> Result<Sample> {
        if let Some((at, s)) = *self.cache.lock().unwrap_or_else(|p| p.into_inner()) {
            if at.elapsed() < CACHE_FOR {
                return Ok(s);
            }
        }
        let end = crate::cloud::time::now_unix();
        let path = format!(
            "{}/providers/Microsoft.Insights/metrics?metricnames={NAMES}&metricnamespace=Microsoft.DBforPostgreSQL%2FflexibleServers&aggregation=average&interval=PT1M&timespan={}%2F{}",
            self.id,
            rfc3339(end - 300),
            rfc3339(end)
        );
        let v = self.arm.get(&path, API_VERSION).map_err(|e| {
            Error::from(e).context(format!("reading Azure Monitor metrics of {}", self.id))
        })?;
        let find = |name: &str| {
            v["value"]
                .as_array()
                .and_then(|a| a.iter().find(|m| m["name"]["value"] == name))
                .and_then(last_average)
        };
        let s = Sample {
            cpu: find("cpu_percent"),
            memory: find("memory_percent"),
        };
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), s));
        Ok(s)
    }
}

pub struct Hardware {
    pub monitor: Arc<Monitor>,
}

impl MetricCollector for Hardware {
    fn key(&self) -> &'static str {
        "hardware"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        let s = self.monitor.sample()?;
        let mut out = Vec::new();
        if let Some(c) = s.cpu {
            out.push(Metric::float("node_cpu_usage", c));
        }
        if let Some(m) = s.memory {
            out.push(Metric::percentage("node_memory_used_percentage", m));
        }
        if out.is_empty() {
            return Err(Error::other(format!(
                "Azure Monitor has no recent cpu_percent or memory_percent value for {}",
                self.monitor.id
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_last_point_with_a_value_is_used() {
        let m = json!({"timeseries": [{"data": [
            {"timeStamp": "t1", "average": 20.5},
            {"timeStamp": "t2", "average": 30.0},
            {"timeStamp": "t3"}
        ]}]});
        assert_eq!(last_average(&m), Some(30.0));
        assert_eq!(last_average(&json!({"timeseries": []})), None);
    }
}
