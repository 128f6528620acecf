//! Postmaster knobs against a real PostgreSQL: refused without allow_restart, applied through
//! a restart script running `pg_ctl restart`, never restarted twice for the same
//! recommendation, rolled back after a failing script or a server that will not start, and
//! bounded by the restart budget and maintenance window.
mod support;

use dbtune_agent::adapter::pgprem::target::LocalTarget;
use dbtune_agent::apply::{self, ApplyContext, Outcome};
use serde_json::json;
use support::apply::*;
use support::pgcluster::PgCluster;

#[test]
fn postmaster_knob_is_refused_without_allow_restart() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("noallow");
    let dir = temp_dir("noallow-script");
    let restarter = pg_ctl_restarter(&c, &dir, None);
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(Some(Box::new(restarter.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let before = auto_conf(&c);
    let e = apply::apply(
        &ctx,
        &rec(vec![
            knob("work_mem", json!(8192), "integer"),
            knob("shared_buffers", json!(4096), "integer"),
        ]),
    )
    .unwrap_err();
    assert_eq!(e.error_type, "config_apply_error");
    assert_eq!(
        e.message,
        "restart is not allowed in the agent, but 1 parameter(s) require restart: [shared_buffers]"
    );
    assert_eq!(auto_conf(&c), before);
    assert_eq!(
        setting(&c, "work_mem").0,
        "4096",
        "nothing applied, not even the reload knob"
    );
    assert_eq!(script_runs(&dir), 0);
}

#[test]
fn restart_through_script_happens_once_for_twenty_servings() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("restart");
    let dir = temp_dir("restart-script");
    let restarter = pg_ctl_restarter(&c, &dir, None);
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(restarter.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let started = start_time(&c);
    let r = rec(vec![
        knob("shared_buffers", json!(4096), "integer"),
        knob("work_mem", json!(8192), "integer"),
    ]);
    let first = apply::apply(&ctx, &r).unwrap();
    assert_eq!(
        first,
        Outcome::Restarted(vec!["shared_buffers".into(), "work_mem".into()])
    );
    assert_eq!(setting(&c, "shared_buffers"), ("4096".into(), false));
    assert_eq!(setting(&c, "work_mem").0, "8192");
    let restarted = start_time(&c);
    assert_ne!(restarted, started, "PostgreSQL restarted");
    for i in 0..19 {
        assert_eq!(
            apply::apply(&ctx, &r).unwrap(),
            Outcome::Unchanged,
            "serving {}",
            i + 2
        );
    }
    assert_eq!(script_runs(&dir), 1, "the restart script ran exactly once");
    assert_eq!(start_time(&c), restarted, "no further restart");
    let budget = std::fs::read_to_string(state.join("restarts.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&budget).unwrap()["restarts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn failing_restart_script_rolls_back() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("failscript");
    let pol = policy();
    let before = auto_conf(&c);

    // 1. The script fails without restarting anything.
    let dir = temp_dir("failscript-a");
    let failing = support::apply::script(&dir, "restart.sh", "echo cannot restart >&2\nexit 3");
    let failing = dbtune_agent::adapter::pgprem::restart::ScriptRestarter {
        path: failing,
        timeout: std::time::Duration::from_secs(30),
    };
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(failing.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let e = apply::apply(
        &ctx,
        &rec(vec![knob("shared_buffers", json!(4096), "integer")]),
    )
    .unwrap_err();
    assert_eq!(e.error_type, "config_apply_error");
    assert!(
        e.message.contains("restart script")
            && e.message.contains("exit code 3")
            && e.message.contains("cannot restart"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("rolled back: the previous values of [shared_buffers] are back"),
        "{}",
        e.message
    );
    assert_eq!(auto_conf(&c), before);
    assert_eq!(setting(&c, "shared_buffers"), ("2048".into(), false));
    assert_eq!(journal_phase(&state).as_deref(), Some("rolled_back"));
    // Served again: not retried, no second restart attempt.
    let e = apply::apply(
        &ctx,
        &rec(vec![knob("shared_buffers", json!(4096), "integer")]),
    )
    .unwrap_err();
    assert!(
        e.message.contains("already tried and rolled back"),
        "{}",
        e.message
    );
    assert_eq!(script_runs(&dir), 1);

    // 2. The script restarts PostgreSQL (new value live) and then exits non-zero.
    let dir = temp_dir("failscript-b");
    let late = pg_ctl_restarter(&c, &dir, Some(1));
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(late.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let e = apply::apply(
        &ctx,
        &rec(vec![knob("shared_buffers", json!(3072), "integer")]),
    )
    .unwrap_err();
    assert!(
        e.message.contains("exit code 1") && e.message.contains("rolled back"),
        "{}",
        e.message
    );
    assert_eq!(
        script_runs(&dir),
        2,
        "one restart for the apply, one to undo it"
    );
    assert_eq!(setting(&c, "shared_buffers"), ("2048".into(), false));
    assert_eq!(auto_conf(&c), before);
    assert!(c.is_running());
}

fn meminfo_kb() -> u64 {
    let t = std::fs::read_to_string("/proc/meminfo").unwrap();
    let l = t.lines().find(|l| l.starts_with("MemTotal:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn server_that_will_not_start_is_rolled_back_and_running() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("nostart");
    let dir = temp_dir("nostart-script");
    let restarter = pg_ctl_restarter(&c, &dir, None);
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(restarter.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let before = auto_conf(&c);
    // 8 × RAM of shared memory in 8 kB pages: the kernel refuses the mapping (overcommit
    // heuristic) and the postmaster exits. Where overcommit is unlimited, also ask for huge
    // pages, which fails when none are reserved.
    let pages = meminfo_kb().min(1_073_741_823);
    let mut knobs = vec![knob("shared_buffers", json!(pages), "integer")];
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if overcommit.trim() == "1" {
        knobs.push(knob("huge_pages", json!("on"), "enum"));
    }
    let e = apply::apply(&ctx, &rec(knobs)).unwrap_err();
    assert_eq!(e.error_type, "config_apply_error");
    assert!(
        e.message
            .contains("restart of the local server (restart script"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("rolled back")
            && e.message.contains("PostgreSQL was down")
            && e.message.contains("restored from the snapshot"),
        "{}",
        e.message
    );
    assert!(c.is_running());
    assert_eq!(setting(&c, "shared_buffers"), ("2048".into(), false));
    assert_eq!(auto_conf(&c), before);
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(
        log.contains("could not map anonymous shared memory") || log.contains("huge pages"),
        "the server really failed to start"
    );
}

#[test]
fn restart_budget_and_maintenance_window() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("budget");
    let dir = temp_dir("budget-script");
    let restarter = pg_ctl_restarter(&c, &dir, None);
    let mut pol = policy();
    pol.max_restarts_per_day = 1;
    {
        let ctx = ApplyContext {
            pg: &pg,
            allow_restart: true,
            target: &LocalTarget::new(Some(Box::new(restarter.clone())), None),
            policy: &pol,
            state_dir: &state,
            ready_timeout: pol.ready_timeout,
        };
        assert!(matches!(
            apply::apply(
                &ctx,
                &rec(vec![knob("shared_buffers", json!(3072), "integer")])
            )
            .unwrap(),
            Outcome::Restarted(_)
        ));
        let e = apply::apply(
            &ctx,
            &rec(vec![knob("shared_buffers", json!(4096), "integer")]),
        )
        .unwrap_err();
        assert!(e.message.contains("restart budget exhausted: 1 restart(s) in the last 24 h (apply.max_restarts_per_day = 1)"), "{}", e.message);
        // Reload-only changes are not limited by the restart budget.
        assert!(matches!(
            apply::apply(&ctx, &rec(vec![knob("work_mem", json!(8192), "integer")])).unwrap(),
            Outcome::Reloaded(_)
        ));
    }
    assert_eq!(setting(&c, "shared_buffers").0, "3072");
    assert_eq!(script_runs(&dir), 1);

    // A window that is not open now.
    pol.max_restarts_per_day = 6;
    let h = (dbtune_agent::apply::journal::now_unix() / 3600 + 2) % 24;
    pol.maintenance_window = vec![format!("{h:02}:00-{:02}:30", h)];
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(restarter.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let e = apply::apply(
        &ctx,
        &rec(vec![knob("shared_buffers", json!(4096), "integer")]),
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("only allowed inside the maintenance window"),
        "{}",
        e.message
    );
    assert_eq!(script_runs(&dir), 1);
    assert_eq!(setting(&c, "shared_buffers").0, "3072");
}

#[test]
fn rollback_keeps_someone_elses_pending_change_without_restarting() {
    let c = PgCluster::start();
    // An operator's ALTER SYSTEM that waits for a restart.
    c.client()
        .batch_execute("ALTER SYSTEM SET shared_buffers = '3000'")
        .unwrap();
    c.client().batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(setting(&c, "shared_buffers"), ("2048".into(), true));
    let pg = pool(&c);
    let state = temp_dir("pending");
    let dir = temp_dir("pending-script");
    let failing = support::apply::script(&dir, "restart.sh", "exit 3");
    let failing = dbtune_agent::adapter::pgprem::restart::ScriptRestarter {
        path: failing,
        timeout: std::time::Duration::from_secs(30),
    };
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: true,
        target: &LocalTarget::new(Some(Box::new(failing.clone())), None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let e = apply::apply(
        &ctx,
        &rec(vec![knob("shared_buffers", json!(4096), "integer")]),
    )
    .unwrap_err();
    assert!(
        e.message.contains("exit code 3") && e.message.contains("rolled back"),
        "{}",
        e.message
    );
    assert_eq!(
        script_runs(&dir),
        1,
        "the rollback did not restart PostgreSQL"
    );
    assert!(
        auto_conf(&c).contains("shared_buffers = '3000'"),
        "{}",
        auto_conf(&c)
    );
    assert_eq!(setting(&c, "shared_buffers"), ("2048".into(), true));
}
