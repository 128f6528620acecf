//! Catalog and activity collectors with their own queries (collectors.md §3.3–§3.4): pg_database,
//! pg_index, pg_index_inventory, pg_attribute, pg_constraint, pg_type, pg_locks,
//! pg_prepared_xacts, pg_stat_activity and the sampled pg_stat_user_tables/_indexes.
//! Per-relation catalog reads skip relations under an AccessExclusiveLock (held or awaited).

use super::generic::Spec;
use super::rowmap::{not_exclusively_locked, table_of};
use super::ServerInfo;

const SYSTEM_SCHEMAS: &str = "('pg_catalog', 'information_schema', 'pg_toast')";

/// Whether the probed server has `view.column` (fallback: the major version that added it).
pub fn has_column(server: &ServerInfo, view_col: &str, since_major: u32) -> bool {
    if server.caps.iter().any(|c| c.starts_with("col:")) {
        server.has(&format!("col:{view_col}"))
    } else {
        server.major() >= since_major
    }
}

pub static PG_DATABASE: Spec = Spec {
    name: "pg_database",
    sql: |_, _| {
        "SELECT oid, datname, datistemplate, datfrozenxid, age(datfrozenxid)::bigint AS datfrozenxid_age, \
         datminmxid, mxid_age(datminmxid)::bigint AS datminmxid_age FROM pg_catalog.pg_database"
            .into()
    },
    fields: &[
        "oid",
        "datname",
        "datistemplate",
        "datfrozenxid",
        "datfrozenxid_age",
        "datminmxid",
        "datminmxid_age",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_INDEX: Spec = Spec {
    name: "pg_index",
    sql: |_, _| {
        format!(
            "SELECT n.nspname AS schemaname, c.relname AS indexname, c.reltuples::float8 AS reltuples, c.relpages, \
             i.indisvalid, i.indisready, i.indislive, i.indimmediate, i.indisclustered, i.indisreplident, i.indcheckxmin \
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             JOIN pg_catalog.pg_class t ON t.oid = i.indrelid JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} AND {} AND {} ORDER BY n.nspname, c.relname",
            not_exclusively_locked("i.indexrelid"),
            not_exclusively_locked("i.indrelid")
        )
    },
    fields: &[
        "schemaname",
        "indexname",
        "reltuples",
        "relpages",
        "indisvalid",
        "indisready",
        "indislive",
        "indimmediate",
        "indisclustered",
        "indisreplident",
        "indcheckxmin",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: false,
    requires: None,
    min_major: 0,
};

pub static PG_INDEX_INVENTORY: Spec = Spec {
    name: "pg_index_inventory",
    sql: |server, _| {
        let nnd = if has_column(server, "pg_index.indnullsnotdistinct", 15) {
            "i.indnullsnotdistinct"
        } else {
            "NULL::boolean"
        };
        format!(
            "SELECT n.nspname AS schemaname, t.relname AS tablename, c.relname AS indexname, i.indexrelid, i.indrelid, \
             i.indnatts::bigint AS indnatts, i.indnkeyatts::bigint AS indnkeyatts, i.indisunique, \
             {nnd} AS indnullsnotdistinct, i.indisprimary, i.indisexclusion, \
             pg_catalog.pg_get_indexdef(i.indexrelid) AS indexdef, i.indpred IS NOT NULL AS is_partial, \
             pg_catalog.pg_get_expr(i.indpred, i.indrelid) AS indpred_sql, i.indkey::int2[] AS indkey, \
             i.indoption::int2[] AS indoption, i.indclass::oid[] AS indclass, i.indcollation::oid[] AS indcollation, \
             pg_catalog.pg_get_expr(i.indexprs, i.indrelid) AS indexprs_sql \
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             JOIN pg_catalog.pg_class t ON t.oid = i.indrelid JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} AND {} AND {} ORDER BY n.nspname, t.relname, c.relname",
            not_exclusively_locked("i.indexrelid"),
            not_exclusively_locked("i.indrelid")
        )
    },
    fields: &[
        "schemaname",
        "tablename",
        "indexname",
        "indexrelid",
        "indrelid",
        "indnatts",
        "indnkeyatts",
        "indisunique",
        "indnullsnotdistinct",
        "indisprimary",
        "indisexclusion",
        "indexdef",
        "is_partial",
        "indpred_sql",
        "indkey",
        "indoption",
        "indclass",
        "indcollation",
        "indexprs_sql",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_ATTRIBUTE: Spec = Spec {
    name: "pg_attribute",
    sql: |_, _| {
        format!(
            "SELECT a.attrelid, a.attname, a.atttypid::bigint AS atttypid, a.attlen::bigint AS attlen, \
             a.attnum::bigint AS attnum, a.attstorage::text AS attstorage, a.attnotnull, \
             a.attstattarget::bigint AS attstattarget, a.attalign::text AS attalign, a.atttypmod::bigint AS atttypmod \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} AND c.relkind IN ('r', 'i') AND a.attnum > 0 \
             AND NOT a.attisdropped AND {} AND {} ORDER BY a.attrelid, a.attnum",
            not_exclusively_locked("c.oid"),
            not_exclusively_locked(&table_of("c.oid"))
        )
    },
    fields: &[
        "attrelid",
        "attname",
        "atttypid",
        "attlen",
        "attnum",
        "attstorage",
        "attcompression",
        "attnotnull",
        "attstattarget",
        "attalign",
        "atttypmod",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_CONSTRAINT: Spec = Spec {
    name: "pg_constraint",
    sql: |_, _| {
        format!(
            "SELECT c.oid, c.conname, c.contype::text AS contype, c.conrelid, c.conindid, c.confrelid, c.conkey, \
             c.confkey, c.condeferrable, c.condeferred, c.convalidated \
             FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class rel ON rel.oid = c.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = rel.relnamespace \
             WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} AND c.contype IN ('p', 'u', 'f', 'x') \
             ORDER BY n.nspname, rel.relname, c.conname"
        )
    },
    fields: &[
        "oid",
        "conname",
        "contype",
        "conrelid",
        "conindid",
        "confrelid",
        "conkey",
        "confkey",
        "condeferrable",
        "condeferred",
        "convalidated",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_TYPE: Spec = Spec {
    name: "pg_type",
    sql: |_, _| {
        format!(
            "SELECT t.oid, t.typname, t.typnamespace, t.typlen::bigint AS typlen, t.typbyval, t.typalign::text AS typalign, \
             t.typstorage::text AS typstorage, t.typcategory::text AS typcategory, t.typtype::text AS typtype, \
             t.typbasetype, t.typelem, t.typrelid \
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
             WHERE t.typisdefined AND (n.nspname NOT IN {SYSTEM_SCHEMAS} OR t.oid < 10000) ORDER BY n.nspname, t.typname"
        )
    },
    fields: &[
        "oid",
        "typname",
        "typnamespace",
        "typlen",
        "typbyval",
        "typalign",
        "typstorage",
        "typcategory",
        "typtype",
        "typbasetype",
        "typelem",
        "typrelid",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_LOCKS: Spec = Spec {
    name: "pg_locks",
    sql: |_, _| {
        "WITH pairs AS (SELECT w.pid AS blocked, b.pid AS blocker FROM pg_catalog.pg_locks w, \
         LATERAL unnest(pg_catalog.pg_blocking_pids(w.pid)) AS b(pid) WHERE NOT w.granted), \
         pids AS (SELECT blocked AS pid FROM pairs UNION SELECT blocker FROM pairs) \
         SELECT l.*, age(l.transactionid)::bigint AS transactionid_age FROM pg_catalog.pg_locks l \
         WHERE l.pid IN (SELECT pid FROM pids) \
         AND l.database IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))"
            .into()
    },
    fields: &[
        "locktype",
        "database",
        "relation",
        "page",
        "tuple",
        "virtualxid",
        "transactionid",
        "transactionid_age",
        "classid",
        "objid",
        "objsubid",
        "virtualtransaction",
        "pid",
        "mode",
        "granted",
        "fastpath",
        "waitstart",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_PREPARED_XACTS: Spec = Spec {
    name: "pg_prepared_xacts",
    sql: |_, _| {
        "SELECT p.*, age(p.transaction)::bigint AS transaction_age FROM pg_catalog.pg_prepared_xacts p \
         WHERE p.database = current_database() ORDER BY p.gid"
            .into()
    },
    fields: &[
        "transaction",
        "transaction_age",
        "gid",
        "prepared",
        "owner",
        "database",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_ACTIVITY: Spec = Spec {
    name: "pg_stat_activity",
    sql: |server, _| {
        let leader = if has_column(server, "pg_stat_activity.leader_pid", 13) {
            "leader_pid"
        } else {
            "NULL::integer"
        };
        let qid = if has_column(server, "pg_stat_activity.query_id", 14) {
            "CASE WHEN query_id IS NULL THEN NULL ELSE format('%s_%s_%s', query_id, usesysid, datid) END"
        } else {
            "NULL::text"
        };
        format!(
            "SELECT datid, datname, pid, {leader} AS leader_pid, usesysid, usename, application_name, client_addr, \
             client_hostname, client_port, backend_start, xact_start, query_start, state_change, wait_event_type, \
             wait_event, state, backend_xid, age(backend_xid)::bigint AS backend_xid_age, backend_xmin, \
             age(backend_xmin)::bigint AS backend_xmin_age, {qid} AS query_id, backend_type \
             FROM pg_catalog.pg_stat_activity WHERE datname = current_database()"
        )
    },
    fields: &[
        "datid",
        "datname",
        "pid",
        "leader_pid",
        "usesysid",
        "usename",
        "application_name",
        "client_addr",
        "client_hostname",
        "client_port",
        "backend_start",
        "xact_start",
        "query_start",
        "state_change",
        "wait_event_type",
        "wait_event",
        "state",
        "backend_xid",
        "backend_xid_age",
        "backend_xmin",
        "backend_xmin_age",
        "query_id",
        "backend_type",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

/// The top `limit` rows of `view` by each ordering, deduplicated. The view is read once (a
/// materialized CTE): each of its rows calls the statistics functions, which dominates the cost
/// with thousands of relations, so three scans cost three times as much.
fn sampled(view: &str, samples: &[(&str, &str)], limit: i64) -> String {
    let limit = limit.max(0);
    let parts = samples
        .iter()
        .map(|(filter, order)| {
            format!("(SELECT * FROM v {filter} ORDER BY {order} DESC LIMIT {limit})")
        })
        .collect::<Vec<_>>()
        .join(" UNION ");
    format!("WITH v AS MATERIALIZED (SELECT * FROM pg_catalog.{view}) {parts}")
}

pub static PG_STAT_USER_TABLES: Spec = Spec {
    name: "pg_stat_user_tables",
    sql: |_, limit| {
        sampled(
            "pg_stat_user_tables",
            &[
                (
                    "",
                    "COALESCE(n_tup_ins, 0) + COALESCE(n_tup_upd, 0) + COALESCE(n_tup_del, 0)",
                ),
                ("", "COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0)"),
                ("", "COALESCE(n_dead_tup, 0)"),
            ],
            limit,
        )
    },
    fields: &[
        "relid",
        "schemaname",
        "relname",
        "seq_scan",
        "last_seq_scan",
        "seq_tup_read",
        "idx_scan",
        "last_idx_scan",
        "idx_tup_fetch",
        "n_tup_ins",
        "n_tup_upd",
        "n_tup_del",
        "n_tup_hot_upd",
        "n_tup_newpage_upd",
        "n_live_tup",
        "n_dead_tup",
        "n_mod_since_analyze",
        "n_ins_since_vacuum",
        "last_vacuum",
        "last_autovacuum",
        "last_analyze",
        "last_autoanalyze",
        "vacuum_count",
        "autovacuum_count",
        "analyze_count",
        "autoanalyze_count",
        "total_vacuum_time",
        "total_autovacuum_time",
        "total_analyze_time",
        "total_autoanalyze_time",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_USER_INDEXES: Spec = Spec {
    name: "pg_stat_user_indexes",
    sql: |_, limit| {
        sampled(
            "pg_stat_user_indexes",
            &[
                ("", "COALESCE(idx_scan, 0)"),
                ("", "COALESCE(idx_tup_read, 0)"),
                (
                    "WHERE COALESCE(idx_scan, 0) = 0",
                    "COALESCE(idx_tup_read, 0)",
                ),
            ],
            limit,
        )
    },
    fields: &[
        "relid",
        "indexrelid",
        "schemaname",
        "relname",
        "indexrelname",
        "idx_scan",
        "last_idx_scan",
        "idx_tup_read",
        "idx_tup_fetch",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};
