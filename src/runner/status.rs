//! The runner's side of `dbtune-agent status`: the tasks note each successful send and each
//! failed platform call here; the `status` task writes it to `<state_dir>/status.json` every
//! 10 s (atomic replace; a failure to write is logged at debug and never stops the agent).

use crate::status::{now_unix, DaemonStatus};
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Heartbeat,
    Metrics,
    Catalog,
    /// Any other platform call (system info, configurations): counts only for the outage.
    Other,
}

#[derive(Default)]
pub struct Tracker {
    inner: Mutex<DaemonStatus>,
}

impl Tracker {
    pub fn new(provider: &str, dry_run: bool) -> Tracker {
        let now = now_unix();
        Tracker {
            inner: Mutex::new(DaemonStatus {
                pid: std::process::id(),
                agent_version: crate::version::VERSION.to_string(),
                started_at: now,
                updated_at: now,
                provider: provider.to_string(),
                dry_run,
                ..Default::default()
            }),
        }
    }

    fn with(&self, f: impl FnOnce(&mut DaemonStatus)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Notes the result of a platform call.
    pub fn platform<T>(&self, what: Sent, r: &crate::error::Result<T>) {
        let now = now_unix();
        self.with(|s| match r {
            Ok(_) => {
                match what {
                    Sent::Heartbeat => s.last_heartbeat_ok = Some(now),
                    Sent::Metrics => s.last_metrics_ok = Some(now),
                    Sent::Catalog => s.last_catalog_ok = Some(now),
                    Sent::Other => {}
                }
                s.platform_failing_since = None;
                s.platform_last_error = None;
            }
            Err(e) => {
                s.platform_failing_since.get_or_insert(now);
                let text = crate::logging::redact(&e.to_string());
                s.platform_last_error = Some(text.chars().take(300).collect());
            }
        });
    }

    pub fn snapshot(&self, pg_reachable: bool, pg_version: Option<String>) -> DaemonStatus {
        let mut out = None;
        self.with(|s| {
            s.updated_at = now_unix();
            s.pg_reachable = pg_reachable;
            if pg_version.is_some() {
                s.pg_version = pg_version;
            }
            out = Some(s.clone());
        });
        out.unwrap_or_default()
    }
}
