//! Metric collectors: host (or cloud) samples sent every 5 s to `POST metrics`. At the Go
//! agent's HEAD only host metrics travel here; PostgreSQL data goes to catalog endpoints.

pub mod data_disk;
pub mod hardware;

use crate::error::Result;
use crate::model::Metric;

/// One metric collector. State (previous samples for deltas) lives in `self`.
pub trait MetricCollector: Send {
    fn key(&self) -> &'static str;
    fn collect(&mut self) -> Result<Vec<Metric>>;
}
