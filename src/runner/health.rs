//! Health gate (protocol.md §9): a lost database connection closes the gate; database tasks
//! skip while it is closed; one prober pings with backoff (1 s doubling to 30 s) and reopens
//! it. Heartbeat and guardrails ignore the gate.

use crate::pg::Pg;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub struct HealthGate {
    open: AtomicBool,
    probing: AtomicBool,
    /// While closed: since when, and the last connection error (for `--health`).
    reason: Mutex<Option<(SystemTime, String)>>,
    /// Called after the gate reopens (re-probe capabilities, refresh state).
    on_recover: Box<dyn Fn() + Send + Sync>,
    pub max_backoff: Duration,
}

impl HealthGate {
    pub fn new(on_recover: Box<dyn Fn() + Send + Sync>) -> Arc<HealthGate> {
        Arc::new(HealthGate {
            open: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            reason: Mutex::new(None),
            on_recover,
            max_backoff: Duration::from_secs(30),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Why database tasks are not running (None while the gate is open).
    pub fn not_ready(&self) -> Option<String> {
        if self.is_open() {
            return None;
        }
        let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        r.as_ref().map(|(since, why)| {
            format!(
                "waiting for PostgreSQL since {}: {why}",
                crate::timefmt::utc_seconds(*since)
            )
        })
    }

    /// The last connection error while closed (None while open).
    pub fn last_error(&self) -> Option<String> {
        if self.is_open() {
            return None;
        }
        let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        r.as_ref().map(|(_, why)| why.clone())
    }

    /// Records the latest reason while closed (the start-up wait's own attempts).
    pub fn note_reason(&self, why: &str) {
        if !self.is_open() {
            self.set_reason(why);
        }
    }

    /// Opens the gate now (PostgreSQL is known to answer): capabilities are re-probed first.
    /// A prober still sleeping sees the gate open and ends.
    pub fn reopen_now(&self) {
        (self.on_recover)();
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.open.store(true, Ordering::SeqCst);
    }

    fn set_reason(&self, why: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        let since = r.as_ref().map_or_else(SystemTime::now, |(s, _)| *s);
        *r = Some((since, why.to_string()));
    }

    /// Closes the gate (`why`: the connection error) and starts the prober (once).
    pub fn connection_lost(self: &Arc<Self>, pg: &Pg, stop: Arc<AtomicBool>, why: &str) {
        self.set_reason(why);
        self.open.store(false, Ordering::SeqCst);
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        log::warn!("health gate: database connection lost, starting recovery pings");
        let me = self.clone();
        let pg = pg.clone();
        let spawned = std::thread::Builder::new()
            .name("health-probe".into())
            .spawn(move || {
                let mut wait = Duration::from_secs(1);
                loop {
                    let mut slept = Duration::ZERO;
                    while slept < wait {
                        if stop.load(Ordering::SeqCst) || me.is_open() {
                            me.probing.store(false, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                        slept += Duration::from_millis(100);
                    }
                    match pg.ping() {
                        Ok(()) => {
                            log::info!("health gate: database connection recovered");
                            (me.on_recover)();
                            *me.reason.lock().unwrap_or_else(|p| p.into_inner()) = None;
                            me.open.store(true, Ordering::SeqCst);
                            me.probing.store(false, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            // Said once per distinct error: a wrong password after PostgreSQL
                            // came back must be visible without debug logging.
                            if me.last_error().as_deref() != Some(msg.as_str()) {
                                log::warn!("health gate: PostgreSQL not answering: {msg}");
                            } else {
                                log::debug!("health gate: ping failed: {msg}");
                            }
                            me.set_reason(&msg);
                        }
                    }
                    wait = (wait * 2).min(me.max_backoff);
                }
            });
        if spawned.is_err() {
            self.probing.store(false, Ordering::SeqCst);
        }
    }
}
