//! TLS to PostgreSQL follows libpq's sslmode: a real server with a certificate from a throwaway
//! CA (made with the openssl command), connected through the agent's pool.
mod support;

use dbtune_agent::pg::{query_one, Pg, SessionLimits};
use std::path::Path;
use std::process::Command;
use support::pgcluster::{chown_postgres, PgCluster};

fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for this test");
    assert!(
        st.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// CA + server certificate valid for DNS:localhost only; plus an unrelated CA.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=dbtune test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=other CA",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
        ],
    );
}

fn ssl_in_use(url: &str) -> Result<bool, String> {
    let limits = SessionLimits {
        connect_timeout: std::time::Duration::from_secs(1),
        ..SessionLimits::default()
    };
    let pg = Pg::new(url, 1, limits).map_err(|e| e.to_string())?;
    let mut c = pg.conn().map_err(|e| e.to_string())?;
    let row = query_one(
        &mut c,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[test]
fn sslmodes_behave_like_libpq() {
    let certs = std::env::temp_dir().join(format!("dbtune-tls-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    make_certs(&certs);
    let key = certs.join("server.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if unsafe { libc::geteuid() } == 0 {
        chown_postgres(&certs);
    }
    let crt = certs.join("server.crt");
    let pg = PgCluster::start_with(&[
        "ssl = on",
        &format!("ssl_cert_file = '{}'", crt.display()),
        &format!("ssl_key_file = '{}'", key.display()),
    ]);
    let ca = certs.join("ca.pem");
    let other = certs.join("other.pem");
    let url = |host: &str, q: &str| format!("postgres://postgres@{host}:{}/postgres?{q}", pg.port);

    assert_eq!(ssl_in_use(&url("127.0.0.1", "sslmode=disable")), Ok(false));
    assert_eq!(ssl_in_use(&url("127.0.0.1", "sslmode=prefer")), Ok(true));
    assert_eq!(
        ssl_in_use(&url("127.0.0.1", "sslmode=require")),
        Ok(true),
        "require encrypts without verifying"
    );
    let full_ok = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    assert_eq!(ssl_in_use(&full_ok), Ok(true));
    let wrong_name = url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    );
    let e = ssl_in_use(&wrong_name).unwrap_err();
    assert!(
        e.to_lowercase().contains("certificate"),
        "verify-full must check the host name: {e}"
    );
    assert_eq!(
        ssl_in_use(&url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={}", ca.display())
        )),
        Ok(true),
        "verify-ca checks the chain, not the name"
    );
    let e = ssl_in_use(&url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={}", other.display()),
    ))
    .unwrap_err();
    assert!(
        e.to_lowercase().contains("certificate"),
        "an untrusted chain is refused: {e}"
    );
    // require + sslrootcert verifies the chain, as libpq does.
    assert!(ssl_in_use(&url(
        "localhost",
        &format!("sslmode=require&sslrootcert={}", other.display())
    ))
    .is_err());
    let _ = std::fs::remove_dir_all(&certs);
}
