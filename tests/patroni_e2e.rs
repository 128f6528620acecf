//! The Patroni adapter through the real agent binary (`--patroni`) against a real two-node
//! Patroni cluster (etcd DCS, PostgreSQL 15) on loopback, with the platform stand-in serving
//! recommendations and recording what the agent sends.
mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::agent::{self, Agent};
use support::patroni::{PatroniCluster, REST_PASSWORD, REST_USER};
use support::platform::{recommend_one as rec, setting_in, PlatformStandIn, Recorded};

/// One cluster at a time: each is etcd + two Patroni + two PostgreSQL on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn yaml(c: &PatroniCluster, node: usize, api_url: &str, platform: &str) -> String {
    format!(
        "postgresql:\n  connection_url: \"{pg}\"\n  allow_restart: true\ndbtune:\n  server_url: \"{platform}\"\n  api_key: \"{key}\"\n  database_id: \"{db}\"\npatroni:\n  node_name: n{n}\n  patroni_api_url: \"{api_url}\"\n  username: {REST_USER}\n  password: {REST_PASSWORD}\n",
        pg = c.pg_url(node),
        key = agent::API_KEY,
        db = agent::DB_ID,
        n = node + 1,
    )
}

fn configurations_with(r: &[Recorded], name: &str, v: i64) -> Option<Recorded> {
    r.iter()
        .find(|x| {
            x.segment() == "configurations"
                && x.method == "POST"
                && setting_in(x, name) == serde_json::json!(v)
        })
        .cloned()
}

fn log_entries(p: &PlatformStandIn) -> Vec<serde_json::Value> {
    p.by_segment("log-entries")
        .iter()
        .map(|r| r.json())
        .collect()
}

fn dcs_param(c: &PatroniCluster, name: &str) -> serde_json::Value {
    c.get_json(0, "/config")["postgresql"]["parameters"][name].clone()
}

/// Seconds between the agent logging `from` and `to` anew (lines already in the log do not
/// count; the test polls the log every 50 ms).
fn timed(a: &Agent, from: &str, to: &str, timeout: Duration) -> f64 {
    let end = Instant::now() + timeout;
    let l = a.logs();
    let (base_from, base_to) = (l.matches(from).count(), l.matches(to).count());
    let mut t0 = None;
    loop {
        let l = a.logs();
        if t0.is_none() && l.matches(from).count() > base_from {
            t0 = Some(Instant::now());
        }
        if let Some(t) = t0 {
            if l.matches(to).count() > base_to {
                return t.elapsed().as_secs_f64();
            }
        }
        if Instant::now() > end {
            panic!("log never went from {from:?} to {to:?}:\n{l}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_leader_agent_applies_reload_and_restart_knobs_through_patroni_and_rolls_back() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = PatroniCluster::start() else {
        return;
    };
    // A local copy that would shadow the DCS value: the apply must remove it.
    c.sql(0, "ALTER SYSTEM SET work_mem = '16MB'");
    c.sql(0, "SELECT pg_reload_conf()");
    let platform = PlatformStandIn::start();
    platform.set_recommendation(&rec("work_mem", 8192, "kB", "user", "reload"));
    let a = Agent::spawn(
        &yaml(&c, 0, &c.rest_url(0), &platform.url),
        &["--patroni"],
        &[],
    );

    // 1. Reload knob: in the DCS, on both nodes, and no copy in postgresql.auto.conf.
    let reload_s = timed(
        &a,
        "Applying Config",
        "configuration applied",
        Duration::from_secs(60),
    );
    platform.wait_for(
        "configurations with work_mem 8192",
        Duration::from_secs(30),
        |r| configurations_with(r, "work_mem", 8192).is_some(),
    );
    assert_eq!(dcs_param(&c, "work_mem"), "8192");
    assert_eq!(c.show(0, "work_mem"), "8MB");
    c.wait(
        "work_mem 8MB on the replica",
        Duration::from_secs(20),
        |c| c.show(1, "work_mem") == "8MB",
    );
    assert!(!c.auto_conf(0).contains("work_mem"), "{}", c.auto_conf(0));
    assert!(
        log_entries(&platform).is_empty(),
        "{:?}",
        log_entries(&platform)
    );
    // Active config leaves out what Patroni manages (spec §8.1).
    let cf = platform.by_segment("configurations");
    let last = cf.last().unwrap();
    assert!(setting_in(last, "max_connections").is_null());
    assert!(setting_in(last, "wal_level").is_null());
    assert!(!setting_in(last, "shared_buffers").is_null());

    // 2. A Patroni-managed knob is refused with Patroni's reason, nothing written.
    platform.set_recommendation(&rec("max_connections", 200, "", "postmaster", "restart"));
    platform.wait_for("the managed-knob refusal", Duration::from_secs(30), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = &log_entries(&platform)[0];
    assert_eq!(e["error_type"], "config_apply_error");
    let msg = e["error_message"].as_str().unwrap();
    assert!(msg.contains("max_connections: managed by Patroni"), "{msg}");
    assert!(dcs_param(&c, "max_connections").is_null());
    platform.clear();

    // 3. Restart knob: replica restarted first, then the leader; live on both.
    let (s0, s1) = (c.postmaster_start(0), c.postmaster_start(1));
    platform.set_recommendation(&rec(
        "shared_buffers",
        32768,
        "8kB",
        "postmaster",
        "restart",
    ));
    let restart_s = timed(
        &a,
        "Applying Config: restart",
        "applied with a restart",
        Duration::from_secs(120),
    );
    platform.wait_for(
        "configurations with shared_buffers 32768",
        Duration::from_secs(30),
        |r| configurations_with(r, "shared_buffers", 32768).is_some(),
    );
    assert_eq!(dcs_param(&c, "shared_buffers"), "32768");
    assert_eq!(c.show(0, "shared_buffers"), "256MB");
    assert_eq!(c.show(1, "shared_buffers"), "256MB");
    let (t0, t1) = (c.postmaster_start(0), c.postmaster_start(1));
    assert!(
        t0 != s0 && t1 != s1,
        "both restarted: {s0}->{t0}, {s1}->{t1}"
    );
    assert!(
        t1 < t0,
        "the replica ({t1}) restarted before the leader ({t0})"
    );
    let logs = a.logs();
    let (r2, r1) = (
        logs.find("Patroni member n2 (replica) restarted")
            .unwrap_or_else(|| panic!("{logs}")),
        logs.find("Patroni member n1 (leader) restarted")
            .unwrap_or_else(|| panic!("{logs}")),
    );
    assert!(r2 < r1, "{logs}");
    assert!(
        log_entries(&platform).is_empty(),
        "{:?}",
        log_entries(&platform)
    );
    assert_eq!(c.leader(0).as_deref(), Some("n1"));

    // 4. Rollback: the node's own Patroni configuration pins maintenance_work_mem (local
    // parameters win over the DCS), so the value never arrives; the DCS key is removed again.
    platform.clear();
    platform.set_recommendation(&rec("maintenance_work_mem", 131072, "kB", "user", "reload"));
    let rollback_s = timed(
        &a,
        "apply failed, rolling back",
        "Sending Error Report, type: config_apply_error",
        Duration::from_secs(90),
    );
    platform.wait_for("the rollback report", Duration::from_secs(30), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = &log_entries(&platform)[0];
    let msg = e["error_message"].as_str().unwrap();
    assert!(msg.contains("rolled back"), "{msg}");
    assert!(msg.contains("maintenance_work_mem"), "{msg}");
    assert!(
        dcs_param(&c, "maintenance_work_mem").is_null(),
        "the absent key is removed"
    );
    assert_eq!(c.show(0, "maintenance_work_mem"), "64MB");
    // The DCS still holds the earlier, verified changes.
    assert_eq!(dcs_param(&c, "work_mem"), "8192");
    assert!(a.child.id() > 0);
    for l in a
        .logs()
        .lines()
        .filter(|l| l.contains("restart") || l.contains("waiting"))
    {
        println!("{l}");
    }
    println!(
        "PATRONI_APPLY_TIMINGS reload={reload_s:.2}s restart={restart_s:.2}s rollback={rollback_s:.2}s"
    );
    drop(a);

    // 5. --check: REST reachable, this node's role, the leader.
    let (st, out, logs) = agent::run(
        &yaml(&c, 0, &c.rest_url(0), &platform.url),
        &["--patroni", "--check"],
        &[],
        Duration::from_secs(60),
    );
    assert!(st.success(), "{out}\n{logs}");
    assert!(out.contains("Patroni REST"), "{out}");
    assert!(out.contains("n1 is leader (running)"), "{out}");
    let leader = out
        .lines()
        .find(|l| l.contains("Patroni leader"))
        .unwrap_or("");
    assert!(
        leader.starts_with("[ ok ]") && leader.ends_with("n1 (running)"),
        "{out}"
    );
    let (_, out, _) = agent::run(
        &yaml(&c, 1, &c.rest_url(1), &platform.url),
        &["--patroni", "--check"],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.contains("n2 is replica (streaming)"), "{out}");

    // --plan shows the managed knob refused with Patroni's reason.
    platform.set_recommendation(&rec("max_connections", 200, "", "postmaster", "restart"));
    let (_, out, logs) = agent::run(
        &yaml(&c, 0, &c.rest_url(0), &platform.url),
        &["--patroni", "--plan"],
        &[],
        Duration::from_secs(60),
    );
    let line = out
        .lines()
        .find(|l| l.contains("max_connections"))
        .unwrap_or_else(|| panic!("{out}\n{logs}"));
    assert!(line.contains("REFUSED: managed by Patroni"), "{out}");
}

#[test]
fn patroni_rest_down_gives_clear_errors_and_https_with_a_private_ca_works() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = PatroniCluster::start_tls() else {
        return;
    };
    let platform = PlatformStandIn::start();
    let dead = format!("http://127.0.0.1:{}", support::pgcluster::free_port());
    let (st, out, _) = agent::run(
        &yaml(&c, 0, &dead, &platform.url),
        &["--patroni", "--check"],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(st.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("Patroni REST"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("[FAIL]"), "{line}");
    assert!(
        line.contains(&format!("GET {dead}/cluster failed")),
        "{line}"
    );

    platform.set_recommendation(&rec("work_mem", 10240, "kB", "user", "reload"));
    let mut a = Agent::spawn(
        &format!(
            "{}disable_checks: true\n",
            yaml(&c, 0, &dead, &platform.url)
        ),
        &["--patroni"],
        &[],
    );
    platform.wait_for("the apply error", Duration::from_secs(60), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = &log_entries(&platform)[0];
    assert_eq!(e["error_type"], "config_apply_error");
    let msg = e["error_message"].as_str().unwrap();
    assert!(msg.contains("GET /config"), "{msg}");
    assert!(msg.contains(&dead), "{msg}");
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert!(!msg.contains(REST_PASSWORD));
    // Nothing half-applied, and the agent keeps serving metrics.
    assert_eq!(dcs_param(&c, "work_mem"), "4MB");
    let n = platform.by_segment("metrics").len();
    platform.wait_for("more metrics", Duration::from_secs(20), |r| {
        r.iter().filter(|x| x.segment() == "metrics").count() > n + 1
    });
    assert!(a.child.try_wait().unwrap().is_none(), "{}", a.logs());
    assert!(!a.logs().contains(REST_PASSWORD));
    drop(a);

    // The same REST API over HTTPS: refused without the CA, applied with `ca_file`.
    let https = format!(
        "{}disable_checks: true\n",
        yaml(&c, 0, &c.rest_url(0), &platform.url)
    );
    let (_, out, _) = agent::run(
        &yaml(&c, 0, &c.rest_url(0), &platform.url),
        &["--patroni", "--check"],
        &[],
        Duration::from_secs(60),
    );
    let line = out
        .lines()
        .find(|l| l.contains("Patroni REST"))
        .unwrap_or("");
    assert!(
        line.starts_with("[FAIL]"),
        "an unknown CA is not trusted: {out}"
    );
    platform.clear();
    let with_ca = https.replace(
        "patroni:\n",
        &format!("patroni:\n  ca_file: \"{}\"\n", c.ca_file().display()),
    );
    let a = Agent::spawn(&with_ca, &["--patroni"], &[]);
    platform.wait_for(
        "work_mem 10240 applied over HTTPS",
        Duration::from_secs(60),
        |r| configurations_with(r, "work_mem", 10240).is_some(),
    );
    assert_eq!(dcs_param(&c, "work_mem"), "10240");
    assert!(
        log_entries(&platform).is_empty(),
        "{:?}\n{}",
        log_entries(&platform),
        a.logs()
    );
}

#[test]
fn the_replica_agent_refuses_then_applies_once_a_switchover_made_it_leader_and_settled() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = PatroniCluster::start() else {
        return;
    };
    let platform = PlatformStandIn::start();
    platform.set_recommendation(&rec("work_mem", 12288, "kB", "user", "reload"));
    let a = Agent::spawn(
        &yaml(&c, 1, &c.rest_url(1), &platform.url),
        &["--patroni"],
        &[],
    );

    // On the replica: refused with standby_node_detected, nothing written.
    platform.wait_for("standby_node_detected", Duration::from_secs(60), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = &log_entries(&platform)[0];
    assert_eq!(e["error_type"], "standby_node_detected");
    assert_eq!(
        e["error_message"],
        "Failed to apply configuration: Tuning operation rejected: Agent is running on a Standby node."
    );
    assert_eq!(dcs_param(&c, "work_mem"), "4MB");

    // Switchover: n2 leads. The agent reports the failover and waits for the cluster to settle.
    c.switchover("n1", "n2");
    c.wait("n2 to lead", Duration::from_secs(30), |c| {
        c.leader(1).as_deref() == Some("n2")
    });
    let reqs = platform.wait_for("failover_detected", Duration::from_secs(30), |r| {
        r.iter()
            .any(|x| x.segment() == "log-entries" && x.json()["error_type"] == "failover_detected")
    });
    let f = reqs
        .iter()
        .find(|x| x.segment() == "log-entries" && x.json()["error_type"] == "failover_detected")
        .unwrap()
        .clone();
    let fmsg = f.json()["error_message"].as_str().unwrap().to_string();
    assert!(fmsg.starts_with("failover detected: n1 -> n2"), "{fmsg}");

    let reqs = platform.wait_for(
        "work_mem 12288 applied on the new leader",
        Duration::from_secs(90),
        |r| configurations_with(r, "work_mem", 12288).is_some(),
    );
    let applied = configurations_with(&reqs, "work_mem", 12288).unwrap();
    let after = applied.at.duration_since(f.at);
    assert!(
        after >= Duration::from_secs(27),
        "applied {after:?} after the failover report: the 30 s stabilisation was not kept"
    );
    // Blocked while stabilising: no configuration sync at all in that window.
    let during = reqs
        .iter()
        .filter(|x| {
            x.segment() == "configurations"
                && x.at > f.at + Duration::from_secs(2)
                && x.at < f.at + Duration::from_secs(26)
        })
        .count();
    assert_eq!(
        during, 0,
        "configuration was synced during the stabilisation period"
    );
    assert_eq!(dcs_param(&c, "work_mem"), "12288");
    assert_eq!(c.show(1, "work_mem"), "12MB");
    c.wait(
        "work_mem 12MB on the new replica",
        Duration::from_secs(30),
        |c| c.show(0, "work_mem") == "12MB",
    );
    let kinds: Vec<String> = log_entries(&platform)
        .iter()
        .map(|e| e["error_type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "failover_detected").count(),
        1,
        "{kinds:?}"
    );
    drop(a);
}

/// Footprint figure, not a pass/fail check: the agent's RSS (VmRSS / VmHWM from
/// /proc/<pid>/status, as benches/footprint.rs reads it) with `--patroni` on the leader of a real
/// cluster, after `DBTUNE_RSS_MINUTES` (default 5) minutes with a reload applied at the start.
/// `DBTUNE_AGENT_BIN` picks the binary (e.g. target/release/dbtune-agent). Run with
/// `cargo test --test patroni_e2e -- --ignored --nocapture patroni_rss`.
#[test]
#[ignore]
fn patroni_rss_after_minutes() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(c) = PatroniCluster::start() else {
        return;
    };
    let platform = PlatformStandIn::start();
    platform.set_recommendation(&rec("work_mem", 8192, "kB", "user", "reload"));
    let dir = agent::temp_dir("rss");
    let cfg = dir.join("dbtune.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}state_dir: \"{}\"\n",
            yaml(&c, 0, &c.rest_url(0), &platform.url),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let bin = std::env::var("DBTUNE_AGENT_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_dbtune-agent").to_string());
    let mut child = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&cfg)
        .arg("--patroni")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let minutes: u64 = std::env::var("DBTUNE_RSS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(5);
    let kb = |key: &str| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for m in 1..=minutes {
        std::thread::sleep(Duration::from_secs(60));
        println!(
            "PATRONI_RSS minute={m} rss={:.1}MiB peak={:.1}MiB",
            kb("VmRSS:") as f64 / 1024.0,
            kb("VmHWM:") as f64 / 1024.0
        );
    }
    assert!(configurations_with(&platform.requests(), "work_mem", 8192).is_some());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
