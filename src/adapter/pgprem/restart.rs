//! Restart mechanisms: an operator's restart script, or `systemctl restart <unit>` with a
//! `sudo -n` fallback. Every command runs without a shell, with a timeout (the whole process
//! group is killed when it runs out) and with its output captured up to a bound.
//!
//! A restart is never killed halfway by the agent's own end: the command runs in its own
//! session (`setsid`, so no signal meant for the agent's process group or terminal reaches
//! it), writes its output to a file rather than a pipe (so it cannot die of SIGPIPE once the
//! agent is gone), is journalled by pid before it starts (`apply::inflight`: it waits behind a
//! gate until then), and at shutdown the agent stops waiting for it and leaves it running; the
//! next start waits for it.

use crate::error::{Error, Kind, Result};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
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
    /// None when killed by a signal, on timeout, or left running at shutdown.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// Shutdown came first: the command was left running, not killed.
    pub left_running: bool,
    /// stdout and stderr interleaved, at most the last 4 KiB.
    pub output: String,
}

/// An unlinked temporary file for a command's output: it lives as long as someone holds it.
fn output_file() -> std::io::Result<std::fs::File> {
    let dir = std::env::temp_dir();
    for n in 0..100u32 {
        let p = dir.join(format!(".dbtune-agent-cmd-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&p);
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free name for a temporary file"))
}

/// The last `OUTPUT_LIMIT` bytes written to `f`.
fn tail(f: &mut std::fs::File) -> String {
    let len = f.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(OUTPUT_LIMIT as u64)));
    let mut buf = Vec::new();
    let _ = f.take(OUTPUT_LIMIT as u64).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

/// The shell that gates a restart command until its pid is journalled; absent (a FROM-scratch
/// image), the command starts at once and is journalled a moment later.
const GATE_SHELL: &str = "/bin/sh";
/// Waits for the go-ahead line on stdin, then becomes the command itself (same pid, same
/// session) with stdin closed. The command and its arguments are passed as `$0 "$@"`, never
/// interpreted by the shell. No go-ahead (the agent died first): the command never runs.
const GATE: &str = "read -r _ || exit 125; exec \"$0\" \"$@\" </dev/null";

/// `cmd` behind the gate, and the pipe end that opens it.
fn gated(cmd: &Command) -> std::io::Result<(Command, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills the two descriptors, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let mut g = like(GATE_SHELL.as_ref(), cmd);
    g.arg("-c")
        .arg(GATE)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::from(read));
    Ok((g, write))
}

/// A command running `program` with `cmd`'s environment changes and directory.
fn like(program: &std::ffi::OsStr, cmd: &Command) -> Command {
    let mut c = Command::new(program);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}

/// Runs `cmd` (in its own session and process group, stdin closed) for at most `timeout`.
/// Its pid is reported to `apply::inflight` (the pipeline journals it) before it starts.
/// At shutdown (`apply::wait::stopping`) it stops waiting and leaves the command running.
pub fn run_bounded(cmd: Command, timeout: Duration) -> std::io::Result<CommandResult> {
    let start = Instant::now();
    let mut tries = 0;
    loop {
        let r = run_once(&cmd, timeout.saturating_sub(start.elapsed()))?;
        // ETXTBSY at the gate's exec: a script written a moment ago may still be open for
        // writing in a process forked meanwhile (seen with parallel tests); it clears within
        // milliseconds, and the command did not run.
        if r.code == Some(126) && r.output.contains("Text file busy") && tries < 20 {
            tries += 1;
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return Ok(r);
    }
}

fn run_once(cmd: &Command, timeout: Duration) -> std::io::Result<CommandResult> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut out = output_file()?;
    let (mut cmd, mut go) = if std::path::Path::new(GATE_SHELL).exists() {
        let (g, w) = gated(cmd)?;
        (g, Some(w))
    } else {
        let mut direct = like(cmd.get_program(), cmd);
        direct.args(cmd.get_args()).stdin(Stdio::null());
        (direct, None)
    };
    cmd.stdout(out.try_clone()?).stderr(out.try_clone()?);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // ETXTBSY (ungated): as in `run_bounded`.
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
    if let Some(p) = crate::apply::inflight::Process::of(child.id() as i32, &program) {
        crate::apply::inflight::spawned(&p);
    }
    if let Some(mut w) = go.take() {
        use std::io::Write;
        // A gate that cannot be opened leaves the command not run: the wait below sees it exit.
        let _ = w.write_all(b"go\n");
    }
    let start = Instant::now();
    let mut last_log = start;
    let (code, timed_out, left_running) = loop {
        if let Some(st) = child.try_wait()? {
            break (st.code(), false, false);
        }
        if crate::apply::wait::stopping() {
            // Never killed halfway: the journal names it and the next start waits for it.
            log::warn!(
                "shutdown: leaving {program} (pid {}) running to completion",
                child.id()
            );
            break (None, false, true);
        }
        crate::apply::wait::tick();
        // A restart can take minutes: say what is awaited, like every other long wait.
        if last_log.elapsed() >= crate::apply::wait::LOG_EVERY {
            last_log = Instant::now();
            log::info!(
                "still waiting for {program} to finish: {}s elapsed, deadline {}s",
                start.elapsed().as_secs(),
                timeout.as_secs()
            );
        }
        if start.elapsed() >= timeout {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) on the child's own process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            break (None, true, false);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(CommandResult {
        code,
        timed_out,
        left_running,
        output: tail(&mut out),
    })
}

/// The error for a restart command left running at shutdown.
fn left_running(what: &str) -> Error {
    Error::new(
        Kind::Interrupted,
        format!(
            "interrupted by shutdown while {what} was running (it is left running to completion)"
        ),
    )
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
        if r.left_running {
            return Err(left_running(&self.describe()));
        }
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
            Ok(r) if r.left_running => return Err(left_running(&self.describe())),
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
            Ok(r) if r.left_running => Err(left_running(&self.describe())),
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
    fn the_gate_runs_the_command_only_once_opened_and_keeps_its_pid() {
        let marker =
            std::env::temp_dir().join(format!("dbtune-restart-gate-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let p = script("gate", &format!("echo $$ > {}", marker.display()));
        // Never opened (the agent died before journalling the pid): the script never runs.
        let (mut g, w) = gated(&Command::new(&p)).unwrap();
        let mut child = g.spawn().unwrap();
        drop(w);
        assert_eq!(child.wait().unwrap().code(), Some(125));
        assert!(!marker.exists(), "the script ran without the go-ahead");
        // Opened: the script runs as the very process that was spawned (same pid).
        let (mut g, mut w) = gated(&Command::new(&p)).unwrap();
        let mut child = g.spawn().unwrap();
        use std::io::Write;
        w.write_all(b"go\n").unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        let pid: u32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, child.id());
        let _ = std::fs::remove_file(&marker);
        let _ = std::fs::remove_file(p);
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
