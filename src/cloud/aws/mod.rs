//! AWS: SigV4, the credential chain, endpoints and the Query / JSON 1.1 protocols, bundled in
//! [`Aws`], a client for one region.

pub mod credentials;
pub mod endpoint;
pub mod query;
pub mod sigv4;

pub use credentials::{CredentialProvider, Credentials, StaticKeys};
pub use endpoint::Service;
pub use query::QueryResponse;

use crate::cloud::http::Http;
use crate::cloud::{Env, ErrorKind, Result};
use std::sync::Arc;

/// A client for one region: `aws.query(Service::Rds, "DescribeDBInstances", &params)`.
#[derive(Clone)]
pub struct Aws {
    pub http: Http,
    pub env: Env,
    pub region: String,
    pub credentials: Arc<CredentialProvider>,
}

impl Aws {
    pub fn new(http: Http, env: Env, region: &str, keys: StaticKeys) -> Self {
        let provider = CredentialProvider::new(http.clone(), env.clone(), region, keys);
        Aws {
            http,
            env,
            region: region.to_string(),
            credentials: Arc::new(provider),
        }
    }

    /// A query-protocol call (RDS, EC2, CloudWatch, STS), signed with the chain's credentials.
    pub fn query(
        &self,
        service: Service,
        action: &str,
        params: &[(String, String)],
    ) -> Result<QueryResponse> {
        let creds = self.credentials.credentials()?;
        let r = query::query_call(
            &self.http,
            &self.env,
            &self.region,
            service,
            Some(&creds),
            action,
            params,
        );
        self.forget_rejected(&r);
        r
    }

    /// A JSON 1.1 call, e.g. `json11(Service::Pi, "PerformanceInsightsv20180227.GetResourceMetrics", &body)`.
    pub fn json11(
        &self,
        service: Service,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value> {
        let creds = self.credentials.credentials()?;
        let r = query::json11_call(
            &self.http,
            &self.env,
            &self.region,
            service,
            &creds,
            target,
            body,
        );
        self.forget_rejected(&r);
        r
    }

    /// Expired or revoked credentials: drop the cache so the next call re-resolves the chain.
    fn forget_rejected<T>(&self, r: &Result<T>) {
        if let Err(e) = r {
            let expired = matches!(
                e.code(),
                Some("ExpiredToken" | "ExpiredTokenException" | "InvalidClientTokenId")
            );
            if expired || (e.kind == ErrorKind::Auth && e.status == Some(401)) {
                self.credentials.invalidate();
            }
        }
    }

    /// An RDS IAM authentication token for `user@host:port` (the PostgreSQL password).
    pub fn rds_auth_token(&self, host: &str, port: u16, user: &str) -> Result<String> {
        let creds = self.credentials.credentials()?;
        Ok(sigv4::rds_auth_token(
            host,
            port,
            user,
            &self.region,
            &creds,
            crate::cloud::time::now_unix(),
        ))
    }
}
