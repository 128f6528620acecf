//! moto in server mode: a real AWS-compatible peer that verifies SigV4 signatures once its first
//! `INITIAL_NO_AUTH_ACTION_COUNT` requests have been served. Found through `DBTUNE_TEST_MOTO`
//! (written by `.ci/setup-cloud.sh` to `.cache/cloud.env`) or at `.cache/venv-moto/bin/moto_server`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

/// The moto_server binary, or `None` (locally) when it is not installed. Under CI=true a missing
/// moto is a failure, not a skip.
pub fn moto_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("DBTUNE_TEST_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/venv-moto/bin/moto_server")
        });
    if candidate.is_file() {
        return Some(candidate);
    }
    let msg = format!(
        "moto_server not found at {} — run .ci/setup-cloud.sh and source .cache/cloud.env (DBTUNE_TEST_MOTO)",
        candidate.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n*** SKIPPING moto-backed test: {msg} ***\n");
    None
}

impl Moto {
    /// Starts moto on a free loopback port; the first `no_auth` requests skip authentication.
    /// The port is free when chosen but may be taken before moto binds it (tests run in
    /// parallel): moto then exits, and another free port is tried.
    pub fn start(bin: &PathBuf, no_auth: u32) -> Moto {
        let mut last = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            match Moto::try_start_on(bin, port, no_auth) {
                Ok(m) => return m,
                Err(e) => last = e,
            }
        }
        panic!("moto did not start on five free ports; last: {last}");
    }

    /// Starts moto on `port` (to bring it back where clients expect it after an outage).
    pub fn start_on(bin: &PathBuf, port: u16, no_auth: u32) -> Moto {
        Moto::try_start_on(bin, port, no_auth).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(bin: &PathBuf, port: u16, no_auth: u32) -> Result<Moto, String> {
        let log = std::env::temp_dir().join(format!("dbtune-moto-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", no_auth.to_string())
            .env("MOTO_ALLOW_NONEXISTENT_REGION", "false")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut m = Moto { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(format!("moto exited with {status}: {}", m.log_text()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Someone listening is not yet moto listening: a moto that lost the port to
                // another process exits within moments of its bind error.
                std::thread::sleep(Duration::from_millis(300));
                if let Ok(Some(status)) = m.child.try_wait() {
                    return Err(format!("moto exited with {status}: {}", m.log_text()));
                }
                return Ok(m);
            }
            if Instant::now() >= deadline {
                return Err(format!("moto did not listen within 60 s: {}", m.log_text()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
