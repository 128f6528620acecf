//! The HTTP core for platform calls: per-attempt timeouts, retries with exponential backoff and
//! full jitter on transport errors, 429 and 5xx (not 501), `Retry-After` honoured — all bounded
//! by the calling loop's budget, so a platform outage never blocks a loop for longer than that.
//! The API key is set as a header only; it never appears in an error or a log line.

use crate::error::{Error, Kind, Result};
use crate::secret::Secret;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Timing {
    /// Longest single attempt (the Go agent uses 4 s).
    pub per_attempt: Duration,
    /// First backoff; doubles per retry up to `backoff_cap`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            per_attempt: Duration::from_secs(4),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

pub struct HttpCore {
    agent: ureq::Agent,
    api_key: Secret,
    pub timing: Timing,
    /// Set at shutdown: retries stop at once so the agent exits within its deadline.
    pub stop: Arc<AtomicBool>,
    /// Calls in a row that failed after their retries. From `OUTAGE_AFTER` on, calls make one
    /// attempt each until the platform answers again, so an outage does not keep worker
    /// threads busy retrying payloads that are superseded seconds later.
    failures_in_a_row: AtomicU32,
}

/// Failed calls in a row after which retries are suspended.
pub const OUTAGE_AFTER: u32 = 3;

/// Largest response body we read (recommendations are small; error pages are cut).
const MAX_BODY: u64 = 8 << 20;

fn jitter_fraction() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b) as f64 / u32::MAX as f64
}

fn retryable_status(s: u16) -> bool {
    s == 429 || (s >= 500 && s != 501)
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = parse_http_date(v)?;
    Some(
        t.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// RFC 1123 date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(v: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // days from civil (inverse of timefmt's algorithm)
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

impl HttpCore {
    pub fn new(api_key: Secret, timing: Timing) -> HttpCore {
        let agent = crate::resolver::agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .user_agent(crate::version::user_agent())
                .proxy(ureq::Proxy::try_from_env())
                .max_redirects(10)
                .timeout_global(Some(timing.per_attempt))
                .build(),
        );
        HttpCore {
            agent,
            api_key,
            timing,
            stop: Arc::new(AtomicBool::new(false)),
            failures_in_a_row: AtomicU32::new(0),
        }
    }

    fn attempt(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        gzip: bool,
        timeout: Duration,
    ) -> std::result::Result<(u16, Option<Duration>, Vec<u8>), String> {
        let key = self.api_key.expose();
        let res = match method {
            Method::Get => self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("DBTUNE-API-KEY", key)
                .call(),
            Method::Post | Method::Put => {
                let b = if method == Method::Post {
                    self.agent.post(url)
                } else {
                    self.agent.put(url)
                };
                let mut b = b
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .header("DBTUNE-API-KEY", key)
                    .header("Content-Type", "application/json");
                if gzip {
                    b = b.header("Content-Encoding", "gzip");
                }
                b.send(body.unwrap_or(&[]))
            }
        };
        match res {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let mut buf = Vec::new();
                let _ = resp
                    .into_body()
                    .into_reader()
                    .take(MAX_BODY)
                    .read_to_end(&mut buf);
                Ok((status, retry_after, buf))
            }
            // ureq errors never include request headers, so the key cannot leak here.
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends with retries until success, a non-retryable answer, or `budget` runs out.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        gzip: bool,
        budget: Duration,
    ) -> Result<Response> {
        self.send_with(method, url, body, gzip, budget, true)
    }

    /// Like [`HttpCore::send`]; `retry` false makes a single attempt. While the platform is
    /// in an outage (`OUTAGE_AFTER` failed calls in a row) every call makes a single attempt.
    pub fn send_with(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        gzip: bool,
        budget: Duration,
        retry: bool,
    ) -> Result<Response> {
        let in_outage = self.failures_in_a_row.load(Ordering::SeqCst) >= OUTAGE_AFTER;
        let r = self.attempts(method, url, body, gzip, budget, retry && !in_outage);
        if r.is_ok() {
            if self.failures_in_a_row.swap(0, Ordering::SeqCst) >= OUTAGE_AFTER {
                log::info!("the platform answers again; retries resumed");
            }
        } else if self.failures_in_a_row.fetch_add(1, Ordering::SeqCst) + 1 == OUTAGE_AFTER {
            log::warn!(
                "the platform is unreachable ({OUTAGE_AFTER} calls in a row failed): one attempt per call until it answers"
            );
        }
        r
    }

    fn attempts(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        gzip: bool,
        budget: Duration,
        retry: bool,
    ) -> Result<Response> {
        let start = Instant::now();
        let deadline = start + budget;
        let mut attempt = 0u32;
        // Messages show the URL without userinfo (a server_url may carry credentials).
        let shown = crate::secret::url::mask_showing(url, &["uuid"]);
        let full_url = url;
        let url = shown.as_str();
        loop {
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if remaining < Duration::from_millis(20) {
                return Err(Error::new(
                    Kind::Timeout,
                    format!(
                        "{} {url}: no time left in this call's {budget:?} budget",
                        method.as_str()
                    ),
                ));
            }
            attempt += 1;
            let timeout = remaining.min(self.timing.per_attempt);
            let (last, retry_after) = match self.attempt(method, full_url, body, gzip, timeout) {
                Ok((status, _, body)) if !retryable_status(status) => {
                    return Ok(Response { status, body })
                }
                Ok((status, ra, body)) => {
                    let snippet =
                        String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    (
                        format!("status {status} {snippet}").trim_end().to_string(),
                        ra,
                    )
                }
                Err(e) => (e, None),
            };
            if !retry || self.stop.load(Ordering::SeqCst) {
                return Err(Error::other(format!(
                    "{} {url} failed: {last}",
                    method.as_str()
                )));
            }
            let backoff = self
                .timing
                .backoff_base
                .saturating_mul(1u32 << (attempt - 1).min(16))
                .min(self.timing.backoff_cap);
            // Full jitter in [backoff/2, backoff]: spreads a fleet's retries after an outage.
            let wait =
                retry_after.unwrap_or_else(|| backoff.mul_f64(0.5 + 0.5 * jitter_fraction()));
            let remaining = deadline.saturating_duration_since(Instant::now());
            if wait + Duration::from_millis(20) >= remaining {
                return Err(Error::new(
                    Kind::Other,
                    format!(
                        "{} {url} giving up after {attempt} attempt(s) in {:.1}s (budget {budget:?}): last error: {last}",
                        method.as_str(),
                        start.elapsed().as_secs_f64()
                    ),
                ));
            }
            log::debug!(
                "retrying {} {url} (attempt {}) in {wait:?}: {last}",
                method.as_str(),
                attempt + 1
            );
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.stop.load(Ordering::SeqCst) {
                    return Err(Error::other(format!(
                        "{} {url}: stopped while waiting to retry: {last}",
                        method.as_str()
                    )));
                }
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        assert!(
            retryable_status(503)
                && retryable_status(429)
                && !retryable_status(501)
                && !retryable_status(404)
        );
    }
}
