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
    let pg = PgCluster::start();
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
        let env = self.env(url, extra_env);
        Agent::spawn(
            &agent::config_yaml(&self.pg.url(), &self.platform.url, "disable_checks: true\n"),
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
    let a = w.spawn("--rds", &[]);
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
    let a = w.spawn("--aurora", &[]);
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
    assert!(span < deadline, "{span:?}");
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
