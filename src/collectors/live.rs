//! The 5-second "live" collectors (collectors.md §3.2): autovacuum_count, database_connections,
//! wait_events (generic specs), system_db_size (cached size) and the stateful database_transactions and
//! server_uptime. All count the whole cluster.

use super::generic::Spec;
use super::{CatalogCollector, CollectCtx, PayloadSink};
use crate::error::{Context, Result};
use serde_json::{Map, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub static AUTOVACUUM_COUNT: Spec = Spec {
    name: "autovacuum_count",
    sql: |_, _| {
        "SELECT count(*) FILTER (WHERE starts_with(query, 'autovacuum:'))::bigint AS count FROM pg_catalog.pg_stat_activity"
            .into()
    },
    fields: &["count"],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static DATABASE_CONNECTIONS: Spec = Spec {
    name: "database_connections",
    sql: |_, _| {
        "SELECT count(*) FILTER (WHERE state = 'active')::bigint AS active_connections, \
         count(*) FILTER (WHERE state = 'idle')::bigint AS idle_connections, \
         count(*) FILTER (WHERE state = 'idle in transaction')::bigint AS idle_in_transaction_connections, \
         count(*) FILTER (WHERE state = 'idle in transaction (aborted)')::bigint AS idle_in_transaction_aborted_connections, \
         count(*) FILTER (WHERE state IN ('active', 'idle', 'idle in transaction', 'idle in transaction (aborted)'))::bigint \
         AS total_connections FROM pg_catalog.pg_stat_activity"
            .into()
    },
    fields: &[
        "active_connections",
        "idle_connections",
        "idle_in_transaction_connections",
        "idle_in_transaction_aborted_connections",
        "total_connections",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

// Databases the agent may not size (no CONNECT privilege and no pg_read_all_stats) are left out
// instead of failing the whole sum every 5 s.
/// One row per database the agent may size; `pg_database_size()` only for those not in `$1`
/// (their cached size is still valid). Dropped databases simply stop appearing.
const DB_SIZE_SQL: &str = "SELECT d.oid, d.datistemplate, \
     CASE WHEN d.oid = ANY($1::oid[]) THEN NULL ELSE pg_catalog.pg_database_size(d.oid) END AS size \
     FROM pg_catalog.pg_database d \
     WHERE has_database_privilege(d.oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE')";

/// How long a computed database size is sent again before it is recomputed, at least.
/// `pg_database_size()` walks every file of every database (~0.5 s at 10,000 tables), while
/// the size moves slowly: it is computed at most once a minute and sent every 5 s.
pub const DB_SIZE_REFRESH: Duration = Duration::from_secs(60);

/// A slow computation is repeated less often: after [`DB_SIZE_COST_FACTOR`] times the time it
/// took (so it costs the server at most ~0.2 % of one backend's time), at most every
/// [`DB_SIZE_REFRESH_MAX`]. A small database (a few ms) stays at [`DB_SIZE_REFRESH`].
pub const DB_SIZE_COST_FACTOR: u32 = 500;
pub const DB_SIZE_REFRESH_MAX: Duration = Duration::from_secs(600);

/// The wait before the next computation of the size, given how long the last one took.
pub fn db_size_refresh(took: Duration) -> Duration {
    (took * DB_SIZE_COST_FACTOR).clamp(DB_SIZE_REFRESH, DB_SIZE_REFRESH_MAX)
}

/// `system_db_size`: the total size of the databases. Each database's size is kept and
/// recomputed on its own schedule: every [`DB_SIZE_REFRESH`], or less often when computing it
/// is slow ([`db_size_refresh`]); template databases (which nobody writes to in normal
/// operation) every [`DB_SIZE_REFRESH_MAX`]. A tick with nothing due runs no statement.
#[derive(Default)]
pub struct SystemDbSize {
    /// oid → (size, recompute after).
    sizes: std::collections::HashMap<u32, (i64, Instant)>,
    total: Option<i64>,
}

impl CatalogCollector for SystemDbSize {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let collected_at = SystemTime::now();
        let now = Instant::now();
        let due = self.total.is_none() || self.sizes.values().any(|(_, at)| *at <= now);
        if due {
            let valid: Vec<u32> = self
                .sizes
                .iter()
                .filter(|(_, (_, at))| *at > now)
                .map(|(oid, _)| *oid)
                .collect();
            let started = Instant::now();
            let rows = ctx
                .pg
                .query(DB_SIZE_SQL, &[&valid])
                .context("failed to query system_db_size")?;
            let took = started.elapsed();
            let mut sizes = std::collections::HashMap::with_capacity(rows.len());
            for r in &rows {
                let (oid, template, size): (u32, bool, Option<i64>) =
                    (r.get(0), r.get(1), r.get(2));
                let entry = match (size, self.sizes.get(&oid)) {
                    (Some(size), _) => {
                        let wait = if template {
                            DB_SIZE_REFRESH_MAX
                        } else {
                            db_size_refresh(took)
                        };
                        (size, Instant::now() + wait)
                    }
                    (None, Some(cached)) => *cached,
                    // Not sized and not cached (cannot happen: only cached oids are skipped).
                    (None, None) => continue,
                };
                sizes.insert(oid, entry);
            }
            self.total = Some(sizes.values().map(|(s, _)| *s).sum());
            self.sizes = sizes;
        }
        let mut m = Map::new();
        m.insert(
            "total_size_bytes".into(),
            Value::from(self.total.unwrap_or(0)),
        );
        one_row(out, collected_at, &Value::Object(m))
    }
}

/// Writes a one-row envelope.
fn one_row(out: &mut PayloadSink, collected_at: SystemTime, row: &Value) -> Result<bool> {
    out.begin(collected_at)?;
    out.begin_rows()?;
    out.value_row(row)?;
    out.end_rows()?;
    Ok(true)
}

pub static WAIT_EVENTS: Spec = Spec {
    name: "wait_events",
    sql: |_, _| {
        "WITH c AS (SELECT wait_event_type, count(*) AS n FROM pg_catalog.pg_stat_activity \
         WHERE wait_event_type IS NOT NULL GROUP BY wait_event_type), \
         t AS (SELECT w.name, w.ord, COALESCE(c.n, 0)::bigint AS current_count \
         FROM unnest(ARRAY['Activity', 'BufferPin', 'Client', 'Extension', 'IO', 'IPC', 'Lock', 'LWLock', 'Timeout']) \
         WITH ORDINALITY AS w(name, ord) LEFT JOIN c ON c.wait_event_type = w.name) \
         SELECT wait_event_type, current_count FROM (SELECT name AS wait_event_type, ord, current_count FROM t \
         UNION ALL SELECT 'TOTAL', 10, COALESCE(sum(current_count), 0)::bigint FROM t) x ORDER BY ord"
            .into()
    },
    fields: &["wait_event_type", "current_count"],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

/// `database_transactions`: the cluster-wide sum of `xact_commit` and the TPS since the previous
/// sample (agent clock); `tps` is omitted on the first run, after a decrease and when 0.
#[derive(Default)]
pub struct DatabaseTransactions {
    prev: Option<(i64, Instant)>,
}

impl CatalogCollector for DatabaseTransactions {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let collected_at = SystemTime::now();
        let now = Instant::now();
        let row = ctx
            .pg
            .query_one("SELECT COALESCE(sum(xact_commit), 0)::bigint AS server_xact_commits FROM pg_catalog.pg_stat_database", &[])
            .context("failed to query database_transactions")?;
        let count: i64 = row.get(0);
        let mut m = Map::new();
        m.insert("xact_commit".into(), Value::from(count));
        if let Some((pc, pt)) = self.prev {
            let secs = now.duration_since(pt).as_secs_f64();
            if count >= pc && secs > 0.0 {
                let tps = (count - pc) as f64 / secs;
                if tps != 0.0 {
                    m.insert("tps".into(), Value::from(tps));
                }
            }
        }
        self.prev = Some((count, now));
        one_row(out, collected_at, &Value::Object(m))
    }
}

const IDENTITY_TTL: Duration = Duration::from_secs(600);

/// `server_uptime`: uptime in minutes plus the cluster identity (system identifier, timeline),
/// cached for 10 minutes and dropped when the postmaster start time changes.
#[derive(Default)]
pub struct ServerUptime {
    /// (fetched at, Some((system_identifier, timeline_id)) or None when not permitted).
    identity: Option<(Instant, Option<(String, i64)>)>,
    last_start: Option<i64>,
    warned: bool,
}

impl ServerUptime {
    fn identity(&mut self, ctx: &CollectCtx<'_>) -> Option<(String, i64)> {
        if let Some((at, id)) = &self.identity {
            if at.elapsed() < IDENTITY_TTL {
                return id.clone();
            }
        }
        let id = match ctx.pg.query_one(
            "SELECT (pg_catalog.pg_control_system()).system_identifier, (pg_catalog.pg_control_checkpoint()).timeline_id::bigint",
            &[],
        ) {
            Ok(r) => {
                self.warned = false;
                Some(((r.get::<_, i64>(0) as u64).to_string(), r.get::<_, i64>(1)))
            }
            Err(e) => {
                if !self.warned {
                    log::warn!("server_uptime: cluster identity not available (continuing without it): {e}");
                    self.warned = true;
                }
                None
            }
        };
        self.identity = Some((Instant::now(), id.clone()));
        id
    }
}

impl CatalogCollector for ServerUptime {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let collected_at = SystemTime::now();
        let row = ctx
            .pg
            .query_one(
                "SELECT (EXTRACT(EPOCH FROM current_timestamp - pg_catalog.pg_postmaster_start_time()) / 60)::float8 AS uptime_minutes, \
                 EXTRACT(EPOCH FROM pg_catalog.pg_postmaster_start_time())::float8 AS postmaster_start_time",
                &[],
            )
            .context("failed to query server_uptime")?;
        let uptime: f64 = row.get(0);
        let start = row.get::<_, f64>(1).floor() as i64;
        if self.last_start.is_some_and(|s| s != start) {
            self.identity = None; // restarted (or failed over): re-read the identity now
        }
        self.last_start = Some(start);
        let id = self.identity(ctx);
        let mut m = Map::new();
        m.insert("uptime_minutes".into(), Value::from(uptime));
        if let Some((sysid, tli)) = id {
            m.insert("system_identifier".into(), Value::from(sysid));
            if tli != 0 {
                m.insert("timeline_id".into(), Value::from(tli));
            }
        }
        if start != 0 {
            let t = UNIX_EPOCH + Duration::from_secs(start.max(0) as u64);
            m.insert(
                "postmaster_start_time".into(),
                Value::from(crate::timefmt::utc_seconds(t)),
            );
        }
        one_row(out, collected_at, &Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_database_size_is_recomputed_less_often() {
        assert_eq!(db_size_refresh(Duration::from_millis(3)), DB_SIZE_REFRESH);
        assert_eq!(
            db_size_refresh(Duration::from_millis(480)),
            Duration::from_secs(240)
        );
        assert_eq!(db_size_refresh(Duration::from_secs(5)), DB_SIZE_REFRESH_MAX);
    }
}
