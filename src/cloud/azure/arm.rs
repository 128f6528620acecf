//! Azure Resource Manager REST calls and long-running-operation polling.
//!
//! LRO rules (ARM's async-operations contract): a 200/204 answer is final. A 201/202 names a
//! status monitor in `Azure-AsyncOperation` (JSON `status`: `InProgress`… then `Succeeded`,
//! `Failed` or `Canceled`) or else `Location` (202 while running, 200/204 when done). Polls
//! wait `Retry-After` (or our interval) and stop at an overall deadline. After success, a PUT's
//! result is a GET of the resource; a POST's is the `Location` answer, if any.

use super::auth::{TokenProvider, ARM_SCOPE};
use crate::cloud::http::{Http, Request, Response};
use crate::cloud::{CloudError, ErrorKind, Result};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Arm {
    pub http: Http,
    pub tokens: Arc<TokenProvider>,
    /// `https://management.azure.com` unless pointed elsewhere (sovereign clouds, tests).
    pub base: String,
    /// Wait between polls when the service gives no `Retry-After`.
    pub poll_interval: Duration,
    /// Overall cap for one long-running operation.
    pub lro_deadline: Duration,
}

/// How a long-running operation ended.
#[derive(Clone, Debug, PartialEq)]
pub struct LroOutcome {
    /// The final resource (PUT) or result document (POST), when there is one.
    pub result: Option<Value>,
    pub polls: u32,
}

impl Arm {
    pub fn new(http: Http, tokens: TokenProvider) -> Self {
        Arm {
            http,
            tokens: Arc::new(tokens),
            base: "https://management.azure.com".into(),
            poll_interval: Duration::from_secs(3),
            lro_deadline: Duration::from_secs(600),
        }
    }

    fn url(&self, path: &str, api_version: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}api-version={api_version}", self.base)
    }

    fn authed(&self, req: Request) -> Result<Request> {
        let t = self.tokens.token(ARM_SCOPE)?;
        Ok(req
            .header("Authorization", format!("Bearer {}", t.expose()))
            .secret(t.expose()))
    }

    pub fn send(&self, req: Request) -> Result<Response> {
        self.http.send(&self.authed(req)?)
    }

    /// `GET {path}?api-version=…`
    pub fn get(&self, path: &str, api_version: &str) -> Result<Value> {
        self.send(Request::get(self.url(path, api_version)).what(format!("ARM GET {path}")))?
            .json()
    }

    /// `PUT` a resource and wait for the operation; returns the resource as it ended up.
    pub fn put_and_wait(&self, path: &str, api_version: &str, body: &Value) -> Result<LroOutcome> {
        let url = self.url(path, api_version);
        let what = format!("ARM PUT {path}");
        let first = self.send(
            Request::new("PUT", url.clone())
                .json(body)
                .what(what.clone()),
        )?;
        self.wait(first, Some(&url), &what)
    }

    /// `POST` an action (e.g. `…/restart`) and wait for it.
    pub fn post_and_wait(
        &self,
        path: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<LroOutcome> {
        let url = self.url(path, api_version);
        let what = format!("ARM POST {path}");
        let mut req = Request::post(url).what(what.clone());
        if let Some(b) = body {
            req = req.json(b);
        }
        let first = self.send(req)?;
        self.wait(first, None, &what)
    }

    /// Polls an operation started by `first` until it ends or the deadline passes.
    pub fn wait(
        &self,
        first: Response,
        resource_url: Option<&str>,
        what: &str,
    ) -> Result<LroOutcome> {
        let ctx = format!("{what} (long-running operation)");
        if !matches!(first.status, 201 | 202) {
            return Ok(LroOutcome {
                result: body_json(&first),
                polls: 0,
            });
        }
        let async_op = first.header("Azure-AsyncOperation").map(str::to_string);
        let location = first.header("Location").map(str::to_string);
        let (monitor, by_status) = match (&async_op, &location) {
            (Some(a), _) => (a.clone(), true),
            (None, Some(l)) => (l.clone(), false),
            // A 201 without a monitor is a finished create.
            (None, None) => {
                return Ok(LroOutcome {
                    result: body_json(&first),
                    polls: 0,
                })
            }
        };
        let started = Instant::now();
        let mut wait = retry_after_or(&first, self.poll_interval);
        let mut polls = 0;
        loop {
            let left = self.lro_deadline.saturating_sub(started.elapsed());
            if left.is_zero() || wait > left {
                return Err(CloudError::new(
                    ErrorKind::Timeout,
                    ctx,
                    format!(
                        "still running after {:?} ({polls} polls)",
                        started.elapsed()
                    ),
                ));
            }
            std::thread::sleep(wait);
            polls += 1;
            let r = self.send(Request::get(monitor.clone()).what(format!("{what}: polling")))?;
            wait = retry_after_or(&r, self.poll_interval);
            if by_status {
                let v: Value = r.json()?;
                let status = v.get("status").and_then(Value::as_str).unwrap_or("");
                match status {
                    "Succeeded" => break,
                    "Failed" | "Canceled" | "Cancelled" => {
                        let e = v.get("error").cloned().unwrap_or(Value::Null);
                        let code = e.get("code").and_then(Value::as_str).map(str::to_string);
                        let msg = e
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("(no message)");
                        let mut err = CloudError::new(
                            ErrorKind::Service,
                            ctx,
                            format!("operation {status}: {msg}"),
                        );
                        err.code = code.or(Some(status.to_string()));
                        return Err(err);
                    }
                    _ => continue, // InProgress, Accepted, Running, …
                }
            } else if r.status == 202 {
                continue;
            } else {
                return Ok(LroOutcome {
                    result: body_json(&r),
                    polls,
                });
            }
        }
        // Succeeded through Azure-AsyncOperation: fetch the result.
        let result = match (resource_url, &location) {
            (Some(u), _) => Some(
                self.send(Request::get(u.to_string()).what(format!("{what}: final GET")))?
                    .json()?,
            ),
            (None, Some(l)) => {
                body_json(&self.send(Request::get(l.clone()).what(format!("{what}: result")))?)
            }
            (None, None) => None,
        };
        Ok(LroOutcome { result, polls })
    }
}

fn body_json(r: &Response) -> Option<Value> {
    if r.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&r.body).ok()
    }
}

fn retry_after_or(r: &Response, default: Duration) -> Duration {
    crate::cloud::http::retry_after(r).unwrap_or(default)
}
