//! Every collector on every available PostgreSQL major (13–18): one cluster per major, every
//! registry entry collected, payload shape checked against the spec (field names and order,
//! version gates, per-version nulls, JSON types). With CI=true all six majors must be present.
mod support;

use dbtune_agent::collectors::{probe, registry, CatalogCollector, CollectCtx, CollectorSettings};
use dbtune_agent::pg::{Pg, SessionLimits};
use serde_json::Value;
use std::collections::BTreeMap;
use support::pgcluster::PgCluster;
use support::pgversions;

/// Server major below which a collector sends nothing (collectors.md §3.1 "PG gate").
fn gate(name: &str) -> u32 {
    match name {
        "pg_stat_checkpointer" => 17,
        "pg_stat_io" => 16,
        "pg_stat_wal" | "pg_stat_replication_slots" => 14,
        "pg_stat_recovery_prefetch" | "pg_stat_subscription_stats" => 15,
        "pg_stat_slru" | "pg_stat_progress_analyze" => 13,
        _ => 0,
    }
}

const SETUP: &str = "CREATE TABLE m(id serial PRIMARY KEY, v text, n int); \
    INSERT INTO m(v, n) SELECT 'v' || (g % 7), g FROM generate_series(1, 500) g; \
    CREATE INDEX m_v ON m(v); ANALYZE m; SELECT count(*) FROM m WHERE v = 'v1'; \
    CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN 1; END'; SELECT f(); SELECT f();";

fn check_major(major: u32, bin: support::pgcluster::PgBin) -> Vec<String> {
    let pg = PgCluster::start_bin(bin, &["track_functions = all", "track_io_timing = on"]);
    assert_eq!(pg.major(), major);
    pg.client().batch_execute(SETUP).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500)); // let the closed session's stats arrive
    let pool = Pg::new(&pg.url(), 2, SessionLimits::default()).unwrap();
    let server = probe::probe(&pool).unwrap();
    assert_eq!(server.major(), major);
    let ctx = CollectCtx {
        pg: &pool,
        server: &server,
    };
    let mut problems = Vec::new();
    let mut payloads: BTreeMap<&str, Value> = BTreeMap::new();

    for def in registry::REGISTRY {
        let mut c: Box<dyn CatalogCollector> =
            (def.build)(&CollectorSettings::defaults_for(def.name));
        let got = match c.collect(&ctx) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("PG {major} {}: error {e}", def.name));
                continue;
            }
        };
        let gated = major < gate(def.name);
        match (&got, gated) {
            (Some(_), true) => problems.push(format!(
                "PG {major} {}: sent despite the version gate",
                def.name
            )),
            (None, false) if !matches!(def.name, "pg_stat_wal_receiver") => {
                problems.push(format!("PG {major} {}: sent nothing", def.name))
            }
            _ => {}
        }
        let Some(v) = got else { continue };
        if def.name != "ddl" {
            let at = v["collected_at"].as_str().unwrap_or("");
            if !(at.ends_with('Z') && at.len() >= 20) {
                problems.push(format!("PG {major} {}: collected_at {at:?}", def.name));
            }
        }
        if let Some(spec) = registry::generic_spec(def.name) {
            for row in v["rows"].as_array().unwrap() {
                let keys: Vec<&str> = row
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                let want: Vec<&str> = spec
                    .fields
                    .iter()
                    .copied()
                    .filter(|f| !spec.omitempty.contains(f) || !row[*f].is_null())
                    .collect();
                if keys != want {
                    problems.push(format!(
                        "PG {major} {}: keys {keys:?} != {want:?}",
                        def.name
                    ));
                    break;
                }
            }
        }
        payloads.insert(def.name, v);
    }

    // Per-version nulls and types from collectors.md §3.3–§4.
    let row0 = |n: &str| {
        payloads
            .get(n)
            .and_then(|v| v["rows"].as_array())
            .and_then(|r| r.first())
            .cloned()
    };
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            problems.push(format!("PG {major}: {what}"));
        }
    };
    if let Some(r) = row0("pg_stat_bgwriter") {
        expect(
            r["checkpoints_timed"].is_null() == (major >= 17),
            "bgwriter checkpoint keys null exactly on 17+",
        );
        expect(
            r["buffers_alloc"].is_i64(),
            "bgwriter buffers_alloc is an integer",
        );
    }
    if let Some(r) = row0("pg_stat_database") {
        expect(
            r["session_time"].is_null() == (major < 14),
            "pg_stat_database session_time from 14",
        );
        expect(
            r["parallel_workers"].is_null(),
            "pg_stat_database parallel_workers always null",
        );
        expect(
            r["xact_commit"].as_i64().unwrap_or(0) > 0,
            "pg_stat_database counts commits",
        );
    }
    if let Some(r) = row0("pg_stat_checkpointer") {
        expect(
            r["slru_written"].is_null() == (major < 18),
            "checkpointer slru_written from 18",
        );
        expect(r["num_timed"].is_i64(), "checkpointer num_timed");
    }
    if let Some(r) = row0("pg_stat_wal") {
        expect(
            r["wal_bytes"].is_i64(),
            "wal_bytes is an integer (numeric server-side)",
        );
        expect(
            r["wal_write"].is_null() == (major >= 18),
            "wal_write removed in 18",
        );
    }
    if let Some(r) = row0("pg_stat_io") {
        expect(
            r["op_bytes"].is_null() == (major >= 18),
            "pg_stat_io op_bytes removed in 18",
        );
    }
    if let Some(v) = payloads.get("pg_stat_user_tables") {
        let m = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["relname"] == "m");
        expect(m.is_some(), "pg_stat_user_tables lists m");
        if let Some(m) = m {
            expect(
                m["n_ins_since_vacuum"].is_i64(),
                "n_ins_since_vacuum from 13",
            );
            expect(
                m["last_seq_scan"].is_null() == (major < 16) || major >= 16,
                "last_seq_scan from 16",
            );
            expect(
                m["n_tup_newpage_upd"].is_null() == (major < 16),
                "n_tup_newpage_upd from 16",
            );
            expect(
                m["total_vacuum_time"].is_null() == (major < 18),
                "total_vacuum_time from 18",
            );
            expect(m["n_tup_ins"] == 500, "500 inserts counted");
        }
    }
    if let Some(v) = payloads.get("pg_class") {
        let m = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["relname"] == "m")
            .cloned()
            .unwrap_or_default();
        expect(
            m.get("relallfrozen").is_some() == (major >= 18),
            "relallfrozen only on 18",
        );
        expect(m["reltuples"] == 500.0, "pg_class reltuples after ANALYZE");
    }
    if let Some(v) = payloads.get("pg_stats") {
        expect(
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["tablename"] == "m" && r["attname"] == "v"),
            "pg_stats rows for m.v",
        );
    }
    if let Some(v) = payloads.get("pg_stat_user_functions") {
        let f = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["funcname"] == "f");
        expect(
            f.is_some_and(|f| f["calls"].as_i64() >= Some(2)),
            "pg_stat_user_functions counts f()",
        );
    }
    if let Some(r) = row0("pg_stat_activity") {
        expect(
            r["backend_start"].is_string() || r["backend_start"].is_null(),
            "backend_start is a timestamp string",
        );
    }
    if let Some(v) = payloads.get("pg_stat_activity") {
        let ours = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["application_name"] == "dbtune-agent");
        expect(
            ours.is_some_and(|r| r["leader_pid"].is_null() && r["client_addr"] == "127.0.0.1"),
            "agent session listed",
        );
    }
    if let Some(v) = payloads.get("pg_stat_statements") {
        let rows = v["rows"].as_array().unwrap();
        let r = rows.iter().find(|r| {
            r["query"]
                .as_str()
                .is_some_and(|q| q.contains("FROM m WHERE v"))
        });
        expect(r.is_some(), "pg_stat_statements lists our statement");
        if let Some(r) = r {
            expect(
                r.get("local_blk_read_time").is_some() == (major >= 17),
                "local_blk_* only with extension 1.11 (PG 17+)",
            );
            expect(
                r["plans"].is_i64() && r["wal_bytes"].is_i64(),
                "1.8+ plan/WAL counters",
            );
            expect(
                r["jit_functions"].is_null() == (major < 15),
                "jit counters from extension 1.10 (PG 15)",
            );
            expect(r["toplevel"].is_null(), "toplevel nulled");
        }
    }
    if let Some(v) = payloads.get("pg_index_inventory") {
        let r = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["indexname"] == "m_v")
            .cloned()
            .unwrap_or_default();
        expect(
            r["indnullsnotdistinct"].is_null() == (major < 15),
            "indnullsnotdistinct from 15",
        );
        expect(
            r["indexdef"] == "CREATE INDEX m_v ON public.m USING btree (v)",
            "indexdef",
        );
    }
    if let Some(r) = row0("server_uptime") {
        expect(
            r["system_identifier"].is_string() && r["timeline_id"] == 1,
            "server_uptime identity",
        );
    }
    if let Some(v) = payloads.get("ddl") {
        expect(
            v["ddl"]
                .as_str()
                .unwrap_or("")
                .contains("CREATE TABLE public.m (\n"),
            "ddl has table m",
        );
    }
    problems
}

#[test]
fn every_collector_on_every_available_major() {
    let majors = pgversions::available();
    assert!(!majors.is_empty(), "no PostgreSQL binaries found");
    eprintln!(
        "version matrix: {:?}",
        majors.iter().map(|(m, _)| *m).collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    for (major, bin) in majors {
        problems.extend(check_major(major, bin));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
