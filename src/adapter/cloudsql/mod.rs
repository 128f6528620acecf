//! Google Cloud SQL for PostgreSQL (`--cloudsql`, adapters.md §2): flags through the Cloud
//! SQL Admin API (see `target`), host metrics, system info and the memory guardrail from Cloud
//! Monitoring (`metrics`), PostgreSQL over the configured connection URL. Credentials:
//! Application Default Credentials (`crate::cloud::gcp::auth`).

pub mod config;
pub mod metrics;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::checks::Check;
use crate::cloud::gcp::auth::CLOUD_PLATFORM;
use crate::cloud::gcp::Google;
use crate::cloud::http::Http;
use crate::config::Config;
use crate::error::{Context, Result};
use crate::metrics::MetricCollector;
use crate::model::{ConfigRow, GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use crate::pg::{Pg, SessionLimits};
use config::CloudSqlConfig;
use metrics::Monitor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Go agent's guardrail throttle for Cloud SQL.
const GUARDRAIL_EVERY: Duration = Duration::from_secs(5);

pub struct CloudSql {
    pg: Pg,
    applier: Applier,
    cfg: CloudSqlConfig,
    google: Google,
    monitor: Arc<Monitor>,
    last_guardrail: Mutex<Instant>,
}

impl CloudSql {
    pub fn new(cfg: &Config) -> Result<CloudSql> {
        let c = CloudSqlConfig::from_sources(&cfg.sources).map_err(crate::error::Error::invalid)?;
        let pg = Pg::new(
            cfg.postgresql.connection_url.expose(),
            cfg.postgresql.pool_size,
            SessionLimits::default(),
        )
        .context("failed to create PG driver")?;
        let mut google = Google::from_env(Http::new(), &cfg.sources.env)
            .map_err(|e| crate::error::Error::from(e).context("finding Google credentials"))?;
        google.sqladmin_base = c.sqladmin_url.clone();
        google.monitoring_base = c.monitoring_url.clone();
        let monitor = Arc::new(Monitor::new(google.clone(), &c.project_id, c.database_id()));
        let target = target::CloudSqlTarget::new(
            google.clone(),
            &c.project_id,
            &c.instance,
            cfg.apply.restart_timeout,
        );
        Ok(CloudSql {
            pg,
            applier: Applier::new(cfg, Box::new(target)),
            cfg: c,
            google,
            monitor,
            last_guardrail: Mutex::new(Instant::now()),
        })
    }
}

impl Adapter for CloudSql {
    fn name(&self) -> &'static str {
        "cloudsql"
    }

    fn pg(&self) -> &Pg {
        &self.pg
    }

    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![Box::new(metrics::Hardware::new(self.monitor.clone()))]
    }

    fn system_info(&self) -> Result<Vec<Metric>> {
        let mut c = self.pg.conn()?;
        let facts = crate::pg::queries::pg_facts(&mut c)?;
        let cores = self.monitor.value("cpu/reserved_cores", None)?;
        let memory = self.monitor.value("memory/quota", None)?;
        Ok(vec![
            Metric::string("pg_version", facts.version.wire()),
            Metric::int("pg_max_connections", facts.max_connections),
            Metric::int("node_cpu_count", cores.trunc() as i64),
            Metric::bytes("node_memory_total", memory as i64),
            Metric::string("pg_current_database", facts.current_database),
            Metric::int("pg_database_count", facts.database_count),
        ])
    }

    /// pg_settings without `internal` parameters (Cloud SQL cannot change them).
    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        Ok(super::active_config_from_pg(&self.pg)?
            .into_iter()
            .filter(|r| r.context != "internal")
            .collect())
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn control_plane_checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let source = format!("{:?}", self.google.tokens.source);
        out.push(match self.google.tokens.token(CLOUD_PLATFORM) {
            Ok(_) => Check {
                name: "google credentials",
                ok: true,
                detail: format!("access token obtained from {source}"),
            },
            Err(e) => Check {
                name: "google credentials",
                ok: false,
                detail: format!("no access token from {source}: {e}"),
            },
        });
        let resource = format!(
            "projects/{}/instances/{}",
            self.cfg.project_id, self.cfg.instance
        );
        out.push(
            match self
                .google
                .sql_instance_get(&self.cfg.project_id, &self.cfg.instance)
            {
                Ok(i) => Check {
                    name: "cloud sql instance",
                    ok: true,
                    detail: format!(
                        "{resource} found ({}, {}, {} database flag(s)); reading its configuration is allowed (cloudsql.instances.get)",
                        i["databaseVersion"].as_str().unwrap_or("?"),
                        i["state"].as_str().unwrap_or("?"),
                        i["settings"]["databaseFlags"].as_array().map_or(0, Vec::len)
                    ),
                },
                Err(e) => Check {
                    name: "cloud sql instance",
                    ok: false,
                    detail: format!("instances.get of {resource} failed (needs cloudsql.instances.get): {e}"),
                },
            },
        );
        out.push(match self.monitor.value("memory/quota", None) {
            Ok(_) => Check {
                name: "cloud monitoring",
                ok: true,
                detail: format!(
                    "timeSeries.list of {} works (monitoring.timeSeries.list)",
                    self.cfg.database_id()
                ),
            },
            Err(e) => Check {
                name: "cloud monitoring",
                ok: false,
                detail: format!("{e} (needs monitoring.timeSeries.list)"),
            },
        });
        // Cloud SQL has no dry run for instances.patch: the change permission cannot be
        // proven without changing the instance, so this line says what is needed.
        out.push(Check {
            name: "cloud sql flag changes",
            ok: true,
            detail: format!(
                "not tested (instances.patch has no dry run); applying needs cloudsql.instances.update on {resource}"
            ),
        });
        out
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        {
            let mut last = self
                .last_guardrail
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < GUARDRAIL_EVERY {
                return Ok(None);
            }
            *last = Instant::now();
        }
        let usage = self.monitor.value("memory/components", Some("Usage"))?;
        log::debug!("Cloud SQL memory usage: {usage:.2}%");
        Ok((usage > threshold).then_some(GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        }))
    }
}
