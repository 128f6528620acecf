//! The three Aiven API calls the adapter makes (adapters.md §4.3, checked against Aiven's
//! OpenAPI description): `ServiceGet`, `ServiceUpdate`, `ServiceMetricsFetch`. Token in the
//! `Authorization: aivenv1 <token>` header, registered as a secret so it never shows in an
//! error; 429, 5xx and lost connections retried with back-off by `cloud::http`.

use crate::cloud::encoding::uri_encode;
use crate::cloud::http::{Http, Request, RetryPolicy};
use crate::cloud::Result;
use crate::secret::Secret;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Clone)]
pub struct AivenApi {
    http: Http,
    token: Secret,
    base: String,
    pub project: String,
    pub service: String,
}

impl AivenApi {
    pub fn new(base: &str, token: Secret, project: &str, service: &str) -> AivenApi {
        // The Go client retries up to 6 times (2–15 s); a shorter budget keeps one call
        // inside the 5-s collector cadence most of the time while still riding out a blip.
        let http = Http::new().with_retry(RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(20),
        });
        AivenApi {
            http,
            token,
            base: base.trim_end_matches('/').to_string(),
            project: project.into(),
            service: service.into(),
        }
    }

    /// `project/service` for messages.
    pub fn resource(&self) -> String {
        format!("Aiven service {}/{}", self.project, self.service)
    }

    fn url(&self, suffix: &str) -> String {
        format!(
            "{}/v1/project/{}/service/{}{suffix}",
            self.base,
            uri_encode(&self.project, false),
            uri_encode(&self.service, false)
        )
    }

    fn send(&self, req: Request, what: &str) -> Result<Value> {
        let req = req
            .header("Authorization", format!("aivenv1 {}", self.token.expose()))
            .header("Accept", "application/json")
            .secret(self.token.expose())
            .what(format!("Aiven {what} of {}/{}", self.project, self.service));
        self.http.send(&req)?.json()
    }

    /// `GET /v1/project/{project}/service/{service}?include_secrets=false`: the `service`
    /// object (state, node_cpu_count, node_memory_mb, user_config, …).
    pub fn service_get(&self) -> Result<Value> {
        let v = self.send(
            Request::get(self.url("?include_secrets=false")),
            "ServiceGet",
        )?;
        Ok(v.get("service").cloned().unwrap_or(Value::Null))
    }

    /// `PUT /v1/project/{project}/service/{service}` with only the changed `user_config` keys
    /// (Aiven merges them; a `null` removes a key). Returns the updated `service` object.
    pub fn service_update(&self, user_config: &Value) -> Result<Value> {
        let body = json!({"user_config": user_config, "powered": true});
        let v = self.send(
            Request::new("PUT", self.url("")).json(&body),
            "ServiceUpdate",
        )?;
        Ok(v.get("service").cloned().unwrap_or(Value::Null))
    }

    /// `POST /v1/project/{project}/service/{service}/metrics` for the last hour: the
    /// `metrics` object (name → chart data).
    pub fn metrics_fetch(&self) -> Result<Value> {
        let v = self.send(
            Request::post(self.url("/metrics")).json(&json!({"period": "hour"})),
            "ServiceMetricsFetch",
        )?;
        Ok(v.get("metrics").cloned().unwrap_or(Value::Null))
    }
}
