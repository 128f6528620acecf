//! The pool's password hook (used by `rds.iam_auth`): every new connection asks the
//! `PasswordSource`, so a rotating credential keeps working, and a failing source is reported
//! as such. Real PostgreSQL with scram-sha-256 for the test role.

mod support;

use dbtune_agent::pg::{PasswordSource, Pg, SessionLimits};
use std::sync::{Arc, Mutex};
use support::pgcluster::{chown_postgres, PgCluster};

struct Rotating(Mutex<Result<String, String>>);

impl PasswordSource for Rotating {
    fn password(&self) -> Result<String, String> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn each_new_connection_uses_the_current_password_from_the_source() {
    let dir = support::apply::temp_dir("hba");
    let hba = dir.join("pg_hba.conf");
    std::fs::write(
        &hba,
        "host all tokenuser 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\nlocal all all trust\n",
    )
    .unwrap();
    if unsafe { libc::geteuid() } == 0 {
        chown_postgres(&dir);
    }
    let pg = PgCluster::start_with(&[&format!("hba_file = '{}'", hba.display())]);
    let mut admin = pg.client();
    admin
        .batch_execute("SET password_encryption = 'scram-sha-256'; CREATE ROLE tokenuser LOGIN PASSWORD 'first-token'")
        .unwrap();
    let url = format!(
        "postgres://tokenuser:wrong-static@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    );
    // Without the source the URL's password is used and refused.
    let plain = Pg::new(&url, 1, SessionLimits::default()).unwrap();
    assert!(plain.ping().is_err());

    let src = Arc::new(Rotating(Mutex::new(Ok("first-token".into()))));
    let pool = Pg::with_password(&url, 1, SessionLimits::default(), src.clone()).unwrap();
    pool.ping().expect("logs in with the source's password");

    // The credential rotates: the next new connection uses the new one.
    admin
        .batch_execute("ALTER ROLE tokenuser PASSWORD 'second-token'")
        .unwrap();
    *src.0.lock().unwrap() = Ok("second-token".into());
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tokenuser'",
        )
        .unwrap();
    let mut ok = false;
    for _ in 0..20 {
        if pool.ping().is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(ok, "a new connection with the rotated password");

    // A failing source is named in the error; no connection is attempted with a stale value.
    let failing = Arc::new(Rotating(Mutex::new(Err(
        "no credentials for the token".into()
    ))));
    let bad = Pg::with_password(&url, 1, SessionLimits::default(), failing).unwrap();
    let e = bad.ping().unwrap_err().to_string();
    assert!(
        e.contains("getting the PostgreSQL password: no credentials for the token"),
        "{e}"
    );
}
