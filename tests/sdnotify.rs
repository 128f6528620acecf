//! sd_notify against a real unix datagram socket standing in for systemd's notification socket:
//! the `Notifier` API, then the real agent binary (against a real PostgreSQL and the platform
//! stand-in) sending READY, WATCHDOG, RELOADING and STOPPING.
mod support;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dbtune_agent::sdnotify::Notifier;
use support::agent::{self, Agent};
use support::pgcluster::PgCluster;
use support::platform::PlatformStandIn;

/// A listening socket in a fresh temp directory, removed on drop.
struct Listener {
    dir: PathBuf,
    path: PathBuf,
    socket: UnixDatagram,
}

impl Listener {
    fn new(tag: &str) -> Listener {
        let dir = std::env::temp_dir().join(format!(
            "dbtune-sdnotify-{tag}-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Listener { dir, path, socket }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification datagram");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[test]
fn ready_watchdog_status_stopping_reach_a_path_socket() {
    let l = Listener::new("path");
    let n = Notifier::from_vars(Some(l.path.to_str().unwrap()), None, None)
        .expect("a notifier for an absolute path");
    assert_eq!(n.watchdog_interval(), None);

    n.ready().unwrap();
    assert_eq!(recv(&l.socket), "READY=1");
    n.watchdog().unwrap();
    assert_eq!(recv(&l.socket), "WATCHDOG=1");
    n.status("collecting\nREADY=1").unwrap();
    assert_eq!(recv(&l.socket), "STATUS=collecting READY=1");
    n.stopping().unwrap();
    assert_eq!(recv(&l.socket), "STOPPING=1");
}

#[test]
fn reloading_carries_a_monotonic_timestamp() {
    let l = Listener::new("reload");
    let n = Notifier::from_vars(Some(l.path.to_str().unwrap()), None, None).unwrap();
    n.reloading().unwrap();
    let msg = recv(&l.socket);
    let mut lines = msg.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"));
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("MONOTONIC_USEC line in {msg:?}"));
    assert!(usec > 0);
    assert_eq!(lines.next(), None);
}

#[test]
fn ready_and_watchdog_reach_an_abstract_socket() {
    let name = format!("dbtune-sdnotify-test-{}-{}", std::process::id(), unique());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();

    let n = Notifier::from_vars(Some(&format!("@{name}")), Some("20000000"), None).unwrap();
    assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(20)));
    n.ready().unwrap();
    assert_eq!(recv(&socket), "READY=1");
    n.watchdog().unwrap();
    assert_eq!(recv(&socket), "WATCHDOG=1");
}

#[test]
fn from_env_reads_the_three_variables() {
    let l = Listener::new("env");
    // Only this test touches these variables; every other test uses `from_vars`.
    std::env::set_var("NOTIFY_SOCKET", &l.path);
    std::env::set_var("WATCHDOG_USEC", "15000000");
    std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
    let n = Notifier::from_env().expect("a notifier from NOTIFY_SOCKET");
    assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
    n.ready().unwrap();
    assert_eq!(recv(&l.socket), "READY=1");

    // Another process's watchdog is not ours.
    std::env::set_var("WATCHDOG_PID", "1");
    let n = Notifier::from_env().unwrap();
    assert_eq!(n.watchdog_interval(), None);

    std::env::remove_var("NOTIFY_SOCKET");
    std::env::remove_var("WATCHDOG_USEC");
    std::env::remove_var("WATCHDOG_PID");
    assert!(Notifier::from_env().is_none());
}

#[test]
fn sending_without_a_listener_is_an_error_naming_the_socket() {
    let l = Listener::new("gone");
    let path = l.dir.join("nobody.sock");
    let n = Notifier::from_vars(Some(path.to_str().unwrap()), None, None).unwrap();
    let err = n.ready().unwrap_err();
    assert!(
        err.to_string().contains("nobody.sock"),
        "error should name the socket: {err}"
    );
}

/// Waits for a datagram satisfying `pred`, returning every message seen up to and including it.
fn recv_until(
    socket: &UnixDatagram,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Vec<String> {
    let end = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {what} within {timeout:?}; got {seen:?}"
        );
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let hit = pred(&msg);
                seen.push(msg);
                if hit {
                    return seen;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("receiving notifications: {e}"),
        }
    }
}

#[test]
fn the_agent_notifies_ready_after_its_checks_then_watchdog_reload_and_stopping() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let l = Listener::new("agent");
    let sock = l.path.to_str().unwrap().to_string();
    // A 2 s watchdog: the agent must ping at least every second.
    let mut a = Agent::spawn(
        &agent::config_yaml(&pg.url(), &platform.url, ""),
        &["--local"],
        &[
            ("NOTIFY_SOCKET", sock.as_str()),
            ("WATCHDOG_USEC", "2000000"),
            // Not inherited from `from_env_reads_the_three_variables` running in parallel.
            ("WATCHDOG_PID", ""),
        ],
    );

    let before_ready = recv_until(&l.socket, "READY=1", Duration::from_secs(60), |m| {
        m == "READY=1"
    });
    assert_eq!(before_ready, vec!["READY=1"], "nothing but READY=1 first");
    // READY comes after the start-up checks, which include a platform heartbeat.
    assert!(
        platform
            .requests()
            .iter()
            .any(|r| r.segment() == "heartbeat"),
        "READY=1 before the start-up heartbeat check; log:\n{}",
        a.logs()
    );

    // Two watchdog pings within 3 s (interval 1 s).
    let t = Instant::now();
    recv_until(&l.socket, "a WATCHDOG=1", Duration::from_secs(3), |m| {
        m == "WATCHDOG=1"
    });
    recv_until(
        &l.socket,
        "a second WATCHDOG=1",
        Duration::from_secs(3),
        |m| m == "WATCHDOG=1",
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "pings too slow: {:?}",
        t.elapsed()
    );

    // SIGHUP: RELOADING=1 (with its timestamp), then READY=1 once the file is re-read.
    a.signal(libc::SIGHUP);
    let msgs = recv_until(&l.socket, "RELOADING=1", Duration::from_secs(10), |m| {
        m.starts_with("RELOADING=1\n")
    });
    assert!(msgs.last().unwrap().contains("MONOTONIC_USEC="), "{msgs:?}");
    recv_until(
        &l.socket,
        "READY=1 after reload",
        Duration::from_secs(10),
        |m| m == "READY=1",
    );

    a.signal(libc::SIGTERM);
    recv_until(&l.socket, "STOPPING=1", Duration::from_secs(10), |m| {
        m == "STOPPING=1"
    });
    let st = a
        .wait(Duration::from_secs(10))
        .expect("agent exits after SIGTERM");
    assert!(st.success(), "exit status {st:?}\n{}", a.logs());
}

#[test]
fn the_agent_never_notifies_ready_when_its_startup_checks_fail() {
    let platform = PlatformStandIn::start();
    let l = Listener::new("agent-fail");
    let sock = l.path.to_str().unwrap().to_string();
    // PostgreSQL answers but has no such database: the PostgreSQL check fails for good (an
    // unreachable server is waited for instead, see below).
    let pg = PgCluster::start();
    let url = pg.url_db("no_such_database");
    let mut a = Agent::spawn(
        &agent::config_yaml(&url, &platform.url, ""),
        &["--local"],
        &[
            ("NOTIFY_SOCKET", sock.as_str()),
            ("WATCHDOG_USEC", "2000000"),
            // Not inherited from `from_env_reads_the_three_variables` running in parallel.
            ("WATCHDOG_PID", ""),
        ],
    );
    let st = a
        .wait(Duration::from_secs(60))
        .expect("agent exits when a start-up check fails");
    assert_eq!(st.code(), Some(1), "{}", a.logs());
    l.socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while let Ok(n) = l.socket.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(
        !got.iter().any(|m| m == "READY=1" || m == "WATCHDOG=1"),
        "sent {got:?}"
    );
}

#[test]
fn the_agent_notifies_ready_while_it_waits_for_an_unreachable_postgresql() {
    let platform = PlatformStandIn::start();
    let l = Listener::new("agent-wait");
    let sock = l.path.to_str().unwrap().to_string();
    // Nothing listens on this port: the daemon waits for PostgreSQL, and must tell systemd it
    // started (TimeoutStartSec would kill it otherwise) and keep the watchdog fed.
    let port = support::pgcluster::free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let mut a = Agent::spawn(
        &agent::config_yaml(&url, &platform.url, ""),
        &["--local"],
        &[
            ("NOTIFY_SOCKET", sock.as_str()),
            ("WATCHDOG_USEC", "2000000"),
            ("WATCHDOG_PID", ""),
        ],
    );
    recv_until(&l.socket, "READY=1", Duration::from_secs(30), |m| {
        m == "READY=1"
    });
    recv_until(&l.socket, "WATCHDOG=1", Duration::from_secs(5), |m| {
        m == "WATCHDOG=1"
    });
    assert!(a.wait(Duration::from_millis(10)).is_none(), "{}", a.logs());
    a.signal(libc::SIGTERM);
    let st = a
        .wait(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(st.success(), "{st:?}");
}
