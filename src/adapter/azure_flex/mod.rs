//! Azure Database for PostgreSQL Flexible Server (`--azure-flex`, adapters.md §3): server
//! parameters through Resource Manager (`target`), CPU and memory from Azure Monitor
//! (`metrics`), CPU count and memory from the SKU name (`sku`). With `auth_method: entra`
//! every new PostgreSQL connection uses an Entra token (scope ossrdbms-aad) as its password,
//! cached and refreshed five minutes before it expires. Credentials: the Azure chain of
//! `crate::cloud::azure::auth`, tokens cached per scope.

pub mod config;
pub mod lro;
pub mod metrics;
pub mod sku;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::checks::Check;
use crate::cloud::azure::{Arm, TokenProvider, ARM_SCOPE, POSTGRES_SCOPE};
use crate::cloud::http::Http;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::metrics::MetricCollector;
use crate::model::{ConfigRow, GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use crate::pg::{PasswordSource, Pg, SessionLimits};
use crate::secret::Secret;
use config::AzureFlexConfig;
use std::sync::Arc;

/// Entra tokens as PostgreSQL passwords.
struct EntraPassword(Arc<TokenProvider>);

impl PasswordSource for EntraPassword {
    fn password(&self) -> std::result::Result<String, String> {
        self.0
            .token(POSTGRES_SCOPE)
            .map(|t: Secret| t.expose().to_string())
            .map_err(|e| {
                Error::from(e)
                    .context("getting an Entra token for PostgreSQL")
                    .to_string()
            })
    }
}

pub struct AzureFlex {
    pg: Pg,
    applier: Applier,
    cfg: AzureFlexConfig,
    arm: Arm,
    monitor: Arc<metrics::Monitor>,
}

impl AzureFlex {
    pub fn new(cfg: &Config) -> Result<AzureFlex> {
        let c = AzureFlexConfig::from_sources(&cfg.sources).map_err(Error::invalid)?;
        let http = Http::new();
        let tokens = TokenProvider::from_env(http.clone(), &cfg.sources.env)
            .map_err(|e| Error::from(e).context("finding Azure credentials"))?;
        let mut arm = Arm::new(http, tokens);
        arm.base = c.arm_url.clone();
        let url = cfg.postgresql.connection_url.expose();
        let pg = if c.entra {
            let password: Arc<dyn PasswordSource> = Arc::new(EntraPassword(arm.tokens.clone()));
            Pg::with_password(
                url,
                cfg.postgresql.pool_size,
                SessionLimits::default(),
                password,
            )
        } else {
            Pg::new(url, cfg.postgresql.pool_size, SessionLimits::default())
        }
        .context("failed to create PG driver")?;
        let id = c.resource_id();
        let monitor = Arc::new(metrics::Monitor::new(arm.clone(), id.clone()));
        let target = target::AzureTarget::new(arm.clone(), id, cfg.apply.restart_timeout);
        Ok(AzureFlex {
            pg,
            applier: Applier::new(cfg, Box::new(target)),
            cfg: c,
            arm,
            monitor,
        })
    }

    fn server(&self) -> Result<serde_json::Value> {
        self.arm
            .get(&self.cfg.resource_id(), target::API_VERSION)
            .map_err(|e| Error::from(e).context(format!("Servers_Get {}", self.cfg.resource_id())))
    }
}

impl Adapter for AzureFlex {
    fn name(&self) -> &'static str {
        "azure_flex"
    }

    fn pg(&self) -> &Pg {
        &self.pg
    }

    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![Box::new(metrics::Hardware {
            monitor: self.monitor.clone(),
        })]
    }

    fn system_info(&self) -> Result<Vec<Metric>> {
        let mut c = self.pg.conn()?;
        let facts = crate::pg::queries::pg_facts(&mut c)?;
        let server = self.server()?;
        let sku_name = server["sku"]["name"].as_str().unwrap_or("");
        let mut out = vec![
            Metric::string("pg_version", facts.version.wire()),
            Metric::int("pg_max_connections", facts.max_connections),
            Metric::string("pg_current_database", facts.current_database),
            Metric::int("pg_database_count", facts.database_count),
        ];
        match sku::parse(sku_name) {
            Some(s) => {
                out.push(Metric::int("node_cpu_count", s.cores as i64));
                out.push(Metric::bytes("node_memory_total", s.memory_bytes as i64));
            }
            None => log::warn!(
                "Azure SKU {sku_name:?} of {} is not a known family: CPU count and memory are unknown",
                self.cfg.server_name
            ),
        }
        Ok(out)
    }

    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        super::active_config_from_pg(&self.pg)
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn control_plane_checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let source = self.arm.tokens.credential.name();
        out.push(match self.arm.tokens.token(ARM_SCOPE) {
            Ok(_) => Check {
                name: "azure credentials",
                ok: true,
                detail: format!("Resource Manager token obtained with {source}"),
            },
            Err(e) => Check {
                name: "azure credentials",
                ok: false,
                detail: format!("no Resource Manager token with {source}: {e}"),
            },
        });
        let id = self.cfg.resource_id();
        out.push(match self.server() {
            Ok(s) => Check {
                name: "azure server",
                ok: true,
                detail: format!(
                    "{id} found (SKU {}, state {}); reading it is allowed",
                    s["sku"]["name"].as_str().unwrap_or("?"),
                    s["properties"]["state"].as_str().unwrap_or("?")
                ),
            },
            Err(e) => Check {
                name: "azure server",
                ok: false,
                detail: format!("{e} (needs Microsoft.DBforPostgreSQL/flexibleServers/read)"),
            },
        });
        // Reading a parameter proves configurations/read; a change cannot be proven without
        // making one (ARM has no dry run for Configurations_Put).
        let t = target::AzureTarget::new(
            self.arm.clone(),
            id.clone(),
            std::time::Duration::from_secs(30),
        );
        out.push(match t.get("work_mem") {
            Ok(_) => Check {
                name: "azure parameters",
                ok: true,
                detail: "Configurations_Get works; applying needs Microsoft.DBforPostgreSQL/flexibleServers/configurations/write (and .../restart/action for restarts), not tested".into(),
            },
            Err(e) => Check {
                name: "azure parameters",
                ok: false,
                detail: format!("{e} (needs Microsoft.DBforPostgreSQL/flexibleServers/configurations/read)"),
            },
        });
        if self.cfg.entra {
            out.push(match self.arm.tokens.token(POSTGRES_SCOPE) {
                Ok(_) => Check {
                    name: "entra postgres token",
                    ok: true,
                    detail: format!("token for ossrdbms-aad obtained with {source}"),
                },
                Err(e) => Check {
                    name: "entra postgres token",
                    ok: false,
                    detail: e.to_string(),
                },
            });
        }
        out
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        let Some(m) = self.monitor.sample()?.memory else {
            return Ok(None);
        };
        log::debug!("Azure memory_percent: {m:.2}%");
        Ok((m > threshold).then_some(GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        }))
    }
}
