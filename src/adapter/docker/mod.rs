//! The Docker adapter (`--docker`, adapters.md §7): PostgreSQL in a container on this host,
//! reached over SQL for everything PostgreSQL knows and over the Engine API's unix socket for
//! what the container knows (CPU, memory, limits, image) and for restarts.

pub mod config;
pub mod metrics;
pub mod stats;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::checks::Check;
use crate::cloud::docker::Docker;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::metrics::MetricCollector;
use crate::model::{ConfigRow, GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use crate::pg::{Pg, SessionLimits};
use config::DockerConfig;
use serde_json::Value;
use stats::Sample;
use std::sync::Arc;

pub struct DockerAdapter {
    pg: Pg,
    docker: Arc<Docker>,
    container: String,
    applier: Applier,
}

impl DockerAdapter {
    pub fn new(cfg: &Config) -> Result<DockerAdapter> {
        let dc = DockerConfig::from_sources(&cfg.sources).map_err(Error::invalid)?;
        let env = crate::cloud::Env::from_process();
        let docker = Arc::new(Docker::from_env(&env).map_err(|e| Error::invalid(e.to_string()))?);
        let pg = Pg::new(
            cfg.postgresql.connection_url.expose(),
            cfg.postgresql.pool_size,
            SessionLimits::default(),
        )
        .context("failed to create PG driver")?;
        let target = target::DockerTarget {
            docker: docker.clone(),
            container: dc.container_name.clone(),
            stop_timeout: dc.stop_timeout,
        };
        Ok(DockerAdapter {
            pg,
            docker,
            container: dc.container_name,
            applier: Applier::new(cfg, Box::new(target)),
        })
    }

    fn stats(&self) -> Result<Sample> {
        let v = self
            .docker
            .stats_once(&self.container)
            .map_err(|e| Error::other(e.to_string()))?;
        Sample::parse(&v).map_err(|e| e.context(format!("container {} stats", self.container)))
    }

    fn inspect(&self) -> Result<Value> {
        self.docker
            .inspect(&self.container)
            .map_err(|e| Error::other(e.to_string()))
    }
}

/// CPUs the container may use: `--cpus` (NanoCpus), else quota/period, else online CPUs.
fn cpu_count(inspect: &Value, sample: &Sample) -> i64 {
    let hc = &inspect["HostConfig"];
    let nano = hc["NanoCpus"].as_i64().unwrap_or(0);
    let quota = hc["CpuQuota"].as_i64().unwrap_or(0);
    let period = hc["CpuPeriod"].as_i64().unwrap_or(0);
    let n = if nano > 0 {
        nano / 1_000_000_000
    } else if quota > 0 && period > 0 {
        quota / period
    } else {
        sample.online_cpus as i64
    };
    n.max(1)
}

impl Adapter for DockerAdapter {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn pg(&self) -> &Pg {
        &self.pg
    }

    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![Box::new(metrics::ContainerHardware::new(
            self.docker.clone(),
            self.container.clone(),
        ))]
    }

    fn system_info(&self) -> Result<Vec<Metric>> {
        let facts = {
            let mut c = self.pg.conn()?;
            crate::pg::queries::pg_facts(&mut c)?
        };
        let inspect = self.inspect()?;
        let sample = self.stats()?;
        let memory_total = if sample.mem_limit > 0 {
            sample.mem_limit
        } else {
            crate::host::memory::host()
                .context("reading host memory")?
                .total
        };
        let image = inspect["Config"]["Image"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Ok(vec![
            Metric::string("pg_version", facts.version.wire()),
            Metric::bytes("node_memory_total", memory_total as i64),
            Metric::string("node_os_info", "linux"),
            Metric::string("system_info_platform_version", image),
            Metric::string("system_info_platform", "docker"),
            Metric::int("pg_max_connections", facts.max_connections),
            Metric::int("node_cpu_count", cpu_count(&inspect, &sample)),
            Metric::string("pg_current_database", facts.current_database),
            Metric::int("pg_database_count", facts.database_count),
        ])
    }

    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        super::active_config_from_pg(&self.pg)
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        let s = self.stats()?;
        let Some(used) = s.used_percent_of_limit() else {
            return Ok(None);
        };
        log::debug!("Container memory usage: {used:.2}% of its limit");
        Ok((used > threshold).then_some(GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        }))
    }

    fn control_plane_checks(&self) -> Vec<Check> {
        let socket = self.docker.http.socket.display().to_string();
        let api = match self.docker.api_version() {
            Ok(v) => Check {
                name: "docker engine",
                ok: true,
                detail: format!("unix://{socket} answers, API {v}"),
            },
            Err(e) => {
                return vec![Check {
                    name: "docker engine",
                    ok: false,
                    detail: format!("pinging unix://{socket}: {e}"),
                }]
            }
        };
        let container = match self.inspect() {
            Ok(v) => {
                let status = v["State"]["Status"].as_str().unwrap_or("unknown");
                Check {
                    name: "docker container",
                    ok: status == "running",
                    detail: format!(
                        "{} ({}), image {}, {status}",
                        self.container,
                        v["Id"]
                            .as_str()
                            .map(|s| &s[..s.len().min(12)])
                            .unwrap_or("?"),
                        v["Config"]["Image"].as_str().unwrap_or("?")
                    ),
                }
            }
            Err(e) => Check {
                name: "docker container",
                ok: false,
                detail: format!("inspecting {}: {e}", self.container),
            },
        };
        vec![api, container]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu_count_prefers_nano_cpus_then_quota_then_online() {
        let s = Sample {
            total_usage: 0,
            system_usage: 0,
            online_cpus: 8,
            mem_usage: 1,
            mem_limit: 0,
            inactive_file: None,
        };
        let i = |n: i64, q: i64, p: i64| json!({"HostConfig": {"NanoCpus": n, "CpuQuota": q, "CpuPeriod": p}});
        assert_eq!(cpu_count(&i(1_500_000_000, 0, 0), &s), 1);
        assert_eq!(cpu_count(&i(2_000_000_000, 0, 0), &s), 2);
        assert_eq!(cpu_count(&i(0, 300_000, 100_000), &s), 3);
        assert_eq!(cpu_count(&i(0, 0, 0), &s), 8);
        assert_eq!(cpu_count(&i(500_000_000, 0, 0), &s), 1);
    }
}
