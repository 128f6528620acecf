//! `dbtune.toml`: read as TOML into the same key tree as `dbtune.yaml` (the samples at the top
//! of the repository give the same configuration), errors naming file, line and key, and the
//! real binary started from a TOML file with `RUST_LOG` module filters.
mod support;

use dbtune_agent::config::{Config, Env, Sources};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::pgcluster::PgCluster;

fn repo(f: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(f)
}

fn load(path: &Path, env: &[(&str, &str)]) -> Result<Config, String> {
    let src = Sources::read(Some(path), Env::from_pairs(env.iter().copied()))
        .map_err(|e| e.to_string())?;
    Config::from_sources(src, Some(path.to_path_buf())).map_err(|e| e.to_string())
}

/// Everything but where it came from; secrets exposed (Debug masks them).
fn effective(c: &Config) -> String {
    let mut c = c.clone();
    c.file = None;
    c.sources = Sources::default();
    format!(
        "{c:?} url={} key={}",
        c.postgresql.connection_url.expose(),
        c.dbtune.api_key.expose()
    )
}

#[test]
fn sample_toml_and_sample_yaml_are_the_same_configuration() {
    let y = load(&repo("dbtune.yaml"), &[]).unwrap();
    let t = load(&repo("dbtune.toml"), &[]).unwrap();
    assert_eq!(effective(&y), effective(&t));
    // Not vacuous: the samples set non-default values that both carry.
    assert_eq!(t.postgresql.service_name, "postgresql@16-main");
    // The same DBT_* overlay applies to both.
    let env = [("DBT_MEMORY_THRESHOLD", "70"), ("DBT_DEBUG", "true")];
    let (y, t) = (
        load(&repo("dbtune.yaml"), &env).unwrap(),
        load(&repo("dbtune.toml"), &env).unwrap(),
    );
    assert_eq!(effective(&y), effective(&t));
    assert!(t.debug && t.memory_threshold == 70.0);
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = support::agent::temp_dir("toml");
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = "[postgresql]\nconnection_url = \"postgres://u:pw@localhost/db\"\n\n[dbtune]\napi_key = \"1b4e28ba-2fa1-11d2-883f-0016d3cca427\"\ndatabase_id = \"6ba7b811-9dad-11d1-80b4-00c04fd430c8\"\n";

#[test]
fn errors_name_file_line_and_key() {
    // A type error found by validation: key, file and the key's line.
    let p = write(
        "dbtune.toml",
        &format!("{GOOD}\n[guardrail_settings]\nmemory_threshold = \"lots\"\n"),
    );
    let e = load(&p, &[]).unwrap_err();
    let at = format!(
        "guardrail_settings.memory_threshold (DBT_MEMORY_THRESHOLD, {}:9)",
        p.display()
    );
    assert!(e.contains(&at), "{e}");
    assert!(e.contains("cannot parse \"lots\" as a number"), "{e}");
    // A range error on a dotted key inside a table header.
    let p = write(
        "dbtune.toml",
        &GOOD.replace("[dbtune]", "pool_size = 50\n[dbtune]"),
    );
    let e = load(&p, &[]).unwrap_err();
    assert!(
        e.contains(&format!(
            "postgresql.pool_size (DBT_POSTGRESQL_POOL_SIZE, {}:4): 50 is out of range",
            p.display()
        )),
        "{e}"
    );
    // Syntax errors: file and line, and the key where TOML knows it.
    let p = write("dbtune.toml", &format!("{GOOD}api_key = \"again\"\n"));
    let e = Sources::read(Some(&p), Env::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains(&p.display().to_string()), "{e}");
    assert!(e.contains("line 7") && e.contains("api_key"), "{e}");
    let p = write("dbtune.toml", "[postgresql\nconnection_url = 1\n");
    let e = Sources::read(Some(&p), Env::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1"), "{e}");
    // A `.yaml` file is still YAML (TOML syntax there is a YAML error, not silently TOML).
    let p = write("dbtune.yaml", GOOD);
    assert!(load(&p, &[]).is_err());
}

#[test]
fn toml_values_have_their_toml_types() {
    let p = write(
        "dbtune.toml",
        &format!(
            "{GOOD}\n[apply]\ndeny = [\"shared_buffers\", \"work_mem\"]\nmax_restarts_per_day = 3\n\n[guardrail_settings]\nmemory_threshold = 85.5\n"
        ),
    );
    let c = load(&p, &[]).unwrap();
    assert_eq!(c.memory_threshold, 85.5);
    let apply = format!("{:?}", c.apply);
    assert!(
        apply.contains("shared_buffers") && apply.contains("work_mem"),
        "{apply}"
    );
    assert!(apply.contains("max_restarts_per_day: 3"), "{apply}");
}

/// The real binary from a TOML file against a real PostgreSQL: dry-run output written, and
/// `RUST_LOG` raising one module to debug while `debug` stays false.
#[test]
fn agent_runs_from_dbtune_toml_with_rust_log_filters() {
    let pg = PgCluster::start();
    let dir = support::agent::temp_dir("toml-agent");
    let cfg = dir.join("dbtune.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[postgresql]\nconnection_url = \"{}\"\n",
            dir.join("state").display(),
            pg.url()
        ),
    )
    .unwrap();
    let out = dir.join("out.jsonl");
    let run = |rust_log: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dbtune-agent"));
        cmd.arg("--config")
            .arg(&cfg)
            .args(["--local", "--dry-run", "--once", "--output"])
            .arg(&out)
            .current_dir(&dir)
            .env("RUST_LOG", rust_log);
        for (k, _) in std::env::vars() {
            if k.starts_with("DBT_") || k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        let o = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running dbtune-agent");
        (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (st, err) = run("");
    assert!(st.success(), "{err}");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("system_info"));
    assert!(!err.contains("level=debug"), "{err}");
    assert!(err.contains("level=info msg=\"dbtune-agent "), "{err}");

    let (st, err) = run("dbtune_agent::runner=debug,dbtune_agent=warn");
    assert!(st.success(), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("level=debug msg=\"Starting metric collection\"")),
        "RUST_LOG raised the runner to debug:\n{err}"
    );
    assert!(
        !err.contains("msg=\"dbtune-agent "),
        "and lowered the rest (main's start line) to warn:\n{err}"
    );
    // Every log line has the Go agent's format (the dry-run summary that follows them is not
    // a log line).
    assert!(
        lines
            .iter()
            .take_while(|l| !l.starts_with("--- dry-run summary"))
            .all(|l| l.starts_with("time=\"")),
        "{err}"
    );
}
