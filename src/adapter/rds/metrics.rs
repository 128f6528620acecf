//! CloudWatch and Performance Insights samples (adapters.md §1.5), shared by the `hardware`
//! collector and the memory guardrail. RDS publishes these metrics once a minute, so one
//! `GetMetricData` call (all four metrics) and one PI call serve every 5-second round for 30 s:
//! 4 calls a minute measured (with system info) instead of the Go agent's ~60.

use super::api::Point;
use super::Shared;
use crate::error::Result;
use crate::metrics::MetricCollector;
use crate::model::Metric;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one sample serves collector rounds and guardrail checks.
pub const SAMPLE_AGE: Duration = Duration::from_secs(30);

pub const CW_METRICS: [&str; 4] = ["FreeableMemory", "CPUUtilization", "ReadIOPS", "WriteIOPS"];

#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub freeable: Option<Point>,
    pub cpu: Option<Point>,
    pub read_iops: Option<Point>,
    pub write_iops: Option<Point>,
    /// PI `os.memory.active.avg`, KB.
    pub active_kb: Option<Point>,
    /// Why PI gave nothing, when enabled.
    pub pi_error: Option<String>,
}

impl Shared {
    /// The latest sample, fetched when the cached one is older than [`SAMPLE_AGE`].
    pub fn sample(&self) -> Result<Sample> {
        let mut cache = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = cache.as_ref().filter(|(at, _)| at.elapsed() < SAMPLE_AGE) {
            let _ = at;
            return Ok(s.clone());
        }
        let info = self.info();
        let id = info.instance.identifier.clone();
        let cw = self.api.latest_metrics(&id, &CW_METRICS)?;
        let mut s = Sample {
            freeable: cw[0],
            cpu: cw[1],
            read_iops: cw[2],
            write_iops: cw[3],
            ..Sample::default()
        };
        if info.instance.pi_enabled {
            if let Some(rid) = &info.instance.resource_id {
                match self.api.pi_active_memory_kb(rid) {
                    Ok(p) => s.active_kb = p,
                    Err(e) => s.pi_error = Some(e.to_string()),
                }
            }
        }
        *cache = Some((Instant::now(), s.clone()));
        Ok(s)
    }
}

/// The `hardware` collector: CPU, freeable memory, IOPS from CloudWatch; used memory from PI.
pub struct CloudMetrics {
    pub sh: Arc<Shared>,
}

impl MetricCollector for CloudMetrics {
    fn key(&self) -> &'static str {
        "hardware"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        let s = self.sh.sample()?;
        let mut out = Vec::new();
        if let Some((_, v)) = s.active_kb.filter(|(_, v)| *v >= 0.0) {
            out.push(Metric::bytes("node_memory_used", (v * 1024.0) as i64));
        }
        if let Some(e) = &s.pi_error {
            log::debug!("Performance Insights: {e}");
        }
        if let Some((_, v)) = s.freeable {
            out.push(Metric::bytes("node_memory_freeable", v as i64));
        }
        if let Some((_, v)) = s.cpu {
            out.push(Metric::float("node_cpu_usage", v));
        }
        // Read and write together, or neither (as the Go agent).
        if let (Some((_, r)), Some((_, w))) = (s.read_iops, s.write_iops) {
            out.push(Metric::float("node_disk_iops_read", r));
            out.push(Metric::float("node_disk_iops_write", w));
            out.push(Metric::float("node_disk_iops_total", r + w));
        }
        Ok(out)
    }
}
