//! The S3 audit trail and the `--output s3://` snapshot through the real binary, against moto's
//! S3 behind a presigned-signature check done with botocore (tests/support/cloud/s3.rs):
//! objects present with the same record as the local history, an outage (moto stopped and
//! restarted) that loses nothing and does not delay applies, wrong credentials as a clear error,
//! no secret in any log.
mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::agent::{self, Agent};
use support::cloud::moto::moto_binary;
use support::cloud::s3::{S3Peer, KEY_ID, SECRET};
use support::pgcluster::PgCluster;
use support::platform::{recommend_one as rec, PlatformStandIn};

const BUCKET: &str = "dbtune-audit";

fn aws_env(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
        ("HOME", "/nonexistent".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn history(state: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("apply-history.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn outbox_len(state: &std::path::Path) -> usize {
    std::fs::read_dir(state.join("audit-outbox"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn every_apply_attempt_reaches_s3_and_an_outage_loses_nothing() {
    let Some(bin) = moto_binary() else { return };
    let mut s3 = S3Peer::start(&bin);
    s3.create_bucket(BUCKET);
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("audit");
    let state = dir.join("state");
    let yaml = agent::config_yaml(
        &pg.url(),
        &platform.url,
        &format!(
            "disable_checks: true\nstate_dir: \"{}\"\naudit:\n  s3_url: s3://{BUCKET}/db1/\n  s3_endpoint: \"{}\"\n  s3_region: eu-west-1\n",
            state.display(),
            s3.url()
        ),
    );
    let env = aws_env(SECRET);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    platform.set_recommendation(&rec("work_mem", 8192, "kB", "user", "reload"));
    let a = Agent::spawn(&yaml, &["--local"], &env_ref);

    // The apply's record lands as one object, identical to the local history record.
    let keys = wait("the first audit object", Duration::from_secs(60), || {
        Some(s3.list(BUCKET, "db1/")).filter(|k| !k.is_empty())
    });
    assert_eq!(keys.len(), 1, "{keys:?}");
    let obj: Value = serde_json::from_slice(&s3.get(BUCKET, &keys[0])).unwrap();
    let local = history(&state);
    assert_eq!(local.len(), 1);
    assert_eq!(
        obj, local[0],
        "one record format: the object is the history record"
    );
    assert_eq!(keys[0], format!("db1/{}.json", obj["id"].as_str().unwrap()));
    assert_eq!(obj["outcome"], "applied");
    assert_eq!(obj["knobs"][0]["name"], "work_mem");
    assert_eq!(obj["knobs"][0]["before"], "4096");
    assert_eq!(obj["knobs"][0]["after"], "8192");
    assert_eq!(obj["agent_version"], env!("CARGO_PKG_VERSION"));
    assert!(obj["recommendation_id"]
        .as_str()
        .unwrap()
        .starts_with("rec-"));
    assert!(!obj["host"].as_str().unwrap().is_empty());
    assert_eq!(outbox_len(&state), 0, "uploaded records leave the outbox");

    // Outage: moto (and its front) stopped. Applies go on at their usual pace; records wait.
    s3.down();
    let t0 = Instant::now();
    platform.set_recommendation(&rec("work_mem", 16384, "kB", "user", "reload"));
    wait(
        "the apply during the outage",
        Duration::from_secs(30),
        || (history(&state).len() == 2).then_some(()),
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "an unreachable bucket must not delay an apply ({:?})",
        t0.elapsed()
    );
    platform.set_recommendation(&rec("shared_buffers", 4096, "8kB", "postmaster", "restart"));
    wait(
        "the refusal during the outage",
        Duration::from_secs(30),
        || (history(&state).len() == 3).then_some(()),
    );
    wait("two records in the outbox", Duration::from_secs(10), || {
        (outbox_len(&state) == 2).then_some(())
    });
    a.wait_log("audit: uploading to S3 failed", Duration::from_secs(30));

    // Back (a new moto: empty, so the bucket is created again): the outbox drains in order.
    s3.up();
    s3.create_bucket(BUCKET);
    let keys = wait("the outbox drained", Duration::from_secs(120), || {
        let k = s3.list(BUCKET, "db1/");
        (k.len() == 2 && outbox_len(&state) == 0).then_some(k)
    });
    let local = history(&state);
    let objs: Vec<Value> = keys
        .iter()
        .map(|k| serde_json::from_slice(&s3.get(BUCKET, k)).unwrap())
        .collect();
    assert_eq!(
        objs[0], local[1],
        "time-ordered keys: the older record first"
    );
    assert_eq!(objs[1], local[2]);
    assert_eq!(objs[0]["outcome"], "applied");
    assert_eq!(objs[0]["knobs"][0]["before"], "8192");
    assert_eq!(objs[0]["knobs"][0]["after"], "16384");
    assert_eq!(objs[1]["outcome"], "refused");
    assert!(
        objs[1]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("restart is not allowed"),
        "{}",
        objs[1]
    );
    a.wait_log("audit: S3 reachable again", Duration::from_secs(10));

    let logs = a.logs();
    assert!(!logs.contains(SECRET), "the secret leaked:\n{logs}");
    assert!(
        !logs.contains("X-Amz-Signature"),
        "a presigned URL leaked:\n{logs}"
    );
    assert!(
        s3.check_log().contains("PUT /dbtune-audit/db1/"),
        "the uploads went through the signature check: {}",
        s3.check_log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dry_run_snapshot_goes_to_s3_and_bad_credentials_fail_clearly() {
    let Some(bin) = moto_binary() else { return };
    let s3 = S3Peer::start(&bin);
    s3.create_bucket(BUCKET);
    let pg = PgCluster::start();
    let dir = agent::temp_dir("snapshot");
    let yaml = format!(
        "postgresql:\n  connection_url: \"{}\"\nstate_dir: \"{}\"\naudit:\n  s3_endpoint: \"{}\"\n",
        pg.url(),
        dir.join("state").display(),
        s3.url()
    );
    let target = format!("s3://{BUCKET}/snapshots/db1.jsonl");
    let args = [
        "--local",
        "--dry-run",
        "--once",
        "--output",
        target.as_str(),
    ];

    let env = aws_env(SECRET);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, _, err) = agent::run(&yaml, &args, &env_ref, Duration::from_secs(90));
    assert!(st.success(), "{err}");
    let body = String::from_utf8(s3.get(BUCKET, "snapshots/db1.jsonl")).unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["endpoint"] == "system-info")
            && lines.iter().any(|l| l["endpoint"] == "configurations"),
        "{body}"
    );
    assert!(
        err.contains(&format!(
            "nothing was sent: {} payload(s) were written",
            lines.len()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("uploaded to {target}")), "{err}");

    // A wrong secret: exit 1, one clear line naming the operation and S3's code.
    let env = aws_env("this-is-the-wrong-secret-0000");
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, _, err) = agent::run(&yaml, &args, &env_ref, Duration::from_secs(90));
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("uploading the dry-run snapshot to {target}"))
            && err.contains("SignatureDoesNotMatch"),
        "{err}"
    );
    assert!(!err.contains("this-is-the-wrong-secret-0000"), "{err}");
    assert!(!err.contains("X-Amz-Signature"), "{err}");

    // An unknown key id.
    let (st, _, err) = agent::run(
        &yaml,
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("HOME", "/nonexistent"),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    assert!(!err.contains(SECRET), "{err}");

    // An S3 output without --once is refused before anything runs.
    let (st, _, err) = agent::run(
        &yaml,
        &["--local", "--dry-run", "--output", target.as_str()],
        &env_ref,
        Duration::from_secs(30),
    );
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("needs --dry-run --once"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
