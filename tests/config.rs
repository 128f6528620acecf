//! Configuration: file + DBT_* overlay, and validation messages that name the key, the value
//! (secrets masked) and what was expected.

use dbtune_agent::config::{Config, Env, Sources};

const KEY: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
const DB: &str = "6ba7b811-9dad-11d1-80b4-00c04fd430c8";

fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let src = Sources::from_yaml(yaml, Env::from_pairs(env.iter().copied()))
        .map_err(|e| e.to_string())?;
    Config::from_sources(src, None).map_err(|e| e.to_string())
}

fn base() -> String {
    format!("postgresql:\n  connection_url: postgres://u:pw@localhost/db\ndbtune:\n  api_key: {KEY}\n  database_id: {DB}\n")
}

#[test]
fn env_overrides_file_and_empty_env_does_not() {
    let c = load(
        &base(),
        &[
            ("DBT_MEMORY_THRESHOLD", "75.5"),
            ("DBT_DBTUNE_SERVER_URL", ""),
        ],
    )
    .unwrap();
    assert_eq!(c.memory_threshold, 75.5);
    assert_eq!(c.dbtune.server_url, "https://app.dbtune.com");
    let c = load(&base(), &[("DBT_DBTUNE_SERVER_URL", "http://127.0.0.1:9")]).unwrap();
    assert_eq!(c.dbtune.server_url, "http://127.0.0.1:9");
    assert_eq!(c.postgresql.pool_size, 2);
}

#[test]
fn keys_are_case_insensitive_and_env_alone_is_enough() {
    let c = load(&base().replace("api_key", "API_Key"), &[]).unwrap();
    assert_eq!(c.dbtune.api_key.expose(), KEY);
    let c = load(
        "",
        &[
            ("DBT_POSTGRESQL_CONNECTION_URL", "host=localhost user=u"),
            ("DBT_DBTUNE_API_KEY", KEY),
            ("DBT_DBTUNE_DATABASE_ID", DB),
            ("DBT_POSTGRESQL_ALLOW_RESTART", "1"),
            ("DBT_POSTGRESQL_SERVICE_NAME", "postgresql"),
        ],
    )
    .unwrap();
    assert!(c.runtime_allow_restart && c.postgresql.allow_restart);
}

#[test]
fn every_problem_is_named_once_with_the_expected_form() {
    let yaml = "postgresql:\n  connection_url: postgres://u:pw@h/db?sslmode=sometimes\ndbtune:\n  server_url: app.dbtune.com\n  api_key: 1B4E28BA-2FA1-11D2-883F-0016D3CCA427\n  database_id: nope\nguardrail_settings:\n  memory_threshold: 0\n";
    let e = load(yaml, &[]).unwrap_err();
    for needle in [
        "postgresql.connection_url",
        "sslmode \"sometimes\" is not one of disable",
        "dbtune.server_url (DBT_DBTUNE_SERVER_URL): \"app.dbtune.com\" is not a URL",
        "dbtune.api_key (DBT_DBTUNE_API_KEY): (hidden, 36 characters) is not a lower-case UUID",
        "dbtune.database_id (DBT_DBTUNE_DATABASE_ID): \"nope\" is not a lower-case UUID",
        "guardrail_settings.memory_threshold (DBT_MEMORY_THRESHOLD): 0 is out of range (expected 1 to 100)",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
    assert!(
        !e.contains("1B4E28BA"),
        "the API key must not be echoed: {e}"
    );
    assert!(!e.contains(":pw@"), "the password must not be echoed: {e}");
}

#[test]
fn bad_bool_names_the_variable() {
    let e = load(&base(), &[("DBT_POSTGRESQL_ALLOW_RESTART", "yes")]).unwrap_err();
    assert!(
        e.contains(
            "postgresql.allow_restart (DBT_POSTGRESQL_ALLOW_RESTART): cannot parse \"yes\" as bool"
        ),
        "{e}"
    );
}

#[test]
fn legacy_postgres_section_connects_but_does_not_grant_restarts() {
    let yaml = format!(
        "postgres:\n  connection_url: postgres://u@h/db\n  allow_restart: true\n  service_name: pg\ndbtune:\n  api_key: {KEY}\n  database_id: {DB}\n"
    );
    let c = load(&yaml, &[]).unwrap();
    assert_eq!(c.postgresql.connection_url.expose(), "postgres://u@h/db");
    assert!(
        c.postgresql.allow_restart,
        "the section's own flag (startup validation)"
    );
    assert!(
        !c.runtime_allow_restart,
        "the runtime check reads only postgresql.allow_restart"
    );
}

#[test]
fn restart_settings_are_validated_at_start() {
    // The self-managed adapter restarts through a script or systemd: it refuses to start
    // without one when restarts are allowed (other providers restart through their API).
    let cfg = load(
        &base().replace("postgresql:\n", "postgresql:\n  allow_restart: true\n"),
        &[],
    )
    .unwrap();
    let e = dbtune_agent::adapter::pgprem::PgPrem::new(&cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("neither postgresql.service_name"), "{e}");
    let script = std::env::temp_dir().join(format!("dbtune-not-exec-{}.sh", std::process::id()));
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let yaml = base().replace(
        "postgresql:\n",
        &format!("postgresql:\n  restart_script_path: {}\n", script.display()),
    );
    let e = load(&yaml, &[]).unwrap_err();
    assert!(
        e.contains("is not executable (mode 644); chmod +x it"),
        "{e}"
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(
        load(&yaml, &[]).is_ok(),
        "an owner-executable script is accepted"
    );
    let _ = std::fs::remove_file(&script);
    let yaml = base().replace(
        "postgresql:\n",
        "postgresql:\n  restart_script_path: /nonexistent/restart.sh\n",
    );
    assert!(load(&yaml, &[]).unwrap_err().contains("is not accessible"));
}
