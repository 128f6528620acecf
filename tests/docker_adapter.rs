//! The Docker adapter through the real agent binary against a real Docker Engine (Debian's
//! dockerd, started by the harness) running PostgreSQL 15 in a container: metrics and system
//! info from the Engine, reload and restart applies, restart refused, a restart PostgreSQL
//! cannot come back from rolled back through the Engine's archive API, the health gate across
//! a container stopped by hand, and `--check`.
mod support;

use std::time::Duration;
use support::agent::{self, Agent, API_KEY};
use support::docker::{engine, PgContainer};
use support::platform::{setting_in, PlatformStandIn};

fn yaml(c: &PgContainer, platform: &PlatformStandIn, extra: &str) -> String {
    agent::config_yaml(
        &c.url(),
        &platform.url,
        &format!(
            "disable_checks: true\ndocker:\n  container_name: {}\n  stop_timeout: 10\n{extra}",
            c.name
        ),
    )
}

fn env() -> Vec<(&'static str, String)> {
    vec![("DOCKER_HOST", engine().host())]
}

fn spawn(y: &str, extra_env: &[(&str, &str)]) -> Agent {
    let e = env();
    let mut all: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra_env);
    Agent::spawn(y, &["--docker"], &all)
}

fn rec(knob: &str, setting: serde_json::Value, vartype: &str, context: &str, how: &str) -> String {
    format!(
        r#"[{{"config":[{{"name":"{knob}","setting":{setting},"unit":null,"vartype":"{vartype}","context":"{context}"}}],"knobs_overrides":["{knob}"],"knob_application":"{how}"}}]"#
    )
}

fn errors(platform: &PlatformStandIn) -> Vec<serde_json::Value> {
    platform
        .by_segment("log-entries")
        .iter()
        .map(|r| r.json())
        .collect()
}

#[test]
fn metrics_system_info_and_guardrail_come_from_the_engine() {
    let c = PgContainer::start("512m");
    let platform = PlatformStandIn::start();
    let a = spawn(&yaml(&c, &platform, ""), &[("DBT_MEMORY_THRESHOLD", "1")]);
    let reqs = platform.wait_for(
        "two metrics, system info, a guardrail",
        Duration::from_secs(40),
        |r| {
            r.iter().filter(|x| x.segment() == "metrics").count() >= 2
                && r.iter().any(|x| x.segment() == "system-info")
                && r.iter().any(|x| x.segment() == "guardrails")
        },
    );
    let metrics: Vec<serde_json::Value> = reqs
        .iter()
        .filter(|r| r.segment() == "metrics")
        .map(|r| r.json())
        .collect();
    let used = metrics[0]["metrics"]["node_memory_used"].as_i64().unwrap();
    assert!(used > 1 << 20 && used < 512 << 20, "memory used {used}");
    // The first sample has nothing to compare with; later ones carry a real rate.
    assert!(
        metrics[0]["metrics"].get("node_cpu_usage").is_none(),
        "{}",
        metrics[0]
    );
    let cpu = metrics[1]["metrics"]["node_cpu_usage"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "cpu {cpu}");
    let si = reqs
        .iter()
        .find(|r| r.segment() == "system-info")
        .unwrap()
        .json();
    let m = &si["system_info"];
    assert_eq!(m["system_info_platform"]["value"], "docker");
    assert_eq!(
        m["system_info_platform_version"]["value"],
        support::docker::PG_IMAGE
    );
    assert_eq!(m["node_cpu_count"]["value"], 1);
    assert_eq!(m["node_memory_total"]["value"], 512 * 1024 * 1024);
    assert_eq!(m["node_os_info"]["value"], "linux");
    assert_eq!(m["pg_max_connections"]["value"], 30);
    let g = reqs.iter().find(|r| r.segment() == "guardrails").unwrap();
    assert_eq!(g.body, br#"{"level":"critical","type":"memory"}"#);
    assert!(!a.logs().contains(API_KEY));
}

#[test]
fn reload_and_restart_applies_land_in_the_container() {
    let c = PgContainer::start("512m");
    let platform = PlatformStandIn::start();
    platform.set_recommendation(&rec(
        "work_mem",
        serde_json::json!(8192),
        "integer",
        "user",
        "reload",
    ));
    let started = c.started_at();
    let a = spawn(
        &yaml(&c, &platform, ""),
        &[("DBT_POSTGRESQL_ALLOW_RESTART", "true")],
    );
    platform.wait_for("work_mem 8192 reported", Duration::from_secs(40), |r| {
        r.iter().any(|x| {
            x.segment() == "configurations"
                && x.method == "POST"
                && setting_in(x, "work_mem") == 8192
        })
    });
    assert_eq!(c.setting("work_mem"), "8192");
    assert!(
        c.auto_conf().contains("work_mem = '8192'"),
        "{}",
        c.auto_conf()
    );
    assert_eq!(
        c.started_at(),
        started,
        "a reload must not restart the container"
    );

    // A restart-only knob: the container is restarted once and the value is live.
    platform.set_recommendation(&rec(
        "shared_buffers",
        serde_json::json!(4096),
        "integer",
        "postmaster",
        "restart",
    ));
    platform.wait_for(
        "shared_buffers 4096 reported",
        Duration::from_secs(60),
        |r| {
            r.iter().any(|x| {
                x.segment() == "configurations"
                    && x.method == "POST"
                    && setting_in(x, "shared_buffers") == 4096
            })
        },
    );
    assert_ne!(c.started_at(), started, "the container was restarted");
    assert_eq!(c.setting("shared_buffers"), "4096");
    let restarted_at = c.started_at();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        c.started_at(),
        restarted_at,
        "served again: no second restart"
    );
    let logs = a.logs();
    let applied: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("applied and verified on container"))
        .collect();
    assert_eq!(applied.len(), 2, "{logs}");
    // Timings on the real Engine, for the record.
    for l in applied {
        eprintln!("docker apply: {l}");
    }
    assert!(errors(&platform).is_empty(), "{:?}", errors(&platform));
}

#[test]
fn restart_not_allowed_is_refused_and_nothing_is_written() {
    let c = PgContainer::start("512m");
    let platform = PlatformStandIn::start();
    let before = c.auto_conf();
    let started = c.started_at();
    platform.set_recommendation(&rec(
        "shared_buffers",
        serde_json::json!(4096),
        "integer",
        "postmaster",
        "restart",
    ));
    let _a = spawn(&yaml(&c, &platform, ""), &[]);
    let reqs = platform.wait_for("an apply error", Duration::from_secs(40), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = reqs
        .iter()
        .find(|r| r.segment() == "log-entries")
        .unwrap()
        .json();
    assert_eq!(e["error_type"], "config_apply_error");
    let msg = e["error_message"].as_str().unwrap();
    assert!(
        msg.contains("restart is not allowed") && msg.contains("shared_buffers"),
        "{msg}"
    );
    assert_eq!(c.auto_conf(), before);
    assert_eq!(c.started_at(), started);
    assert_eq!(c.setting("shared_buffers"), "2048");
}

#[test]
fn a_restart_postgresql_cannot_survive_is_rolled_back_through_the_engine() {
    let c = PgContainer::start("512m");
    let platform = PlatformStandIn::start();
    let before = c.auto_conf();
    // 8 × the host's RAM of shared memory: the kernel refuses the mapping, the postmaster (the
    // container's PID 1) exits, the container stops.
    let mem_kb: i64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let pages = mem_kb.min(1_073_741_823);
    platform.set_recommendation(&rec(
        "shared_buffers",
        serde_json::json!(pages),
        "integer",
        "postmaster",
        "restart",
    ));
    let a = spawn(
        &yaml(&c, &platform, "apply:\n  ready_timeout: 15\n"),
        &[("DBT_POSTGRESQL_ALLOW_RESTART", "true")],
    );
    let reqs = platform.wait_for("the rollback reported", Duration::from_secs(120), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = reqs
        .iter()
        .find(|r| r.segment() == "log-entries")
        .unwrap()
        .json();
    let msg = e["error_message"].as_str().unwrap();
    assert!(msg.contains("rolled back"), "{msg}\n{}", a.logs());
    assert!(
        msg.contains("restored from the snapshot inside container"),
        "{msg}"
    );
    // Timings on the real Engine, for the record.
    for l in a.logs().lines().filter(|l| l.contains("rolled back [")) {
        eprintln!("docker rollback: {l}");
    }
    c.wait_ready(Duration::from_secs(20));
    assert!(c.running());
    assert_eq!(c.setting("shared_buffers"), "2048");
    assert_eq!(c.auto_conf(), before);
    // Not retried as is: no further restarts.
    let at = c.started_at();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(c.started_at(), at);
}

#[test]
fn a_container_stopped_by_hand_closes_and_reopens_the_health_gate() {
    let c = PgContainer::start("512m");
    let platform = PlatformStandIn::start();
    let a = spawn(&yaml(&c, &platform, ""), &[]);
    platform.wait_for("metrics", Duration::from_secs(30), |r| {
        r.iter().any(|x| x.segment() == "metrics")
    });
    engine().ok(&["stop", "-t", "5", &c.name]);
    a.wait_log(
        "health gate: database connection lost",
        Duration::from_secs(30),
    );
    engine().ok(&["start", &c.name]);
    c.wait_ready(Duration::from_secs(30));
    a.wait_log(
        "health gate: database connection recovered",
        Duration::from_secs(60),
    );
    platform.clear();
    platform.wait_for(
        "metrics after the gate reopened",
        Duration::from_secs(30),
        |r| r.iter().any(|x| x.segment() == "metrics"),
    );
}

#[test]
fn check_reports_the_engine_and_the_container() {
    let c = PgContainer::start("256m");
    let platform = PlatformStandIn::start();
    let e = env();
    let envs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, out, _) = agent::run(
        &yaml(&c, &platform, ""),
        &["--docker", "--check"],
        &envs,
        Duration::from_secs(60),
    );
    assert!(
        out.contains("docker engine") && out.contains("API 1.4"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{} (", c.name)) && out.contains("running"),
        "{out}"
    );
    assert!(st.success(), "{out}");
    let bad = yaml(&c, &platform, "").replace(
        &format!("container_name: {}", c.name),
        "container_name: no-such-container",
    );
    let (st, out, _) = agent::run(
        &bad,
        &["--docker", "--check"],
        &envs,
        Duration::from_secs(60),
    );
    assert!(!st.success());
    assert!(
        out.contains("FAIL") && out.contains("no-such-container"),
        "{out}"
    );
    let (st, out, _) = agent::run(
        &yaml(&c, &platform, ""),
        &["--docker", "--check"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
        Duration::from_secs(60),
    );
    assert!(!st.success());
    assert!(out.contains("/nonexistent/docker.sock"), "{out}");
}
