//! The provider-neutral apply pipeline (protocol.md §7, §8.5): validate every knob against
//! `pg_settings`, the local policy and the provider's own managed list before touching
//! anything; skip knobs already at the proposed value; journal (intent → applied → verified)
//! in the state directory; let the provider's [`Target`] write and activate (reload or
//! restart, bounded); verify in `pg_settings`; on any failure have the target restore the
//! previous values and verify them. The same preparation serves `plan` (which applies
//! nothing) and start-up `recover`.

pub mod alter_system;
pub mod applier;
pub mod auto_conf;
pub mod history;
pub mod inflight;
pub mod journal;
pub mod plan;
pub mod policy;
pub mod recover;
pub mod render;
pub mod target;
pub mod units;
pub mod validate;
pub mod wait;

pub use applier::{Applier, Runtime};
pub use plan::{plan, Plan};
pub use recover::{recover, RecoveryReport};
pub use target::{Activation, Previous, Snapshot, Target, WriteError};

use crate::config::apply::ApplyConfig;
use crate::error::{Error, Kind, Result};
use crate::model::{KnobApplication, Recommendation};
use crate::pg::alter as sql;
use crate::pg::queries::{self, Setting};
use crate::pg::Pg;
use journal::{Budget, Entry, Journal, KnobChange, Phase};
use postgres::Client;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use validate::Norm;

/// What `apply`, `plan` and `recover` need from their caller.
pub struct ApplyContext<'a> {
    pub pg: &'a Pg,
    /// The runtime `postgresql.allow_restart`.
    pub allow_restart: bool,
    /// How this provider writes, activates and restores values.
    pub target: &'a dyn Target,
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
    pub fn typed(error_type: &'static str, message: impl Into<String>) -> Self {
        ApplyError {
            error_type,
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

/// Longest value a knob may have (the longest real ones, `shared_preload_libraries` or
/// `log_line_prefix`, are far below).
pub const MAX_VALUE_BYTES: usize = 4096;
/// Rejected knobs listed by name in one error report; the rest are counted.
const REPORT_KNOBS: usize = 10;

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
    /// One of the blockers is "restart not allowed" (sent with the target's error_type).
    pub restart_not_allowed: bool,
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
    wait::ready(pg, timeout)
}

fn settings_map(c: &mut Client) -> Result<HashMap<String, Setting>> {
    Ok(queries::pg_settings(c)?
        .into_iter()
        .map(|s| (s.name.to_ascii_lowercase(), s))
        .collect())
}

/// Checks `rec` against the running server and the local policy; changes nothing.
pub fn prepare(ctx: &ApplyContext<'_>, rec: &Recommendation) -> Result<Prepared> {
    let mut settings = with_conn(ctx.pg, settings_map)?;
    ctx.target.present(&mut settings)?;
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
        // Bounded before anything else looks at it (PostgreSQL re-parses every value on each
        // reload); `apply.allow` does not lift this. The value itself is not echoed.
        if kp.proposed.len() > MAX_VALUE_BYTES {
            kp.action = Action::Refused(format!(
                "the value is {} bytes, over the limit of {MAX_VALUE_BYTES} bytes per value",
                kp.proposed.len()
            ));
            kp.proposed = format!("<{} bytes>", kp.proposed.len());
            knobs.push(kp);
            continue;
        }
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
        if let Some(why) = ctx.target.managed(&s.name) {
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
        } else if ctx.target.needs_restart(s) {
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
        restart_not_allowed: false,
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
            p.restart_not_allowed = true;
            p.blockers.push(format!(
                "restart is not allowed in the agent, but {n} parameter(s) require restart: {}",
                go_list(&restart)
            ));
        } else if rec.knob_application == KnobApplication::Reload {
            p.blockers.push(format!(
                "refusing to apply: KnobApplication=reload but {n} parameter(s) require restart: {}",
                go_list(&restart)
            ));
        } else if let Some(why) = ctx.target.restart_unavailable() {
            p.blockers.push(why);
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
    ctx.target.preflight().map_err(|e| refuse(None, e))?;
    let p = prepare(ctx, rec).map_err(|e| {
        refuse(
            None,
            ApplyError::config(format!("{e}; nothing was changed")),
        )
    })?;
    let refused: Vec<String> = p.refused().map(|(n, why)| format!("{n}: {why}")).collect();
    if !refused.is_empty() {
        // A report stays small however many knobs were rejected.
        let more = refused.len().saturating_sub(REPORT_KNOBS);
        let mut listed = refused[..refused.len().min(REPORT_KNOBS)].join("; ");
        if more > 0 {
            listed.push_str(&format!("; and {more} more"));
        }
        return Err(refuse(
            Some(&p),
            ApplyError::config(format!(
                "refusing to apply, nothing was changed: {} knob(s) rejected: {listed}",
                refused.len()
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
        let error_type = if p.restart_not_allowed && p.blockers.len() == 1 {
            ctx.target.restart_not_allowed_type()
        } else {
            "config_apply_error"
        };
        return Err(refuse(
            Some(&p),
            ApplyError::typed(error_type, p.blockers.join("; ")),
        ));
    }
    let _progress = wait::InProgress::start();
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
    let target = ctx.target;
    let started = Instant::now();
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
                    previous: Previous::Unknown,
                    previous_pending_restart: s.pending_restart,
                    new_value: k.proposed.clone(),
                    observed: None,
                })
            })
            .collect(),
        auto_conf_path: None,
        auto_conf_before: None,
        note: None,
        failed: false,
        recommendation_id: history::recommendation_id(rec),
        knob_application: format!("{:?}", rec.knob_application).to_ascii_lowercase(),
        target_state: None,
        restart_started: None,
        restarter: None,
    };
    // Before the journal's intent nothing was changed: recorded as refused.
    let not_started = |entry: &Entry, e: ApplyError| {
        history::finish(
            ctx.state_dir,
            &history::Record::from_entry(
                entry,
                history::HistoryOutcome::Refused,
                vec![e.message.clone()],
            ),
        );
        e
    };
    let snap = target.snapshot(ctx.pg, &entry.knobs).map_err(|e| {
        not_started(
            &entry,
            ApplyError::config(format!(
                "taking a snapshot of {} before applying: {e}; nothing was changed",
                target.describe()
            )),
        )
    })?;
    if snap.previous.len() != entry.knobs.len() {
        return Err(not_started(
            &entry,
            ApplyError::config(format!(
                "the snapshot of {} returned {} value(s) for {} knob(s); nothing was changed",
                target.describe(),
                snap.previous.len(),
                entry.knobs.len()
            )),
        ));
    }
    for (k, prev) in entry.knobs.iter_mut().zip(snap.previous) {
        k.previous = prev;
    }
    entry.auto_conf_path = snap.auto_conf_path;
    entry.auto_conf_before = snap.auto_conf_text;
    entry.target_state = snap.state;
    let journal = Journal::new(ctx.state_dir);
    if let Err(e) = journal.record(&mut entry, Phase::Intent) {
        return Err(not_started(
            &entry,
            ApplyError::config(format!(
                "{e}; refusing to change the configuration without a journal, nothing was changed"
            )),
        ));
    }
    test_pause("intent", ctx.state_dir);

    if let Err(w) = target.write(ctx.pg, &entry.knobs) {
        let reason = format!("writing to {}: {}", target.describe(), w.error);
        return Err(fail(ctx, &journal, &mut entry, w.written, reason));
    }
    if let Err(e) = journal.record(&mut entry, Phase::Applied) {
        return Err(fail(ctx, &journal, &mut entry, usize::MAX, format!("{e}")));
    }
    test_pause("applied", ctx.state_dir);

    let activated = if restart_needed {
        log::warn!("Restarting service");
        restart(ctx, &journal, &mut entry)
    } else {
        target
            .activate(
                ctx.pg,
                Activation::Reload,
                &entry.knobs,
                ctx.policy.restart_timeout,
            )
            .map_err(|e| e.context(format!("activating on {}", target.describe())))
    };
    if let Err(e) = activated {
        if e.kind == Kind::Interrupted {
            return Err(interrupted(&journal, &mut entry, e));
        }
        return Err(fail(ctx, &journal, &mut entry, usize::MAX, e.to_string()));
    }
    test_pause("signalled", ctx.state_dir);

    let settle = if restart_needed {
        Duration::from_secs(2)
    } else {
        target.settle()
    };
    match verify(ctx, &entry.knobs, VerifyFor::New, settle) {
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
                "recommendation {}: applied and verified on {} in {:.1} s ({}): {}",
                entry.recommendation_id,
                target.describe(),
                started.elapsed().as_secs_f64(),
                if restart_needed { "restart" } else { "reload" },
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

/// Restarts through the target (`run_restart`) and waits for PostgreSQL to accept
/// connections.
fn restart(ctx: &ApplyContext<'_>, journal: &Journal, entry: &mut Entry) -> Result<()> {
    let knobs = entry.knobs.clone();
    run_restart(ctx, journal, entry, &knobs)
        .map_err(|e| e.context(format!("restart of {} failed", ctx.target.describe())))?;
    wait_ready(ctx.pg, ctx.ready_timeout)
        .map_err(|e| e.context(format!("after the restart of {}", ctx.target.describe())))
}

/// One real restart: refused once shutdown has begun; otherwise the budget is charged once,
/// the journal records when it started (and, the moment it is spawned, the process running
/// it) before the target restarts, so a later start knows a restart may still be under way.
fn run_restart(
    ctx: &ApplyContext<'_>,
    journal: &Journal,
    entry: &mut Entry,
    knobs: &[KnobChange],
) -> Result<()> {
    if wait::stopping() {
        return Err(Error::new(
            Kind::Interrupted,
            "interrupted by shutdown before the restart started",
        ));
    }
    let now = journal::now_unix();
    Budget::new(ctx.state_dir)
        .record(now)
        .map_err(|e| e.context("recording the restart"))?;
    entry.restart_started = Some(now);
    entry.restarter = None;
    let phase = entry.phase;
    journal
        .record(entry, phase)
        .map_err(|e| e.context("recording the restart"))?;
    let seen = std::rc::Rc::new(std::cell::RefCell::new(None));
    let watch = {
        let (seen, dir, mut snapshot) = (seen.clone(), ctx.state_dir.to_path_buf(), entry.clone());
        inflight::watch(move |p| {
            snapshot.restarter = Some(p.clone());
            let phase = snapshot.phase;
            if let Err(e) = Journal::new(&dir).record(&mut snapshot, phase) {
                log::warn!("recording the restart command {p} in the journal: {e}");
            }
            *seen.borrow_mut() = Some(p.clone());
        })
    };
    let r = ctx.target.activate(
        ctx.pg,
        Activation::Restart,
        knobs,
        ctx.policy.restart_timeout,
    );
    drop(watch);
    if let Some(p) = seen.borrow_mut().take() {
        entry.restarter = Some(p);
    }
    r
}

/// Shutdown interrupted a wait: nothing is undone now; the journal stays unfinished so the
/// next start completes or rolls back the apply.
fn interrupted(journal: &Journal, entry: &mut Entry, e: Error) -> ApplyError {
    entry.note = Some(e.to_string());
    let phase = entry.phase;
    let _ = journal.record(entry, phase);
    log::warn!(
        "apply interrupted by shutdown; {} will be settled at the next start",
        journal.path().display()
    );
    ApplyError::config(format!(
        "{e}; the apply is recorded in {} and will be completed or rolled back at the next start",
        journal.path().display()
    ))
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
    let started = Instant::now();
    let knobs: Vec<KnobChange> = entry.knobs.iter().take(altered).cloned().collect();
    let names: Vec<String> = knobs.iter().map(|k| k.name.clone()).collect();
    entry.failed = true;
    match rollback(ctx, entry, &knobs, false) {
        Err(e) if e.kind == Kind::Interrupted => interrupted(journal, entry, e),
        Ok(how) => {
            log::warn!(
                "recommendation {}: rolled back {} on {} in {:.1} s: the previous values are back",
                entry.recommendation_id,
                go_list(&names),
                ctx.target.describe(),
                started.elapsed().as_secs_f64()
            );
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

/// Which values `verify` expects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerifyFor {
    New,
    Previous,
}

/// Waits up to `settle` until every knob shows the expected value in `pg_settings` without
/// `pending_restart` (and, for new values, without errors in `pg_file_settings`). Returns the
/// observed settings, or what does not match.
pub(crate) fn verify(
    ctx: &ApplyContext<'_>,
    knobs: &[KnobChange],
    target: VerifyFor,
    settle: Duration,
) -> std::result::Result<Vec<String>, String> {
    let start = Instant::now();
    let names: Vec<String> = knobs.iter().map(|k| k.name.clone()).collect();
    let auto_conf_target = ctx.target.writes_auto_conf();
    loop {
        wait::tick();
        let r = with_conn(ctx.pg, |c| {
            let mut settings = settings_map(c)?;
            ctx.target.present(&mut settings)?;
            let new = target == VerifyFor::New;
            let auto = if new && auto_conf_target {
                sql::auto_conf_entries(c)?
            } else {
                None
            };
            let applied = if new && auto_conf_target {
                sql::auto_conf_applied(c)?
            } else {
                None
            };
            let errors = if new {
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
                VerifyFor::New => &k.new_value,
                VerifyFor::Previous => &k.previous_setting,
            };
            let pending_before = target == VerifyFor::Previous && k.previous_pending_restart;
            if s.pending_restart && !pending_before {
                problems.push(format!("{} is pending a restart", k.name));
                continue;
            }
            if target == VerifyFor::New && BACKEND_CONTEXTS.contains(&k.context.as_str()) {
                // Existing sessions keep the old value; check what the server file holds
                // (other targets: a new session shows it, which `pg_settings` here may not).
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

/// Restores the previous values of `knobs` through the target (live, or on disk while
/// PostgreSQL is down), reloads or restarts as needed and verifies. Returns what was done.
pub(crate) fn rollback(
    ctx: &ApplyContext<'_>,
    entry: &mut Entry,
    knobs: &[KnobChange],
    retry: bool,
) -> Result<String> {
    let target = ctx.target;
    let mut how: Vec<String> = Vec::new();
    let up = match wait_ready(ctx.pg, UP_PROBE) {
        Ok(()) => true,
        Err(e) if e.kind == Kind::Interrupted => return Err(e),
        Err(_) => false,
    };
    how.push(target.restore(ctx.pg, entry, knobs, up)?);
    if up {
        target
            .activate(
                ctx.pg,
                Activation::Reload,
                knobs,
                ctx.policy.restart_timeout,
            )
            .map_err(|e| e.context("activating the previous values"))?;
        match verify(ctx, knobs, VerifyFor::Previous, target.settle()) {
            Ok(_) => return Ok(how.join(", ")),
            Err(detail) => {
                // The running server already has a new restart-only value: only a restart
                // undoes it.
                if !knobs.iter().any(|k| k.context == "postmaster") {
                    return Err(Error::other(format!(
                        "the previous values did not come back: {detail}"
                    )));
                }
            }
        }
    } else if !(entry.restart_needed && ctx.allow_restart) {
        // Down, but not because of a restart of ours: do not start it behind the operator.
        return Err(Error::other(format!(
            "PostgreSQL is not running: {}, so the previous values apply when it starts; the agent did not start it because this apply did not restart it",
            how.join(", ")
        )));
    }
    // Only a restart brings the previous values back from here.
    if let Some(why) = target.restart_unavailable() {
        return Err(Error::other(format!(
            "a restart is needed to bring the previous values back but {why}"
        )));
    }
    // Counted in the budget. Refused only when retrying an earlier failed rollback (so a
    // persistent failure cannot restart PostgreSQL every few seconds); the first rollback of
    // an apply always runs: getting back to a known state comes first.
    let budget = Budget::new(ctx.state_dir);
    let now = journal::now_unix();
    if retry && budget.recent(now)?.len() >= ctx.policy.max_restarts_per_day as usize {
        return Err(Error::other(format!(
            "a restart is needed to bring the previous values back, but the restart budget (apply.max_restarts_per_day = {}) is used up; restart PostgreSQL by hand",
            ctx.policy.max_restarts_per_day
        )));
    }
    match run_restart(ctx, &Journal::new(ctx.state_dir), entry, knobs) {
        Ok(()) => how.push(format!("restarted {}", target.describe())),
        // Judged by the checks below: a script may fail after PostgreSQL came back.
        Err(e) if e.kind == Kind::Interrupted => return Err(e),
        Err(e) => how.push(format!("restart of {} reported: {e}", target.describe())),
    }
    wait_ready(ctx.pg, ctx.ready_timeout).map_err(|e| e.context("after the rollback restart"))?;
    verify(ctx, knobs, VerifyFor::Previous, Duration::from_secs(2)).map_err(|d| {
        Error::other(format!(
            "the previous values did not come back after the restart: {d}"
        ))
    })?;
    Ok(how.join(", "))
}
