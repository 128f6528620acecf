//! Logging: logrus-style lines on stderr (`time="…" level=info msg="…"`), and every record at
//! warning level or above queued (at most 100, newest dropped when full) for `POST raw-logs`.
//! Registered secrets are replaced by `***` in every line as a last line of defence.

use crate::platform::payload::RawLog;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

pub const RAW_LOG_CAPACITY: usize = 100;

struct Logger {
    level: Mutex<LevelFilter>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();
static RAW: Mutex<VecDeque<RawLog>> = Mutex::new(VecDeque::new());
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Never let `s` reach a log line (API key, database password, cloud tokens).
pub fn register_secret(s: &str) {
    if s.len() >= 4 {
        let mut v = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
        if !v.iter().any(|x| x == s) {
            v.push(s.to_string());
        }
    }
}

pub fn redact(msg: &str) -> String {
    let v = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = msg.to_string();
    for s in v.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= *self.level.lock().unwrap_or_else(|p| p.into_inner())
            && (m.target().starts_with("dbtune") || m.level() <= Level::Warn)
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = SystemTime::now();
        let msg = redact(&r.args().to_string());
        let file = r.file().and_then(|f| f.rsplit('/').next()).unwrap_or("?");
        let line = r.line().unwrap_or(0);
        let text = format!(
            "time=\"{}\" level={} msg={:?} file=\" {file}:{line}\"\n",
            crate::timefmt::local_seconds(now),
            level_name(r.level()),
            msg
        );
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
        if r.level() <= Level::Warn {
            let mut q = RAW.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() < RAW_LOG_CAPACITY {
                q.push_back(RawLog {
                    message: format!("[{file}:{line}] {msg}"),
                    level: level_name(r.level()),
                    time: now,
                });
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger once; later calls only change the level.
pub fn init(debug: bool) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let logger = LOGGER.get_or_init(|| Logger {
        level: Mutex::new(level),
    });
    *logger.level.lock().unwrap_or_else(|p| p.into_inner()) = level;
    if log::set_logger(logger).is_ok() || log::max_level() != level {
        log::set_max_level(level);
    }
}

/// Takes everything queued for raw-logs.
pub fn drain_raw() -> Vec<RawLog> {
    RAW.lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect()
}

pub fn raw_len() -> usize {
    RAW.lock().unwrap_or_else(|p| p.into_inner()).len()
}
