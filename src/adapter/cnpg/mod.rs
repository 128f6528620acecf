//! The CloudNativePG adapter (`--cnpg`, adapters.md §5): PostgreSQL runs in a CNPG `Cluster`
//! on Kubernetes. Parameters are applied by merge-patching the Cluster's
//! `spec.postgresql.parameters` (the operator writes them to every instance and rolls the
//! instances when a restart is needed); metrics come from the primary pod's spec,
//! metrics-server and the kubelet's cAdvisor; failovers are tracked by a state machine that
//! blocks applies while a new primary stabilises.

pub mod api;
pub mod cadvisor;
pub mod check;
pub mod config;
pub mod discovery;
pub mod failover;
pub mod metrics;
pub mod resources;
pub mod rollout;
pub mod target;

use super::Adapter;
use crate::apply::Applier;
use crate::checks::Check;
use crate::config::{Config, Env};
use crate::error::{Context, Error, Kind, Result};
use crate::metrics::MetricCollector;
use crate::model::{
    ConfigRow, ErrorReport, GuardrailLevel, GuardrailSignal, GuardrailType, Metric,
};
use crate::pg::{Pg, SessionLimits};
use api::{Api, ClusterState};
use config::CnpgConfig;
use failover::{Failover, FailoverDetected};
use resources::{Limits, PodView};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A Cluster read this recently serves every task that asks (metrics, config, guardrail run
/// at the same 5 s cadence): one GET instead of three.
const CLUSTER_TTL: Duration = Duration::from_secs(3);
/// Guardrails run every second; the adapter checks at most this often (adapters.md §0.3).
const GUARDRAIL_EVERY: Duration = Duration::from_secs(5);
/// A collector sample this recent serves the guardrail (no second pod and metrics GET).
const SAMPLE_TTL: Duration = Duration::from_secs(6);
/// Node facts (allocatable, OS) change rarely.
const NODE_TTL: Duration = Duration::from_secs(300);

/// One look at the primary's container: its pod, resolved limits, usage, and the cAdvisor
/// series when the caller scraped.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub pod: PodView,
    pub limits: Limits,
    pub cpu_m: i64,
    pub mem: i64,
    pub series: Option<cadvisor::ContainerSeries>,
}

/// State shared by the adapter, its collector and its target.
pub struct Inner {
    pub api: Api,
    pub cfg: CnpgConfig,
    pub pg: Pg,
    pub failover: Mutex<Failover>,
    cluster_cache: Mutex<Option<(Instant, ClusterState)>>,
    primary: Mutex<Option<String>>,
    reports: Mutex<Vec<ErrorReport>>,
    last_guardrail: Mutex<Option<Instant>>,
    last_sample: Mutex<Option<Sample>>,
    node_cache: Mutex<Option<(Instant, String, Value)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A failover as the crate's error: suppressed by the runner (adapters.md §5.7 gates).
pub fn recovery(e: &FailoverDetected) -> Error {
    Error::new(Kind::Recovery, e.to_string())
}

impl Inner {
    /// The Cluster, from the cache when it is at most `max_age` old.
    pub fn cluster(&self, max_age: Duration) -> crate::cloud::Result<ClusterState> {
        if let Some((at, c)) = lock(&self.cluster_cache).as_ref() {
            if at.elapsed() <= max_age {
                return Ok(c.clone());
            }
        }
        let c = self.api.cluster()?;
        *lock(&self.cluster_cache) = Some((Instant::now(), c.clone()));
        Ok(c)
    }

    pub fn invalidate_cluster(&self) {
        *lock(&self.cluster_cache) = None;
    }

    /// `CheckForFailover` (adapters.md §5.7) on a Cluster read at most `max_age` ago. Returns
    /// the Cluster when it could be read.
    pub fn check_failover_within(
        &self,
        max_age: Duration,
    ) -> std::result::Result<Option<ClusterState>, FailoverDetected> {
        let read = self.cluster(max_age);
        let mut f = lock(&self.failover);
        let before = f.last_known_primary.clone();
        let r = f.check(
            read.as_ref().map_err(|e| e.to_string()),
            Instant::now(),
            || self.pg.ping().is_ok(),
        );
        if f.last_known_primary != before {
            self.forget_primary();
        }
        drop(f);
        if let Err(e) = &r {
            if e.new_is_pod() {
                // The primary moved: the cached pod name is stale from now on.
                self.forget_primary();
            }
        }
        r.map(|()| read.ok())
    }

    pub fn check_failover(&self) -> std::result::Result<Option<ClusterState>, FailoverDetected> {
        self.check_failover_within(CLUSTER_TTL)
    }

    /// Queues a `failover_detected` log entry (the runner sends it: `Adapter::take_reports`).
    pub fn report(&self, e: &FailoverDetected) {
        log::warn!("🚨 {e}");
        lock(&self.reports).push(ErrorReport {
            error_type: "failover_detected".into(),
            error_message: e.to_string(),
        });
    }

    /// The node of the primary, cached.
    pub fn node(&self, name: &str) -> Result<Value> {
        if let Some((at, n, v)) = lock(&self.node_cache).as_ref() {
            if n == name && at.elapsed() < NODE_TTL {
                return Ok(v.clone());
            }
        }
        let v = self
            .api
            .node(name)
            .map_err(|e| Error::other(format!("reading node {name}: {e}")))?;
        *lock(&self.node_cache) = Some((Instant::now(), name.to_string(), v.clone()));
        Ok(v)
    }

    /// One pod GET, one metrics-server GET and, with `scrape`, one cAdvisor scrape of the
    /// primary (adapters.md §5.8.8: never more per collection).
    pub fn sample(&self, cluster: Option<&ClusterState>, scrape: bool) -> Result<Sample> {
        let pod = self.primary_pod(cluster)?;
        let view = PodView::from_pod(&pod, &self.cfg.container_name)?;
        let m = self.api.pod_metrics(&view.name).map_err(|e| {
            Error::other(format!(
                "reading metrics-server usage of pod {} (is metrics-server installed?): {e}",
                view.name
            ))
        })?;
        let (cpu_m, mem) = resources::usage(&m, &view.name, &self.cfg.container_name)?;
        let series = if scrape && !view.node.is_empty() {
            match self.api.cadvisor(&view.node) {
                Ok(text) => Some(cadvisor::container_series(
                    &text,
                    &self.cfg.namespace,
                    &view.name,
                    &self.cfg.container_name,
                )),
                Err(e) => {
                    log::debug!("cAdvisor of node {} not available: {e}", view.node);
                    None
                }
            }
        } else {
            None
        };
        let limits = resources::resolve(&view, series.as_ref(), || self.node(&view.node))?;
        let s = Sample {
            at: Instant::now(),
            pod: view,
            limits,
            cpu_m,
            mem,
            series,
        };
        *lock(&self.last_sample) = Some(s.clone());
        Ok(s)
    }

    /// The collector's last sample when recent, else a fresh one without a scrape.
    pub fn recent_sample(&self, cluster: Option<&ClusterState>) -> Result<Sample> {
        if let Some(s) = lock(&self.last_sample).as_ref() {
            let same = cluster.is_none_or(|c| c.current_primary == s.pod.name);
            if s.at.elapsed() < SAMPLE_TTL && same {
                return Ok(s.clone());
            }
        }
        self.sample(cluster, false)
    }
}

pub struct Cnpg {
    inner: Arc<Inner>,
    applier: Applier,
}

impl Cnpg {
    pub fn new(cfg: &Config) -> Result<Cnpg> {
        let ccfg = CnpgConfig::from_sources(&cfg.sources)?;
        let env = Env::from_process();
        let kc = ccfg.kube_config(&env)?;
        log::info!(
            "CloudNativePG: Kubernetes API {} ({}), Cluster {}/{}",
            kc.server,
            kc.source,
            ccfg.namespace,
            ccfg.cluster_name
        );
        let kube = crate::cloud::k8s::Kube::new(kc)
            .map_err(|e| Error::invalid(format!("CloudNativePG: Kubernetes client: {e}")))?;
        let pg = Pg::new(
            cfg.postgresql.connection_url.expose(),
            cfg.postgresql.pool_size,
            SessionLimits::default(),
        )
        .context("failed to create PG driver")?;
        let inner = Arc::new(Inner {
            api: Api {
                kube,
                namespace: ccfg.namespace.clone(),
                cluster: ccfg.cluster_name.clone(),
            },
            failover: Mutex::new(Failover::new(ccfg.failover_stabilization)),
            cfg: ccfg,
            pg,
            cluster_cache: Mutex::new(None),
            primary: Mutex::new(None),
            reports: Mutex::new(Vec::new()),
            last_guardrail: Mutex::new(None),
            last_sample: Mutex::new(None),
            node_cache: Mutex::new(None),
        });
        // The first look: start tracking the primary. Not fatal here, so `--check` can say
        // what is wrong.
        match inner.check_failover() {
            Ok(c) => {
                if let Err(e) = inner.primary(c.as_ref()) {
                    log::warn!("{e}");
                }
            }
            Err(e) => log::warn!("{e}"),
        }
        let target = target::CnpgTarget::new(inner.clone());
        Ok(Cnpg {
            applier: Applier::new(cfg, Box::new(target)),
            inner,
        })
    }

    /// Kubernetes API requests sent so far (for the steady-state call-rate figure).
    pub fn api_calls(&self) -> u64 {
        self.inner.api.kube.calls()
    }
}

impl Adapter for Cnpg {
    fn name(&self) -> &'static str {
        "cnpg"
    }

    fn pg(&self) -> &Pg {
        &self.inner.pg
    }

    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![Box::new(metrics::CnpgHardware::new(self.inner.clone()))]
    }

    fn system_info(&self) -> Result<Vec<Metric>> {
        metrics::system_info(&self.inner)
    }

    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        let inner = &self.inner;
        inner.check_failover().map_err(|e| recovery(&e))?;
        match super::active_config_from_pg(&inner.pg) {
            Err(e) if failover::is_failover_pg_error(e.message()) => {
                let (fe, new) = lock(&inner.failover).pg_failover(e.message(), Instant::now());
                if new {
                    inner.forget_primary();
                    inner.report(&fe);
                }
                Err(recovery(&fe))
            }
            r => r,
        }
    }

    fn applier(&self) -> &Applier {
        &self.applier
    }

    fn control_plane_checks(&self) -> Vec<Check> {
        check::run(&self.inner)
    }

    fn guardrail(&self, threshold: f64) -> Result<Option<GuardrailSignal>> {
        let inner = &self.inner;
        {
            let mut last = lock(&inner.last_guardrail);
            if last.is_some_and(|t| t.elapsed() < GUARDRAIL_EVERY) {
                return Ok(None);
            }
            *last = Some(Instant::now());
        }
        let cluster = match inner.check_failover() {
            Ok(c) => c,
            Err(e) => {
                let new = lock(&inner.failover).handle(&e, Instant::now());
                if new {
                    inner.forget_primary();
                    inner.report(&e);
                }
                return Ok(None);
            }
        };
        let s = inner.recent_sample(cluster.as_ref())?;
        let used = s.mem as f64 / s.limits.mem as f64 * 100.0;
        if s.mem > s.limits.mem {
            log::warn!(
                "pod {} uses {} bytes, above its memory limit of {} bytes",
                s.pod.name,
                s.mem,
                s.limits.mem
            );
        }
        log::debug!("Memory usage of {}: {used:.2}%", s.pod.name);
        Ok((used > threshold).then_some(GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        }))
    }

    fn take_reports(&self) -> Vec<ErrorReport> {
        std::mem::take(&mut *lock(&self.inner.reports))
    }
}
