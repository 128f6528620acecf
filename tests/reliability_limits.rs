//! Hostile or broken recommendations through the real binary (issue: reliability defects 1
//! and 9): values, knob counts and bodies over their limits are refused before anything is
//! written, with a bounded report; an invalid body is reported once; a failing fetch never
//! stops the active configuration from being uploaded.
mod support;

use std::time::Duration;
use support::agent::{self, Agent};
use support::pgcluster::PgCluster;
use support::platform::{Mode, PlatformStandIn};

fn reports(p: &PlatformStandIn) -> Vec<serde_json::Value> {
    p.by_segment("log-entries")
        .iter()
        .map(|r| r.json())
        .collect()
}

fn one_report(p: &PlatformStandIn, what: &str) -> String {
    let reqs = p.wait_for(what, Duration::from_secs(40), |r| {
        r.iter().any(|x| x.segment() == "log-entries")
    });
    let e = reqs
        .iter()
        .find(|r| r.segment() == "log-entries")
        .unwrap()
        .json();
    assert_eq!(e["error_type"], "config_apply_error", "{e}");
    e["error_message"].as_str().unwrap().to_string()
}

#[test]
fn an_oversized_value_is_refused_even_when_allowed_and_nothing_is_written() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let before = std::fs::read_to_string(pg.data_dir().join("postgresql.auto.conf")).unwrap();
    let value = "x".repeat(5000);
    platform.set_recommendation(&format!(
        r#"[{{"config":[{{"name":"log_line_prefix","setting":"{value}","unit":null,"vartype":"string","context":"sighup"}}],"knobs_overrides":["log_line_prefix"],"knob_application":"reload"}}]"#
    ));
    let a = Agent::spawn(
        &agent::config_yaml(
            &pg.url(),
            &platform.url,
            "disable_checks: true\napply:\n  allow: [log_line_prefix]\n",
        ),
        &["--local"],
        &[],
    );
    let msg = one_report(&platform, "the refusal");
    assert!(
        msg.contains("log_line_prefix: the value is 5000 bytes, over the limit of 4096 bytes"),
        "{msg}"
    );
    assert!(
        !msg.contains(&value[..100]),
        "the value itself is not echoed"
    );
    assert_eq!(
        std::fs::read_to_string(pg.data_dir().join("postgresql.auto.conf")).unwrap(),
        before
    );
    assert!(!a.logs().contains(&value[..100]));
}

#[test]
fn too_many_knobs_and_oversized_bodies_are_refused_with_bounded_reports() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    // 30 unknown knobs: one report naming 10 of them and counting the rest.
    let names: Vec<String> = (0..30).map(|i| format!("no_such_knob_{i}")).collect();
    let rows: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                r#"{{"name":"{n}","setting":1,"unit":null,"vartype":"integer","context":"user"}}"#
            )
        })
        .collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    platform.set_recommendation(&format!(
        r#"[{{"config":[{}],"knobs_overrides":[{}],"knob_application":"reload"}}]"#,
        rows.join(","),
        quoted.join(",")
    ));
    let _a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    let msg = one_report(&platform, "the refusal");
    assert!(msg.contains("30 knob(s) rejected"), "{msg}");
    assert!(
        msg.contains("no_such_knob_9:") && !msg.contains("no_such_knob_10:"),
        "{msg}"
    );
    assert!(msg.ends_with("; and 20 more"), "{msg}");
    assert!(msg.len() < 2000, "report of {} bytes", msg.len());

    // 600 knobs: refused as a whole at decoding, reported once.
    platform.clear();
    let many: Vec<String> = (0..600).map(|i| format!("\"k{i}\"")).collect();
    platform.set_recommendation(&format!(
        r#"[{{"config":[],"knobs_overrides":[{}],"knob_application":"reload"}}]"#,
        many.join(",")
    ));
    let msg = one_report(&platform, "the knob-count refusal");
    assert!(
        msg.contains("600 knobs in knobs_overrides, over the limit of 500"),
        "{msg}"
    );
    // A 2 MB body.
    platform.clear();
    platform.set_recommendation(&format!(
        r#"[{{"config":[],"knobs_overrides":[],"pad":"{}"}}]"#,
        "p".repeat(2 << 20)
    ));
    let msg = one_report(&platform, "the body-size refusal");
    assert!(msg.contains("over the limit of 1048576 bytes"), "{msg}");
}

#[test]
fn a_garbage_recommendation_is_reported_once_and_uploads_continue() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    platform.set_mode(Mode::Garbage);
    let _a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    let reqs = platform.wait_for(
        "three configuration uploads",
        Duration::from_secs(40),
        |r| {
            r.iter()
                .filter(|x| x.segment() == "configurations" && x.method == "POST")
                .count()
                >= 3
        },
    );
    let _ = reqs;
    let r = reports(&platform);
    let bad: Vec<_> = r
        .iter()
        .filter(|e| e["error_type"] == "config_apply_error")
        .collect();
    assert_eq!(bad.len(), 1, "reported once: {r:?}");
    assert!(
        bad[0]["error_message"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{r:?}"
    );
}
