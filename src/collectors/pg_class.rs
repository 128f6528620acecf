//! `pg_class` (collectors.md §3.4): paged backfill of tables, indexes and matviews, then every
//! minute only the tables (auto)vacuumed/analyzed since the last poll, with a full rescan every
//! 30th tick. Relations under an AccessExclusiveLock are skipped. State: an offset and a
//! timestamp (nothing per relation).

use super::catalog::has_column;
use super::rowmap::{not_exclusively_locked, table_of};
use super::{stream_rows, CatalogCollector, CollectCtx, CollectorSettings, PayloadSink};
use crate::error::{Context, Result};
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
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let collected_at = SystemTime::now();
        let base = select(has_column(ctx.server, "pg_class.relallfrozen", 18));
        let all_where = format!(
            "WHERE c.relkind IN ('r', 'i', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND {} AND {}",
            not_exclusively_locked("c.oid"),
            not_exclusively_locked(&table_of("c.oid"))
        );
        let omit = &["relallfrozen"];
        let n = if !self.backfill_done {
            let sql =
                format!("{base} {all_where} ORDER BY n.nspname, c.relname LIMIT $1 OFFSET $2");
            let (n, _) = stream_rows(
                ctx,
                out,
                collected_at,
                &sql,
                &[&self.batch, &self.offset],
                FIELDS,
                omit,
            )
            .context("failed to query pg_class backfill")?;
            if n == 0 {
                self.backfill_done = true;
                self.last_poll = Some(collected_at);
                return Ok(false);
            }
            self.offset += self.batch;
            n
        } else {
            self.ticks += 1;
            let since = self.last_poll.unwrap_or(collected_at);
            let (n, _) = if self.ticks % FULL_RESCAN_EVERY == 0 {
                let sql = format!("{base} {all_where} ORDER BY n.nspname, c.relname");
                stream_rows(ctx, out, collected_at, &sql, &[], FIELDS, omit)
            } else {
                let sql = format!(
                    "{base} JOIN pg_catalog.pg_stat_user_tables pst ON n.nspname = pst.schemaname AND c.relname = pst.relname \
                     WHERE c.relkind = 'r' AND GREATEST(pst.last_analyze, pst.last_autoanalyze, pst.last_vacuum, pst.last_autovacuum) > $1 \
                     AND {} ORDER BY n.nspname, c.relname",
                    not_exclusively_locked("c.oid")
                );
                stream_rows(ctx, out, collected_at, &sql, &[&since], FIELDS, omit)
            }
            .context("failed to query pg_class")?;
            self.last_poll = Some(collected_at);
            n
        };
        Ok(n > 0)
    }
}
