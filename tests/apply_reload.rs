//! Reload-level knobs against a real PostgreSQL: applied and visible, idempotent (served 20
//! times → one reload), unit-aware comparison, and a failure mid-list rolls back every knob.
mod support;

use dbtune_agent::adapter::pgprem::target::LocalTarget;
use dbtune_agent::apply::{self, ApplyContext, Outcome};
use serde_json::json;
use support::apply::*;
use support::pgcluster::PgCluster;

#[test]
fn reload_knob_is_applied_and_visible() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("reload");
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    // Without a writable state directory there is no journal, and no change.
    let nowhere = std::path::Path::new("/proc/dbtune-no-state");
    let bad = ApplyContext {
        state_dir: nowhere,
        ..ctx
    };
    let e = apply::apply(&bad, &rec(vec![knob("work_mem", json!(8192), "integer")])).unwrap_err();
    assert!(
        e.message.contains("without a journal, nothing was changed"),
        "{}",
        e.message
    );
    assert_eq!(setting(&c, "work_mem").0, "4096");
    let ctx = ApplyContext {
        state_dir: &state,
        ..bad
    };
    let reloads = reload_count(&c);
    let out = apply::apply(&ctx, &rec(vec![knob("work_mem", json!(8192), "integer")])).unwrap();
    assert_eq!(out, Outcome::Reloaded(vec!["work_mem".into()]));
    assert_eq!(setting(&c, "work_mem"), ("8192".into(), false));
    assert!(
        auto_conf(&c).contains("work_mem = '8192'"),
        "{}",
        auto_conf(&c)
    );
    assert_eq!(reload_count(&c), reloads + 1);
    assert_eq!(journal_phase(&state).as_deref(), Some("verified"));
}

#[test]
fn same_recommendation_twenty_times_reloads_once() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("idem");
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };

    // Values already in place, spelled differently: nothing to do, no reload.
    let mut cl = c.client();
    let checkpoints: String = cl
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'log_checkpoints'",
            &[],
        )
        .unwrap()
        .get(0);
    let as_json_bool = json!(checkpoints == "on");
    let reloads = reload_count(&c);
    let same = rec(vec![
        knob("work_mem", json!("4MB"), "integer"),     // 4096 kB
        knob("random_page_cost", json!(4.0), "real"),  // "4"
        knob("log_checkpoints", as_json_bool, "bool"), // on/off vs true/false
        knob("log_min_messages", json!("WARNING"), "enum"),
    ]);
    assert_eq!(apply::apply(&ctx, &same).unwrap(), Outcome::Unchanged);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(reload_count(&c), reloads, "no reload when nothing changes");

    let r = rec(vec![
        knob("work_mem", json!(16384), "integer"),
        knob("random_page_cost", json!(1.5), "real"),
    ]);
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let t = std::time::Instant::now();
        outcomes.push(apply::apply(&ctx, &r).unwrap());
        if i < 2 {
            eprintln!("apply #{}: {:?} in {:?}", i + 1, outcomes[i], t.elapsed());
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        outcomes[0],
        Outcome::Reloaded(vec!["work_mem".into(), "random_page_cost".into()])
    );
    assert!(
        outcomes[1..].iter().all(|o| *o == Outcome::Unchanged),
        "{outcomes:?}"
    );
    assert_eq!(
        reload_count(&c),
        reloads + 1,
        "exactly one reload in the server log"
    );
    assert_eq!(setting(&c, "work_mem").0, "16384");
    assert_eq!(setting(&c, "random_page_cost").0, "1.5");
}

#[test]
fn failure_mid_list_rolls_back_every_earlier_knob() {
    let c = PgCluster::start();
    // work_mem already has an ALTER SYSTEM entry (restored as it was); random_page_cost has
    // none (reset). TimeZone passes validation (a string) but PostgreSQL rejects it.
    let mut admin = c.client();
    admin
        .batch_execute("ALTER SYSTEM SET work_mem = '2MB'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pg = pool(&c);
    let state = temp_dir("midlist");
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let before_auto = auto_conf(&c);
    assert!(before_auto.contains("work_mem = '2MB'"));
    let tz_before = setting(&c, "TimeZone").0;
    let r = rec(vec![
        knob("work_mem", json!(65536), "integer"),
        knob("random_page_cost", json!(1.1), "real"),
        knob("TimeZone", json!("Mars/Olympus_Mons"), "string"),
        knob("seq_page_cost", json!(2), "real"),
    ]);
    let e = apply::apply(&ctx, &r).unwrap_err();
    assert_eq!(e.error_type, "config_apply_error");
    assert!(
        e.message.contains("failed to alter system for TimeZone"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("invalid value for parameter"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(
            "rolled back: the previous values of [work_mem random_page_cost TimeZone] are back"
        ),
        "{}",
        e.message
    );
    let after = auto_conf(&c);
    assert!(after.contains("work_mem = '2MB'"), "{after}");
    assert!(
        !after.contains("random_page_cost")
            && !after.contains("seq_page_cost")
            && !after.contains("TimeZone"),
        "{after}"
    );
    assert_eq!(setting(&c, "work_mem"), ("2048".into(), false));
    assert_eq!(setting(&c, "random_page_cost"), ("4".into(), false));
    assert_eq!(setting(&c, "seq_page_cost").0, "1");
    assert_eq!(setting(&c, "TimeZone").0, tz_before);
    assert_eq!(journal_phase(&state).as_deref(), Some("rolled_back"));
    // Served again: refused before any ALTER, the file stays as it is.
    let e = apply::apply(&ctx, &r).unwrap_err();
    assert!(
        e.message.contains("already tried and rolled back") && e.message.contains("TimeZone"),
        "{}",
        e.message
    );
    assert_eq!(auto_conf(&c), after);
}
