//! Runtime faults through the real binary (issue: reliability defects 6, 7, 8 and 10): a locked
//! table does not hold back the DDL payload; the bootstrap pass survives PostgreSQL being down
//! at start; the daemon waits for an unreachable PostgreSQL (and still exits at once on a
//! wrong password); `--health` does not depend on a writable state directory.
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::agent::{self, Agent};
use support::pgcluster::{self, PgCluster};
use support::platform::{PlatformStandIn, Recorded};

/// The binary under test as one path (`DBTUNE_TEST_AGENT` when it is a plain path), for
/// running it as another user.
fn bin() -> String {
    match std::env::var("DBTUNE_TEST_AGENT") {
        Ok(v) if !v.trim().is_empty() && !v.trim().contains(' ') => v.trim().to_string(),
        _ => env!("CARGO_BIN_EXE_dbtune-agent").to_string(),
    }
}

fn has(r: &[Recorded], seg: &str) -> bool {
    r.iter().any(|x| x.segment() == seg)
}

/// `--health` of the agent configured by `yaml`, as `user` (None: as this process) with `env`.
fn health(yaml_path: &std::path::Path, user: Option<&str>, env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(bin());
            c
        }
        None => agent::command(),
    };
    cmd.arg("--config").arg(yaml_path).arg("--health");
    cmd.env_remove("RUNTIME_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_locked_table_with_a_serial_column_does_not_hold_back_the_ddl_payload() {
    let pg = PgCluster::start();
    let mut admin = pg.client();
    admin
        .batch_execute(
            "CREATE TABLE busy(id serial PRIMARY KEY, v text); CREATE VIEW busy_v AS SELECT id FROM busy; \
             CREATE TABLE busy_ident(id int GENERATED ALWAYS AS IDENTITY, v text); \
             ALTER TABLE busy ENABLE ROW LEVEL SECURITY; CREATE POLICY busy_pol ON busy USING (id > 0); \
             CREATE TABLE calm(id serial PRIMARY KEY, v text); CREATE VIEW calm_v AS SELECT id FROM calm; \
             CREATE FUNCTION busy_rows() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM busy; END; \
             CREATE FUNCTION calm_rows() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM calm; END; \
             ALTER TABLE calm ENABLE ROW LEVEL SECURITY; \
             CREATE POLICY calm_pol ON calm USING (id > 0); \
             CREATE POLICY calm_busy_pol ON calm USING (EXISTS (SELECT 1 FROM busy b WHERE b.id = calm.id))",
        )
        .unwrap();
    // Held by another session for the whole run, as a long migration would.
    let mut locker = pg.client();
    locker
        .batch_execute(
            "BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE; LOCK TABLE busy_ident IN ACCESS EXCLUSIVE MODE",
        )
        .unwrap();
    let platform = PlatformStandIn::start();
    let a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        &["--local"],
        &[],
    );
    let reqs = platform.wait_for("the ddl payload", Duration::from_secs(40), |r| {
        has(r, "ddl")
    });
    let ddl = reqs.iter().find(|x| x.segment() == "ddl").unwrap().json();
    let text = ddl["ddl"].as_str().unwrap();
    assert!(text.contains("CREATE TABLE public.calm"), "{text}");
    assert!(
        text.contains("CREATE SEQUENCE public.calm_id_seq"),
        "{text}"
    );
    assert!(text.contains("CREATE VIEW public.calm_v"), "{text}");
    assert!(text.contains("FUNCTION public.calm_rows()"), "{text}");
    assert!(
        text.contains("CREATE POLICY calm_pol ON public.calm"),
        "{text}"
    );
    assert!(
        !text.contains("busy"),
        "the locked tables and what depends on them are left out: {text}"
    );
    assert!(!a.logs().contains("failed to collect DDL"), "{}", a.logs());
    locker.batch_execute("COMMIT").unwrap();
}

#[test]
fn the_bootstrap_pass_runs_when_postgresql_comes_up_after_a_start_without_it() {
    let mut pg = PgCluster::start();
    pg.client()
        .batch_execute("CREATE TABLE t(id int PRIMARY KEY, v text); CREATE INDEX t_v ON t(v)")
        .unwrap();
    pg.stop();
    let platform = PlatformStandIn::start();
    let a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, ""),
        &["--local"],
        &[("DBT_DISABLE_CHECKS", "true")],
    );
    platform.wait_for("a heartbeat", Duration::from_secs(30), |r| {
        has(r, "heartbeat")
    });
    // Long enough for the whole pass to have been skipped.
    std::thread::sleep(Duration::from_secs(4));
    pg.pg_ctl_start();
    let up = Instant::now();
    let catalog = [
        "ddl",
        "pg_attribute",
        "pg_constraint",
        "pg_index",
        "pg_type",
        "pg_index_inventory",
    ];
    platform.wait_for(
        "every bootstrap catalog payload",
        Duration::from_secs(60),
        |r| catalog.iter().all(|c| has(r, c)),
    );
    eprintln!(
        "bootstrap payloads {:?} after PostgreSQL came up",
        up.elapsed()
    );
    assert!(
        a.logs().contains("skipped bootstrap collector"),
        "{}",
        a.logs()
    );
}

#[test]
fn an_unreachable_postgresql_at_start_is_waited_for_and_collection_starts_when_it_answers() {
    let mut pg = PgCluster::start();
    pg.client()
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .unwrap();
    pg.stop();
    let platform = PlatformStandIn::start();
    let runtime = agent::temp_dir("rt");
    let mut a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, ""),
        &["--local"],
        &[("RUNTIME_DIRECTORY", runtime.to_str().unwrap())],
    );
    platform.wait_for("two heartbeats", Duration::from_secs(40), |r| {
        r.iter().filter(|x| x.segment() == "heartbeat").count() >= 2
    });
    assert!(
        a.wait(Duration::from_millis(100)).is_none(),
        "the daemon stays up: {}",
        a.logs()
    );
    assert!(
        a.logs().contains("PostgreSQL is not reachable yet"),
        "{}",
        a.logs()
    );
    let (code, out) = health(
        &a.dir.join("dbtune.yaml"),
        None,
        &[("RUNTIME_DIRECTORY", runtime.to_str().unwrap())],
    );
    assert_eq!(code, 0, "alive while waiting: {out}");
    assert!(
        out.contains("not ready: waiting for PostgreSQL since") && out.contains("refused"),
        "{out}"
    );
    assert!(
        !has(&platform.requests(), "metrics"),
        "no database payload yet"
    );
    pg.pg_ctl_start();
    let up = Instant::now();
    platform.wait_for("metrics and ddl", Duration::from_secs(40), |r| {
        has(r, "metrics") && has(r, "ddl")
    });
    eprintln!(
        "collection started {:?} after PostgreSQL came up",
        up.elapsed()
    );
    let l = a.wait_log("start-up checks passed", Duration::from_secs(5));
    assert!(l.contains("collection starts"), "{l}");
    // Ready now: the next liveness refresh drops the reason.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out) = health(
            &a.dir.join("dbtune.yaml"),
            None,
            &[("RUNTIME_DIRECTORY", runtime.to_str().unwrap())],
        );
        assert_eq!(code, 0, "{out}");
        if !out.contains("not ready") {
            break;
        }
        assert!(Instant::now() < end, "still not ready: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_dir_all(&runtime);
}

#[test]
fn sigterm_while_waiting_for_postgresql_exits_promptly() {
    let port = pgcluster::free_port();
    let platform = PlatformStandIn::start();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let mut a = Agent::spawn(
        &agent::config_yaml(&url, &platform.url, ""),
        &["--local"],
        &[],
    );
    a.wait_log("PostgreSQL is not reachable yet", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    a.signal(libc::SIGTERM);
    let st = a
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit after SIGTERM: {}", a.logs()));
    assert!(st.success(), "{st:?}: {}", a.logs());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_wrong_password_exits_at_once_whether_at_start_or_when_postgresql_comes_up() {
    let mut pg = PgCluster::start();
    pg.client()
        .batch_execute("ALTER ROLE postgres PASSWORD 'right-one'")
        .unwrap();
    std::fs::write(
        pg.data_dir().join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    pg.client()
        .batch_execute("SELECT pg_reload_conf()")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let url = pg.url().replace("postgres@", "postgres:wr0ng-Secret@");
    let platform = PlatformStandIn::start();
    let t = Instant::now();
    let (st, _, logs) = agent::run(
        &agent::config_yaml(&url, &platform.url, ""),
        &["--local"],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(st.code(), Some(1), "{logs}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "exited after {:?}",
        t.elapsed()
    );
    assert!(
        logs.contains("Startup check failed: PostgreSQL reachable"),
        "{logs}"
    );
    assert!(logs.contains("password authentication failed"), "{logs}");
    assert!(!logs.contains("wr0ng-Secret"), "{logs}");
    assert!(!logs.contains("not reachable yet"), "{logs}");

    // Down at start, then up with the same wrong password: the wait ends with that failure.
    pg.stop();
    let mut a = Agent::spawn(
        &agent::config_yaml(&url, &platform.url, ""),
        &["--local"],
        &[],
    );
    a.wait_log("PostgreSQL is not reachable yet", Duration::from_secs(20));
    pg.pg_ctl_start();
    let st = a
        .wait(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("still running: {}", a.logs()));
    assert_eq!(st.code(), Some(1), "{}", a.logs());
    let l = a.logs();
    assert!(l.contains("password authentication failed"), "{l}");
    assert!(!l.contains("wr0ng-Secret"), "{l}");
}

#[test]
fn health_is_ok_with_a_read_only_state_dir() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    // Owned by root and not writable for the agent's user (as root, file modes are not
    // enforced, so the agent runs as `postgres`).
    let state = agent::temp_dir("ro-state");
    let runtime = agent::temp_dir("ro-runtime");
    pgcluster::chown_postgres(&runtime);
    let yaml = format!(
        "{}state_dir: \"{}\"\n",
        agent::config_yaml(&pg.url(), &platform.url, "disable_checks: true\n"),
        state.display()
    );
    let dir = agent::temp_dir("ro-run");
    let cfg = dir.join("dbtune.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let spawn = |env: &[(&str, &str)]| {
        let stderr = dir.join(format!("stderr-{}", env.len()));
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--local")
            .current_dir(&dir)
            .env_remove("RUNTIME_DIRECTORY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        (child, stderr)
    };
    let rt = [("RUNTIME_DIRECTORY", runtime.to_str().unwrap())];
    let (mut child, stderr) = spawn(&rt);
    platform.wait_for("metrics", Duration::from_secs(30), |r| has(r, "metrics"));
    std::thread::sleep(Duration::from_secs(1));
    let (code, out) = health(&cfg, None, &rt);
    let logs = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert_eq!(code, 0, "{out}\n{logs}");
    assert!(out.starts_with("ok: loops made progress"), "{out}");
    assert!(out.contains(runtime.to_str().unwrap()), "{out}");
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "nothing could be written to the state directory"
    );
    let _ = child.kill();
    let _ = child.wait();

    // No runtime directory given and /run not writable for this user: the private temp dir.
    let (mut child, stderr) = spawn(&[]);
    let end = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let (code, out) = health(&cfg, Some("postgres"), &[]);
        if code == 0 {
            break out;
        }
        assert!(
            Instant::now() < end,
            "{out}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        out.contains("/dbtune-agent-101/") || out.contains("/dbtune-agent-"),
        "{out}"
    );
    let _ = child.kill();
    let _ = child.wait();
    for d in [&state, &runtime, &dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}
