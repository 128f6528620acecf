//! Issue 17, defect 4(b): pg_stat_statements keeps the literals of utility statements, so the
//! passwords in `CREATE ROLE … PASSWORD '…'` and its kin must be redacted before a text leaves
//! the agent. Through the real binary on PostgreSQL 13 and 18: the statements run, the
//! platform stand-in records every body, no body holds a secret, and the statements still
//! arrive with their shape.
mod support;

use std::time::Duration;
use support::agent::{self, Agent};
use support::pgcluster::PgCluster;
use support::pgversions;
use support::platform::PlatformStandIn;

/// Every secret holds this marker.
const MARK: &str = "S3cr";

/// (statement, what its recorded text must still contain).
const STATEMENTS: &[(&str, &[&str])] = &[
    (
        "CREATE ROLE leak_a LOGIN PASSWORD 'S3crA1'",
        &["CREATE ROLE leak_a LOGIN PASSWORD"],
    ),
    (
        "ALTER ROLE leak_a WITH ENCRYPTED PASSWORD 'S3crA2' VALID UNTIL '2099-01-01'",
        &["ALTER ROLE leak_a WITH ENCRYPTED PASSWORD", "VALID UNTIL"],
    ),
    (
        "ALTER USER leak_a PASSWORD E'S3cr\\'A3'",
        &["ALTER USER leak_a PASSWORD"],
    ),
    (
        "ALTER ROLE leak_a PASSWORD $pw$S3crA4$pw$",
        &["ALTER ROLE leak_a PASSWORD"],
    ),
    (
        "CREATE USER leak_b PASSWORD 'S3cr A5 with spaces' CONNECTION LIMIT 3",
        &["CREATE USER leak_b PASSWORD", "CONNECTION LIMIT"],
    ),
    (
        "CREATE USER MAPPING FOR leak_a SERVER leak_srv OPTIONS (user 'u', password 'S3crA6')",
        &["CREATE USER MAPPING FOR leak_a SERVER leak_srv OPTIONS"],
    ),
    (
        "ALTER USER MAPPING FOR leak_a SERVER leak_srv OPTIONS (SET password 'S3crA7')",
        &["ALTER USER MAPPING FOR leak_a SERVER leak_srv OPTIONS (SET password"],
    ),
    (
        "CREATE SUBSCRIPTION leak_sub CONNECTION 'host=127.0.0.1 port=1 password=S3crA8 dbname=x' PUBLICATION p WITH (connect = false)",
        &["CREATE SUBSCRIPTION leak_sub CONNECTION", "password=***"],
    ),
];

/// True when the recorded text shows the statement with its password replaced (PostgreSQL
/// versions that normalize utility constants send `$n` instead, also fine).
fn redacted(text: &str) -> bool {
    text.contains("'***'") || text.contains("password=***") || text.contains('$')
}

fn check_major(major: u32) {
    let Some(bin) = pgversions::bin_for(major) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but PostgreSQL {major} is missing (run .ci/setup-pg-versions.sh)"
        );
        eprintln!("PostgreSQL {major} not available: skipped");
        return;
    };
    let pg = PgCluster::start_bin(bin, &[]);
    let platform = PlatformStandIn::start();
    let mut c = pg.client();
    c.batch_execute("CREATE FOREIGN DATA WRAPPER leak_fdw; CREATE SERVER leak_srv FOREIGN DATA WRAPPER leak_fdw;")
        .unwrap();
    let _a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    // The first pass is the baseline; what runs after it is in a later one.
    platform.wait_for(
        "a first pg_stat_statements payload",
        Duration::from_secs(40),
        |r| r.iter().any(|x| x.segment() == "pg_stat_statements"),
    );
    for (sql, _) in STATEMENTS {
        c.batch_execute(sql)
            .unwrap_or_else(|e| panic!("PostgreSQL {major}: {sql}: {e}"));
    }
    let texts = |r: &[support::platform::Recorded]| -> Vec<String> {
        r.iter()
            .filter(|x| x.segment() == "pg_stat_statements")
            .flat_map(|x| {
                x.json()["rows"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|row| row["query"].as_str().map(str::to_string))
            })
            .collect()
    };
    let all_seen = |r: &[support::platform::Recorded]| {
        let t = texts(r);
        STATEMENTS
            .iter()
            .all(|(_, shape)| t.iter().any(|q| q.contains(shape[0])))
    };
    let reqs = platform.wait_for(
        "every password statement in a pg_stat_statements payload",
        Duration::from_secs(60),
        all_seen,
    );
    for r in &reqs {
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains(MARK),
            "PostgreSQL {major}: a secret reached {} {}:\n{body}",
            r.method,
            r.segment()
        );
    }
    let t = texts(&reqs);
    for (sql, shape) in STATEMENTS {
        let q = t
            .iter()
            .find(|q| q.contains(shape[0]))
            .unwrap_or_else(|| panic!("PostgreSQL {major}: no text for {sql}"));
        for part in *shape {
            assert!(
                q.contains(part),
                "PostgreSQL {major}: {part:?} missing in {q:?}"
            );
        }
        assert!(redacted(q), "PostgreSQL {major}: not redacted: {q:?}");
    }
}

#[test]
fn password_literals_never_reach_the_platform_on_postgresql_13() {
    check_major(13);
}

#[test]
fn password_literals_never_reach_the_platform_on_postgresql_18() {
    check_major(18);
}
