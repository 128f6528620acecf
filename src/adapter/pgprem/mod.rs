//! The self-managed PostgreSQL adapter (`--local`): host metrics from /proc, system info,
//! pg_settings, apply through ALTER SYSTEM + reload or a restart script / systemctl, and the
//! memory guardrail judged against PostgreSQL's cgroup limit when it has one.

pub mod restart;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::config::Config;
use crate::error::{Context, Result};
use crate::host::{cgroup, cpu, distro, memory, process};
use crate::metrics::{data_disk::DataDisk, hardware::Hardware, MetricCollector};
use crate::model::{ConfigRow, GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use crate::pg::{Pg, SessionLimits};
use restart::{Restarter, ScriptRestarter, SystemctlRestarter};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct PgPrem {
    pg: Pg,
    applier: Applier,
    /// The postmaster's PID when PostgreSQL runs on this host (for its cgroup), re-resolved
    /// at most once a minute.
    postmaster: Mutex<(Option<u32>, Option<Instant>)>,
    resolving: AtomicBool,
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
            postmaster: Mutex::new((None, None)),
            resolving: AtomicBool::new(false),
        })
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let mut g = self.postmaster.lock().unwrap_or_else(|p| p.into_inner());
        let stale = g.1.is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if stale && !self.resolving.swap(true, Ordering::SeqCst) {
            g.1 = Some(Instant::now());
            drop(g);
            let pid = self.resolve_postmaster();
            self.resolving.store(false, Ordering::SeqCst);
            let mut g = self.postmaster.lock().unwrap_or_else(|p| p.into_inner());
            if pid.is_some() {
                g.0 = pid;
            }
            return g.0;
        }
        g.0
    }

    /// Our backend's parent is the postmaster; only trusted when it is a local postgres process.
    fn resolve_postmaster(&self) -> Option<u32> {
        let mut conn = self.pg.conn().ok()?;
        let backend = crate::pg::queries::backend_pid(&mut conn).ok()?;
        let backend = u32::try_from(backend).ok()?;
        let ppid = process::parent_of(backend)?;
        (process::is_postgres_process(backend) && process::is_postgres_process(ppid))
            .then_some(ppid)
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
        let mut c = self.pg.conn()?;
        let facts = crate::pg::queries::pg_facts(&mut c)?;
        let mem = memory::host().context("reading host memory")?;
        let cpus = cpu::count().context("counting CPUs")?;
        let (platform, platform_version) = distro::detect();
        Ok(vec![
            Metric::string("pg_version", facts.version.wire()),
            Metric::bytes("node_memory_total", mem.total as i64),
            Metric::string("node_os_info", std::env::consts::OS),
            Metric::string("system_info_platform_version", platform_version),
            Metric::string("system_info_platform", platform),
            Metric::int("pg_max_connections", facts.max_connections),
            Metric::int("node_cpu_count", cpus),
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
        let used = match self.postmaster_pid().and_then(cgroup::memory_of) {
            Some(cg) => cg.used_percent(),
            None => memory::host()
                .context("reading host memory")?
                .used_percent(),
        };
        log::debug!("Memory usage: {used:.2}%");
        Ok((used > threshold).then_some(GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        }))
    }
}
