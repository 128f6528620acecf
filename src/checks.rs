//! Startup checks (protocol.md §3) and the `--check` report: configuration, PostgreSQL
//! reachable, role privileges, pg_stat_statements readable, platform reachable with this key.

use crate::config::Config;
use crate::error::Error;
use crate::pg::{queries, Pg};
use crate::platform::payload::HeartbeatInfo;
use crate::platform::Platform;
use std::time::{Instant, SystemTime};

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {:<22} {}",
            if self.ok { " ok " } else { "FAIL" },
            self.name,
            self.detail
        )
    }
}

fn check(name: &'static str, r: Result<String, Error>) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(e) => Check {
            name,
            ok: false,
            detail: e.to_string(),
        },
    }
}

/// The name of the check that fails while PostgreSQL cannot be reached.
pub const PG_REACHABLE: &str = "PostgreSQL reachable";

/// Results of a run of checks.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub checks: Vec<Check>,
    /// PostgreSQL could not be reached for a reason that may clear by itself (down, starting,
    /// unreachable), as opposed to refusing the agent (authentication, no such database).
    pub pg_unreachable: bool,
}

impl Outcome {
    pub fn failed(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }

    /// The failed check when the only problem is that PostgreSQL cannot be reached yet: the
    /// daemon then waits for it instead of exiting. None when nothing failed or when anything
    /// else failed (a wrong password, a missing privilege, the platform).
    pub fn only_pg_unreachable(&self) -> Option<&Check> {
        let mut failed = self.checks.iter().filter(|c| !c.ok);
        let first = failed.next()?;
        (self.pg_unreachable && first.name == PG_REACHABLE && failed.next().is_none())
            .then_some(first)
    }
}

/// The PostgreSQL checks: reachable, role privileges, pg_stat_statements readable.
pub fn pg_checks(pg: &Pg) -> Outcome {
    let mut out = Vec::new();
    let mut pg_unreachable = false;
    let started = Instant::now();
    // One direct attempt first: the pool would retry a refused or rejected login for seconds.
    let conn = pg.try_connect().and_then(|()| pg.conn());
    match conn {
        Ok(mut c) => {
            let v = queries::server_version(&mut c);
            out.push(check(
                PG_REACHABLE,
                v.map(|v| {
                    format!(
                        "PostgreSQL {} at {} ({} ms)",
                        v.wire(),
                        pg.display_url,
                        started.elapsed().as_millis()
                    )
                }),
            ));
            out.push(check(
                "role privileges",
                queries::role_privileges(&mut c).and_then(|(user, superuser, stats)| {
                    if superuser {
                        Ok(format!("{user}: superuser"))
                    } else if stats {
                        Ok(format!("{user}: member of pg_read_all_stats (ALTER SYSTEM needs superuser or GRANT ALTER SYSTEM ON PARAMETER)"))
                    } else {
                        Err(Error::invalid(format!(
                            "{user} is neither superuser nor a member of pg_read_all_stats (or pg_monitor): other sessions' statistics would be hidden"
                        )))
                    }
                }),
            ));
            out.push(check(
                "pg_stat_statements",
                queries::pg_stat_statements_readable(&mut c)
                    .map(|n| format!("public.pg_stat_statements readable ({n} entries)")),
            ));
        }
        Err(e) => {
            pg_unreachable = e.is_connection();
            out.push(Check {
                name: PG_REACHABLE,
                ok: false,
                detail: format!(
                    "unable to ping PostgreSQL database at {}: {e}",
                    pg.display_url
                ),
            });
        }
    }
    Outcome {
        checks: out,
        pg_unreachable,
    }
}

/// Runs every check (all of them, so the report is complete); the caller decides whether the
/// first failure is fatal.
pub fn run(cfg: &Config, pg: &Pg, platform: Option<&Platform>, agent_id: &str) -> Outcome {
    let mut out = vec![Check {
        name: "configuration",
        ok: true,
        detail: match &cfg.file {
            Some(f) => format!("{} (+ DBT_* environment)", f.display()),
            None => "environment only (no dbtune.yaml found)".into(),
        },
    }];
    let pg_part = pg_checks(pg);
    out.extend(pg_part.checks);
    match platform {
        None => out.push(Check {
            name: "platform",
            ok: true,
            detail: "skipped (dry run: nothing is sent)".into(),
        }),
        Some(p) => {
            let t = Instant::now();
            out.push(check(
                "platform",
                p.heartbeat(&HeartbeatInfo {
                    agent_version: crate::version::VERSION,
                    agent_start_time: SystemTime::now(),
                    agent_identifier: agent_id,
                    allow_restart: cfg.runtime_allow_restart,
                })
                .map(|_| {
                    format!(
                        "heartbeat accepted by {} ({} ms)",
                        cfg.dbtune.server_url,
                        t.elapsed().as_millis()
                    )
                })
                .map_err(|e| e.context("failed to connect to dbtune server")),
            ));
        }
    }
    Outcome {
        checks: out,
        pg_unreachable: pg_part.pg_unreachable,
    }
}
