//! Patroni's REST API (vendor-api/patroni/rest_api.rst, answers recorded in peers.md §1):
//! `GET /cluster`, `GET /config`, `PATCH /config`, `POST /restart`, over the shared HTTP core
//! (timeouts, typed errors, secrets masked). Basic auth is sent when configured (Patroni asks for
//! it on unsafe endpoints with `restapi.authentication`); a private CA is trusted with `ca_file`.

use super::config::PatroniConfig;
use crate::cloud::http::{Http, Request, TlsOptions};
use crate::cloud::{CloudError, ErrorKind};
use crate::error::{Context, Result};
use crate::secret::Secret;
use base64::Engine;
use serde::Deserialize;
use std::time::Duration;

/// One member of `GET /cluster`. Lag fields are not read: they turn from numbers into the string
/// `"unknown"` on a stopped replica (peers.md §1).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Member {
    pub name: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub pending_restart: bool,
}

impl Member {
    pub fn is_leader(&self) -> bool {
        // Patroni 4 says `leader`; older releases (and the Go agent's restart code) `master`;
        // a standby cluster's leader is `standby_leader`.
        matches!(self.role.as_str(), "leader" | "master" | "standby_leader")
    }
    /// Up and serving: `running` (leader) or `streaming` (replica); `starting` after a restart.
    pub fn is_up(&self) -> bool {
        matches!(self.state.as_str(), "running" | "streaming")
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Cluster {
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl Cluster {
    pub fn leader(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.is_leader())
    }
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.name.trim().eq_ignore_ascii_case(name.trim()))
    }
}

pub struct Rest {
    http: Http,
    pub base: String,
    auth: Option<Secret>,
    timeout: Duration,
}

impl Rest {
    pub fn new(cfg: &PatroniConfig) -> Result<Rest> {
        let ca_pem = match &cfg.ca_file {
            Some(f) => {
                Some(std::fs::read(f).with_context(|| format!("reading patroni.ca_file {f}"))?)
            }
            None => None,
        };
        let http = Http::with_tls(&TlsOptions {
            ca_pem,
            ..TlsOptions::default()
        })
        .map_err(|e| crate::error::Error::from(e).context("patroni.ca_file"))?;
        let auth = match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => Some(Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.expose()))
            ))),
            _ => None,
        };
        Ok(Rest {
            http,
            base: cfg.api_url.clone(),
            auth,
            timeout: cfg.request_timeout,
        })
    }

    fn req(&self, method: &str, url: String, what: &str) -> Request {
        let mut r = Request::new(method, url)
            .what(format!("Patroni {what}"))
            .timeout(self.timeout);
        if let Some(a) = &self.auth {
            r = r.header("Authorization", a.expose()).secret(a.expose());
        }
        r
    }

    /// `GET /cluster`: members, roles, states, `pending_restart`.
    pub fn cluster(&self) -> std::result::Result<Cluster, CloudError> {
        let r = self.req("GET", format!("{}/cluster", self.base), "GET /cluster");
        self.http.send(&r).map_err(tidy)?.json()
    }

    /// `GET /config`: the dynamic configuration in the DCS.
    pub fn config(&self) -> std::result::Result<serde_json::Value, CloudError> {
        let r = self.req("GET", format!("{}/config", self.base), "GET /config");
        self.http.send(&r).map_err(tidy)?.json()
    }

    /// `postgresql.parameters` of the DCS configuration, values as text (Patroni keeps what it
    /// was given: strings, or numbers from its bootstrap YAML).
    pub fn parameters(
        &self,
    ) -> std::result::Result<serde_json::Map<String, serde_json::Value>, CloudError> {
        let c = self.config()?;
        Ok(c.get("postgresql")
            .and_then(|p| p.get("parameters"))
            .and_then(|p| p.as_object())
            .cloned()
            .unwrap_or_default())
    }

    /// `PATCH /config` with `{"postgresql":{"parameters":{…}}}`; a `null` value removes a key.
    /// Sent once (a repeated PATCH is harmless, but a timeout may still have landed: the caller
    /// decides).
    pub fn patch_parameters(
        &self,
        params: serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<(), CloudError> {
        let body = serde_json::json!({ "postgresql": { "parameters": params } });
        let r = self
            .req("PATCH", format!("{}/config", self.base), "PATCH /config")
            .json(&body)
            .no_retry();
        // 409: Patroni's compare-and-set of the DCS key lost against another writer (or its own
        // stale view of the key); the merge is re-done on a fresh read, so retrying is safe.
        let mut attempt = 1;
        loop {
            match self.http.send(&r) {
                Ok(_) => return Ok(()),
                Err(e) if e.status == Some(409) && attempt < 5 => {
                    log::debug!("PATCH /config conflicted (attempt {attempt}); retrying");
                    attempt += 1;
                    crate::apply::wait::sleep(
                        Duration::from_millis(500 * attempt),
                        "PATCH /config",
                    )
                    .map_err(|i| {
                        CloudError::new(ErrorKind::Timeout, "PATCH /config", i.to_string())
                    })?;
                }
                Err(e) => return Err(tidy(e)),
            }
        }
    }

    /// `POST /restart` on `member`, through its own `api_url` (the Go agent builds it from
    /// `member.host` and this node's port). Synchronous in Patroni: it answers when PostgreSQL
    /// is back or failed to come back. "restart already in progress" counts as accepted.
    pub fn restart(
        &self,
        member: &Member,
        timeout: Duration,
    ) -> std::result::Result<String, CloudError> {
        let url = format!("{}/restart", restart_base(member, &self.base));
        let r = self
            .req("POST", url, &format!("POST /restart on {}", member.name))
            .timeout(timeout)
            .no_retry();
        match self.http.send(&r).map_err(tidy) {
            Ok(resp) => Ok(resp.text().trim().to_string()),
            Err(e)
                if e.kind == ErrorKind::Service
                    && e.status == Some(503)
                    && e.message.contains("already in progress") =>
            {
                Ok(e.message.clone())
            }
            Err(e) => Err(e),
        }
    }
}

/// Python's BaseHTTP answers errors with an HTML page; keep only its `Message:` line.
fn tidy(mut e: CloudError) -> CloudError {
    if let Some(i) = e.message.find("Message: ") {
        let rest = &e.message[i + 9..];
        e.message = rest.split('<').next().unwrap_or(rest).trim().to_string();
    }
    e
}

/// The REST base of `member`: its `api_url` without the `/patroni` path; else its host with this
/// node's scheme and port.
pub fn restart_base(member: &Member, own_base: &str) -> String {
    if let Some(u) = member.api_url.as_deref().filter(|u| u.contains("://")) {
        let u = u.trim_end_matches('/');
        return u.strip_suffix("/patroni").unwrap_or(u).to_string();
    }
    let (scheme, rest) = own_base.split_once("://").unwrap_or(("http", own_base));
    let port = rest
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("8008");
    let host = member.host.as_deref().unwrap_or("");
    format!("{scheme}://{}:{port}", super::config::bracket(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_answers_parse_with_lag_as_numbers_or_text() {
        // Shapes recorded from Patroni 4.1.5 (peers.md §1).
        let c: Cluster = serde_json::from_str(r#"{"members": [
          {"name": "n1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8008/patroni",
           "host": "127.0.0.1", "port": 5531, "timeline": 1, "pending_restart": true,
           "pending_restart_reason": {"shared_buffers": {"old_value": "128MB", "new_value": "256MB"}}},
          {"name": "n2", "role": "replica", "state": "stopped", "api_url": "http://127.0.0.1:8009/patroni",
           "host": "127.0.0.1", "port": 5532, "receive_lsn": "unknown", "receive_lag": "unknown", "lag": "unknown"}],
         "scope": "peers-demo"}"#).unwrap();
        assert_eq!(c.leader().unwrap().name, "n1");
        assert!(c.members[0].pending_restart && !c.members[1].pending_restart);
        assert_eq!(c.member(" N2 ").unwrap().state, "stopped");
        assert!(!c.members[1].is_up());
        assert_eq!(c.scope.as_deref(), Some("peers-demo"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_name() {
        let f = std::env::temp_dir().join(format!("dbtune-patroni-ca-{}.pem", std::process::id()));
        std::fs::write(&f, "not a certificate\n").unwrap();
        let cfg = PatroniConfig {
            node_name: "n1".into(),
            api_url: "https://10.0.0.1:8008".into(),
            cluster_name: String::new(),
            ca_file: Some(f.display().to_string()),
            username: Some("u".into()),
            password: Some(Secret::new("pw")),
            request_timeout: Duration::from_secs(1),
        };
        let e = Rest::new(&cfg).err().unwrap().to_string();
        assert!(
            e.contains("patroni.ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let _ = std::fs::remove_file(&f);
    }

    #[test]
    fn basic_auth_is_sent_and_masked() {
        let cfg = PatroniConfig {
            node_name: "n1".into(),
            api_url: "http://127.0.0.1:1".into(),
            cluster_name: String::new(),
            ca_file: None,
            username: Some("dbtune".into()),
            password: Some(Secret::new("pw-123")),
            request_timeout: Duration::from_secs(1),
        };
        let r = Rest::new(&cfg).unwrap();
        let req = r.req("PATCH", "http://127.0.0.1:1/config".into(), "PATCH /config");
        // base64("dbtune:pw-123")
        assert_eq!(
            req.header_value("Authorization"),
            Some("Basic ZGJ0dW5lOnB3LTEyMw==")
        );
        assert!(!format!("{req:?}").contains("ZGJ0dW5l"));
    }

    #[test]
    fn basehttp_error_pages_shrink_to_their_message() {
        let e = CloudError {
            kind: ErrorKind::Service,
            context: "Patroni PATCH /config".into(),
            status: Some(409),
            code: None,
            message: "<!DOCTYPE HTML>\n<html><body><h1>Error response</h1>\n<p>Error code: 409</p>\n<p>Message: Conflict.</p>\n</body>".into(),
            request_id: None,
        };
        assert_eq!(tidy(e).message, "Conflict.");
    }

    #[test]
    fn restart_urls_come_from_api_url_else_host_with_our_port() {
        let mut m = Member {
            name: "n2".into(),
            role: "replica".into(),
            state: "streaming".into(),
            api_url: Some("https://10.0.0.2:8009/patroni".into()),
            host: Some("10.0.0.2".into()),
            pending_restart: false,
        };
        assert_eq!(
            restart_base(&m, "http://10.0.0.1:8008"),
            "https://10.0.0.2:8009"
        );
        m.api_url = None;
        assert_eq!(
            restart_base(&m, "https://10.0.0.1:8010"),
            "https://10.0.0.2:8010"
        );
        m.host = Some("fd00::2".into());
        assert_eq!(restart_base(&m, "http://h"), "http://[fd00::2]:8008");
    }
}
