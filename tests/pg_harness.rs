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
    let n: i64 = admin
        .query_one("SELECT count(*) FROM pg_stat_statements WHERE query LIKE '/*dbtune*/ SELECT version()%'", &[])
        .unwrap()
        .get(0);
    assert!(
        n >= 1,
        "expected our prefixed version() in pg_stat_statements"
    );
}
