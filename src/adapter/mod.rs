//! Adapters: what differs per provider (host metrics, system info, how a configuration is
//! applied, guardrails). The runner talks only to this trait.

pub mod aiven;
pub mod azure_flex;
pub mod cloudsql;
pub mod cnpg;
pub mod docker;
pub mod local_host;
pub mod patroni;
pub mod pgprem;
pub mod rds;
pub mod select;

use crate::apply::{Applier, ApplyError, Outcome, RecoveryReport, Runtime};
use crate::checks::Check;
use crate::config::keys::Keys;
use crate::config::Config;
use crate::error::Result;
use crate::metrics::MetricCollector;
use crate::model::{ConfigRow, ErrorReport, GuardrailSignal, Metric, Recommendation};
use crate::pg::Pg;
use select::Provider;
use std::sync::{Arc, Mutex, RwLock};

/// Builds the adapter for `provider`. Each provider adds its arm here (one line) and its
/// folder under `src/adapter/`.
pub fn build(provider: Provider, cfg: &Config) -> std::result::Result<Arc<dyn Adapter>, String> {
    match provider {
        Provider::Local => pgprem::PgPrem::new(cfg)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create local PostgreSQL adapter: {e}")),
        Provider::Aiven => aiven::Aiven::new(cfg)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create Aiven adapter: {e}")),
        Provider::CloudSql => cloudsql::CloudSql::new(cfg)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create Cloud SQL adapter: {e}")),
        Provider::AzureFlex => azure_flex::AzureFlex::new(cfg)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create Azure Flexible Server adapter: {e}")),
        Provider::Docker => docker::DockerAdapter::new(cfg)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create Docker adapter: {e}")),
        Provider::Cnpg => cnpg::Cnpg::new(cfg)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create CloudNativePG adapter: {e}")),
        Provider::Patroni => patroni::Patroni::new(cfg)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create Patroni adapter: {e}")),
        Provider::Rds | Provider::Aurora => rds::Rds::new(cfg, provider == Provider::Aurora)
            .map(|a| Arc::new(a) as Arc<dyn Adapter>)
            .map_err(|e| format!("Failed to create {} adapter: {e}", provider.label())),
    }
}

/// Each provider's configuration keys, declared beside its section reader (the unknown-key
/// check, `config::keys`). Exhaustive on purpose: a new provider must say what it reads.
pub fn config_keys(provider: Provider) -> &'static [&'static Keys] {
    match provider {
        Provider::Local => &[],
        Provider::Docker => &[&docker::config::KEYS],
        Provider::Rds => &[&rds::config::KEYS],
        Provider::Aurora => &[&rds::config::KEYS_AURORA],
        Provider::Aiven => &[&aiven::config::KEYS],
        Provider::CloudSql => &[&cloudsql::config::KEYS],
        Provider::Cnpg => &[&cnpg::config::KEYS],
        Provider::Patroni => &[&patroni::config::KEYS],
        Provider::AzureFlex => &[&azure_flex::config::KEYS],
    }
}

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
    /// The apply pipeline bound to this provider's target.
    fn applier(&self) -> &Applier;
    fn apply(&self, rec: &Recommendation) -> std::result::Result<Outcome, ApplyError> {
        self.applier().apply(self.pg(), rec)
    }
    /// `--plan`: what `rec` would change; applies nothing.
    fn plan(&self, rec: &Recommendation) -> Result<String> {
        self.applier().plan(self.pg(), rec)
    }
    /// Settles an apply an earlier run left unfinished.
    fn recover(&self) -> Result<RecoveryReport> {
        self.applier().recover(self.pg())
    }
    /// Handle for SIGHUP.
    fn runtime(&self) -> Arc<RwLock<Runtime>> {
        self.applier().runtime()
    }
    /// `--check` lines for the provider's control plane (Docker socket, Patroni REST, …).
    fn control_plane_checks(&self) -> Vec<Check> {
        Vec::new()
    }
    /// Events the adapter observed for the platform's log entries (Patroni: `failover_detected`),
    /// drained and sent by the runner every second; adapters never talk to the platform.
    fn take_reports(&self) -> Vec<ErrorReport> {
        Vec::new()
    }
    /// `Ok(None)` when nothing is wrong.
    fn guardrail(&self, memory_threshold: f64) -> Result<Option<GuardrailSignal>>;
    /// Catalog collectors this provider cannot serve (Aurora: pg_stat_wal, pg_stat_wal_receiver).
    fn forced_off_collectors(&self) -> &'static [&'static str] {
        &[]
    }
}

/// Active config rows from pg_settings (shared by every adapter that reads PostgreSQL).
///
/// The config sync sends them every 5 s, but they change only on a reload, a restart or in a new
/// session: a one-row epoch query (see [`crate::pg::queries::settings_epoch`]) decides whether
/// pg_settings is read again (reading it cost ~3 ms of server time per call, most of the
/// agent's PostgreSQL time on a small server). The pool's sessions take turns, so the last few
/// epochs are kept (equal rows share one copy).
pub fn active_config_from_pg(pg: &Pg) -> Result<Vec<ConfigRow>> {
    type Cached = (String, std::sync::Arc<Vec<ConfigRow>>);
    const KEEP: usize = 4;
    static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());
    let mut c = pg.conn()?;
    let epoch = format!(
        "{}|{}",
        pg.display_url,
        crate::pg::queries::settings_epoch(&mut c)?
    );
    if let Some((_, rows)) = CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(e, _)| *e == epoch)
    {
        return Ok(rows.to_vec());
    }
    let rows: Vec<ConfigRow> = crate::pg::queries::active_settings(&mut c)?
        .into_iter()
        .map(|(name, setting, unit, vartype, context)| ConfigRow {
            setting: crate::platform::payload::typed_setting(&vartype, &setting),
            name,
            unit,
            vartype,
            context,
        })
        .collect();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let shared = match cache.iter().find(|(_, r)| **r == rows) {
        Some((_, r)) => r.clone(),
        None => std::sync::Arc::new(rows.clone()),
    };
    if cache.len() >= KEEP {
        cache.remove(0);
    }
    cache.push((epoch, shared));
    Ok(rows)
}
