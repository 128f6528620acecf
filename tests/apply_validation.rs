//! Validation and local policy, against a real PostgreSQL: bad knobs are refused together,
//! nothing is applied, no SQL is built from platform text; frozen means nothing changes.
mod support;

use dbtune_agent::adapter::pgprem::target::LocalTarget;
use dbtune_agent::apply::{self, plan, ApplyContext, Outcome};
use serde_json::json;
use support::apply::*;
use support::pgcluster::PgCluster;

#[test]
fn bad_knobs_are_all_reported_and_nothing_is_applied() {
    let c = PgCluster::start();
    c.client()
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    let pg = pool(&c);
    let state = temp_dir("validation");
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
    let before_reloads = reload_count(&c);
    let r = rec(vec![
        knob("random_page_cost", json!(1.5), "real"), // valid: must not be applied either
        knob("no_such_param", json!("1"), "string"),
        knob("work_mem", json!(1), "integer"), // below min_val 64
        knob("log_min_messages", json!("warnng"), "enum"), // enum typo
        knob(
            "maintenance_work_mem",
            json!("1'; DROP TABLE t; --"),
            "integer",
        ),
        knob("archive_command", json!("rm -rf /"), "string"), // default deny list
        knob("effective_cache_size", json!(4096), "integer"),
    ]);
    let mut r = r;
    r.config[6].unit = Some("MB".into()); // not the base unit (8kB)
    let e = apply::apply(&ctx, &r).unwrap_err();
    assert_eq!(e.error_type, "config_apply_error");
    let m = &e.message;
    assert!(
        m.contains("nothing was changed") && m.contains("6 knob(s) rejected"),
        "{m}"
    );
    assert!(m.contains("no_such_param: unknown parameter"), "{m}");
    assert!(
        m.contains("work_mem: 1 is outside the allowed range 64 to 2147483647 (base unit kB)"),
        "{m}"
    );
    assert!(
        m.contains("log_min_messages: \"warnng\" is not one of the allowed values"),
        "{m}"
    );
    assert!(m.contains("maintenance_work_mem: "), "{m}");
    assert!(
        m.contains("archive_command: refused by the default policy"),
        "{m}"
    );
    assert!(m.contains("effective_cache_size: the value is declared in unit \"MB\" but PostgreSQL's base unit is \"8kB\""), "{m}");
    assert!(
        !m.contains("random_page_cost"),
        "a valid knob is not listed as rejected: {m}"
    );
    // Nothing happened: file, settings, reloads, table.
    assert_eq!(auto_conf(&c), before_auto);
    assert_eq!(setting(&c, "random_page_cost").0, "4");
    assert_eq!(reload_count(&c), before_reloads);
    let n: i64 = c
        .client()
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "table t is still there");
    assert!(
        journal_phase(&state).is_none(),
        "no journal entry for a refused recommendation"
    );
    // A missing config row for a knobs_overrides name: the Go wording.
    let mut missing = rec(vec![knob("work_mem", json!(8192), "integer")]);
    missing.knobs_overrides.push("temp_buffers".into());
    let e = apply::apply(&ctx, &missing).unwrap_err();
    assert!(
        e.message
            .contains("knob temp_buffers not found in configuration"),
        "{}",
        e.message
    );
    assert_eq!(setting(&c, "work_mem").0, "4096");
}

#[test]
fn injection_text_in_a_string_value_stays_a_literal() {
    let c = PgCluster::start();
    c.client().batch_execute("CREATE TABLE t (x int)").unwrap();
    let pg = pool(&c);
    let state = temp_dir("inject");
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let evil = "x'; DROP TABLE t; --";
    let out = apply::apply(
        &ctx,
        &rec(vec![knob("log_line_prefix", json!(evil), "string")]),
    )
    .unwrap();
    assert_eq!(out, Outcome::Reloaded(vec!["log_line_prefix".into()]));
    assert_eq!(
        setting(&c, "log_line_prefix").0,
        evil,
        "the whole text is the value"
    );
    let n: i64 = c
        .client()
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 't'", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "table t is still there");
    // Our statement reached the server prefixed and with the value quoted.
    let q: i64 = c
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%ALTER /*dbtune*/ SYSTEM SET log_line_prefix = ''x''''; DROP TABLE t; --''%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(q, 1);
}

#[test]
fn frozen_and_policy_lists() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("frozen");
    let mut pol = policy();
    pol.frozen = true;
    let wm = rec(vec![knob("work_mem", json!(8192), "integer")]);
    {
        let ctx = ApplyContext {
            pg: &pg,
            allow_restart: false,
            target: &LocalTarget::new(None, None),
            policy: &pol,
            state_dir: &state,
            ready_timeout: pol.ready_timeout,
        };
        let e = apply::apply(&ctx, &wm).unwrap_err();
        assert_eq!(e.error_type, "config_apply_error");
        assert!(
            e.message.contains("frozen by apply.frozen") && e.message.contains("not applied"),
            "{}",
            e.message
        );
        let p = plan(&ctx, &wm).unwrap();
        assert!(!p.would_apply());
        assert!(
            p.to_string()
                .contains("Blocked: configuration changes are frozen"),
            "{p}"
        );
    }
    pol.frozen = false;
    std::fs::write(state.join("freeze"), "maintenance").unwrap();
    {
        let ctx = ApplyContext {
            pg: &pg,
            allow_restart: false,
            target: &LocalTarget::new(None, None),
            policy: &pol,
            state_dir: &state,
            ready_timeout: pol.ready_timeout,
        };
        let e = apply::apply(&ctx, &wm).unwrap_err();
        assert!(
            e.message.contains("frozen by the freeze file") && e.message.contains("/freeze"),
            "{}",
            e.message
        );
    }
    assert_eq!(setting(&c, "work_mem").0, "4096");
    std::fs::remove_file(state.join("freeze")).unwrap();

    // apply.deny beats everything; apply.allow opens a default-denied parameter.
    pol.deny = vec!["work_*".into()];
    pol.allow = vec!["archive_command".into(), "work_mem".into()];
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let e = apply::apply(&ctx, &wm).unwrap_err();
    assert!(
        e.message
            .contains("work_mem: denied by local policy (apply.deny: work_*)"),
        "{}",
        e.message
    );
    let ac = rec(vec![knob(
        "archive_command",
        json!("/bin/true %p"),
        "string",
    )]);
    assert_eq!(
        apply::apply(&ctx, &ac).unwrap(),
        Outcome::Reloaded(vec!["archive_command".into()])
    );
    // PostgreSQL shows "(disabled)" while archive_mode is off; the file has our value.
    assert!(
        auto_conf(&c).contains("archive_command = '/bin/true %p'"),
        "{}",
        auto_conf(&c)
    );
    assert_eq!(setting(&c, "archive_command").0, "(disabled)");
    // Served again: recognised as already applied (journal), no second reload.
    let reloads = reload_count(&c);
    assert_eq!(apply::apply(&ctx, &ac).unwrap(), Outcome::Unchanged);
    assert_eq!(reload_count(&c), reloads);
}

#[test]
fn plan_shows_the_diff_and_applies_nothing() {
    let c = PgCluster::start();
    let pg = pool(&c);
    let state = temp_dir("plan");
    let pol = policy();
    let ctx = ApplyContext {
        pg: &pg,
        allow_restart: false,
        target: &LocalTarget::new(None, None),
        policy: &pol,
        state_dir: &state,
        ready_timeout: pol.ready_timeout,
    };
    let before = auto_conf(&c);
    let r = rec(vec![
        knob("work_mem", json!("8MB"), "integer"),
        knob("random_page_cost", json!(4.0), "real"),
        knob("shared_buffers", json!(4096), "integer"),
        knob("ssl_key_file", json!("/tmp/k"), "string"),
    ]);
    let p = plan(&ctx, &r).unwrap();
    let text = p.to_string();
    println!("{text}");
    assert!(
        text.contains("~ work_mem          4096 kB -> 8192 kB  (reload)"),
        "{text}"
    );
    assert!(
        text.contains("= random_page_cost  \"4\" (already set)"),
        "{text}"
    );
    assert!(
        text.contains("! shared_buffers    2048 8kB -> 4096 8kB  (RESTART)"),
        "{text}"
    );
    assert!(
        text.contains("x ssl_key_file      \"/tmp/k\"  REFUSED: refused by the default policy"),
        "{text}"
    );
    assert!(text.contains("Needs a restart: shared_buffers"), "{text}");
    assert!(text.contains("Blocked: restart is not allowed in the agent, but 1 parameter(s) require restart: [shared_buffers]"), "{text}");
    assert!(
        text.contains("Result: apply would refuse the whole recommendation (1 knob(s) rejected)"),
        "{text}"
    );
    assert_eq!(p.changes(), 2);
    assert_eq!(auto_conf(&c), before, "plan applies nothing");
    assert_eq!(setting(&c, "work_mem").0, "4096");
}
