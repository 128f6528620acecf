//! The 5-second collectors against a real PostgreSQL: counts match the load we create.
mod support;

use dbtune_agent::collectors::{
    probe, registry, CatalogCollector, CollectCtx, CollectorSettings, ServerInfo,
};
use dbtune_agent::pg::{Pg, SessionLimits};
use serde_json::Value;
use std::thread;
use std::time::Duration;
use support::pgcluster::PgCluster;

struct Agent {
    pg: Pg,
    server: ServerInfo,
}

impl Agent {
    fn new(c: &PgCluster) -> Agent {
        let pg = Pg::new(&c.url(), 2, SessionLimits::default()).unwrap();
        let server = probe::probe(&pg).unwrap();
        Agent { pg, server }
    }
    fn build(&self, name: &str) -> Box<dyn CatalogCollector> {
        let d = registry::find(name).unwrap();
        (d.build)(&CollectorSettings::defaults_for(name))
    }
    fn run(&self, c: &mut Box<dyn CatalogCollector>) -> Option<Value> {
        c.collect(&CollectCtx {
            pg: &self.pg,
            server: &self.server,
        })
        .unwrap()
    }
    fn once(&self, name: &str) -> Value {
        let mut c = self.build(name);
        self.run(&mut c)
            .unwrap_or_else(|| panic!("{name} sent nothing"))
    }
}

fn rows(v: &Value) -> &Vec<Value> {
    assert!(v["collected_at"].as_str().unwrap().ends_with('Z'));
    v["rows"].as_array().unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn connections_wait_events_autovacuum_and_size_reflect_real_sessions() {
    let pg = PgCluster::start();
    let agent = Agent::new(&pg);

    // One idle-in-transaction session, one sleeping (active, Timeout wait), one idle.
    let mut idle_tx = pg.client();
    idle_tx.batch_execute("BEGIN; SELECT 1").unwrap();
    let _idle = pg.client();
    let url = pg.url();
    let sleeper = thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute("SELECT pg_sleep(3)").unwrap();
    });
    thread::sleep(Duration::from_millis(700));

    let v = agent.once("database_connections");
    let r = &rows(&v)[0];
    assert_eq!(
        keys(r),
        [
            "active_connections",
            "idle_connections",
            "idle_in_transaction_connections",
            "idle_in_transaction_aborted_connections",
            "total_connections"
        ]
    );
    assert!(
        r["idle_in_transaction_connections"].as_i64().unwrap() >= 1,
        "{r}"
    );
    // The sleeper and our own collecting session are active.
    assert!(r["active_connections"].as_i64().unwrap() >= 2, "{r}");
    assert!(r["idle_connections"].as_i64().unwrap() >= 1, "{r}");
    let sum: i64 = keys(r)[..4].iter().map(|k| r[*k].as_i64().unwrap()).sum();
    assert_eq!(r["total_connections"].as_i64().unwrap(), sum);

    let v = agent.once("wait_events");
    let rs = rows(&v);
    let names: Vec<&str> = rs
        .iter()
        .map(|r| r["wait_event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Activity",
            "BufferPin",
            "Client",
            "Extension",
            "IO",
            "IPC",
            "Lock",
            "LWLock",
            "Timeout",
            "TOTAL"
        ]
    );
    let count = |n: &str| {
        rs.iter().find(|r| r["wait_event_type"] == n).unwrap()["current_count"]
            .as_i64()
            .unwrap()
    };
    assert!(count("Timeout") >= 1, "pg_sleep waits on Timeout: {v}");
    assert!(
        count("Client") >= 2,
        "idle sessions wait on ClientRead: {v}"
    );
    assert!(
        count("Activity") >= 1,
        "background processes wait on Activity: {v}"
    );
    assert_eq!(
        count("TOTAL"),
        rs[..9]
            .iter()
            .map(|r| r["current_count"].as_i64().unwrap())
            .sum::<i64>()
    );

    let v = agent.once("autovacuum_count");
    assert_eq!(keys(&rows(&v)[0]), ["count"]);
    assert!(rows(&v)[0]["count"].is_i64());

    let v = agent.once("system_db_size");
    let size = rows(&v)[0]["total_size_bytes"].as_i64().unwrap();
    let expect: i64 = pg
        .client()
        .query_one(
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_database",
            &[],
        )
        .unwrap()
        .get(0);
    assert!((size - expect).abs() < 1 << 20, "{size} vs {expect}");
    assert!(
        size > 3 * 5_000_000,
        "three databases of several MB: {size}"
    );
    sleeper.join().unwrap();
}

#[test]
fn database_transactions_reports_tps_from_the_second_run() {
    let pg = PgCluster::start();
    let agent = Agent::new(&pg);
    let mut c = agent.build("database_transactions");
    let first = agent.run(&mut c).unwrap();
    let r = &rows(&first)[0];
    assert_eq!(keys(r), ["xact_commit"], "no tps on the first run: {r}");
    let before = r["xact_commit"].as_i64().unwrap();

    let mut cl = pg.client();
    for i in 0..200 {
        cl.execute("SELECT $1::int", &[&i]).unwrap();
    }
    drop(cl); // a backend flushes its statistics when it exits
    thread::sleep(Duration::from_millis(1100));
    let mut cl = pg.client();
    let second = agent.run(&mut c).unwrap();
    let r = &rows(&second)[0];
    assert_eq!(keys(r), ["xact_commit", "tps"]);
    let after = r["xact_commit"].as_i64().unwrap();
    assert!(after - before >= 200, "{before} → {after}");
    let tps = r["tps"].as_f64().unwrap();
    assert!(
        tps > 20.0 && tps < (after - before) as f64 * 10.0,
        "tps {tps}"
    );

    // After a stats reset the counter drops: no tps for that run.
    cl.batch_execute("SELECT pg_stat_reset_shared('bgwriter')")
        .unwrap();
    for db in ["postgres", "template1"] {
        let mut d = postgres::Client::connect(&pg.url_db(db), postgres::NoTls).unwrap();
        d.batch_execute("SELECT pg_stat_reset()").unwrap();
    }
    thread::sleep(Duration::from_millis(1100));
    let third = agent.run(&mut c).unwrap();
    let r = &rows(&third)[0];
    assert!(
        r["xact_commit"].as_i64().unwrap() < after,
        "reset lowers the sum: {r}"
    );
    assert_eq!(keys(r), ["xact_commit"], "no tps after a decrease: {r}");
}

#[test]
fn server_uptime_reports_identity_and_start_time() {
    let mut pg = PgCluster::start();
    let agent = Agent::new(&pg);
    let mut c = agent.build("server_uptime");
    let v = agent.run(&mut c).unwrap();
    let r = &rows(&v)[0];
    assert_eq!(
        keys(r),
        [
            "uptime_minutes",
            "system_identifier",
            "timeline_id",
            "postmaster_start_time"
        ]
    );
    let up = r["uptime_minutes"].as_f64().unwrap();
    assert!((0.0..5.0).contains(&up), "{up}");
    let sysid: i64 = pg
        .client()
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        r["system_identifier"],
        Value::from((sysid as u64).to_string())
    );
    assert_eq!(r["timeline_id"], 1);
    let start = r["postmaster_start_time"].as_str().unwrap();
    assert!(
        start.len() == 20 && start.ends_with('Z'),
        "seconds precision, UTC: {start}"
    );

    // A restart changes the start time; the collector follows on the next run.
    thread::sleep(Duration::from_millis(1100));
    pg.stop();
    pg.pg_ctl_start();
    let mut v2 = None;
    for _ in 0..20 {
        match c.collect(&CollectCtx {
            pg: &agent.pg,
            server: &agent.server,
        }) {
            Ok(v) => {
                v2 = v;
                break;
            }
            Err(_) => thread::sleep(Duration::from_millis(200)), // stale pooled session
        }
    }
    let v2 = v2.expect("collects after restart");
    let r2 = &rows(&v2)[0];
    assert_ne!(r2["postmaster_start_time"], r["postmaster_start_time"]);
    assert_eq!(r2["system_identifier"], r["system_identifier"]);
}
