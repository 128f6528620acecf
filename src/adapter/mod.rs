//! Adapters: what differs per provider (host metrics, system info, how a configuration is
//! applied, guardrails). The runner talks only to this trait.

pub mod pgprem;
pub mod select;

use crate::apply::{ApplyError, Outcome};
use crate::error::Result;
use crate::metrics::MetricCollector;
use crate::model::{ConfigRow, GuardrailSignal, Metric, Recommendation};
use crate::pg::Pg;

pub trait Adapter: Send + Sync {
    /// Short name for logs (`pgprem`, `docker`, …).
    fn name(&self) -> &'static str;
    fn pg(&self) -> &Pg;
    /// Metric collectors, created once; the runner keeps them between rounds.
    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>>;
    /// The complete system-info set, or an error (never a partial set).
    fn system_info(&self) -> Result<Vec<Metric>>;
    /// Every row of pg_settings as the platform wants it.
    fn active_config(&self) -> Result<Vec<ConfigRow>>;
    fn apply(&self, rec: &Recommendation) -> std::result::Result<Outcome, ApplyError>;
    /// `Ok(None)` when nothing is wrong.
    fn guardrail(&self, memory_threshold: f64) -> Result<Option<GuardrailSignal>>;
    /// Catalog collectors this provider cannot serve (Aurora: pg_stat_wal, pg_stat_wal_receiver).
    fn forced_off_collectors(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Active config rows from pg_settings (shared by every adapter that reads PostgreSQL).
pub fn active_config_from_pg(pg: &Pg) -> Result<Vec<ConfigRow>> {
    let mut c = pg.conn()?;
    let rows = crate::pg::queries::pg_settings(&mut c)?;
    Ok(rows
        .into_iter()
        .map(|s| ConfigRow {
            setting: crate::platform::payload::typed_setting(&s.vartype, &s.setting),
            name: s.name,
            unit: s.unit,
            vartype: s.vartype,
            context: s.context,
        })
        .collect())
}
