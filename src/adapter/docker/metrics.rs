//! The Docker `hardware` collector: CPU % between two one-shot stats samples and memory used
//! without inactive page cache (stats.rs).

use super::stats::Sample;
use crate::cloud::docker::Docker;
use crate::error::{Error, Result};
use crate::metrics::MetricCollector;
use crate::model::Metric;
use std::sync::Arc;

pub struct ContainerHardware {
    pub docker: Arc<Docker>,
    pub container: String,
    prev: Option<Sample>,
}

impl ContainerHardware {
    pub fn new(docker: Arc<Docker>, container: String) -> Self {
        ContainerHardware {
            docker,
            container,
            prev: None,
        }
    }
}

impl MetricCollector for ContainerHardware {
    fn key(&self) -> &'static str {
        "hardware"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        let v = self
            .docker
            .stats_once(&self.container)
            .map_err(|e| Error::other(e.to_string()))?;
        let now = Sample::parse(&v)
            .map_err(|e| e.context(format!("container {} stats", self.container)))?;
        let mut out = Vec::with_capacity(2);
        // The first sample has nothing to compare with: no CPU value rather than a wrong one.
        if let Some(cpu) = self.prev.and_then(|p| now.cpu_percent_since(&p)) {
            out.push(Metric::float("node_cpu_usage", cpu));
        }
        out.push(Metric::bytes("node_memory_used", now.memory_used() as i64));
        self.prev = Some(now);
        Ok(out)
    }
}
