//! `dbtune-agent status`: what the running daemon last wrote to `<state_dir>/status.json`
//! (provider, PostgreSQL reachability and version, last successful sends, platform failing
//! since when) plus what the state directory itself says (last apply from the history, the
//! restart budget, a freeze, a journal awaiting recovery). Works as the daemon's user whether
//! it runs or not. Exit codes: 0 healthy, 1 degraded, 3 not running.
//!
//! The status file holds timestamps, names and versions only: never a URL with credentials, a
//! key or a password.

use crate::apply::history::{self, HistoryOutcome};
use crate::apply::journal::{self, Budget, Journal};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const STATUS_FILE: &str = "status.json";
/// The daemon rewrites the file every 10 s; older than this means it is not running.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

pub const EXIT_HEALTHY: i32 = 0;
pub const EXIT_DEGRADED: i32 = 1;
pub const EXIT_NOT_RUNNING: i32 = 3;

/// What the daemon writes (Unix seconds; `None` = never).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub agent_version: String,
    pub started_at: i64,
    pub updated_at: i64,
    pub provider: String,
    pub dry_run: bool,
    pub pg_reachable: bool,
    pub pg_version: Option<String>,
    pub last_heartbeat_ok: Option<i64>,
    pub last_metrics_ok: Option<i64>,
    pub last_catalog_ok: Option<i64>,
    /// Start of the current streak of failed platform calls.
    pub platform_failing_since: Option<i64>,
    pub platform_last_error: Option<String>,
}

pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATUS_FILE)
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Atomically replaces the status file (errors ignored by the caller: a read-only state dir
/// must not stop the agent).
pub fn write(state_dir: &Path, s: &DaemonStatus) -> crate::error::Result<()> {
    journal::ensure_dir(state_dir)?;
    let bytes =
        serde_json::to_vec_pretty(s).map_err(|e| crate::error::Error::other(e.to_string()))?;
    journal::write_atomic(&status_path(state_dir), &bytes)
}

/// Everything `status` shows, also its `--json` form.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `healthy`, `degraded` or `not running`.
    pub state: String,
    pub problems: Vec<String>,
    pub state_dir: String,
    pub daemon: Option<DaemonStatus>,
    pub status_age_seconds: Option<i64>,
    pub last_apply: Option<history::Record>,
    pub restarts_last_24h: usize,
    pub max_restarts_per_day: u32,
    pub frozen: Option<String>,
    pub journal_awaiting_recovery: Option<String>,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        match self.state.as_str() {
            "healthy" => EXIT_HEALTHY,
            "degraded" => EXIT_DEGRADED,
            _ => EXIT_NOT_RUNNING,
        }
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks the process exists; EPERM means it does.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads the state directory. `policy` gives the freeze setting and the restart budget.
pub fn gather(state_dir: &Path, policy: &crate::config::apply::ApplyConfig) -> Report {
    let now = now_unix();
    let daemon: Option<DaemonStatus> = std::fs::read(status_path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let age = daemon.as_ref().map(|d| now - d.updated_at);
    let running = daemon
        .as_ref()
        .is_some_and(|d| now - d.updated_at <= STALE_AFTER.as_secs() as i64 && alive(d.pid));
    let mut problems = Vec::new();
    if let Some(d) = daemon.as_ref().filter(|_| running) {
        if !d.pg_reachable {
            problems.push("PostgreSQL is not reachable".to_string());
        }
        if let Some(since) = d.platform_failing_since {
            problems.push(format!(
                "the platform has been failing for {} ({})",
                age_text(now - since),
                d.platform_last_error.as_deref().unwrap_or("no detail")
            ));
        }
    }
    let last_apply = history::newest(state_dir);
    if let Some(r) = last_apply
        .as_ref()
        .filter(|r| r.outcome == HistoryOutcome::RollbackFailed)
    {
        problems.push(format!(
            "the last apply ({}) could not be rolled back",
            r.finished_at
        ));
    }
    let journal_awaiting_recovery = Journal::new(state_dir)
        .load()
        .ok()
        .flatten()
        .filter(|e| e.phase.unfinished())
        .map(|e| {
            format!(
                "{} of [{}] ({:?} since {})",
                journal::JOURNAL_FILE,
                e.knobs
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                e.phase,
                e.updated_at
            )
        });
    if let Some(j) = &journal_awaiting_recovery {
        problems.push(format!("an apply awaits recovery: {j}"));
    }
    let restarts_last_24h = Budget::new(state_dir)
        .recent(journal::now_unix())
        .map(|v| v.len())
        .unwrap_or(0);
    let state = if !running {
        "not running"
    } else if problems.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    Report {
        state: state.into(),
        problems,
        state_dir: state_dir.display().to_string(),
        daemon,
        status_age_seconds: age,
        last_apply,
        restarts_last_24h,
        max_restarts_per_day: policy.max_restarts_per_day,
        frozen: crate::apply::policy::frozen(policy, state_dir),
        journal_awaiting_recovery,
    }
}

/// `42s`, `3m 5s`, `2h 10m`, `3d 4h`.
pub fn age_text(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn when(now: i64, t: Option<i64>) -> String {
    match t {
        Some(t) => format!(
            "{} ago ({})",
            age_text(now - t),
            crate::timefmt::utc_seconds(UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
        ),
        None => "never".into(),
    }
}

/// The aligned table for a terminal.
pub fn render(r: &Report) -> String {
    let now = now_unix();
    let mut rows: Vec<(&str, String)> = vec![("State", r.state.clone())];
    match &r.daemon {
        Some(d) => {
            rows.push(("Agent", format!("{} (pid {})", d.agent_version, d.pid)));
            rows.push(("Provider", d.provider.clone()));
            if d.dry_run {
                rows.push(("Mode", "dry run (nothing is sent)".into()));
            }
            rows.push((
                "PostgreSQL",
                format!(
                    "{}{}",
                    if d.pg_reachable {
                        "reachable"
                    } else {
                        "NOT reachable"
                    },
                    d.pg_version
                        .as_deref()
                        .map(|v| format!(", version {v}"))
                        .unwrap_or_default()
                ),
            ));
            rows.push(("Last heartbeat", when(now, d.last_heartbeat_ok)));
            rows.push(("Last metrics", when(now, d.last_metrics_ok)));
            rows.push(("Last catalog", when(now, d.last_catalog_ok)));
            rows.push((
                "Platform",
                match d.platform_failing_since {
                    Some(t) => format!(
                        "FAILING since {} ({})",
                        when(now, Some(t)),
                        d.platform_last_error.as_deref().unwrap_or("no detail")
                    ),
                    None => "ok".into(),
                },
            ));
            rows.push(("Status written", when(now, Some(d.updated_at))));
        }
        None => rows.push((
            "Agent",
            "no status file (never started with this state_dir)".into(),
        )),
    }
    rows.push((
        "Last apply",
        match &r.last_apply {
            Some(a) => {
                let knobs: Vec<String> = a
                    .knobs
                    .iter()
                    .map(|k| {
                        format!(
                            "{} {} -> {}",
                            k.name,
                            k.before.as_deref().unwrap_or("?"),
                            k.after
                        )
                    })
                    .collect();
                format!(
                    "{} {} ({}): {}",
                    a.finished_at,
                    a.outcome.label(),
                    a.recommendation_id,
                    knobs.join(", ")
                )
            }
            None => "none".into(),
        },
    ));
    rows.push((
        "Restarts (24 h)",
        format!(
            "{} of {} allowed",
            r.restarts_last_24h, r.max_restarts_per_day
        ),
    ));
    rows.push(("Frozen", r.frozen.clone().unwrap_or_else(|| "no".into())));
    rows.push((
        "Journal",
        r.journal_awaiting_recovery
            .as_ref()
            .map(|j| format!("awaiting recovery: {j}"))
            .unwrap_or_else(|| "clean".into()),
    ));
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<w$}  {v}\n"));
    }
    for p in &r.problems {
        out.push_str(&format!("problem: {p}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_exit_codes() {
        let d = std::env::temp_dir().join(format!("dbtune-status-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let policy = crate::config::apply::ApplyConfig::default();
        let r = gather(&d, &policy);
        assert_eq!((r.state.as_str(), r.exit_code()), ("not running", 3));
        let mut s = DaemonStatus {
            pid: std::process::id(),
            updated_at: now_unix(),
            pg_reachable: true,
            ..Default::default()
        };
        write(&d, &s).unwrap();
        assert_eq!(gather(&d, &policy).exit_code(), 0);
        s.platform_failing_since = Some(now_unix() - 125);
        write(&d, &s).unwrap();
        let r = gather(&d, &policy);
        assert_eq!(r.exit_code(), 1);
        assert!(r.problems[0].contains("2m 5s"), "{:?}", r.problems);
        s.updated_at -= 600;
        write(&d, &s).unwrap();
        assert_eq!(gather(&d, &policy).exit_code(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }
}
