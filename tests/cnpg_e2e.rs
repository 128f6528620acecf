//! The CloudNativePG adapter through the real agent binary, against the Kubernetes API
//! stand-in (tests/support/cnpg_api.rs) whose simulated operator applies the Cluster's
//! parameters to a real PostgreSQL: reload, restart exactly once (CNPG's own rollout, or the
//! restart annotation when CNPG does not roll), a failover blocking applies while it
//! stabilises, --check naming a missing permission, rollback when the Cluster fails after a
//! patch, and the steady-state API call rate.
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::agent::{self, Agent};
use support::cnpg_api::{Behaviour, CnpgApi};
use support::pgcluster::PgCluster;
use support::platform::{recommend_one as rec, setting_in, PlatformStandIn};

struct Setup {
    pg: PgCluster,
    api: CnpgApi,
    platform: PlatformStandIn,
    dir: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
}

fn setup(tag: &str, b: Behaviour) -> Setup {
    let pg = PgCluster::start();
    let api = CnpgApi::start(&pg.url(), &pg.restart_command(), b);
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir(tag);
    let kubeconfig = api.kubeconfig(&dir);
    Setup {
        pg,
        api,
        platform,
        dir,
        kubeconfig,
    }
}

impl Setup {
    fn yaml(&self, extra: &str) -> String {
        agent::config_yaml(
            &self.pg.url(),
            &self.platform.url,
            &format!(
                "cnpg:\n  namespace: db\n  cluster_name: pg\n  failover_stabilization_seconds: 8\n{extra}"
            ),
        )
    }

    fn spawn(&self, extra: &str, env: &[(&str, &str)]) -> Agent {
        let kc = self.kubeconfig.display().to_string();
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("KUBECONFIG", kc.as_str()));
        Agent::spawn(&self.yaml(extra), &["--cnpg"], &env)
    }

    fn pg_setting(&self, name: &str) -> String {
        let mut c = self.pg.client();
        c.query_one("SELECT setting FROM pg_settings WHERE name = $1", &[&name])
            .unwrap()
            .get(0)
    }

    fn spec_param(&self, name: &str) -> Value {
        self.api.cluster()["spec"]["postgresql"]["parameters"][name].clone()
    }

    fn wait_setting(&self, a: &Agent, name: &str, v: i64, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.platform.requests().iter().any(|x| {
            x.segment() == "configurations" && x.method == "POST" && setting_in(x, name) == v
        }) {
            assert!(
                Instant::now() < end,
                "no configurations with {name} = {v} within {timeout:?}; agent log:\n{}",
                a.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_entries(&self) -> Vec<Value> {
        self.platform
            .by_segment("log-entries")
            .iter()
            .map(|r| r.json())
            .collect()
    }
}

fn no_violations(api: &CnpgApi) {
    let v = api.violations();
    assert!(
        v.is_empty(),
        "requests the vendor API does not describe: {v:?}"
    );
}

#[test]
fn reload_is_applied_even_when_the_rollout_finishes_before_the_first_poll() {
    // step 0: the simulated operator has finished before the PATCH is even answered, so the
    // agent never sees a transition phase (the Go agent waited an hour for one).
    let s = setup(
        "cnpg-reload",
        Behaviour {
            step: Duration::ZERO,
            ..Default::default()
        },
    );
    s.platform
        .set_recommendation(&rec("work_mem", 8192, "kB", "user", "reload"));
    let a = s.spawn("disable_checks: true\n", &[]);
    let t = Instant::now();
    s.wait_setting(&a, "work_mem", 8192, Duration::from_secs(60));
    assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
    assert_eq!(s.pg_setting("work_mem"), "8192");
    assert_eq!(
        s.spec_param("work_mem"),
        "8192kB",
        "written in PostgreSQL's unit"
    );
    assert_eq!(
        s.spec_param("max_connections"),
        "100",
        "other parameters untouched"
    );
    std::thread::sleep(Duration::from_secs(8));
    let (params, restarts, pg_restarts, _) = s.api.counts();
    assert_eq!((params, restarts, pg_restarts), (1, 0, 0));
    let logs = a.logs();
    assert_eq!(logs.matches("configuration applied").count(), 1, "{logs}");
    assert!(s.log_entries().is_empty(), "{:?}", s.log_entries());
    // The patch carried only the changed parameter.
    let patches: Vec<Value> = s
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.json())
        .collect();
    assert_eq!(
        patches,
        vec![serde_json::json!({"spec": {"postgresql": {"parameters": {"work_mem": "8192kB"}}}})]
    );
    no_violations(&s.api);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_restart_knob_rolls_the_instances_exactly_once() {
    let s = setup("cnpg-restart", Behaviour::default());
    let before = s.pg_setting("shared_buffers");
    assert_ne!(before, "16384");
    s.platform.set_recommendation(&rec(
        "shared_buffers",
        16384,
        "8kB",
        "postmaster",
        "restart",
    ));
    let a = s.spawn(
        "disable_checks: true\n",
        &[("DBT_POSTGRESQL_ALLOW_RESTART", "true")],
    );
    s.wait_setting(&a, "shared_buffers", 16384, Duration::from_secs(90));
    assert_eq!(s.pg_setting("shared_buffers"), "16384");
    assert_eq!(s.spec_param("shared_buffers"), "131072kB");
    // CloudNativePG rolled the instances itself: no restart annotation on top.
    let (params, restart_patches, pg_restarts, _) = s.api.counts();
    assert_eq!(
        (params, restart_patches, pg_restarts),
        (1, 0, 1),
        "{}",
        a.logs()
    );
    assert!(s.api.cluster()["metadata"]["annotations"]
        .get("kubectl.kubernetes.io/restartedAt")
        .is_none());

    // An operator that does not roll on its own: the agent asks once with the annotation.
    s.api.with_state(|b, _, _| b.auto_restart = false);
    s.platform.set_recommendation(&rec(
        "shared_buffers",
        24576,
        "8kB",
        "postmaster",
        "restart",
    ));
    s.wait_setting(&a, "shared_buffers", 24576, Duration::from_secs(120));
    let (params, restart_patches, pg_restarts, _) = s.api.counts();
    assert_eq!(
        (params, restart_patches, pg_restarts),
        (2, 1, 2),
        "{}",
        a.logs()
    );
    assert!(
        s.api.cluster()["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
    );
    assert!(s.log_entries().is_empty(), "{:?}", s.log_entries());
    let logs = a.logs();
    assert!(logs.contains("requesting a rolling restart"), "{logs}");
    no_violations(&s.api);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_failover_is_reported_and_blocks_applies_until_the_new_primary_is_stable() {
    let s = setup("cnpg-failover", Behaviour::default());
    let a = s.spawn("disable_checks: true\n", &[]);
    // Steady: configurations and metrics flowing from the first primary.
    s.platform
        .wait_for("configurations and metrics", Duration::from_secs(30), |r| {
            r.iter().any(|x| x.segment() == "metrics")
                && r.iter().any(|x| x.segment() == "configurations")
        });
    s.api.failover("pg-2");
    s.platform
        .wait_for("failover_detected", Duration::from_secs(30), |r| {
            r.iter().any(|x| {
                x.segment() == "log-entries" && x.json()["error_type"] == "failover_detected"
            })
        });
    let detected = Instant::now();
    // Recommended while the new primary stabilises: nothing may be written until it is stable.
    s.platform
        .set_recommendation(&rec("work_mem", 6144, "kB", "user", "reload"));
    s.wait_setting(&a, "work_mem", 6144, Duration::from_secs(90));
    let failed_over = detected;
    let patched_at = s
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(patched_at, 1);
    // Nothing was applied while the new primary stabilised (8 s, configured).
    assert!(
        failed_over.elapsed() >= Duration::from_millis(7500),
        "applied too early"
    );
    let logs = a.logs();
    assert!(logs.contains("failover detected: pg-1 -> pg-2"), "{logs}");
    assert!(logs.contains("primary pod of Cluster pg: pg-2"), "{logs}");
    let entries = s.log_entries();
    let failovers: Vec<&Value> = entries
        .iter()
        .filter(|e| e["error_type"] == "failover_detected")
        .collect();
    assert_eq!(failovers.len(), 1, "one report per failover: {entries:?}");
    assert!(
        entries
            .iter()
            .all(|e| e["error_type"] == "failover_detected"),
        "{entries:?}"
    );
    // Metrics follow the new primary after the failover.
    let pod_gets_pg2 = s
        .api
        .requests()
        .iter()
        .filter(|r| r.path() == "/api/v1/namespaces/db/pods/pg-2")
        .count();
    assert!(pod_gets_pg2 > 0);
    no_violations(&s.api);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn check_names_a_missing_permission() {
    let s = setup("cnpg-check", Behaviour::default());
    let kc = s.kubeconfig.display().to_string();
    let env = [("KUBECONFIG", kc.as_str())];
    let (st, out, err) = agent::run(
        &s.yaml(""),
        &["--cnpg", "--check"],
        &env,
        Duration::from_secs(60),
    );
    assert!(st.success(), "--check failed:\n{out}\n{err}");
    for needle in [
        "Kubernetes API",
        "v1.30.1",
        "system:serviceaccount:db:dbtune-agent",
        "all 8 permissions granted",
        "CNPG Cluster",
        "pg-1 on node node-a (Ready)",
        "metrics-server",
    ] {
        assert!(out.contains(needle), "--check lacks {needle:?}:\n{out}");
    }
    s.api.with_state(|b, _, _| {
        b.denied = vec![
            "patch clusters.postgresql.cnpg.io".into(),
            "get nodes/proxy".into(),
        ]
    });
    let (st, out, _) = agent::run(
        &s.yaml(""),
        &["--cnpg", "--check"],
        &env,
        Duration::from_secs(60),
    );
    assert_eq!(st.code(), Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("Kubernetes RBAC"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("[FAIL]"), "{line}");
    assert!(
        line.contains("missing: patch clusters.postgresql.cnpg.io, get nodes/proxy"),
        "{line}"
    );
    no_violations(&s.api);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_cluster_that_fails_after_the_patch_is_rolled_back() {
    let s = setup(
        "cnpg-rollback",
        Behaviour {
            fail_next_patch: true,
            ..Default::default()
        },
    );
    assert_eq!(s.pg_setting("work_mem"), "4096");
    s.platform
        .set_recommendation(&rec("work_mem", 12288, "kB", "user", "reload"));
    let a = s.spawn("disable_checks: true\n", &[]);
    let reqs = s
        .platform
        .wait_for("the apply error", Duration::from_secs(60), |r| {
            r.iter().any(|x| x.segment() == "log-entries")
        });
    let e = reqs
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    assert_eq!(e["error_type"], "config_apply_error", "{e}");
    let msg = e["error_message"].as_str().unwrap();
    assert!(msg.contains("unrecoverable state"), "{msg}");
    assert!(msg.contains("rolled back"), "{msg}");
    // work_mem was absent from the Cluster: the rollback removed it again (a null patch).
    assert!(s.spec_param("work_mem").is_null(), "{}", s.api.cluster());
    assert_eq!(s.pg_setting("work_mem"), "4096");
    let patches: Vec<Value> = s
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.json())
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches[1]["spec"]["postgresql"]["parameters"]["work_mem"].is_null());
    assert_eq!(
        s.api.cluster()["status"]["phase"],
        support::cnpg_api::HEALTHY
    );
    drop(a);
    no_violations(&s.api);
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn steady_state_api_call_rate() {
    let s = setup("cnpg-steady", Behaviour::default());
    let _a = s.spawn("disable_checks: true\n", &[]);
    s.platform
        .wait_for("system-info", Duration::from_secs(30), |r| {
            r.iter().any(|x| x.segment() == "system-info")
        });
    // Skip start-up, then count a 30 s window.
    std::thread::sleep(Duration::from_secs(5));
    let start = s.api.requests().len();
    let window = Duration::from_secs(30);
    std::thread::sleep(window);
    let reqs = s.api.requests();
    let calls = &reqs[start..];
    let per_minute = calls.len() as f64 * 60.0 / window.as_secs_f64();
    let mut by_kind = std::collections::BTreeMap::new();
    for r in calls {
        let p = r.path();
        let kind = if p.contains("/proxy/metrics/cadvisor") {
            "cadvisor"
        } else if p.contains("metrics.k8s.io") {
            "pod metrics"
        } else if p.contains("/clusters/") {
            "Cluster"
        } else if p.contains("/pods/") {
            "pod"
        } else if p.ends_with("/pods") {
            "pod list"
        } else {
            p
        };
        *by_kind.entry(kind.to_string()).or_insert(0) += 1;
    }
    println!(
        "steady state: {per_minute:.0} Kubernetes API calls per minute ({by_kind:?} in {window:?})"
    );
    // Per 5 s collection: one Cluster read (shared by metrics, config and guardrail), one pod
    // GET, one metrics GET, one cAdvisor scrape.
    assert!(per_minute <= 75.0, "{per_minute} calls/min: {by_kind:?}");
    assert_eq!(
        by_kind.get("pod list"),
        None,
        "no re-listing in steady state"
    );
    let metrics = s.platform.by_segment("metrics");
    let last = metrics.last().unwrap().json();
    let text = last.to_string();
    for k in [
        "node_cpu_usage",
        "node_memory_used",
        "node_disk_io_ops_read",
        "node_net_receive_per_second",
    ] {
        assert!(text.contains(k), "metrics lack {k}: {text}");
    }
    let si = s
        .platform
        .by_segment("system-info")
        .last()
        .unwrap()
        .json()
        .to_string();
    for k in [
        "node_cpu_count",
        "node_disk_size",
        "Debian GNU/Linux 12 (bookworm)",
        "6.1.0-18-amd64",
    ] {
        assert!(si.contains(k), "system info lacks {k}: {si}");
    }
    no_violations(&s.api);
    let _ = std::fs::remove_dir_all(&s.dir);
}
