//! The Patroni adapter (`--patroni`, adapters.md §6). The agent runs on a Patroni node: host
//! metrics, system info and the memory guardrail come from this machine (as `--local`), the
//! configuration lives in Patroni's DCS and is changed through Patroni's REST API on the leader
//! only, with failover tracking in front of every read and apply.

pub mod config;
pub mod failover;
pub mod rest;
pub mod target;

use super::local_host::{self, MemoryGuardrail};
use super::Adapter;
use crate::apply::Applier;
use crate::checks::Check;
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::metrics::{data_disk::DataDisk, hardware::Hardware, MetricCollector};
use crate::model::{ConfigRow, ErrorReport, GuardrailSignal, Metric};
use crate::pg::{Pg, SessionLimits};
use config::PatroniConfig;
use failover::Failover;
use rest::Rest;
use std::sync::Arc;
use std::time::Instant;

pub struct Patroni {
    pg: Pg,
    applier: Applier,
    rest: Arc<Rest>,
    failover: Arc<Failover>,
    memory: MemoryGuardrail,
    cfg: PatroniConfig,
}

impl Patroni {
    pub fn new(cfg: &Config) -> Result<Patroni> {
        let pcfg = PatroniConfig::from_sources(&cfg.sources)?;
        let pg = Pg::new(
            cfg.postgresql.connection_url.expose(),
            cfg.postgresql.pool_size,
            SessionLimits::default(),
        )
        .context("failed to create PG driver")?;
        let rest = Arc::new(Rest::new(&pcfg)?);
        let failover = Arc::new(Failover::default());
        // The first leader seen is the one failovers are compared with; an unreachable REST API
        // here is not fatal (the checks and every later call say so).
        match rest.cluster() {
            Ok(c) => {
                let _ = failover.check_at(Instant::now(), Ok(&c), None);
                match c.member(&pcfg.node_name) {
                    Some(m) => log::info!(
                        "Patroni node {} is {} ({}); leader {}",
                        m.name,
                        m.role,
                        m.state,
                        c.leader().map(|l| l.name.as_str()).unwrap_or("none")
                    ),
                    None => {
                        log::warn!(
                        "patroni.node_name {:?} is not a member of the cluster at {} (members: {})",
                        pcfg.node_name,
                        pcfg.api_url,
                        c.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                    }
                }
            }
            Err(e) => log::error!("reading the Patroni cluster state: {e}"),
        }
        let target = target::PatroniTarget {
            rest: rest.clone(),
            failover: failover.clone(),
            pg: pg.clone(),
            node_name: pcfg.node_name.clone(),
        };
        Ok(Patroni {
            applier: Applier::new(cfg, Box::new(target)),
            pg,
            rest,
            failover,
            memory: MemoryGuardrail::default(),
            cfg: pcfg,
        })
    }

    /// §6.5 `CheckForFailover` in front of reads: a failover seen or settling is an error the
    /// runner suppresses (its text says "failover detected").
    fn check_failover(&self) -> Result<()> {
        self.failover
            .check(&self.rest, &self.pg)
            .map_err(Error::from)
    }

    /// A PostgreSQL error that means this node is going away or became a replica.
    fn pg_failure(&self, e: Error) -> Error {
        match self.failover.pg_error(&e) {
            Some(d) => Error::from(d),
            None => e,
        }
    }
}

impl Adapter for Patroni {
    fn name(&self) -> &'static str {
        "patroni"
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
        self.check_failover()?;
        local_host::system_info(&self.pg).map_err(|e| self.pg_failure(e))
    }

    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        self.check_failover()?;
        let rows = super::active_config_from_pg(&self.pg).map_err(|e| self.pg_failure(e))?;
        // §8.1: Patroni-managed names are not the platform's to tune.
        Ok(rows
            .into_iter()
            .filter(|r| !target::is_managed(&r.name))
            .collect())
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn control_plane_checks(&self) -> Vec<Check> {
        // Shown in the report: without any userinfo the URL may carry.
        let url = crate::secret::url::mask(&format!("{}/cluster", self.cfg.api_url));
        let c = match self.rest.cluster() {
            Ok(c) => c,
            Err(e) => {
                return vec![Check {
                    name: "Patroni REST",
                    ok: false,
                    detail: format!("GET {url} failed: {e}"),
                }]
            }
        };
        let mut out = vec![Check {
            name: "Patroni REST",
            ok: true,
            detail: format!(
                "GET {url}: scope {}, {} member(s)",
                c.scope.as_deref().unwrap_or("?"),
                c.members.len()
            ),
        }];
        out.push(match c.member(&self.cfg.node_name) {
            Some(m) => Check {
                name: "Patroni node role",
                ok: true,
                detail: format!(
                    "{} is {} ({}){}",
                    m.name,
                    m.role,
                    m.state,
                    if m.is_leader() {
                        ""
                    } else {
                        "; configuration is applied only by the agent on the leader"
                    }
                ),
            },
            None => Check {
                name: "Patroni node role",
                ok: false,
                detail: format!(
                    "patroni.node_name {:?} is not a member of the cluster (members: {})",
                    self.cfg.node_name,
                    c.members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        });
        out.push(match c.leader() {
            Some(l) => Check {
                name: "Patroni leader",
                ok: true,
                detail: format!("{} ({})", l.name, l.state),
            },
            None => Check {
                name: "Patroni leader",
                ok: false,
                detail:
                    "the cluster has no leader (failover in progress or the DCS is unreachable)"
                        .into(),
            },
        });
        out
    }

    fn take_reports(&self) -> Vec<ErrorReport> {
        self.failover.take_reports()
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        self.memory.check(&self.pg, threshold)
    }
}
