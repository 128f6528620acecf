//! Signals in the middle of a restart, through the real binary (issue 17, defects 2 and 3): an
//! agent SIGKILLed while its restart script runs, started again at once, waits for that
//! restart instead of judging a half-restarted server and starting a second one; SIGTERM
//! during a restart stops the agent within its 10 s promise, the script still completes, and
//! the next start settles the journal without another restart. Each restart is charged once.
mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::agent::{self, Agent};
use support::pgcluster::PgCluster;
use support::platform::{recommend_one as rec, setting_in, PlatformStandIn};

/// A restart script that notes each run, sleeps `secs` (a slow service manager), restarts the
/// cluster and notes that it finished.
fn slow_restart_script(pg: &PgCluster, dir: &Path, secs: u32) -> std::path::PathBuf {
    let p = dir.join("restart-pg.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\necho run >> {runs}\nsleep {secs}\n{restart}\nrc=$?\necho done >> {done}\nexit $rc\n",
            runs = dir.join("runs").display(),
            done = dir.join("done").display(),
            restart = pg.restart_command()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

fn wait_file_lines(p: &Path, n: usize, timeout: Duration) {
    let end = Instant::now() + timeout;
    while lines(p) < n {
        assert!(
            Instant::now() < end,
            "{} never reached {n} line(s)",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Times PostgreSQL became ready since the cluster was created (1 = never restarted).
fn server_starts(pg: &PgCluster) -> usize {
    std::fs::read_to_string(&pg.log)
        .unwrap_or_default()
        .matches("database system is ready to accept connections")
        .count()
}

fn budget(state: &Path) -> Vec<i64> {
    let t = std::fs::read_to_string(state.join("restarts.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
    v["restarts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_i64()).collect())
        .unwrap_or_default()
}

fn journal(state: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(state.join("apply-journal.json")).unwrap())
        .unwrap()
}

fn yaml(pg: &PgCluster, platform: &PlatformStandIn, script: &Path, state: &Path) -> String {
    agent::config_yaml(
        &pg.url(),
        &platform.url,
        &format!("disable_checks: true\nstate_dir: \"{}\"\n", state.display()),
    )
    .replace(
        "postgresql:\n",
        &format!(
            "postgresql:\n  allow_restart: true\n  restart_script_path: \"{}\"\n",
            script.display()
        ),
    )
}

fn shared_buffers(pg: &PgCluster) -> String {
    pg.client()
        .query_one(
            "SELECT setting FROM pg_settings WHERE name = 'shared_buffers'",
            &[],
        )
        .unwrap()
        .get(0)
}

fn wait_payload(platform: &PlatformStandIn) {
    platform.wait_for(
        "configurations with shared_buffers = 4096",
        Duration::from_secs(90),
        |r| {
            r.iter().any(|x| {
                x.segment() == "configurations"
                    && x.method == "POST"
                    && setting_in(x, "shared_buffers") == 4096
            })
        },
    );
}

#[test]
fn sigkill_mid_restart_then_an_immediate_start_restarts_postgresql_once() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("kill-mid-restart");
    let state = dir.join("state");
    let script = slow_restart_script(&pg, &dir, 8);
    platform.set_recommendation(&rec("shared_buffers", 4096, "8kB", "postmaster", "restart"));
    assert_eq!(server_starts(&pg), 1);
    let cfg = yaml(&pg, &platform, &script, &state);

    let first = Agent::spawn(&cfg, &["--local"], &[]);
    wait_file_lines(&dir.join("runs"), 1, Duration::from_secs(60));
    first.signal(libc::SIGKILL);
    let j = journal(&state);
    assert!(j["restart_started"].is_i64(), "{j}");
    // (`first` is kept: dropping it removes the directory the restart script runs in.)

    // Started again at once, while the first agent's restart script is still sleeping.
    let second = Agent::spawn(&cfg, &["--local"], &[]);
    let logs = second.wait_log(
        "had taken effect; recorded as verified",
        Duration::from_secs(60),
    );
    assert!(
        logs.contains("is still running") && logs.contains("waiting for it"),
        "{logs}"
    );
    wait_payload(&platform);
    assert_eq!(lines(&dir.join("done")), 1, "the first restart completed");
    assert_eq!(shared_buffers(&pg), "4096");
    // Served again for a while: nothing more happens.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(lines(&dir.join("runs")), 1, "one restart script run");
    assert_eq!(server_starts(&pg), 2, "PostgreSQL restarted exactly once");
    assert_eq!(budget(&state).len(), 1, "the budget is charged once");
    let j = journal(&state);
    assert_eq!(j["phase"], "verified");
    assert!(
        j["restarter"]["pid"].is_i64(),
        "the restart script was journalled as soon as it was spawned: {j}"
    );
    let errs: Vec<String> = platform
        .by_segment("log-entries")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(errs.is_empty(), "no error expected: {errs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_mid_restart_stops_within_10s_and_the_restart_still_completes() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("term-mid-restart");
    let state = dir.join("state");
    let script = slow_restart_script(&pg, &dir, 12);
    platform.set_recommendation(&rec("shared_buffers", 4096, "8kB", "postmaster", "restart"));
    let cfg = yaml(&pg, &platform, &script, &state);

    let mut first = Agent::spawn(&cfg, &["--local"], &[]);
    wait_file_lines(&dir.join("runs"), 1, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    first.signal(libc::SIGTERM);
    let st = first
        .wait(Duration::from_secs(30))
        .expect("the agent exits after SIGTERM");
    let took = t.elapsed();
    eprintln!("SIGTERM mid-restart to exit: {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?}; log:\n{}",
        first.logs()
    );
    assert!(st.success(), "{st:?}");
    assert_eq!(
        lines(&dir.join("done")),
        0,
        "stopped before the script ended"
    );
    let logs = first.logs();
    assert!(logs.contains("left running to completion"), "{logs}");
    assert_eq!(journal(&state)["phase"], "applied");

    // The restart script was not killed with the agent: it finishes and restarts PostgreSQL.
    wait_file_lines(&dir.join("done"), 1, Duration::from_secs(60));
    assert_eq!(server_starts(&pg), 2);
    assert_eq!(shared_buffers(&pg), "4096");

    // The next start settles the journal without restarting again.
    let second = Agent::spawn(&cfg, &["--local"], &[]);
    second.wait_log(
        "had taken effect; recorded as verified",
        Duration::from_secs(60),
    );
    wait_payload(&platform);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(lines(&dir.join("runs")), 1, "one restart script run");
    assert_eq!(server_starts(&pg), 2, "PostgreSQL restarted exactly once");
    assert_eq!(budget(&state).len(), 1, "the budget is charged once");
    assert_eq!(journal(&state)["phase"], "verified");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarter_running_past_its_timeout_is_never_joined_by_a_second_restart() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let dir = agent::temp_dir("restarter-overrun");
    let state = dir.join("state");
    let script = slow_restart_script(&pg, &dir, 22);
    platform.set_recommendation(&rec("shared_buffers", 4096, "8kB", "postmaster", "restart"));
    let cfg = yaml(&pg, &platform, &script, &state).replace(
        "disable_checks: true\n",
        "disable_checks: true\napply:\n  restart_timeout: 3\n",
    );
    let first = Agent::spawn(&cfg, &["--local"], &[]);
    wait_file_lines(&dir.join("runs"), 1, Duration::from_secs(60));
    first.signal(libc::SIGKILL);

    // The script outlives the 3 s the first agent would have allowed it: the new agent says so
    // and judges nothing meanwhile; once the script is done, the apply is completed.
    let second = Agent::spawn(&cfg, &["--local"], &[]);
    second.wait_log(
        "still running past apply.restart_timeout",
        Duration::from_secs(40),
    );
    assert_eq!(lines(&dir.join("done")), 0);
    assert_eq!(
        server_starts(&pg),
        1,
        "nothing restarted PostgreSQL meanwhile"
    );
    second.wait_log(
        "had taken effect; recorded as verified",
        Duration::from_secs(60),
    );
    wait_payload(&platform);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lines(&dir.join("runs")), 1, "one restart script run");
    assert_eq!(server_starts(&pg), 2, "PostgreSQL restarted exactly once");
    assert_eq!(budget(&state).len(), 1, "the budget is charged once");
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}
