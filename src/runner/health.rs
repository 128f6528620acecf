//! Health gate (protocol.md §9): a lost database connection closes the gate; database tasks
//! skip while it is closed; one prober pings with backoff (1 s doubling to 30 s) and reopens
//! it. Heartbeat and guardrails ignore the gate.

use crate::pg::Pg;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct HealthGate {
    open: AtomicBool,
    probing: AtomicBool,
    /// Called after the gate reopens (re-probe capabilities, refresh state).
    on_recover: Box<dyn Fn() + Send + Sync>,
    pub max_backoff: Duration,
}

impl HealthGate {
    pub fn new(on_recover: Box<dyn Fn() + Send + Sync>) -> Arc<HealthGate> {
        Arc::new(HealthGate {
            open: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            on_recover,
            max_backoff: Duration::from_secs(30),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes the gate and starts the prober (once).
    pub fn connection_lost(self: &Arc<Self>, pg: &Pg, stop: Arc<AtomicBool>) {
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
                        if stop.load(Ordering::SeqCst) {
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
                            me.open.store(true, Ordering::SeqCst);
                            me.probing.store(false, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => log::debug!("health gate: ping failed: {e}"),
                    }
                    wait = (wait * 2).min(me.max_backoff);
                }
            });
        if spawned.is_err() {
            self.probing.store(false, Ordering::SeqCst);
        }
    }
}
