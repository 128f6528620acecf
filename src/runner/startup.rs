//! The start-up wait for PostgreSQL: when it cannot be reached at start (down, still starting,
//! unreachable), the daemon does not exit (under Kubernetes or Docker that is a crash loop
//! while the database merely starts). It runs with the health gate closed — heartbeats,
//! guardrails and `--health` keep working, database tasks skip — while this thread retries the
//! PostgreSQL start-up checks with backoff (1 s doubling to 10 s). When they pass, the gate
//! opens at once; when PostgreSQL answers but refuses the agent (authentication, missing
//! privilege), the daemon ends with that failure, as it would have at start.

use super::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What one attempt of the deferred start-up checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred {
    Passed,
    /// Still unreachable (the reason).
    Waiting(String),
    /// Reached, but a check failed: the daemon ends with this message.
    Failed(String),
}

/// The wait: why PostgreSQL could not be reached at start, and the checks to retry.
pub struct StartupWait {
    pub reason: String,
    pub checks: Box<dyn Fn() -> Deferred + Send>,
}

pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts the retry thread. It sets `sh.exit_error` on failure (the scheduler stops) and
/// returns when the checks passed, failed, or shutdown began.
pub fn spawn(sh: Arc<Shared>, wait_for: StartupWait) {
    // Database tasks skip from the start (no capability probe either: it would only wait
    // for the pool's connect timeout).
    sh.health
        .connection_lost(sh.adapter.pg(), sh.stop.clone(), &wait_for.reason);
    let checks = wait_for.checks;
    let spawned = std::thread::Builder::new()
        .name("startup-wait".into())
        .spawn(move || {
            let mut wait = Duration::from_secs(1);
            loop {
                let mut slept = Duration::ZERO;
                while slept < wait {
                    if sh.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    slept += Duration::from_millis(100);
                }
                match checks() {
                    Deferred::Passed => {
                        log::info!(
                            "PostgreSQL answered: start-up checks passed, collection starts"
                        );
                        sh.health.reopen_now();
                        return;
                    }
                    Deferred::Failed(msg) => {
                        *sh.exit_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
                        return;
                    }
                    Deferred::Waiting(why) => {
                        log::debug!("still waiting for PostgreSQL: {why}");
                        sh.health.note_reason(&why);
                    }
                }
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        });
    if let Err(e) = spawned {
        log::error!("starting the wait for PostgreSQL: {e}");
    }
}
