//! Logging: env_logger does the filtering and writing, in the Go agent's logrus line format on
//! stderr (`time="…" level=info msg="…" file=" x.rs:12"`). The level is `info`, or `debug` with
//! `debug: true` / `DBT_DEBUG`, for our own modules and `warn` for dependencies; `RUST_LOG`
//! directives (`dbtune_agent::collectors=trace,rustls=info`) are applied on top.
//!
//! [`Shipping`] wraps env_logger's logger: every record it writes at warning level or above is
//! also queued (at most 100, newest dropped when full) for `POST raw-logs`. Registered secrets
//! are replaced by `***` in every line and queued message as a last line of defence.

use crate::platform::payload::RawLog;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::SystemTime;

pub const RAW_LOG_CAPACITY: usize = 100;

/// Our crate's log target prefix (the library and the binary are both `dbtune_agent`).
const OWN_TARGET: &str = "dbtune_agent";

static LOGGER: OnceLock<Shipping> = OnceLock::new();
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

fn file_of<'a>(r: &'a Record<'_>) -> &'a str {
    r.file().and_then(|f| f.rsplit('/').next()).unwrap_or("?")
}

/// env_logger configured with our defaults, our line format and `rust_log` on top.
fn build(debug: bool, rust_log: Option<&str>, target: env_logger::Target) -> env_logger::Logger {
    let own = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(LevelFilter::Warn)
        .filter_module(OWN_TARGET, own)
        .format(|buf, r| {
            writeln!(
                buf,
                "time=\"{}\" level={} msg={:?} file=\" {}:{}\"",
                crate::timefmt::local_seconds(SystemTime::now()),
                level_name(r.level()),
                redact(&r.args().to_string()),
                file_of(r),
                r.line().unwrap_or(0)
            )
        })
        .target(target);
    if let Some(f) = rust_log.filter(|f| !f.trim().is_empty()) {
        b.parse_filters(f);
    }
    b.build()
}

/// The installed logger: env_logger's, plus the raw-log queue for what it lets through.
pub struct Shipping {
    inner: RwLock<env_logger::Logger>,
}

impl Shipping {
    fn inner(&self) -> std::sync::RwLockReadGuard<'_, env_logger::Logger> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Log for Shipping {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        self.inner().enabled(m)
    }

    fn log(&self, r: &Record<'_>) {
        let inner = self.inner();
        if !inner.matches(r) {
            return;
        }
        inner.log(r);
        if r.level() <= Level::Warn {
            queue(r);
        }
    }

    fn flush(&self) {
        self.inner().flush();
    }
}

fn queue(r: &Record<'_>) {
    let mut q = RAW.lock().unwrap_or_else(|p| p.into_inner());
    if q.len() < RAW_LOG_CAPACITY {
        q.push_back(RawLog {
            message: format!(
                "[{}:{}] {}",
                file_of(r),
                r.line().unwrap_or(0),
                redact(&r.args().to_string())
            ),
            level: level_name(r.level()),
            time: SystemTime::now(),
        });
    }
}

/// Installs the logger once; later calls (configuration reload) rebuild env_logger's filter
/// from `debug` and the current `RUST_LOG`.
pub fn init(debug: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let built = build(debug, rust_log.as_deref(), env_logger::Target::Stderr);
    let max = built.filter();
    let mut fresh = Some(built);
    let logger = LOGGER.get_or_init(|| Shipping {
        inner: RwLock::new(fresh.take().expect("built once")),
    });
    if let Some(built) = fresh {
        *logger.inner.write().unwrap_or_else(|p| p.into_inner()) = built;
    }
    let _ = log::set_logger(logger);
    log::set_max_level(max);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// env_logger built as in production, writing into a sink the test reads.
    fn piped(debug: bool, rust_log: Option<&str>) -> (env_logger::Logger, Sink) {
        let sink = Sink::default();
        let l = build(
            debug,
            rust_log,
            env_logger::Target::Pipe(Box::new(sink.clone())),
        );
        (l, sink)
    }

    fn emit(l: &env_logger::Logger, level: Level, target: &str, msg: &str) {
        let args = format_args!("{msg}");
        let r = Record::builder()
            .level(level)
            .target(target)
            .file(Some("src/runner/tasks.rs"))
            .line(Some(12))
            .args(args)
            .build();
        if l.matches(&r) {
            l.log(&r);
        }
    }

    #[test]
    fn go_line_format_and_redaction() {
        let (l, sink) = piped(false, None);
        register_secret("s3cr3t-key-value");
        emit(
            &l,
            Level::Warn,
            "dbtune_agent::runner",
            "bad \"key\" s3cr3t-key-value",
        );
        let out = sink.text();
        let re_time = out
            .strip_prefix("time=\"")
            .and_then(|s| s.split_once('"'))
            .map(|(t, rest)| (t.len(), rest.to_string()));
        let (tlen, rest) = re_time.expect(&out);
        // RFC 3339 local time to the second: `…Z` or `…+01:00`.
        assert!(
            tlen == "2026-01-01T12:00:00Z".len() || tlen == "2026-01-01T12:00:00+01:00".len(),
            "{out}"
        );
        assert_eq!(
            rest,
            " level=warning msg=\"bad \\\"key\\\" ***\" file=\" tasks.rs:12\"\n"
        );
    }

    #[test]
    fn levels_and_rust_log_on_top() {
        let (l, sink) = piped(false, None);
        emit(&l, Level::Info, "dbtune_agent::a", "own info");
        emit(&l, Level::Debug, "dbtune_agent::a", "own debug");
        emit(&l, Level::Info, "rustls::client", "dep info");
        emit(&l, Level::Warn, "rustls::client", "dep warn");
        let out = sink.text();
        assert!(
            out.contains("own info") && out.contains("dep warn"),
            "{out}"
        );
        assert!(
            !out.contains("own debug") && !out.contains("dep info"),
            "{out}"
        );

        // debug: true raises our modules only.
        let (l, sink) = piped(true, None);
        emit(&l, Level::Debug, "dbtune_agent::a", "own debug");
        emit(&l, Level::Debug, "ureq::pool", "dep debug");
        let out = sink.text();
        assert!(
            out.contains("own debug") && !out.contains("dep debug"),
            "{out}"
        );

        // RUST_LOG module directives override both ways.
        let (l, sink) = piped(
            true,
            Some("dbtune_agent::collectors=trace,dbtune_agent::runner=warn,ureq=debug"),
        );
        emit(
            &l,
            Level::Trace,
            "dbtune_agent::collectors::wal",
            "trace kept",
        );
        emit(
            &l,
            Level::Info,
            "dbtune_agent::runner",
            "runner info dropped",
        );
        emit(&l, Level::Debug, "dbtune_agent::apply", "apply debug kept");
        emit(&l, Level::Debug, "ureq::pool", "ureq debug kept");
        let out = sink.text();
        assert!(out.contains("trace kept"), "{out}");
        assert!(out.contains("apply debug kept"), "{out}");
        assert!(out.contains("ureq debug kept"), "{out}");
        assert!(!out.contains("runner info dropped"), "{out}");
        assert_eq!(l.filter(), LevelFilter::Trace);
    }

    #[test]
    fn shipping_queues_what_env_logger_writes_at_warn_and_above() {
        let (l, sink) = piped(false, Some("noisy=off"));
        let s = Shipping {
            inner: RwLock::new(l),
        };
        let log = |level, target: &str, msg: &str| {
            s.log(
                &Record::builder()
                    .level(level)
                    .target(target)
                    .file(Some("src/x.rs"))
                    .line(Some(3))
                    .args(format_args!("{msg}"))
                    .build(),
            )
        };
        drain_raw();
        log(Level::Info, "dbtune_agent::x", "info only written");
        log(Level::Error, "dbtune_agent::x", "error shipped");
        log(Level::Error, "noisy", "filtered out entirely");
        let q = drain_raw();
        let msgs: Vec<_> = q.iter().map(|r| r.message.as_str()).collect();
        assert!(msgs.contains(&"[x.rs:3] error shipped"), "{msgs:?}");
        assert!(!msgs.iter().any(|m| m.contains("info only")), "{msgs:?}");
        assert!(!msgs.iter().any(|m| m.contains("filtered out")), "{msgs:?}");
        assert!(sink.text().contains("info only written"));
        // Bounded: the newest are dropped once full.
        for i in 0..RAW_LOG_CAPACITY + 5 {
            log(Level::Warn, "dbtune_agent::x", &format!("w{i}"));
        }
        assert_eq!(raw_len(), RAW_LOG_CAPACITY);
        assert_eq!(drain_raw().last().unwrap().message, "[x.rs:3] w99");
    }
}
