//! The agent end to end: the real binary against a real PostgreSQL and the platform stand-in
//! over loopback HTTP.
mod support;

use std::time::{Duration, Instant};
use support::agent::{self, Agent, API_KEY, DB_ID};
use support::pgcluster::PgCluster;
use support::platform::{Mode, PlatformStandIn, Recorded};

fn sha256_hex(b: &[u8]) -> String {
    dbtune_agent::gojson::sha256_hex(b)
}

/// The raw bytes of a top-level member (`"name":<value>`) of a Go-encoded object; the value
/// is taken up to the member that follows it.
fn member_bytes<'a>(body: &'a [u8], name: &str, next: &str) -> &'a [u8] {
    let s = std::str::from_utf8(body).unwrap();
    let start = s.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
    let end = s.rfind(&format!(",\"{next}\":")).unwrap();
    &body[start..end]
}

fn common_headers(r: &Recorded) {
    assert_eq!(
        r.header("DBTUNE-API-KEY"),
        Some(API_KEY),
        "{} lacks the API key header",
        r.path
    );
    assert!(
        r.header("User-Agent")
            .unwrap_or("")
            .starts_with("dbtune-agent/"),
        "{}: UA {:?}",
        r.path,
        r.header("User-Agent")
    );
    assert!(
        r.query == format!("uuid={DB_ID}") || r.query == format!("uuid={DB_ID}&status=recommended"),
        "{} {}",
        r.path,
        r.query
    );
}

#[test]
fn every_core_endpoint_carries_the_contract_payload() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let url = format!(
        "postgres://postgres:S3cretPassw0rd@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    );
    let yaml = agent::config_yaml(
        &url,
        &platform.url,
        "guardrail_settings:\n  memory_threshold: 1\n",
    );
    let a = Agent::spawn(&yaml, &["--local"], &[]);
    let reqs = platform.wait_for(
        "two metrics, system-info, configurations, guardrail",
        Duration::from_secs(40),
        |r| {
            r.iter().filter(|x| x.segment() == "metrics").count() >= 2
                && r.iter().any(|x| x.segment() == "system-info")
                && r.iter()
                    .any(|x| x.segment() == "configurations" && x.method == "POST")
                && r.iter().any(|x| x.segment() == "guardrails")
        },
    );
    for r in &reqs {
        common_headers(r);
    }
    let find = |seg: &str, method: &str| {
        reqs.iter()
            .find(|r| r.segment() == seg && r.method == method)
            .unwrap()
            .clone()
    };

    // Heartbeat (sent by the startup check): field order and types.
    let hb = find("heartbeat", "POST");
    let s = String::from_utf8(hb.body.clone()).unwrap();
    assert!(s.starts_with("{\"agent_version\":\""), "{s}");
    let v = hb.json();
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "agent_version",
            "agent_start_time",
            "agent_identifier",
            "allow_restart"
        ]
    );
    assert_eq!(v["allow_restart"], false);
    assert!(v["agent_start_time"].as_str().unwrap().ends_with('Z'));

    // Metrics: version 2.0, host keys, floats rounded, disk deltas from the second run.
    let metrics: Vec<_> = reqs.iter().filter(|r| r.segment() == "metrics").collect();
    let m0 = metrics[0].json();
    assert_eq!(m0["version"], "2.0");
    let cpu = m0["metrics"]["node_cpu_usage"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu));
    assert_eq!((cpu * 1000.0).round(), cpu * 1000.0);
    assert!(m0["metrics"]["node_memory_used"].as_i64().unwrap() > 0);
    assert!(
        m0["metrics"].get("node_disk_io_ops_total").is_none(),
        "no disk deltas on the first run"
    );
    assert!(m0["metrics"].get("").is_none());

    // The data directory's filesystem (PostgreSQL is local): the kernel's statvfs agrees.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(pg.data.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    assert_eq!(
        m0["metrics"]["node_disk_size"].as_u64(),
        Some(st.f_blocks as u64 * st.f_frsize as u64),
        "{m0}"
    );
    let used = m0["metrics"]["node_disk_used_percentage"].as_f64().unwrap();
    let expect = 100.0 * (1.0 - st.f_bavail as f64 / st.f_blocks as f64);
    assert!((used - expect).abs() < 2.0, "{used} vs {expect}");
    // Network rates need two samples.
    assert!(m0["metrics"].get("node_net_receive_per_second").is_none());
    let m1 = metrics[1].json();
    for k in ["node_net_receive_per_second", "node_net_send_per_second"] {
        assert!(
            m1["metrics"][k].as_f64().is_some_and(|v| v >= 0.0),
            "{k}: {m1}"
        );
    }

    // System info: every key, and the hash is SHA-256 of the exact bytes of the map.
    let si = find("system-info", "PUT");
    let v = si.json();
    let map = v["system_info"].as_object().unwrap();
    for k in [
        "node_cpu_count",
        "node_memory_total",
        "node_os_info",
        "pg_current_database",
        "pg_database_count",
        "pg_max_connections",
        "pg_version",
        "system_info_platform",
        "system_info_platform_version",
    ] {
        assert!(map.contains_key(k), "system_info lacks {k}");
    }
    assert_eq!(map["pg_max_connections"]["value"], 50);
    assert_eq!(map["pg_max_connections"]["type"], "int");
    assert_eq!(
        map["pg_version"]["value"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap(),
        "15"
    );
    assert_eq!(
        v["hash"].as_str().unwrap(),
        sha256_hex(member_bytes(&si.body, "system_info", "timestamp"))
    );

    // Active configuration: gzip, every pg_settings row, typed settings, hash over the array.
    let cf = find("configurations", "POST");
    assert_eq!(cf.header("Content-Encoding"), Some("gzip"));
    assert!(
        cf.wire_len < cf.body.len() / 3,
        "gzip should shrink the payload"
    );
    let v = cf.json();
    let rows = v["config"].as_array().unwrap();
    let mut c = pg.client();
    let n: i64 = c
        .query_one("SELECT count(*) FROM pg_settings", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows.len() as i64, n);
    let wm = rows.iter().find(|r| r["name"] == "work_mem").unwrap();
    assert_eq!(
        wm,
        &serde_json::json!({"name":"work_mem","setting":4096,"unit":"kB","vartype":"integer","context":"user"})
    );
    let spc = rows.iter().find(|r| r["name"] == "seq_page_cost").unwrap();
    assert_eq!(spc["setting"], 1);
    assert_eq!(
        v["hash"].as_str().unwrap(),
        sha256_hex(member_bytes(&cf.body, "config", "hash"))
    );

    // Recommendations are asked for with status=recommended.
    let get = find("configurations", "GET");
    assert!(get.query.ends_with("&status=recommended"), "{}", get.query);

    // Guardrail over the (minimum) threshold: the exact body, and no second one within 15 s.
    let g = find("guardrails", "POST");
    assert_eq!(g.body, br#"{"level":"critical","type":"memory"}"#);
    std::thread::sleep(Duration::from_secs(4));
    let gs = platform.by_segment("guardrails");
    assert_eq!(gs.len(), 1, "guardrail signals must be 15 s apart");

    // Secrets never in the logs.
    let logs = a.logs();
    assert!(!logs.contains(API_KEY), "API key leaked into logs");
    assert!(
        !logs.contains("S3cretPassw0rd"),
        "password leaked into logs"
    );
}

#[test]
fn check_reports_each_check_and_fails_on_an_unreachable_database() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let (st, out, _) = agent::run(
        &agent::config_yaml(&pg.url(), &platform.url, ""),
        &["--local", "--check"],
        &[],
        Duration::from_secs(30),
    );
    assert!(st.success(), "--check failed:\n{out}");
    for needle in [
        "configuration",
        "PostgreSQL reachable",
        "PostgreSQL 15.",
        "role privileges",
        "superuser",
        "pg_stat_statements",
        "heartbeat accepted",
    ] {
        assert!(
            out.contains(needle),
            "--check output lacks {needle:?}:\n{out}"
        );
    }
    assert_eq!(platform.by_segment("heartbeat").len(), 1);

    let dead = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        support::pgcluster::free_port()
    );
    let (st, out, _) = agent::run(
        &agent::config_yaml(&dead, &platform.url, ""),
        &["--local", "--check"],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(st.code(), Some(1));
    assert!(out.contains("[FAIL] PostgreSQL reachable"), "{out}");
}

#[test]
fn dry_run_once_writes_every_payload_as_json_lines_and_sends_nothing() {
    let pg = PgCluster::start();
    // No dbtune section at all: a dry run needs no account.
    let yaml = format!("postgresql:\n  connection_url: \"{}\"\n", pg.url());
    let (st, out, err) = agent::run(
        &yaml,
        &["--local", "--dry-run", "--once"],
        &[],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let endpoints: Vec<&str> = lines
        .iter()
        .map(|l| l["endpoint"].as_str().unwrap())
        .collect();
    for e in ["system-info", "configurations", "metrics", "heartbeat"] {
        assert!(endpoints.contains(&e), "dry run lacks {e}: {endpoints:?}");
    }
    let cfg = lines
        .iter()
        .find(|l| l["endpoint"] == "configurations")
        .unwrap();
    assert_eq!(cfg["gzip"], true);
    assert!(cfg["body"]["config"].as_array().unwrap().len() > 200);
}

#[test]
fn sigterm_exits_zero_within_ten_seconds() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let mut a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, ""),
        &["--local"],
        &[],
    );
    platform.wait_for("first metrics", Duration::from_secs(30), |r| {
        r.iter().any(|x| x.segment() == "metrics")
    });
    let t = Instant::now();
    a.signal(libc::SIGTERM);
    let st = a
        .wait(Duration::from_secs(10))
        .expect("agent still running 10 s after SIGTERM");
    assert!(st.success(), "exit status {st:?}\n{}", a.logs());
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(a.logs().contains("dbtune-agent stopped"));
}

#[test]
fn health_gate_closes_when_postgres_stops_and_reopens_when_it_returns() {
    let mut pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, ""),
        &["--local"],
        &[],
    );
    platform.wait_for("first configurations", Duration::from_secs(30), |r| {
        r.iter().any(|x| x.segment() == "configurations")
    });
    pg.stop();
    a.wait_log(
        "health gate: database connection lost",
        Duration::from_secs(20),
    );
    // While closed, database loops are skipped; the heartbeat (not gated) keeps going.
    std::thread::sleep(Duration::from_secs(2));
    platform.clear();
    std::thread::sleep(Duration::from_secs(16));
    let during = platform.requests();
    assert!(
        during.iter().any(|r| r.segment() == "heartbeat"),
        "heartbeat must not be gated"
    );
    assert!(
        !during
            .iter()
            .any(|r| r.segment() == "configurations" && r.method == "POST"),
        "configurations sent while the gate was closed"
    );
    assert!(!during.iter().any(|r| r.segment() == "system-info"));
    pg.pg_ctl_start();
    a.wait_log(
        "health gate: database connection recovered",
        Duration::from_secs(40),
    );
    platform.clear();
    platform.wait_for(
        "configurations after recovery",
        Duration::from_secs(20),
        |r| {
            r.iter()
                .any(|x| x.segment() == "configurations" && x.method == "POST")
        },
    );
    let logs = a.logs();
    assert!(
        !logs.contains("config error"),
        "connection errors must be silenced by the gate:\n{logs}"
    );
}

#[test]
fn a_lock_held_by_the_workload_never_stalls_the_other_loops() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    // Hold an ACCESS EXCLUSIVE lock on pg_settings' view for 12 s: the config loop's read must
    // give up quickly (lock_timeout) while metrics keep their 5 s rhythm.
    let mut locker = pg.client();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute("LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    let t0 = Instant::now();
    platform.wait_for("three metrics", Duration::from_secs(20), |r| {
        r.iter().filter(|x| x.segment() == "metrics").count() >= 3
    });
    assert!(
        t0.elapsed() < Duration::from_secs(16),
        "metrics stalled: {:?}",
        t0.elapsed()
    );
    // No agent session waits on the lock for long.
    let mut watcher = pg.client();
    let waiting: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbtune-agent' AND wait_event_type = 'Lock' AND now() - query_start > interval '2 seconds'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0);
    let logs = a.wait_log("lock timeout", Duration::from_secs(10));
    assert!(logs.contains("config error"), "{logs}");
    tx.rollback().unwrap();
    platform.clear();
    platform.wait_for(
        "configurations once the lock is gone",
        Duration::from_secs(20),
        |r| {
            r.iter()
                .any(|x| x.segment() == "configurations" && x.method == "POST")
        },
    );
}

#[test]
fn a_platform_outage_never_blocks_a_loop_past_its_budget() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    platform.wait_for("first metrics", Duration::from_secs(20), |r| {
        r.iter().any(|x| x.segment() == "metrics")
    });
    platform.set_mode(Mode::Status(500, None));
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let during: Vec<Recorded> = platform
        .requests()
        .into_iter()
        .filter(|r| r.at >= outage)
        .collect();
    platform.set_mode(Mode::Normal);
    // Metrics attempts keep coming: a new run starts at least every 5 s interval + 10 s budget.
    let mut times: Vec<Instant> = during
        .iter()
        .filter(|r| r.segment() == "metrics")
        .map(|r| r.at)
        .collect();
    times.sort();
    assert!(
        times.len() >= 8,
        "too few metrics attempts during the outage: {}",
        times.len()
    );
    let max_gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        max_gap <= Duration::from_secs(16),
        "metrics loop blocked for {max_gap:?}"
    );
    // Heartbeats keep their 15 s rhythm (12 s budget each).
    let hb = during.iter().filter(|r| r.segment() == "heartbeat").count();
    assert!(hb >= 3, "heartbeat attempts during the outage: {hb}");
    // Every give-up names the attempts and stays within its budget.
    let logs = a.logs();
    assert!(logs.contains("giving up after"), "{logs}");
    for line in logs.lines().filter(|l| l.contains("giving up after")) {
        let secs: f64 = line
            .split(" in ")
            .nth(1)
            .and_then(|s| s.split('s').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0.0);
        assert!(secs <= 30.5, "a call ran {secs}s: {line}");
    }
    platform.clear();
    platform.wait_for("metrics accepted again", Duration::from_secs(20), |r| {
        r.iter().any(|x| x.segment() == "metrics")
    });
}

#[test]
fn the_five_second_catalog_collectors_reach_their_endpoints_gzipped() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let mut c = pg.client();
    c.batch_execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g; SELECT count(*) FROM t WHERE g > 500;").unwrap();
    let _a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    let names = [
        "autovacuum_count",
        "database_connections",
        "system_db_size",
        "database_transactions",
        "server_uptime",
        "wait_events",
        "pg_stat_statements",
    ];
    // Two runs of each: database_transactions only has a tps from its second sample on.
    let reqs = platform.wait_for(
        "two runs of every 5-second collector",
        Duration::from_secs(40),
        |r| {
            names
                .iter()
                .all(|n| r.iter().filter(|x| x.segment() == *n).count() >= 2)
        },
    );
    for n in names {
        let r = reqs.iter().find(|x| x.segment() == n).unwrap();
        common_headers(r);
        assert_eq!(r.header("Content-Encoding"), Some("gzip"), "{n}");
        let v = r.json();
        let at = v["collected_at"].as_str().unwrap();
        assert!(
            at.ends_with('Z') && at.len() >= 20,
            "{n}: collected_at {at}"
        );
        assert!(v["rows"].is_array(), "{n}");
    }
    let get = |n: &str| reqs.iter().find(|x| x.segment() == n).unwrap().json();
    assert_eq!(get("wait_events")["rows"].as_array().unwrap().len(), 10);
    assert_eq!(get("wait_events")["rows"][9]["wait_event_type"], "TOTAL");
    assert!(
        get("system_db_size")["rows"][0]["total_size_bytes"]
            .as_i64()
            .unwrap()
            > 1_000_000
    );
    assert!(
        get("database_connections")["rows"][0]["total_connections"]
            .as_i64()
            .unwrap()
            >= 1
    );
    let pgss = get("pg_stat_statements");
    assert!(pgss.get("delta_count").is_some() && pgss.get("average_query_runtime").is_some());
    let texts: Vec<&str> = pgss["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["query"].as_str())
        .collect();
    assert!(
        texts.iter().any(|q| q.contains("generate_series")),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|q| q.contains("/*dbtune*/")),
        "the agent's own statements are filtered"
    );
    let second_tx: Vec<_> = reqs
        .iter()
        .filter(|x| x.segment() == "database_transactions")
        .collect();
    assert!(
        second_tx[1].json()["rows"][0]["xact_commit"]
            .as_i64()
            .unwrap()
            > 0
    );
}
