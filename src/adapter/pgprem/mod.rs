//! The self-managed PostgreSQL adapter (`--local`): host metrics from /proc, system info,
//! pg_settings, apply through ALTER SYSTEM + reload or a restart script / systemctl, and the
//! memory guardrail judged against PostgreSQL's cgroup limit when it has one.

pub mod restart;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::config::Config;
use crate::error::{Context, Result};
use crate::metrics::{data_disk::DataDisk, hardware::Hardware, MetricCollector};
use crate::model::{ConfigRow, GuardrailSignal, Metric};
use crate::pg::{Pg, SessionLimits};
use restart::{Restarter, ScriptRestarter, SystemctlRestarter};
use std::path::PathBuf;

pub struct PgPrem {
    pg: Pg,
    applier: Applier,
    memory: super::local_host::MemoryGuardrail,
}

impl PgPrem {
    pub fn new(cfg: &Config) -> Result<PgPrem> {
        let pg = Pg::new(
            cfg.postgresql.connection_url.expose(),
            cfg.postgresql.pool_size,
            SessionLimits::default(),
        )
        .context("failed to create PG driver")?;
        // Self-managed restarts go through a script or systemd (other providers restart
        // through their control plane, so this is checked here, not in the configuration).
        if cfg.postgresql.allow_restart
            && cfg.postgresql.service_name.is_empty()
            && cfg.postgresql.restart_script_path.is_empty()
        {
            return Err(crate::error::Error::invalid(
                "postgresql.allow_restart is true but neither postgresql.service_name (DBT_POSTGRESQL_SERVICE_NAME) nor postgresql.restart_script_path (DBT_POSTGRESQL_RESTART_SCRIPT_PATH) is configured",
            ));
        }
        let restart_timeout = cfg.apply.restart_timeout;
        let restarter: Option<Box<dyn Restarter>> =
            if !cfg.postgresql.restart_script_path.is_empty() {
                Some(Box::new(ScriptRestarter {
                    path: PathBuf::from(&cfg.postgresql.restart_script_path),
                    timeout: restart_timeout,
                }))
            } else if !cfg.postgresql.service_name.is_empty() {
                Some(Box::new(SystemctlRestarter {
                    unit: cfg.postgresql.service_name.clone(),
                    timeout: restart_timeout,
                }))
            } else {
                None
            };
        let target = target::LocalTarget::new(restarter, cfg.apply.auto_conf_path.clone());
        Ok(PgPrem {
            pg,
            applier: Applier::new(cfg, Box::new(target)),
            memory: Default::default(),
        })
    }
}

impl Adapter for PgPrem {
    fn name(&self) -> &'static str {
        "pgprem"
    }

    fn pg(&self) -> &Pg {
        &self.pg
    }

    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![
            Box::new(Hardware::default()),
            Box::new(DataDisk::new(self.pg.clone())),
        ]
    }

    fn system_info(&self) -> Result<Vec<Metric>> {
        super::local_host::system_info(&self.pg)
    }

    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        super::active_config_from_pg(&self.pg)
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        self.memory.check(&self.pg, threshold)
    }
}
