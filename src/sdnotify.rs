//! The systemd readiness/watchdog protocol (`sd_notify(3)`) without libsystemd: one datagram of
//! newline-separated `KEY=value` assignments sent to the unix socket named by `NOTIFY_SOCKET`.
//!
//! `NOTIFY_SOCKET` is either a filesystem path (`/run/systemd/notify`) or an abstract socket name
//! written with a leading `@`. Anything else (e.g. `vsock:`) is not supported and is treated as
//! "not running under a notify-aware supervisor".
//!
//! The variables are not removed from the environment (that is unsound once threads exist);
//! commands the agent spawns should drop `NOTIFY_SOCKET` themselves (`Command::env_remove`).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Human-readable form of the target, for error messages.
    target: String,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier for this process, from `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    /// `None` when not started by a notify-aware service manager (the agent then runs as usual).
    pub fn from_env() -> Option<Notifier> {
        let var = |name: &str| std::env::var(name).ok();
        Self::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
        )
    }

    /// Same as [`Notifier::from_env`] with the three variables passed in (testable without
    /// touching the process environment).
    pub fn from_vars(
        notify_socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
    ) -> Option<Notifier> {
        let target = notify_socket?.trim();
        if target.is_empty() {
            return None;
        }
        let addr = match parse_address(target) {
            Ok(addr) => addr,
            Err(e) => {
                log::warn!("ignoring NOTIFY_SOCKET={target:?}: {e}");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot create a socket for NOTIFY_SOCKET={target:?}: {e}");
                return None;
            }
        };
        Some(Notifier {
            socket,
            addr,
            target: target.to_string(),
            watchdog: watchdog_timeout(watchdog_usec, watchdog_pid, std::process::id()),
        })
    }

    /// The watchdog timeout systemd enforces (`WatchdogSec=`), when it is enabled for this
    /// process. Ping at least every half of it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1`: start-up checks passed, the service is up.
    pub fn ready(&self) -> io::Result<()> {
        self.notify("READY=1")
    }

    /// `WATCHDOG=1`: the service is alive and making progress.
    pub fn watchdog(&self) -> io::Result<()> {
        self.notify("WATCHDOG=1")
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` systemd ≥ 253 requires for `Type=notify-reload`
    /// (older versions ignore it). Send [`Notifier::ready`] when the reload has finished.
    pub fn reloading(&self) -> io::Result<()> {
        let usec = monotonic_usec()?;
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
    }

    /// `STATUS=<text>` shown by `systemctl status`. Newlines are flattened so the text cannot
    /// smuggle in other assignments.
    pub fn status(&self, text: &str) -> io::Result<()> {
        let flat: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.notify(&format!("STATUS={flat}"))
    }

    /// Sends one raw notification datagram (newline-separated `KEY=value` lines).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = self
            .socket
            .send_to_addr(state.as_bytes(), &self.addr)
            .map_err(|e| with_context(e, &format!("notifying {}", self.target)))?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "notifying {}: short write ({sent} of {} bytes)",
                    self.target,
                    state.len()
                ),
            ));
        }
        Ok(())
    }
}

fn parse_address(target: &str) -> io::Result<SocketAddr> {
    if let Some(name) = target.strip_prefix('@') {
        // Abstract namespace: the leading '@' stands for the NUL byte.
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if target.starts_with('/') {
        SocketAddr::from_pathname(target)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "expected an absolute socket path or an abstract name starting with '@'",
        ))
    }
}

/// `WATCHDOG_USEC` applies only if `WATCHDOG_PID` is absent or names this process (so a child
/// that inherited the variables does not think the watchdog is its business).
fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid.map(str::trim).filter(|p| !p.is_empty()) {
        if pid.parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

fn monotonic_usec() -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always available on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            "reading CLOCK_MONOTONIC",
        ));
    }
    Ok(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000)
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_needs_positive_usec_and_matching_pid() {
        let me = 4242;
        assert_eq!(
            watchdog_timeout(Some("30000000"), None, me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_timeout(Some("30000000"), Some("4242"), me),
            Some(Duration::from_secs(30))
        );
        assert_eq!(watchdog_timeout(Some("30000000"), Some("1"), me), None);
        assert_eq!(watchdog_timeout(Some("30000000"), Some("junk"), me), None);
        assert_eq!(watchdog_timeout(Some("0"), None, me), None);
        assert_eq!(watchdog_timeout(Some("-5"), None, me), None);
        assert_eq!(watchdog_timeout(None, Some("4242"), me), None);
    }

    #[test]
    fn rejects_unsupported_addresses() {
        assert!(Notifier::from_vars(None, None, None).is_none());
        assert!(Notifier::from_vars(Some(""), None, None).is_none());
        assert!(Notifier::from_vars(Some("relative/path"), None, None).is_none());
        assert!(Notifier::from_vars(Some("vsock:2:1234"), None, None).is_none());
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_usec().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec().unwrap();
        assert!(b >= a + 1_000, "{a} -> {b}");
    }
}
