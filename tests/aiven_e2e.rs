//! `--aiven` through the real agent binary: the Aiven API stand-in (tests/support/aiven.rs,
//! checked against Aiven's OpenAPI description) applies accepted user_config keys to a real
//! PostgreSQL cluster (reload, or a restart while the service is REBUILDING), and the agent
//! verifies in pg_settings.
mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::agent::{self, Agent};
use support::aiven::{Aiven, PROJECT, SERVICE};
use support::apply::setting;
use support::pgcluster::PgCluster;
use support::platform::{setting_in, PlatformStandIn, Recorded};

struct Rig {
    pg: PgCluster,
    platform: PlatformStandIn,
    aiven: Aiven,
}

fn rig() -> Rig {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let aiven = Aiven::start(&pg.url(), &pg.restart_command());
    aiven.typical_metrics();
    Rig {
        pg,
        platform,
        aiven,
    }
}

/// A recommendation as the platform serves it: `(name, setting, unit, vartype)`.
fn rec(knobs: &[(&str, Value, &str, &str)], application: &str) -> String {
    let config: Vec<Value> = knobs
        .iter()
        .map(|(n, v, u, t)| json!({"name": n, "setting": v, "unit": u, "vartype": t, "context": "service"}))
        .collect();
    let names: Vec<&str> = knobs.iter().map(|k| k.0).collect();
    json!([{"config": config, "knobs_overrides": names, "knob_application": application}])
        .to_string()
}

impl Rig {
    fn yaml(&self, pg_extra: &str, extra: &str) -> String {
        agent::config_yaml(&self.pg.url(), &self.platform.url, extra)
            .replace("postgresql:\n", &format!("postgresql:\n{pg_extra}"))
    }

    fn spawn(&self, pg_extra: &str) -> Agent {
        let env = self.aiven.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Agent::spawn(
            &self.yaml(pg_extra, "disable_checks: true\n"),
            &["--aiven"],
            &env,
        )
    }

    fn wait(
        &self,
        a: &Agent,
        what: &str,
        secs: u64,
        pred: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.platform
                .wait_for(what, Duration::from_secs(secs), &pred)
        })) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("agent log:\n{}", a.logs());
                std::panic::resume_unwind(e)
            }
        }
    }

    fn log_entries(&self) -> Vec<Value> {
        self.platform
            .by_segment("log-entries")
            .iter()
            .map(|r| r.json())
            .collect()
    }

    fn first_log_entry(&self, a: &Agent) -> Value {
        let q = self.wait(a, "a log entry", 90, |q| {
            q.iter().any(|x| x.segment() == "log-entries")
        });
        q.iter()
            .find(|x| x.segment() == "log-entries")
            .unwrap()
            .json()
    }

    /// The API token never in the logs or in anything sent to the platform.
    fn assert_no_secrets(&self, a: &Agent) {
        let token = self.aiven.token();
        let logs = a.logs() + &a.out();
        let sent: String = self
            .platform
            .requests()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert!(!logs.contains(&token), "token in the logs");
        assert!(!sent.contains(&token), "token sent to the platform");
    }

    fn assert_no_violations(&self) {
        let v = self.aiven.violations();
        assert!(v.is_empty(), "{v:?}");
    }
}

/// A `configurations` payload has `name` = `v` (numbers compared as numbers).
fn configurations_with(q: &[Recorded], name: &str, v: f64) -> bool {
    q.iter().any(|x| {
        x.segment() == "configurations"
            && x.method == "POST"
            && setting_in(x, name).as_f64() == Some(v)
    })
}

#[test]
fn reload_keys_in_mb_and_pg_section_with_metrics_system_info_and_no_secrets() {
    let r = rig();
    r.aiven.state.lock().unwrap().throttle = 1; // one 429: retried
    r.platform.set_recommendation(&rec(
        &[
            ("work_mem", json!(16), "MB", "integer"),
            ("bgwriter_delay", json!(300), "ms", "integer"),
        ],
        "reload",
    ));
    let a = r.spawn("");
    r.wait(&a, "configurations with work_mem = 16 (MB)", 90, |q| {
        configurations_with(q, "work_mem", 16.0) && configurations_with(q, "bgwriter_delay", 300.0)
    });
    // PostgreSQL really runs with it: 16 MB = 16384 kB.
    assert_eq!(setting(&r.pg, "work_mem").0, "16384");
    assert_eq!(setting(&r.pg, "bgwriter_delay").0, "300");
    // Only the changed keys were sent, pg parameters under `pg`, numbers as numbers.
    let updates = r.aiven.state.lock().unwrap().updates.clone();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(
        updates[0],
        json!({"user_config": {"work_mem": 16, "pg": {"bgwriter_delay": 300}}, "powered": true})
    );
    let uc = r.aiven.user_config();
    assert_eq!(
        uc["pg_version"], "15",
        "other keys are Aiven's to keep: {uc}"
    );
    assert!(r.log_entries().is_empty(), "{:?}", r.log_entries());

    // Active config: shared_buffers_percentage first, work_mem in MB, both context service.
    let q = r.platform.requests();
    let cf = q
        .iter()
        .rev()
        .find(|x| x.segment() == "configurations" && x.method == "POST")
        .unwrap()
        .json();
    let rows = cf["config"].as_array().unwrap();
    assert_eq!(rows[0]["name"], "shared_buffers_percentage", "{}", rows[0]);
    assert_eq!(rows[0]["setting"].as_f64(), Some(20.0));
    assert_eq!(rows[0]["unit"], "percentage");
    let wm = rows.iter().find(|x| x["name"] == "work_mem").unwrap();
    assert_eq!(
        (wm["unit"].as_str(), wm["context"].as_str()),
        (Some("MB"), Some("service"))
    );

    // Metrics: every round has them (no skipped half), values of the (master) column.
    let q = r.wait(&a, "three metrics payloads", 40, |q| {
        q.iter().filter(|x| x.segment() == "metrics").count() >= 3
    });
    let payloads: Vec<Value> = q
        .iter()
        .filter(|x| x.segment() == "metrics")
        .map(|x| x.json()["metrics"].clone())
        .collect();
    for m in &payloads {
        let v = |k: &str| {
            m[k]["value"]
                .as_f64()
                .or(m[k].as_f64())
                .unwrap_or_else(|| panic!("{k} missing: {m}"))
        };
        assert_eq!(v("node_cpu_usage"), 25.0);
        assert_eq!(v("node_memory_available_percentage"), 60.0);
        assert_eq!(v("node_memory_used_percentage"), 40.0);
        assert_eq!(v("node_disk_used_percentage"), 12.5);
        assert_eq!(v("node_disk_iops_read"), 10.0);
        assert_eq!(v("node_disk_iops_write"), 20.0);
        assert_eq!(v("node_disk_iops_total"), 30.0);
        assert_eq!(v("node_load_average"), 0.75);
        assert_eq!(v("node_net_receive_per_second"), 1234.5);
        assert_eq!(v("node_net_send_per_second"), 6543.25);
    }
    // System info from ServiceGet.
    let si = q
        .iter()
        .find(|x| x.segment() == "system-info")
        .unwrap()
        .json();
    assert_eq!(si["system_info"]["node_cpu_count"]["value"], 2);
    assert_eq!(
        si["system_info"]["node_memory_total"]["value"],
        (r.aiven.state.lock().unwrap().node_memory_mb as i64) * 1048576
    );
    // 40 % used is under the 90 % threshold: no guardrail (Go would signal 60 % available).
    assert!(r.platform.by_segment("guardrails").is_empty());
    r.assert_no_violations();
    r.assert_no_secrets(&a);
}

#[test]
fn shared_buffers_percentage_restarts_through_a_rebuild_and_round_trips() {
    let r = rig();
    let before: i64 = setting(&r.pg, "shared_buffers").0.parse().unwrap();
    let memory_mb = r.aiven.state.lock().unwrap().node_memory_mb;
    assert_eq!(
        before as f64 * 8192.0,
        memory_mb * 1048576.0 / 5.0,
        "20 % of node memory"
    );
    r.platform.set_recommendation(&rec(
        &[("shared_buffers_percentage", json!(25), "percentage", "real")],
        "restart",
    ));
    let a = r.spawn("  allow_restart: true\n");
    r.wait(
        &a,
        "configurations with shared_buffers_percentage = 25",
        120,
        |q| configurations_with(q, "shared_buffers_percentage", 25.0),
    );
    // 25 % of node memory (in whole MB, as pages of 8 kB), after a real restart.
    let want = (memory_mb * 0.25).floor() as i64 * 128;
    assert_eq!(setting(&r.pg, "shared_buffers").0, want.to_string());
    assert!(want > before);
    let s = r.aiven.state.lock().unwrap();
    assert_eq!(s.restarts, 1);
    assert_eq!(s.updates.len(), 1, "{:?}", s.updates);
    assert_eq!(
        s.updates[0]["user_config"],
        json!({"shared_buffers_percentage": 25.0})
    );
    assert_eq!(s.user_config["shared_buffers_percentage"], json!(25.0));
    // The agent waited through the rebuild: it saw REBUILDING, then RUNNING.
    let states = s.states_served.clone();
    drop(s);
    let rebuilding = states
        .iter()
        .position(|x| x == "REBUILDING")
        .expect("REBUILDING seen");
    assert!(
        states[rebuilding..].iter().any(|x| x == "RUNNING"),
        "{states:?}"
    );
    assert!(r.log_entries().is_empty(), "{:?}", r.log_entries());
    r.assert_no_violations();
    r.assert_no_secrets(&a);
}

#[test]
fn non_modifiable_knobs_are_refused_in_plan_and_apply_and_restart_needs_permission() {
    let r = rig();
    let env = r.aiven.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    r.platform.set_recommendation(&rec(
        &[
            ("shared_buffers", json!(32768), "8kB", "integer"),
            ("random_page_cost", json!(1.1), "", "real"),
            ("work_mem", json!(8192), "kB", "integer"),
            ("autovacuum_naptime", json!(30), "s", "integer"),
        ],
        "reload",
    ));
    let (_, out, logs) = agent::run(
        &r.yaml("", "disable_checks: true\n"),
        &["--aiven", "--plan"],
        &env,
        Duration::from_secs(60),
    );
    let line = |n: &str| {
        out.lines()
            .find(|l| l.contains(n))
            .unwrap_or_else(|| panic!("{n}: {out}\n{logs}"))
            .to_string()
    };
    assert!(
        line("shared_buffers").contains("cannot be modified on Aiven"),
        "{out}"
    );
    assert!(
        line("shared_buffers").contains("shared_buffers_percentage"),
        "{out}"
    );
    assert!(
        line("random_page_cost").contains("cannot be modified on Aiven"),
        "{out}"
    );
    assert!(
        line("autovacuum_naptime").contains("unknown modifiability status on Aiven"),
        "{out}"
    );
    // work_mem is modifiable but in MB on Aiven: a kB value is refused, naming the unit.
    assert!(line("work_mem").contains("\"MB\""), "{out}");
    assert_eq!(r.aiven.calls("ServiceUpdate"), 0);

    // The same through apply: refused as a whole, nothing sent.
    let a = r.spawn("");
    let e = r.first_log_entry(&a);
    assert_eq!(e["error_type"], "config_apply_error", "{e}");
    let msg = e["error_message"].as_str().unwrap();
    assert!(
        msg.contains("cannot be modified on Aiven") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert_eq!(r.aiven.calls("ServiceUpdate"), 0);
    drop(a);

    // A restart-implying key without allow_restart: restart_not_allowed (unwrapped).
    r.platform.clear();
    r.platform.set_recommendation(&rec(
        &[("shared_buffers_percentage", json!(30), "percentage", "real")],
        "restart",
    ));
    let a = r.spawn("");
    let e = r.first_log_entry(&a);
    assert_eq!(e["error_type"], "restart_not_allowed", "{e}");
    assert_eq!(r.aiven.calls("ServiceUpdate"), 0);
    r.assert_no_violations();
    r.assert_no_secrets(&a);
}

#[test]
fn a_half_applied_update_is_rolled_back_and_a_vendor_error_is_surfaced_without_the_token() {
    let r = rig();
    let (wm, bd) = (
        setting(&r.pg, "work_mem").0,
        setting(&r.pg, "bgwriter_delay").0,
    );
    let uc_before = r.aiven.user_config();
    // Aiven accepts the update but only bgwriter_delay reaches PostgreSQL.
    r.aiven.state.lock().unwrap().partial_once = true;
    r.platform.set_recommendation(&rec(
        &[
            ("bgwriter_delay", json!(400), "ms", "integer"),
            ("work_mem", json!(12), "MB", "integer"),
        ],
        "reload",
    ));
    let a = r.spawn("");
    let e = r.first_log_entry(&a);
    assert_eq!(e["error_type"], "config_apply_error");
    let msg = e["error_message"].as_str().unwrap();
    assert!(
        msg.contains("verification failed") && msg.contains("rolled back"),
        "{msg}"
    );
    assert!(msg.contains(&format!("{PROJECT}/{SERVICE}")), "{msg}");
    // Nothing left changed: PostgreSQL and user_config as before (keys absent before are
    // removed again with null).
    assert_eq!(setting(&r.pg, "work_mem").0, wm);
    assert_eq!(setting(&r.pg, "bgwriter_delay").0, bd);
    assert_eq!(r.aiven.user_config(), uc_before);
    let updates = r.aiven.state.lock().unwrap().updates.clone();
    assert_eq!(
        updates.last().unwrap()["user_config"],
        json!({"work_mem": null, "pg": {"bgwriter_delay": null}})
    );

    // A different recommendation refused by Aiven (403): the call, the service and Aiven's
    // message are in the report, the token is not, and nothing changed.
    r.aiven.state.lock().unwrap().reject_update = Some((
        403,
        "Insufficient permissions: project role read_only".into(),
    ));
    r.platform.clear();
    r.platform
        .set_recommendation(&rec(&[("work_mem", json!(24), "MB", "integer")], "reload"));
    let e = r.first_log_entry(&a);
    let msg = e["error_message"].as_str().unwrap();
    assert!(
        msg.contains("Aiven ServiceUpdate")
            && msg.contains(&format!("{PROJECT}/{SERVICE}"))
            && msg.contains("HTTP 403")
            && msg.contains("Insufficient permissions"),
        "{msg}"
    );
    assert_eq!(setting(&r.pg, "work_mem").0, wm);
    assert_eq!(r.aiven.user_config(), uc_before);
    r.assert_no_violations();
    r.assert_no_secrets(&a);
}

#[test]
fn high_used_memory_raises_the_guardrail_plentiful_memory_does_not() {
    let r = rig();
    // 5 % available = 95 % used: over the 90 % threshold.
    r.aiven
        .state
        .lock()
        .unwrap()
        .metrics
        .insert("mem_available".into(), 5.0);
    let a = r.spawn("");
    let q = r.wait(&a, "a guardrail", 40, |q| {
        q.iter().any(|x| x.segment() == "guardrails")
    });
    let g = q
        .iter()
        .find(|x| x.segment() == "guardrails")
        .unwrap()
        .json();
    assert_eq!(
        (g["level"].as_str(), g["type"].as_str()),
        (Some("critical"), Some("memory")),
        "{g}"
    );
    drop(a);
    // 95 % available (the Go agent's inverted comparison would signal here): no signal.
    r.platform.clear();
    r.aiven
        .state
        .lock()
        .unwrap()
        .metrics
        .insert("mem_available".into(), 95.0);
    let a = r.spawn("");
    r.wait(&a, "two metrics payloads", 40, |q| {
        q.iter().filter(|x| x.segment() == "metrics").count() >= 2
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(r.platform.by_segment("guardrails").is_empty());
    r.assert_no_violations();
    r.assert_no_secrets(&a);
}

#[test]
fn check_reports_token_service_metrics_and_permissions() {
    let r = rig();
    let yaml = r.yaml("", "");
    let env = r.aiven.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (_, out, logs) = agent::run(
        &yaml,
        &["--aiven", "--check"],
        &env,
        Duration::from_secs(60),
    );
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name}: {out}\n{logs}"))
            .to_string()
    };
    assert!(
        line(&out, "aiven api token").contains("DBT_AIVEN_API_TOKEN"),
        "{out}"
    );
    let svc = line(&out, "aiven service");
    assert!(
        svc.contains(" ok ") && svc.contains("RUNNING") && svc.contains("startup-4"),
        "{out}"
    );
    assert!(line(&out, "aiven metrics").contains(" ok "), "{out}");
    assert!(
        line(&out, "aiven configuration changes").contains("services:write"),
        "{out}"
    );
    // A wrong token: the failing call, the service and Aiven's answer; never the token.
    let mut env2 = r.aiven.env();
    env2[0].1 = "not-the-token-0123456789".into();
    let env2: Vec<(&str, &str)> = env2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (st, out, logs) = agent::run(
        &yaml,
        &["--aiven", "--check"],
        &env2,
        Duration::from_secs(60),
    );
    assert!(!st.success());
    let l = line(&out, "aiven service");
    assert!(
        l.contains("FAIL")
            && l.contains("ServiceGet")
            && l.contains(SERVICE)
            && l.contains("403")
            && l.contains("Invalid token"),
        "{l}"
    );
    assert!(
        !out.contains("not-the-token-0123456789") && !logs.contains("not-the-token-0123456789")
    );
    assert!(!out.contains(&r.aiven.token()));
}

/// The stand-in's checks bite: requests outside Aiven's OpenAPI description or its
/// user_config schema are refused with 400 and recorded.
#[test]
fn the_stand_in_refuses_requests_outside_the_vendor_description() {
    use dbtune_agent::cloud::http::{Http, Request};
    let a = Aiven::start("postgres://nobody@127.0.0.1:1/x", "false");
    let base = a.server.url();
    let auth = format!("aivenv1 {}", a.token());
    let http = Http::new();
    let svc = format!("{base}/v1/project/{PROJECT}/service/{SERVICE}");
    let send = |req: Request| http.send(&req.header("Authorization", auth.clone()));
    let e =
        send(Request::new("PUT", svc.clone()).json(&json!({"user_config": {}, "powerd": true})))
            .unwrap_err();
    assert_eq!(e.status, Some(400), "{e}");
    let e = send(
        Request::new("PUT", svc.clone())
            .json(&json!({"user_config": {"work_mem": "16"}, "powered": true})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("work_mem"), "{e}");
    let e = send(
        Request::new("PUT", svc.clone())
            .json(&json!({"user_config": {"pg": {"fsync": false}}, "powered": true})),
    )
    .unwrap_err();
    assert!(e.to_string().contains("fsync"), "{e}");
    let e = send(Request::post(format!("{svc}/metrics")).json(&json!({"period": "minute"})))
        .unwrap_err();
    assert!(e.to_string().contains("minute"), "{e}");
    let e = send(Request::get(format!("{svc}?include_secret=false"))).unwrap_err();
    assert!(e.to_string().contains("include_secret"), "{e}");
    let e = send(Request::post(format!("{svc}/restart"))).unwrap_err();
    assert!(e.to_string().contains("no such path"), "{e}");
    let e = http
        .send(&Request::get(svc.clone()).header("Authorization", format!("Bearer {}", a.token())))
        .unwrap_err();
    assert!(e.to_string().contains("aivenv1"), "{e}");
    let v = a.violations();
    assert_eq!(v.len(), 7, "{v:?}");
    assert!(v[0].contains(".powerd: undeclared field"), "{v:?}");
    // Valid requests pass.
    assert!(send(Request::get(format!("{svc}?include_secrets=false"))).is_ok());
    assert!(send(Request::post(format!("{svc}/metrics")).json(&json!({"period": "hour"}))).is_ok());
    assert_eq!(a.violations().len(), 7, "{:?}", a.violations());
}

/// Measurement, not a test: `cargo test --test aiven_e2e -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: prints the API calls per minute in steady state"]
fn steady_state_api_calls_per_minute() {
    let r = rig();
    let a = r.spawn("");
    std::thread::sleep(Duration::from_secs(20));
    let before = r.aiven.state.lock().unwrap().calls.clone();
    std::thread::sleep(Duration::from_secs(60));
    let after = r.aiven.state.lock().unwrap().calls.clone();
    for (k, v) in &after {
        println!(
            "aiven steady state: {k}: {} calls/min",
            v - before.get(k).unwrap_or(&0)
        );
    }
    drop(a);
}
