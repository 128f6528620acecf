//! `pg_statio_user_indexes` (collectors.md §3.4): pages through the view one batch per tick;
//! after the first full pass only indexes whose block counters changed (or that are new) are sent.
//! State: two counters per index (12 bytes of values) and the ids met in the current pass; both
//! are bounded by the number of indexes and forgotten when an index is dropped.

use super::rowmap::map_row;
use super::{CatalogCollector, CollectCtx, CollectorSettings, PayloadSink};
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
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let collected_at = SystemTime::now();
        out.begin(collected_at)?;
        out.begin_rows()?;
        let mut emitted = 0u64;
        let n = ctx
            .pg
            .for_each_row(
                "SELECT * FROM pg_catalog.pg_statio_user_indexes ORDER BY indexrelid LIMIT $1 OFFSET $2",
                &[&self.batch, &self.offset],
                |r| {
                    let row = map_row(&r, FIELDS, &[])?;
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
                    let emit = match id {
                        _ if !self.backfill_done => {
                            if let Some(id) = id {
                                self.seen.insert(id, (read, hit));
                            }
                            true
                        }
                        None => false,
                        Some(id) => self.seen.insert(id, (read, hit)) != Some((read, hit)),
                    };
                    if emit {
                        emitted += 1;
                        out.value_row(&row)?;
                    }
                    Ok(())
                },
            )
            .context("failed to query pg_statio_user_indexes")?;
        if n == 0 {
            self.backfill_done = true;
            self.offset = 0;
            let pass = std::mem::take(&mut self.this_pass);
            self.seen.retain(|id, _| pass.contains(id));
            return Ok(false);
        }
        self.offset += self.batch;
        Ok(emitted > 0)
    }
}
