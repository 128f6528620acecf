//! The S3 audit trail: every apply-history record (one format, `apply::history::Record`) is
//! also uploaded as one JSON object `<prefix>/<record id>.json` (ids are time-ordered and
//! unique). Records go through the on-disk [`outbox::Outbox`] first; a background thread
//! drains it, backing off 2 s → 1 min while the bucket is unreachable, so an outage loses
//! nothing and never delays an apply. Also the `--output s3://bucket/key` snapshot upload.

pub mod outbox;
pub mod s3;

use crate::config::audit::AuditConfig;
use crossbeam_channel::{bounded, Receiver, Sender};
use outbox::Outbox;
use s3::S3;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Audit {
    s3: S3,
    prefix: String,
    outbox: Outbox,
    wake: Sender<()>,
}

fn object_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

impl Audit {
    /// Starts the trail when `audit.s3_url` is set: new history records go to the outbox and a
    /// drain thread uploads them (also those left from an earlier run).
    pub fn start(cfg: &AuditConfig, state_dir: &Path) -> Result<Option<Arc<Audit>>, String> {
        let Some(url) = &cfg.s3_url else {
            return Ok(None);
        };
        let s3 = S3::new(&url.bucket, &cfg.region, cfg.endpoint.as_deref())
            .map_err(|e| format!("audit.s3_url: {e}"))?;
        let (wake, rx) = bounded::<()>(1);
        let audit = Arc::new(Audit {
            s3,
            prefix: url.key.clone(),
            outbox: Outbox::new(state_dir),
            wake,
        });
        let sink = audit.clone();
        crate::apply::history::set_sink(Box::new(move |r| {
            if let Err(e) = sink.outbox.put(r) {
                log::error!("audit: queueing record {} for S3: {e}", r.id);
            }
            let _ = sink.wake.try_send(());
        }));
        let drain = audit.clone();
        std::thread::Builder::new()
            .name("audit-drain".into())
            .spawn(move || drain.run(rx))
            .map_err(|e| format!("starting the audit drain thread: {e}"))?;
        log::info!(
            "audit trail: apply records go to s3://{}/{} (outbox {})",
            url.bucket,
            url.key,
            audit.outbox.dir().display()
        );
        Ok(Some(audit))
    }

    fn run(&self, wake: Receiver<()>) {
        let mut failures: u32 = 0;
        loop {
            let wait = if failures == 0 {
                Duration::from_secs(60)
            } else {
                Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
            };
            match self.drain() {
                Ok(0) => {}
                Ok(n) => {
                    if failures > 0 {
                        log::info!("audit: S3 reachable again; uploaded {n} waiting record(s)");
                    } else {
                        log::debug!("audit: uploaded {n} record(s)");
                    }
                    failures = 0;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    let waiting = self.outbox.pending().len();
                    if failures == 1 {
                        log::error!("audit: uploading to S3 failed ({waiting} record(s) kept in the outbox, retrying with backoff): {e}");
                    } else {
                        log::debug!("audit: retry {failures} failed: {e}");
                    }
                    // Waits the backoff even when woken: a new record does not hammer a down bucket.
                    std::thread::sleep(wait);
                    continue;
                }
            }
            let _ = wake.recv_timeout(wait);
        }
    }

    /// Uploads every waiting record, oldest first; stops at the first failure.
    pub fn drain(&self) -> Result<usize, crate::cloud::CloudError> {
        let mut n = 0;
        for path in self.outbox.pending() {
            let Ok(body) = std::fs::read(&path) else {
                continue;
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.s3
                .put(&object_key(&self.prefix, &name), body, "application/json")?;
            let _ = std::fs::remove_file(&path);
            n += 1;
        }
        Ok(n)
    }

    /// One last attempt before the process exits, bounded by `budget`.
    pub fn flush(&self, budget: Duration) {
        let start = Instant::now();
        while !self.outbox.pending().is_empty() && start.elapsed() < budget {
            match self.drain() {
                Ok(_) => {}
                Err(e) => {
                    log::warn!(
                        "audit: {} record(s) stay in {} for the next start: {e}",
                        self.outbox.pending().len(),
                        self.outbox.dir().display()
                    );
                    return;
                }
            }
        }
    }
}

/// `--output s3://bucket/key`: uploads the finished dry-run file.
pub fn upload_snapshot(cfg: &AuditConfig, url: &str, file: &Path) -> Result<(), String> {
    let u = s3::S3Url::parse(url).map_err(|e| format!("--output: {e}"))?;
    if u.key.is_empty() {
        return Err(format!(
            "--output {url}: no object key (expected s3://bucket/path/snapshot.jsonl)"
        ));
    }
    let s3 = S3::new(&u.bucket, &cfg.region, cfg.endpoint.as_deref())?;
    let body = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let len = body.len();
    s3.put(&u.key, body, "application/x-ndjson")
        .map_err(|e| format!("uploading the dry-run snapshot to {url}: {e}"))?;
    log::info!("dry-run snapshot ({len} bytes) uploaded to {url}");
    Ok(())
}
