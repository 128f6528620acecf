//! Progress lines for long waits (a restart, PostgreSQL coming back): every 15 s one INFO line
//! saying what is awaited, how long it has been and the deadline, so an operator watching the
//! log sees the agent is waiting on purpose, not hung.

use std::time::{Duration, Instant};

pub const EVERY: Duration = Duration::from_secs(15);

pub struct Progress {
    what: String,
    start: Instant,
    deadline: Duration,
    next: Duration,
}

impl Progress {
    pub fn new(what: impl Into<String>, deadline: Duration) -> Progress {
        Progress {
            what: what.into(),
            start: Instant::now(),
            deadline,
            next: EVERY,
        }
    }

    /// Call from the wait loop; logs when the next 15 s mark has passed.
    pub fn tick(&mut self) {
        let e = self.start.elapsed();
        if e >= self.next {
            log::info!(
                "still waiting for {}: {}s elapsed, deadline {}s",
                self.what,
                e.as_secs(),
                self.deadline.as_secs()
            );
            self.next += EVERY;
        }
    }
}
