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
