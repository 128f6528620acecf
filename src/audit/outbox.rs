//! The audit outbox: `<state_dir>/audit-outbox/<record id>.json`, one file per history record,
//! written atomically before anything is uploaded, removed only after S3 accepted it. A bucket
//! outage therefore loses nothing (up to the bound) and never delays an apply: the apply only
//! writes a small file; the upload happens on the drain thread.

use crate::apply::history::Record;
use crate::apply::journal::{ensure_dir, write_atomic};
use crate::error::{Context, Result};
use std::path::{Path, PathBuf};

pub const OUTBOX_DIR: &str = "audit-outbox";
/// Records kept while the bucket is unreachable; past this the oldest are dropped (and said so
/// in the log): the local history still has them.
pub const MAX_PENDING: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(state_dir: &Path) -> Outbox {
        Outbox {
            dir: state_dir.join(OUTBOX_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `record` durably for upload.
    pub fn put(&self, record: &Record) -> Result<()> {
        ensure_dir(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| crate::error::Error::other(e.to_string()))?;
        write_atomic(&self.dir.join(format!("{}.json", record.id)), &bytes)
            .context("writing the audit outbox")?;
        let pending = self.pending();
        if pending.len() > MAX_PENDING {
            let drop_n = pending.len() - MAX_PENDING;
            for p in &pending[..drop_n] {
                let _ = std::fs::remove_file(p);
            }
            log::error!(
                "audit outbox {} is full ({MAX_PENDING} records waiting for S3); dropped the {drop_n} oldest (they remain in the local apply history)",
                self.dir.display()
            );
        }
        Ok(())
    }

    /// Waiting files, oldest first (names are time-ordered record ids).
    pub fn pending(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "json")
                            && !p
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}
