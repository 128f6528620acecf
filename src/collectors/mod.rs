//! Catalog collectors: each reads one PostgreSQL view or catalog and produces plain data (a JSON
//! value); `platform` encodes and sends it to `POST /api/v1/agent/<name>`.
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
pub mod registry;
pub mod rowmap;
pub mod skip;
pub mod statio_indexes;
pub mod stats_views;

use crate::error::Result;
use crate::pg::{Pg, ServerVersion};
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

/// One catalog collector. `collect` returns `Ok(None)` for "nothing to send this tick".
/// Collector state (dedup hashes, deltas) lives in `self`; runs of one collector never overlap.
pub trait CatalogCollector: Send {
    fn collect(&mut self, ctx: &CollectCtx<'_>) -> Result<Option<Value>>;
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

/// The generic catalog envelope `{"collected_at": ..., "rows": [...]}`.
pub fn envelope(collected_at: std::time::SystemTime, rows: Vec<Value>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(
        "collected_at".into(),
        Value::from(crate::timefmt::utc_nanos(collected_at)),
    );
    m.insert("rows".into(), Value::Array(rows));
    Value::Object(m)
}
