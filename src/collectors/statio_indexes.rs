//! `pg_statio_user_indexes` (collectors.md §3.4): pages through the view one batch per tick;
//! after the first full pass only indexes whose block counters changed (or that are new) are sent.

use super::rowmap::map_rows;
use super::{envelope, CatalogCollector, CollectCtx, CollectorSettings};
use crate::error::{Context, Result};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

const FIELDS: &[&str] = &[
    "relid",
    "indexrelid",
    "schemaname",
    "relname",
    "indexrelname",
    "idx_blks_read",
    "idx_blks_hit",
];

pub struct StatioUserIndexes {
    batch: i64,
    offset: i64,
    backfill_done: bool,
    seen: HashMap<u32, (i64, i64)>,
    /// Indexes met during the current pass; at the end of a pass the others (dropped) are forgotten.
    this_pass: HashSet<u32>,
}

impl StatioUserIndexes {
    pub fn new(s: &CollectorSettings) -> StatioUserIndexes {
        StatioUserIndexes {
            batch: s.int("backfill_batch_size", 2000).max(0),
            offset: 0,
            backfill_done: false,
            seen: HashMap::new(),
            this_pass: HashSet::new(),
        }
    }
}

impl CatalogCollector for StatioUserIndexes {
    fn collect(&mut self, ctx: &CollectCtx<'_>) -> Result<Option<Value>> {
        let collected_at = SystemTime::now();
        let rows = ctx
            .pg
            .query(
                "SELECT * FROM pg_catalog.pg_statio_user_indexes ORDER BY indexrelid LIMIT $1 OFFSET $2",
                &[&self.batch, &self.offset],
            )
            .context("failed to query pg_statio_user_indexes")?;
        if rows.is_empty() {
            self.backfill_done = true;
            self.offset = 0;
            let pass = std::mem::take(&mut self.this_pass);
            self.seen.retain(|id, _| pass.contains(id));
            return Ok(None);
        }
        self.offset += self.batch;
        let mapped =
            map_rows(&rows, FIELDS, &[]).context("failed to read pg_statio_user_indexes")?;
        let mut emit = Vec::new();
        for row in mapped {
            let id = row
                .get("indexrelid")
                .and_then(Value::as_u64)
                .map(|v| v as u32);
            if let Some(id) = id {
                self.this_pass.insert(id);
            }
            let read = row
                .get("idx_blks_read")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let hit = row.get("idx_blks_hit").and_then(Value::as_i64).unwrap_or(0);
            if !self.backfill_done {
                if let Some(id) = id {
                    self.seen.insert(id, (read, hit));
                }
                emit.push(row);
                continue;
            }
            let Some(id) = id else { continue };
            if self.seen.get(&id) != Some(&(read, hit)) {
                self.seen.insert(id, (read, hit));
                emit.push(row);
            }
        }
        if emit.is_empty() {
            return Ok(None);
        }
        Ok(Some(envelope(collected_at, emit)))
    }
}
