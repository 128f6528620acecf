//! Docker Engine API over its unix socket: version negotiation, container inspect, restart and
//! one-shot stats.

pub mod tar;
pub mod unix_http;

use crate::cloud::encoding::uri_encode;
use crate::cloud::{CloudError, Env, Result};
use serde_json::Value;
use std::sync::Mutex;
use unix_http::UnixHttp;

/// Highest API version this client speaks; the fields we read are stable across 1.40–1.52.
pub const MAX_API: (u32, u32) = (1, 47);
/// Lowest daemon API we accept (Docker 19.03).
pub const MIN_API: (u32, u32) = (1, 40);

pub struct Docker {
    pub http: UnixHttp,
    version: Mutex<Option<String>>,
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Docker {
    pub fn new(socket: impl Into<std::path::PathBuf>) -> Self {
        Docker {
            http: UnixHttp::new(socket),
            version: Mutex::new(None),
        }
    }

    /// `DOCKER_HOST=unix:///path` or the default `/var/run/docker.sock`.
    pub fn from_env(env: &Env) -> Result<Self> {
        match env.get("DOCKER_HOST") {
            None => Ok(Self::new("/var/run/docker.sock")),
            Some(h) => match h.strip_prefix("unix://") {
                Some(p) if !p.is_empty() => Ok(Self::new(p)),
                _ => Err(CloudError::config(
                    "DOCKER_HOST",
                    format!("{h:?} is not supported: only unix:///path/to/docker.sock"),
                )),
            },
        }
    }

    /// The negotiated API version (`min(ours, daemon's)`), asked once with `HEAD /_ping`
    /// (falling back to `GET /_ping`).
    pub fn api_version(&self) -> Result<String> {
        let mut v = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = v.as_ref() {
            return Ok(s.clone());
        }
        let ping = self
            .http
            .request("HEAD", "/_ping", None, "Docker ping")
            .or_else(|_| self.http.request("GET", "/_ping", None, "Docker ping"))?;
        let daemon = ping
            .header("API-Version")
            .and_then(parse_version)
            .unwrap_or(MIN_API);
        if daemon < MIN_API {
            return Err(CloudError::config(
                "Docker version negotiation",
                format!(
                    "the daemon speaks API {}.{}, older than the minimum {}.{}",
                    daemon.0, daemon.1, MIN_API.0, MIN_API.1
                ),
            ));
        }
        let use_v = daemon.min(MAX_API);
        let s = format!("{}.{}", use_v.0, use_v.1);
        *v = Some(s.clone());
        Ok(s)
    }

    fn path(&self, rest: &str) -> Result<String> {
        Ok(format!("/v{}{rest}", self.api_version()?))
    }

    /// `GET /containers/{name}/json`.
    pub fn inspect(&self, name: &str) -> Result<Value> {
        let p = self.path(&format!("/containers/{}/json", uri_encode(name, false)))?;
        self.http
            .request("GET", &p, None, "Docker container inspect")?
            .json()
    }

    /// `GET /containers/{name}/stats?stream=false&one-shot=true` (no `precpu_stats` sample).
    pub fn stats_once(&self, name: &str) -> Result<Value> {
        let p = self.path(&format!(
            "/containers/{}/stats?stream=false&one-shot=true",
            uri_encode(name, false)
        ))?;
        self.http
            .request("GET", &p, None, "Docker container stats")?
            .json()
    }

    /// `POST /containers/{name}/restart` with the daemon's default stop timeout.
    pub fn restart(&self, name: &str) -> Result<()> {
        let p = self.path(&format!("/containers/{}/restart", uri_encode(name, false)))?;
        self.http
            .request("POST", &p, None, "Docker container restart")?;
        Ok(())
    }

    /// `POST /containers/{name}/restart?t=<stop_secs>`, the whole exchange bounded by
    /// `deadline` (the daemon answers once the container runs again).
    pub fn restart_within(
        &self,
        name: &str,
        stop_secs: u64,
        deadline: std::time::Duration,
    ) -> Result<()> {
        let p = self.path(&format!(
            "/containers/{}/restart?t={stop_secs}",
            uri_encode(name, false)
        ))?;
        let mut http = self.http.clone();
        http.timeout = deadline;
        http.request("POST", &p, None, "Docker container restart")?;
        Ok(())
    }

    /// `POST /containers/{name}/kill?signal=<sig>`.
    pub fn kill(&self, name: &str, signal: &str) -> Result<()> {
        let p = self.path(&format!(
            "/containers/{}/kill?signal={signal}",
            uri_encode(name, false)
        ))?;
        self.http
            .request("POST", &p, None, "Docker container kill")?;
        Ok(())
    }

    /// `POST /containers/{name}/start` (a running container answers 304: fine).
    pub fn start(&self, name: &str) -> Result<()> {
        let p = self.path(&format!("/containers/{}/start", uri_encode(name, false)))?;
        self.http
            .request("POST", &p, None, "Docker container start")?;
        Ok(())
    }

    /// `GET /containers/{name}/archive?path=<file>`: the file as a tar archive (works on a
    /// stopped container too).
    pub fn archive_get(&self, name: &str, path: &str) -> Result<Vec<u8>> {
        let p = self.path(&format!(
            "/containers/{}/archive?path={}",
            uri_encode(name, false),
            uri_encode(path, false)
        ))?;
        Ok(self
            .http
            .request("GET", &p, None, "Docker archive read")?
            .body)
    }

    /// `PUT /containers/{name}/archive?path=<dir>`: extracts `tar` into `dir` (works on a
    /// stopped container too).
    pub fn archive_put(&self, name: &str, dir: &str, tar: &[u8]) -> Result<()> {
        let p = self.path(&format!(
            "/containers/{}/archive?path={}",
            uri_encode(name, false),
            uri_encode(dir, false)
        ))?;
        self.http.request(
            "PUT",
            &p,
            Some(("application/x-tar", tar)),
            "Docker archive write",
        )?;
        Ok(())
    }
}
