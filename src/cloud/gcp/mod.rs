//! Google Cloud: access tokens ([`auth`]) and REST helpers for Cloud SQL Admin
//! ([`sqladmin`]) and Cloud Monitoring ([`monitoring`]).

pub mod auth;
pub mod monitoring;
pub mod sqladmin;

use crate::cloud::http::{Http, Request, Response};
use crate::cloud::{Env, Result};
use auth::{TokenSource, CLOUD_PLATFORM};
use std::sync::Arc;

/// An authenticated Google REST client. Base URLs default to the public endpoints and can be
/// pointed elsewhere (tests, private service connect).
#[derive(Clone)]
pub struct Google {
    pub http: Http,
    pub tokens: Arc<TokenSource>,
    pub sqladmin_base: String,
    pub monitoring_base: String,
}

impl Google {
    pub fn new(http: Http, tokens: TokenSource) -> Self {
        Google {
            http,
            tokens: Arc::new(tokens),
            sqladmin_base: "https://sqladmin.googleapis.com".into(),
            monitoring_base: "https://monitoring.googleapis.com".into(),
        }
    }

    /// Application Default Credentials from the environment.
    pub fn from_env(http: Http, env: &Env) -> Result<Self> {
        let tokens = TokenSource::from_env(http.clone(), env)?;
        Ok(Self::new(http, tokens))
    }

    /// Sends `req` with a `cloud-platform` bearer token (and the quota project for user
    /// credentials).
    pub fn send(&self, req: Request) -> Result<Response> {
        let token = self.tokens.token(CLOUD_PLATFORM)?;
        let mut req = req
            .header("Authorization", format!("Bearer {}", token.expose()))
            .secret(token.expose());
        if let Some(p) = self.tokens.quota_project() {
            req = req.header("x-goog-user-project", p);
        }
        self.http.send(&req)
    }

    pub fn get_json(&self, url: &str, what: &str) -> Result<serde_json::Value> {
        self.send(Request::get(url).what(what))?.json()
    }
}
