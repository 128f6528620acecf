//! Runs the real `dbtune-agent` binary as a child process with a config file in a temp dir,
//! capturing stdout and stderr to files.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
pub const DB_ID: &str = "6ba7b811-9dad-11d1-80b4-00c04fd430c8";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Agent {
    pub child: Child,
    pub dir: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// A config selecting the self-managed adapter, pointed at `pg_url` and `server_url`.
pub fn config_yaml(pg_url: &str, server_url: &str, extra: &str) -> String {
    format!(
        "postgresql:\n  connection_url: \"{pg_url}\"\ndbtune:\n  server_url: \"{server_url}\"\n  api_key: \"{API_KEY}\"\n  database_id: \"{DB_ID}\"\n{extra}"
    )
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dbtune-agent-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The agent binary under test: this build's, or the program in `DBTUNE_TEST_AGENT` (with its
/// leading arguments, space-separated, e.g. `qemu-arm-static target/armv7-.../dbtune-agent`) so
/// the same end-to-end checks run against a cross-built binary under emulation
/// (.ci/arm-check.sh).
pub fn command() -> Command {
    match std::env::var("DBTUNE_TEST_AGENT") {
        Ok(v) if !v.trim().is_empty() => {
            let mut words = v.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words);
            cmd
        }
        _ => Command::new(env!("CARGO_BIN_EXE_dbtune-agent")),
    }
}

/// Runs the binary to completion with `yaml` as its config; returns (status, stdout, stderr).
pub fn run(
    yaml: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut a = Agent::spawn(yaml, args, env);
    let st = a.wait(timeout).unwrap_or_else(|| {
        let _ = a.child.kill();
        panic!(
            "agent did not exit within {timeout:?}; stderr:\n{}",
            a.logs()
        )
    });
    (st, a.out(), a.logs())
}

impl Agent {
    pub fn spawn(yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = temp_dir("run");
        let cfg = dir.join("dbtune.yaml");
        let yaml = if yaml.contains("state_dir") {
            yaml.to_string()
        } else {
            format!("{yaml}\nstate_dir: \"{}\"\n", dir.join("state").display())
        };
        std::fs::write(&cfg, yaml).unwrap();
        let stdout = dir.join("stdout");
        let stderr = dir.join("stderr");
        let mut cmd = command();
        cmd.arg("--config").arg(&cfg).args(args).current_dir(&dir);
        // A clean environment: no DBT_* from the developer's shell leaks into tests.
        for (k, _) in std::env::vars() {
            if k.starts_with("DBT_") || k.starts_with("PG") || k == "NOTIFY_SOCKET" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("starting dbtune-agent");
        Agent {
            child,
            dir,
            stdout,
            stderr,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn out(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        loop {
            let l = self.logs();
            if l.contains(needle) {
                return l;
            }
            if Instant::now() > end {
                panic!("log never contained {needle:?}; log:\n{l}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
