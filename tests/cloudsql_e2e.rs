//! `--cloudsql` through the real agent binary: the Cloud SQL Admin + Cloud Monitoring +
//! token stand-in (tests/support/cloudsql.rs, checked against Google's discovery documents)
//! applies accepted flags to a real PostgreSQL cluster, and the agent verifies in pg_settings.
mod support;

use serde_json::Value;
use std::time::Duration;
use support::agent::{self, Agent};
use support::apply::setting;
use support::cloudsql::{Google, INSTANCE, PROJECT};
use support::pgcluster::PgCluster;
use support::platform::{recommendation as rec, setting_in, PlatformStandIn, Recorded};

struct Rig {
    pg: PgCluster,
    platform: PlatformStandIn,
    google: Google,
    dir: std::path::PathBuf,
}

fn rig() -> Rig {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("cloudsql");
    let google = Google::start(&pg.url(), &pg.restart_command(), &dir);
    google.typical_metrics();
    Rig {
        pg,
        platform,
        google,
        dir,
    }
}

impl Rig {
    fn spawn(&self, pg_extra: &str) -> Agent {
        let yaml = agent::config_yaml(&self.pg.url(), &self.platform.url, "disable_checks: true\n")
            .replace("postgresql:\n", &format!("postgresql:\n{pg_extra}"));
        let env = self.google.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Agent::spawn(&yaml, &["--cloudsql"], &env)
    }

    fn log_entries(&self) -> Vec<Value> {
        self.platform
            .by_segment("log-entries")
            .iter()
            .map(|r| r.json())
            .collect()
    }

    /// No secret (issued tokens, the private key) in logs or in anything sent to the platform.
    fn assert_no_secrets(&self, a: &Agent) {
        let tokens = self.google.state.lock().unwrap().tokens_issued.clone();
        assert!(!tokens.is_empty(), "the agent never got a token");
        let logs = a.logs() + &a.out();
        let sent: String = self
            .platform
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        for t in &tokens {
            assert!(!logs.contains(t.as_str()), "token in the logs");
            assert!(!sent.contains(t.as_str()), "token sent to the platform");
        }
        let key_piece = "MIIEugIBADANBgkqhkiG9w0BAQEFAASCBKQwggSgAgEAAoIBAQDTauZ4VwwnYQiw";
        assert!(!logs.contains(key_piece) && !sent.contains(key_piece));
    }
}

/// `platform.wait_for`, printing the agent's log when it times out.
fn wait(
    r: &Rig,
    a: &Agent,
    what: &str,
    secs: u64,
    pred: impl Fn(&[Recorded]) -> bool,
) -> Vec<Recorded> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.platform.wait_for(what, Duration::from_secs(secs), &pred)
    })) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("agent log:\n{}", a.logs());
            std::panic::resume_unwind(e)
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn reload_flags_are_patched_awaited_and_verified_with_metrics_and_no_secrets() {
    let r = rig();
    {
        let mut s = r.google.state.lock().unwrap();
        s.busy_patches = 2; // 409 operationInProgress twice: retried with back-off
        s.throttle = 1; // one 429 with Retry-After
        s.broken_metrics = vec!["disk/quota".into()]; // 500: left out, not sent as 0
    }
    r.platform
        .set_recommendation(&rec(&[("work_mem", 8192, "kB", "user")], "reload"));
    let a = r.spawn("");
    r.platform.wait_for(
        "configurations with work_mem = 8192",
        Duration::from_secs(60),
        |q| {
            q.iter().any(|x| {
                x.segment() == "configurations"
                    && x.method == "POST"
                    && setting_in(x, "work_mem") == 8192
            })
        },
    );
    assert_eq!(setting(&r.pg, "work_mem").0, "8192");
    // The whole flag list was sent: the flag the instance already had is kept.
    assert_eq!(r.google.flag("work_mem").as_deref(), Some("8192"));
    assert_eq!(
        r.google.flag("cloudsql.iam_authentication").as_deref(),
        Some("on")
    );
    // The patch's own operation was awaited; operations.list (whose newest item is a
    // concurrent backup here) was never used.
    assert!(r.google.calls("sql.operations.get") >= 1);
    assert_eq!(r.google.calls("sql.operations.list"), 0);
    assert_eq!(
        r.google.calls("sql.instances.patch"),
        3,
        "two 409s, then accepted"
    );
    assert!(r.log_entries().is_empty(), "{:?}", r.log_entries());

    // Metrics: keys and values as Cloud Monitoring gave them.
    let reqs = r
        .platform
        .wait_for("two metrics payloads", Duration::from_secs(30), |q| {
            q.iter().filter(|x| x.segment() == "metrics").count() >= 2
        });
    let metrics: Vec<Value> = reqs
        .iter()
        .filter(|x| x.segment() == "metrics")
        .map(|x| x.json()["metrics"].clone())
        .collect();
    let m = &metrics[0];
    let v = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {m}"));
    assert_eq!(v("node_cpu_usage"), 25.0);
    assert_eq!(v("node_disk_iops_read"), 10.0, "600 ops a minute = 10/s");
    assert_eq!(v("node_disk_iops_write"), 20.0);
    assert_eq!(v("node_disk_iops_total"), 30.0);
    assert_eq!(v("node_disk_used_percentage"), 12.5);
    assert_eq!(v("node_memory_used_percentage"), 40.0);
    assert_eq!(v("node_memory_available_percentage"), 60.0);
    assert_eq!(v("node_memory_used"), 3221225472.0);
    assert_eq!(v("node_memory_freeable"), 4831838208.0);
    assert_eq!(v("node_net_receive_count"), 123456.0);
    assert_eq!(v("node_net_send_count"), 654321.0);
    assert!(
        m.get("node_disk_size").is_none(),
        "a failed value is omitted: {m}"
    );
    // The running total counts each minute once, not on every 5-s collection.
    for later in &metrics[1..] {
        assert_eq!(later["node_disk_io_ops_read"], 600, "{later}");
        assert_eq!(later["node_disk_io_ops_total"], 1800, "{later}");
    }
    // System info from Cloud Monitoring.
    let si = r
        .platform
        .wait_for("system info", Duration::from_secs(20), |q| {
            q.iter().any(|x| x.segment() == "system-info")
        });
    let si = si
        .iter()
        .find(|x| x.segment() == "system-info")
        .unwrap()
        .json();
    assert_eq!(si["system_info"]["node_cpu_count"]["value"], 2);
    assert_eq!(
        si["system_info"]["node_memory_total"]["value"],
        8053063680i64
    );
    // Active config: no internal parameters.
    let cf = reqs
        .iter()
        .rev()
        .find(|x| x.segment() == "configurations" && x.method == "POST")
        .unwrap()
        .json();
    let rows = cf["config"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["name"] == "work_mem"));
    assert!(
        !rows.iter().any(|r| r["context"] == "internal"),
        "internal rows are filtered"
    );
    assert!(
        r.google.violations().is_empty(),
        "{:?}",
        r.google.violations()
    );
    r.assert_no_secrets(&a);
}

#[test]
fn a_restart_flag_is_applied_by_the_operation_and_verified_after_the_restart() {
    let r = rig();
    let before: std::time::SystemTime =
        r.pg.client()
            .query_one("SELECT pg_postmaster_start_time()", &[])
            .unwrap()
            .get(0);
    r.platform.set_recommendation(&rec(
        &[("shared_buffers", 4096, "8kB", "postmaster")],
        "restart",
    ));
    let a = r.spawn("  allow_restart: true\n");
    wait(
        &r,
        &a,
        "configurations with shared_buffers = 4096",
        90,
        |q| {
            q.iter().any(|x| {
                x.segment() == "configurations"
                    && x.method == "POST"
                    && setting_in(x, "shared_buffers") == 4096
            })
        },
    );
    assert_eq!(setting(&r.pg, "shared_buffers").0, "4096");
    let after: std::time::SystemTime =
        r.pg.client()
            .query_one("SELECT pg_postmaster_start_time()", &[])
            .unwrap()
            .get(0);
    assert!(after > before, "the operation restarted PostgreSQL");
    assert_eq!(r.google.state.lock().unwrap().restarts, 1);
    assert!(r.log_entries().is_empty(), "{:?}", r.log_entries());
    assert!(
        r.google.violations().is_empty(),
        "{:?}",
        r.google.violations()
    );
    r.assert_no_secrets(&a);
}

#[test]
fn a_failure_mid_apply_is_rolled_back_and_a_failed_operation_is_a_failure() {
    let r = rig();
    let (wm, mwm) = (
        setting(&r.pg, "work_mem").0,
        setting(&r.pg, "maintenance_work_mem").0,
    );
    // The operation reports success but only the first flag reached PostgreSQL.
    r.google.state.lock().unwrap().partial_once = true;
    r.platform.set_recommendation(&rec(
        &[
            ("work_mem", 8192, "kB", "user"),
            ("maintenance_work_mem", 131072, "kB", "user"),
        ],
        "reload",
    ));
    let a = r.spawn("");
    let q = r
        .platform
        .wait_for("a log entry", Duration::from_secs(60), |q| {
            q.iter().any(|x| x.segment() == "log-entries")
        });
    let e = q
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    assert_eq!(e["error_type"], "config_apply_error");
    let msg = e["error_message"].as_str().unwrap();
    assert!(
        msg.contains("verification failed") && msg.contains("rolled back"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("projects/{PROJECT}/instances/{INSTANCE}")),
        "{msg}"
    );
    // Nothing left changed: PostgreSQL and the instance's flag list are as before.
    assert_eq!(setting(&r.pg, "work_mem").0, wm);
    assert_eq!(setting(&r.pg, "maintenance_work_mem").0, mwm);
    assert_eq!(r.google.flag("work_mem"), None);
    assert_eq!(r.google.flag("maintenance_work_mem"), None);
    assert_eq!(
        r.google.flag("cloudsql.iam_authentication").as_deref(),
        Some("on")
    );

    // A different recommendation whose operation ends DONE with an error.
    r.google.state.lock().unwrap().fail_flag = Some("work_mem".into());
    r.platform.clear();
    r.platform
        .set_recommendation(&rec(&[("work_mem", 16384, "kB", "user")], "reload"));
    let q = r
        .platform
        .wait_for("a second log entry", Duration::from_secs(60), |q| {
            q.iter().any(|x| x.segment() == "log-entries")
        });
    let e = q
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    let msg = e["error_message"].as_str().unwrap();
    assert!(
        msg.contains("finished with an error")
            && msg.contains("INVALID_FLAG_VALUE")
            && msg.contains("op-update-"),
        "{msg}"
    );
    assert!(msg.contains("rolled back"), "{msg}");
    assert_eq!(setting(&r.pg, "work_mem").0, wm);
    assert_eq!(r.google.flag("work_mem"), None);
    assert!(
        r.google.violations().is_empty(),
        "{:?}",
        r.google.violations()
    );
    r.assert_no_secrets(&a);
}

#[test]
fn high_memory_raises_the_guardrail_and_a_refused_restart_is_restart_not_allowed() {
    let r = rig();
    r.google.set_metric("memory/components:Usage", 95.0);
    r.platform.set_recommendation(&rec(
        &[("shared_buffers", 4096, "8kB", "postmaster")],
        "restart",
    ));
    let a = r.spawn("");
    let q = r.platform.wait_for(
        "a guardrail and a log entry",
        Duration::from_secs(40),
        |q| {
            q.iter().any(|x| x.segment() == "guardrails")
                && q.iter().any(|x| x.segment() == "log-entries")
        },
    );
    let g = q
        .iter()
        .find(|x| x.segment() == "guardrails")
        .unwrap()
        .json();
    assert_eq!(g["level"], "critical", "{g}");
    assert_eq!(g["type"], "memory", "{g}");
    let e = q
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    assert_eq!(e["error_type"], "restart_not_allowed", "{e}");
    assert_eq!(r.google.calls("sql.instances.patch"), 0, "nothing was sent");
    r.assert_no_secrets(&a);
}

#[test]
fn check_reports_credentials_instance_and_permissions() {
    let r = rig();
    let yaml = agent::config_yaml(&r.pg.url(), &r.platform.url, "");
    let env = r.google.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (_, out, logs) = agent::run(
        &yaml,
        &["--cloudsql", "--check"],
        &env,
        Duration::from_secs(60),
    );
    assert!(
        out.contains("google credentials")
            && out.contains("service account agent@dbtune-proj.iam.gserviceaccount.com"),
        "{out}\n{logs}"
    );
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name}: {out}"))
            .to_string()
    };
    assert!(line("cloud sql instance").contains(" ok "), "{out}");
    assert!(line("cloud sql instance").contains("POSTGRES_15"), "{out}");
    assert!(line("cloud monitoring").contains(" ok "), "{out}");
    assert!(
        line("cloud sql flag changes").contains("cloudsql.instances.update"),
        "{out}"
    );
    // A wrong instance: the failing call and the resource are named.
    let mut env2 = r.google.env();
    for (k, v) in env2.iter_mut() {
        if k == "DBT_GCP_DATABASE_NAME" {
            *v = "no-such-instance".into();
        }
    }
    let env2: Vec<(&str, &str)> = env2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (st, out, _) = agent::run(
        &yaml,
        &["--cloudsql", "--check"],
        &env2,
        Duration::from_secs(60),
    );
    assert!(!st.success());
    let l = out
        .lines()
        .find(|l| l.contains("cloud sql instance"))
        .unwrap()
        .to_string();
    assert!(
        l.contains("FAIL")
            && l.contains("instances.get")
            && l.contains("no-such-instance")
            && l.contains("404"),
        "{l}"
    );
    let tokens = r.google.state.lock().unwrap().tokens_issued.clone();
    assert!(tokens.iter().all(|t| !out.contains(t.as_str())));
}

/// Measurement, not a test: `cargo test --test cloudsql_e2e -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: prints the API calls per minute in steady state"]
fn steady_state_api_calls_per_minute() {
    let r = rig();
    let a = r.spawn("");
    std::thread::sleep(Duration::from_secs(20));
    let before = r.google.state.lock().unwrap().calls.clone();
    std::thread::sleep(Duration::from_secs(60));
    let after = r.google.state.lock().unwrap().calls.clone();
    for (k, v) in &after {
        println!(
            "cloudsql steady state: {k}: {} calls/min",
            v - before.get(k).unwrap_or(&0)
        );
    }
    println!(
        "cloudsql steady state: token requests in 80 s: {}",
        r.google.state.lock().unwrap().tokens_issued.len()
    );
    drop(a);
}

/// The stand-in's checks bite: requests that do not fit Google's discovery documents are
/// refused with 400 and recorded.
#[test]
fn the_stand_in_refuses_requests_outside_the_discovery_documents() {
    use dbtune_agent::cloud::gcp::Google as Client;
    use dbtune_agent::cloud::http::{Http, Request};
    let dir = agent::temp_dir("cloudsql-validate");
    let g = Google::start("postgres://nobody@127.0.0.1:1/x", "false", &dir);
    let key_file = g.key_file.display().to_string();
    let env = dbtune_agent::cloud::Env::from_pairs([(
        "GOOGLE_APPLICATION_CREDENTIALS",
        key_file.as_str(),
    )]);
    let mut c = Client::from_env(Http::new(), &env).unwrap();
    let base = g.server.url();
    c.sqladmin_base = base.clone();
    let patch = |body: serde_json::Value| {
        c.send(
            Request::new(
                "PATCH",
                format!("{base}/v1/projects/{PROJECT}/instances/{INSTANCE}"),
            )
            .json(&body),
        )
    };
    let e = patch(serde_json::json!({"settings": {"databaseFlag": []}})).unwrap_err();
    assert_eq!(e.status, Some(400), "{e}");
    let e = patch(
        serde_json::json!({"settings": {"databaseFlags": [{"name": "work_mem", "value": 8192}]}}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("expected string"), "{e}");
    let e = c
        .send(Request::get(format!(
            "{base}/v3/projects/{PROJECT}/timeSeries?filter=x&interval.endTime=2026-01-01T00:00:00Z&view=SUMMARY"
        )))
        .unwrap_err();
    assert!(e.to_string().contains("view=SUMMARY"), "{e}");
    let e = c
        .send(Request::post(format!(
            "{base}/v1/projects/{PROJECT}/instances/{INSTANCE}/reboot"
        )))
        .unwrap_err();
    assert!(e.to_string().contains("not a method"), "{e}");
    let v = g.violations();
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v[0].contains("undeclared field databaseFlag"), "{v:?}");
    // A valid request passes.
    assert!(c.sql_instance_get(PROJECT, INSTANCE).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
