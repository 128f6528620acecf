//! Task bodies: one function per loop of protocol.md §6. Each returns `Ok(())` or the error
//! the runner logs; none blocks longer than its budget.

use super::Shared;
use crate::apply::Outcome;
use crate::collectors::{CatalogCollector, CollectCtx, CollectorDef};
use crate::error::{Error, Kind, Result};
use crate::metrics::MetricCollector;
use crate::model::ErrorReport;
use crate::platform::payload::HeartbeatInfo;
use crossbeam_channel::bounded;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per metric collector: the collector and whether a previous (timed-out) run still holds it.
pub struct MetricSlot {
    pub key: &'static str,
    pub collector: Arc<Mutex<Box<dyn MetricCollector>>>,
    pub busy: Arc<AtomicBool>,
}

pub struct CatalogSlot {
    pub def: &'static CollectorDef,
    pub interval: Duration,
    pub collector: Mutex<Box<dyn CatalogCollector>>,
    /// In a streak of timeouts: only the first one is reported.
    pub timing_out: AtomicBool,
}

pub fn heartbeat(sh: &Shared) -> Result<()> {
    let allow_restart = sh
        .settings
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .allow_restart;
    log::info!("Sending heartbeat to {}", sh.platform.url("heartbeat"));
    sh.platform
        .heartbeat(&HeartbeatInfo {
            agent_version: crate::version::VERSION,
            agent_start_time: sh.start_time,
            agent_identifier: &sh.agent_id,
            allow_restart,
        })
        .map_err(|e| e.context("Failed to send heartbeat"))
}

pub const COLLECTOR_TIMEOUT: Duration = Duration::from_secs(10);
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs every metric collector in its own thread under a 10 s deadline (20 s for the round);
/// a collector still running from an earlier round is reported, not started twice.
pub fn collect_metrics(
    sh: &Shared,
    slots: &[MetricSlot],
) -> (Vec<crate::model::Metric>, Vec<String>) {
    let (tx, rx) = bounded(slots.len().max(1));
    let mut waiting = Vec::new();
    let mut errors = Vec::new();
    for s in slots {
        if s.busy.swap(true, Ordering::SeqCst) {
            errors.push(format!(
                "collector {} timed out (its previous run is still going)",
                s.key
            ));
            continue;
        }
        let (tx, c, busy, key, guard) = (
            tx.clone(),
            s.collector.clone(),
            s.busy.clone(),
            s.key,
            sh.guard.clone(),
        );
        let platform = sh.platform.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("metric-{key}"))
            .spawn(move || {
                let r = guard.run(key, || {
                    c.lock().unwrap_or_else(|p| p.into_inner()).collect()
                });
                busy.store(false, Ordering::SeqCst);
                let r = match r {
                    super::guard::Guarded::Done(r) => {
                        r.map_err(|e| format!("collector {key} failed: {e}"))
                    }
                    super::guard::Guarded::PanicDue(msg) => {
                        super::report(&platform, &format!("{key}_panic"), &msg);
                        Err(msg)
                    }
                    super::guard::Guarded::PanicQuiet => Ok(Vec::new()),
                };
                let _ = tx.send((key, r));
            });
        match spawned {
            Ok(_) => waiting.push(s.key),
            Err(e) => {
                s.busy.store(false, Ordering::SeqCst);
                errors.push(format!(
                    "collector {} failed: cannot start thread: {e}",
                    s.key
                ));
            }
        }
    }
    drop(tx);
    let round_end = Instant::now() + ROUND_TIMEOUT;
    let per = Instant::now() + COLLECTOR_TIMEOUT;
    let mut samples = Vec::new();
    while !waiting.is_empty() {
        let until = per.min(round_end);
        match rx.recv_deadline(until) {
            Ok((key, r)) => {
                waiting.retain(|k| *k != key);
                match r {
                    Ok(mut m) => samples.append(&mut m),
                    Err(e) => errors.push(e),
                }
            }
            Err(_) => {
                for k in waiting.drain(..) {
                    errors.push(format!("collector {k} timed out"));
                }
            }
        }
    }
    (samples, errors)
}

pub fn metrics(sh: &Shared, slots: &[MetricSlot]) -> Result<()> {
    log::debug!("Starting metric collection");
    let (samples, errors) = collect_metrics(sh, slots);
    if errors.is_empty() {
        return sh.platform.metrics(&samples);
    }
    if !samples.is_empty() {
        if let Err(e) = sh.platform.metrics(&samples) {
            log::error!("failed to send partial metrics: {e}");
        }
    }
    Err(Error::other(format!(
        "failed to collect metrics: {}",
        errors.join("; ")
    )))
}

pub fn system_info(sh: &Shared) -> Result<()> {
    let info = sh
        .adapter
        .system_info()
        .map_err(|e| e.context("failed to collect system information"))?;
    sh.platform.system_info(&info)
}

/// Fingerprint of a failed recommendation, so an apply that fails is retried every 5 minutes
/// rather than every 5 seconds.
pub struct FailedApply {
    pub fingerprint: String,
    pub at: Instant,
}

pub const FAILED_APPLY_RETRY: Duration = Duration::from_secs(300);

fn fingerprint(rec: &crate::model::Recommendation) -> String {
    let knobs: Vec<String> = rec
        .knobs_overrides
        .iter()
        .map(|n| {
            let v = rec
                .config
                .iter()
                .find(|k| &k.name == n)
                .map(|k| k.setting.to_string())
                .unwrap_or_default();
            format!("{n}={v}")
        })
        .collect();
    format!("{:?}|{}", rec.knob_application, knobs.join(","))
}

pub fn config(sh: &Shared) -> Result<()> {
    let active = match sh.adapter.active_config() {
        Ok(a) => a,
        Err(e) => {
            if e.kind == Kind::Recovery {
                // A failover changes what a refused recommendation meets (a replica may now
                // lead): it is tried again once the cluster is stable, not 5 minutes later.
                *sh.failed_apply.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            return Err(e.context("failed to get active configuration"));
        }
    };
    let rec = sh.platform.recommendation()?;
    let mut apply_err = None;
    let mut after = None;
    if let Some(rec) = rec.filter(|r| !r.knobs_overrides.is_empty()) {
        let fp = fingerprint(&rec);
        let recently_failed = {
            let f = sh.failed_apply.lock().unwrap_or_else(|p| p.into_inner());
            f.as_ref()
                .is_some_and(|f| f.fingerprint == fp && f.at.elapsed() < FAILED_APPLY_RETRY)
        };
        if recently_failed {
            log::debug!(
                "recommendation failed to apply recently; retrying after {FAILED_APPLY_RETRY:?}"
            );
        } else {
            let _busy = sh.applying.lock().unwrap_or_else(|p| p.into_inner());
            match sh.adapter.apply(&rec) {
                Ok(Outcome::Unchanged) => {
                    log::debug!("recommendation already in effect; nothing applied")
                }
                Ok(o) => {
                    log::info!("configuration applied: {o:?}");
                    *sh.failed_apply.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    after = Some(sh.adapter.active_config()?);
                }
                Err(e) => {
                    let msg = format!("Failed to apply configuration: {}", e.message);
                    log::error!(
                        "🚨 Sending Error Report, type: {}, message: {msg}",
                        e.error_type
                    );
                    if let Err(se) = sh.platform.log_entry(&ErrorReport {
                        error_type: e.error_type.to_string(),
                        error_message: msg,
                    }) {
                        log::error!("failed to send error report: {se}");
                    }
                    *sh.failed_apply.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(FailedApply {
                            fingerprint: fp,
                            at: Instant::now(),
                        });
                    apply_err = Some(Error::new(
                        Kind::Invalid,
                        format!("{}: {}", e.error_type, e.message),
                    ));
                }
            }
        }
    }
    sh.platform
        .configurations(after.as_deref().unwrap_or(&active))?;
    match apply_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub fn guardrail(sh: &Shared) -> Result<()> {
    for r in sh.adapter.take_reports() {
        super::report(&sh.platform, &r.error_type, &r.error_message);
    }
    {
        let last = sh.last_signal.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(15)) {
            return Ok(());
        }
    }
    let threshold = sh
        .settings
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .memory_threshold;
    match sh.adapter.guardrail(threshold) {
        Ok(Some(sig)) => {
            *sh.last_signal.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            log::warn!(
                "🚨 Sending Guardrail, level: {}, type: {}",
                sig.level_wire(),
                sig.type_wire()
            );
            sh.platform.guardrail(&sig)
        }
        Ok(None) => Ok(()),
        Err(e) => {
            log::error!("guardrail check failed: {e}");
            Ok(())
        }
    }
}

pub fn raw_logs(sh: &Shared) -> Result<()> {
    let entries = crate::logging::drain_raw();
    if !entries.is_empty() {
        if let Err(e) = sh.platform.raw_logs(&entries) {
            log::debug!("shipping {} log lines failed: {e}", entries.len());
        }
    }
    Ok(())
}

/// A payload above this size (uncompressed) is followed by giving freed memory back.
const LARGE_PAYLOAD: u64 = 256 << 10;

pub fn catalog(sh: &Shared, slot: &CatalogSlot) -> Result<()> {
    let name = slot.def.name;
    let server = sh.server.read().unwrap_or_else(|p| p.into_inner()).clone();
    let ctx = CollectCtx {
        pg: sh.adapter.pg(),
        server: &server,
    };
    // Rows are encoded into the compressed body as they arrive (platform::stream).
    let mut sink = sh.platform.catalog_sink();
    let result = slot
        .collector
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .collect_into(&ctx, &mut sink)
        .and_then(|send| {
            if send {
                sink.finish().map(Some)
            } else {
                Ok(None)
            }
        });
    match result {
        Ok(None) => {
            slot.timing_out.store(false, Ordering::SeqCst);
            Ok(())
        }
        Ok(Some(payload)) => {
            slot.timing_out.store(false, Ordering::SeqCst);
            // The send budget never exceeds the collector's own interval.
            if let Err(e) = sh.platform.catalog(name, &payload, slot.interval) {
                log::error!("{name} error: {e}");
            }
            if payload.json_len > LARGE_PAYLOAD {
                drop(payload);
                crate::alloc::release();
            }
            Ok(())
        }
        Err(e) if e.is_suppressed() => Err(e),
        Err(e) if e.kind == Kind::Timeout && slot.timing_out.swap(true, Ordering::SeqCst) => {
            log::debug!("{name}: still timing out: {e}");
            Ok(())
        }
        Err(e) => {
            let msg = format!("Failed to collect {name}: {e}");
            super::report(&sh.platform, &format!("{name}_error"), &msg);
            Err(e)
        }
    }
}
