//! Cumulative-statistics views (collectors.md §3.3): "all columns of V", mapped by name, so each
//! server version's extra columns are dropped and missing ones are `null`.

use super::generic::Spec;
use super::ServerInfo;

macro_rules! all_of {
    ($view:literal) => {{
        fn q(_: &ServerInfo, _: i64) -> String {
            concat!("SELECT * FROM pg_catalog.", $view).to_string()
        }
        q
    }};
    ($view:literal, $tail:literal) => {{
        fn q(_: &ServerInfo, _: i64) -> String {
            concat!("SELECT * FROM pg_catalog.", $view, " ", $tail).to_string()
        }
        q
    }};
}

pub static PG_STAT_DATABASE: Spec = Spec {
    name: "pg_stat_database",
    sql: all_of!("pg_stat_database", "WHERE datname = current_database()"),
    fields: &[
        "datid",
        "datname",
        "numbackends",
        "xact_commit",
        "xact_rollback",
        "blks_read",
        "blks_hit",
        "tup_returned",
        "tup_fetched",
        "tup_inserted",
        "tup_updated",
        "tup_deleted",
        "conflicts",
        "temp_files",
        "temp_bytes",
        "deadlocks",
        "checksum_failures",
        "checksum_last_failure",
        "blk_read_time",
        "blk_write_time",
        "session_time",
        "active_time",
        "idle_in_transaction_time",
        "sessions",
        "sessions_abandoned",
        "sessions_fatal",
        "sessions_killed",
        "stats_reset",
        "parallel_workers",
        "temp_bytes_read",
        "temp_bytes_written",
        "temp_files_read",
        "temp_files_written",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_DATABASE_CONFLICTS: Spec = Spec {
    name: "pg_stat_database_conflicts",
    sql: all_of!(
        "pg_stat_database_conflicts",
        "WHERE datname = current_database()"
    ),
    fields: &[
        "datid",
        "datname",
        "confl_tablespace",
        "confl_lock",
        "confl_snapshot",
        "confl_bufferpin",
        "confl_deadlock",
        "confl_active_logicalslot",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_BGWRITER: Spec = Spec {
    name: "pg_stat_bgwriter",
    sql: all_of!("pg_stat_bgwriter"),
    fields: &[
        "checkpoints_timed",
        "checkpoints_req",
        "checkpoint_write_time",
        "checkpoint_sync_time",
        "buffers_checkpoint",
        "buffers_clean",
        "maxwritten_clean",
        "buffers_backend",
        "buffers_backend_fsync",
        "buffers_alloc",
        "stats_reset",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_CHECKPOINTER: Spec = Spec {
    name: "pg_stat_checkpointer",
    sql: all_of!("pg_stat_checkpointer"),
    fields: &[
        "num_timed",
        "num_requested",
        "restartpoints_timed",
        "restartpoints_req",
        "restartpoints_done",
        "write_time",
        "sync_time",
        "buffers_written",
        "stats_reset",
        "slru_written",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: Some("view:pg_stat_checkpointer"),
    min_major: 17,
};

pub static PG_STAT_WAL: Spec = Spec {
    name: "pg_stat_wal",
    sql: all_of!("pg_stat_wal"),
    fields: &[
        "wal_records",
        "wal_fpi",
        "wal_bytes",
        "wal_buffers_full",
        "wal_write",
        "wal_sync",
        "wal_write_time",
        "wal_sync_time",
        "stats_reset",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: Some("view:pg_stat_wal"),
    min_major: 14,
};

pub static PG_STAT_IO: Spec = Spec {
    name: "pg_stat_io",
    sql: all_of!("pg_stat_io"),
    fields: &[
        "backend_type",
        "object",
        "context",
        "reads",
        "read_time",
        "writes",
        "write_time",
        "writebacks",
        "writeback_time",
        "extends",
        "extend_time",
        "op_bytes",
        "hits",
        "evictions",
        "reuses",
        "fsyncs",
        "fsync_time",
        "stats_reset",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: Some("view:pg_stat_io"),
    min_major: 16,
};

pub static PG_STAT_ARCHIVER: Spec = Spec {
    name: "pg_stat_archiver",
    sql: all_of!("pg_stat_archiver"),
    fields: &[
        "archived_count",
        "last_archived_wal",
        "last_archived_time",
        "failed_count",
        "last_failed_wal",
        "last_failed_time",
        "stats_reset",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_REPLICATION: Spec = Spec {
    name: "pg_stat_replication",
    sql: |_, _| {
        "SELECT r.*, age(r.backend_xmin)::bigint AS backend_xmin_age FROM pg_catalog.pg_stat_replication r".into()
    },
    fields: &[
        "pid",
        "usesysid",
        "usename",
        "application_name",
        "client_addr",
        "client_hostname",
        "client_port",
        "backend_start",
        "backend_xmin",
        "backend_xmin_age",
        "state",
        "sent_lsn",
        "write_lsn",
        "flush_lsn",
        "replay_lsn",
        "write_lag",
        "flush_lag",
        "replay_lag",
        "sync_priority",
        "sync_state",
        "reply_time",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_REPLICATION_SLOTS: Spec = Spec {
    name: "pg_stat_replication_slots",
    sql: all_of!("pg_stat_replication_slots"),
    fields: &[
        "slot_name",
        "spill_txns",
        "spill_count",
        "spill_bytes",
        "stream_txns",
        "stream_count",
        "stream_bytes",
        "total_txns",
        "total_bytes",
        "stats_reset",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: Some("view:pg_stat_replication_slots"),
    min_major: 14,
};

pub static PG_REPLICATION_SLOTS: Spec = Spec {
    name: "pg_replication_slots",
    sql: |_, _| {
        "SELECT s.*, age(s.xmin)::bigint AS xmin_age, age(s.catalog_xmin)::bigint AS catalog_xmin_age \
         FROM pg_catalog.pg_replication_slots s"
            .into()
    },
    fields: &[
        "slot_name",
        "plugin",
        "slot_type",
        "datoid",
        "database",
        "temporary",
        "active",
        "active_pid",
        "xmin",
        "xmin_age",
        "catalog_xmin",
        "catalog_xmin_age",
        "restart_lsn",
        "confirmed_flush_lsn",
        "wal_status",
        "safe_wal_size",
        "two_phase",
        "conflicting",
        "invalidation_reason",
        "failover",
        "synced",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_WAL_RECEIVER: Spec = Spec {
    name: "pg_stat_wal_receiver",
    sql: all_of!("pg_stat_wal_receiver"),
    fields: &[
        "pid",
        "status",
        "receive_start_lsn",
        "receive_start_tli",
        "written_lsn",
        "flushed_lsn",
        "received_tli",
        "last_msg_send_time",
        "last_msg_receipt_time",
        "latest_end_lsn",
        "latest_end_time",
        "slot_name",
        "sender_host",
        "sender_port",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: Some("view:pg_stat_wal_receiver"),
    min_major: 0,
};

pub static PG_STAT_RECOVERY_PREFETCH: Spec = Spec {
    name: "pg_stat_recovery_prefetch",
    sql: all_of!("pg_stat_recovery_prefetch"),
    fields: &[
        "stats_reset",
        "prefetch",
        "hit",
        "skip_init",
        "skip_new",
        "skip_fpw",
        "skip_rep",
        "wal_distance",
        "block_distance",
        "io_depth",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: Some("view:pg_stat_recovery_prefetch"),
    min_major: 15,
};

pub static PG_STAT_SLRU: Spec = Spec {
    name: "pg_stat_slru",
    sql: all_of!("pg_stat_slru"),
    fields: &[
        "name",
        "blks_zeroed",
        "blks_hit",
        "blks_read",
        "blks_written",
        "blks_exists",
        "flushes",
        "truncates",
        "stats_reset",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: Some("view:pg_stat_slru"),
    min_major: 13,
};

pub static PG_STAT_SUBSCRIPTION: Spec = Spec {
    name: "pg_stat_subscription",
    sql: all_of!("pg_stat_subscription"),
    fields: &[
        "subid",
        "subname",
        "pid",
        "leader_pid",
        "relid",
        "received_lsn",
        "last_msg_send_time",
        "last_msg_receipt_time",
        "latest_end_lsn",
        "latest_end_time",
        "worker_type",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_SUBSCRIPTION_STATS: Spec = Spec {
    name: "pg_stat_subscription_stats",
    sql: all_of!("pg_stat_subscription_stats"),
    fields: &[
        "subid",
        "subname",
        "apply_error_count",
        "sync_error_count",
        "stats_reset",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: Some("view:pg_stat_subscription_stats"),
    min_major: 15,
};

pub static PG_STAT_USER_FUNCTIONS: Spec = Spec {
    name: "pg_stat_user_functions",
    sql: all_of!(
        "pg_stat_user_functions",
        "WHERE calls > 0 ORDER BY calls DESC LIMIT 500"
    ),
    fields: &[
        "funcid",
        "schemaname",
        "funcname",
        "calls",
        "total_time",
        "self_time",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STATIO_USER_TABLES: Spec = Spec {
    name: "pg_statio_user_tables",
    sql: all_of!(
        "pg_statio_user_tables",
        "WHERE COALESCE(heap_blks_read, 0) + COALESCE(heap_blks_hit, 0) + COALESCE(idx_blks_read, 0) + COALESCE(idx_blks_hit, 0) > 0 \
         ORDER BY COALESCE(heap_blks_read, 0) + COALESCE(idx_blks_read, 0) DESC LIMIT 500"
    ),
    fields: &[
        "relid", "schemaname", "relname", "heap_blks_read", "heap_blks_hit", "idx_blks_read", "idx_blks_hit",
        "toast_blks_read", "toast_blks_hit", "tidx_blks_read", "tidx_blks_hit",
    ],
    omitempty: &[],
    dedup: false,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_PROGRESS_VACUUM: Spec = Spec {
    name: "pg_stat_progress_vacuum",
    sql: all_of!(
        "pg_stat_progress_vacuum",
        "WHERE datname = current_database()"
    ),
    fields: &[
        "pid",
        "datid",
        "datname",
        "relid",
        "phase",
        "heap_blks_total",
        "heap_blks_scanned",
        "heap_blks_vacuumed",
        "index_vacuum_count",
        "max_dead_tuples",
        "num_dead_tuples",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_PROGRESS_CREATE_INDEX: Spec = Spec {
    name: "pg_stat_progress_create_index",
    sql: all_of!(
        "pg_stat_progress_create_index",
        "WHERE datname = current_database()"
    ),
    fields: &[
        "pid",
        "datid",
        "datname",
        "relid",
        "index_relid",
        "command",
        "phase",
        "lockers_total",
        "lockers_done",
        "current_locker_pid",
        "blocks_total",
        "blocks_done",
        "tuples_total",
        "tuples_done",
        "partitions_total",
        "partitions_done",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: None,
    min_major: 0,
};

pub static PG_STAT_PROGRESS_ANALYZE: Spec = Spec {
    name: "pg_stat_progress_analyze",
    sql: all_of!(
        "pg_stat_progress_analyze",
        "WHERE datname = current_database()"
    ),
    fields: &[
        "pid",
        "datid",
        "datname",
        "relid",
        "phase",
        "sample_blks_total",
        "sample_blks_scanned",
        "ext_stats_total",
        "ext_stats_computed",
        "child_tables_total",
        "child_tables_done",
        "current_child_table_relid",
    ],
    omitempty: &[],
    dedup: true,
    send_empty: true,
    requires: Some("view:pg_stat_progress_analyze"),
    min_major: 13,
};
