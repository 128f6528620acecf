//! Catalog collectors: each reads one PostgreSQL view or catalog and writes its rows, as they
//! arrive, into a `platform` payload sink that encodes them straight into the compressed body
//! sent to `POST /api/v1/agent/<name>` (no whole-payload value is ever built).
//!
//! Adding a collector = one new file in this folder plus one line in [`registry::REGISTRY`].

pub mod catalog;
pub mod ddl;
pub mod generic;
pub mod live;
pub mod pg_class;
pub mod pg_stats;
pub mod pgss;
pub mod probe;
pub mod redact;
pub mod registry;
pub mod rowmap;
pub mod skip;
pub mod statio_indexes;
pub mod stats_views;

use crate::error::Result;
use crate::pg::{Pg, ServerVersion};
pub use crate::platform::stream::PayloadSink;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// What collectors may know about the server: its version and what the capability probe found
/// (views, functions, columns, extension versions). Re-probed after every reconnect/failover.
#[derive(Clone, Debug, Default)]
pub struct ServerInfo {
    pub version: Option<ServerVersion>,
    /// Probed capabilities, e.g. `view:pg_stat_io`, `fn:pg_stat_get_wal()`,
    /// `col:pg_stat_statements.toplevel`, `ext:pg_stat_statements=1.10`.
    pub caps: BTreeSet<String>,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        self.version.map(|v| v.major).unwrap_or(0)
    }
    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }
}

/// Everything a collector gets for one run.
pub struct CollectCtx<'a> {
    pub pg: &'a Pg,
    pub server: &'a ServerInfo,
}

/// One catalog collector. `collect_into` writes this tick's payload into `out` and returns
/// `Ok(false)` for "nothing to send this tick" (the sink is then dropped).
/// Collector state (dedup hashes, deltas) lives in `self`; runs of one collector never overlap.
pub trait CatalogCollector: Send {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool>;

    /// The payload as a JSON value: streamed exactly as for sending, then parsed back. For
    /// tests and tools; the daemon sends the streamed bytes.
    fn collect(&mut self, ctx: &CollectCtx<'_>) -> Result<Option<Value>> {
        let mut sink = PayloadSink::new(false);
        if !self.collect_into(ctx, &mut sink)? {
            return Ok(None);
        }
        let p = sink.finish()?;
        serde_json::from_slice(&p.body)
            .map(Some)
            .map_err(|e| crate::error::Error::other(format!("re-reading a streamed payload: {e}")))
    }
}

/// Options of one collector after config parsing (see `config::collectors`).
pub use crate::config::collectors::CollectorSettings;

/// A registry entry: the static facts of a collector and how to build it.
pub struct CollectorDef {
    /// Name = endpoint segment.
    pub name: &'static str,
    pub default_interval: Duration,
    /// Runs once in the bootstrap pass (protocol.md §6.7).
    pub bootstrap: bool,
    /// Accepted in the `collectors:` config (`ddl` and `pg_index_inventory` are not, §5.3).
    pub configurable: bool,
    pub build: fn(&CollectorSettings) -> Box<dyn CatalogCollector>,
}

/// A collector ready to schedule.
pub struct Built {
    pub def: &'static CollectorDef,
    pub interval: Duration,
    pub collector: Box<dyn CatalogCollector>,
}

/// Builds the enabled collectors in registry order. `forced_off` lists names an adapter
/// disables (Aurora: `pg_stat_wal`, `pg_stat_wal_receiver`).
pub fn build_enabled(
    cfg: &crate::config::collectors::CollectorsConfig,
    forced_off: &[&str],
) -> Vec<Built> {
    registry::REGISTRY
        .iter()
        .filter(|d| !forced_off.contains(&d.name))
        .filter_map(|d| {
            let s = if d.configurable {
                cfg.settings(d.name)
            } else {
                CollectorSettings::default()
            };
            if !s.enabled {
                return None;
            }
            let interval = if s.interval_seconds == 0 {
                d.default_interval
            } else {
                Duration::from_secs(s.interval_seconds).max(d.default_interval)
            };
            Some(Built {
                def: d,
                interval,
                collector: (d.build)(&s),
            })
        })
        .collect()
}

/// Streams a query's rows as the generic envelope `{"collected_at", "rows":[…]}`, each row mapped
/// onto `fields` (collectors.md §2.6.4). Returns the row count and the hash of the rows' bytes.
pub fn stream_rows(
    ctx: &CollectCtx<'_>,
    out: &mut PayloadSink,
    collected_at: std::time::SystemTime,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    fields: &[&str],
    omitempty: &[&str],
) -> Result<(u64, u64)> {
    out.begin(collected_at)?;
    out.begin_rows()?;
    let n = ctx
        .pg
        .for_each_row(sql, params, |r| out.pg_row(&r, fields, omitempty))?;
    let h = out.end_rows()?;
    Ok((n, h))
}
