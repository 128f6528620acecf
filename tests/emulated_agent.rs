//! A cross-built agent (DBTUNE_TEST_AGENT, an ARM binary under qemu-user; .ci/arm-check.sh)
//! against this build's native binary: the same PostgreSQL, the same config, `--dry-run
//! --once` from both; the emulated output must have the same endpoints, the same payload
//! shapes, and equal hashes where the hashed inputs are equal.
//!
//! Ignored in a plain `cargo test`: it needs the emulated binary. Run with
//! `DBTUNE_TEST_AGENT="qemu-aarch64-static target/aarch64-unknown-linux-musl/release/dbtune-agent"
//!  cargo test --test emulated_agent -- --ignored`.
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use support::pgcluster::PgCluster;

fn emulated() -> Vec<String> {
    let v = std::env::var("DBTUNE_TEST_AGENT")
        .expect("DBTUNE_TEST_AGENT must name the emulated agent (see the file comment)");
    v.split_whitespace().map(str::to_string).collect()
}

fn version_of(cmd: &mut Command) -> String {
    let out = cmd.arg("--version").output().expect("running --version");
    assert!(out.status.success(), "--version failed: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `--local --dry-run --once` with `program` (empty: the native binary); the JSON lines.
fn dry_run(program: &[String], yaml: &str) -> Vec<Value> {
    let dir = support::agent::temp_dir("emulated");
    let cfg = dir.join("dbtune.yaml");
    std::fs::write(
        &cfg,
        format!("{yaml}state_dir: \"{}\"\n", dir.join("state").display()),
    )
    .unwrap();
    let mut cmd = if program.is_empty() {
        Command::new(env!("CARGO_BIN_EXE_dbtune-agent"))
    } else {
        let mut c = Command::new(&program[0]);
        c.args(&program[1..]);
        c
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("DBT_") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("--config")
        .arg(&cfg)
        .args(["--local", "--dry-run", "--once"])
        .current_dir(&dir)
        .output()
        .expect("running the agent");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{program:?} --dry-run --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The payload's shape: object keys in order with their shapes, array element shapes, and the
/// JSON type of each leaf (values themselves differ between runs: timestamps, counters).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        // Element shapes, deduplicated: row counts may differ (pg_stat_activity sees each run).
        Value::Array(a) => {
            let mut seen: Vec<Value> = Vec::new();
            for s in a.iter().map(shape) {
                if !seen.contains(&s) {
                    seen.push(s);
                }
            }
            Value::Array(seen)
        }
        Value::String(_) => "string".into(),
        // Go-JSON writes a whole float without a fraction (`0`, not `0.0`): one number type.
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

/// Lines by `METHOD endpoint` (each endpoint is sent once by `--once`).
fn by_endpoint(lines: &[Value]) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for l in lines {
        let key = format!(
            "{} {}",
            l["method"].as_str().unwrap(),
            l["endpoint"].as_str().unwrap()
        );
        assert!(m.insert(key.clone(), l.clone()).is_none(), "{key} twice");
    }
    m
}

#[test]
#[ignore = "needs DBTUNE_TEST_AGENT: a cross-built agent under qemu-user (.ci/arm-check.sh)"]
fn emulated_dry_run_matches_the_native_one() {
    let program = emulated();
    let native_version = version_of(&mut Command::new(env!("CARGO_BIN_EXE_dbtune-agent")));
    let mut c = Command::new(&program[0]);
    c.args(&program[1..]);
    let emulated_version = version_of(&mut c);
    eprintln!("native:   {native_version}\nemulated: {emulated_version}");
    // Same version and commit (the build dates may differ: the test build does not pin
    // SOURCE_DATE_EPOCH); a different `rust: <arch>-linux`, so this compares two architectures.
    let arch = |v: &str| v.rsplit("rust: ").next().unwrap().to_string();
    assert_ne!(arch(&native_version), arch(&emulated_version));
    assert_eq!(
        native_version.split(", built:").next(),
        emulated_version.split(", built:").next()
    );

    let pg = PgCluster::start();
    let yaml = format!("postgresql:\n  connection_url: \"{}\"\n", pg.url());
    let native = by_endpoint(&dry_run(&[], &yaml));
    let emul = by_endpoint(&dry_run(&program, &yaml));
    assert_eq!(
        native.keys().collect::<Vec<_>>(),
        emul.keys().collect::<Vec<_>>(),
        "endpoints"
    );
    for e in [
        "POST heartbeat",
        "PUT system-info",
        "POST configurations",
        "POST metrics",
    ] {
        assert!(
            native.contains_key(e),
            "the dry run lacks {e}: {:?}",
            native.keys()
        );
    }
    eprintln!("endpoints: {:?}", native.keys().collect::<Vec<_>>());
    for (key, n) in &native {
        let m = &emul[key];
        assert_eq!(n["gzip"], m["gzip"], "{key}: gzip flag");
        assert_eq!(shape(&n["body"]), shape(&m["body"]), "{key}: payload shape");
    }

    // Hashes, where both ran on equal inputs: the same server's settings, the same host (qemu-
    // user reads the host's /proc), the same schema.
    let hashed = |key: &str, input: &str, hash: &str| {
        let (n, m) = (&native[key]["body"], &emul[key]["body"]);
        assert_eq!(
            n[input], m[input],
            "{key}: {input} differs between the runs"
        );
        assert!(
            n[hash].as_str().is_some_and(|h| h.len() == 64),
            "{key}: {hash} {}",
            n[hash]
        );
        assert_eq!(n[hash], m[hash], "{key}: {hash} of equal inputs");
        eprintln!("{key}: {hash} {} on both", n[hash]);
    };
    hashed("POST configurations", "config", "hash");
    hashed("PUT system-info", "system_info", "hash");
    if native.contains_key("PUT ddl") || native.contains_key("POST ddl") {
        let k = if native.contains_key("PUT ddl") {
            "PUT ddl"
        } else {
            "POST ddl"
        };
        hashed(k, "ddl", "ddl_hash");
    }
}
