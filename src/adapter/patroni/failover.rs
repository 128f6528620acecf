//! Failover tracking for Patroni (adapters.md §6.5): which member leads, when the leader last
//! changed, and whether the cluster has settled since. Configuration is applied only on a
//! stable cluster: never in the first 30 s after a leader change (the Go agent lets applies
//! through then), and only while the cluster is healthy again (a leader that is `running`,
//! PostgreSQL answering). After 5 minutes the tracking is cleared.
//!
//! `failover_detected` reports are queued here and sent by the runner (`Adapter::take_reports`),
//! so this module never talks to the platform. A synchronous agent has no operations context to
//! cancel: the gate is the check itself, run before every active-config read, system-info read
//! and apply.

use super::rest::Cluster;
use crate::error::{Error, Kind};
use crate::model::ErrorReport;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const STABILISATION: Duration = Duration::from_secs(30);
pub const GRACE: Duration = Duration::from_secs(300);
pub const NO_PRIMARY: &str = "NO PRIMARY DETECTED";

/// A failover seen or still settling: `failover detected: <old> -> <new>: <why>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverDetected {
    pub old: String,
    pub new: String,
    pub why: String,
    /// Inside the stabilisation period.
    pub stabilising: bool,
}

impl std::fmt::Display for FailoverDetected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "failover detected: {} -> {}: {}",
            self.old, self.new, self.why
        )
    }
}

impl From<FailoverDetected> for Error {
    fn from(d: FailoverDetected) -> Error {
        // Kind::Recovery: the runner suppresses it like a lost connection.
        Error::new(Kind::Recovery, d.to_string())
    }
}

#[derive(Default)]
struct State {
    primary: Option<String>,
    since: Option<Instant>,
    recovered: bool,
    restart_window: bool,
    reports: Vec<ErrorReport>,
}

#[derive(Default)]
pub struct Failover {
    state: Mutex<State>,
}

/// PostgreSQL errors that mean the server is going away or became a replica.
const FAILOVER_TEXTS: &[&str] = &[
    "database system is shutting down",
    "database system is starting up",
    "terminating connection due to administrator command",
];

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Clears the restart window when dropped.
pub struct RestartWindow<'a>(&'a Failover);

impl Drop for RestartWindow<'_> {
    fn drop(&mut self) {
        self.0.lock().restart_window = false;
    }
}

impl Failover {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leader we compare with; None until the first successful `/cluster`.
    pub fn primary(&self) -> Option<String> {
        self.lock().primary.clone()
    }

    /// Whether a leader change is being tracked (within the grace period).
    pub fn tracking(&self) -> bool {
        self.lock().since.is_some()
    }

    pub fn take_reports(&self) -> Vec<ErrorReport> {
        std::mem::take(&mut self.lock().reports)
    }

    /// While our own restarts run: a missing leader or an unreachable REST API is expected and
    /// not recorded as a failover; a different leader still is.
    pub fn restart_window(&self) -> RestartWindow<'_> {
        self.lock().restart_window = true;
        RestartWindow(self)
    }

    /// Whether the check needs a PostgreSQL ping (the recovery branch past stabilisation).
    pub fn needs_ping(&self, now: Instant) -> bool {
        self.lock()
            .since
            .is_some_and(|t| now.duration_since(t) >= STABILISATION)
    }

    fn record(s: &mut State, now: Instant, message: String) {
        s.since = Some(now);
        s.recovered = false;
        log::warn!("{message}");
        if s.restart_window {
            return;
        }
        s.reports.push(ErrorReport {
            error_type: "failover_detected".into(),
            error_message: message,
        });
    }

    /// One check (§6.5 `CheckForFailover`) from a `/cluster` answer and, when asked for by
    /// [`Failover::needs_ping`], a PostgreSQL ping. `Err` blocks applies and reads.
    pub fn check_at(
        &self,
        now: Instant,
        cluster: std::result::Result<&Cluster, String>,
        ping: Option<crate::error::Result<()>>,
    ) -> std::result::Result<(), FailoverDetected> {
        let mut s = self.lock();
        let old = s.primary.clone().unwrap_or_default();
        let det = |new: &str, why: String, stabilising: bool| FailoverDetected {
            old: old.clone(),
            new: new.to_string(),
            why,
            stabilising,
        };
        if let Some(t0) = s.since {
            let t = now.duration_since(t0);
            if t < STABILISATION {
                return Err(det(
                    "(stabilizing)",
                    format!(
                        "waiting {}s more for the cluster to stabilise before touching it",
                        (STABILISATION - t).as_secs().max(1)
                    ),
                    true,
                ));
            }
            let c = match &cluster {
                Ok(c) => *c,
                Err(e) => return Err(det("(verifying health)", e.clone(), false)),
            };
            match c.leader() {
                None => {
                    return Err(det(
                        "(recovering)",
                        "the cluster has no leader".into(),
                        false,
                    ))
                }
                Some(l) if !(l.state.is_empty() || l.state == "running") => {
                    return Err(det(
                        "(recovering)",
                        format!("leader {} is {}", l.name, l.state),
                        false,
                    ))
                }
                _ => {}
            }
            if let Some(Err(e)) = &ping {
                return Err(det("(recovering)", format!("PostgreSQL: {e}"), false));
            }
            if t >= GRACE {
                s.since = None;
                s.recovered = false;
                log::info!("failover tracking cleared after {}s", GRACE.as_secs());
            } else if !s.recovered {
                s.recovered = true;
                log::info!(
                    "cluster healthy again after the failover (leader {}); applies resume",
                    c.leader().map(|l| l.name.as_str()).unwrap_or("")
                );
            }
        }
        let c = match cluster {
            Ok(c) => c,
            Err(e) => {
                if s.primary.is_none() {
                    return Ok(());
                }
                let d = det(
                    NO_PRIMARY,
                    format!("cluster status unavailable: {e}"),
                    false,
                );
                if s.since.is_none() && !s.restart_window {
                    Self::record(&mut s, now, d.to_string());
                }
                return Err(d);
            }
        };
        match (c.leader(), s.primary.clone()) {
            (None, None) => Ok(()),
            (None, Some(_)) => {
                let d = det(NO_PRIMARY, "cluster state: no-leader".into(), false);
                if s.since.is_none() && !s.restart_window {
                    Self::record(&mut s, now, d.to_string());
                }
                Err(d)
            }
            (Some(l), None) => {
                log::info!("Patroni leader is {}", l.name.trim());
                s.primary = Some(l.name.trim().to_string());
                Ok(())
            }
            (Some(l), Some(p)) if !same(&l.name, &p) => {
                let d = det(
                    l.name.trim(),
                    format!(
                        "cluster state: {}",
                        if l.state.is_empty() {
                            "unknown"
                        } else {
                            &l.state
                        }
                    ),
                    false,
                );
                s.primary = Some(l.name.trim().to_string());
                Self::record(&mut s, now, d.to_string());
                Err(d)
            }
            _ => Ok(()),
        }
    }

    /// One check with a fresh `/cluster` answer (and a ping when the recovery branch needs it).
    pub fn check(
        &self,
        rest: &super::rest::Rest,
        pg: &crate::pg::Pg,
    ) -> std::result::Result<(), FailoverDetected> {
        let cluster = rest.cluster();
        let ping = self.needs_ping(Instant::now()).then(|| pg.ping());
        self.check_at(
            Instant::now(),
            cluster.as_ref().map_err(|e| e.to_string()),
            ping,
        )
    }

    /// §6.5 `handlePossibleFailoverError`: a PostgreSQL error that means the server is going
    /// away or is now read-only starts the tracking (once) and becomes a FailoverDetected.
    pub fn pg_error(&self, e: &Error) -> Option<FailoverDetected> {
        let m = e.message().to_ascii_lowercase();
        let failing = FAILOVER_TEXTS.iter().any(|t| m.contains(t))
            || (m.contains("cannot execute") && m.contains("recovery"));
        if !failing {
            return None;
        }
        let mut s = self.lock();
        if s.since.is_none() {
            Self::record(&mut s, Instant::now(), format!("Failover detected: {e}"));
        }
        Some(FailoverDetected {
            old: s.primary.clone().unwrap_or_default(),
            new: NO_PRIMARY.into(),
            why: e.to_string(),
            stabilising: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::patroni::rest::Member;

    fn cluster(leader: Option<(&str, &str)>) -> Cluster {
        let mut members = vec![Member {
            name: "n3".into(),
            role: "replica".into(),
            state: "streaming".into(),
            api_url: None,
            host: None,
            pending_restart: false,
        }];
        if let Some((n, st)) = leader {
            members.push(Member {
                name: n.into(),
                role: "leader".into(),
                state: st.into(),
                api_url: None,
                host: None,
                pending_restart: false,
            });
        }
        Cluster {
            members,
            scope: None,
        }
    }

    #[test]
    fn a_leader_change_is_reported_once_then_blocks_for_the_stabilisation_period() {
        let f = Failover::default();
        let t0 = Instant::now();
        let n1 = cluster(Some(("n1", "running")));
        let n2 = cluster(Some(("n2", "running")));
        assert_eq!(f.check_at(t0, Ok(&n1), None), Ok(()));
        assert_eq!(f.primary().as_deref(), Some("n1"));
        let d = f.check_at(t0, Ok(&n2), None).unwrap_err();
        assert_eq!(
            d.to_string(),
            "failover detected: n1 -> n2: cluster state: running"
        );
        let r = f.take_reports();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].error_type, "failover_detected");
        assert_eq!(r[0].error_message, d.to_string());
        // Stabilising: blocked, nothing more reported.
        let d = f
            .check_at(t0 + Duration::from_secs(29), Ok(&n2), None)
            .unwrap_err();
        assert!(d.stabilising && d.new == "(stabilizing)", "{d}");
        // Past it: the health check decides.
        let t = t0 + STABILISATION;
        assert!(f.needs_ping(t));
        let starting = cluster(Some(("n2", "starting")));
        let d = f.check_at(t, Ok(&starting), Some(Ok(()))).unwrap_err();
        assert_eq!(d.new, "(recovering)");
        let d = f
            .check_at(t, Ok(&n2), Some(Err(Error::other("connection refused"))))
            .unwrap_err();
        assert!(d.why.contains("connection refused"), "{d}");
        assert_eq!(f.check_at(t, Ok(&n2), Some(Ok(()))), Ok(()));
        assert!(f.tracking());
        // Cleared after the grace period.
        assert_eq!(f.check_at(t0 + GRACE, Ok(&n2), Some(Ok(()))), Ok(()));
        assert!(!f.tracking());
        assert!(f.take_reports().is_empty());
    }

    #[test]
    fn no_leader_or_no_answer_counts_only_once_a_leader_was_known() {
        let f = Failover::default();
        let t0 = Instant::now();
        assert_eq!(
            f.check_at(t0, Err("connection refused".into()), None),
            Ok(())
        );
        assert_eq!(f.check_at(t0, Ok(&cluster(None)), None), Ok(()));
        f.check_at(t0, Ok(&cluster(Some(("n1", "running")))), None)
            .unwrap();
        let d = f.check_at(t0, Ok(&cluster(None)), None).unwrap_err();
        assert_eq!(
            d.to_string(),
            "failover detected: n1 -> NO PRIMARY DETECTED: cluster state: no-leader"
        );
        assert_eq!(f.take_reports().len(), 1);
        // Already tracking: not reported again.
        let d = f
            .check_at(
                t0 + Duration::from_secs(40),
                Err("timed out".into()),
                Some(Ok(())),
            )
            .unwrap_err();
        assert_eq!(d.new, "(verifying health)");
        assert!(f.take_reports().is_empty());
    }

    #[test]
    fn our_own_restart_does_not_count_as_a_failover_but_a_new_leader_does() {
        let f = Failover::default();
        let t0 = Instant::now();
        f.check_at(t0, Ok(&cluster(Some(("n1", "running")))), None)
            .unwrap();
        {
            let _w = f.restart_window();
            assert!(f.check_at(t0, Err("refused".into()), None).is_err());
            assert!(!f.tracking());
            assert!(f
                .check_at(t0, Ok(&cluster(Some(("n2", "running")))), None)
                .is_err());
            assert!(f.tracking(), "a different leader is recorded");
            assert!(
                f.take_reports().is_empty(),
                "but not notified inside the window"
            );
        }
        assert!(!f.lock().restart_window);
    }

    #[test]
    fn postgres_errors_of_a_node_going_away_start_tracking() {
        let f = Failover::default();
        assert!(f.pg_error(&Error::other("syntax error")).is_none());
        let d = f
            .pg_error(&Error::other(
                "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
            ))
            .unwrap();
        assert_eq!(d.new, NO_PRIMARY);
        assert!(f.tracking());
        let r = f.take_reports();
        assert_eq!(r.len(), 1);
        assert!(r[0].error_message.starts_with("Failover detected: FATAL"));
        assert!(f
            .pg_error(&Error::other(
                "ERROR: cannot execute ALTER SYSTEM during recovery"
            ))
            .is_some());
        assert!(f.take_reports().is_empty());
    }
}
