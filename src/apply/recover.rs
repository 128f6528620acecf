//! Start-up recovery from the apply journal: an apply that was interrupted (agent killed,
//! host crash) is completed when `pg_settings` shows it landed, otherwise rolled back to the
//! journalled previous values. It is never re-applied.

use super::journal::{Journal, Phase};
use super::{rollback, verify, wait_ready, ApplyContext, VerifyFor};
use crate::error::{Error, Result};
use std::fmt;
use std::time::Duration;

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
/// first.
pub fn recover(ctx: &ApplyContext<'_>) -> Result<RecoveryReport> {
    let _lock = super::journal::StateLock::acquire(ctx.state_dir)?;
    recover_locked(ctx)
}

/// `recover` for a caller that holds the state lock.
pub(crate) fn recover_locked(ctx: &ApplyContext<'_>) -> Result<RecoveryReport> {
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
    // A server that is still coming up (e.g. after the restart we were doing) gets some time.
    let up = wait_ready(ctx.pg, ctx.ready_timeout.min(Duration::from_secs(30))).is_ok();
    if up && entry.phase != Phase::RollbackFailed {
        if let Ok(observed) = verify(ctx, &entry.knobs, VerifyFor::New, Duration::ZERO) {
            for (k, o) in entry.knobs.iter_mut().zip(observed) {
                k.observed = Some(o);
            }
            entry.note = Some("completed by start-up recovery".into());
            journal.record(&mut entry, Phase::Verified)?;
            return Ok(RecoveryReport {
                action: Recovery::Completed,
                knobs,
                detail: String::new(),
            });
        }
    }
    let all = entry.knobs.clone();
    match rollback(ctx, &entry, &all, entry.phase == Phase::RollbackFailed) {
        Ok(how) => {
            entry.note = Some(format!("rolled back by start-up recovery: {how}"));
            journal.record(&mut entry, Phase::RolledBack)?;
            Ok(RecoveryReport {
                action: Recovery::RolledBack,
                knobs,
                detail: how,
            })
        }
        Err(e) => {
            entry.note = Some(format!("start-up recovery could not roll back: {e}"));
            journal.record(&mut entry, Phase::RollbackFailed)?;
            Err(Error::other(format!(
                "rolling back the interrupted apply of [{}] recorded in {}: {e}",
                knobs.join(" "),
                journal.path().display()
            )))
        }
    }
}
