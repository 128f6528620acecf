//! Applying a recommendation to PostgreSQL (protocol.md §7, §8.5), safely:
//! validate every knob against `pg_settings` and the local policy before touching anything;
//! skip knobs already at the proposed value; journal (intent → applied → verified) in the
//! state directory; `ALTER SYSTEM SET name = 'literal'`; reload or restart (bounded);
//! verify in `pg_settings`; on any failure restore the previous values and verify them.
//! The same preparation serves `plan` (which applies nothing) and start-up `recover`.

pub mod history;
pub mod journal;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod recover;
pub mod render;
pub mod restart;
pub mod snapshot;
pub mod units;
pub mod validate;

pub use plan::{plan, Plan};
pub use recover::{recover, RecoveryReport};

use crate::config::apply::ApplyConfig;
use crate::error::{Error, Kind, Result};
use crate::model::{KnobApplication, Recommendation};
use crate::pg::alter as sql;
use crate::pg::queries::{self, Setting};
use crate::pg::Pg;
use journal::{AutoConfValue, Budget, Entry, Journal, KnobChange, Phase};
use postgres::Client;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use validate::Norm;

/// How PostgreSQL gets restarted when a postmaster knob changes.
pub trait Restarter: Send + Sync {
    /// Restarts PostgreSQL (or starts it when it is down), giving up after `deadline`.
    fn restart(&self, deadline: Duration) -> crate::error::Result<()>;
    /// For messages: `restart script /usr/local/bin/x`, `systemctl restart postgresql`.
    fn describe(&self) -> String;
}

/// What `apply`, `plan` and `recover` need from their caller.
pub struct ApplyContext<'a> {
    pub pg: &'a Pg,
    /// The runtime `postgresql.allow_restart`.
    pub allow_restart: bool,
    /// None when neither a restart script nor a service name is configured.
    pub restarter: Option<&'a dyn Restarter>,
    pub policy: &'a ApplyConfig,
    pub state_dir: &'a Path,
    /// How long to wait for PostgreSQL to accept connections after a restart
    /// (normally `policy.ready_timeout`).
    pub ready_timeout: Duration,
}

/// A failed apply, reported to `log-entries` as `error_type` with
/// `error_message = "Failed to apply configuration: " + message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    pub error_type: &'static str,
    pub message: String,
}

impl ApplyError {
    pub fn config(message: impl Into<String>) -> Self {
        ApplyError {
            error_type: "config_apply_error",
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// What an apply did (the names are the knobs that changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every knob already had the proposed value: no ALTER, no reload, no restart.
    Unchanged,
    Reloaded(Vec<String>),
    Restarted(Vec<String>),
}

/// How long a reload may take to show in `pg_settings` (it is asynchronous).
const RELOAD_SETTLE: Duration = Duration::from_secs(10);
/// How long a rollback first checks whether PostgreSQL is up.
const UP_PROBE: Duration = Duration::from_secs(3);

/// What will happen to one knob.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Unchanged,
    Reload,
    Restart,
    Refused(String),
}

/// One knob of a recommendation, checked.
#[derive(Clone, Debug)]
pub struct KnobPlan {
    pub name: String,
    /// `pg_settings.setting` (base units), when the parameter exists.
    pub current: Option<String>,
    pub unit: Option<String>,
    /// The value as it would be written (base units, canonical), or as received when refused.
    pub proposed: String,
    pub action: Action,
    setting: Option<Setting>,
    norm: Option<Norm>,
}

/// The checked recommendation: per-knob actions and what blocks it as a whole.
pub struct Prepared {
    pub knobs: Vec<KnobPlan>,
    /// Reasons nothing can be applied (freeze, restart policy, budget, window).
    pub blockers: Vec<String>,
    pub knob_application: KnobApplication,
}

impl Prepared {
    pub fn changes(&self) -> impl Iterator<Item = &KnobPlan> {
        self.knobs
            .iter()
            .filter(|k| matches!(k.action, Action::Reload | Action::Restart))
    }
    pub fn refused(&self) -> impl Iterator<Item = (&str, &str)> {
        self.knobs.iter().filter_map(|k| match &k.action {
            Action::Refused(why) => Some((k.name.as_str(), why.as_str())),
            _ => None,
        })
    }
    pub fn restart_knobs(&self) -> Vec<String> {
        self.knobs
            .iter()
            .filter(|k| k.action == Action::Restart)
            .map(|k| k.name.clone())
            .collect()
    }
}

/// A Go-style list: `[a b]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Runs `f` on a pooled session, retrying twice on a connection error (stale sessions after
/// a restart are dropped by the pool when they fail).
pub(crate) fn with_conn<T>(pg: &Pg, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
    let mut attempt = 0;
    loop {
        let r = pg.conn().and_then(|mut c| f(&mut c));
        match r {
            Err(e) if e.is_connection() && attempt < 2 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// Polls `SELECT 1` until PostgreSQL answers, for at most `timeout`.
pub(crate) fn wait_ready(pg: &Pg, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut progress = progress::Progress::new("PostgreSQL to accept connections", timeout);
    loop {
        progress.tick();
        let e = match pg.ping() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Error::new(
                Kind::Timeout,
                format!(
                    "PostgreSQL did not accept connections within {}s (last error: {e})",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(left.min(Duration::from_millis(500)));
    }
}

fn settings_map(c: &mut Client) -> Result<HashMap<String, Setting>> {
    Ok(queries::pg_settings(c)?
        .into_iter()
        .map(|s| (s.name.to_ascii_lowercase(), s))
        .collect())
}

/// Checks `rec` against the running server and the local policy; changes nothing.
pub fn prepare(ctx: &ApplyContext<'_>, rec: &Recommendation) -> Result<Prepared> {
    let settings = with_conn(ctx.pg, settings_map)?;
    let journal = Journal::new(ctx.state_dir);
    let previous = journal.load().ok().flatten();
    let last = previous.as_ref().filter(|e| e.phase == Phase::Verified);
    let mut knobs: Vec<KnobPlan> = Vec::new();
    for name in &rec.knobs_overrides {
        if knobs.iter().any(|k| &k.name == name) {
            continue;
        }
        let mut kp = KnobPlan {
            name: name.clone(),
            current: None,
            unit: None,
            proposed: String::new(),
            action: Action::Unchanged,
            setting: None,
            norm: None,
        };
        // §7.1: the first config row with exactly that name.
        let Some(row) = rec.config.iter().find(|c| &c.name == name) else {
            kp.action = Action::Refused(format!("knob {name} not found in configuration"));
            knobs.push(kp);
            continue;
        };
        kp.proposed = match &row.setting {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let Some(s) = settings.get(&name.to_ascii_lowercase()) else {
            kp.action = Action::Refused("unknown parameter: not in pg_settings".into());
            knobs.push(kp);
            continue;
        };
        kp.name = s.name.clone();
        kp.current = Some(s.setting.clone());
        kp.unit = s.unit.clone().filter(|u| !u.is_empty());
        if let Some(why) = policy::refusal(ctx.policy, &s.name) {
            kp.action = Action::Refused(why);
            knobs.push(kp);
            continue;
        }
        let text = match render::render(&s.vartype, &row.setting) {
            Ok(t) => t,
            Err(e) => {
                kp.action =
                    Action::Refused(format!("failed to get setting value for {}: {e}", s.name));
                knobs.push(kp);
                continue;
            }
        };
        let norm = match validate::check(s, &text, row.unit.as_deref()) {
            Ok(n) => n,
            Err(e) => {
                kp.action = Action::Refused(e);
                knobs.push(kp);
                continue;
            }
        };
        kp.proposed = norm.text();
        let current = validate::normalise(s, &s.setting).ok();
        // Already set: equal as PostgreSQL sees it, or exactly what our last verified apply
        // wrote and observed (covers values the server spells differently).
        let same_as_last = last.as_ref().is_some_and(|e| {
            e.knobs.iter().any(|k| {
                k.name == s.name
                    && k.new_value == kp.proposed
                    && k.observed.as_deref() == Some(&s.setting)
            })
        });
        kp.action = if current.as_ref().is_some_and(|c| c.same(&norm)) || same_as_last {
            Action::Unchanged
        } else if s.context == "postmaster" {
            Action::Restart
        } else {
            Action::Reload
        };
        kp.setting = Some(s.clone());
        kp.norm = Some(norm);
        knobs.push(kp);
    }

    let mut p = Prepared {
        knobs,
        blockers: Vec::new(),
        knob_application: rec.knob_application,
    };
    if let Some(why) = policy::frozen(ctx.policy, ctx.state_dir) {
        p.blockers.push(why);
    }
    // A recommendation whose apply failed and was rolled back is not retried as is: serving
    // it again must not cost another restart or another rollback.
    if let Some(e) = previous
        .as_ref()
        .filter(|e| e.failed && e.phase == Phase::RolledBack)
    {
        let mut tried: Vec<(&str, &str)> = e
            .knobs
            .iter()
            .map(|k| (k.name.as_str(), k.new_value.as_str()))
            .collect();
        let mut now: Vec<(&str, &str)> = p
            .changes()
            .map(|k| (k.name.as_str(), k.proposed.as_str()))
            .collect();
        tried.sort();
        now.sort();
        if !now.is_empty() && tried == now {
            p.blockers.push(format!(
                "this recommendation was already tried and rolled back at {} ({}); it is not retried (a different recommendation, or removing {}, allows a new attempt)",
                e.updated_at,
                e.note.as_deref().unwrap_or("no detail"),
                journal.path().display()
            ));
        }
    }
    let restart = p.restart_knobs();
    if !restart.is_empty() {
        let n = restart.len();
        if !ctx.allow_restart {
            p.blockers.push(format!(
                "restart is not allowed in the agent, but {n} parameter(s) require restart: {}",
                go_list(&restart)
            ));
        } else if rec.knob_application == KnobApplication::Reload {
            p.blockers.push(format!(
                "refusing to apply: KnobApplication=reload but {n} parameter(s) require restart: {}",
                go_list(&restart)
            ));
        } else if ctx.restarter.is_none() {
            p.blockers.push(
                "neither service name nor restart script configured, refusing to apply: a restart is required to take effect".into(),
            );
        } else {
            let now = journal::now_unix();
            let recent = Budget::new(ctx.state_dir).recent(now)?;
            let max = ctx.policy.max_restarts_per_day as usize;
            if recent.len() >= max {
                let next = recent
                    .iter()
                    .min()
                    .map(|t| t + journal::WINDOW_SECS)
                    .unwrap_or(now);
                p.blockers.push(format!(
                    "restart budget exhausted: {} restart(s) in the last 24 h (apply.max_restarts_per_day = {max}); {} need a restart; the next restart is possible after {}",
                    recent.len(),
                    go_list(&restart),
                    crate::timefmt::utc_seconds(std::time::UNIX_EPOCH + Duration::from_secs(next.max(0) as u64))
                ));
            }
            let windows =
                policy::Windows::parse(&ctx.policy.maintenance_window).map_err(Error::invalid)?;
            if !windows.is_open(now) {
                p.blockers.push(format!(
                    "{} need a restart, which is only allowed inside the maintenance window ({} UTC); not applied now",
                    go_list(&restart),
                    ctx.policy.maintenance_window.join(", ")
                ));
            }
        }
    }
    Ok(p)
}

/// Applies `rec`. Every failure is a `config_apply_error` saying what failed and whether the
/// previous values are back.
pub fn apply(
    ctx: &ApplyContext<'_>,
    rec: &Recommendation,
) -> std::result::Result<Outcome, ApplyError> {
    let started = history::started();
    let refuse = |p: Option<&Prepared>, e: ApplyError| {
        history::finish(
            ctx.state_dir,
            &history::Record::refused(rec, &started, p, vec![e.message.clone()]),
        );
        e
    };
    if let Some(why) = policy::frozen(ctx.policy, ctx.state_dir) {
        return Err(refuse(
            None,
            ApplyError::config(format!("{why}; the recommendation was not applied")),
        ));
    }
    let _lock = journal::StateLock::acquire(ctx.state_dir).map_err(|e| {
        refuse(
            None,
            ApplyError::config(format!(
                "{e}; refusing to change the configuration without a journal, nothing was changed"
            )),
        )
    })?;
    // An interrupted earlier apply is settled first; never stacked on.
    let rep = recover::recover_locked(ctx).map_err(|e| {
        refuse(
            None,
            ApplyError::config(format!(
                "an earlier interrupted apply could not be recovered, nothing applied: {e}"
            )),
        )
    })?;
    if rep.action != recover::Recovery::Nothing {
        log::warn!("{rep}");
    }
    let p = prepare(ctx, rec).map_err(|e| {
        refuse(
            None,
            ApplyError::config(format!("{e}; nothing was changed")),
        )
    })?;
    let refused: Vec<String> = p.refused().map(|(n, why)| format!("{n}: {why}")).collect();
    if !refused.is_empty() {
        return Err(refuse(
            Some(&p),
            ApplyError::config(format!(
                "refusing to apply, nothing was changed: {} knob(s) rejected: {}",
                refused.len(),
                refused.join("; ")
            )),
        ));
    }
    let changes: Vec<&KnobPlan> = p.changes().collect();
    if changes.is_empty() {
        log::debug!("every recommended knob already has its value; nothing to apply");
        history::finish(
            ctx.state_dir,
            &history::Record::unchanged(rec, &started, &p),
        );
        return Ok(Outcome::Unchanged);
    }
    if !p.blockers.is_empty() {
        return Err(refuse(Some(&p), ApplyError::config(p.blockers.join("; "))));
    }
    execute(ctx, &changes, rec)
}

#[cfg(debug_assertions)]
fn test_pause(point: &str, state_dir: &Path) {
    // Lets the crash-recovery tests SIGKILL the agent at a known point (debug builds only).
    if std::env::var("DBTUNE_AGENT_TEST_PAUSE_AT").as_deref() == Ok(point) {
        let _ = std::fs::write(state_dir.join(format!("paused-at-{point}")), b"");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[cfg(not(debug_assertions))]
fn test_pause(_point: &str, _state_dir: &Path) {}

fn execute(
    ctx: &ApplyContext<'_>,
    changes: &[&KnobPlan],
    rec: &Recommendation,
) -> std::result::Result<Outcome, ApplyError> {
    let restart_needed = changes.iter().any(|k| k.action == Action::Restart);
    let names: Vec<String> = changes.iter().map(|k| k.name.clone()).collect();
    let snap = with_conn(ctx.pg, |c| {
        snapshot::Snapshot::take(c, ctx.policy.auto_conf_path.as_deref())
    })
    .map_err(|e| {
        ApplyError::config(format!(
            "taking a snapshot before applying: {e}; nothing was changed"
        ))
    })?;
    let now = std::time::SystemTime::now();
    let mut entry = Entry {
        id: format!(
            "{}",
            now.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ),
        phase: Phase::Intent,
        started_at: crate::timefmt::utc_seconds(now),
        updated_at: String::new(),
        restart_needed,
        knobs: changes
            .iter()
            .filter_map(|k| {
                let s = k.setting.as_ref()?;
                Some(KnobChange {
                    name: s.name.clone(),
                    vartype: s.vartype.clone(),
                    unit: s.unit.clone(),
                    context: s.context.clone(),
                    previous_setting: s.setting.clone(),
                    previous_auto_conf: snap.value(&s.name),
                    previous_pending_restart: s.pending_restart,
                    new_value: k.proposed.clone(),
                    observed: None,
                })
            })
            .collect(),
        auto_conf_path: snap
            .auto_conf_path
            .as_ref()
            .map(|p| p.display().to_string()),
        auto_conf_before: snap.auto_conf_text.clone(),
        note: None,
        failed: false,
        recommendation_id: history::recommendation_id(rec),
        knob_application: format!("{:?}", rec.knob_application).to_ascii_lowercase(),
    };
    let journal = Journal::new(ctx.state_dir);
    journal.record(&mut entry, Phase::Intent).map_err(|e| {
        ApplyError::config(format!(
            "{e}; refusing to change the configuration without a journal, nothing was changed"
        ))
    })?;
    test_pause("intent", ctx.state_dir);

    for (i, k) in entry.knobs.iter().enumerate() {
        if let Err(e) = with_conn(ctx.pg, |c| sql::alter_set(c, &k.name, &k.new_value)) {
            let reason = format!("failed to alter system for {}: {e}", k.name);
            return Err(fail(ctx, &journal, &mut entry, i + 1, reason));
        }
    }
    if let Err(e) = journal.record(&mut entry, Phase::Applied) {
        return Err(fail(ctx, &journal, &mut entry, usize::MAX, format!("{e}")));
    }
    test_pause("applied", ctx.state_dir);

    if restart_needed {
        let r = ctx.restarter.expect("checked in prepare");
        log::warn!("Restarting service");
        if let Err(e) = Budget::new(ctx.state_dir).record(journal::now_unix()) {
            return Err(fail(
                ctx,
                &journal,
                &mut entry,
                usize::MAX,
                format!("recording the restart: {e}"),
            ));
        }
        if let Err(e) = r.restart(ctx.policy.restart_timeout) {
            return Err(fail(
                ctx,
                &journal,
                &mut entry,
                usize::MAX,
                format!("restart via {} failed: {e}", r.describe()),
            ));
        }
        if let Err(e) = wait_ready(ctx.pg, ctx.ready_timeout) {
            return Err(fail(
                ctx,
                &journal,
                &mut entry,
                usize::MAX,
                format!("after the restart via {}: {e}", r.describe()),
            ));
        }
    } else if let Err(e) = with_conn(ctx.pg, queries::reload) {
        return Err(fail(ctx, &journal, &mut entry, usize::MAX, format!("{e}")));
    }
    test_pause("signalled", ctx.state_dir);

    let settle = if restart_needed {
        Duration::from_secs(2)
    } else {
        RELOAD_SETTLE
    };
    match verify(ctx.pg, &entry.knobs, Target::New, settle) {
        Ok(observed) => {
            for (k, o) in entry.knobs.iter_mut().zip(observed) {
                k.observed = Some(o);
            }
            if let Err(e) = journal.record(&mut entry, Phase::Verified) {
                // The change is in place and verified; only the bookkeeping failed.
                log::error!("recording the verified apply: {e}");
            }
            history::finish(
                ctx.state_dir,
                &history::Record::from_entry(&entry, history::HistoryOutcome::Applied, vec![]),
            );
            log::info!(
                "recommendation {}: applied and verified ({}): {}",
                entry.recommendation_id,
                if restart_needed {
                    "restarted"
                } else {
                    "reloaded"
                },
                go_list(&names)
            );
            Ok(if restart_needed {
                Outcome::Restarted(names)
            } else {
                Outcome::Reloaded(names)
            })
        }
        Err(detail) => Err(fail(
            ctx,
            &journal,
            &mut entry,
            usize::MAX,
            format!("verification failed: {detail}"),
        )),
    }
}

/// Rolls back the first `altered` knobs of `entry` (all with usize::MAX) and builds the error.
fn fail(
    ctx: &ApplyContext<'_>,
    journal: &Journal,
    entry: &mut Entry,
    altered: usize,
    reason: String,
) -> ApplyError {
    log::error!(
        "recommendation {}: apply failed, rolling back: {reason}",
        entry.recommendation_id
    );
    let knobs: Vec<KnobChange> = entry.knobs.iter().take(altered).cloned().collect();
    let names: Vec<String> = knobs.iter().map(|k| k.name.clone()).collect();
    entry.failed = true;
    match rollback(ctx, entry, &knobs, false) {
        Ok(how) => {
            entry.note = Some(reason.clone());
            let _ = journal.record(entry, Phase::RolledBack);
            history::finish(
                ctx.state_dir,
                &history::Record::from_entry(
                    entry,
                    history::HistoryOutcome::RolledBack,
                    vec![reason.clone(), format!("rolled back: {how}")],
                ),
            );
            log::warn!(
                "recommendation {}: rolled back, the previous values of {} are back",
                entry.recommendation_id,
                go_list(&names)
            );
            ApplyError::config(format!(
                "{reason}; rolled back: the previous values of {} are back ({how})",
                go_list(&names)
            ))
        }
        Err(e) => {
            entry.note = Some(format!("{reason}; rollback failed: {e}"));
            let _ = journal.record(entry, Phase::RollbackFailed);
            history::finish(
                ctx.state_dir,
                &history::Record::from_entry(
                    entry,
                    history::HistoryOutcome::RollbackFailed,
                    vec![reason.clone(), format!("rollback failed: {e}")],
                ),
            );
            ApplyError::config(format!(
                "{reason}; ROLLBACK FAILED: {e}; the previous values are kept in {} and will be restored at the next attempt",
                journal.path().display()
            ))
        }
    }
}

const BACKEND_CONTEXTS: &[&str] = &["backend", "superuser-backend"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    New,
    Previous,
}

/// Waits up to `settle` until every knob shows the target value in `pg_settings` without
/// `pending_restart` (and, for new values, without errors in `pg_file_settings`). Returns the
/// observed settings, or what does not match.
pub(crate) fn verify(
    pg: &Pg,
    knobs: &[KnobChange],
    target: Target,
    settle: Duration,
) -> std::result::Result<Vec<String>, String> {
    let start = Instant::now();
    let names: Vec<String> = knobs.iter().map(|k| k.name.clone()).collect();
    loop {
        let r = with_conn(pg, |c| {
            let settings = settings_map(c)?;
            let auto = if target == Target::New {
                sql::auto_conf_entries(c)?
            } else {
                None
            };
            let applied = if target == Target::New {
                sql::auto_conf_applied(c)?
            } else {
                None
            };
            let errors = if target == Target::New {
                sql::file_errors(c, &names)?
            } else {
                None
            };
            Ok((settings, auto, applied, errors))
        });
        let (settings, auto, applied, errors) = match r {
            Ok(x) => x,
            Err(e) if start.elapsed() >= settle => return Err(format!("reading pg_settings: {e}")),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let mut problems = Vec::new();
        let mut observed = Vec::new();
        for k in knobs {
            let Some(s) = settings.get(&k.name.to_ascii_lowercase()) else {
                problems.push(format!("{} is missing from pg_settings", k.name));
                continue;
            };
            observed.push(s.setting.clone());
            let want = match target {
                Target::New => &k.new_value,
                Target::Previous => &k.previous_setting,
            };
            let pending_before = target == Target::Previous && k.previous_pending_restart;
            if s.pending_restart && !pending_before {
                problems.push(format!("{} is pending a restart", k.name));
                continue;
            }
            if target == Target::New && BACKEND_CONTEXTS.contains(&k.context.as_str()) {
                // Existing sessions keep the old value; check what the server file holds.
                if let Some(entries) = &auto {
                    let v = entries
                        .iter()
                        .rev()
                        .find(|(n, _)| n.eq_ignore_ascii_case(&k.name))
                        .map(|(_, v)| v);
                    if v != Some(want) {
                        problems.push(format!(
                            "{} is not {want:?} in postgresql.auto.conf",
                            k.name
                        ));
                    }
                }
                continue;
            }
            let same = match (
                validate::normalise(s, &s.setting),
                validate::normalise(s, want),
            ) {
                (Ok(a), Ok(b)) => a.same(&b),
                _ => s.setting == *want,
            };
            // A value the server displays differently (show hooks) but reports as in effect.
            let in_effect = || {
                applied.as_ref().is_some_and(|a| {
                    a.iter()
                        .any(|(n, v)| n.eq_ignore_ascii_case(&k.name) && v == want)
                })
            };
            let shown_differently = s.vartype == "string" && in_effect();
            if !(same || shown_differently) {
                problems.push(format!("{} is {:?}, expected {want:?}", k.name, s.setting));
            }
        }
        if let Some(errs) = errors.filter(|e| !e.is_empty()) {
            // A bad value in a configuration file will not fix itself: no point waiting.
            problems.extend(errs.into_iter().map(|e| format!("pg_file_settings: {e}")));
            return Err(problems.join("; "));
        }
        if problems.is_empty() {
            return Ok(observed);
        }
        if start.elapsed() >= settle {
            return Err(problems.join("; "));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Restores the previous values of `knobs`: with ALTER SYSTEM while PostgreSQL is up, by
/// rewriting `postgresql.auto.conf` from the snapshot while it is down; reloads or restarts as
/// needed and verifies. Returns what was done.
pub(crate) fn rollback(
    ctx: &ApplyContext<'_>,
    entry: &Entry,
    knobs: &[KnobChange],
    retry: bool,
) -> Result<String> {
    let mut how: Vec<String> = Vec::new();
    if wait_ready(ctx.pg, UP_PROBE).is_ok() {
        for k in knobs.iter().rev() {
            with_conn(ctx.pg, |c| match &k.previous_auto_conf {
                AutoConfValue::Value(v) => sql::alter_set(c, &k.name, v),
                AutoConfValue::Absent => sql::alter_reset(c, &k.name),
                AutoConfValue::Unknown => sql::alter_set(c, &k.name, &k.previous_setting),
            })
            .map_err(|e| e.context(format!("restoring {}", k.name)))?;
        }
        with_conn(ctx.pg, queries::reload)?;
        how.push(
            "ALTER SYSTEM restored the previous entries and the configuration was reloaded".into(),
        );
        match verify(ctx.pg, knobs, Target::Previous, RELOAD_SETTLE) {
            Ok(_) => return Ok(how.join(", ")),
            Err(detail) => {
                // The running server already has a new postmaster value: only a restart undoes it.
                if !knobs.iter().any(|k| k.context == "postmaster") {
                    return Err(Error::other(format!(
                        "the previous values did not come back: {detail}"
                    )));
                }
            }
        }
    } else {
        let (Some(path), Some(text)) = (&entry.auto_conf_path, &entry.auto_conf_before) else {
            return Err(Error::other(
                "PostgreSQL is not accepting connections and the agent could not read postgresql.auto.conf before applying, so it cannot restore it on disk; restore the previous values by hand (see the journal) and start PostgreSQL",
            ));
        };
        snapshot::restore_file(Path::new(path), text)?;
        how.push(format!(
            "PostgreSQL was down; {path} was restored from the snapshot"
        ));
        if !(entry.restart_needed && ctx.allow_restart) {
            // Down, but not because of a restart of ours: do not start it behind the operator.
            return Err(Error::other(format!(
                "PostgreSQL is not running; {path} was restored from the snapshot so the previous values apply when it starts; the agent did not start it because this apply did not restart it"
            )));
        }
    }
    // Only a restart brings the previous values back from here.
    {
        let r = ctx.restarter.ok_or_else(|| {
            Error::other("a restart is needed to bring the previous values back but neither a restart script nor a service name is configured")
        })?;
        // Counted in the budget. Refused only when retrying an earlier failed rollback (so a
        // persistent failure cannot restart PostgreSQL every few seconds); the first rollback
        // of an apply always runs: getting back to a known state comes first.
        let budget = Budget::new(ctx.state_dir);
        let now = journal::now_unix();
        if retry && budget.recent(now)?.len() >= ctx.policy.max_restarts_per_day as usize {
            return Err(Error::other(format!(
                "a restart is needed to bring the previous values back, but the restart budget (apply.max_restarts_per_day = {}) is used up; restart PostgreSQL by hand",
                ctx.policy.max_restarts_per_day
            )));
        }
        let _ = budget.record(now);
        match r.restart(ctx.policy.restart_timeout) {
            Ok(()) => how.push(format!("restarted via {}", r.describe())),
            // Judged by the checks below: a script may fail after PostgreSQL came back.
            Err(e) => how.push(format!("restart via {} reported: {e}", r.describe())),
        }
        wait_ready(ctx.pg, ctx.ready_timeout)
            .map_err(|e| e.context("after the rollback restart"))?;
        verify(ctx.pg, knobs, Target::Previous, Duration::from_secs(2)).map_err(|d| {
            Error::other(format!(
                "the previous values did not come back after the restart: {d}"
            ))
        })?;
    }
    Ok(how.join(", "))
}
