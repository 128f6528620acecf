//! Kubernetes API calls: GET (JSON or text), list with a label selector, JSON merge-patch, and
//! watch-free polling. A 401 with a token file forces a re-read of the token and one retry
//! (bound service-account tokens rotate). Every request passes a client-side rate limit
//! (client-go's default: 5 requests/s, bursts of 10) and is counted.

use super::config::{Auth, KubeConfig};
use crate::cloud::encoding::uri_encode;
use crate::cloud::http::{Http, Request, Response};
use crate::cloud::{CloudError, ErrorKind, Result};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// client-go's default client-side limit.
pub const QPS: f64 = 5.0;
pub const BURST: f64 = 10.0;

/// A token bucket: `burst` requests at once, refilled at `qps`.
pub struct RateLimit {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(qps: f64, burst: f64) -> RateLimit {
        RateLimit {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token, sleeping until one is available.
    pub fn take(&self) {
        loop {
            let wait = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                st.0 = (st.0 + now.duration_since(st.1).as_secs_f64() * self.qps).min(self.burst);
                st.1 = now;
                if st.0 >= 1.0 {
                    st.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - st.0) / self.qps)
            };
            std::thread::sleep(wait);
        }
    }
}

pub struct Kube {
    pub http: Http,
    pub config: KubeConfig,
    limit: RateLimit,
    calls: AtomicU64,
}

impl Kube {
    pub fn new(config: KubeConfig) -> Result<Kube> {
        let http = Http::with_tls(&config.tls).map_err(|e| e.context(&config.source))?;
        Ok(Kube {
            http,
            config,
            limit: RateLimit::new(QPS, BURST),
            calls: AtomicU64::new(0),
        })
    }

    /// Requests sent so far (retries and token re-reads included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        accept: &str,
    ) -> Result<Response> {
        let build = |token: Option<&crate::secret::Secret>| {
            let mut r = Request::new(method, format!("{}{path}", self.config.server))
                .header("Accept", accept)
                .what(format!(
                    "Kubernetes {method} {}",
                    path.split('?').next().unwrap_or(path)
                ));
            if let Some((ct, b)) = &body {
                r = r.header("Content-Type", *ct).body(b.clone());
            }
            if let Some(t) = token {
                r = r
                    .header("Authorization", format!("Bearer {}", t.expose()))
                    .secret(t.expose());
            }
            r
        };
        let token = self.config.auth.bearer()?;
        self.limit.take();
        self.calls.fetch_add(1, Ordering::Relaxed);
        match self.http.send(&build(token.as_ref())) {
            Err(e) if e.status == Some(401) => {
                if let Auth::TokenFile(f) = &self.config.auth {
                    let fresh = f.refresh()?;
                    if token.as_ref().map(|t| t.expose()) != Some(fresh.expose()) {
                        self.limit.take();
                        self.calls.fetch_add(1, Ordering::Relaxed);
                        return self.http.send(&build(Some(&fresh)));
                    }
                }
                Err(e)
            }
            r => r,
        }
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.send("GET", path, None, "application/json")?.json()
    }

    /// `GET path` as text (e.g. `/api/v1/nodes/{node}/proxy/metrics/cadvisor`).
    pub fn get_text(&self, path: &str) -> Result<String> {
        Ok(self.send("GET", path, None, "text/plain, */*")?.text())
    }

    /// `GET path?labelSelector=…` → `items`.
    pub fn list(&self, path: &str, label_selector: Option<&str>) -> Result<Vec<Value>> {
        let url = match label_selector {
            Some(s) => format!("{path}?labelSelector={}", uri_encode(s, false)),
            None => path.to_string(),
        };
        let v = self.get(&url)?;
        match v.get("items") {
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(Value::Null) | None => Ok(Vec::new()),
            _ => Err(CloudError::decode(
                format!("Kubernetes list {path}"),
                "items is not an array",
            )),
        }
    }

    /// `PATCH path` with `application/merge-patch+json` (RFC 7386); returns the object.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value> {
        let body = serde_json::to_vec(patch).unwrap_or_default();
        self.send(
            "PATCH",
            path,
            Some(("application/merge-patch+json", body)),
            "application/json",
        )?
        .json()
    }

    /// `POST path` with a JSON body (SelfSubjectAccessReview, SelfSubjectReview); returns the
    /// object.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.send(
            "POST",
            path,
            Some(("application/json", body)),
            "application/json",
        )?
        .json()
    }

    /// Re-reads `path` every `interval` until `check` returns `Some`, or fails at `deadline`.
    /// Transient errors while polling (5xx, timeouts) are tolerated until the deadline.
    pub fn poll<T>(
        &self,
        path: &str,
        interval: Duration,
        deadline: Duration,
        mut check: impl FnMut(&Value) -> Option<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match self.get(path) {
                Ok(v) => {
                    if let Some(t) = check(&v) {
                        return Ok(t);
                    }
                }
                Err(e)
                    if matches!(e.kind, ErrorKind::Transport | ErrorKind::Timeout)
                        || e.status.is_some_and(|s| s >= 500) =>
                {
                    last_error = Some(e.to_string());
                }
                Err(e) => return Err(e),
            }
            if started.elapsed() + interval > deadline {
                let why = last_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default();
                return Err(CloudError::new(
                    ErrorKind::Timeout,
                    format!("waiting on Kubernetes {path}"),
                    format!("condition not met within {deadline:?}{why}"),
                ));
            }
            std::thread::sleep(interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_paces() {
        let l = RateLimit::new(20.0, 3.0);
        let t = Instant::now();
        for _ in 0..3 {
            l.take();
        }
        assert!(t.elapsed() < Duration::from_millis(40), "the burst is free");
        l.take();
        l.take();
        // Two more tokens at 20/s: at least ~100 ms.
        assert!(
            t.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t.elapsed()
        );
    }
}
