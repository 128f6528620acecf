//! Recommendations through the real agent binary: fetched from the platform stand-in, applied to
//! a real PostgreSQL, and visible in the next configurations payload (or refused and reported).
mod support;

use std::time::Duration;
use support::agent::{self, Agent};
use support::pgcluster::PgCluster;
use support::platform::{recommend_one as rec, setting_in, PlatformStandIn};

#[test]
fn a_reload_recommendation_is_applied_once_and_reported_in_the_next_payload() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    platform.set_recommendation(&rec("work_mem", 8192, "kB", "user", "reload"));
    let a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    let reqs = platform.wait_for(
        "configurations with work_mem = 8192",
        Duration::from_secs(40),
        |r| {
            r.iter().any(|x| {
                x.segment() == "configurations"
                    && x.method == "POST"
                    && setting_in(x, "work_mem") == 8192
            })
        },
    );
    let _ = reqs;
    let mut c = pg.client();
    let v: String = c
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'work_mem'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, "8192");
    let auto = std::fs::read_to_string(pg.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("work_mem = '8192'"), "{auto}");
    // Served again and again: applied once, never reloaded again.
    std::thread::sleep(Duration::from_secs(12));
    let logs = a.logs();
    assert_eq!(logs.matches("configuration applied").count(), 1, "{logs}");
    let errs: Vec<String> = platform
        .by_segment("log-entries")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(errs.is_empty(), "no error expected: {errs:?}");
}

#[test]
fn a_postmaster_knob_is_refused_with_config_apply_error_when_restarts_are_not_allowed() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    platform.set_recommendation(&rec("shared_buffers", 4096, "8kB", "postmaster", "restart"));
    let _a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    let reqs = platform.wait_for("a log entry", Duration::from_secs(30), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = reqs
        .iter()
        .find(|x| x.segment() == "log-entries")
        .unwrap()
        .json();
    assert_eq!(e["error_type"], "config_apply_error");
    let msg = e["error_message"].as_str().unwrap();
    assert!(msg.starts_with("Failed to apply configuration: "), "{msg}");
    assert!(
        msg.contains("shared_buffers") && msg.contains("restart"),
        "{msg}"
    );
    // Nothing changed, and the active configuration is still sent.
    let auto = std::fs::read_to_string(pg.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("shared_buffers"), "{auto}");
    platform.wait_for(
        "configurations after the refusal",
        Duration::from_secs(10),
        |r| {
            r.iter()
                .any(|x| x.segment() == "configurations" && x.method == "POST")
        },
    );
}

#[test]
fn a_restart_recommendation_goes_through_the_restart_script() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("restart");
    let script = dir.join("restart-pg.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {}\n", pg.restart_command()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = pg.client();
    let started: std::time::SystemTime = c
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .unwrap()
        .get(0);
    drop(c);
    platform.set_recommendation(&rec("shared_buffers", 4096, "8kB", "postmaster", "restart"));
    let yaml = agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n").replace(
        "postgresql:\n",
        &format!(
            "postgresql:\n  allow_restart: true\n  restart_script_path: \"{}\"\n",
            script.display()
        ),
    );
    let a = Agent::spawn(&yaml, &["--local"], &[]);
    platform.wait_for(
        "configurations with shared_buffers = 4096",
        Duration::from_secs(90),
        |r| {
            r.iter().any(|x| {
                x.segment() == "configurations"
                    && x.method == "POST"
                    && setting_in(x, "shared_buffers") == 4096
            })
        },
    );
    let mut c = pg.client();
    let now: std::time::SystemTime = c
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .unwrap()
        .get(0);
    assert!(now > started, "PostgreSQL was restarted");
    let sb: String = c
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'shared_buffers'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sb, "4096");
    // Served again: no second restart.
    std::thread::sleep(Duration::from_secs(12));
    let again: std::time::SystemTime = c
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        again, now,
        "the same recommendation must not restart PostgreSQL twice"
    );
    assert!(a.logs().contains("restart"), "{}", a.logs());
    let _ = std::fs::remove_dir_all(&dir);
}
