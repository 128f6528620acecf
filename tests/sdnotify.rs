//! sd_notify against a real unix datagram socket standing in for systemd's notification socket.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use dbtune_agent::sdnotify::Notifier;

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
