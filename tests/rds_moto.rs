//! `--rds` and `--aurora` through the real agent binary against moto (a real AWS-compatible
//! server verifying SigV4) behind the RDS mirror (tests/support/rds_mirror.rs), which makes
//! parameter-group changes visible in a real local PostgreSQL the way RDS would, and a
//! Performance Insights stand-in. PostgreSQL is a real throwaway cluster.

mod support;

use dbtune_agent::cloud::aws::{Aws, Service, StaticKeys};
use dbtune_agent::cloud::http::{Http, Request};
use dbtune_agent::cloud::time::{now_unix, rfc3339};
use dbtune_agent::cloud::Env;
use dbtune_agent::secret::Secret;
use std::time::{Duration, Instant};
use support::agent::{self, Agent};
use support::cloud::moto::{moto_binary, Moto};
use support::cloud::stand_in::StandIn;
use support::pgcluster::PgCluster;
use support::platform::{PlatformStandIn, Recorded};
use support::rds_fault_front::{Fault, FaultFront, Rule};
use support::rds_mirror::{start_pi, MirrorConfig, RdsMirror};

const REGION: &str = "us-east-1";
/// Both WAL collectors enabled in the configuration (Aurora must still leave them off).
const WAL_COLLECTORS_ON: &[(&str, &str)] = &[
    ("DBT_COLLECTOR_PG_STAT_WAL_ENABLED", "true"),
    ("DBT_COLLECTOR_PG_STAT_WAL_RECEIVER_ENABLED", "true"),
];

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

struct World {
    moto: Moto,
    mirror: RdsMirror,
    pg: PgCluster,
    platform: PlatformStandIn,
    key_id: String,
    secret: String,
    _pi: Option<(StandIn, std::sync::Arc<std::sync::Mutex<usize>>)>,
    pi_url: Option<String>,
    /// Direct to moto, signed with the test user's key.
    aws: Aws,
    identifier: String,
}

enum Kind {
    Rds { default_group: bool },
    Aurora,
}

fn iam(moto: &Moto, action: &str, params: &[(&str, &str)]) -> dbtune_agent::cloud::xml::Element {
    let mut pairs = vec![("Action", action), ("Version", "2010-05-08")];
    pairs.extend_from_slice(params);
    let mut req = Request::post(format!("{}/", moto.url())).form(&pairs);
    let dummy = dbtune_agent::cloud::aws::Credentials::new("AKIDSETUP", "setup", None);
    dbtune_agent::cloud::aws::sigv4::sign_request(
        &mut req,
        &dbtune_agent::cloud::aws::sigv4::SigningParams::new(&dummy, REGION, "iam", now_unix()),
    );
    Http::new().send(&req).unwrap().xml().unwrap()
}

fn setup(kind: Kind, pi: bool) -> Option<World> {
    setup_pg(kind, pi, &[])
}

/// [`setup`] with extra postgresql.conf lines for the local cluster.
fn setup_pg(kind: Kind, pi: bool, pg_extra: &[&str]) -> Option<World> {
    let bin = moto_binary()?;
    // Four unauthenticated IAM calls make a user allowed everything; from then on moto checks
    // every signature.
    let moto = Moto::start(&bin, 4);
    let allow =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam(&moto, "CreateUser", &[("UserName", "dbtune")]);
    iam(
        &moto,
        "CreatePolicy",
        &[("PolicyName", "all"), ("PolicyDocument", allow)],
    );
    iam(
        &moto,
        "AttachUserPolicy",
        &[
            ("UserName", "dbtune"),
            ("PolicyArn", "arn:aws:iam::123456789012:policy/all"),
        ],
    );
    let key = iam(&moto, "CreateAccessKey", &[("UserName", "dbtune")]);
    let key_id = key.find("AccessKeyId").unwrap().text.clone();
    let secret = key.find("SecretAccessKey").unwrap().text.clone();
    let aws = Aws::new(
        Http::new(),
        Env::from_pairs([
            ("AWS_ENDPOINT_URL", moto.url().as_str()),
            ("HOME", "/nonexistent"),
        ]),
        REGION,
        StaticKeys {
            access_key_id: Some(key_id.clone()),
            secret_access_key: Some(Secret::new(&secret)),
            session_token: None,
        },
    );
    let rds = |a: &str, ps: &[(String, String)]| {
        aws.query(Service::Rds, a, ps)
            .unwrap_or_else(|e| panic!("{a}: {e}\n{}", moto.log_text()))
    };
    let pi_flag = if pi { "true" } else { "false" };
    let identifier = match kind {
        Kind::Rds { default_group } => {
            let mut inst = vec![
                p("DBInstanceIdentifier", "dbtune-db"),
                p("DBInstanceClass", "db.m5.large"),
                p("Engine", "postgres"),
                p("EngineVersion", "16.3"),
                p("AllocatedStorage", "20"),
                p("MasterUsername", "pgadmin"),
                p("MasterUserPassword", "pgpassword123"),
                p("EnablePerformanceInsights", pi_flag),
            ];
            if !default_group {
                rds(
                    "CreateDBParameterGroup",
                    &[
                        p("DBParameterGroupName", "dbtune-pg16"),
                        p("DBParameterGroupFamily", "postgres16"),
                        p("Description", "dbtune test"),
                    ],
                );
                inst.push(p("DBParameterGroupName", "dbtune-pg16"));
            }
            rds("CreateDBInstance", &inst);
            "dbtune-db".to_string()
        }
        Kind::Aurora => {
            rds(
                "CreateDBClusterParameterGroup",
                &[
                    p("DBClusterParameterGroupName", "dbtune-cluster-pg"),
                    p("DBParameterGroupFamily", "aurora-postgresql16"),
                    p("Description", "dbtune test"),
                ],
            );
            rds(
                "CreateDBParameterGroup",
                &[
                    p("DBParameterGroupName", "dbtune-aurora-pg"),
                    p("DBParameterGroupFamily", "aurora-postgresql16"),
                    p("Description", "dbtune test"),
                ],
            );
            rds(
                "CreateDBCluster",
                &[
                    p("DBClusterIdentifier", "dbtune-cluster"),
                    p("Engine", "aurora-postgresql"),
                    p("EngineVersion", "16.3"),
                    p("MasterUsername", "pgadmin"),
                    p("MasterUserPassword", "pgpassword123"),
                    p("DBClusterParameterGroupName", "dbtune-cluster-pg"),
                ],
            );
            rds(
                "CreateDBInstance",
                &[
                    p("DBInstanceIdentifier", "dbtune-writer"),
                    p("DBInstanceClass", "db.r5.large"),
                    p("Engine", "aurora-postgresql"),
                    p("DBClusterIdentifier", "dbtune-cluster"),
                    p("DBParameterGroupName", "dbtune-aurora-pg"),
                ],
            );
            // The agent is given the cluster: it finds the writer itself.
            "dbtune-cluster".to_string()
        }
    };
    let pg = PgCluster::start_with(pg_extra);
    let mirror = RdsMirror::start(MirrorConfig {
        moto_port: moto.port,
        pg_url: pg.url(),
        restart_cmd: pg.restart_command(),
        key_id: key_id.clone(),
        secret: secret.clone(),
        region: REGION.into(),
        cluster_only: vec!["autovacuum_naptime".into()],
        pi_enabled: pi,
    });
    let (pi_srv, pi_url) = if pi {
        let inst = aws
            .query(
                Service::Rds,
                "DescribeDBInstances",
                &[p("DBInstanceIdentifier", &identifier)],
            )
            .unwrap();
        let rid = inst.result().find("DbiResourceId").unwrap().text.clone();
        let (s, calls) = start_pi(
            key_id.clone(),
            secret.clone(),
            REGION.into(),
            rid,
            2_097_152.0,
        );
        let url = s.url();
        (Some((s, calls)), Some(url))
    } else {
        (None, None)
    };
    Some(World {
        moto,
        mirror,
        pg,
        platform: PlatformStandIn::start(),
        key_id,
        secret,
        _pi: pi_srv,
        pi_url,
        aws,
        identifier,
    })
}

impl World {
    fn spawn(&self, flag: &str, extra_env: &[(&str, &str)]) -> Agent {
        self.spawn_via(&self.mirror.url(), flag, extra_env)
    }

    /// The agent with its AWS endpoint at `url` (a fault front before the mirror).
    fn spawn_via(&self, url: &str, flag: &str, extra_env: &[(&str, &str)]) -> Agent {
        self.spawn_full(&self.pg.url(), url, flag, extra_env)
    }

    fn spawn_full(&self, pg_url: &str, url: &str, flag: &str, extra_env: &[(&str, &str)]) -> Agent {
        let env = self.env(url, extra_env);
        Agent::spawn(
            &agent::config_yaml(pg_url, &self.platform.url, "disable_checks: true\n"),
            &[flag],
            &env,
        )
    }

    fn env<'a>(
        &'a self,
        url: &'a str,
        extra_env: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut env: Vec<(&str, &str)> = vec![
            ("AWS_ENDPOINT_URL", url),
            ("DBT_AWS_REGION", REGION),
            ("DBT_RDS_DATABASE_IDENTIFIER", self.identifier.as_str()),
            // The plain AWS_* fallbacks for the keys.
            ("AWS_ACCESS_KEY_ID", self.key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("HOME", "/nonexistent"),
            ("DBT_RDS_PARAMETER_GROUP_NAME", "ignored-group"),
        ];
        if let Some(u) = &self.pi_url {
            env.push(("AWS_ENDPOINT_URL_PI", u.as_str()));
        }
        env.extend_from_slice(extra_env);
        env
    }

    /// The group's user values as moto (through the mirror's reset overlay) holds them.
    fn user_values(&self, group: &str, cluster: bool) -> Vec<(String, String)> {
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL", self.mirror.url().as_str()),
            ("HOME", "/nonexistent"),
        ]);
        let via = Aws::new(Http::new(), env, REGION, self.aws_keys());
        let (action, gk) = if cluster {
            ("DescribeDBClusterParameters", "DBClusterParameterGroupName")
        } else {
            ("DescribeDBParameters", "DBParameterGroupName")
        };
        let r = via
            .query(Service::Rds, action, &[p(gk, group), p("Source", "user")])
            .unwrap();
        let mut v: Vec<(String, String)> = r
            .result()
            .path(&["Parameters"])
            .map(|l| {
                l.children_named("Parameter")
                    .map(|e| {
                        (
                            e.text_at(&["ParameterName"]).unwrap().to_string(),
                            e.text_at(&["ParameterValue"]).unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn aws_keys(&self) -> StaticKeys {
        StaticKeys {
            access_key_id: Some(self.key_id.clone()),
            secret_access_key: Some(Secret::new(&self.secret)),
            session_token: None,
        }
    }

    fn setting(&self, name: &str) -> String {
        self.pg
            .client()
            .query_one("SELECT setting FROM pg_settings WHERE name = $1", &[&name])
            .unwrap()
            .get(0)
    }

    fn put_metric(&self, name: &str, value: f64, ago: i64) {
        self.aws
            .query(
                Service::CloudWatch,
                "PutMetricData",
                &[
                    p("Namespace", "AWS/RDS"),
                    p("MetricData.member.1.MetricName", name),
                    p("MetricData.member.1.Value", &value.to_string()),
                    p("MetricData.member.1.Timestamp", &rfc3339(now_unix() - ago)),
                    p(
                        "MetricData.member.1.Dimensions.member.1.Name",
                        "DBInstanceIdentifier",
                    ),
                    p("MetricData.member.1.Dimensions.member.1.Value", "dbtune-db"),
                ],
            )
            .unwrap();
    }
}

fn setting_in(cf: &Recorded, name: &str) -> serde_json::Value {
    cf.json()["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()["setting"]
        .clone()
}

fn rec(knobs: &[(&str, serde_json::Value, &str)], application: &str) -> String {
    let config: Vec<serde_json::Value> = knobs
        .iter()
        .map(|(n, v, vt)| serde_json::json!({"name": n, "setting": v, "unit": null, "vartype": vt, "context": "user"}))
        .collect();
    let names: Vec<&str> = knobs.iter().map(|k| k.0).collect();
    serde_json::json!([{"config": config, "knobs_overrides": names, "knob_application": application}]).to_string()
}

/// 21 dynamic knobs: two Modify batches (20 + 1), the second being `checkpoint_timeout`.
fn twenty_one_knobs() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    vec![
        ("work_mem", serde_json::json!(8192), "integer"),
        ("maintenance_work_mem", serde_json::json!(131072), "integer"),
        ("random_page_cost", serde_json::json!(1.5), "real"),
        ("seq_page_cost", serde_json::json!(0.9), "real"),
        ("effective_cache_size", serde_json::json!(262144), "integer"),
        (
            "default_statistics_target",
            serde_json::json!(200),
            "integer",
        ),
        ("bgwriter_delay", serde_json::json!(300), "integer"),
        ("bgwriter_lru_maxpages", serde_json::json!(200), "integer"),
        (
            "checkpoint_completion_target",
            serde_json::json!(0.8),
            "real",
        ),
        (
            "max_parallel_workers_per_gather",
            serde_json::json!(3),
            "integer",
        ),
        (
            "max_parallel_maintenance_workers",
            serde_json::json!(3),
            "integer",
        ),
        (
            "effective_io_concurrency",
            serde_json::json!(100),
            "integer",
        ),
        ("min_wal_size", serde_json::json!(100), "integer"),
        ("max_wal_size", serde_json::json!(2048), "integer"),
        ("cpu_tuple_cost", serde_json::json!(0.02), "real"),
        ("cpu_index_tuple_cost", serde_json::json!(0.006), "real"),
        ("cpu_operator_cost", serde_json::json!(0.003), "real"),
        ("autovacuum_naptime", serde_json::json!(30), "integer"),
        (
            "autovacuum_vacuum_cost_limit",
            serde_json::json!(400),
            "integer",
        ),
        ("deadlock_timeout", serde_json::json!(2000), "integer"),
        ("checkpoint_timeout", serde_json::json!(600), "integer"),
    ]
}

fn wait_config(
    w: &World,
    a: &Agent,
    what: &str,
    secs: u64,
    pred: impl Fn(&Recorded) -> bool,
) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if w.platform
            .requests()
            .iter()
            .any(|x| x.segment() == "configurations" && x.method == "POST" && pred(x))
        {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {what}; AWS calls {:?}\nagent log:\n{}",
        w.mirror.actions(),
        a.logs()
    );
}

#[test]
fn rds_reload_lands_in_the_group_and_cloudwatch_and_pi_feed_metrics_and_system_info() {
    let Some(w) = setup(
        Kind::Rds {
            default_group: false,
        },
        true,
    ) else {
        return;
    };
    w.put_metric("CPUUtilization", 42.5, 90);
    w.put_metric("CPUUtilization", 17.0, 400);
    w.put_metric("FreeableMemory", 3.0e9, 90);
    w.put_metric("ReadIOPS", 10.0, 90);
    w.put_metric("WriteIOPS", 5.0, 90);
    w.platform.set_recommendation(&rec(
        &[("work_mem", serde_json::json!(8192), "integer")],
        "reload",
    ));
    let a = w.spawn("--rds", WAL_COLLECTORS_ON);
    let took = wait_config(&w, &a, "configurations with work_mem = 8192", 90, |x| {
        setting_in(x, "work_mem") == 8192
    });
    eprintln!("MEASURE rds reload apply (agent start to verified config posted): {took:?}");
    assert_eq!(w.setting("work_mem"), "8192");
    // Exactly one Modify with exactly that parameter, immediate; nothing else changed.
    let mods = w.mirror.calls_of("ModifyDBParameterGroup");
    assert_eq!(mods.len(), 1, "{:?}", w.mirror.actions());
    assert_eq!(
        mods[0].get("DBParameterGroupName").map(String::as_str),
        Some("dbtune-pg16")
    );
    assert_eq!(
        mods[0]
            .get("Parameters.Parameter.1.ParameterName")
            .map(String::as_str),
        Some("work_mem")
    );
    assert_eq!(
        mods[0]
            .get("Parameters.Parameter.1.ParameterValue")
            .map(String::as_str),
        Some("8192")
    );
    assert_eq!(
        mods[0]
            .get("Parameters.Parameter.1.ApplyMethod")
            .map(String::as_str),
        Some("immediate")
    );
    assert!(!mods[0].contains_key("Parameters.Parameter.2.ParameterName"));
    assert_eq!(
        w.user_values("dbtune-pg16", false),
        vec![("work_mem".to_string(), "8192".to_string())]
    );
    let actions = w.mirror.actions();
    for never in [
        "RebootDBInstance",
        "ModifyDBClusterParameterGroup",
        "ResetDBParameterGroup",
    ] {
        assert!(
            !actions.iter().any(|a| a == never),
            "{never} called: {actions:?}"
        );
    }
    let logs = a.logs();
    assert!(logs.contains("deprecated and ignored"), "{logs}");

    // Metrics: CloudWatch's latest datapoint by timestamp, PI's newest point with a value.
    let reqs = w.platform.wait_for(
        "metrics with node_cpu_usage",
        Duration::from_secs(30),
        |r| {
            r.iter().any(|x| {
                x.segment() == "metrics" && x.json()["metrics"].get("node_cpu_usage").is_some()
            })
        },
    );
    let m = reqs
        .iter()
        .find(|x| x.segment() == "metrics" && x.json()["metrics"].get("node_cpu_usage").is_some())
        .unwrap()
        .json();
    assert_eq!(m["metrics"]["node_cpu_usage"], 42.5, "{m}");
    assert_eq!(
        m["metrics"]["node_memory_freeable"], 3_000_000_000i64,
        "{m}"
    );
    assert_eq!(m["metrics"]["node_disk_iops_total"], 15.0, "{m}");
    assert_eq!(m["metrics"]["node_memory_used"], 2_097_152i64 * 1024, "{m}");
    // System info: class size from EC2, the group names.
    let si = reqs
        .iter()
        .rev()
        .find(|x| x.segment() == "system-info")
        .expect("system-info sent")
        .json();
    let text = si.to_string();
    assert!(
        text.contains("dbtune-pg16") && text.contains("aws_rds_parameter_group"),
        "{text}"
    );
    assert!(!text.contains("aws_rds_cluster_parameter_group"), "{text}");
    assert!(
        text.contains("node_cpu_count") && text.contains("8589934592"),
        "{text}"
    );
    // Off Aurora, the two WAL collectors send (the Aurora test's control).
    let reqs = w.platform.wait_for(
        "pg_stat_wal and pg_stat_wal_receiver",
        Duration::from_secs(30),
        |r| {
            r.iter().any(|x| x.segment() == "pg_stat_wal")
                && r.iter().any(|x| x.segment() == "pg_stat_wal_receiver")
        },
    );
    assert!(reqs.iter().any(|x| x.segment() == "pg_stat_wal"));

    // Steady state: AWS calls per minute once the apply is done.
    let secs: u64 = std::env::var("DBTUNE_TEST_RDS_MEASURE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let before = w.mirror.actions().len();
    let pi_before = *w._pi.as_ref().unwrap().1.lock().unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    let during: Vec<String> = w.mirror.actions()[before..].to_vec();
    let pi_calls = *w._pi.as_ref().unwrap().1.lock().unwrap() - pi_before;
    let per_min = (during.len() + pi_calls) as f64 * 60.0 / secs as f64;
    eprintln!("MEASURE rds steady state: {} AWS calls + {pi_calls} PI calls in {secs} s = {per_min:.1}/min: {during:?}", during.len());
    assert!(
        !during.iter().any(|a| a.starts_with("Modify")),
        "re-applied: {during:?}"
    );

    // --check on a custom group with Performance Insights on: each control-plane line.
    let url = w.mirror.url();
    let (st, out, logs) = agent::run(
        &agent::config_yaml(&w.pg.url(), &w.platform.url, ""),
        &["--rds", "--check"],
        &w.env(&url, &[]),
        Duration::from_secs(60),
    );
    for want in [
        "found (source: static keys)",
        "allowed: instance dbtune-db (db.m5.large",
        "dbtune-pg16 is custom",
        "GetMetricData reachable",
        "Performance Insights",
        "GetResourceMetrics answered",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing from --check:\n{out}\n{logs}"
        );
    }
    assert!(st.success(), "{out}\n{logs}");
    // A rejected secret: --check fails naming the call and AWS's reason, never the secret.
    let (st, out, logs) = agent::run(
        &agent::config_yaml(&w.pg.url(), &w.platform.url, ""),
        &["--rds", "--check"],
        &w.env(&url, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret-4711")]),
        Duration::from_secs(60),
    );
    let both = format!("{out}\n{logs}");
    assert!(!st.success(), "{both}");
    assert!(
        both.contains("DescribeDBInstances") && both.contains("SignatureDoesNotMatch"),
        "{both}"
    );
    assert!(!both.contains("not-the-secret-4711"), "{both}");
}

#[test]
fn rds_default_parameter_group_is_refused_without_any_modify_call() {
    let Some(w) = setup(
        Kind::Rds {
            default_group: true,
        },
        false,
    ) else {
        return;
    };
    w.platform.set_recommendation(&rec(
        &[("work_mem", serde_json::json!(8192), "integer")],
        "reload",
    ));
    let _a = w.spawn("--rds", &[]);
    let reqs = w
        .platform
        .wait_for("a log entry", Duration::from_secs(60), |r| {
            r.iter().any(|x| x.segment() == "log-entries")
        });
    let e = reqs
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    assert_eq!(e["error_type"], "default_parameter_group", "{e}");
    assert!(
        e["error_message"].as_str().unwrap().contains("default."),
        "{e}"
    );
    let actions = w.mirror.actions();
    assert!(
        !actions.iter().any(|a| a.starts_with("Modify")
            || a.starts_with("Reset")
            || a == "DescribeDBParameters"),
        "{actions:?}"
    );
    assert_ne!(w.setting("work_mem"), "8192");

    // --check names the credential source (never the secret), the group and what was tried.
    let url = w.mirror.url();
    let (_, out, logs) = agent::run(
        &agent::config_yaml(&w.pg.url(), &w.platform.url, ""),
        &["--rds", "--check"],
        &w.env(&url, &[]),
        Duration::from_secs(60),
    );
    for want in [
        "AWS credentials",
        "found (source: static keys)",
        "RDS DescribeDBInstances",
        "allowed: instance dbtune-db (db.m5.large",
        "2 vCPU, 8192 MiB",
        "is a default group",
        "CloudWatch",
        "GetMetricData reachable",
        "Performance Insights",
        "not enabled",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing from --check:\n{out}\n{logs}"
        );
    }
    eprintln!("--check output:\n{out}");
    assert!(
        !out.contains(&w.secret) && !logs.contains(&w.secret),
        "secret leaked"
    );
}

#[test]
fn rds_restart_recommendation_with_allow_restart_reboots_the_instance() {
    let Some(w) = setup(
        Kind::Rds {
            default_group: false,
        },
        false,
    ) else {
        return;
    };
    let before = w.setting("shared_buffers");
    let target = if before == "16384" { 20480 } else { 16384 };
    w.platform.set_recommendation(&rec(
        &[("shared_buffers", serde_json::json!(target), "integer")],
        "restart",
    ));
    let a = w.spawn("--rds", &[("DBT_POSTGRESQL_ALLOW_RESTART", "true")]);
    let took = wait_config(
        &w,
        &a,
        "configurations with the new shared_buffers",
        150,
        |x| setting_in(x, "shared_buffers") == target,
    );
    eprintln!("MEASURE rds restart apply (agent start to verified config posted): {took:?}");
    assert_eq!(w.setting("shared_buffers"), target.to_string());
    let mods = w.mirror.calls_of("ModifyDBParameterGroup");
    assert_eq!(mods.len(), 1);
    assert_eq!(
        mods[0]
            .get("Parameters.Parameter.1.ApplyMethod")
            .map(String::as_str),
        Some("pending-reboot")
    );
    let reboots = w.mirror.calls_of("RebootDBInstance");
    assert_eq!(reboots.len(), 1, "{:?}", w.mirror.actions());
    assert_eq!(
        reboots[0].get("DBInstanceIdentifier").map(String::as_str),
        Some("dbtune-db")
    );
    assert!(w.platform.by_segment("log-entries").is_empty());
}

#[test]
fn rds_failed_second_batch_rolls_the_first_batch_back() {
    let Some(w) = setup(
        Kind::Rds {
            default_group: false,
        },
        false,
    ) else {
        return;
    };
    // 21 dynamic knobs: two Modify batches (20 + 1); the mirror refuses the second.
    let knobs = twenty_one_knobs();
    let names: Vec<&str> = knobs.iter().map(|k| k.0).collect();
    let before: Vec<String> = names.iter().map(|n| w.setting(n)).collect();
    w.mirror.fail_modify(Some(2));
    w.platform.set_recommendation(&rec(&knobs, "reload"));
    let _a = w.spawn("--rds", &[]);
    let reqs = w
        .platform
        .wait_for("a log entry", Duration::from_secs(120), |r| {
            r.iter().any(|x| x.segment() == "log-entries")
        });
    let e = reqs
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    let msg = e["error_message"].as_str().unwrap();
    assert_eq!(e["error_type"], "config_apply_error");
    assert!(
        msg.contains("InvalidParameterValue") && msg.contains("rolled back"),
        "{msg}"
    );
    let mods = w.mirror.calls_of("ModifyDBParameterGroup");
    assert_eq!(mods.len(), 2, "{:?}", w.mirror.actions());
    assert!(mods[0].contains_key("Parameters.Parameter.20.ParameterName"));
    assert!(!mods[0].contains_key("Parameters.Parameter.21.ParameterName"));
    assert_eq!(
        mods[1]
            .get("Parameters.Parameter.1.ParameterName")
            .map(String::as_str),
        Some("checkpoint_timeout")
    );
    // The first batch had no user values before: it is reset, in one call of 20.
    let resets = w.mirror.calls_of("ResetDBParameterGroup");
    assert_eq!(resets.len(), 1, "{:?}", w.mirror.actions());
    assert!(resets[0].contains_key("Parameters.Parameter.20.ParameterName"));
    assert_eq!(w.user_values("dbtune-pg16", false), vec![]);
    let after: Vec<String> = names.iter().map(|n| w.setting(n)).collect();
    assert_eq!(after, before);
}

#[test]
fn aurora_cluster_level_parameters_go_to_the_cluster_group_and_the_writer_is_found() {
    let Some(w) = setup(Kind::Aurora, false) else {
        return;
    };
    w.platform.set_recommendation(&rec(
        &[
            ("work_mem", serde_json::json!(12288), "integer"),
            ("autovacuum_naptime", serde_json::json!(45), "integer"),
        ],
        "reload",
    ));
    let a = w.spawn("--aurora", WAL_COLLECTORS_ON);
    let took = wait_config(&w, &a, "configurations with both knobs", 90, |x| {
        setting_in(x, "work_mem") == 12288 && setting_in(x, "autovacuum_naptime") == 45
    });
    eprintln!("MEASURE aurora reload apply (agent start to verified config posted): {took:?}");
    let logs = a.logs();
    assert!(
        logs.contains("using its writer instance dbtune-writer"),
        "{logs}"
    );
    let inst = w.mirror.calls_of("ModifyDBParameterGroup");
    let cl = w.mirror.calls_of("ModifyDBClusterParameterGroup");
    assert_eq!(inst.len(), 1);
    assert_eq!(cl.len(), 1);
    assert_eq!(
        inst[0].get("DBParameterGroupName").map(String::as_str),
        Some("dbtune-aurora-pg")
    );
    assert_eq!(
        inst[0]
            .get("Parameters.Parameter.1.ParameterName")
            .map(String::as_str),
        Some("work_mem")
    );
    assert_eq!(
        cl[0].get("DBClusterParameterGroupName").map(String::as_str),
        Some("dbtune-cluster-pg")
    );
    assert_eq!(
        cl[0]
            .get("Parameters.Parameter.1.ParameterName")
            .map(String::as_str),
        Some("autovacuum_naptime")
    );
    assert_eq!(
        w.user_values("dbtune-cluster-pg", true),
        vec![("autovacuum_naptime".to_string(), "45".to_string())]
    );
    let reqs = w
        .platform
        .wait_for("system-info", Duration::from_secs(30), |r| {
            r.iter().any(|x| x.segment() == "system-info")
        });
    let si = reqs
        .iter()
        .find(|x| x.segment() == "system-info")
        .unwrap()
        .json()
        .to_string();
    assert!(
        si.contains("aws_rds_cluster_parameter_group") && si.contains("dbtune-cluster-pg"),
        "{si}"
    );
    // The writer was found from the cluster: every instance call names it.
    let described: Vec<_> = w.mirror.calls_of("DescribeDBInstances");
    assert!(
        described
            .iter()
            .any(|f| f.get("DBInstanceIdentifier").map(String::as_str) == Some("dbtune-writer")),
        "{described:?}"
    );
    // pg_stat_wal / pg_stat_wal_receiver are forced off although enabled in the configuration:
    // other collectors of the same 1-minute cadence have sent, those two never.
    let reqs = w.platform.wait_for(
        "the 1-minute catalog collectors",
        Duration::from_secs(60),
        |r| {
            [
                "pg_stat_bgwriter",
                "pg_stat_database",
                "pg_stat_slru",
                "pg_stat_archiver",
            ]
            .iter()
            .all(|n| r.iter().any(|x| x.segment() == *n))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let sent: Vec<String> = w
        .platform
        .requests()
        .iter()
        .map(|x| x.segment().to_string())
        .collect();
    assert!(reqs.len() <= sent.len());
    for off in ["pg_stat_wal", "pg_stat_wal_receiver"] {
        assert!(
            !sent.iter().any(|s| s == off),
            "{off} sent on Aurora: {sent:?}"
        );
    }
    let _ = &a;
    let _ = &w.moto;
}

#[test]
fn rds_throttling_and_5xx_are_retried_with_backoff_and_the_apply_succeeds() {
    let Some(w) = setup(
        Kind::Rds {
            default_group: false,
        },
        false,
    ) else {
        return;
    };
    // Each agent try is three quick HTTP attempts: five faults on Modify outlast the first try
    // (Throttling, RequestLimitExceeded, Throttling) and two more 5xx on the second; three
    // 503s on the parameter definitions outlast the first try of that read.
    let front = FaultFront::start(
        w.mirror.server.port,
        vec![
            Rule::new(
                "ModifyDBParameterGroup",
                0,
                5,
                &[
                    Fault::Throttling,
                    Fault::RequestLimitExceeded,
                    Fault::Throttling,
                    Fault::Internal500,
                    Fault::Unavailable503,
                ],
            ),
            Rule::new("DescribeDBParameters", 0, 3, &[Fault::Unavailable503]),
        ],
    );
    w.platform.set_recommendation(&rec(
        &[("work_mem", serde_json::json!(8192), "integer")],
        "reload",
    ));
    let a = w.spawn_via(
        &front.url(),
        "--rds",
        &[("DBT_APPLY_RESTART_TIMEOUT", "30")],
    );
    let took = wait_config(&w, &a, "configurations with work_mem = 8192", 90, |x| {
        setting_in(x, "work_mem") == 8192
    });
    eprintln!("MEASURE rds reload apply through 5 Modify faults and 3 Describe 503s: {took:?}");
    assert_eq!(w.setting("work_mem"), "8192");
    assert_eq!(front.counts("ModifyDBParameterGroup"), (1, 5));
    assert_eq!(front.counts("DescribeDBParameters").1, 3);
    assert_eq!(w.mirror.calls_of("ModifyDBParameterGroup").len(), 1);
    assert_eq!(
        w.user_values("dbtune-pg16", false),
        vec![("work_mem".to_string(), "8192".to_string())]
    );
    let logs = a.logs();
    for want in [
        "Modify 1 on parameter group dbtune-pg16 (work_mem): try 1 failed",
        "HTTP 400 Throttling: Rate exceeded",
        "Modify 1 on parameter group dbtune-pg16 (work_mem): succeeded on try 2",
        "reading the parameter definitions of parameter group dbtune-pg16: try 1 failed",
        "HTTP 503 ServiceUnavailable",
    ] {
        assert!(logs.contains(want), "{want:?} not logged:\n{logs}");
    }
    // The backoff paused between tries: 1–2 s after the first (equal jitter on 2 s).
    let inj = front.injected();
    let mods: Vec<_> = inj
        .iter()
        .filter(|(a, _, _)| a == "ModifyDBParameterGroup")
        .collect();
    let gap = mods[3].2 - mods[2].2;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_millis(2900),
        "{gap:?}"
    );
    assert!(w.platform.by_segment("log-entries").is_empty());
}

#[test]
fn rds_persistent_throttling_fails_within_the_deadline_and_rolls_back() {
    let Some(w) = setup(
        Kind::Rds {
            default_group: false,
        },
        false,
    ) else {
        return;
    };
    let knobs = twenty_one_knobs();
    let names: Vec<&str> = knobs.iter().map(|k| k.0).collect();
    let before: Vec<String> = names.iter().map(|n| w.setting(n)).collect();
    // The first batch lands; every later Modify is throttled.
    let front = FaultFront::start(
        w.mirror.server.port,
        vec![Rule::new(
            "ModifyDBParameterGroup",
            1,
            usize::MAX,
            &[Fault::Throttling],
        )],
    );
    w.platform.set_recommendation(&rec(&knobs, "reload"));
    let deadline = Duration::from_secs(15);
    let a = w.spawn_via(
        &front.url(),
        "--rds",
        &[("DBT_APPLY_RESTART_TIMEOUT", "15")],
    );
    let reqs = w
        .platform
        .wait_for("a log entry", Duration::from_secs(90), |r| {
            r.iter().any(|x| x.segment() == "log-entries")
        });
    let e = reqs
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    let msg = e["error_message"].as_str().unwrap();
    assert_eq!(e["error_type"], "config_apply_error", "{e}");
    for want in [
        "Modify 1 on parameter group dbtune-pg16 (checkpoint_timeout): gave up after",
        "apply.restart_timeout",
        "Throttling: Rate exceeded",
        "rolled back",
    ] {
        assert!(msg.contains(want), "{want:?} missing: {msg}");
    }
    // Tries stopped within the deadline, backing off (at least three tries, fewer than ten).
    let throttled: Vec<Instant> = front.injected().iter().map(|x| x.2).collect();
    let span = *throttled.last().unwrap() - throttled[0];
    eprintln!(
        "MEASURE rds persistent throttling: {} throttled calls over {span:?} (deadline {deadline:?})",
        throttled.len()
    );
    // No try starts past the deadline (the last one's own quick attempts may end just after).
    assert!(span < deadline + Duration::from_secs(1), "{span:?}");
    assert!(
        (9..30).contains(&throttled.len()),
        "{} throttled calls",
        throttled.len()
    );
    // Only the first batch reached AWS; it was reset (it had no user values), nothing is left.
    assert_eq!(front.counts("ModifyDBParameterGroup").0, 1);
    assert_eq!(w.mirror.calls_of("ModifyDBParameterGroup").len(), 1);
    let resets = w.mirror.calls_of("ResetDBParameterGroup");
    assert_eq!(resets.len(), 1, "{:?}", w.mirror.actions());
    assert!(resets[0].contains_key("Parameters.Parameter.20.ParameterName"));
    assert!(!resets[0].contains_key("Parameters.Parameter.21.ParameterName"));
    assert_eq!(w.user_values("dbtune-pg16", false), vec![]);
    let after: Vec<String> = names.iter().map(|n| w.setting(n)).collect();
    assert_eq!(after, before);
    let logs = a.logs();
    assert!(logs.contains("retrying in"), "{logs}");
}

/// The token botocore's `generate_db_auth_token` makes at unix time `t` (tests/support/cloud/rds_token_reference.py).
#[allow(clippy::too_many_arguments)]
fn botocore_token(
    py: &std::path::Path,
    key: &str,
    secret: &str,
    session_token: Option<&str>,
    region: &str,
    host: &str,
    port: u16,
    user: &str,
    t: i64,
) -> String {
    let out = std::process::Command::new(py)
        .arg(reference_script())
        .args([
            "make",
            key,
            secret,
            session_token.unwrap_or("-"),
            region,
            host,
        ])
        .args([port.to_string(), user.to_string(), t.to_string()])
        .output()
        .expect("running botocore");
    assert!(
        out.status.success(),
        "botocore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn reference_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/cloud/rds_token_reference.py")
}

/// The venv python that has boto3 / botocore (installed with moto by .ci/setup-cloud.sh).
fn venv_python() -> Option<std::path::PathBuf> {
    Some(moto_binary()?.parent().unwrap().join("python"))
}

#[test]
fn rds_iam_token_is_byte_for_byte_botocores_generate_db_auth_token() {
    let Some(py) = venv_python() else {
        return;
    };
    // (key id, secret, session token, region, host, port, user, unix time)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a str,
        u16,
        &'a str,
        i64,
    );
    let cases: &[Case] = &[
        (
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            "us-east-1",
            "dbtune-db.abcdefghijkl.us-east-1.rds.amazonaws.com",
            5432,
            "dbtune",
            1_700_000_000,
        ),
        (
            "ASIAEXAMPLE0000TOKEN",
            "s3cr3t+/=value",
            Some("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+/=="),
            "eu-west-1",
            "dbtune.cluster-abc.eu-west-1.rds.amazonaws.com",
            6543,
            "iam user+1@x",
            1_767_225_599,
        ),
        (
            "AKIDEXAMPLE",
            "secret",
            None,
            "ap-southeast-2",
            "127.0.0.1",
            15432,
            "dbtune_iam",
            1_798_761_600,
        ),
    ];
    for &(key, secret, token, region, host, port, user, t) in cases {
        let creds = dbtune_agent::cloud::aws::Credentials::new(key, secret, token);
        let ours =
            dbtune_agent::cloud::aws::sigv4::rds_auth_token(host, port, user, region, &creds, t);
        let reference = botocore_token(&py, key, secret, token, region, host, port, user, t);
        assert_eq!(ours, reference, "{user}@{host}:{port} in {region} at {t}");
    }
}

/// Removes the PAM service file at the end of the test.
struct PamService(std::path::PathBuf);
impl Drop for PamService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn rds_iam_auth_logs_in_to_postgresql_over_tls_with_tokens_a_pam_checker_verifies() {
    let Some(py) = venv_python() else {
        return;
    };
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("*** SKIPPING: the PAM service file in /etc/pam.d needs root ***");
        return;
    }
    let certs = agent::temp_dir("rds-iam-tls");
    let st = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ])
        .current_dir(&certs)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        certs.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    support::pgcluster::chown_postgres(&certs);
    let (crt, key) = (certs.join("server.crt"), certs.join("server.key"));
    let Some(w) = setup_pg(
        Kind::Rds {
            default_group: false,
        },
        false,
        &[
            "ssl = on",
            &format!("ssl_cert_file = '{}'", crt.display()),
            &format!("ssl_key_file = '{}'", key.display()),
        ],
    ) else {
        return;
    };
    let port = w.pg.port;
    // The checker runs as the server's user: its script and python must be reachable by it.
    let checker = certs.join("rds_token_reference.py");
    std::fs::copy(reference_script(), &checker).unwrap();
    let Some(checker_py) = python_for_postgres(&py, &certs) else {
        let msg = "no python with botocore that the postgres user can run";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("*** SKIPPING: {msg} ***");
        return;
    };
    support::pgcluster::chown_postgres(&certs);
    // PostgreSQL asks PAM; pam_exec hands the password to botocore, which must find it to be
    // a token it would have signed itself for this user, host and port.
    let service = format!("dbtune-iam-{}", std::process::id());
    let pam_log = certs.join("pam.log");
    let _pam = PamService(std::path::PathBuf::from(format!("/etc/pam.d/{service}")));
    std::fs::write(
        &_pam.0,
        format!(
            "auth required pam_exec.so expose_authtok log={} {} {} verify {} {} {REGION} 127.0.0.1 {port}\naccount required pam_permit.so\n",
            pam_log.display(),
            checker_py,
            checker.display(),
            w.key_id,
            w.secret,
        ),
    )
    .unwrap();
    let hba = w.pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostssl all dbtune_iam 127.0.0.1/32 pam pamservice={service}\nhost all dbtune_iam 127.0.0.1/32 reject\n{old}"),
    )
    .unwrap();
    let mut c = w.pg.client();
    c.batch_execute(
        "CREATE ROLE dbtune_iam LOGIN; GRANT pg_monitor TO dbtune_iam; SELECT pg_reload_conf()",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // The checker is not a yes-man: a wrong password and a token signed with another secret
    // are refused.
    let try_login = |password: &str| {
        let url = format!(
            "postgres://dbtune_iam:{}@127.0.0.1:{port}/postgres?sslmode=require",
            dbtune_agent::cloud::encoding::uri_encode(password, false)
        );
        // A short connect timeout: the pool retries a refused login until it runs out.
        let limits = dbtune_agent::pg::SessionLimits {
            connect_timeout: Duration::from_secs(2),
            ..dbtune_agent::pg::SessionLimits::default()
        };
        dbtune_agent::pg::Pg::new(&url, 1, limits).and_then(|p| p.conn().map(|_| ()))
    };
    assert!(try_login("not-a-token").is_err());
    let forged = botocore_token(
        &py,
        &w.key_id,
        "another-secret",
        None,
        REGION,
        "127.0.0.1",
        port,
        "dbtune_iam",
        now_unix(),
    );
    assert!(try_login(&forged).is_err());
    let real = botocore_token(
        &py,
        &w.key_id,
        &w.secret,
        None,
        REGION,
        "127.0.0.1",
        port,
        "dbtune_iam",
        now_unix(),
    );
    try_login(&real).expect("botocore's own token logs in");
    let checked_before = std::fs::read_to_string(&pam_log).unwrap_or_default();
    assert!(
        checked_before.contains("signature mismatch"),
        "{checked_before}"
    );

    let pg_url = format!("postgres://dbtune_iam@127.0.0.1:{port}/postgres?sslmode=require");
    let a = w.spawn_full(
        &pg_url,
        &w.mirror.url(),
        "--rds",
        &[("DBT_RDS_IAM_AUTH", "true")],
    );
    // System info needs PostgreSQL: the agent is logged in.
    w.platform
        .wait_for("system-info", Duration::from_secs(60), |r| {
            r.iter().any(|x| x.segment() == "system-info")
        });
    let ssl: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'dbtune_iam' AND s.ssl",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl >= 1, "no TLS session of dbtune_iam\n{}", a.logs());
    // Cut the agent's sessions: it logs in again, with the cached token.
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'dbtune_iam'",
        &[],
    )
    .unwrap();
    let logins = || {
        std::fs::read_to_string(&pam_log).unwrap_or_default()[checked_before.len()..]
            .matches("dbtune_iam: valid token")
            .count()
    };
    let first = logins();
    let t0 = Instant::now();
    while logins() <= first && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let checked = std::fs::read_to_string(&pam_log).unwrap_or_default();
    let agent_logins: Vec<&str> = checked[checked_before.len()..]
        .lines()
        .filter(|l| l.contains("dbtune_iam: valid token"))
        .collect();
    assert!(
        !agent_logins.is_empty() && !checked[checked_before.len()..].contains("mismatch"),
        "{checked}\n{}",
        a.logs()
    );
    // Every login reuses the one cached token (same signing time).
    let dates: std::collections::HashSet<&str> = agent_logins
        .iter()
        .filter_map(|l| l.split("X-Amz-Date ").nth(1))
        .collect();
    eprintln!(
        "MEASURE rds iam auth: {} agent logins with {} token(s)",
        agent_logins.len(),
        dates.len()
    );
    assert!(
        agent_logins.len() > first,
        "no login after the sessions were cut: {checked}"
    );
    assert_eq!(dates.len(), 1, "{agent_logins:?}");
    let logs = a.logs();
    assert!(
        !logs.contains("X-Amz-Signature"),
        "token in the log:\n{logs}"
    );
    assert!(!logs.contains(&w.secret), "secret in the log");
    drop(a);
    // Without TLS the agent refuses to start: the token is a bearer credential.
    let (st, out, err) = agent::run(
        &agent::config_yaml(
            &format!("postgres://dbtune_iam@127.0.0.1:{port}/postgres?sslmode=disable"),
            &w.platform.url,
            "disable_checks: true\n",
        ),
        &["--rds"],
        &w.env(&w.mirror.url(), &[("DBT_RDS_IAM_AUTH", "true")]),
        Duration::from_secs(60),
    );
    assert!(!st.success(), "{out}\n{err}");
    assert!(
        err.contains("rds.iam_auth (DBT_RDS_IAM_AUTH) needs TLS")
            && err.contains("sslmode=require"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&certs);
}

/// A command line running python with botocore as the postgres user (pam_exec runs the checker
/// as the server's user): the venv's interpreter, or, when that lives somewhere postgres may
/// not enter (a pyenv under /root), the system python3 with the venv's pure-python packages,
/// read in place or copied under `scratch` (a directory postgres owns).
fn python_for_postgres(venv_py: &std::path::Path, scratch: &std::path::Path) -> Option<String> {
    let works = |argv: &[&str]| {
        std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(argv)
            .args(["-c", "import botocore"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let venv = venv_py.display().to_string();
    if works(&[&venv]) {
        return Some(venv);
    }
    let lib = venv_py.parent()?.parent()?.join("lib");
    let site = std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())?;
    let with_path = |dir: &std::path::Path| {
        let pythonpath = format!("PYTHONPATH={}", dir.display());
        let argv = ["/usr/bin/env", pythonpath.as_str(), "/usr/bin/python3"];
        works(&argv).then(|| argv.join(" "))
    };
    if let Some(cmd) = with_path(&site) {
        return Some(cmd);
    }
    let lib = scratch.join("pylib");
    std::fs::create_dir_all(&lib).ok()?;
    for pkg in ["botocore", "dateutil", "jmespath", "urllib3", "six.py"] {
        let st = std::process::Command::new("cp")
            .arg("-r")
            .arg(site.join(pkg))
            .arg(&lib)
            .status()
            .ok()?;
        if !st.success() {
            return None;
        }
    }
    support::pgcluster::chown_postgres(&lib);
    with_path(&lib)
}
