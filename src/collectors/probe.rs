//! Capability probe: which views, functions, columns and extension versions this server has —
//! and which function-backed views actually answer (Aurora's `pg_stat_wal` exists but raises).
//! Run once at start and after every reconnect/failover; collectors gate on the result, so a
//! missing or failing capability costs one probe statement, not an error every cycle.

use super::ServerInfo;
use crate::error::{Context, Result};
use crate::pg::{self, Pg};
use std::collections::BTreeSet;

/// Views whose presence differs by version or service; each present one is also read once to
/// check that it works for this role on this server.
pub const PROBED_VIEWS: &[&str] = &[
    "pg_stat_io",
    "pg_stat_checkpointer",
    "pg_stat_wal",
    "pg_stat_wal_receiver",
    "pg_stat_recovery_prefetch",
    "pg_stat_replication_slots",
    "pg_stat_slru",
    "pg_stat_subscription_stats",
    "pg_stat_progress_analyze",
    "pg_stat_bgwriter",
];

/// Functions (by signature) some collectors depend on.
pub const PROBED_FUNCTIONS: &[&str] = &[
    "pg_stat_get_wal()",
    "pg_control_system()",
    "pg_control_checkpoint()",
    "pg_blocking_pids(integer)",
    "pg_get_partkeydef(oid)",
];

/// Relations whose column sets are recorded as `col:<relation>.<column>`.
pub const PROBED_COLUMNS_OF: &[&str] =
    &["pg_stat_activity", "pg_index", "pg_class", "pg_attribute"];

/// Probes the server. Capabilities are `view:<name>` (present and readable), `fn:<signature>`,
/// `col:<relation>.<column>` and `ext:<name>=<version>`.
pub fn probe(pg: &Pg) -> Result<ServerInfo> {
    let mut c = pg.conn().context("probing server capabilities")?;
    let version = pg::queries::server_version(&mut c)?;
    let mut caps = BTreeSet::new();

    let views: Vec<String> = PROBED_VIEWS.iter().map(|s| s.to_string()).collect();
    let present = pg::query(
        &mut c,
        "SELECT v FROM unnest($1::text[]) AS v WHERE to_regclass('pg_catalog.' || v) IS NOT NULL",
        &[&views],
    )
    .context("probing views")?;
    for r in present {
        let v: String = r.get(0);
        // Only our own names are interpolated here (PROBED_VIEWS), never server text.
        if !PROBED_VIEWS.contains(&v.as_str()) {
            continue;
        }
        match pg::query(&mut c, &format!("SELECT count(*) FROM pg_catalog.{v}"), &[]) {
            Ok(_) => {
                caps.insert(format!("view:{v}"));
            }
            Err(e) if e.is_connection() => return Err(e.context("probing views")),
            Err(e) => log::info!("{v} is present but not readable here; its collector is off: {e}"),
        }
    }

    let funcs: Vec<String> = PROBED_FUNCTIONS.iter().map(|s| s.to_string()).collect();
    for r in pg::query(
        &mut c,
        "SELECT f FROM unnest($1::text[]) AS f WHERE to_regprocedure('pg_catalog.' || f) IS NOT NULL",
        &[&funcs],
    )
    .context("probing functions")?
    {
        caps.insert(format!("fn:{}", r.get::<_, String>(0)));
    }

    let rels: Vec<String> = PROBED_COLUMNS_OF.iter().map(|s| s.to_string()).collect();
    for r in pg::query(
        &mut c,
        "SELECT c.relname::text || '.' || a.attname::text FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped",
        &[&rels],
    )
    .context("probing columns")?
    {
        caps.insert(format!("col:{}", r.get::<_, String>(0)));
    }

    for r in pg::query(
        &mut c,
        "SELECT extname::text, extversion FROM pg_catalog.pg_extension",
        &[],
    )
    .context("probing extensions")?
    {
        caps.insert(format!(
            "ext:{}={}",
            r.get::<_, String>(0),
            r.get::<_, String>(1)
        ));
    }

    Ok(ServerInfo {
        version: Some(version),
        caps,
    })
}
