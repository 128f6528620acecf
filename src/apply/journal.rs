//! The crash-safe apply journal and the restart budget, both in the state directory.
//! Every write is durable before we act on it: temp file, fsync, rename, fsync of the
//! directory. One journal entry describes the apply in progress (or the last one): its phase
//! (intent → applied → verified, or rolled_back), the previous values and what the target
//! needs to undo it (for ALTER SYSTEM: the snapshot of `postgresql.auto.conf`).

use super::target::Previous;
use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const JOURNAL_FILE: &str = "apply-journal.json";
pub const BUDGET_FILE: &str = "restarts.json";

/// Writes `bytes` to `path` so that after a crash the file holds either the old or the new
/// contents, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::other(format!("{} has no parent directory", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

/// Creates the state directory (mode 0700) if needed.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// An exclusive lock on the state directory for the duration of an apply or a recovery, so
/// two agent processes sharing it never interleave journal entries. Released on drop.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<StateLock> {
        ensure_dir(state_dir)?;
        let path = state_dir.join("apply.lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(Error::other(format!(
                "another dbtune-agent process is applying a configuration (lock {} is held)",
                path.display()
            )));
        }
        Ok(StateLock { _file: file })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// About to run ALTER SYSTEM; nothing or part of it may have happened.
    Intent,
    /// Every ALTER SYSTEM ran; the reload or restart may or may not have happened.
    Applied,
    /// The new values were seen in pg_settings.
    Verified,
    /// The previous values were restored and seen in pg_settings.
    RolledBack,
    /// A rollback could not be verified; recovery tries again.
    RollbackFailed,
}

impl Phase {
    /// Whether start-up recovery has work to do.
    pub fn unfinished(self) -> bool {
        matches!(self, Phase::Intent | Phase::Applied | Phase::RollbackFailed)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnobChange {
    pub name: String,
    pub vartype: String,
    pub unit: Option<String>,
    pub context: String,
    /// `pg_settings.setting` before the apply.
    pub previous_setting: String,
    /// What the target held before the apply (`postgresql.auto.conf` entry, DCS key, group
    /// value): what a rollback writes back.
    #[serde(alias = "previous_auto_conf")]
    pub previous: Previous,
    /// `pg_settings.pending_restart` before the apply (someone else's change waiting for a
    /// restart is not ours to resolve in a rollback).
    #[serde(default)]
    pub previous_pending_restart: bool,
    /// The value written to the target.
    pub new_value: String,
    /// `pg_settings.setting` after a verified apply.
    pub observed: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub phase: Phase,
    pub started_at: String,
    pub updated_at: String,
    pub restart_needed: bool,
    pub knobs: Vec<KnobChange>,
    /// Where postgresql.auto.conf lives, if known, and its text before the apply (for a
    /// rollback while PostgreSQL is down).
    pub auto_conf_path: Option<String>,
    pub auto_conf_before: Option<String>,
    /// What went wrong, for rolled-back entries.
    pub note: Option<String>,
    /// The apply itself failed (not interrupted): the same recommendation is not retried.
    #[serde(default)]
    pub failed: bool,
    /// For the apply history: which recommendation (`history::recommendation_id`) and its
    /// knob application.
    #[serde(default)]
    pub recommendation_id: String,
    #[serde(default)]
    pub knob_application: String,
    /// Provider-specific state a rollback needs (target's `Snapshot::state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_state: Option<serde_json::Value>,
    /// When the last restart of this apply started (unix seconds), so recovery knows one
    /// may still be in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_started: Option<i64>,
    /// The process running that restart (a restart script, `systemctl`), journalled as soon
    /// as it is spawned: recovery waits for it while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarter: Option<super::inflight::Process>,
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(state_dir: &Path) -> Journal {
        Journal {
            path: state_dir.join(JOURNAL_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Option<Entry>> {
        match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::other(format!(
                    "reading the apply journal {}: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::from(e)
                .context(format!("reading the apply journal {}", self.path.display()))),
        }
    }

    /// Durably records `entry` with `phase`.
    pub fn record(&self, entry: &mut Entry, phase: Phase) -> Result<()> {
        entry.phase = phase;
        entry.updated_at = crate::timefmt::utc_seconds(std::time::SystemTime::now());
        if let Some(dir) = self.path.parent() {
            ensure_dir(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| Error::other(e.to_string()))?;
        write_atomic(&self.path, &bytes).context("writing the apply journal")
    }
}

/// Restarts done by the agent in the last 24 hours, persisted so a restarted agent still
/// honours the budget.
pub struct Budget {
    path: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct BudgetFile {
    restarts: Vec<i64>,
}

pub const WINDOW_SECS: i64 = 24 * 3600;

impl Budget {
    pub fn new(state_dir: &Path) -> Budget {
        Budget {
            path: state_dir.join(BUDGET_FILE),
        }
    }

    fn read(&self) -> Result<BudgetFile> {
        match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::other(format!(
                    "reading the restart budget {}: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BudgetFile::default()),
            Err(e) => Err(Error::from(e).context(format!(
                "reading the restart budget {}",
                self.path.display()
            ))),
        }
    }

    /// Restart times (unix seconds) within 24 h of `now`.
    pub fn recent(&self, now: i64) -> Result<Vec<i64>> {
        Ok(self
            .read()?
            .restarts
            .into_iter()
            .filter(|t| now - t < WINDOW_SECS && *t <= now + 60)
            .collect())
    }

    /// Records a restart at `now` (before running it: a crash mid-restart still counts).
    pub fn record(&self, now: i64) -> Result<()> {
        let mut f = BudgetFile {
            restarts: self.recent(now)?,
        };
        f.restarts.push(now);
        self.write(&f)
    }

    fn write(&self, f: &BudgetFile) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            ensure_dir(dir)?;
        }
        let bytes = serde_json::to_vec(f).map_err(|e| Error::other(e.to_string()))?;
        write_atomic(&self.path, &bytes).context("writing the restart budget")
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dbtune-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn journal_round_trip_and_atomic_overwrite() {
        let d = tmpdir("rt");
        let j = Journal::new(&d);
        assert!(j.load().unwrap().is_none());
        let mut e = Entry {
            id: "1".into(),
            phase: Phase::Intent,
            started_at: "t".into(),
            updated_at: "t".into(),
            restart_needed: false,
            recommendation_id: String::new(),
            knob_application: String::new(),
            knobs: vec![KnobChange {
                name: "work_mem".into(),
                vartype: "integer".into(),
                unit: Some("kB".into()),
                context: "user".into(),
                previous_setting: "4096".into(),
                previous: Previous::Absent,
                previous_pending_restart: false,
                new_value: "8192".into(),
                observed: None,
            }],
            auto_conf_path: None,
            auto_conf_before: Some("# x\n".into()),
            note: None,
            failed: false,
            target_state: None,
            restart_started: None,
            restarter: None,
        };
        j.record(&mut e, Phase::Intent).unwrap();
        j.record(&mut e, Phase::Applied).unwrap();
        let back = j.load().unwrap().unwrap();
        assert_eq!(back.phase, Phase::Applied);
        assert_eq!(back.knobs, e.knobs);
        assert!(back.phase.unfinished());
        assert!(!d.join(format!(".{JOURNAL_FILE}.tmp")).exists());
        let mode = fs::metadata(j.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn state_lock_is_exclusive() {
        let d = tmpdir("lock");
        let l = StateLock::acquire(&d).unwrap();
        let e = StateLock::acquire(&d).err().unwrap();
        assert!(
            e.to_string().contains("another dbtune-agent process"),
            "{e}"
        );
        drop(l);
        assert!(StateLock::acquire(&d).is_ok());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn budget_forgets_after_a_day() {
        let d = tmpdir("budget");
        let b = Budget::new(&d);
        b.record(1000).unwrap();
        b.record(2000).unwrap();
        assert_eq!(b.recent(3000).unwrap(), vec![1000, 2000]);
        assert_eq!(b.recent(1000 + WINDOW_SECS).unwrap(), vec![2000]);
        fs::remove_dir_all(&d).unwrap();
    }
}
