//! The harness itself works: a real cluster starts, runs SQL with pg_stat_statements, stops.
mod support;

use dbtune_agent::pg::{queries, Pg, SessionLimits};
use support::pgcluster::PgCluster;

#[test]
fn pool_sessions_are_labelled_limited_and_prefixed() {
    let pg = PgCluster::start();
    let pool = Pg::new(&pg.url(), 2, SessionLimits::default()).unwrap();
    let mut c = pool.conn().unwrap();
    let row = dbtune_agent::pg::query_one(
        &mut c,
        "SELECT current_setting('application_name'), current_setting('statement_timeout'), current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')",
        &[],
    )
    .unwrap();
    assert_eq!(row.get::<_, String>(0), "dbtune-agent");
    assert_eq!(row.get::<_, String>(1), "10s");
    assert_eq!(row.get::<_, String>(2), "500ms");
    assert_eq!(row.get::<_, String>(3), "30s");
    let v = queries::server_version(&mut c).unwrap();
    assert_eq!(v.major, pg.major());
    assert!(queries::pg_stat_statements_readable(&mut c).is_ok());
    // Our statements are recorded with the prefix in pg_stat_statements.
    let mut admin = pg.client();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%version()%' AND {}",
        dbtune_agent::pg::agent_statement_sql("query")
    );
    let n: i64 = admin.query_one(sql.as_str(), &[]).unwrap().get(0);
    assert!(
        n >= 1,
        "expected our prefixed version() in pg_stat_statements"
    );
}

#[test]
fn the_agent_marker_survives_in_pg_stat_statements_on_this_major() {
    // On PostgreSQL 18 the stored text loses its leading comment; the inner marker remains.
    let pg = PgCluster::start();
    let pool = Pg::new(&pg.url(), 1, SessionLimits::default()).unwrap();
    let mut c = pool.conn().unwrap();
    dbtune_agent::pg::query(&mut c, "SELECT 42 AS the_answer_from_the_agent", &[]).unwrap();
    let mut admin = pg.client();
    // A different shape: pg_stat_statements ignores aliases when it identifies statements.
    admin
        .batch_execute("SELECT 43, 44 AS the_answer_from_a_user")
        .unwrap();
    let sql = format!(
        "SELECT query, {} FROM pg_stat_statements WHERE query LIKE '%the_answer_from%' ORDER BY query",
        dbtune_agent::pg::agent_statement_sql("query")
    );
    let rows = admin.query(sql.as_str(), &[]).unwrap();
    let seen: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let agent = seen
        .iter()
        .find(|(q, _)| q.contains("the_answer_from_the_agent"))
        .expect("agent statement recorded");
    let user = seen
        .iter()
        .find(|(q, _)| q.contains("the_answer_from_a_user"))
        .unwrap_or_else(|| panic!("user statement recorded: {seen:?}"));
    assert!(
        agent.0.contains("/*dbtune*/"),
        "marker kept in the stored text: {:?}",
        agent.0
    );
    assert!(agent.1, "the agent's statement is recognised: {seen:?}");
    assert!(!user.1, "a user's statement is not: {seen:?}");
}

#[test]
fn statements_are_prepared_once_per_session_and_rows_stream() {
    let pg = PgCluster::start();
    let pool = Pg::new(&pg.url(), 1, SessionLimits::default()).unwrap();
    for _ in 0..3 {
        let r = pool.query("SELECT $1::int + 1 AS x", &[&41i32]).unwrap();
        assert_eq!(r[0].get::<_, i32>(0), 42);
    }
    let listed = |pool: &Pg| -> Vec<String> {
        pool.query(
            "SELECT statement FROM pg_catalog.pg_prepared_statements ORDER BY statement",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let names = listed(&pool);
    let same: Vec<&String> = names.iter().filter(|s| s.contains("$1::int + 1")).collect();
    assert_eq!(same.len(), 1, "prepared once for three runs: {names:?}");
    assert!(
        same[0].starts_with("/*dbtune*/ SELECT /*dbtune*/"),
        "{}",
        same[0]
    );

    // Rows arrive one at a time; an error from the consumer stops the query and the session
    // stays usable.
    let mut seen = 0;
    let err = pool
        .for_each_row("SELECT g FROM generate_series(1, 100000) g", &[], |r| {
            seen += 1;
            if r.get::<_, i32>(0) == 10 {
                return Err(dbtune_agent::error::Error::other("enough"));
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!((seen, err.to_string().contains("enough")), (10, true));
    let n = pool
        .for_each_row(
            "SELECT g FROM generate_series(1, 100000) g",
            &[],
            |_| Ok(()),
        )
        .unwrap();
    assert_eq!(n, 100_000);

    // A statement that fails on execution is dropped from the cache and prepared again.
    pg.client()
        .batch_execute("CREATE TABLE prep_t (a int); INSERT INTO prep_t VALUES (1)")
        .unwrap();
    assert_eq!(pool.query("SELECT * FROM prep_t", &[]).unwrap().len(), 1);
    pg.client()
        .batch_execute("ALTER TABLE prep_t ADD COLUMN b int")
        .unwrap();
    // "cached plan must not change result type": fails once, then works re-prepared.
    let first = pool.query("SELECT * FROM prep_t", &[]);
    let second = pool.query("SELECT * FROM prep_t", &[]).unwrap();
    assert_eq!(second[0].len(), 2, "re-prepared after {:?}", first.err());
}
