//! Statements for applying configuration (used by `apply`). Parameter names reach SQL only
//! after they were found in `pg_settings`; values only ever as quoted literals
//! (`pg::quote_literal`). ALTER SYSTEM cannot run in a transaction block, so each one is a
//! single auto-commit simple query.

use crate::error::{Context, Result};
use crate::pg::{self, quote_ident, quote_literal};
use postgres::Client;

/// `name` as an identifier for ALTER SYSTEM: each dot-separated part bare when it is a plain
/// lower-case identifier, else double-quoted (`"TimeZone"`, `pg_stat_statements.max`).
pub fn sql_name(name: &str) -> String {
    name.split('.')
        .map(|part| {
            let plain = part
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if plain {
                part.to_string()
            } else {
                quote_ident(part)
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

pub fn alter_set(c: &mut Client, name: &str, value: &str) -> Result<()> {
    pg::simple(
        c,
        &format!(
            "ALTER SYSTEM SET {} = {}",
            sql_name(name),
            quote_literal(value)
        ),
    )
}

pub fn alter_reset(c: &mut Client, name: &str) -> Result<()> {
    pg::simple(c, &format!("ALTER SYSTEM RESET {}", sql_name(name)))
}

fn denied(e: &crate::error::Error) -> bool {
    e.message().contains("SQLSTATE 42501")
}

/// The entries of `postgresql.auto.conf` as PostgreSQL parses them (name, value), last one
/// wins; None when `pg_file_settings` is not readable by the agent's role.
pub fn auto_conf_entries(c: &mut Client) -> Result<Option<Vec<(String, String)>>> {
    match pg::query(
        c,
        "SELECT name, setting FROM pg_catalog.pg_file_settings \
         WHERE sourcefile LIKE '%/postgresql.auto.conf' AND name IS NOT NULL ORDER BY seqno",
        &[],
    ) {
        Ok(rows) => Ok(Some(
            rows.iter()
                .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
                .collect(),
        )),
        Err(e) if denied(&e) => Ok(None),
        Err(e) => Err(e.context("reading pg_file_settings")),
    }
}

/// Entries of `postgresql.auto.conf` PostgreSQL reports as in effect (`applied`), for values
/// `pg_settings` shows differently (`archive_command` shows `(disabled)` without archiving);
/// None when `pg_file_settings` is not readable.
pub fn auto_conf_applied(c: &mut Client) -> Result<Option<Vec<(String, String)>>> {
    match pg::query(
        c,
        "SELECT name, setting FROM pg_catalog.pg_file_settings \
         WHERE sourcefile LIKE '%/postgresql.auto.conf' AND name IS NOT NULL AND applied AND error IS NULL",
        &[],
    ) {
        Ok(rows) => Ok(Some(rows.iter().map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default())).collect())),
        Err(e) if denied(&e) => Ok(None),
        Err(e) => Err(e.context("reading pg_file_settings")),
    }
}

/// Errors PostgreSQL found in configuration files for `names`, or unattributed ones (syntax)
/// in `postgresql.auto.conf`, as "file:line: name: error"; None when not readable.
pub fn file_errors(c: &mut Client, names: &[String]) -> Result<Option<Vec<String>>> {
    match pg::query(
        c,
        "SELECT sourcefile, sourceline, coalesce(name, ''), error FROM pg_catalog.pg_file_settings \
         WHERE error IS NOT NULL AND (name = ANY($1) OR (name IS NULL AND sourcefile LIKE '%/postgresql.auto.conf'))",
        &[&names],
    ) {
        Ok(rows) => Ok(Some(
            rows.iter()
                .map(|r| {
                    format!(
                        "{}:{}: {}: {}",
                        r.get::<_, Option<String>>(0).unwrap_or_default(),
                        r.get::<_, Option<i32>>(1).unwrap_or(0),
                        r.get::<_, String>(2),
                        r.get::<_, String>(3)
                    )
                })
                .collect(),
        )),
        Err(e) if denied(&e) => Ok(None),
        Err(e) => Err(e.context("reading pg_file_settings")),
    }
}

/// The server's data directory, when the role may see it.
pub fn data_directory(c: &mut Client) -> Result<Option<String>> {
    let rows = pg::query(
        c,
        "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory'",
        &[],
    )
    .context("reading data_directory")?;
    Ok(rows
        .first()
        .and_then(|r| r.get::<_, Option<String>>(0))
        .filter(|s| !s.is_empty()))
}

/// `pg_postmaster_start_time()` as text: changes exactly when PostgreSQL restarted.
pub fn postmaster_start(c: &mut Client) -> Result<String> {
    let r = pg::query_one(c, "SELECT pg_catalog.pg_postmaster_start_time()::text", &[])
        .context("reading pg_postmaster_start_time()")?;
    Ok(r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_only_when_needed() {
        assert_eq!(sql_name("work_mem"), "work_mem");
        assert_eq!(sql_name("TimeZone"), "\"TimeZone\"");
        assert_eq!(sql_name("pg_stat_statements.max"), "pg_stat_statements.max");
        assert_eq!(sql_name("x\"; DROP"), "\"x\"\"; DROP\"");
    }
}
