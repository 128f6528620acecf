//! The core's own statements: version, pg_settings, system-info facts, startup checks.
//! Catalog collectors keep their queries in their own files under `src/collectors/`.

use super::{query, query_one, ServerVersion};
use crate::error::{Context, Error, Result};
use postgres::Client;

/// Reads `version()` and parses it; an unparseable text is an error, never a panic.
pub fn server_version(c: &mut Client) -> Result<ServerVersion> {
    let row = query_one(c, "SELECT version()", &[]).context("reading version()")?;
    let text: String = row.get(0);
    ServerVersion::parse(&text).ok_or_else(|| {
        Error::other(format!(
            "failed to get PostgreSQL version: no \"PostgreSQL N\" in {text:?}"
        ))
    })
}

/// One row of `pg_settings` with the columns the agent uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub name: String,
    pub setting: String,
    pub unit: Option<String>,
    pub vartype: String,
    pub context: String,
    pub source: String,
    pub min_val: Option<String>,
    pub max_val: Option<String>,
    pub enumvals: Option<Vec<String>>,
    pub boot_val: Option<String>,
    pub reset_val: Option<String>,
    pub pending_restart: bool,
}

/// Every row of `pg_settings`, in the view's order (sorted by name).
pub fn pg_settings(c: &mut Client) -> Result<Vec<Setting>> {
    let rows = query(
        c,
        "SELECT name, setting, unit, vartype, context, source, min_val, max_val, enumvals, \
         boot_val, reset_val, pending_restart FROM pg_catalog.pg_settings",
        &[],
    )
    .context("reading pg_settings")?;
    Ok(rows
        .iter()
        .map(|r| Setting {
            name: r.get(0),
            setting: r.get::<_, Option<String>>(1).unwrap_or_default(),
            unit: r.get(2),
            vartype: r.get(3),
            context: r.get(4),
            source: r.get(5),
            min_val: r.get(6),
            max_val: r.get(7),
            enumvals: r.get(8),
            boot_val: r.get(9),
            reset_val: r.get(10),
            pending_restart: r.get::<_, Option<bool>>(11).unwrap_or(false),
        })
        .collect())
}

/// One active setting as the config sync sends it: (name, setting, unit, vartype, context).
pub type ActiveSetting = (String, String, Option<String>, String, String);

/// The active settings as the config sync sends them.
pub fn active_settings(c: &mut Client) -> Result<Vec<ActiveSetting>> {
    let rows = query(
        c,
        "SELECT name, setting, unit, vartype, context FROM pg_catalog.pg_settings",
        &[],
    )
    .context("reading pg_settings")?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<String>>(1).unwrap_or_default(),
                r.get(2),
                r.get(3),
                r.get(4),
            )
        })
        .collect())
}

/// What this session's settings depend on: when it last loaded the configuration files (per
/// session: a reload shows here once the backend has processed it), the postmaster's start and
/// the backend itself (ALTER ROLE/DATABASE SET take effect in new sessions). While it is the
/// same, `pg_settings` read in this session is the same.
pub fn settings_epoch(c: &mut Client) -> Result<String> {
    Ok(query_one(
        c,
        "SELECT pg_catalog.pg_conf_load_time()::text || '/' || pg_catalog.pg_postmaster_start_time()::text \
         || '/' || pg_catalog.pg_backend_pid()",
        &[],
    )
    .context("reading the configuration load time")?
    .get(0))
}

/// Names among `names` whose context is `postmaster` (need a restart).
pub fn postmaster_knobs(c: &mut Client, names: &[String]) -> Result<Vec<String>> {
    let rows = query(
        c,
        "SELECT name FROM pg_catalog.pg_settings WHERE name = ANY($1) AND context = 'postmaster'",
        &[&names],
    )
    .context("failed to validate which parameters require restart")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The PostgreSQL half of system info (protocol.md §8.4).
#[derive(Clone, Debug, PartialEq)]
pub struct PgFacts {
    pub version: ServerVersion,
    pub max_connections: i64,
    pub current_database: String,
    pub database_count: i64,
}

pub fn pg_facts(c: &mut Client) -> Result<PgFacts> {
    let version = server_version(c)?;
    let row = query_one(
        c,
        "SELECT (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'max_connections'), \
         current_database()::text, \
         (SELECT count(*) FROM pg_catalog.pg_database WHERE NOT datistemplate AND datallowconn)::bigint",
        &[],
    )
    .context("reading max_connections, current_database and the database count")?;
    Ok(PgFacts {
        version,
        max_connections: row.get::<_, Option<i64>>(0).unwrap_or(0),
        current_database: row.get(1),
        database_count: row.get(2),
    })
}

/// Startup check: the extension's view must be readable in schema `public`.
pub fn pg_stat_statements_readable(c: &mut Client) -> Result<i64> {
    let row = query_one(c, "SELECT count(*) FROM public.pg_stat_statements", &[])
        .context("failed to query pg_stat_statements table")?;
    Ok(row.get(0))
}

/// `pg_reload_conf()`.
pub fn reload(c: &mut Client) -> Result<()> {
    query(c, "SELECT pg_catalog.pg_reload_conf()", &[])
        .context("reloading the configuration (pg_reload_conf)")?;
    Ok(())
}

/// Role facts for `--check`: superuser, and the pg_monitor / pg_read_all_stats memberships.
pub fn role_privileges(c: &mut Client) -> Result<(String, bool, bool)> {
    let row = query_one(
        c,
        "SELECT current_user::text, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), \
         pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')",
        &[],
    )
    .context("reading the agent role's privileges")?;
    Ok((
        row.get(0),
        row.get::<_, Option<bool>>(1).unwrap_or(false),
        row.get(2),
    ))
}

/// The PID of this session's backend (its parent is the postmaster).
pub fn backend_pid(c: &mut Client) -> Result<i32> {
    Ok(query_one(c, "SELECT pg_backend_pid()", &[])?.get(0))
}

/// `pg_is_in_recovery()`: true on a replica (Patroni: applies only on the leader).
pub fn in_recovery(c: &mut Client) -> Result<bool> {
    Ok(query_one(c, "SELECT pg_catalog.pg_is_in_recovery()", &[])
        .context("checking whether this server is a replica (pg_is_in_recovery)")?
        .get(0))
}

/// The server's data directory and this session's backend PID (to tell whether the server runs
/// on this host). Needs superuser or pg_read_all_settings.
pub fn data_directory(c: &mut Client) -> Result<(String, i32)> {
    let row = query_one(
        c,
        "SELECT current_setting('data_directory'), pg_backend_pid()",
        &[],
    )?;
    Ok((row.get(0), row.get(1)))
}

/// When the postmaster started, in unix seconds (whole seconds, rounded down).
pub fn postmaster_start_epoch(c: &mut Client) -> Result<i64> {
    Ok(query_one(
        c,
        "SELECT floor(extract(epoch FROM pg_catalog.pg_postmaster_start_time()))::int8",
        &[],
    )?
    .get(0))
}

/// When the postmaster started (text): tells a restart done by a control plane (an RDS reboot)
/// from a stale "available".
pub fn postmaster_start_time(c: &mut Client) -> Result<String> {
    Ok(query_one(c, "SELECT pg_catalog.pg_postmaster_start_time()::text", &[])?.get(0))
}
