//! Issue 17, defect 5: unknown configuration keys through the real binary's `--check`, in
//! YAML, TOML and the environment. Unknown keys under `apply:` and unknown `DBT_APPLY_*`
//! variables refuse the configuration (a misspelt deny list or freeze must not silently do
//! nothing); other unknown keys and `DBT_*` variables are warnings. Each names the closest
//! known key. Every key of the Go agent, legacy ones included, stays accepted.
mod support;

use std::process::Stdio;
use support::agent::{self, API_KEY, DB_ID};
use support::pgcluster::PgCluster;

/// Runs `--check --dry-run --local` with `file_name` holding `text`: (exit code, stdout+stderr).
fn check(file_name: &str, text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = agent::temp_dir("keys");
    let cfg = dir.join(file_name);
    std::fs::write(&cfg, text).unwrap();
    let mut cmd = agent::command();
    cmd.arg("--config")
        .arg(&cfg)
        .args(["--check", "--dry-run", "--local"])
        .current_dir(&dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("DBT_") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.env("DBT_STATE_DIR", dir.join("state"));
    cmd.envs(env.iter().copied());
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn yaml(url: &str, extra: &str) -> String {
    format!(
        "postgresql:\n  connection_url: \"{url}\"\ndbtune:\n  api_key: {API_KEY}\n  database_id: {DB_ID}\n{extra}"
    )
}

fn toml(url: &str, extra: &str) -> String {
    format!(
        "{extra}\n[postgresql]\nconnection_url = \"{url}\"\n[dbtune]\napi_key = \"{API_KEY}\"\ndatabase_id = \"{DB_ID}\"\n"
    )
}

#[test]
fn unknown_apply_keys_and_variables_refuse_the_configuration() {
    let url = "postgres://postgres@127.0.0.1:1/postgres";
    for (what, file, text, env) in [
        (
            "apply.deny_list",
            "dbtune.yaml",
            yaml(url, "apply:\n  deny_list: [shared_buffers]\n"),
            vec![],
        ),
        (
            "apply.frozen_typo",
            "dbtune.yaml",
            yaml(url, "apply:\n  frozen_typo: true\n"),
            vec![],
        ),
        (
            "apply.deny_list",
            "dbtune.toml",
            toml(url, "[apply]\ndeny_list = [\"shared_buffers\"]"),
            vec![],
        ),
        (
            "DBT_APPLY_DENY_LIST",
            "dbtune.yaml",
            yaml(url, ""),
            vec![("DBT_APPLY_DENY_LIST", "shared_buffers")],
        ),
        (
            "DBT_APPLY_FROZN",
            "dbtune.yaml",
            yaml(url, ""),
            vec![("DBT_APPLY_FROZN", "true")],
        ),
    ] {
        let (code, out) = check(file, &text, &env);
        assert_eq!(code, 1, "{what} ({file}) must fail --check:\n{out}");
        assert!(out.contains(what), "{what} is named:\n{out}");
        assert!(out.contains("unknown"), "{what}: {out}");
        let hint = match what {
            "apply.deny_list" => "did you mean apply.deny?",
            "apply.frozen_typo" => "did you mean apply.frozen?",
            "DBT_APPLY_DENY_LIST" => "did you mean DBT_APPLY_DENY?",
            _ => "did you mean DBT_APPLY_FROZEN?",
        };
        assert!(out.contains(hint), "{what}: expected {hint:?}:\n{out}");
        assert!(!out.contains("[ ok ] configuration"), "{what}: {out}");
    }
    // The TOML form names the file and line of the key.
    let (_, out) = check(
        "dbtune.toml",
        &toml(url, "[apply]\ndeny_list = [\"shared_buffers\"]"),
        &[],
    );
    assert!(out.contains("dbtune.toml:2)"), "{out}");
}

#[test]
fn other_unknown_keys_warn_with_a_suggestion_and_the_check_passes() {
    let pg = PgCluster::start();
    let url = pg.url();
    for (file, text) in [
        (
            "dbtune.yaml",
            yaml(&url, "memory_treshold: 50\nallow_restarts: true\n"),
        ),
        (
            "dbtune.toml",
            toml(&url, "memory_treshold = 50\nallow_restarts = true"),
        ),
    ] {
        let (code, out) = check(file, &text, &[("DBT_MEMORY_TRESHOLD", "50")]);
        assert_eq!(code, 0, "{file}: warnings do not fail --check:\n{out}");
        for w in [
            "memory_treshold",
            "did you mean guardrail_settings.memory_threshold?",
            "allow_restarts",
            "did you mean postgresql.allow_restart?",
            "DBT_MEMORY_TRESHOLD",
            "did you mean DBT_MEMORY_THRESHOLD?",
        ] {
            assert!(out.contains(w), "{file}: missing {w:?}:\n{out}");
        }
        // Shown in the report and logged as warnings at start.
        assert!(out.contains("[warn] configuration keys"), "{out}");
        assert!(out.contains("level=warning"), "{out}");
    }
}

#[test]
fn every_go_agent_key_and_every_provider_section_is_accepted() {
    let pg = PgCluster::start();
    let url = pg.url();
    // Legacy `postgres:` section and root keys, every provider's section in the Go agent's
    // spelling, the deprecated RDS parameter group, the Cloud SQL doc sample's keys, Aiven.
    let sections = "debug: false\ndisable_checks: false\nguardrail_settings:\n  memory_threshold: 90\ncollectors:\n  pg_stat_statements:\n    include_queries: true\n\
rds:\n  AWS_ACCESS_KEY_ID: a\n  AWS_SECRET_ACCESS_KEY: b\n  AWS_REGION: us-east-1\n  RDS_DATABASE_IDENTIFIER: db\n  RDS_PARAMETER_GROUP_NAME: old\n\
rds-aurora:\n  AWS_REGION: us-east-1\n  RDS_DATABASE_IDENTIFIER: db\n\
cloudsql:\n  project_id: p\n  database_name: d\n  DBT_GCP_PROJECT_ID: p\n  DBT_GCP_DATABASE_NAME: d\n\
azure_flex:\n  subscription_id: s\n  resource_group_name: r\n  server_name: n\n  auth_method: entra\n\
aiven:\n  AIVEN_API_TOKEN: t\n  AIVEN_PROJECT_NAME: p\n  AIVEN_SERVICE_NAME: s\n  metric_resolution_seconds: 30\n  database_name: d\n\
cnpg:\n  namespace: n\n  cluster_name: c\n  pod_name: p\n  container_name: postgres\n  kubeconfig_path: /k\n\
patroni:\n  node_name: n\n  patroni_api_url: http://10.0.0.1:8008\n  cluster_name: c\n  node_host: h\n  node_port: 8008\n\
docker:\n  container_name: pg\n";
    let text = format!(
        "postgres:\n  connection_url: \"{url}\"\n  service_name: postgresql\n  include_queries: true\n  maximum_query_text_length: 100\ndbtune:\n  api_key: {API_KEY}\n  database_id: {DB_ID}\n  server_url: https://app.dbtune.com\n{sections}"
    );
    let env = [
        ("DBT_POSTGRESQL_INCLUDE_QUERIES", "true"),
        ("DBT_POSTGRESQL_MAXIMUM_QUERY_TEXT_LENGTH", "100"),
        ("DBT_RDS_PARAMETER_GROUP_NAME", "old"),
        ("DBT_GCP_DATABSE_NAME", "d"),
        ("DBT_AIVEN_METRIC_RESOLUTION_SECONDS", "30"),
        ("DBT_AIVEN_DATABASE_NAME", "d"),
        ("DBT_PATRONI_NODE_PORT", "8008"),
        ("DBT_ADAPTER", "docker"),
        ("DBT_COLLECTOR_PG_CLASS_ENABLED", "true"),
    ];
    let (code, out) = check("dbtune.yaml", &text, &env);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("unknown"), "nothing is unknown:\n{out}");
    // Root-level keys (no postgresql section at all) are the Go agent's third lookup.
    let text = format!(
        "connection_url: \"{url}\"\nallow_restart: false\ndbtune:\n  api_key: {API_KEY}\n  database_id: {DB_ID}\n"
    );
    let (code, out) = check("dbtune.yaml", &text, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("unknown"), "{out}");
}
