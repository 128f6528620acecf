//! The agent killed (SIGKILL) in the middle of an apply: the next start recovers from the
//! journal — rolls back what had not landed, completes what had — and never re-applies.
//! The "agent" is this test executable re-run as a child (`child_apply_process`), paused by the
//! debug-build hook `DBTUNE_AGENT_TEST_PAUSE_AT` at a journal point and then killed.
mod support;

use dbtune_agent::adapter::pgprem::target::LocalTarget;
use dbtune_agent::apply::recover::Recovery;
use dbtune_agent::apply::{self, recover, ApplyContext, Outcome};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::apply::*;
use support::pgcluster::PgCluster;

/// Not a test of its own: the child process body. Does nothing unless started by
/// `kill_at` with the environment below.
#[test]
fn child_apply_process() {
    let Ok(url) = std::env::var("DBTUNE_CRASH_CHILD_URL") else {
        return;
    };
    let state = PathBuf::from(std::env::var("DBTUNE_CRASH_CHILD_STATE").unwrap());
    let knobs: Vec<(String, i64)> =
        serde_json::from_str(&std::env::var("DBTUNE_CRASH_CHILD_KNOBS").unwrap()).unwrap();
    let script = std::env::var("DBTUNE_CRASH_CHILD_SCRIPT").ok();
    let pg =
        dbtune_agent::pg::Pg::new(&url, 2, dbtune_agent::pg::SessionLimits::default()).unwrap();
    let restarter =
        script.clone().map(
            |p| dbtune_agent::adapter::pgprem::restart::ScriptRestarter {
                path: p.into(),
                timeout: Duration::from_secs(60),
            },
        );
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: script.is_some(),
        target: &LocalTarget::new(
            restarter
                .map(|r| Box::new(r) as Box<dyn dbtune_agent::adapter::pgprem::restart::Restarter>),
            None,
        ),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let r = rec(knobs
        .into_iter()
        .map(|(n, v)| knob(&n, json!(v), "integer"))
        .collect());
    let _ = apply::apply(&ctx, &r);
    panic!("the child should have been killed while paused");
}

/// Runs the child applying `knobs`, waits until it pauses at `point`, SIGKILLs it.
fn kill_at(c: &PgCluster, state: &Path, point: &str, knobs: &[(&str, i64)], script: Option<&Path>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_apply_process",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("DBTUNE_CRASH_CHILD_URL", c.url())
    .env("DBTUNE_CRASH_CHILD_STATE", state)
    .env(
        "DBTUNE_CRASH_CHILD_KNOBS",
        serde_json::to_string(knobs).unwrap(),
    )
    .env("DBTUNE_AGENT_TEST_PAUSE_AT", point)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(s) = script {
        cmd.env("DBTUNE_CRASH_CHILD_SCRIPT", s);
    }
    let mut child = cmd.spawn().unwrap();
    let marker = state.join(format!("paused-at-{point}"));
    let start = Instant::now();
    while !marker.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("child exited ({st}) before pausing at {point}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never paused at {point}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(
        journal_phase(state).as_deref(),
        Some(if point == "intent" {
            "intent"
        } else {
            "applied"
        })
    );
}

#[test]
fn killed_after_alter_system_is_rolled_back_at_start() {
    let c = PgCluster::start();
    let state = temp_dir("crash-applied");
    let before = auto_conf(&c);
    kill_at(
        &c,
        &state,
        "applied",
        &[("work_mem", 8192), ("maintenance_work_mem", 131072)],
        None,
    );
    // The ALTERs happened (the file has them) but were never reloaded.
    assert!(
        auto_conf(&c).contains("work_mem = '8192'"),
        "{}",
        auto_conf(&c)
    );
    assert_eq!(setting(&c, "work_mem").0, "4096");

    let pg = pool(&c);
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let rep = recover(&ctx).unwrap();
    assert_eq!(rep.action, Recovery::RolledBack, "{rep}");
    assert_eq!(rep.knobs, vec!["work_mem", "maintenance_work_mem"]);
    assert_eq!(auto_conf(&c), before);
    assert_eq!(setting(&c, "work_mem"), ("4096".into(), false));
    assert_eq!(setting(&c, "maintenance_work_mem").0, "65536");
    assert_eq!(journal_phase(&state).as_deref(), Some("rolled_back"));
    // Settled: a second start has nothing to do, and applying works again.
    assert_eq!(recover(&ctx).unwrap().action, Recovery::Nothing);
    assert!(matches!(
        apply::apply(&ctx, &rec(vec![knob("work_mem", json!(8192), "integer")])).unwrap(),
        Outcome::Reloaded(_)
    ));
}

#[test]
fn killed_after_reload_is_completed_at_start() {
    let c = PgCluster::start();
    let state = temp_dir("crash-signalled");
    kill_at(&c, &state, "signalled", &[("work_mem", 8192)], None);
    let reloads = reload_count(&c);
    let pg = pool(&c);
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let rep = recover(&ctx).unwrap();
    assert_eq!(rep.action, Recovery::Completed, "{rep}");
    assert_eq!(setting(&c, "work_mem"), ("8192".into(), false));
    assert!(auto_conf(&c).contains("work_mem = '8192'"));
    assert_eq!(journal_phase(&state).as_deref(), Some("verified"));
    assert_eq!(reload_count(&c), reloads, "recovery did not re-apply");
    // The same recommendation served again: already in place.
    assert_eq!(
        apply::apply(&ctx, &rec(vec![knob("work_mem", json!(8192), "integer")])).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn killed_before_restart_is_rolled_back_without_restarting() {
    let c = PgCluster::start();
    let state = temp_dir("crash-restart");
    let dir = temp_dir("crash-restart-script");
    let restarter = pg_ctl_restarter(&c, &dir, None);
    let before = auto_conf(&c);
    kill_at(
        &c,
        &state,
        "applied",
        &[("shared_buffers", 4096)],
        Some(&restarter.path),
    );
    assert_eq!(setting(&c, "shared_buffers").0, "2048");
    let started = start_time(&c);

    // The next start of the agent (apply recovers first, like the runner's start-up call).
    let pg = pool(&c);
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(restarter.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let rep = recover(&ctx).unwrap();
    assert_eq!(rep.action, Recovery::RolledBack, "{rep}");
    assert_eq!(auto_conf(&c), before);
    assert_eq!(setting(&c, "shared_buffers"), ("2048".into(), false));
    assert_eq!(
        script_runs(&dir),
        0,
        "no restart was needed to undo an un-restarted change"
    );
    assert_eq!(start_time(&c), started);
}

#[test]
fn killed_mid_restart_with_server_down_is_restored_from_disk() {
    let c = PgCluster::start();
    let state = temp_dir("crash-down");
    let dir = temp_dir("crash-down-script");
    let restarter = pg_ctl_restarter(&c, &dir, None);
    let before = auto_conf(&c);
    // Killed after ALTER SYSTEM of a shared_buffers the machine cannot provide; then the server
    // goes down (as during the restart the agent was doing) and cannot start again by itself.
    let pages: i64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kill_at(
        &c,
        &state,
        "applied",
        &[("shared_buffers", pages.min(1_073_741_823))],
        Some(&restarter.path),
    );
    let mut c = c;
    c.stop();
    if std::fs::read_to_string("/proc/sys/vm/overcommit_memory")
        .unwrap_or_default()
        .trim()
        != "1"
    {
        assert!(
            !c.try_start(),
            "the server must not start with the journalled value"
        );
    }
    c.stop();

    let pg = pool(&c);
    let pol = policy();
    // Start-up recovery gives a server that is down this long to come up by itself.
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(restarter.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: Duration::from_secs(5),
    };
    let rep = recover(&ctx).unwrap();
    assert_eq!(rep.action, Recovery::RolledBack, "{rep}");
    assert!(rep.detail.contains("restored from the snapshot"), "{rep}");
    assert!(c.is_running());
    assert_eq!(auto_conf(&c), before);
    assert_eq!(setting(&c, "shared_buffers"), ("2048".into(), false));
    assert_eq!(journal_phase(&state).as_deref(), Some("rolled_back"));
}
