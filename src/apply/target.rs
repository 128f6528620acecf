//! The per-provider half of an apply. The pipeline (`apply::apply`) validates, applies the
//! policy, skips knobs already set, journals, verifies in `pg_settings` and rolls back; a
//! [`Target`] only moves values: it reads what it is about to change, writes the new values,
//! makes them take effect, and puts the old ones back. One implementation per provider, in
//! that provider's folder under `src/adapter/`.
//!
//! Contract (the pipeline relies on it):
//! - `snapshot` changes nothing and returns one [`Previous`] per knob, in the same order.
//! - `write` writes only the knobs given; on failure it says how many of them may have been
//!   written (the pipeline restores exactly those).
//! - `activate` returns once the values are in effect as far as the provider can tell (a
//!   reload signalled, a restart done, a control-plane operation finished); the pipeline then
//!   waits for PostgreSQL to accept connections and verifies in `pg_settings` itself.
//! - `restore` writes the snapshot back and does not activate it; the pipeline activates.
//! - Every wait inside a target goes through [`super::wait`], so progress is reported, logged
//!   and interruptible at shutdown.
//! - `settle_restart` never starts a restart: it waits for one an earlier run may have left
//!   under way (at most finishing that same restart, e.g. starting a container it stopped).

use super::journal::{Entry, KnobChange};
use super::ApplyError;
use crate::error::Result;
use crate::pg::queries::Setting;
use crate::pg::Pg;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// What the target held for one parameter before the apply: what `restore` writes back.
/// (`ALTER SYSTEM`: the `postgresql.auto.conf` entry; Patroni: the DCS key; RDS: the
/// parameter group's user value; CNPG: `spec.postgresql.parameters`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Previous {
    /// No value of ours: restoring removes it (ALTER SYSTEM RESET, a `null` patch, a reset).
    Absent,
    Value(String),
    /// Not readable: restoring sets the previous running value (`previous_setting`).
    Unknown,
}

/// What a target read before writing: one entry per knob, plus what the provider needs to
/// undo the change while PostgreSQL is down (kept in the journal).
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub previous: Vec<Previous>,
    /// `postgresql.auto.conf`: where it is and its text (ALTER SYSTEM targets).
    pub auto_conf_path: Option<String>,
    pub auto_conf_text: Option<String>,
    /// Anything else the provider's `restore` needs (container id, members, group name).
    pub state: Option<serde_json::Value>,
}

/// How written values are made to take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Reload,
    Restart,
}

/// A failed `write`: how many knobs (from the start of the list) may have been written.
#[derive(Debug)]
pub struct WriteError {
    pub written: usize,
    pub error: crate::error::Error,
}

pub trait Target: Send + Sync {
    /// For messages: `ALTER SYSTEM on the local server (restart via restart script /x)`.
    fn describe(&self) -> String;

    /// Set when the provider manages `name` itself (Patroni, CNPG, Aiven): the reason shown by
    /// validation and `--plan`.
    fn managed(&self, _name: &str) -> Option<String> {
        None
    }

    /// Provider-level reasons nothing can be applied now (a replica, a failover being
    /// stabilised, a default parameter group), with the provider's error_type. Called before
    /// anything is written.
    fn preflight(&self) -> std::result::Result<(), ApplyError> {
        Ok(())
    }

    /// Why this target cannot restart PostgreSQL (e.g. no restart script or service name), or
    /// None when it can.
    fn restart_unavailable(&self) -> Option<String> {
        None
    }

    /// error_type sent when a restart is needed but not allowed (adapters.md §9.1: wrapped as
    /// `config_apply_error` by most providers, `restart_not_allowed` on Cloud SQL, Azure, Aiven).
    fn restart_not_allowed_type(&self) -> &'static str {
        "config_apply_error"
    }

    /// Whether changing this parameter takes a restart on this provider.
    fn needs_restart(&self, s: &Setting) -> bool {
        s.context == "postmaster"
    }

    /// Whether values land in `postgresql.auto.conf` (so verification can read them there for
    /// parameters existing sessions do not show).
    fn writes_auto_conf(&self) -> bool {
        false
    }

    /// How long a reload may take to show in `pg_settings` after `activate` returned.
    fn settle(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// Start-up recovery found a restart journalled by an earlier run (killed, crashed or
    /// stopped during it; any restart command it ran has exited). Waits, up to `deadline`,
    /// until the provider shows that restart over, so recovery judges a settled server.
    /// Default: PostgreSQL accepts connections, within 30 s at most (a restart script or
    /// `systemctl restart` that has exited has done all it will: a server still down then is
    /// not coming back by itself).
    fn settle_restart(&self, pg: &Pg, _entry: &Entry, deadline: Duration) -> Result<()> {
        super::wait::ready(pg, deadline.min(Duration::from_secs(30)))
    }

    /// Provider-only settings. Some providers take a parameter under their own name or unit
    /// (Aiven: `shared_buffers` only as `shared_buffers_percentage` of node memory, `work_mem`
    /// in MB). This maps PostgreSQL's view to the provider's and back: it rewrites the
    /// `pg_settings` rows (keyed by lower-case name) the pipeline reads, adding or converting
    /// rows computed from PostgreSQL's real values, so validation, "already set", the journal
    /// and verification all work in the names and units the provider's API takes while still
    /// reading what PostgreSQL runs with. Called on every `pg_settings` read of the pipeline
    /// (prepare and each verification poll). Default: identity.
    fn present(&self, _settings: &mut HashMap<String, Setting>) -> Result<()> {
        Ok(())
    }

    /// Reads what the target holds for `knobs` now. Changes nothing.
    fn snapshot(&self, pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot>;

    /// Writes `knobs[i].new_value` for every knob; not yet in effect.
    fn write(&self, pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError>;

    /// Makes what was written take effect, giving up after `deadline`.
    fn activate(
        &self,
        pg: &Pg,
        how: Activation,
        knobs: &[KnobChange],
        deadline: Duration,
    ) -> Result<()>;

    /// Writes the previous values of `knobs` (from `entry`) back, without activating them.
    /// `pg_up` says whether PostgreSQL accepts connections now. Returns what was done.
    fn restore(&self, pg: &Pg, entry: &Entry, knobs: &[KnobChange], pg_up: bool) -> Result<String>;
}
