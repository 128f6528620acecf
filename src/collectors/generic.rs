//! The generic collector (collectors.md §2.6.2): one query → rows mapped by name, streamed into
//! the `{"collected_at", "rows"}` envelope, with optional skip-unchanged and "send nothing when empty".
//! Each collector is a [`Spec`]: its query (built from the probed server facts), its field list
//! and its gates.

use super::skip::SkipUnchanged;
use super::{stream_rows, CatalogCollector, CollectCtx, PayloadSink, ServerInfo};
use crate::error::{Context, Result};
use std::time::SystemTime;

pub struct Spec {
    pub name: &'static str,
    /// The query for this server; `param` is the collector's numeric option (e.g. `category_limit`).
    pub sql: fn(&ServerInfo, i64) -> String,
    pub fields: &'static [&'static str],
    pub omitempty: &'static [&'static str],
    /// Skip-unchanged (§2.6.3) on the rows.
    pub dedup: bool,
    /// Send `"rows":[]` when the query returns nothing (false: send nothing).
    pub send_empty: bool,
    /// Capability the probe must have found (e.g. `view:pg_stat_io`); without it the collector
    /// returns "nothing" without querying.
    pub requires: Option<&'static str>,
    /// Server major below which the collector returns "nothing" (used when no probe ran).
    pub min_major: u32,
}

/// Whether a gated collector may run on this server: the probed capability decides; the major
/// version is the fallback when no probe result is available.
pub fn available(server: &ServerInfo, requires: Option<&str>, min_major: u32) -> bool {
    match requires {
        Some(cap) if !server.caps.is_empty() => server.has(cap),
        _ => server.major() == 0 || server.major() >= min_major,
    }
}

pub struct Generic {
    spec: &'static Spec,
    param: i64,
    skip: SkipUnchanged,
}

impl Generic {
    pub fn new(spec: &'static Spec, param: i64) -> Generic {
        Generic {
            spec,
            param,
            skip: SkipUnchanged::default(),
        }
    }
}

impl CatalogCollector for Generic {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let s = self.spec;
        if !available(ctx.server, s.requires, s.min_major) {
            return Ok(false);
        }
        let collected_at = SystemTime::now();
        let sql = (s.sql)(ctx.server, self.param);
        let (n, hash) = stream_rows(ctx, out, collected_at, &sql, &[], s.fields, s.omitempty)
            .with_context(|| format!("failed to query {}", s.name))?;
        if n == 0 && !s.send_empty {
            return Ok(false);
        }
        if s.dedup && !self.skip.should_send_hash(hash) {
            return Ok(false);
        }
        Ok(true)
    }
}
