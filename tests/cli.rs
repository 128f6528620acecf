//! The binary's command line: version, usage errors, providers not in this build, --plan, SIGHUP.
mod support;

use std::time::Duration;
use support::agent::{self, Agent};
use support::pgcluster::PgCluster;
use support::platform::PlatformStandIn;

#[test]
fn version_help_and_bad_flags() {
    let yaml = "postgresql:\n  connection_url: postgres://x@127.0.0.1:1/x\n";
    let (st, out, _) = agent::run(yaml, &["--version"], &[], Duration::from_secs(10));
    assert!(st.success());
    assert!(
        out.starts_with(&format!(
            "dbtune-agent {} (commit: ",
            env!("CARGO_PKG_VERSION")
        )),
        "{out}"
    );
    let (st, out, _) = agent::run(yaml, &["-h"], &[], Duration::from_secs(10));
    assert!(st.success() && out.contains("--dry-run"));
    let (st, _, err) = agent::run(yaml, &["--bogus"], &[], Duration::from_secs(10));
    assert_eq!(st.code(), Some(2));
    assert!(
        err.contains("flag provided but not defined: -bogus") && err.contains("Usage:"),
        "{err}"
    );
}

#[test]
fn a_provider_that_cannot_be_built_fails_with_one_clear_line() {
    let pg = PgCluster::start();
    let p = PlatformStandIn::start();
    let yaml = agent::config_yaml(&pg.url(), &p.url, "");
    let (st, _, err) = agent::run(&yaml, &["--aiven", "--local"], &[], Duration::from_secs(10));
    assert_eq!(st.code(), Some(1));
    assert!(
        err.contains("Failed to create Aiven adapter")
            && err.contains("aiven.AIVEN_API_TOKEN (DBT_AIVEN_API_TOKEN) is required"),
        "{err}"
    );
    // Auto-detection: AWS variables without --rds/--aurora are ambiguous.
    let (st, _, err) = agent::run(
        &yaml,
        &[],
        &[("DBT_AWS_REGION", "eu-west-1")],
        Duration::from_secs(10),
    );
    assert_eq!(st.code(), Some(1));
    assert!(
        err.contains("Please specify which using `--rds` or `--aurora`"),
        "{err}"
    );
    assert!(
        p.requests().is_empty(),
        "nothing is sent before the adapter exists"
    );
    // A docker: section is detected from the file.
    let (st, _, err) = agent::run(
        &format!("{yaml}docker:\n  container_name: pg\n"),
        &[],
        &[],
        Duration::from_secs(10),
    );
    assert_eq!(st.code(), Some(1));
    // The Docker adapter was chosen: it fails on the Engine or its container, not as "not available".
    assert!(err.to_lowercase().contains("docker"), "{err}");
}

#[test]
fn plan_shows_the_diff_and_changes_nothing() {
    let pg = PgCluster::start();
    let dir = agent::temp_dir("plan");
    let rec = dir.join("rec.json");
    std::fs::write(
        &rec,
        r#"[{"config":[{"name":"work_mem","setting":8192,"unit":"kB","vartype":"integer","context":"user"},{"name":"shared_buffers","setting":4096,"unit":"8kB","vartype":"integer","context":"postmaster"}],"knobs_overrides":["work_mem","shared_buffers"],"knob_application":"restart"}]"#,
    )
    .unwrap();
    let yaml = format!("postgresql:\n  connection_url: \"{}\"\n", pg.url());
    let (st, out, err) = agent::run(
        &yaml,
        &["--local", "--dry-run", "--plan", rec.to_str().unwrap()],
        &[],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{err}");
    assert!(out.contains("work_mem") && out.contains("8192"), "{out}");
    assert!(
        out.contains("shared_buffers") && out.contains("RESTART"),
        "{out}"
    );
    let auto = std::fs::read_to_string(pg.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("work_mem"), "plan must not apply anything");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_rereads_the_configuration() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let a = Agent::spawn(
        &agent::config_yaml(
            &pg.url(),
            &platform.url,
            "disable_checks: true\nguardrail_settings:\n  memory_threshold: 100\n",
        ),
        &["--local"],
        &[],
    );
    platform.wait_for("first metrics", Duration::from_secs(20), |r| {
        r.iter().any(|x| x.segment() == "metrics")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        platform.by_segment("guardrails").is_empty(),
        "no guardrail at 100 %"
    );
    let cfg = a.dir.join("dbtune.yaml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("memory_threshold: 100", "memory_threshold: 1");
    std::fs::write(&cfg, text).unwrap();
    a.signal(libc::SIGHUP);
    platform.wait_for(
        "a guardrail after SIGHUP lowered the threshold",
        Duration::from_secs(10),
        |r| r.iter().any(|x| x.segment() == "guardrails"),
    );
    assert!(a.logs().contains("configuration reloaded"), "{}", a.logs());
}

#[test]
fn health_reports_progress_of_a_running_agent_and_fails_when_stale() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let state = agent::temp_dir("health-state");
    let yaml = format!(
        "{}state_dir: \"{}\"\n",
        agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        state.display()
    );
    let (st, out, _) = agent::run(&yaml, &["--health"], &[], Duration::from_secs(10));
    assert_eq!(st.code(), Some(1), "no agent ran yet: {out}");
    let mut a = Agent::spawn(&yaml, &["--local"], &[]);
    platform.wait_for("first metrics", Duration::from_secs(20), |r| {
        r.iter().any(|x| x.segment() == "metrics")
    });
    std::thread::sleep(Duration::from_secs(1));
    let (st, out, _) = agent::run(&yaml, &["--health"], &[], Duration::from_secs(10));
    assert!(st.success(), "{out}");
    assert!(out.starts_with("ok: loops made progress"), "{out}");
    // The liveness file it read (in the runtime directory, named for the state directory).
    let file = out
        .split_once(" (")
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(f, _)| f.to_string())
        .unwrap_or_else(|| panic!("no file named: {out}"));
    assert!(file.contains("/alive-"), "{out}");
    a.signal(libc::SIGTERM);
    a.wait(Duration::from_secs(10)).unwrap();
    let st = std::process::Command::new("touch")
        .args(["-d", "10 minutes ago"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let (st, out, _) = agent::run(&yaml, &["--health"], &[], Duration::from_secs(10));
    assert_eq!(st.code(), Some(1));
    assert!(out.contains("no progress for"), "{out}");
    let _ = std::fs::remove_dir_all(&state);
}
