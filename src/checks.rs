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

/// Runs every check (all of them, so the report is complete); the caller decides whether the
/// first failure is fatal.
pub fn run(cfg: &Config, pg: &Pg, platform: Option<&Platform>, agent_id: &str) -> Vec<Check> {
    let mut out = vec![Check {
        name: "configuration",
        ok: true,
        detail: match &cfg.file {
            Some(f) => format!("{} (+ DBT_* environment)", f.display()),
            None => "environment only (no dbtune.yaml found)".into(),
        },
    }];
    let started = Instant::now();
    let conn = pg.conn();
    match conn {
        Ok(mut c) => {
            let v = queries::server_version(&mut c);
            out.push(check(
                "PostgreSQL reachable",
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
            out.push(Check {
                name: "PostgreSQL reachable",
                ok: false,
                detail: format!(
                    "unable to ping PostgreSQL database at {}: {e}",
                    pg.display_url
                ),
            });
        }
    }
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
    out
}
