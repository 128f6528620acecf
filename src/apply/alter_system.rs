//! Building blocks for targets that write through `ALTER SYSTEM` (self-managed, Docker) or
//! clear it (Patroni): snapshot of `postgresql.auto.conf`, write, live restore, reset, reload.
//! Values reach SQL only as quoted literals (`pg::alter`).

use super::auto_conf::AutoConf;
use super::journal::KnobChange;
use super::target::{Previous, Snapshot, WriteError};
use super::with_conn;
use crate::error::Result;
use crate::pg::alter as sql;
use crate::pg::{queries, Pg};

/// What `postgresql.auto.conf` holds for `knobs` now (`override_path`: `apply.auto_conf_path`).
pub fn snapshot(pg: &Pg, knobs: &[KnobChange], override_path: Option<&str>) -> Result<Snapshot> {
    let a = with_conn(pg, |c| AutoConf::take(c, override_path))?;
    Ok(Snapshot {
        previous: knobs.iter().map(|k| a.value(&k.name)).collect(),
        auto_conf_path: a.auto_conf_path.as_ref().map(|p| p.display().to_string()),
        auto_conf_text: a.auto_conf_text.clone(),
        state: None,
    })
}

/// `ALTER SYSTEM SET` of every knob, one statement each (ALTER SYSTEM cannot share a
/// transaction block).
pub fn write(pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
    for (i, k) in knobs.iter().enumerate() {
        with_conn(pg, |c| sql::alter_set(c, &k.name, &k.new_value)).map_err(|e| WriteError {
            written: i + 1,
            error: e.context(format!("failed to alter system for {}", k.name)),
        })?;
    }
    Ok(())
}

/// Puts the previous `postgresql.auto.conf` entries of `knobs` back while PostgreSQL is up;
/// returns what was done (for the rollback message).
pub fn restore_live(pg: &Pg, knobs: &[KnobChange]) -> Result<String> {
    for k in knobs.iter().rev() {
        with_conn(pg, |c| match &k.previous {
            Previous::Value(v) => sql::alter_set(c, &k.name, v),
            Previous::Absent => sql::alter_reset(c, &k.name),
            Previous::Unknown => sql::alter_set(c, &k.name, &k.previous_setting),
        })
        .map_err(|e| e.context(format!("restoring {}", k.name)))?;
    }
    Ok("ALTER SYSTEM restored the previous entries".into())
}

/// `ALTER SYSTEM RESET` of each name that has an entry (Patroni: its configuration must not
/// be shadowed by a local copy).
pub fn reset(pg: &Pg, names: &[String]) -> Result<Vec<String>> {
    let entries = with_conn(pg, sql::auto_conf_entries)?.unwrap_or_default();
    let mut done = Vec::new();
    for n in names {
        if entries.iter().any(|(e, _)| e.eq_ignore_ascii_case(n)) {
            with_conn(pg, |c| sql::alter_reset(c, n))
                .map_err(|e| e.context(format!("ALTER SYSTEM RESET {n}")))?;
            done.push(n.clone());
        }
    }
    Ok(done)
}

/// `pg_reload_conf()`.
pub fn reload(pg: &Pg) -> Result<()> {
    with_conn(pg, queries::reload).map_err(|e| e.context("reloading the configuration"))
}
