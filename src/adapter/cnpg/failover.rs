//! The failover state machine (adapters.md §5.7). Tracks the last known primary and, after a
//! failover, a stabilisation period during which nothing is applied and PostgreSQL-reading
//! tasks report "failover detected" (which the runner suppresses). The Go agent's
//! cancellable "operations context" is a flag here: while set, PostgreSQL-reading calls fail
//! fast with a failover error until recovery completes.
//!
//! Only two places record a *new* failover (set the failover time): [`Failover::handle`]
//! (called by the guardrail task, which then reports `failover_detected` to the platform) and
//! [`Failover::pg_failover`] (PostgreSQL said it is shutting down or in recovery). `check`
//! itself only starts tracking a primary and runs the recovery branch.

use super::api::ClusterState;
use std::time::{Duration, Instant};

/// `failover detected: <old> -> <new>: <message>`, as the Go agent words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverDetected {
    pub old: String,
    pub new: String,
    pub message: String,
}

impl std::fmt::Display for FailoverDetected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failover detected: {} -> {}: {}",
            if self.old.is_empty() {
                "(unknown)"
            } else {
                &self.old
            },
            self.new,
            self.message
        )
    }
}

impl FailoverDetected {
    /// A real pod name, not one of the placeholders in parentheses.
    pub fn new_is_pod(&self) -> bool {
        !(self.new.is_empty()
            || self.new.starts_with('(')
            || matches!(self.new.as_str(), "pending" | "none" | "unknown"))
    }
}

#[derive(Debug, Default)]
pub struct Failover {
    pub last_known_primary: Option<String>,
    /// When the failover being stabilised was seen; None when none is tracked.
    pub last_failover: Option<Instant>,
    /// The "operations context" is cancelled: PostgreSQL reads fail fast.
    pub ops_cancelled: bool,
    /// How long a new primary must stay healthy before the agent acts again.
    pub stabilisation: Duration,
}

impl Failover {
    pub fn new(stabilisation: Duration) -> Failover {
        Failover {
            stabilisation,
            ..Default::default()
        }
    }

    fn detected(&self, new: &str, message: &str) -> FailoverDetected {
        FailoverDetected {
            old: self.last_known_primary.clone().unwrap_or_default(),
            new: new.to_string(),
            message: message.to_string(),
        }
    }

    /// `CheckForFailover`: `cluster` is the Cluster just read (or why it could not be),
    /// `pg_ok` pings PostgreSQL (only called in the recovery branch).
    pub fn check(
        &mut self,
        cluster: std::result::Result<&ClusterState, String>,
        now: Instant,
        pg_ok: impl FnOnce() -> bool,
    ) -> std::result::Result<(), FailoverDetected> {
        let c = match cluster {
            Ok(c) => c,
            Err(e) => {
                return match self.last_known_primary {
                    Some(_) => Err(self.detected(
                        "(unknown - failover in progress)",
                        &format!("cannot read the Cluster: {e}"),
                    )),
                    None => Ok(()),
                };
            }
        };
        let current = c.current_primary.as_str();
        if let Some(at) = self.last_failover {
            if !c.healthy() {
                return Err(self.detected("(recovery in progress)", &c.summary()));
            }
            if now.duration_since(at) < self.stabilisation {
                return Err(self.detected(
                    "(stabilizing)",
                    &format!(
                        "waiting {}s after the failover before acting",
                        self.stabilisation.as_secs()
                    ),
                ));
            }
            if self.last_known_primary.as_deref() != Some(current) {
                // Another change while stabilising: start again with the new primary.
                let e = self.detected(current, "the primary changed again while stabilising");
                self.last_known_primary = Some(current.to_string());
                self.last_failover = Some(now);
                return Err(e);
            }
            if !pg_ok() {
                return Err(self.detected("(PostgreSQL unavailable)", "PostgreSQL does not answer"));
            }
            log::info!("failover recovery complete: {current} is the primary and healthy");
            self.last_failover = None;
            self.ops_cancelled = false;
            return Ok(());
        }
        match self.last_known_primary.as_deref() {
            Some(_) if current.is_empty() => Err(self.detected(
                "(none - failover in progress)",
                "the Cluster reports no current primary",
            )),
            None => {
                if !current.is_empty() {
                    self.last_known_primary = Some(current.to_string());
                }
                Ok(())
            }
            Some(known) if known != current => Err(self.detected(current, "the primary changed")),
            Some(_) if !c.target_primary.is_empty() && c.target_primary != current => Err(self
                .detected(
                    &c.target_primary,
                    "a switchover to the target primary is pending",
                )),
            Some(_) => Ok(()),
        }
    }

    /// `HandleFailoverDetected`: starts stabilisation (unless only a recovery is reported),
    /// cancels operations and adopts the new primary. Returns whether the failover is new
    /// (the caller then reports `failover_detected`).
    pub fn handle(&mut self, e: &FailoverDetected, now: Instant) -> bool {
        if self.last_failover.is_some() {
            return false;
        }
        if e.new != "(recovery in progress)" {
            self.last_failover = Some(now);
            self.ops_cancelled = true;
        }
        if e.new_is_pod() {
            self.last_known_primary = Some(e.new.clone());
        }
        true
    }

    /// PostgreSQL reported shutdown, start-up or recovery (active config path): a failover
    /// unless one is already tracked. Returns the error and whether it is new.
    pub fn pg_failover(&mut self, pg_error: &str, now: Instant) -> (FailoverDetected, bool) {
        let e = self.detected("(unknown - failover in progress)", pg_error);
        if self.last_failover.is_some() {
            return (e, false);
        }
        self.last_failover = Some(now);
        self.ops_cancelled = true;
        (e, true)
    }

    /// While a failover is being stabilised: why nothing may be applied.
    pub fn in_progress(&self) -> bool {
        self.last_failover.is_some()
    }
}

/// PostgreSQL errors that mean the server is going through a failover or restart.
pub fn is_failover_pg_error(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("database system is shutting down")
        || m.contains("database system is starting up")
        || (m.contains("cannot execute") && m.contains("recovery"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(primary: &str, ready: i64) -> ClusterState {
        ClusterState {
            phase: super::super::api::HEALTHY_PHASE.into(),
            instances: 3,
            ready_instances: ready,
            current_primary: primary.into(),
            target_primary: primary.into(),
            ..Default::default()
        }
    }

    #[test]
    fn tracks_detects_stabilises_and_recovers() {
        let t0 = Instant::now();
        let mut f = Failover::new(Duration::from_secs(30));
        // Nothing tracked and the Cluster unreadable: fine, nothing tracked.
        assert!(f.check(Err("HTTP 503".into()), t0, || true).is_ok());
        assert!(f.check(Ok(&cluster("pg-1", 3)), t0, || true).is_ok());
        assert_eq!(f.last_known_primary.as_deref(), Some("pg-1"));
        assert!(f.check(Ok(&cluster("pg-1", 3)), t0, || true).is_ok());
        // Unreadable once a primary is tracked: a failover may be in progress.
        let e = f.check(Err("HTTP 503".into()), t0, || true).unwrap_err();
        assert_eq!(e.new, "(unknown - failover in progress)");
        // The primary changes: reported, but check alone records nothing.
        let e = f.check(Ok(&cluster("pg-2", 2)), t0, || true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "failover detected: pg-1 -> pg-2: the primary changed"
        );
        assert!(!f.in_progress());
        // The guardrail handles it: stabilisation starts, operations are cancelled.
        assert!(f.handle(&e, t0));
        assert!(f.in_progress() && f.ops_cancelled);
        assert_eq!(f.last_known_primary.as_deref(), Some("pg-2"));
        assert!(!f.handle(&e, t0), "one report per failover");
        // Unhealthy, then healthy but too soon, then PostgreSQL down, then recovered.
        let e = f.check(Ok(&cluster("pg-2", 2)), t0, || true).unwrap_err();
        assert_eq!(e.new, "(recovery in progress)");
        let t = t0 + Duration::from_secs(10);
        assert_eq!(
            f.check(Ok(&cluster("pg-2", 3)), t, || true)
                .unwrap_err()
                .new,
            "(stabilizing)"
        );
        let t = t0 + Duration::from_secs(31);
        assert_eq!(
            f.check(Ok(&cluster("pg-2", 3)), t, || false)
                .unwrap_err()
                .new,
            "(PostgreSQL unavailable)"
        );
        assert!(f.check(Ok(&cluster("pg-2", 3)), t, || true).is_ok());
        assert!(!f.in_progress() && !f.ops_cancelled);
    }

    #[test]
    fn a_second_change_while_stabilising_restarts_the_clock() {
        let t0 = Instant::now();
        let mut f = Failover::new(Duration::from_secs(30));
        f.check(Ok(&cluster("pg-1", 3)), t0, || true).unwrap();
        let e = f.check(Ok(&cluster("pg-2", 3)), t0, || true).unwrap_err();
        f.handle(&e, t0);
        let t = t0 + Duration::from_secs(40);
        let e = f.check(Ok(&cluster("pg-3", 3)), t, || true).unwrap_err();
        assert_eq!(e.new, "pg-3");
        assert_eq!(f.last_failover, Some(t));
        assert!(f
            .check(Ok(&cluster("pg-3", 3)), t + Duration::from_secs(29), || {
                true
            })
            .is_err());
        assert!(f
            .check(Ok(&cluster("pg-3", 3)), t + Duration::from_secs(31), || {
                true
            })
            .is_ok());
    }

    #[test]
    fn pending_switchover_and_missing_primary_are_failovers() {
        let t0 = Instant::now();
        let mut f = Failover::new(Duration::from_secs(30));
        f.check(Ok(&cluster("pg-1", 3)), t0, || true).unwrap();
        let mut c = cluster("pg-1", 3);
        c.target_primary = "pg-3".into();
        assert_eq!(f.check(Ok(&c), t0, || true).unwrap_err().new, "pg-3");
        assert_eq!(
            f.check(Ok(&cluster("", 2)), t0, || true).unwrap_err().new,
            "(none - failover in progress)"
        );
        let (e, new) = f.pg_failover("FATAL: the database system is shutting down", t0);
        assert!(new && f.ops_cancelled && e.to_string().contains("shutting down"));
        assert!(!f.pg_failover("again", t0).1);
        assert!(is_failover_pg_error(
            "ERROR: cannot execute ALTER SYSTEM during recovery"
        ));
        assert!(!is_failover_pg_error("ERROR: syntax error"));
    }
}
