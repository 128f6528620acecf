//! Applying a recommendation to PostgreSQL: render each knob (protocol.md §7), check it, run
//! `ALTER SYSTEM SET name = 'value'` with a quoted literal, then reload or restart.
//! The same machinery (validation, policy, idempotence, reporting) serves every adapter.

pub mod restart;

use crate::config::apply::ApplyConfig;
use crate::model::Recommendation;
use crate::pg::Pg;
use std::path::Path;
use std::time::Duration;

/// How PostgreSQL gets restarted when a postmaster knob changes.
pub trait Restarter: Send + Sync {
    /// Restarts PostgreSQL, giving up after `deadline`.
    fn restart(&self, deadline: Duration) -> crate::error::Result<()>;
    /// For messages: `restart script /usr/local/bin/x`, `systemctl restart postgresql`.
    fn describe(&self) -> String;
}

/// What `apply` needs from its caller.
pub struct ApplyContext<'a> {
    pub pg: &'a Pg,
    /// The runtime `postgresql.allow_restart`.
    pub allow_restart: bool,
    /// None when neither a restart script nor a service name is configured.
    pub restarter: Option<&'a dyn Restarter>,
    pub policy: &'a ApplyConfig,
    pub state_dir: &'a Path,
    /// How long to wait for PostgreSQL to accept connections after a restart.
    pub ready_timeout: Duration,
}

/// A failed apply, reported to `log-entries` as `error_type` with
/// `error_message = "Failed to apply configuration: " + message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    pub error_type: &'static str,
    pub message: String,
}

impl ApplyError {
    pub fn config(message: impl Into<String>) -> Self {
        ApplyError {
            error_type: "config_apply_error",
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every knob already had the proposed value: no ALTER, no reload, no restart.
    Unchanged,
    Reloaded(Vec<String>),
    Restarted(Vec<String>),
}

/// Applies `rec` (placeholder until the apply issue lands: refuses everything).
pub fn apply(_ctx: &ApplyContext<'_>, _rec: &Recommendation) -> Result<Outcome, ApplyError> {
    Err(ApplyError::config(
        "applying recommendations is not available in this build yet",
    ))
}
