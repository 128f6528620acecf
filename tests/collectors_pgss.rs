//! pg_stat_statements against a real PostgreSQL: shape, deltas, filtering, options, resets,
//! extension upgrades and the text cache.
mod support;

use dbtune_agent::collectors::pgss::PgStatStatements;
use dbtune_agent::collectors::{
    probe, CatalogCollector, CollectCtx, CollectorSettings, ServerInfo,
};
use dbtune_agent::config::collectors::OptionValue;
use dbtune_agent::pg::{Pg, SessionLimits};
use serde_json::Value;
use support::pgcluster::PgCluster;

struct Agent {
    pg: Pg,
    server: ServerInfo,
}

impl Agent {
    fn new(c: &PgCluster) -> Agent {
        let pg = Pg::new(&c.url(), 2, SessionLimits::default()).unwrap();
        let server = probe::probe(&pg).unwrap();
        Agent { pg, server }
    }
    fn run(&self, c: &mut PgStatStatements) -> Value {
        c.collect(&CollectCtx {
            pg: &self.pg,
            server: &self.server,
        })
        .unwrap()
        .expect("pgss always sends")
    }
}

fn settings(opts: &[(&str, OptionValue)]) -> CollectorSettings {
    let mut s = CollectorSettings::defaults_for("pg_stat_statements");
    for (k, v) in opts {
        s.options.insert(k.to_string(), v.clone());
    }
    s
}

/// A statement with its own queryid (column count differs).
fn distinct(i: usize) -> String {
    let cols: Vec<String> = (0..=i).map(|j| j.to_string()).collect();
    format!("SELECT {} AS distinct_statement", cols.join(", "))
}

fn find<'a>(v: &'a Value, needle: &str) -> Option<&'a Value> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["query"].as_str().is_some_and(|q| q.contains(needle)))
}

const ROW_KEYS: &[&str] = &[
    "userid",
    "dbid",
    "queryid",
    "query",
    "query_len",
    "calls",
    "total_exec_time",
    "min_exec_time",
    "max_exec_time",
    "mean_exec_time",
    "stddev_exec_time",
    "rows",
    "shared_blks_hit",
    "shared_blks_read",
    "shared_blks_dirtied",
    "shared_blks_written",
    "local_blks_hit",
    "local_blks_read",
    "local_blks_dirtied",
    "local_blks_written",
    "temp_blks_read",
    "temp_blks_written",
    "shared_blk_read_time",
    "shared_blk_write_time",
    "plans",
    "total_plan_time",
    "min_plan_time",
    "max_plan_time",
    "mean_plan_time",
    "stddev_plan_time",
    "wal_records",
    "wal_fpi",
    "wal_bytes",
    "toplevel",
    "temp_blk_read_time",
    "temp_blk_write_time",
    "jit_functions",
    "jit_generation_time",
    "jit_inlining_count",
    "jit_inlining_time",
    "jit_optimization_count",
    "jit_optimization_time",
    "jit_emission_count",
    "jit_emission_time",
];

#[test]
fn rows_deltas_and_filter() {
    let pg = PgCluster::start();
    let agent = Agent::new(&pg);
    let mut cl = pg.client();
    cl.batch_execute("CREATE TABLE pgss_t(id int primary key, v text); INSERT INTO pgss_t SELECT g, 'x' FROM generate_series(1, 1000) g")
        .unwrap();
    for i in 0..10 {
        cl.query("SELECT count(*) FROM pgss_t WHERE id > $1", &[&i])
            .unwrap();
    }
    cl.batch_execute("BEGIN; COMMIT;").unwrap();
    let mut c = PgStatStatements::new(&settings(&[]));
    let first = agent.run(&mut c);
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        [
            "collected_at",
            "rows",
            "delta_count",
            "average_query_runtime"
        ]
    );
    assert_eq!(first["delta_count"], 0);
    assert_eq!(first["average_query_runtime"], 0.0);
    let r = find(&first, "FROM pgss_t WHERE id >").expect("our statement is listed");
    let got: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    // PG 15 ships extension 1.10: no local_blk_* (omitted), everything else present.
    let expect: Vec<&str> = ROW_KEYS.to_vec();
    if agent.server.major() < 17 {
        assert_eq!(got, expect);
    }
    assert_eq!(r["calls"], 10);
    assert!(r["toplevel"].is_null(), "toplevel is nulled by aggregation");
    assert!(r["queryid"].is_i64() && r["userid"].is_u64() && r["dbid"].is_u64());
    assert!(r["total_exec_time"].is_f64() && r["mean_exec_time"].is_f64());
    let mean = r["mean_exec_time"].as_f64().unwrap();
    assert!((mean - r["total_exec_time"].as_f64().unwrap() / 10.0).abs() < 1e-9);
    assert_eq!(
        r["query_len"].as_u64().unwrap() as usize,
        r["query"].as_str().unwrap().chars().count()
    );
    for row in first["rows"].as_array().unwrap() {
        let q = row["query"].as_str().unwrap_or("");
        assert!(
            !q.contains("/*dbtune*/"),
            "agent statements are filtered: {q}"
        );
        assert!(
            !q.eq_ignore_ascii_case("begin") && !q.eq_ignore_ascii_case("commit"),
            "{q}"
        );
    }

    for i in 0..5 {
        cl.query("SELECT count(*) FROM pgss_t WHERE id > $1", &[&i])
            .unwrap();
    }
    cl.query(
        "SELECT v FROM pgss_t WHERE id = $1 AND v <> 'brand new'",
        &[&3],
    )
    .unwrap();
    let second = agent.run(&mut c);
    let deltas = second["deltas"]
        .as_array()
        .expect("deltas on the second run");
    let r = find(&second, "FROM pgss_t WHERE id >").unwrap();
    let d = deltas
        .iter()
        .find(|d| d["queryid"] == r["queryid"] && d["userid"] == r["userid"])
        .expect("delta for our statement");
    assert_eq!(
        d.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["userid", "dbid", "queryid", "calls", "total_exec_time"]
    );
    assert_eq!(d["calls"], 5);
    assert!(d["total_exec_time"].as_f64().unwrap() > 0.0);
    // A statement never seen before contributes its whole counters.
    let n = find(&second, "AND v <>").unwrap();
    assert!(deltas
        .iter()
        .any(|d| d["queryid"] == n["queryid"] && d["calls"] == 1));
    assert_eq!(
        second["delta_count"].as_u64().unwrap() as usize,
        deltas.len()
    );
    let (sc, se) = deltas.iter().fold((0i64, 0f64), |(c, e), d| {
        (
            c + d["calls"].as_i64().unwrap(),
            e + d["total_exec_time"].as_f64().unwrap(),
        )
    });
    assert!((second["average_query_runtime"].as_f64().unwrap() - se / sc as f64).abs() < 1e-9);
    // Every delta has its row; rows with deltas come first, by interval mean time.
    let rows = second["rows"].as_array().unwrap();
    let ranks: Vec<f64> = deltas
        .iter()
        .map(|d| d["total_exec_time"].as_f64().unwrap() / d["calls"].as_f64().unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{ranks:?}");
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(
            rows[i]["queryid"], d["queryid"],
            "row {i} carries delta {i}"
        );
    }
    // No change → no deltas key at all.
    let quiet = agent.run(&mut c);
    assert!(
        quiet.get("deltas").is_none()
            || quiet["deltas"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["queryid"] != r["queryid"])
    );

    // A reset never yields negative deltas; the lower values become the baseline.
    cl.batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
    cl.query("SELECT count(*) FROM pgss_t WHERE id > $1", &[&1])
        .unwrap();
    let after = agent.run(&mut c);
    for d in after
        .get("deltas")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        assert!(
            d["calls"].as_i64().unwrap() > 0 && d["total_exec_time"].as_f64().unwrap() > 0.0,
            "{d}"
        );
    }
    for _ in 0..3 {
        cl.query("SELECT count(*) FROM pgss_t WHERE id > $1", &[&1])
            .unwrap();
    }
    let next = agent.run(&mut c);
    let r = find(&next, "FROM pgss_t WHERE id >").unwrap();
    let d = next["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["queryid"] == r["queryid"])
        .unwrap();
    assert_eq!(d["calls"], 3);
}

#[test]
fn options_limit_rows_and_hide_or_cut_texts() {
    let pg = PgCluster::start();
    let agent = Agent::new(&pg);
    let mut cl = pg.client();
    for i in 0..6 {
        cl.batch_execute(&distinct(i)).unwrap();
    }
    let mut hidden =
        PgStatStatements::new(&settings(&[("include_queries", OptionValue::Bool(false))]));
    let v = agent.run(&mut hidden);
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.len() >= 6);
    for r in rows {
        assert!(
            r.get("query").is_none() && r.get("query_len").is_none(),
            "{r}"
        );
    }

    let mut cut =
        PgStatStatements::new(&settings(&[("max_query_text_length", OptionValue::Int(8))]));
    let v = agent.run(&mut cut);
    for r in v["rows"].as_array().unwrap() {
        let q = r["query"].as_str().unwrap();
        assert!(q.chars().count() <= 8, "{q}");
        assert!(r["query_len"].as_u64().unwrap() as usize >= q.chars().count());
    }
    assert!(v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["query_len"].as_u64().unwrap() > 8));

    let mut limited = PgStatStatements::new(&settings(&[("diff_limit", OptionValue::Int(2))]));
    assert_eq!(agent.run(&mut limited)["rows"].as_array().unwrap().len(), 2);
    for i in 0..6 {
        cl.batch_execute(&distinct(i)).unwrap();
    }
    let v = agent.run(&mut limited);
    assert_eq!(v["rows"].as_array().unwrap().len(), 2);
    assert!(
        v["delta_count"].as_u64().unwrap() >= 6,
        "delta_count counts before the cap: {v}"
    );
    assert_eq!(v["deltas"].as_array().unwrap().len(), 2);
}

#[test]
fn texts_are_fetched_once_per_statement_and_the_cache_is_bounded() {
    let pg = PgCluster::start();
    let agent = Agent::new(&pg);
    let mut cl = pg.client();
    // Constants are normalised away, so length and distinctness come from the column lists.
    for i in 0..20 {
        let cols: Vec<String> = (0..50 + i)
            .map(|j| format!("{j} AS \"long_text_{i}_{j}_{}\"", "x".repeat(40)))
            .collect();
        cl.batch_execute(&format!("SELECT {}", cols.join(", ")))
            .unwrap();
    }
    // A budget of 10 kB holds only a few of the 3 kB texts.
    let mut c = PgStatStatements::with_budget(&settings(&[]), 10_000);
    let text_fetches = |cl: &mut postgres::Client| -> i64 {
        cl.query_one(
            "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE '%s.queryid, s.userid, s.dbid,%AS excluded%'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let v = agent.run(&mut c);
    let long_rows = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["query"]
                .as_str()
                .is_some_and(|q| q.contains("long_text_"))
        })
        .count();
    assert_eq!(
        long_rows, 20,
        "every row carries its text even when the cache cannot hold them all"
    );
    assert!(
        c.text_cache().text_bytes() <= 10_000,
        "cache within budget: {}",
        c.text_cache().text_bytes()
    );
    assert!(c.text_cache().len() >= 20);

    // With a generous budget, steady state fetches no texts at all.
    let mut big = PgStatStatements::new(&settings(&[]));
    agent.run(&mut big);
    text_fetches(&mut cl); // our own counting statement is new once
    agent.run(&mut big);
    let before = text_fetches(&mut cl);
    assert!(before > 0, "text fetches are visible in pg_stat_statements");
    for _ in 0..3 {
        agent.run(&mut big);
    }
    assert_eq!(
        text_fetches(&mut cl),
        before,
        "no text fetch when no statement is new"
    );
    // A new statement triggers one fetch.
    cl.batch_execute("SELECT 42 AS one_more_statement").unwrap();
    let v = agent.run(&mut big);
    assert!(find(&v, "one_more_statement").is_some());
    let all: Vec<(String, i64)> = cl
        .query(
            "SELECT left(query, 120), calls FROM pg_stat_statements WHERE query LIKE '%/*dbtune*/%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(text_fetches(&mut cl), before + 1, "{before} {all:#?}");
}

#[test]
fn extension_upgrade_changes_columns_and_restarts_the_baseline() {
    let pg = PgCluster::start();
    let agent = Agent::new(&pg);
    let major = agent.server.major();
    let mut cl = pg.client();
    // 1.7 (PG 12's version) still installs on every supported server: old column names.
    cl.batch_execute(
        "DROP EXTENSION pg_stat_statements; CREATE EXTENSION pg_stat_statements VERSION '1.7'",
    )
    .unwrap();
    cl.batch_execute("SELECT 1 AS before_upgrade").unwrap();
    let mut c = PgStatStatements::new(&settings(&[]));
    let v = agent.run(&mut c);
    let r = find(&v, "before_upgrade").unwrap();
    assert!(
        r["total_exec_time"].is_f64(),
        "total_time read as total_exec_time on 1.7: {r}"
    );
    assert!(
        r["plans"].is_null() && r["wal_bytes"].is_null(),
        "no plan/WAL counters on 1.7: {r}"
    );
    assert!(r["jit_functions"].is_null() && r.get("local_blk_read_time").is_none());
    cl.batch_execute("SELECT 1 AS before_upgrade").unwrap();
    assert!(agent.run(&mut c)["deltas"].is_array());

    cl.batch_execute("ALTER EXTENSION pg_stat_statements UPDATE")
        .unwrap();
    cl.batch_execute("SELECT 1 AS before_upgrade").unwrap();
    let v = agent.run(&mut c);
    assert!(
        v.get("deltas").is_none(),
        "a new extension version starts a fresh baseline: {v}"
    );
    assert_eq!(v["delta_count"], 0);
    let r = find(&v, "before_upgrade").unwrap();
    assert!(
        r["plans"].is_i64() && r["wal_bytes"].is_i64(),
        "1.8+ columns read after the upgrade: {r}"
    );
    assert_eq!(
        r["jit_functions"].is_i64(),
        major >= 15,
        "jit columns from 1.10 (PG 15): {r}"
    );
    assert_eq!(
        r.get("local_blk_read_time").is_some(),
        major >= 17,
        "local block times from 1.11 (PG 17)"
    );
    cl.batch_execute("SELECT 1 AS before_upgrade").unwrap();
    assert!(
        agent.run(&mut c)["deltas"].is_array(),
        "deltas again on the next tick"
    );
}

/// The full counters are read only for the rows sent (by key, after the light read of every
/// statement): a role without pg_read_all_stats sees other roles' statements with a NULL
/// queryid, and those pass-through rows still come with their full counters, after the keyed
/// rows; with `diff_limit` the sent rows are the top ones, each with its counters.
#[test]
fn rows_sent_carry_full_counters_and_pass_through_rows_follow() {
    let pg = PgCluster::start();
    let mut cl = pg.client();
    cl.batch_execute(
        "CREATE ROLE pgss_plain LOGIN; GRANT EXECUTE ON FUNCTION pg_stat_statements(boolean) TO pgss_plain; \
         CREATE TABLE pgss_p(id int primary key); INSERT INTO pgss_p SELECT generate_series(1, 50)",
    )
    .unwrap();
    for i in 0..5 {
        cl.query("SELECT count(*) FROM pgss_p WHERE id > $1", &[&i])
            .unwrap();
    }
    let url = pg.url().replacen("postgres@", "pgss_plain@", 1);
    let plain = Pg::new(&url, 2, SessionLimits::default()).unwrap();
    let server = probe::probe(&plain).unwrap();
    let mut own = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    own.batch_execute("SELECT 1 AS own_statement").unwrap();
    let mut c = PgStatStatements::new(&settings(&[]));
    let v = c
        .collect(&CollectCtx {
            pg: &plain,
            server: &server,
        })
        .unwrap()
        .unwrap();
    let rows = v["rows"].as_array().unwrap();
    let hidden: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i]["queryid"].is_null())
        .collect();
    assert!(
        !hidden.is_empty(),
        "other roles' statements are pass-through rows: {v}"
    );
    let first_hidden = hidden[0];
    assert!(
        hidden.iter().copied().eq(first_hidden..rows.len()),
        "pass-through rows follow the keyed rows"
    );
    assert!(first_hidden > 0, "our own statements are keyed rows");
    for r in rows {
        assert!(r["calls"].as_i64().is_some_and(|c| c > 0), "{r}");
        assert!(r["rows"].is_i64() && r["shared_blks_hit"].is_i64(), "{r}");
        assert!(r["mean_exec_time"].is_f64(), "{r}");
    }
    assert_eq!(rows[first_hidden]["query"], "<insufficient privilege>");
    // Unaggregated: a pass-through row keeps the server's own toplevel flag (PG 14+).
    if pg.major() >= 14 {
        assert!(rows[first_hidden]["toplevel"].is_boolean());
    }

    // A cut to the top 2: the rows kept are full rows too, and each delta has its row.
    let mut c = PgStatStatements::new(&settings(&[("diff_limit", OptionValue::Int(2))]));
    let agent = Agent::new(&pg);
    agent.run(&mut c);
    for i in 0..20 {
        cl.query("SELECT count(*) FROM pgss_p WHERE id > $1", &[&i])
            .unwrap();
    }
    let v = agent.run(&mut c);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert!(
            r["calls"].is_i64() && r["total_plan_time"].is_number(),
            "{r}"
        );
    }
    for d in v["deltas"].as_array().into_iter().flatten() {
        assert!(
            rows.iter()
                .any(|r| r["queryid"] == d["queryid"] && r["userid"] == d["userid"]),
            "every delta has its row: {d}"
        );
    }
    assert!(v["delta_count"].as_i64().unwrap() >= 1);
}
