//! Issue 17, defect 4(a): a password in a connection string (or a URL) never reaches stdout or
//! stderr, whatever its form and whether the string parses or not, through the real binary
//! with the configuration in the environment, a YAML file or a TOML file.
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::agent::{self, API_KEY, DB_ID};

/// Every secret below contains this marker; nothing the agent prints may.
const MARK: &str = "S3cr";

/// Runs `--check --dry-run --local` with `file_name` holding `text`; returns stdout + stderr.
fn check_with_file(file_name: &str, text: &str, env: &[(&str, &str)]) -> String {
    run_with_file(file_name, text, env, &["--check", "--dry-run", "--local"])
}

fn run_with_file(file_name: &str, text: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = agent::temp_dir("secrets");
    let cfg = dir.join(file_name);
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = agent::command();
    cmd.arg("--config").arg(&cfg).args(args).current_dir(&dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("DBT_") || k.starts_with("PG") || k.ends_with("_PROXY") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DBT_STATE_DIR", dir.join("state"));
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "--check did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Hostile connection strings: those that fail to parse (and must be masked in the
/// configuration error) and those that parse but cannot connect (masked in the check report).
const HOSTILE: &[&str] = &[
    "host=127.0.0.1 port=abc password = S3crA",
    "mysql://u:S3crB@127.0.0.1/db",
    "postgres://u:S3c/rC@127.0.0.1:1/db",
    "host=127.0.0.1 port=x password='S3cr D'",
    "host=127.0.0.1 port=1 password='S3cr E' sslmode=disable",
    "postgres://u:S3crF@127.0.0.1:port/db",
    "postgresql://u:S3crG@127.0.0.1/db?sslmode=bogus",
    "host=127.0.0.1 password=S3crH port",
    "postgres://127.0.0.1:1/db?password=S3crI&sslmode=disable",
    "postgres://127.0.0.1:1/db?password=x@S3crJ",
    "postgres://u:S3c@rK@127.0.0.1:1/db?sslmode=disable",
    "host=127.0.0.1 password=S3cr\\ L port=nope",
    "host='127.0.0.1 password=S3crM",
    "u:S3crN@127.0.0.1/db",
];

fn assert_hidden(out: &str, what: &str) {
    assert!(
        !out.contains(MARK),
        "{what}: the secret reached the output:\n{out}"
    );
}

#[test]
fn hostile_connection_strings_in_the_environment_are_masked() {
    let yaml = format!("dbtune:\n  api_key: {API_KEY}\n  database_id: {DB_ID}\n");
    std::thread::scope(|s| {
        for url in HOSTILE {
            let yaml = &yaml;
            s.spawn(move || {
                let out = check_with_file(
                    "dbtune.yaml",
                    yaml,
                    &[("DBT_POSTGRESQL_CONNECTION_URL", url)],
                );
                assert_hidden(&out, url);
                // The report still says what is wrong and with which key.
                assert!(
                    out.contains("postgresql.connection_url")
                        || out.contains("PostgreSQL reachable"),
                    "{url}: {out}"
                );
            });
        }
    });
}

#[test]
fn hostile_connection_strings_in_yaml_and_toml_files_are_masked() {
    // One thread per form: each run is mostly waiting (connect, DNS).
    std::thread::scope(|s| {
        for url in HOSTILE {
            s.spawn(move || file_forms(url));
        }
    });
}

fn file_forms(url: &str) {
    {
        // Both formats carry the string verbatim (single-quoted YAML, literal TOML string).
        let yaml = format!(
            "postgresql:\n  connection_url: '{}'\ndbtune:\n  api_key: {API_KEY}\n  database_id: {DB_ID}\n",
            url.replace('\'', "''")
        );
        assert_hidden(&check_with_file("dbtune.yaml", &yaml, &[]), url);
        let toml = format!(
            "[postgresql]\nconnection_url = '''{url}'''\n[dbtune]\napi_key = \"{API_KEY}\"\ndatabase_id = \"{DB_ID}\"\n"
        );
        assert_hidden(&check_with_file("dbtune.toml", &toml, &[]), url);
    }
}

#[test]
fn the_reasons_are_still_given() {
    let yaml = format!("dbtune:\n  api_key: {API_KEY}\n  database_id: {DB_ID}\n");
    for (url, reason) in [
        (
            "mysql://u:S3crB@h/db",
            "the URL scheme mysql:// is not supported",
        ),
        (
            "host=h port=abc password = S3crA",
            "invalid value for option `port`",
        ),
        ("host=h password=S3crH port", "has no `=`"),
        ("host=h password=S3crH port", "host=h password=*** port"),
    ] {
        let out = check_with_file(
            "dbtune.yaml",
            &yaml,
            &[("DBT_POSTGRESQL_CONNECTION_URL", url)],
        );
        assert!(
            out.contains(reason),
            "{url}: expected {reason:?} in:\n{out}"
        );
    }
}

#[test]
fn urls_with_credentials_are_masked_in_platform_and_s3_errors() {
    let yaml = format!(
        "postgresql:\n  connection_url: 'postgres://u@127.0.0.1:1/db'\ndbtune:\n  api_key: {API_KEY}\n  database_id: {DB_ID}\n"
    );
    // The platform check fails (nothing listens) and names the URL it tried.
    let value = "http://u:S3crP@127.0.0.1:1";
    let out = run_with_file(
        "dbtune.yaml",
        &yaml,
        &[("DBT_DBTUNE_SERVER_URL", value)],
        &["--check", "--local"],
    );
    assert_hidden(&out, value);
    assert!(
        out.contains("POST http://u:***@127.0.0.1:1/api/v1/agent/heartbeat"),
        "{out}"
    );
    let value = "ftp://u:S3crQ@minio:9000";
    let out = check_with_file("dbtune.yaml", &yaml, &[("DBT_AUDIT_S3_ENDPOINT", value)]);
    assert_hidden(&out, value);
    assert!(out.contains("DBT_AUDIT_S3_ENDPOINT"), "{out}");
}
