//! Google access tokens, Application Default Credentials order:
//! 1. `GOOGLE_APPLICATION_CREDENTIALS` → a JSON file (`service_account` or `authorized_user`);
//! 2. the gcloud well-known file (`$CLOUDSDK_CONFIG` or `~/.config/gcloud`
//!    `/application_default_credentials.json`);
//! 3. the metadata server (`GCE_METADATA_HOST` overrides `metadata.google.internal`).
//!
//! Service accounts sign an RS256 JWT and exchange it at the key's `token_uri`; user
//! credentials use their refresh token. Tokens are cached per scope and refreshed five minutes
//! before they expire.

use crate::cloud::crypto::{pem_block, rsa_sha256_sign};
use crate::cloud::encoding::{b64url_encode, uri_encode};
use crate::cloud::http::{Http, Request};
use crate::cloud::time::now_unix;
use crate::cloud::{CloudError, Env, Result};
use crate::secret::Secret;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const REFRESH_MARGIN: i64 = 300;

/// Where tokens come from.
#[derive(Clone)]
pub enum Source {
    ServiceAccount {
        client_email: String,
        private_key_id: String,
        /// PKCS#8 DER.
        private_key: Secret,
        token_uri: String,
        project_id: Option<String>,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: String,
        quota_project_id: Option<String>,
    },
    /// The metadata server at this host (`metadata.google.internal` or an override).
    Metadata { host: String },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::ServiceAccount { client_email, .. } => {
                write!(f, "service account {client_email}")
            }
            Source::AuthorizedUser { .. } => f.write_str("authorized user"),
            Source::Metadata { host } => write!(f, "metadata server {host}"),
        }
    }
}

/// Parses a credentials JSON file's content.
pub fn parse_credentials_json(text: &str, origin: &str) -> Result<Source> {
    let ctx = format!("reading Google credentials {origin}");
    let v: Value = serde_json::from_str(text)
        .map_err(|e| CloudError::config(&ctx, format!("not JSON: {e}")))?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
    };
    let need = |k: &str| {
        s(k).ok_or_else(|| CloudError::config(&ctx, format!("the field {k:?} is missing")))
    };
    match s("type").as_deref() {
        Some("service_account") => {
            let pem = need("private_key")?;
            let der = pem_block(&pem, "PRIVATE KEY")
                .ok_or_else(|| CloudError::config(&ctx, "private_key is not a PKCS#8 PEM block (BEGIN PRIVATE KEY)"))?;
            Ok(Source::ServiceAccount {
                client_email: need("client_email")?,
                private_key_id: s("private_key_id").unwrap_or_default(),
                private_key: Secret::new(crate::cloud::encoding::b64_encode(&der)),
                token_uri: s("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
                project_id: s("project_id"),
            })
        }
        Some("authorized_user") => Ok(Source::AuthorizedUser {
            client_id: need("client_id")?,
            client_secret: Secret::new(need("client_secret")?),
            refresh_token: Secret::new(need("refresh_token")?),
            token_uri: s("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
            quota_project_id: s("quota_project_id"),
        }),
        Some(other) => Err(CloudError::config(
            ctx,
            format!("credential type {other:?} is not supported (service_account and authorized_user are)"),
        )),
        None => Err(CloudError::config(ctx, "the field \"type\" is missing")),
    }
}

/// Finds credentials in ADC order.
pub fn discover(env: &Env) -> Result<Source> {
    if let Some(path) = env.get("GOOGLE_APPLICATION_CREDENTIALS") {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CloudError::config(
                "GOOGLE_APPLICATION_CREDENTIALS",
                format!("reading {path}: {e}"),
            )
        })?;
        return parse_credentials_json(&text, path);
    }
    let dir = env.get("CLOUDSDK_CONFIG").map(PathBuf::from).or_else(|| {
        env.get("HOME")
            .map(|h| PathBuf::from(h).join(".config/gcloud"))
    });
    if let Some(dir) = dir {
        let well_known = dir.join("application_default_credentials.json");
        if let Ok(text) = std::fs::read_to_string(&well_known) {
            return parse_credentials_json(&text, &well_known.display().to_string());
        }
    }
    Ok(Source::Metadata {
        host: env
            .get("GCE_METADATA_HOST")
            .unwrap_or("metadata.google.internal")
            .to_string(),
    })
}

/// Cached tokens for one credential source, keyed by scope.
pub struct TokenSource {
    http: Http,
    pub source: Source,
    cache: Mutex<HashMap<String, (Secret, i64)>>,
}

impl TokenSource {
    pub fn new(http: Http, source: Source) -> Self {
        TokenSource {
            http,
            source,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_env(http: Http, env: &Env) -> Result<Self> {
        Ok(Self::new(http, discover(env)?))
    }

    /// The project to bill (`x-goog-user-project`) for user credentials.
    pub fn quota_project(&self) -> Option<&str> {
        match &self.source {
            Source::AuthorizedUser {
                quota_project_id, ..
            } => quota_project_id.as_deref(),
            _ => None,
        }
    }

    /// An access token for `scope`, from the cache while it has five minutes left.
    pub fn token(&self, scope: &str) -> Result<Secret> {
        let now = now_unix();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, exp)) = cache.get(scope) {
            if exp - REFRESH_MARGIN > now {
                return Ok(t.clone());
            }
        }
        let (token, expires_in) = self
            .fetch(scope, now)
            .map_err(|e| e.context("getting a Google access token"))?;
        cache.insert(scope.to_string(), (token.clone(), now + expires_in));
        Ok(token)
    }

    fn fetch(&self, scope: &str, now: i64) -> Result<(Secret, i64)> {
        let resp = match &self.source {
            Source::ServiceAccount {
                client_email,
                private_key_id,
                private_key,
                token_uri,
                ..
            } => {
                let der =
                    crate::cloud::encoding::b64_decode(private_key.expose()).unwrap_or_default();
                let jwt = sign_jwt(
                    &der,
                    private_key_id,
                    &json!({"iss": client_email, "scope": scope, "aud": token_uri, "iat": now, "exp": now + 3600}),
                )?;
                let req = Request::post(token_uri.clone())
                    .form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", &jwt),
                    ])
                    .what("Google token exchange (service account)")
                    .secret(&jwt);
                self.http.send(&req)?
            }
            Source::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
                ..
            } => {
                let req = Request::post(token_uri.clone())
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", client_id),
                        ("client_secret", client_secret.expose()),
                        ("refresh_token", refresh_token.expose()),
                    ])
                    .what("Google token refresh (authorized user)")
                    .secret(client_secret.expose())
                    .secret(refresh_token.expose());
                self.http.send(&req)?
            }
            Source::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={}",
                    uri_encode(scope, false)
                );
                let req = Request::get(url)
                    .header("Metadata-Flavor", "Google")
                    .timeout(Duration::from_secs(3))
                    .what("GCE metadata token");
                let r = self.http.send(&req)?;
                // Anything else answering on that name is not the metadata server.
                if r.header("Metadata-Flavor") != Some("Google") {
                    return Err(CloudError::auth(
                        r.context(),
                        "the answer lacks Metadata-Flavor: Google",
                    ));
                }
                r
            }
        };
        let v: Value = resp.json()?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CloudError::decode(resp.context(), "the answer has no access_token"))?;
        let expires_in = v.get("expires_in").and_then(Value::as_i64).unwrap_or(3600);
        Ok((Secret::new(token), expires_in))
    }
}

/// `base64url(header).base64url(claims).base64url(RS256 signature)`.
pub fn sign_jwt(pkcs8_der: &[u8], kid: &str, claims: &Value) -> Result<String> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if !kid.is_empty() {
        header["kid"] = json!(kid);
    }
    let signing_input = format!(
        "{}.{}",
        b64url_encode(header.to_string().as_bytes()),
        b64url_encode(claims.to_string().as_bytes())
    );
    let sig = rsa_sha256_sign(pkcs8_der, signing_input.as_bytes())
        .map_err(|m| CloudError::config("signing a JWT", m))?;
    Ok(format!("{signing_input}.{}", b64url_encode(&sig)))
}
