//! The DBtune platform client: the only module that speaks to DBtune. Every call goes to
//! `{server}/api/v1/agent/<segment>?uuid={db}` with the `DBTUNE-API-KEY` header; any 2xx is
//! success. In dry-run mode nothing is sent: each payload is written as one JSON line.

pub mod dryrun;
pub mod http;
pub mod payload;
pub mod recommendation;
pub mod stream;
pub mod summary;

use crate::error::{Error, Result};
use crate::gojson;
use crate::model::{ConfigRow, ErrorReport, GuardrailSignal, Metric, Recommendation};
use http::{HttpCore, Method, Timing};
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, SystemTime};

/// How long each kind of call may take, retries included (the calling loop's budget).
#[derive(Clone, Debug)]
pub struct Budgets {
    pub heartbeat: Duration,
    pub metrics: Duration,
    pub system_info: Duration,
    pub configurations: Duration,
    pub recommendation: Duration,
    pub guardrail: Duration,
    pub log_entry: Duration,
    pub catalog: Duration,
    pub raw_logs: Duration,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            heartbeat: Duration::from_secs(12),
            metrics: Duration::from_secs(10),
            system_info: Duration::from_secs(20),
            configurations: Duration::from_secs(10),
            recommendation: Duration::from_secs(10),
            guardrail: Duration::from_secs(5),
            log_entry: Duration::from_secs(5),
            catalog: Duration::from_secs(30),
            raw_logs: Duration::from_secs(5),
        }
    }
}

enum Transport {
    Http(HttpCore),
    DryRun(dryrun::DryRun),
}

pub struct Platform {
    server_url: String,
    database_id: String,
    transport: Transport,
    pub budgets: Budgets,
    /// The last compressed configurations body and the fingerprint of its rows: the active
    /// configuration is sent every 5 s and rarely changes, so it is encoded, hashed and
    /// compressed once per change instead of on every send.
    config_body: std::sync::Mutex<Option<(u64, std::sync::Arc<Vec<u8>>)>>,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::default(),
    );
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

impl Platform {
    pub fn http(
        server_url: &str,
        database_id: &str,
        api_key: crate::secret::Secret,
        timing: Timing,
    ) -> Platform {
        Platform {
            server_url: server_url.to_string(),
            database_id: database_id.to_string(),
            transport: Transport::Http(HttpCore::new(api_key, timing)),
            budgets: Budgets::default(),
            config_body: Default::default(),
        }
    }

    pub fn dry_run(server_url: &str, database_id: &str, out: Box<dyn Write + Send>) -> Platform {
        Platform {
            server_url: server_url.to_string(),
            database_id: database_id.to_string(),
            transport: Transport::DryRun(dryrun::DryRun::new(out)),
            budgets: Budgets::default(),
            config_body: Default::default(),
        }
    }

    /// Makes retry loops give up when `stop` is set (shutdown).
    pub fn set_stop_flag(&mut self, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        if let Transport::Http(h) = &mut self.transport {
            h.stop = stop;
        }
    }

    /// The dry-run summary (None when sending for real); `extra` goes before the last line.
    pub fn dry_run_summary(&self, extra: &str) -> Option<String> {
        match &self.transport {
            Transport::DryRun(d) => Some(d.summary.render(extra)),
            Transport::Http(_) => None,
        }
    }

    pub fn is_dry_run(&self) -> bool {
        matches!(self.transport, Transport::DryRun(_))
    }

    /// Plain concatenation, as the Go agent builds it.
    pub fn url(&self, segment: &str) -> String {
        format!(
            "{}/api/v1/agent/{segment}?uuid={}",
            self.server_url, self.database_id
        )
    }

    fn send(
        &self,
        method: Method,
        segment: &str,
        body: &Value,
        gzipped: bool,
        budget: Duration,
    ) -> Result<()> {
        self.send_opts(method, segment, body, gzipped, budget, true)
    }

    fn send_opts(
        &self,
        method: Method,
        segment: &str,
        body: &Value,
        gzipped: bool,
        budget: Duration,
        retry: bool,
    ) -> Result<()> {
        let bytes = gojson::to_vec(body)
            .map_err(|e| Error::other(format!("encoding {segment} payload: {e}")))?;
        // Dry-run writes the JSON itself; `gzipped` only says how it would have been sent.
        let wire = if gzipped && !self.is_dry_run() {
            gzip(&bytes)
        } else {
            bytes
        };
        self.send_wire(method, segment, &wire, gzipped, budget, retry)
    }

    /// Sends an already encoded body: compressed when `gzipped` over HTTP, plain in dry-run.
    fn send_wire(
        &self,
        method: Method,
        segment: &str,
        wire: &[u8],
        gzipped: bool,
        budget: Duration,
        retry: bool,
    ) -> Result<()> {
        match &self.transport {
            Transport::DryRun(d) => d.write(method, segment, gzipped, wire),
            Transport::Http(h) => {
                let url = self.url(segment);
                let r = h
                    .send_with(method, &url, Some(wire), gzipped, budget, retry)
                    .map_err(|e| e.context(format!("sending {segment}")))?;
                if (200..300).contains(&r.status) {
                    Ok(())
                } else {
                    Err(Error::other(format!(
                        "failed to send {segment}, code: {}, body: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(4096)])
                    )))
                }
            }
        }
    }

    pub fn heartbeat(&self, h: &payload::HeartbeatInfo<'_>) -> Result<()> {
        self.send(
            Method::Post,
            "heartbeat",
            &payload::heartbeat(h),
            false,
            self.budgets.heartbeat,
        )
    }

    pub fn metrics(&self, samples: &[Metric]) -> Result<()> {
        let body = payload::metrics(samples, SystemTime::now());
        self.send(Method::Post, "metrics", &body, false, self.budgets.metrics)
    }

    pub fn system_info(&self, samples: &[Metric]) -> Result<()> {
        let body = payload::system_info(samples, SystemTime::now())
            .map_err(|e| Error::other(format!("encoding system info: {e}")))?;
        self.send(
            Method::Put,
            "system-info",
            &body,
            false,
            self.budgets.system_info,
        )
    }

    pub fn configurations(&self, rows: &[ConfigRow]) -> Result<()> {
        let encode = || {
            payload::configurations(rows)
                .map_err(|e| Error::other(format!("encoding configurations: {e}")))
        };
        if self.is_dry_run() {
            return self.send(
                Method::Post,
                "configurations",
                &encode()?,
                true,
                self.budgets.configurations,
            );
        }
        let fp = payload::config_fingerprint(rows);
        let cached = self
            .config_body
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(f, _)| *f == fp)
            .map(|(_, b)| b.clone());
        let wire = match cached {
            Some(b) => b,
            None => {
                let bytes = gojson::to_vec(&encode()?)
                    .map_err(|e| Error::other(format!("encoding configurations payload: {e}")))?;
                let b = std::sync::Arc::new(gzip(&bytes));
                *self.config_body.lock().unwrap_or_else(|p| p.into_inner()) = Some((fp, b.clone()));
                b
            }
        };
        self.send_wire(
            Method::Post,
            "configurations",
            &wire,
            true,
            self.budgets.configurations,
            true,
        )
    }

    /// The pending recommendation, if any. In dry-run mode there is none.
    pub fn recommendation(&self) -> Result<Option<Recommendation>> {
        match &self.transport {
            Transport::DryRun(_) => Ok(None),
            Transport::Http(h) => {
                let url = format!("{}&status=recommended", self.url("configurations"));
                let r = h
                    .send(Method::Get, &url, None, false, self.budgets.recommendation)
                    .map_err(|e| e.context("fetching recommendations"))?;
                recommendation::decode(&r.body)
                    .map_err(|e| e.context(format!("fetching recommendations (HTTP {})", r.status)))
            }
        }
    }

    pub fn guardrail(&self, s: &GuardrailSignal) -> Result<()> {
        self.send(
            Method::Post,
            "guardrails",
            &payload::guardrail(s),
            false,
            self.budgets.guardrail,
        )
    }

    pub fn log_entry(&self, r: &ErrorReport) -> Result<()> {
        let body = payload::log_entry(r, SystemTime::now());
        self.send(
            Method::Post,
            "log-entries",
            &body,
            false,
            self.budgets.log_entry,
        )
    }

    /// Shipped logs: one attempt, short timeout; failures are silent to avoid log loops.
    pub fn raw_logs(&self, entries: &[payload::RawLog]) -> Result<()> {
        self.send_opts(
            Method::Post,
            "raw-logs",
            &payload::raw_logs(entries),
            false,
            self.budgets.raw_logs,
            false,
        )
    }

    /// A sink for one catalog payload: gzip for HTTP, plain JSON for dry-run (same bytes).
    pub fn catalog_sink(&self) -> stream::PayloadSink {
        stream::PayloadSink::new(!self.is_dry_run())
    }

    /// Sends a catalog collector's streamed payload (gzip), within `budget`.
    pub fn catalog(&self, name: &str, payload: &stream::Payload, budget: Duration) -> Result<()> {
        let budget = budget.min(self.budgets.catalog);
        match &self.transport {
            Transport::DryRun(d) => d.write(Method::Post, name, true, &payload.json()?),
            Transport::Http(h) => {
                let url = self.url(name);
                let r = h
                    .send_with(
                        Method::Post,
                        &url,
                        Some(&payload.body),
                        payload.gzipped,
                        budget,
                        true,
                    )
                    .map_err(|e| e.context(format!("sending {name}")))?;
                if (200..300).contains(&r.status) {
                    Ok(())
                } else {
                    Err(Error::other(format!(
                        "failed to send {name}, code: {}, body: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(4096)])
                    )))
                }
            }
        }
    }
}
