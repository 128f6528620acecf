//! Aiven for PostgreSQL (`--aiven`, adapters.md §4): configuration through the service's
//! `user_config` (see `target`), host metrics and the memory guardrail from Aiven's service
//! metrics (`metrics`), system info from `ServiceGet`, PostgreSQL over the configured
//! connection URL. The API token authenticates every call (`api`).

pub mod api;
pub mod config;
pub mod metrics;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::checks::Check;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::metrics::MetricCollector;
use crate::model::{ConfigRow, GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use crate::pg::{Pg, SessionLimits};
use api::AivenApi;
use config::AivenConfig;
use metrics::Monitor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub struct Aiven {
    pg: Pg,
    applier: Applier,
    cfg: AivenConfig,
    api: AivenApi,
    monitor: Arc<Monitor>,
    /// When the guardrail last obtained a value (the Go throttle: once per resolution).
    last_guardrail: Mutex<Option<Instant>>,
    /// The last `ServiceGet` for the active configuration and system info, reused for one
    /// resolution: the active configuration is sent every 5 s, and its derived rows follow
    /// PostgreSQL's real values whenever `user_config` and the server disagree.
    service_cache: Mutex<Option<(Instant, serde_json::Value)>>,
}

impl Aiven {
    pub fn new(cfg: &Config) -> Result<Aiven> {
        let c = AivenConfig::from_sources(&cfg.sources).map_err(Error::invalid)?;
        let pg = Pg::new(
            cfg.postgresql.connection_url.expose(),
            cfg.postgresql.pool_size,
            SessionLimits::default(),
        )
        .context("failed to create PG driver")?;
        let api = AivenApi::new(&c.api_url, c.token.clone(), &c.project, &c.service);
        let monitor = Arc::new(Monitor::new(api.clone(), c.resolution));
        let target = target::AivenTarget::new(api.clone());
        Ok(Aiven {
            pg,
            applier: Applier::new(cfg, Box::new(target)),
            cfg: c,
            api,
            monitor,
            last_guardrail: Mutex::new(None),
            service_cache: Mutex::new(None),
        })
    }

    fn service(&self) -> Result<serde_json::Value> {
        let s = self
            .api
            .service_get()
            .map_err(|e| Error::from(e).context(format!("reading {}", self.api.resource())))?;
        *self.service_cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), s.clone()));
        Ok(s)
    }

    fn recent_service(&self) -> Result<serde_json::Value> {
        if let Some((at, s)) = self
            .service_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if at.elapsed() < self.cfg.resolution {
                return Ok(s.clone());
            }
        }
        self.service()
    }
}

impl Adapter for Aiven {
    fn name(&self) -> &'static str {
        "aiven"
    }

    fn pg(&self) -> &Pg {
        &self.pg
    }

    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![Box::new(metrics::Hardware::new(self.monitor.clone()))]
    }

    fn system_info(&self) -> Result<Vec<Metric>> {
        let s = self.service()?;
        let cpus = s["node_cpu_count"].as_i64().ok_or_else(|| {
            Error::other(format!(
                "{}: ServiceGet has no node_cpu_count",
                self.api.resource()
            ))
        })?;
        let mem = s["node_memory_mb"].as_f64().ok_or_else(|| {
            Error::other(format!(
                "{}: ServiceGet has no node_memory_mb",
                self.api.resource()
            ))
        })?;
        let mut c = self.pg.conn()?;
        let facts = crate::pg::queries::pg_facts(&mut c)?;
        Ok(vec![
            Metric::string("pg_version", facts.version.wire()),
            Metric::int("pg_max_connections", facts.max_connections),
            Metric::int("node_cpu_count", cpus),
            Metric::bytes("node_memory_total", (mem * 1048576.0).round() as i64),
            Metric::string("pg_current_database", facts.current_database),
            Metric::int("pg_database_count", facts.database_count),
        ])
    }

    /// pg_settings as Aiven takes the values (§4.4): `work_mem` in MB and a
    /// `shared_buffers_percentage` row first, both with context `service` as the Go agent
    /// reports them, so the platform's proposals round-trip.
    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        let service = self.recent_service()?;
        let mut c = self.pg.conn()?;
        let rows = crate::pg::queries::pg_settings(&mut c)?;
        drop(c);
        let mut map: HashMap<String, _> =
            rows.iter().map(|s| (s.name.clone(), s.clone())).collect();
        target::present_settings(&mut map, &service)?;
        let row = |s: &crate::pg::queries::Setting, context: &str| ConfigRow {
            setting: crate::platform::payload::typed_setting(&s.vartype, &s.setting),
            name: s.name.clone(),
            unit: s.unit.clone(),
            vartype: s.vartype.clone(),
            context: context.to_string(),
        };
        let mut out = Vec::with_capacity(rows.len() + 1);
        if let Some(p) = map.get("shared_buffers_percentage") {
            out.push(row(p, "service"));
        }
        for s in &rows {
            let s = &map[&s.name];
            out.push(row(
                s,
                if s.name == "work_mem" {
                    "service"
                } else {
                    &s.context
                },
            ));
        }
        Ok(out)
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn control_plane_checks(&self) -> Vec<Check> {
        let mut out = vec![Check {
            name: "aiven api token",
            ok: true,
            detail: format!("from {}", self.cfg.token_source),
        }];
        let resource = self.api.resource();
        out.push(match self.service() {
            Ok(s) if s["service_type"].as_str() != Some("pg") => Check {
                name: "aiven service",
                ok: false,
                detail: format!(
                    "{resource} is a {:?} service, not PostgreSQL (pg)",
                    s["service_type"].as_str().unwrap_or("?")
                ),
            },
            Ok(s) => Check {
                name: "aiven service",
                ok: true,
                detail: format!(
                    "{resource} found ({}, plan {}, {} CPU(s), {} MB); reading its configuration is allowed (ServiceGet)",
                    s["state"].as_str().unwrap_or("?"),
                    s["plan"].as_str().unwrap_or("?"),
                    s["node_cpu_count"],
                    s["node_memory_mb"]
                ),
            },
            Err(e) => Check {
                name: "aiven service",
                ok: false,
                detail: format!("{e} (the token's user needs access to project {})", self.cfg.project),
            },
        });
        out.push(match self.monitor.samples() {
            Ok(s) => Check {
                name: "aiven metrics",
                ok: true,
                detail: format!("ServiceMetricsFetch works ({} usable series)", s.len()),
            },
            Err(e) => Check {
                name: "aiven metrics",
                ok: false,
                detail: e.to_string(),
            },
        });
        // ServiceUpdate has no dry run: the change permission cannot be proven without
        // changing the service, so this line says what is needed.
        out.push(Check {
            name: "aiven configuration changes",
            ok: true,
            detail: format!(
                "not tested (ServiceUpdate has no dry run); applying needs a project member allowed to change services (operator or admin; scoped tokens: services:write) on {resource}"
            ),
        });
        out
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        {
            let last = self
                .last_guardrail
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < self.cfg.resolution) {
                return Ok(None);
            }
        }
        let samples = self.monitor.samples()?;
        let Some(avail) = metrics::get(&samples, "mem_available") else {
            log::debug!("Aiven mem_available not available; no memory guardrail this time");
            return Ok(None);
        };
        *self
            .last_guardrail
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        // Used memory against the threshold (the Go agent compares *available* memory,
        // which signals when memory is plentiful and never when it runs out).
        let used = 100.0 - avail.value;
        log::debug!(
            "Aiven memory used: {used:.2}% (mem_available {:.2}%)",
            avail.value
        );
        Ok((used > threshold).then_some(GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        }))
    }
}
