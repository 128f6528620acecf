//! `pg_class` (collectors.md §3.4): paged backfill of tables, indexes and matviews, then every
//! minute only the tables (auto)vacuumed/analyzed since the last poll, with a full rescan every
//! 30th tick. Relations under an AccessExclusiveLock are skipped.

use super::catalog::has_column;
use super::rowmap::{map_rows, not_exclusively_locked, table_of};
use super::{envelope, CatalogCollector, CollectCtx, CollectorSettings};
use crate::error::{Context, Result};
use serde_json::Value;
use std::time::SystemTime;

const FIELDS: &[&str] = &[
    "oid",
    "schemaname",
    "relname",
    "relkind",
    "reltuples",
    "relpages",
    "relfrozenxid",
    "relfrozenxid_age",
    "relminmxid",
    "relminmxid_age",
    "reloptions",
    "access_method",
    "relallvisible",
    "relallfrozen",
    "relpersistence",
    "relispartition",
    "relhassubclass",
    "reltoastrelid",
    "reltablespace",
];
const FULL_RESCAN_EVERY: u64 = 30;

pub struct PgClass {
    batch: i64,
    offset: i64,
    backfill_done: bool,
    last_poll: Option<SystemTime>,
    ticks: u64,
}

impl PgClass {
    pub fn new(s: &CollectorSettings) -> PgClass {
        PgClass {
            batch: s.int("backfill_batch_size", 500).max(0),
            offset: 0,
            backfill_done: false,
            last_poll: None,
            ticks: 0,
        }
    }
}

fn select(relallfrozen: bool) -> String {
    format!(
        "SELECT c.oid, n.nspname AS schemaname, c.relname, c.relkind::text AS relkind, c.reltuples, c.relpages, \
         c.relfrozenxid, age(c.relfrozenxid)::bigint AS relfrozenxid_age, c.relminmxid, \
         mxid_age(c.relminmxid)::bigint AS relminmxid_age, c.reloptions::text[] AS reloptions, am.amname::text AS access_method, \
         c.relallvisible, {} AS relallfrozen, c.relpersistence::text AS relpersistence, c.relispartition, \
         c.relhassubclass, c.reltoastrelid, c.reltablespace \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam",
        if relallfrozen { "c.relallfrozen" } else { "NULL::integer" }
    )
}

impl CatalogCollector for PgClass {
    fn collect(&mut self, ctx: &CollectCtx<'_>) -> Result<Option<Value>> {
        let collected_at = SystemTime::now();
        let base = select(has_column(ctx.server, "pg_class.relallfrozen", 18));
        let all_where = format!(
            "WHERE c.relkind IN ('r', 'i', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND {} AND {}",
            not_exclusively_locked("c.oid"),
            not_exclusively_locked(&table_of("c.oid"))
        );
        let rows = if !self.backfill_done {
            let sql =
                format!("{base} {all_where} ORDER BY n.nspname, c.relname LIMIT $1 OFFSET $2");
            let rows = ctx
                .pg
                .query(&sql, &[&self.batch, &self.offset])
                .context("failed to query pg_class backfill")?;
            if rows.is_empty() {
                self.backfill_done = true;
                self.last_poll = Some(collected_at);
                return Ok(None);
            }
            self.offset += self.batch;
            rows
        } else {
            self.ticks += 1;
            let since = self.last_poll.unwrap_or(collected_at);
            let rows = if self.ticks % FULL_RESCAN_EVERY == 0 {
                ctx.pg.query(&format!("{base} {all_where} ORDER BY n.nspname, c.relname"), &[])
            } else {
                let sql = format!(
                    "{base} JOIN pg_catalog.pg_stat_user_tables pst ON n.nspname = pst.schemaname AND c.relname = pst.relname \
                     WHERE c.relkind = 'r' AND GREATEST(pst.last_analyze, pst.last_autoanalyze, pst.last_vacuum, pst.last_autovacuum) > $1 \
                     AND {} ORDER BY n.nspname, c.relname",
                    not_exclusively_locked("c.oid")
                );
                ctx.pg.query(&sql, &[&since])
            }
            .context("failed to query pg_class")?;
            self.last_poll = Some(collected_at);
            rows
        };
        if rows.is_empty() {
            return Ok(None);
        }
        let rows = map_rows(&rows, FIELDS, &["relallfrozen"]).context("failed to read pg_class")?;
        Ok(Some(envelope(collected_at, rows)))
    }
}
