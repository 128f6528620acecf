//! Restart mechanisms: an operator's restart script, or `systemctl restart <unit>` with a
//! `sudo -n` fallback. Every command runs with a timeout.

use super::Restarter;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` until it exits or `timeout` passes (then kills it). Returns (exit code, output).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<(i32, String)> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::other(format!("starting {what}: {e}")))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::other(format!("waiting for {what}: {e}")))?
        {
            break s;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(
                crate::error::Kind::Timeout,
                format!("{what} did not finish within {timeout:?}; killed"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.by_ref().take(16 * 1024).read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.by_ref().take(16 * 1024).read_to_string(&mut out);
    }
    Ok((status.code().unwrap_or(-1), out))
}

/// `restart_script_path`: executed directly (no shell, no arguments).
pub struct ScriptRestarter {
    pub path: PathBuf,
    pub timeout: Duration,
}

impl Restarter for ScriptRestarter {
    fn restart(&self, deadline: Duration) -> Result<()> {
        let (code, out) = run_with_timeout(Command::new(&self.path), deadline.min(self.timeout))?;
        if code != 0 {
            log::warn!(
                "restart script {} exited with code {code}; output: {}",
                self.path.display(),
                out.trim()
            );
            return Err(Error::other(format!(
                "restart script {} failed (exit code {code})",
                self.path.display()
            )));
        }
        log::warn!(
            "Service restarted via {} (exit code 0).",
            self.path.display()
        );
        Ok(())
    }
    fn describe(&self) -> String {
        format!("restart script {}", self.path.display())
    }
}

/// `systemctl restart <unit>`, then `sudo -n systemctl restart <unit>` (never prompts).
pub struct SystemctlRestarter {
    pub unit: String,
    pub timeout: Duration,
}

impl Restarter for SystemctlRestarter {
    fn restart(&self, deadline: Duration) -> Result<()> {
        let t = deadline.min(self.timeout);
        let mut c = Command::new("systemctl");
        c.args(["restart", &self.unit]);
        match run_with_timeout(c, t) {
            Ok((0, _)) => {
                log::warn!("Service restarted.");
                return Ok(());
            }
            Ok((code, out)) => log::warn!(
                "failed to restart PostgreSQL service: systemctl exited with {code}: {}. Trying with sudo -n...",
                out.trim()
            ),
            Err(e) => log::warn!("failed to restart PostgreSQL service: {e}. Trying with sudo -n..."),
        }
        let mut c = Command::new("sudo");
        c.args(["-n", "systemctl", "restart", &self.unit]);
        match run_with_timeout(c, t)? {
            (0, _) => {
                log::warn!("Service restarted using sudo.");
                Ok(())
            }
            (code, out) => Err(Error::other(format!(
                "failed to restart PostgreSQL service with sudo: exit code {code}: {}",
                out.trim()
            ))),
        }
    }
    fn describe(&self) -> String {
        format!("systemctl restart {}", self.unit)
    }
}
