//! The `data_disk` collector of the self-managed adapter: size and fill of the filesystem that
//! holds PostgreSQL's data directory (`node_disk_size`, `node_disk_used_percentage`, the keys
//! the platform already takes from Cloud SQL and Kubernetes). Only when PostgreSQL runs on this
//! host: the session's backend must be a local postgres process, as for the memory guardrail.

use super::MetricCollector;
use crate::error::Result;
use crate::host::{filesystem::Filesystems, process};
use crate::model::Metric;
use crate::pg::Pg;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a resolved (or unresolvable) data directory is trusted before asking again.
const RESOLVE_EVERY: Duration = Duration::from_secs(600);

pub struct DataDisk {
    pg: Pg,
    fs: Filesystems,
    dir: Option<PathBuf>,
    resolved_at: Option<Instant>,
}

impl DataDisk {
    pub fn new(pg: Pg) -> DataDisk {
        DataDisk {
            pg,
            fs: Filesystems::default(),
            dir: None,
            resolved_at: None,
        }
    }

    /// `data_directory` when the server is local; logged once per resolution when not.
    fn resolve(&self) -> Option<PathBuf> {
        let mut c = self.pg.conn().ok()?;
        let (dir, backend) = match crate::pg::queries::data_directory(&mut c) {
            Ok(v) => v,
            Err(e) => {
                log::debug!("data directory disk metrics off: reading data_directory: {e}");
                return None;
            }
        };
        let local = u32::try_from(backend).is_ok_and(process::is_postgres_process);
        if !local {
            log::debug!("data directory disk metrics off: PostgreSQL is not on this host");
            return None;
        }
        Some(PathBuf::from(dir))
    }
}

impl MetricCollector for DataDisk {
    fn key(&self) -> &'static str {
        "data_disk"
    }

    fn collect(&mut self) -> Result<Vec<Metric>> {
        if self.resolved_at.is_none_or(|t| t.elapsed() > RESOLVE_EVERY) {
            self.resolved_at = Some(Instant::now());
            self.dir = self.resolve();
        }
        let Some(usage) = self.dir.as_deref().and_then(|d| self.fs.containing(d)) else {
            return Ok(Vec::new());
        };
        Ok(vec![
            Metric::bytes(
                "node_disk_size",
                i64::try_from(usage.total).unwrap_or(i64::MAX),
            ),
            Metric::percentage("node_disk_used_percentage", usage.used_percent()),
        ])
    }
}
