//! The operator's view through the real binary, against a real PostgreSQL and the platform
//! stand-in: `status` (before start, running, platform outage, after a refused and a
//! rolled-back apply, after stop: fields and exit codes), `history` (order, before/after,
//! bound and rotation), and the dry-run summary (counts equal to the JSON lines written).
mod support;

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::agent::{self, Agent, API_KEY};
use support::pgcluster::PgCluster;
use support::platform::{recommend_one as rec, Mode, PlatformStandIn};

/// Runs `dbtune-agent <args>` with `yaml` (same state_dir as the daemon): (exit code, stdout).
fn cmd(yaml: &str, args: &[&str]) -> (i32, String, String) {
    let (st, out, err) = agent::run(yaml, args, &[], Duration::from_secs(20));
    (st.code().unwrap_or(-1), out, err)
}

fn status_json(yaml: &str) -> (i32, Value) {
    let (code, out, err) = cmd(yaml, &["status", "--json"]);
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}\n{err}"));
    (code, v)
}

/// Polls `status --json` until `pred` holds.
fn wait_status(
    yaml: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(i32, &Value) -> bool,
) -> (i32, Value) {
    let end = Instant::now() + timeout;
    loop {
        let (code, v) = status_json(yaml);
        if pred(code, &v) {
            return (code, v);
        }
        assert!(
            Instant::now() < end,
            "status never showed {what}; last (exit {code}):\n{v:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The value of the `key` row of the status table.
fn row<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with("  "))
        .map(|l| l[key.len()..].trim())
        .unwrap_or_else(|| panic!("no {key:?} row in:\n{text}"))
}

fn no_secret(text: &str) {
    assert!(!text.contains(API_KEY), "the API key leaked:\n{text}");
}

fn yaml_with_state(
    pg: &PgCluster,
    platform: &PlatformStandIn,
    state: &Path,
    extra: &str,
) -> String {
    agent::config_yaml(
        &pg.url(),
        &platform.url,
        &format!(
            "disable_checks: true\nstate_dir: \"{}\"\n{extra}",
            state.display()
        ),
    )
}

#[test]
fn status_and_history_through_a_daemons_life() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("status");
    let script = dir.join("restart-fails.sh");
    std::fs::write(&script, "#!/bin/sh\necho cannot restart >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let yaml = yaml_with_state(&pg, &platform, &dir.join("state"), "").replace(
        "postgresql:\n",
        &format!(
            "postgresql:\n  allow_restart: true\n  restart_script_path: \"{}\"\n",
            script.display()
        ),
    );

    // Before the first start: not running (3), and the text says so.
    let (code, out, _) = cmd(&yaml, &["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("not running") && out.contains("no status file"),
        "{out}"
    );
    let (code, out, _) = cmd(&yaml, &["history"]);
    assert_eq!(code, 0);
    assert!(out.contains("No apply attempts recorded"), "{out}");

    platform.set_recommendation(&rec("work_mem", 8192, "kB", "user", "reload"));
    let mut a = Agent::spawn(&yaml, &["--local"], &[]);

    // Running: healthy once the first heartbeat went out (15 s after start).
    let (code, v) = wait_status(
        &yaml,
        "healthy with a heartbeat and the apply",
        Duration::from_secs(60),
        |c, v| {
            c == 0
                && !v["daemon"]["last_heartbeat_ok"].is_null()
                && v["last_apply"]["outcome"] == "applied"
        },
    );
    assert_eq!(code, 0);
    assert_eq!(v["state"], "healthy");
    let d = &v["daemon"];
    assert_eq!(d["provider"], "pgprem");
    assert_eq!(d["pg_reachable"], true);
    assert_eq!(d["dry_run"], false);
    assert_eq!(d["pid"], a.child.id());
    assert!(
        d["pg_version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}.", pg.major())),
        "{d}"
    );
    assert!(!d["last_metrics_ok"].is_null(), "{d}");
    assert!(d["platform_failing_since"].is_null(), "{d}");
    let knob = &v["last_apply"]["knobs"][0];
    assert_eq!(
        (
            knob["name"].as_str(),
            knob["before"].as_str(),
            knob["after"].as_str()
        ),
        (Some("work_mem"), Some("4096"), Some("8192"))
    );
    assert_eq!(v["restarts_last_24h"], 0);
    assert!(
        v["frozen"].is_null() && v["journal_awaiting_recovery"].is_null(),
        "{v}"
    );
    let (code, text, _) = cmd(&yaml, &["status"]);
    assert_eq!(code, 0);
    assert_eq!(row(&text, "State"), "healthy");
    assert_eq!(row(&text, "Provider"), "pgprem");
    assert!(
        row(&text, "PostgreSQL").starts_with("reachable, version "),
        "{text}"
    );
    assert!(row(&text, "Last heartbeat").contains("s ago ("), "{text}");
    assert_eq!(row(&text, "Platform"), "ok");
    assert!(
        row(&text, "Last apply").contains("applied")
            && row(&text, "Last apply").contains("work_mem 4096 -> 8192"),
        "{text}"
    );
    assert_eq!(row(&text, "Restarts (24 h)"), "0 of 6 allowed");
    assert_eq!(row(&text, "Frozen"), "no");
    assert_eq!(row(&text, "Journal"), "clean");

    // A platform outage: degraded (1), with since-when and the error.
    platform.set_mode(Mode::Status(503, None));
    let (code, v) = wait_status(
        &yaml,
        "the platform failing",
        Duration::from_secs(60),
        |c, _| c == 1,
    );
    assert_eq!(v["state"], "degraded");
    assert!(!v["daemon"]["platform_failing_since"].is_null(), "{v}");
    assert!(
        v["problems"][0]
            .as_str()
            .unwrap()
            .contains("the platform has been failing for"),
        "{v}"
    );
    assert_eq!(code, 1);
    let (_, text, _) = cmd(&yaml, &["status"]);
    assert!(
        row(&text, "Platform").starts_with("FAILING since"),
        "{text}"
    );
    assert!(
        text.contains("problem: the platform has been failing"),
        "{text}"
    );
    platform.set_mode(Mode::Normal);
    wait_status(
        &yaml,
        "healthy after the outage",
        Duration::from_secs(60),
        |c, v| c == 0 && v["daemon"]["platform_failing_since"].is_null(),
    );

    // A refused apply (an unknown parameter): recorded with its reason; not a degradation.
    platform.set_recommendation(&rec("no_such_knob", 1, "", "user", "reload"));
    let (code, v) = wait_status(&yaml, "the refusal", Duration::from_secs(40), |_, v| {
        v["last_apply"]["outcome"] == "refused"
    });
    assert_eq!(code, 0, "{v}");
    assert!(
        v["last_apply"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no_such_knob"),
        "{v}"
    );

    // A rolled-back apply: the restart script fails, the previous value is restored.
    platform.set_recommendation(&rec("shared_buffers", 4096, "8kB", "postmaster", "restart"));
    let (code, v) = wait_status(&yaml, "the rollback", Duration::from_secs(60), |_, v| {
        v["last_apply"]["outcome"] == "rolled_back"
    });
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["restarts_last_24h"], 1,
        "the failed restart counts in the budget: {v}"
    );
    let reasons = v["last_apply"]["reasons"].to_string();
    assert!(
        reasons.contains("restart")
            && reasons.contains("failed")
            && reasons.contains("rolled back"),
        "{reasons}"
    );
    let (_, text, _) = cmd(&yaml, &["status"]);
    assert!(row(&text, "Last apply").contains("rolled back"), "{text}");
    assert_eq!(row(&text, "Restarts (24 h)"), "1 of 6 allowed");
    let mut c = pg.client();
    let sb: String = c
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'shared_buffers'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_ne!(sb, "4096");

    // History: newest first, with before/after and reasons.
    let (code, out, _) = cmd(&yaml, &["history", "--json"]);
    assert_eq!(code, 0);
    let h: Vec<Value> = serde_json::from_str(&out).unwrap();
    let outcomes: Vec<&str> = h.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["rolled_back", "refused", "applied"], "{out}");
    assert_eq!(h[0]["knobs"][0]["name"], "shared_buffers");
    assert_eq!(h[0]["knobs"][0]["before"], sb.as_str());
    assert_eq!(h[0]["knobs"][0]["after"], "4096");
    assert_eq!(h[0]["knobs"][0]["action"], "restart");
    assert_eq!(h[2]["knobs"][0]["after"], "8192");
    assert!(h[0]["finished_at"].as_str() >= h[2]["finished_at"].as_str());
    let (_, out, _) = cmd(&yaml, &["history", "--limit", "1", "--json"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 1);
    let (_, text, _) = cmd(&yaml, &["history"]);
    assert!(
        text.contains("rolled back")
            && text.contains("shared_buffers")
            && text.contains("reason: "),
        "{text}"
    );
    assert!(
        text.find("rolled back").unwrap() < text.find("applied").unwrap(),
        "newest first:\n{text}"
    );

    // Stopped: not running again.
    a.signal(libc::SIGTERM);
    a.wait(Duration::from_secs(20))
        .expect("agent stops on SIGTERM");
    let (code, out, _) = cmd(&yaml, &["status"]);
    assert_eq!(code, 3, "{out}");
    assert_eq!(row(&out, "State"), "not running");
    assert!(
        row(&out, "Agent").contains(&format!("pid {}", a.child.id())),
        "the last status is kept: {out}"
    );

    // No secret in anything shown or kept.
    no_secret(&out);
    no_secret(&text);
    for f in ["apply-history.jsonl", "status.json"] {
        no_secret(&std::fs::read_to_string(dir.join("state").join(f)).unwrap_or_default());
    }
    no_secret(&a.logs());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn history_is_bounded_and_rotated() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("history");
    let state = dir.join("state");
    let yaml = yaml_with_state(&pg, &platform, &state, "apply:\n  history_limit: 4\n");
    let _a = Agent::spawn(&yaml, &["--local"], &[]);
    let values = [5000, 5001, 5002, 5003, 5004];
    for (i, v) in values.iter().enumerate() {
        platform.set_recommendation(&rec("work_mem", *v, "kB", "user", "reload"));
        let end = Instant::now() + Duration::from_secs(40);
        loop {
            let (_, out, _) = cmd(&yaml, &["history", "--json"]);
            let h: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
            if h.first().is_some_and(|r| {
                r["knobs"][0]["after"]
                    .as_str()
                    .and_then(|s| s.parse::<i64>().ok())
                    == Some(*v)
            }) {
                break;
            }
            assert!(
                Instant::now() < end,
                "apply {i} ({v}) never recorded: {out}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let (_, out, _) = cmd(&yaml, &["history", "--json", "--limit", "100"]);
    let h: Vec<Value> = serde_json::from_str(&out).unwrap();
    // Limit 4 = two segments of 2: after 5 applies the newest 3 are kept, newest first, and the
    // repeats of the same recommendation (served every 5 s) were not recorded.
    let afters: Vec<&str> = h
        .iter()
        .map(|r| r["knobs"][0]["after"].as_str().unwrap())
        .collect();
    assert_eq!(afters, ["5004", "5003", "5002"], "{out}");
    let befores: Vec<&str> = h
        .iter()
        .map(|r| r["knobs"][0]["before"].as_str().unwrap())
        .collect();
    assert_eq!(befores, ["5003", "5002", "5001"], "{out}");
    assert!(h.iter().all(|r| r["outcome"] == "applied"), "{out}");
    assert!(state.join("apply-history.1.jsonl").is_file());
    let lines = |f: &str| {
        std::fs::read_to_string(state.join(f))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        (lines("apply-history.1.jsonl"), lines("apply-history.jsonl")),
        (2, 1)
    );
    let ids: Vec<&str> = h.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(ids, sorted, "ids sort by time");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dry_run_summary_counts_equal_the_lines_written() {
    let pg = PgCluster::start();
    let dir = agent::temp_dir("drysum");
    let out_file = dir.join("payloads.jsonl");
    let plan = dir.join("rec.json");
    std::fs::write(&plan, rec("work_mem", 12345, "kB", "user", "reload")).unwrap();
    let yaml = format!(
        "postgresql:\n  connection_url: \"{}\"\nstate_dir: \"{}\"\n",
        pg.url(),
        dir.join("state").display()
    );
    let (st, stdout, err) = agent::run(
        &yaml,
        &[
            "--local",
            "--dry-run",
            "--once",
            "--output",
            out_file.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(90),
    );
    assert!(st.success(), "{err}");
    assert!(stdout.is_empty(), "payloads go to the file: {stdout}");
    let text = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 10, "{}", lines.len());
    // The summary's table: endpoint payloads rows bytes gzipped.
    let summary = &err[err
        .find("--- dry-run summary ---")
        .expect("a summary on stderr")..];
    let mut total = 0;
    let mut seen = 0;
    for row in summary.lines().skip(2) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        if cols.len() < 4 || cols[0] == "total" {
            if cols.first() == Some(&"total") {
                total = cols[1].parse().unwrap();
            }
            if cols.first() == Some(&"total") {
                break;
            }
            continue;
        }
        let ep = cols[0];
        let mine: Vec<&Value> = lines.iter().filter(|l| l["endpoint"] == ep).collect();
        assert_eq!(
            cols[1].parse::<usize>().unwrap(),
            mine.len(),
            "payloads of {ep}"
        );
        let bytes: usize = text
            .lines()
            .filter(|l| serde_json::from_str::<Value>(l).unwrap()["endpoint"] == ep)
            .map(|l| l.len() - l.find("\"body\":").unwrap() - "\"body\":".len() - 1)
            .sum();
        assert_eq!(cols[3].parse::<usize>().unwrap(), bytes, "bytes of {ep}");
        let gz = mine[0]["gzip"].as_bool().unwrap();
        assert_eq!(cols[4] != "-", gz, "gzipped column of {ep}: {row}");
        if ep == "configurations" {
            let n = mine[0]["body"]["config"].as_array().unwrap().len();
            assert_eq!(
                cols[2].parse::<usize>().unwrap(),
                n,
                "rows of configurations"
            );
        }
        seen += 1;
    }
    assert_eq!(total, lines.len());
    let endpoints: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(seen, endpoints.len(), "{summary}");
    assert!(
        summary.contains(&format!("pg_version = {}.", pg.major())),
        "{summary}"
    );
    assert!(summary.contains("node_cpu_count = "), "{summary}");
    assert!(
        summary.contains("recommendation from") && summary.contains("work_mem"),
        "{summary}"
    );
    assert_eq!(
        summary.trim_end().lines().last().unwrap(),
        format!(
            "nothing was sent: {} payload(s) were written instead of being sent to the platform",
            lines.len()
        )
    );
    assert!(
        !err.contains("Sending "),
        "no 'Sending' line in a dry run:\n{err}"
    );
    assert!(!err.contains("https://app.dbtune.com"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
