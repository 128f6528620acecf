//! Bounded waits for the apply pipeline and every target (a restart, a control-plane
//! operation, a rollout). A long apply is progress, not a wedge: each poll records progress
//! the runner reads (so the systemd watchdog keeps being fed while an apply is inside its
//! deadlines), a line is logged every 15 s (what is awaited, elapsed, deadline), and shutdown
//! interrupts the wait at a safe point with `Kind::Interrupted`, leaving the journal for the
//! next start to settle.

use crate::error::{Error, Kind, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a long wait says what it is waiting for.
pub const LOG_EVERY: Duration = Duration::from_secs(15);

static BASE: OnceLock<Instant> = OnceLock::new();
/// Milliseconds since BASE of the last progress tick; 0 while no apply runs.
static LAST_TICK: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

fn now_ms() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Marks an apply in progress until dropped.
pub struct InProgress(());

impl InProgress {
    pub fn start() -> InProgress {
        LAST_TICK.store(now_ms(), Ordering::SeqCst);
        InProgress(())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        LAST_TICK.store(0, Ordering::SeqCst);
    }
}

/// Records that an apply is moving.
pub fn tick() {
    if LAST_TICK.load(Ordering::SeqCst) != 0 {
        LAST_TICK.store(now_ms(), Ordering::SeqCst);
    }
}

/// Time since the running apply last made progress; None when no apply runs.
pub fn since_progress() -> Option<Duration> {
    match LAST_TICK.load(Ordering::SeqCst) {
        0 => None,
        t => Some(Duration::from_millis(now_ms().saturating_sub(t))),
    }
}

/// Shutdown: waits stop at their next poll.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// For tests that run several agents' pipelines in one process.
pub fn reset_stop() {
    STOP.store(false, Ordering::SeqCst);
}

fn interrupted(what: &str) -> Error {
    Error::new(
        Kind::Interrupted,
        format!("interrupted by shutdown while waiting for {what}"),
    )
}

/// Polls `poll` every `every` until it returns `Some`, for at most `deadline`. An error from
/// `poll` ends the wait. The timeout error names `what` and the last thing `poll` reported
/// through `last`.
pub fn until<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut poll: impl FnMut(&mut String) -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last_log = start;
    let mut last = String::new();
    loop {
        tick();
        if let Some(v) = poll(&mut last)? {
            return Ok(v);
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            let detail = if last.is_empty() {
                String::new()
            } else {
                format!(" (last seen: {last})")
            };
            return Err(Error::new(
                Kind::Timeout,
                format!(
                    "{what} did not happen within {}s{detail}",
                    deadline.as_secs()
                ),
            ));
        }
        if last_log.elapsed() >= LOG_EVERY {
            last_log = Instant::now();
            log::info!(
                "still waiting for {what}: {}s elapsed, deadline {}s{}",
                elapsed.as_secs(),
                deadline.as_secs(),
                if last.is_empty() {
                    String::new()
                } else {
                    format!(", last seen: {last}")
                }
            );
        }
        sleep(every.min(deadline - elapsed), what)?;
    }
}

/// Sleeps `d` in short steps, ticking progress; interrupted by shutdown.
pub fn sleep(d: Duration, what: &str) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if stopping() {
            return Err(interrupted(what));
        }
        tick();
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

/// Polls `SELECT 1` until PostgreSQL answers, for at most `timeout`.
pub fn ready(pg: &crate::pg::Pg, timeout: Duration) -> Result<()> {
    until(
        "PostgreSQL to accept connections",
        timeout,
        Duration::from_millis(500),
        |last| match pg.ping() {
            Ok(()) => Ok(Some(())),
            Err(e) => {
                *last = e.to_string();
                Ok(None)
            }
        },
    )
    .map_err(|e| {
        if e.kind == Kind::Timeout {
            Error::new(
                Kind::Timeout,
                format!(
                    "PostgreSQL did not accept connections within {}s ({})",
                    timeout.as_secs(),
                    e.message()
                ),
            )
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_the_value_and_times_out_with_the_last_state() {
        let mut n = 0;
        let v = until(
            "three polls",
            Duration::from_secs(5),
            Duration::ZERO,
            |_| {
                n += 1;
                Ok((n == 3).then_some(n))
            },
        )
        .unwrap();
        assert_eq!(v, 3);
        let e = until::<()>(
            "the moon",
            Duration::from_millis(300),
            Duration::from_millis(50),
            |last| {
                *last = "phase=waxing".into();
                Ok(None)
            },
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Timeout);
        assert!(
            e.message().contains("the moon did not happen within 0s"),
            "{e}"
        );
        assert!(e.message().contains("phase=waxing"), "{e}");
    }

    #[test]
    fn progress_is_visible_only_while_an_apply_runs() {
        let g = InProgress::start();
        tick();
        assert!(since_progress().unwrap() < Duration::from_secs(1));
        drop(g);
        assert!(since_progress().is_none());
    }
}
