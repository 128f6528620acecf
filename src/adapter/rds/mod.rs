//! The AWS RDS and Aurora PostgreSQL adapter (`--rds`, `--aurora`; adapters.md §1): discovery
//! of the instance, its cluster and parameter groups; apply through the parameter groups
//! ([`target::RdsTarget`]); CloudWatch / Performance Insights metrics and the memory guardrail;
//! optional RDS IAM authentication for PostgreSQL logins. Aurora is a mode of the same adapter
//! (`aurora.rs` holds what differs).

pub mod api;
pub mod aurora;
pub mod config;
pub mod discovery;
pub mod iam_auth;
pub mod metrics;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::checks::Check;
use crate::cloud::aws::Aws;
use crate::cloud::Http;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::metrics::MetricCollector;
use crate::model::{ConfigRow, GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use crate::pg::{Pg, SessionLimits};
use api::Api;
use discovery::{is_default_group, DbInfo};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the adapter, its target and its collector share.
pub struct Shared {
    pub api: Api,
    pub cfg: config::RdsConfig,
    pub aurora: bool,
    info: Mutex<DbInfo>,
    pub defs: Mutex<Option<target::Definitions>>,
    sample: Mutex<Option<(Instant, metrics::Sample)>>,
    /// Bound of every control-plane wait and retry inside one apply step (the pipeline's own
    /// deadline for activation: `apply.restart_timeout`).
    pub deadline: Duration,
}

impl Shared {
    pub fn info(&self) -> DbInfo {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set_info(&self, i: DbInfo) {
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = i;
    }
    /// Describes the instance again (the size is carried over while the class is unchanged).
    pub fn refresh(&self) -> Result<DbInfo> {
        let prev = self.info();
        let i = discovery::fetch(
            &self.api,
            &self.cfg.database_identifier,
            self.aurora,
            Some(&prev),
        )
        .map_err(|e| Error::from(e).context("describing the RDS instance"))?;
        self.set_info(i.clone());
        Ok(i)
    }
}

pub struct Rds {
    sh: Arc<Shared>,
    pg: Pg,
    applier: Applier,
    last_guardrail: Mutex<Option<Instant>>,
}

impl Rds {
    pub fn new(cfg: &Config, aurora: bool) -> Result<Rds> {
        let rc = config::RdsConfig::from_sources(&cfg.sources, aurora).map_err(Error::invalid)?;
        if let Some(g) = &rc.deprecated_group {
            log::warn!("{}.RDS_PARAMETER_GROUP_NAME / DBT_RDS_PARAMETER_GROUP_NAME ({g}) is deprecated and ignored: the parameter group is discovered from the instance", rc.section);
        }
        let aws = Aws::new(
            Http::new(),
            cfg.sources.env.clone(),
            &rc.region,
            rc.keys.clone(),
        );
        let api = Api { aws };
        let info = discovery::fetch(&api, &rc.database_identifier, aurora, None).map_err(|e| {
            Error::from(e).context(format!(
                "discovering RDS instance {}",
                rc.database_identifier
            ))
        })?;
        log::info!(
            "RDS instance {} (class {}, status {}): parameter group {}{}",
            info.instance.identifier,
            info.instance.class,
            info.instance.status,
            info.group().unwrap_or("(none)"),
            info.cluster_group()
                .map(|c| format!(", cluster parameter group {c}"))
                .unwrap_or_default()
        );
        let url = cfg.postgresql.connection_url.expose();
        let pg = if rc.iam_auth {
            let provider = iam_auth::TokenSource::new(api.aws.clone(), url)?;
            Pg::with_password(
                url,
                cfg.postgresql.pool_size,
                SessionLimits::default(),
                Arc::new(provider),
            )
        } else {
            Pg::new(url, cfg.postgresql.pool_size, SessionLimits::default())
        }
        .context("failed to create PG driver")?;
        let sh = Arc::new(Shared {
            api,
            cfg: rc,
            aurora,
            info: Mutex::new(info),
            defs: Mutex::new(None),
            sample: Mutex::new(None),
            deadline: cfg.apply.restart_timeout,
        });
        let applier = Applier::new(cfg, Box::new(target::RdsTarget::new(sh.clone())));
        Ok(Rds {
            sh,
            pg,
            applier,
            last_guardrail: Mutex::new(None),
        })
    }
}

impl Adapter for Rds {
    fn name(&self) -> &'static str {
        if self.sh.aurora {
            "aurora"
        } else {
            "rds"
        }
    }

    fn pg(&self) -> &Pg {
        &self.pg
    }

    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![Box::new(metrics::CloudMetrics {
            sh: self.sh.clone(),
        })]
    }

    fn system_info(&self) -> Result<Vec<Metric>> {
        let info = self.sh.refresh()?;
        let mut c = self.pg.conn()?;
        let facts = crate::pg::queries::pg_facts(&mut c)?;
        let mut out = Vec::new();
        if let Some((cpus, mem)) = info.size {
            out.push(Metric::bytes("node_memory_total", mem as i64));
            out.push(Metric::int("node_cpu_count", cpus as i64));
        }
        if let Some(g) = info.group() {
            out.push(Metric::string("aws_rds_parameter_group", g));
        }
        if let Some(g) = info.cluster_group() {
            out.push(Metric::string("aws_rds_cluster_parameter_group", g));
        }
        out.extend([
            Metric::string("pg_version", facts.version.wire()),
            Metric::int("pg_max_connections", facts.max_connections),
            Metric::string("pg_current_database", facts.current_database),
            Metric::int("pg_database_count", facts.database_count),
        ]);
        Ok(out)
    }

    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        super::active_config_from_pg(&self.pg)
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        {
            let mut last = self
                .last_guardrail
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let info = self.sh.info();
        let Some((_, total)) = info.size.filter(|(_, t)| *t > 0) else {
            return Ok(None);
        };
        let s = self.sh.sample()?;
        let critical = |kind| {
            Some(GuardrailSignal {
                level: GuardrailLevel::Critical,
                kind,
            })
        };
        // Active memory from PI when it has a value; FreeableMemory otherwise.
        if let Some((_, kb)) = s.active_kb.filter(|_| info.instance.pi_enabled) {
            let used = kb * 1024.0 / total as f64 * 100.0;
            log::debug!("RDS memory used (Performance Insights): {used:.2}%");
            return Ok(if used > threshold {
                critical(GuardrailType::Memory)
            } else {
                None
            });
        }
        if let Some((_, free)) = s.freeable {
            let freeable = free / total as f64 * 100.0;
            log::debug!("RDS freeable memory: {freeable:.2}%");
            return Ok(if freeable < 100.0 - threshold {
                critical(GuardrailType::FreeableMemory)
            } else {
                None
            });
        }
        Ok(None)
    }

    fn forced_off_collectors(&self) -> &'static [&'static str] {
        if self.sh.aurora {
            aurora::FORCED_OFF
        } else {
            &[]
        }
    }

    fn control_plane_checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let creds = self.sh.api.aws.credentials.credentials();
        out.push(Check {
            name: "AWS credentials",
            ok: creds.is_ok(),
            detail: match &creds {
                Ok(c) => format!("found (source: {})", c.source),
                Err(e) => format!("none usable: {e}"),
            },
        });
        let info = self.sh.refresh();
        out.push(Check {
            name: "RDS DescribeDBInstances",
            ok: info.is_ok(),
            detail: match &info {
                Ok(i) => format!(
                    "allowed: instance {} ({}, {}){}",
                    i.instance.identifier,
                    i.instance.class,
                    i.instance.status,
                    match i.size {
                        Some((c, m)) => format!(", {c} vCPU, {} MiB", m / 1024 / 1024),
                        None => ", size unknown".into(),
                    }
                ),
                Err(e) => format!(
                    "DescribeDBInstances {} failed: {e}",
                    self.sh.cfg.database_identifier
                ),
            },
        });
        let Ok(info) = info else { return out };
        let group = info.group().unwrap_or("");
        out.push(Check {
            name: "RDS parameter group",
            // A default group blocks applying, not collecting: reported, not fatal at start.
            ok: !group.is_empty(),
            detail: if group.is_empty() {
                "the instance has no DB parameter group".into()
            } else if is_default_group(group) {
                format!("{group} is a default group: AWS does not allow modifying it, so recommendations cannot be applied; attach a custom parameter group")
            } else {
                format!(
                    "{group} is custom{}",
                    info.cluster_group().map(|c| format!(" (cluster parameter group {c})")).unwrap_or_default()
                )
            },
        });
        let cw = self
            .sh
            .api
            .latest_metrics(&info.instance.identifier, &metrics::CW_METRICS);
        out.push(Check {
            name: "CloudWatch",
            ok: cw.is_ok(),
            detail: match &cw {
                Ok(v) => format!(
                    "GetMetricData reachable: {} of {} metrics have recent data",
                    v.iter().filter(|x| x.is_some()).count(),
                    v.len()
                ),
                Err(e) => format!("GetMetricData failed: {e}"),
            },
        });
        let pi = match (&info.instance.pi_enabled, &info.instance.resource_id) {
            (true, Some(rid)) => match self.sh.api.pi_active_memory_kb(rid) {
                Ok(_) => Check {
                    name: "Performance Insights",
                    ok: true,
                    detail: format!("enabled ({rid}): GetResourceMetrics answered"),
                },
                Err(e) => Check {
                    name: "Performance Insights",
                    ok: false,
                    detail: format!("enabled ({rid}) but GetResourceMetrics failed: {e}"),
                },
            },
            _ => Check {
                name: "Performance Insights",
                ok: true,
                detail: "not enabled: the memory guardrail uses CloudWatch FreeableMemory".into(),
            },
        };
        out.push(pi);
        out
    }
}
