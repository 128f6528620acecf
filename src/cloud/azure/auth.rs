//! Microsoft Entra tokens, in the order of azidentity's DefaultAzureCredential (without the
//! developer-tool links):
//! 1. client secret (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`);
//! 2. workload identity (`AZURE_FEDERATED_TOKEN_FILE` + client and tenant ids; the file is
//!    re-read for every token request because the kubelet rotates it);
//! 3. managed identity: App Service / Functions (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) or
//!    the VM / AKS instance metadata service (`AZURE_POD_IDENTITY_AUTHORITY_HOST` overrides
//!    `http://169.254.169.254`); `AZURE_CLIENT_ID` selects a user-assigned identity.
//!
//! `AZURE_AUTHORITY_HOST` replaces `https://login.microsoftonline.com` (sovereign clouds).
//! Tokens are cached per scope and refreshed five minutes before `expires_on`.

use crate::cloud::encoding::uri_encode;
use crate::cloud::http::{Http, Request, Response};
use crate::cloud::time::now_unix;
use crate::cloud::{CloudError, Env, Result};
use crate::secret::Secret;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// ARM scope (what the SDK requests for management.azure.com).
pub const ARM_SCOPE: &str = "https://management.core.windows.net//.default";
/// Entra authentication to Azure Database for PostgreSQL.
pub const POSTGRES_SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
const REFRESH_MARGIN: i64 = 300;

#[derive(Clone)]
pub enum Credential {
    ClientSecret {
        authority: String,
        tenant: String,
        client_id: String,
        secret: Secret,
    },
    WorkloadIdentity {
        authority: String,
        tenant: String,
        client_id: String,
        token_file: String,
    },
    AppServiceIdentity {
        endpoint: String,
        header: Secret,
        client_id: Option<String>,
    },
    ImdsIdentity {
        base: String,
        client_id: Option<String>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Credential {
    pub fn name(&self) -> &'static str {
        match self {
            Credential::ClientSecret { .. } => "client secret",
            Credential::WorkloadIdentity { .. } => "workload identity",
            Credential::AppServiceIdentity { .. } => "managed identity (App Service)",
            Credential::ImdsIdentity { .. } => "managed identity (IMDS)",
        }
    }

    /// Picks the first configured credential from the environment.
    pub fn from_env(env: &Env) -> Result<Credential> {
        let authority = env
            .get("AZURE_AUTHORITY_HOST")
            .unwrap_or("https://login.microsoftonline.com")
            .trim_end_matches('/')
            .to_string();
        let tenant = env.get("AZURE_TENANT_ID").map(str::to_string);
        let client_id = env.get("AZURE_CLIENT_ID").map(str::to_string);
        if let Some(secret) = env.get("AZURE_CLIENT_SECRET") {
            let (Some(tenant), Some(client_id)) = (tenant.clone(), client_id.clone()) else {
                return Err(CloudError::config(
                    "Azure client secret credential",
                    "AZURE_CLIENT_SECRET is set but AZURE_TENANT_ID or AZURE_CLIENT_ID is not",
                ));
            };
            return Ok(Credential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret: Secret::new(secret),
            });
        }
        if let Some(file) = env.get("AZURE_FEDERATED_TOKEN_FILE") {
            let (Some(tenant), Some(client_id)) = (tenant, client_id.clone()) else {
                return Err(CloudError::config(
                    "Azure workload identity",
                    "AZURE_FEDERATED_TOKEN_FILE is set but AZURE_TENANT_ID or AZURE_CLIENT_ID is not",
                ));
            };
            return Ok(Credential::WorkloadIdentity {
                authority,
                tenant,
                client_id,
                token_file: file.to_string(),
            });
        }
        if let (Some(endpoint), Some(header)) =
            (env.get("IDENTITY_ENDPOINT"), env.get("IDENTITY_HEADER"))
        {
            return Ok(Credential::AppServiceIdentity {
                endpoint: endpoint.to_string(),
                header: Secret::new(header),
                client_id,
            });
        }
        Ok(Credential::ImdsIdentity {
            base: env
                .get("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                .unwrap_or("http://169.254.169.254")
                .trim_end_matches('/')
                .to_string(),
            client_id,
        })
    }
}

/// A credential with its per-scope token cache.
pub struct TokenProvider {
    http: Http,
    pub credential: Credential,
    cache: Mutex<HashMap<String, (Secret, i64)>>,
}

impl TokenProvider {
    pub fn new(http: Http, credential: Credential) -> Self {
        TokenProvider {
            http,
            credential,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_env(http: Http, env: &Env) -> Result<Self> {
        Ok(Self::new(http, Credential::from_env(env)?))
    }

    /// A bearer token for `scope` (e.g. [`ARM_SCOPE`]).
    pub fn token(&self, scope: &str) -> Result<Secret> {
        let now = now_unix();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, exp)) = cache.get(scope) {
            if exp - REFRESH_MARGIN > now {
                return Ok(t.clone());
            }
        }
        let (t, exp) = self.fetch(scope, now).map_err(|e| {
            e.context(format!(
                "getting an Azure token ({})",
                self.credential.name()
            ))
        })?;
        cache.insert(scope.to_string(), (t.clone(), exp));
        Ok(t)
    }

    fn fetch(&self, scope: &str, now: i64) -> Result<(Secret, i64)> {
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let resp: Response = match &self.credential {
            Credential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            } => {
                let req = Request::post(format!(
                    "{authority}/{}/oauth2/v2.0/token",
                    uri_encode(tenant, false)
                ))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret.expose()),
                    ("scope", scope),
                ])
                .what("Entra token (client secret)")
                .secret(secret.expose());
                self.http.send(&req)?
            }
            Credential::WorkloadIdentity {
                authority,
                tenant,
                client_id,
                token_file,
            } => {
                let assertion = std::fs::read_to_string(token_file).map_err(|e| {
                    CloudError::auth(
                        "Azure workload identity",
                        format!("reading AZURE_FEDERATED_TOKEN_FILE {token_file}: {e}"),
                    )
                })?;
                let assertion = assertion.trim();
                let req = Request::post(format!(
                    "{authority}/{}/oauth2/v2.0/token",
                    uri_encode(tenant, false)
                ))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion),
                    ("scope", scope),
                ])
                .what("Entra token (workload identity)")
                .secret(assertion);
                self.http.send(&req)?
            }
            Credential::AppServiceIdentity {
                endpoint,
                header,
                client_id,
            } => {
                let mut url = format!(
                    "{endpoint}?api-version=2019-08-01&resource={}",
                    uri_encode(resource, false)
                );
                if let Some(c) = client_id {
                    url.push_str(&format!("&client_id={}", uri_encode(c, false)));
                }
                let req = Request::get(url)
                    .header("X-IDENTITY-HEADER", header.expose())
                    .secret(header.expose())
                    .timeout(Duration::from_secs(5))
                    .what("managed identity token (App Service)");
                self.http.send(&req)?
            }
            Credential::ImdsIdentity { base, client_id } => {
                let mut url = format!(
                    "{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                    uri_encode(resource, false)
                );
                if let Some(c) = client_id {
                    url.push_str(&format!("&client_id={}", uri_encode(c, false)));
                }
                let req = Request::get(url)
                    .header("Metadata", "true")
                    .timeout(Duration::from_secs(5))
                    .what("managed identity token (IMDS)");
                self.http.send(&req)?
            }
        };
        parse_token(&resp, now)
    }
}

/// `{access_token, expires_on | expires_in}`; managed identity endpoints send numbers as strings.
fn parse_token(resp: &Response, now: i64) -> Result<(Secret, i64)> {
    let v: Value = resp.json()?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CloudError::decode(resp.context(), "the answer has no access_token"))?;
    let num = |k: &str| match v.get(k) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let expires_on = num("expires_on")
        .or_else(|| num("expires_in").map(|s| now + s))
        .ok_or_else(|| {
            CloudError::decode(
                resp.context(),
                "the answer has neither expires_on nor expires_in",
            )
        })?;
    Ok((Secret::new(token), expires_on))
}
