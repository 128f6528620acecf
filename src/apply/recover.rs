//! Start-up recovery from the apply journal: an apply that was interrupted (agent killed,
//! host crash) is completed when `pg_settings` shows it landed, otherwise rolled back to the
//! journalled previous values. It is never re-applied.

use super::journal::{Entry, Journal, Phase};
use super::wait;
use super::{rollback, verify, wait_ready, ApplyContext, VerifyFor};
use crate::error::{Error, Kind, Result};
use std::fmt;
use std::time::Duration;

/// How long past `apply.restart_timeout` a restart command left by an earlier run is awaited.
const RESTARTER_GRACE: Duration = Duration::from_secs(10);
/// At most this long, at start-up, waiting for an interrupted restart to end.
const START_SETTLE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// No unfinished apply in the journal.
    Nothing,
    /// The interrupted apply had landed; it is now recorded as verified.
    Completed,
    /// The interrupted apply was undone and the previous values verified.
    RolledBack,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub action: Recovery,
    pub knobs: Vec<String>,
    pub detail: String,
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Recovery::Nothing => write!(f, "apply journal: nothing to recover"),
            Recovery::Completed => write!(
                f,
                "apply journal: an interrupted apply of [{}] had taken effect; recorded as verified",
                self.knobs.join(" ")
            ),
            Recovery::RolledBack => write!(
                f,
                "apply journal: an interrupted apply of [{}] was rolled back ({})",
                self.knobs.join(" "),
                self.detail
            ),
        }
    }
}

/// Settles an unfinished journal entry. Call before the runner starts; `apply` does the same
/// first. Here, before the daemon is up (and under systemd's start timeout), waiting for an
/// interrupted restart is capped at `START_SETTLE_LIMIT`: past that the apply is left for the
/// recovery that precedes the next apply, which waits as long as the restart may take.
pub fn recover(ctx: &ApplyContext<'_>) -> Result<RecoveryReport> {
    let _lock = super::journal::StateLock::acquire(ctx.state_dir)?;
    recover_within(ctx, Some(START_SETTLE_LIMIT))
}

/// `recover` for a caller that holds the state lock (the apply), with no cap.
pub(crate) fn recover_locked(ctx: &ApplyContext<'_>) -> Result<RecoveryReport> {
    recover_within(ctx, None)
}

fn recover_within(ctx: &ApplyContext<'_>, limit: Option<Duration>) -> Result<RecoveryReport> {
    let journal = Journal::new(ctx.state_dir);
    let Some(mut entry) = journal.load()? else {
        return Ok(RecoveryReport {
            action: Recovery::Nothing,
            knobs: vec![],
            detail: String::new(),
        });
    };
    if !entry.phase.unfinished() {
        return Ok(RecoveryReport {
            action: Recovery::Nothing,
            knobs: vec![],
            detail: String::new(),
        });
    }
    let knobs: Vec<String> = entry.knobs.iter().map(|k| k.name.clone()).collect();
    log::warn!(
        "apply journal {}: found an unfinished apply ({:?}) of [{}]; recovering",
        journal.path().display(),
        entry.phase,
        knobs.join(" ")
    );
    // A restart an earlier run began may still be under way: never judged (or joined by a
    // second restart) while it runs.
    if entry.restart_started.is_some() {
        settle_restart(ctx, &entry, limit)?;
    }
    // A server that is still coming up (e.g. after the restart we were doing) gets some time.
    let up = wait_ready(ctx.pg, ctx.ready_timeout.min(Duration::from_secs(30))).is_ok();
    if up && entry.phase != Phase::RollbackFailed {
        if let Ok(observed) = verify(ctx, &entry.knobs, VerifyFor::New, Duration::ZERO) {
            for (k, o) in entry.knobs.iter_mut().zip(observed) {
                k.observed = Some(o);
            }
            entry.note = Some("completed by start-up recovery".into());
            journal.record(&mut entry, Phase::Verified)?;
            super::history::finish(
                ctx.state_dir,
                &super::history::Record::from_entry(
                    &entry,
                    super::history::HistoryOutcome::Applied,
                    vec!["interrupted; found in effect and completed by start-up recovery".into()],
                ),
            );
            return Ok(RecoveryReport {
                action: Recovery::Completed,
                knobs,
                detail: String::new(),
            });
        }
    }
    let all = entry.knobs.clone();
    let retry = entry.phase == Phase::RollbackFailed;
    match rollback(ctx, &mut entry, &all, retry) {
        Ok(how) => {
            entry.note = Some(format!("rolled back by start-up recovery: {how}"));
            journal.record(&mut entry, Phase::RolledBack)?;
            super::history::finish(
                ctx.state_dir,
                &super::history::Record::from_entry(
                    &entry,
                    super::history::HistoryOutcome::RolledBack,
                    vec![format!(
                        "interrupted; rolled back by start-up recovery: {how}"
                    )],
                ),
            );
            Ok(RecoveryReport {
                action: Recovery::RolledBack,
                knobs,
                detail: how,
            })
        }
        Err(e) => {
            entry.note = Some(format!("start-up recovery could not roll back: {e}"));
            journal.record(&mut entry, Phase::RollbackFailed)?;
            super::history::finish(
                ctx.state_dir,
                &super::history::Record::from_entry(
                    &entry,
                    super::history::HistoryOutcome::RollbackFailed,
                    vec![format!("start-up recovery could not roll back: {e}")],
                ),
            );
            Err(Error::other(format!(
                "rolling back the interrupted apply of [{}] recorded in {}: {e}",
                knobs.join(" "),
                journal.path().display()
            )))
        }
    }
}

/// Waits for the restart journalled in `entry` to be over: first for the process that runs it
/// (as long as the earlier run would have let it run, plus a little), then for the target to
/// show it settled. A restarter still running after that is an error: the apply stays
/// unfinished and is judged before the next apply, never alongside that restart.
fn settle_restart(ctx: &ApplyContext<'_>, entry: &Entry, limit: Option<Duration>) -> Result<()> {
    let t0 = std::time::Instant::now();
    let cap = |d: Duration| match limit {
        Some(l) => d.min(l.saturating_sub(t0.elapsed())),
        None => d,
    };
    let started = entry.restart_started.unwrap_or(0);
    let age = Duration::from_secs((super::journal::now_unix() - started).max(0) as u64);
    if let Some(p) = entry.restarter.as_ref().filter(|p| p.alive()) {
        log::warn!(
            "apply journal: the restart begun {}s ago by an earlier run is still running ({p}); waiting for it before judging the interrupted apply",
            age.as_secs()
        );
        let full = ctx.policy.restart_timeout.saturating_sub(age) + RESTARTER_GRACE;
        let deadline = cap(full);
        let waited = wait::until(
            &format!("{p} to finish"),
            deadline,
            Duration::from_millis(200),
            |_| Ok((!p.alive()).then_some(())),
        );
        match waited {
            Ok(()) => log::info!("apply journal: {p} has finished"),
            Err(e) if e.kind == Kind::Timeout && deadline < full => {
                return Err(Error::other(format!(
                    "the restart begun {}s ago by an earlier run ({p}) is still running; the interrupted apply is judged before the next apply, once it ends (no second restart is started while it runs)",
                    age.as_secs()
                )))
            }
            Err(e) if e.kind == Kind::Timeout => {
                return Err(Error::other(format!(
                    "the restart begun {}s ago by an earlier run ({p}) is still running past apply.restart_timeout ({}s); the interrupted apply is judged once it ends (no second restart is started while it runs)",
                    age.as_secs(),
                    ctx.policy.restart_timeout.as_secs()
                )))
            }
            Err(e) => return Err(e),
        }
    }
    match ctx
        .target
        .settle_restart(ctx.pg, entry, cap(ctx.ready_timeout))
    {
        Err(e) if e.kind == Kind::Interrupted => Err(e),
        // Judged as it is: a server that did not come back is rolled back on disk.
        Err(e) => {
            log::warn!(
                "apply journal: waiting for the interrupted restart of {} to settle: {e}",
                ctx.target.describe()
            );
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}
