//! The local apply history: one JSON record per apply attempt that reached a final outcome
//! (applied, unchanged, refused, rolled back, rollback failed), newest last, in
//! `<state_dir>/apply-history.jsonl`. Bounded: when the current file holds half the limit it is
//! renamed to `apply-history.1.jsonl` (replacing the older half), so between limit/2 and limit
//! records are kept. Each record is appended with one `write` + fsync; a torn last line (crash
//! mid-write) is skipped by the reader. Records carry names and values of PostgreSQL settings
//! only, never credentials. The same records are what the S3 audit trail uploads (one format):
//! [`set_sink`] hands every new record to it.

use super::journal::{Entry, KnobChange};
use super::{Action, KnobPlan, Prepared};
use crate::model::{KnobApplication, Recommendation};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

pub const HISTORY_FILE: &str = "apply-history.jsonl";
pub const HISTORY_OLD_FILE: &str = "apply-history.1.jsonl";
pub const DEFAULT_LIMIT: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOutcome {
    Applied,
    Unchanged,
    Refused,
    RolledBack,
    RollbackFailed,
}

impl HistoryOutcome {
    pub fn label(self) -> &'static str {
        match self {
            HistoryOutcome::Applied => "applied",
            HistoryOutcome::Unchanged => "unchanged",
            HistoryOutcome::Refused => "refused",
            HistoryOutcome::RolledBack => "rolled back",
            HistoryOutcome::RollbackFailed => "rollback failed",
        }
    }
}

/// One knob of an attempt: the value before (as `pg_settings.setting`, base units) and the
/// value proposed / written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnobRecord {
    pub name: String,
    pub before: Option<String>,
    pub after: String,
    pub unit: Option<String>,
    /// `reload`, `restart`, `unchanged` or `refused`.
    pub action: String,
    /// Why this knob was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One apply attempt. `id` is time-ordered and unique (it is also the audit object's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// A fingerprint of the recommendation (the platform sends no id): the same knobs and
    /// values give the same id.
    pub recommendation_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: HistoryOutcome,
    pub knob_application: String,
    pub restarted: bool,
    pub knobs: Vec<KnobRecord>,
    /// Refusal reasons, or why the apply was rolled back (and why the rollback failed).
    pub reasons: Vec<String>,
    pub agent_version: String,
    pub host: String,
}

/// `rec-` and 16 hex digits of SHA-256 over the knob application and the `name=value` pairs.
pub fn recommendation_id(rec: &Recommendation) -> String {
    let mut pairs: Vec<String> = rec
        .knobs_overrides
        .iter()
        .map(|n| {
            let v = rec
                .config
                .iter()
                .find(|k| &k.name == n)
                .map(|k| k.setting.to_string())
                .unwrap_or_default();
            format!("{}={v}", n.to_ascii_lowercase())
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    let text = format!("{:?}|{}", rec.knob_application, pairs.join("\n"));
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("rec-{}", &crate::gojson::hex(d.as_ref())[..16])
}

fn application(k: KnobApplication) -> String {
    format!("{k:?}").to_ascii_lowercase()
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `len` bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// `20261201T220301.123456789Z-<host>-<pid hex>-<seq>`: sorts by time; unique per host and
/// process. The host is reduced to characters that are safe in an S3 key and a file name.
fn new_id(now: SystemTime) -> String {
    let host: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let t = crate::timefmt::utc_nanos(now);
    let (date, rest) = t.split_once('T').unwrap_or((&t, ""));
    let (hms, frac) = rest
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((rest.trim_end_matches('Z'), ""));
    format!(
        "{}T{}.{:0<9}Z-{host}-{:x}-{:04}",
        date.replace('-', ""),
        hms.replace(':', ""),
        frac,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst) % 10_000
    )
}

fn knob_from_plan(k: &KnobPlan) -> KnobRecord {
    let (action, reason) = match &k.action {
        Action::Unchanged => ("unchanged", None),
        Action::Reload => ("reload", None),
        Action::Restart => ("restart", None),
        Action::Refused(why) => ("refused", Some(why.clone())),
    };
    KnobRecord {
        name: k.name.clone(),
        before: k.current.clone(),
        after: k.proposed.clone(),
        unit: k.unit.clone(),
        action: action.into(),
        reason,
    }
}

fn knob_from_change(k: &KnobChange, restart: bool) -> KnobRecord {
    KnobRecord {
        name: k.name.clone(),
        before: Some(k.previous_setting.clone()),
        after: k.observed.clone().unwrap_or_else(|| k.new_value.clone()),
        unit: k.unit.clone(),
        action: if restart && k.context == "postmaster" {
            "restart"
        } else {
            "reload"
        }
        .into(),
        reason: None,
    }
}

fn base(
    outcome: HistoryOutcome,
    recommendation_id: String,
    started_at: String,
    knob_application: String,
) -> Record {
    let now = SystemTime::now();
    Record {
        id: new_id(now),
        recommendation_id,
        started_at,
        finished_at: crate::timefmt::utc_seconds(now),
        outcome,
        knob_application,
        restarted: false,
        knobs: Vec::new(),
        reasons: Vec::new(),
        agent_version: crate::version::VERSION.to_string(),
        host: hostname(),
    }
}

/// When an attempt started (`utc_seconds`), for the refusal paths that have no journal entry.
pub fn started() -> String {
    crate::timefmt::utc_seconds(SystemTime::now())
}

impl Record {
    /// Nothing was changed: `reasons` say why. `prepared` gives the per-knob view when the
    /// recommendation got that far; otherwise the knobs are listed as received.
    pub fn refused(
        rec: &Recommendation,
        started_at: &str,
        prepared: Option<&Prepared>,
        reasons: Vec<String>,
    ) -> Record {
        let mut r = base(
            HistoryOutcome::Refused,
            recommendation_id(rec),
            started_at.to_string(),
            application(rec.knob_application),
        );
        r.knobs = match prepared {
            Some(p) => p.knobs.iter().map(knob_from_plan).collect(),
            None => rec
                .knobs_overrides
                .iter()
                .map(|n| KnobRecord {
                    name: n.clone(),
                    before: None,
                    after: rec
                        .config
                        .iter()
                        .find(|k| &k.name == n)
                        .map(|k| match &k.setting {
                            serde_json::Value::String(s) => s.clone(),
                            v => v.to_string(),
                        })
                        .unwrap_or_default(),
                    unit: None,
                    action: "refused".into(),
                    reason: None,
                })
                .collect(),
        };
        r.reasons = reasons;
        r
    }

    /// Every knob already had its value.
    pub fn unchanged(rec: &Recommendation, started_at: &str, prepared: &Prepared) -> Record {
        let mut r = base(
            HistoryOutcome::Unchanged,
            recommendation_id(rec),
            started_at.to_string(),
            application(rec.knob_application),
        );
        r.knobs = prepared.knobs.iter().map(knob_from_plan).collect();
        r
    }

    /// The journal entry reached its final phase: verified, rolled back or rollback failed.
    pub fn from_entry(entry: &Entry, outcome: HistoryOutcome, reasons: Vec<String>) -> Record {
        let mut r = base(
            outcome,
            entry.recommendation_id.clone(),
            entry.started_at.clone(),
            entry.knob_application.clone(),
        );
        r.restarted = entry.restart_needed && outcome == HistoryOutcome::Applied;
        r.knobs = entry
            .knobs
            .iter()
            .map(|k| {
                let mut kr = knob_from_change(k, entry.restart_needed);
                if outcome != HistoryOutcome::Applied {
                    // Rolled back: `after` is what was tried, not what is in effect.
                    kr.after = k.new_value.clone();
                }
                kr
            })
            .collect();
        r.reasons = reasons;
        r
    }
}

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_LIMIT);
type Sink = Box<dyn Fn(&Record) + Send + Sync>;
static SINK: RwLock<Option<Sink>> = RwLock::new(None);
static WRITE: Mutex<()> = Mutex::new(());

/// How many records are kept (at least 2; from `apply.history_limit`).
pub fn set_limit(n: usize) {
    LIMIT.store(n.max(2), Ordering::SeqCst);
}

/// Every record written from now on is also handed to `sink` (the S3 audit outbox).
pub fn set_sink(sink: Sink) {
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
}

pub fn history_path(state_dir: &Path) -> PathBuf {
    state_dir.join(HISTORY_FILE)
}

/// Records the final outcome of an attempt: appends it to the history (rotating when due) and
/// hands it to the audit sink. Repeats are not recorded: the runner re-reads the same
/// recommendation every few seconds, so an `unchanged` right after this recommendation's
/// `applied`/`unchanged`, or a refusal with the same reasons as the newest record, is skipped.
/// Errors are logged, never returned: bookkeeping must not change an apply's outcome.
pub fn finish(state_dir: &Path, record: &Record) {
    // Reasons quote errors and restart-script output: registered secrets never reach the file.
    let mut redacted = record.clone();
    for r in redacted.reasons.iter_mut() {
        *r = crate::logging::redact(r);
    }
    for k in redacted.knobs.iter_mut() {
        if let Some(r) = k.reason.as_mut() {
            *r = crate::logging::redact(r);
        }
    }
    let record = &redacted;
    let _g = WRITE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(last) = newest(state_dir) {
        let same_rec = last.recommendation_id == record.recommendation_id;
        let repeat = match record.outcome {
            HistoryOutcome::Unchanged => {
                same_rec
                    && matches!(
                        last.outcome,
                        HistoryOutcome::Applied | HistoryOutcome::Unchanged
                    )
            }
            // Start-up recovery retries a failed rollback before every apply.
            HistoryOutcome::Refused | HistoryOutcome::RollbackFailed => {
                same_rec && last.outcome == record.outcome && last.reasons == record.reasons
            }
            _ => false,
        };
        if repeat {
            log::debug!(
                "apply history: {} {} is a repeat of {}; not recorded again",
                record.recommendation_id,
                record.outcome.label(),
                last.id
            );
            return;
        }
    }
    if let Err(e) = append(state_dir, record) {
        log::error!(
            "apply history: recording {} ({}) in {}: {e}",
            record.id,
            record.outcome.label(),
            history_path(state_dir).display()
        );
    }
    if let Some(sink) = SINK.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        sink(record);
    }
}

fn append(state_dir: &Path, record: &Record) -> std::io::Result<()> {
    super::journal::ensure_dir(state_dir).map_err(std::io::Error::other)?;
    let path = history_path(state_dir);
    let segment = (LIMIT.load(Ordering::SeqCst) / 2).max(1);
    let (lines, torn) = match fs::read(&path) {
        Ok(b) => (
            b.iter().filter(|c| **c == b'\n').count(),
            !b.is_empty() && !b.ends_with(b"\n"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, false),
        Err(e) => return Err(e),
    };
    let mut torn = torn;
    if lines >= segment {
        // rename(2) is atomic: readers see the old or the new pair, never a half-rotated one.
        fs::rename(&path, state_dir.join(HISTORY_OLD_FILE))?;
        torn = false;
    }
    let mut line = Vec::new();
    if torn {
        line.push(b'\n');
    }
    serde_json::to_writer(&mut line, record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&line)?;
    f.sync_all()?;
    if lines >= segment {
        fs::File::open(state_dir).and_then(|d| d.sync_all())?;
    }
    Ok(())
}

fn parse_file(path: &Path, out: &mut Vec<Record>) -> std::io::Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // A torn line (crash mid-append) is not JSON: skipped.
    out.extend(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<Record>(l).ok()),
    );
    Ok(())
}

/// Every kept record, newest first.
pub fn read(state_dir: &Path) -> std::io::Result<Vec<Record>> {
    let mut v = Vec::new();
    parse_file(&state_dir.join(HISTORY_OLD_FILE), &mut v)?;
    parse_file(&history_path(state_dir), &mut v)?;
    v.reverse();
    Ok(v)
}

/// The newest record, if any.
pub fn newest(state_dir: &Path) -> Option<Record> {
    read(state_dir).ok()?.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &str) -> Recommendation {
        Recommendation {
            config: vec![crate::model::RecommendedKnob {
                name: "work_mem".into(),
                setting: serde_json::Value::String(v.into()),
                unit: None,
                vartype: "integer".into(),
                context: "user".into(),
            }],
            knobs_overrides: vec!["work_mem".into()],
            knob_application: KnobApplication::Reload,
        }
    }

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let a = new_id(SystemTime::now());
        let b = new_id(SystemTime::now());
        assert!(a < b, "{a} {b}");
        assert_eq!(&a[8..9], "T");
        assert_eq!(
            recommendation_id(&rec("8MB")),
            recommendation_id(&rec("8MB"))
        );
        assert_ne!(
            recommendation_id(&rec("8MB")),
            recommendation_id(&rec("9MB"))
        );
    }

    #[test]
    fn bounded_rotation_and_repeat_suppression() {
        let d = std::env::temp_dir().join(format!("dbtune-hist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        set_limit(4);
        for i in 0..7 {
            let r = Record::refused(
                &rec(&format!("{i}MB")),
                &started(),
                None,
                vec![format!("r{i}")],
            );
            finish(&d, &r);
        }
        let all = read(&d).unwrap();
        // Segments of 2: the current file holds 1, the rotated one 2.
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[0].knobs[0].after, "6MB");
        assert_eq!(all[2].knobs[0].after, "4MB");
        // The same refusal again is not recorded twice.
        finish(
            &d,
            &Record::refused(&rec("6MB"), &started(), None, vec!["r6".into()]),
        );
        assert_eq!(read(&d).unwrap().len(), 3);
        // A torn line is skipped and the next append still parses.
        let mut f = OpenOptions::new()
            .append(true)
            .open(history_path(&d))
            .unwrap();
        f.write_all(b"{\"id\":\"torn").unwrap();
        finish(&d, &Record::refused(&rec("7MB"), &started(), None, vec![]));
        let all = read(&d).unwrap();
        assert_eq!(all[0].knobs[0].after, "7MB");
        // A registered secret quoted in a reason never reaches the file.
        crate::logging::register_secret("hist-secret-4711");
        finish(
            &d,
            &Record::refused(
                &rec("8MB"),
                &started(),
                None,
                vec!["script said hist-secret-4711".into()],
            ),
        );
        let text = std::fs::read_to_string(history_path(&d)).unwrap();
        assert!(
            text.contains("script said") && !text.contains("hist-secret-4711"),
            "{text}"
        );
        set_limit(DEFAULT_LIMIT);
        let _ = fs::remove_dir_all(&d);
    }
}
