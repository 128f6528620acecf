//! Restart mechanisms: an operator's restart script, or `systemctl restart <unit>` with a
//! `sudo -n` fallback. Every command runs without a shell, with a timeout (the whole process
//! group is killed when it runs out) and with its output captured up to a bound.

use crate::error::{Error, Kind, Result};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How PostgreSQL gets restarted when a restart-only knob changes.
pub trait Restarter: Send + Sync {
    /// Restarts PostgreSQL (or starts it when it is down), giving up after `deadline`.
    fn restart(&self, deadline: Duration) -> Result<()>;
    /// For messages: `restart script /usr/local/bin/x`, `systemctl restart postgresql`.
    fn describe(&self) -> String;
}

/// Output kept per command (the tail is what explains a failure).
const OUTPUT_LIMIT: usize = 4096;

/// How a bounded command ended.
#[derive(Debug)]
pub struct CommandResult {
    /// None when killed by a signal or on timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// stdout and stderr interleaved, at most the last 4 KiB.
    pub output: String,
}

fn keep_tail(buf: &mut Vec<u8>, more: &[u8]) {
    buf.extend_from_slice(more);
    if buf.len() > OUTPUT_LIMIT {
        let cut = buf.len() - OUTPUT_LIMIT;
        buf.drain(..cut);
    }
}

/// Runs `cmd` (in its own process group, stdin closed) for at most `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> std::io::Result<CommandResult> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // ETXTBSY: a script written a moment ago may still be open for writing in a process
    // forked meanwhile (seen with parallel tests); it clears within milliseconds.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            r => break r?,
        }
    };
    let out = Arc::new(Mutex::new(Vec::new()));
    // Readers are never joined: a daemon started by the script may keep the pipe open.
    for mut pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let out = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                keep_tail(
                    &mut out.lock().unwrap_or_else(|e| e.into_inner()),
                    &chunk[..n],
                );
            }
        });
    }
    let start = Instant::now();
    let (code, timed_out) = loop {
        if let Some(st) = child.try_wait()? {
            break (st.code(), false);
        }
        crate::apply::wait::tick();
        if start.elapsed() >= timeout {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) on the child's own process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Give the readers a moment to drain what the process wrote last.
    std::thread::sleep(Duration::from_millis(50));
    let output = String::from_utf8_lossy(&out.lock().unwrap_or_else(|e| e.into_inner()))
        .trim()
        .to_string();
    Ok(CommandResult {
        code,
        timed_out,
        output,
    })
}

fn describe_end(r: &CommandResult, timeout: Duration) -> String {
    if r.timed_out {
        format!(
            "timed out after {:.1}s and was killed",
            timeout.as_secs_f64()
        )
    } else {
        match r.code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        }
    }
}

fn with_output(msg: String, r: &CommandResult) -> String {
    if r.output.is_empty() {
        msg
    } else {
        format!("{msg}; output: {}", r.output)
    }
}

/// The operator's restart script, executed directly (no shell, no arguments).
#[derive(Clone, Debug)]
pub struct ScriptRestarter {
    pub path: PathBuf,
    pub timeout: Duration,
}

impl Restarter for ScriptRestarter {
    fn restart(&self, deadline: Duration) -> Result<()> {
        let timeout = self.timeout.min(deadline);
        let r = run_bounded(Command::new(&self.path), timeout).map_err(|e| {
            Error::other(format!(
                "restart script {} failed (exit code -1): {e}",
                self.path.display()
            ))
        })?;
        if r.code == Some(0) {
            log::warn!(
                "Service restarted via {} (exit code 0).",
                self.path.display()
            );
            return Ok(());
        }
        let msg = with_output(
            format!(
                "restart script {} failed ({})",
                self.path.display(),
                describe_end(&r, timeout)
            ),
            &r,
        );
        log::warn!("{msg}");
        Err(Error::new(
            if r.timed_out {
                Kind::Timeout
            } else {
                Kind::Other
            },
            msg,
        ))
    }

    fn describe(&self) -> String {
        format!("restart script {}", self.path.display())
    }
}

/// `systemctl restart <unit>`, then `sudo -n systemctl restart <unit>` (never prompts).
#[derive(Clone, Debug)]
pub struct SystemctlRestarter {
    pub unit: String,
    pub timeout: Duration,
}

impl Restarter for SystemctlRestarter {
    fn restart(&self, deadline: Duration) -> Result<()> {
        let started = Instant::now();
        let budget = self.timeout.min(deadline);
        let mut cmd = Command::new("systemctl");
        cmd.args(["restart", "--", &self.unit]);
        let first = match run_bounded(cmd, budget) {
            Ok(r) if r.code == Some(0) => {
                log::warn!("Service restarted.");
                return Ok(());
            }
            Ok(r) => with_output(
                format!(
                    "systemctl restart {} failed ({})",
                    self.unit,
                    describe_end(&r, budget)
                ),
                &r,
            ),
            Err(e) => format!("systemctl restart {} could not run: {e}", self.unit),
        };
        let left = budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(Error::new(
                Kind::Timeout,
                format!("failed to restart PostgreSQL service: {first}"),
            ));
        }
        log::warn!("failed to restart PostgreSQL service: {first}. Trying with sudo...");
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", "systemctl", "restart", "--", &self.unit]);
        match run_bounded(cmd, left) {
            Ok(r) if r.code == Some(0) => {
                log::warn!("Service restarted using sudo.");
                Ok(())
            }
            Ok(r) => Err(Error::new(
                if r.timed_out {
                    Kind::Timeout
                } else {
                    Kind::Other
                },
                format!(
                    "failed to restart PostgreSQL service: {first}; with sudo: {}",
                    with_output(
                        format!(
                            "sudo -n systemctl restart {} failed ({})",
                            self.unit,
                            describe_end(&r, left)
                        ),
                        &r
                    )
                ),
            )),
            Err(e) => Err(Error::other(format!(
                "failed to restart PostgreSQL service: {first}; sudo could not run: {e}"
            ))),
        }
    }

    fn describe(&self) -> String {
        format!("systemctl restart {}", self.unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(tag: &str, body: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("dbtune-restart-{tag}-{}.sh", std::process::id()));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn script_exit_code_and_output_in_error() {
        let p = script("fail", "echo starting; echo broken >&2; exit 3");
        let r = ScriptRestarter {
            path: p.clone(),
            timeout: Duration::from_secs(10),
        };
        let e = r.restart(Duration::from_secs(10)).unwrap_err().to_string();
        assert!(e.contains("exit code 3"), "{e}");
        assert!(e.contains("broken") && e.contains("starting"), "{e}");
        let ok = script("ok", "exit 0");
        assert!(ScriptRestarter {
            path: ok.clone(),
            timeout: Duration::from_secs(10)
        }
        .restart(Duration::from_secs(10))
        .is_ok());
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(ok);
    }

    #[test]
    fn script_timeout_kills_the_process_group() {
        let marker =
            std::env::temp_dir().join(format!("dbtune-restart-marker-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let p = script(
            "slow",
            &format!("(sleep 3; touch {}) & sleep 30", marker.display()),
        );
        let r = ScriptRestarter {
            path: p.clone(),
            timeout: Duration::from_secs(30),
        };
        let t = Instant::now();
        let e = r.restart(Duration::from_millis(500)).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(e.kind, Kind::Timeout, "{e}");
        assert!(e.to_string().contains("timed out after 0.5s"), "{e}");
        std::thread::sleep(Duration::from_secs(4));
        assert!(
            !marker.exists(),
            "the script's background child survived the timeout"
        );
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn systemctl_failure_falls_back_to_sudo_n_and_reports_both() {
        let r = SystemctlRestarter {
            unit: "dbtune-test-no-such-unit.service".into(),
            timeout: Duration::from_secs(20),
        };
        assert_eq!(
            r.describe(),
            "systemctl restart dbtune-test-no-such-unit.service"
        );
        let t = Instant::now();
        let e = r.restart(Duration::from_secs(20)).unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(21));
        assert!(e.starts_with("failed to restart PostgreSQL service: systemctl restart dbtune-test-no-such-unit.service"), "{e}");
        assert!(e.contains("sudo"), "the sudo -n fallback was tried: {e}");
    }

    #[test]
    fn output_is_bounded() {
        let p = script(
            "loud",
            "i=0; while [ $i -lt 2000 ]; do echo 0123456789; i=$((i+1)); done; exit 1",
        );
        let r = run_bounded(Command::new(&p), Duration::from_secs(10)).unwrap();
        assert_eq!(r.code, Some(1));
        assert!(r.output.len() <= OUTPUT_LIMIT);
        let _ = std::fs::remove_file(p);
    }
}
