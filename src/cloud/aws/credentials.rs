//! AWS credentials and the provider chain, in this order:
//! 1. static keys: explicit (from the agent's config), then `DBT_AWS_*`, then `AWS_*`
//!    (`*_ACCESS_KEY_ID`, `*_SECRET_ACCESS_KEY`, `*_SESSION_TOKEN`);
//! 2. web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`) → STS
//!    `AssumeRoleWithWebIdentity` (the token file is re-read on every refresh);
//! 3. the shared config / credentials files (`AWS_PROFILE`, `source_profile` + `role_arn` →
//!    STS `AssumeRole`, `credential_source`, `web_identity_token_file`);
//! 4. ECS / Fargate / EKS Pod Identity container credentials;
//! 5. EC2 instance metadata (IMDSv2, falling back to v1).
//!
//! The result is cached and refreshed five minutes before it expires; if a refresh fails while
//! the old credentials are still valid, they keep being used.

use super::endpoint::Service;
use super::query::query_call;
use crate::cloud::http::{Http, Request};
use crate::cloud::time::{now_unix, parse_rfc3339};
use crate::cloud::{CloudError, Env, Result};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// Unix seconds; `None` = does not expire.
    pub expires_at: Option<i64>,
    /// Which link of the chain produced them (for logs).
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is not secret by itself, but it is shown masked anyway: it names the account.
        write!(
            f,
            "Credentials(from {}, key id {}, expires {:?})",
            self.source,
            crate::secret::mask(&self.access_key_id),
            self.expires_at
        )
    }
}

impl Credentials {
    pub fn new(access_key_id: &str, secret: &str, token: Option<&str>) -> Self {
        Credentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: Secret::new(secret),
            session_token: token.filter(|t| !t.is_empty()).map(Secret::new),
            expires_at: None,
            source: "static".into(),
        }
    }
    fn fresh(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e - REFRESH_MARGIN > now)
    }
    fn valid(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// Refresh this long before expiry.
const REFRESH_MARGIN: i64 = 300;
const MAX_PROFILE_DEPTH: usize = 8;

/// Keys given in the agent's own configuration (they win over the environment).
#[derive(Clone, Debug, Default)]
pub struct StaticKeys {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

/// The cached credential chain. Share one per process (it is `Sync`).
pub struct CredentialProvider {
    http: Http,
    env: Env,
    region: String,
    keys: StaticKeys,
    cache: Mutex<Option<Credentials>>,
    /// IMDS / container endpoints answer fast or not at all.
    pub metadata_timeout: Duration,
}

impl CredentialProvider {
    pub fn new(http: Http, env: Env, region: &str, keys: StaticKeys) -> Self {
        CredentialProvider {
            http,
            env,
            region: region.to_string(),
            keys,
            cache: Mutex::new(None),
            metadata_timeout: Duration::from_secs(2),
        }
    }

    /// Current credentials, refreshed when they are within five minutes of expiry.
    pub fn credentials(&self) -> Result<Credentials> {
        let now = now_unix();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref().filter(|c| c.fresh(now)) {
            return Ok(c.clone());
        }
        match self.resolve() {
            Ok(c) => {
                log::debug!(
                    "AWS credentials from {} (expire {:?})",
                    c.source,
                    c.expires_at
                );
                *cache = Some(c.clone());
                Ok(c)
            }
            Err(e) => match cache.as_ref().filter(|c| c.valid(now)) {
                Some(old) => {
                    log::warn!("refreshing AWS credentials failed, using the current ones until they expire: {e}");
                    Ok(old.clone())
                }
                None => Err(e.context("loading AWS credentials")),
            },
        }
    }

    /// Forgets the cache (after the service rejected the credentials).
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.env.get(k).map(str::trim).filter(|v| !v.is_empty())
    }

    fn resolve(&self) -> Result<Credentials> {
        if let Some(c) = self.static_keys()? {
            return Ok(c);
        }
        if let (Some(file), Some(role)) = (
            self.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.get("AWS_ROLE_ARN"),
        ) {
            let session = self.get("AWS_ROLE_SESSION_NAME").map(str::to_string);
            return self.web_identity(file, role, session.as_deref());
        }
        let explicit_profile = self
            .get("AWS_PROFILE")
            .or_else(|| self.get("AWS_DEFAULT_PROFILE"));
        let profiles = self.load_profiles()?;
        let name = explicit_profile.unwrap_or("default");
        if profiles.contains_key(name) {
            return self.profile_credentials(&profiles, name, 0);
        }
        if let Some(p) = explicit_profile {
            return Err(CloudError::config(
                "AWS_PROFILE",
                format!("profile {p:?} is in neither the shared credentials nor the config file"),
            ));
        }
        if self.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || self.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        {
            return self.container();
        }
        if self
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(CloudError::auth(
                "AWS credential chain",
                "no credentials found: no static keys, web identity, profile or container credentials, and AWS_EC2_METADATA_DISABLED=true",
            ));
        }
        self.imds().map_err(|e| {
            CloudError::auth(
                "AWS credential chain",
                format!("no credentials found (no static keys, web identity, profile or container credentials; instance metadata: {e})"),
            )
        })
    }

    fn static_keys(&self) -> Result<Option<Credentials>> {
        let pick = |cfg: Option<String>, dbt: &str, aws: &str| {
            cfg.filter(|v| !v.is_empty())
                .or_else(|| self.get(dbt).map(str::to_string))
                .or_else(|| self.get(aws).map(str::to_string))
        };
        let id = pick(
            self.keys.access_key_id.clone(),
            "DBT_AWS_ACCESS_KEY_ID",
            "AWS_ACCESS_KEY_ID",
        );
        let secret = pick(
            self.keys
                .secret_access_key
                .as_ref()
                .map(|s| s.expose().to_string()),
            "DBT_AWS_SECRET_ACCESS_KEY",
            "AWS_SECRET_ACCESS_KEY",
        );
        let token = pick(
            self.keys
                .session_token
                .as_ref()
                .map(|s| s.expose().to_string()),
            "DBT_AWS_SESSION_TOKEN",
            "AWS_SESSION_TOKEN",
        );
        match (id, secret) {
            (Some(id), Some(secret)) => {
                let mut c = Credentials::new(&id, &secret, token.as_deref());
                c.source = "static keys".into();
                Ok(Some(c))
            }
            (Some(_), None) => Err(CloudError::config(
                "AWS static keys",
                "an access key id is set but AWS_SECRET_ACCESS_KEY (or DBT_AWS_SECRET_ACCESS_KEY) is not",
            )),
            (None, Some(_)) => Err(CloudError::config(
                "AWS static keys",
                "a secret access key is set but AWS_ACCESS_KEY_ID (or DBT_AWS_ACCESS_KEY_ID) is not",
            )),
            (None, None) => Ok(None),
        }
    }

    fn sts_region(&self) -> &str {
        if self.region.is_empty() {
            "us-east-1"
        } else {
            &self.region
        }
    }

    fn web_identity(
        &self,
        token_file: &str,
        role_arn: &str,
        session: Option<&str>,
    ) -> Result<Credentials> {
        let ctx = "AWS web identity";
        let token = std::fs::read_to_string(token_file).map_err(|e| {
            CloudError::auth(ctx, format!("reading the token file {token_file}: {e}"))
        })?;
        let token = token.trim();
        let session = session.map(str::to_string).unwrap_or_else(session_name);
        let params = vec![
            ("RoleArn".to_string(), role_arn.to_string()),
            ("RoleSessionName".to_string(), session),
            ("WebIdentityToken".to_string(), token.to_string()),
        ];
        let resp = query_call(
            &self.http,
            &self.env,
            self.sts_region(),
            Service::Sts,
            None,
            "AssumeRoleWithWebIdentity",
            &params,
        )
        .map_err(|e| redact_err(e, token))?;
        let mut c = sts_credentials(resp.result(), ctx)?;
        c.source = "web identity".into();
        Ok(c)
    }

    fn assume_role(
        &self,
        source: &Credentials,
        role_arn: &str,
        profile: &BTreeMap<String, String>,
    ) -> Result<Credentials> {
        let mut params = vec![
            ("RoleArn".to_string(), role_arn.to_string()),
            (
                "RoleSessionName".to_string(),
                profile
                    .get("role_session_name")
                    .cloned()
                    .unwrap_or_else(session_name),
            ),
        ];
        if let Some(x) = profile.get("external_id") {
            params.push(("ExternalId".into(), x.clone()));
        }
        if let Some(d) = profile.get("duration_seconds") {
            params.push(("DurationSeconds".into(), d.clone()));
        }
        assume_role_call(&self.http, &self.env, self.sts_region(), source, &params)
    }

    fn load_profiles(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let home = self.get("HOME").map(PathBuf::from);
        let file = |var: &str, default: &str| -> Option<PathBuf> {
            self.get(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        // The config file first: the credentials file wins for keys both define.
        for (path, is_config) in [
            (file("AWS_CONFIG_FILE", ".aws/config"), true),
            (
                file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
                false,
            ),
        ] {
            let Some(path) = path else { continue };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(CloudError::config(
                        format!("reading {}", path.display()),
                        e.to_string(),
                    ))
                }
            };
            for (section, kv) in parse_ini(&text) {
                let name = if is_config {
                    match section.strip_prefix("profile ") {
                        Some(n) => n.trim().to_string(),
                        None if section == "default" => section,
                        None => continue, // sso-session, services: not profiles
                    }
                } else {
                    section
                };
                out.entry(name).or_default().extend(kv);
            }
        }
        Ok(out)
    }

    fn profile_credentials(
        &self,
        profiles: &BTreeMap<String, BTreeMap<String, String>>,
        name: &str,
        depth: usize,
    ) -> Result<Credentials> {
        let ctx = format!("AWS profile {name:?}");
        if depth > MAX_PROFILE_DEPTH {
            return Err(CloudError::config(
                ctx,
                "source_profile chain is too long (a loop?)",
            ));
        }
        let p = profiles.get(name).ok_or_else(|| {
            CloudError::config(&ctx, "no such profile in the shared config files")
        })?;
        let statics = match (p.get("aws_access_key_id"), p.get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => {
                let mut c =
                    Credentials::new(id, secret, p.get("aws_session_token").map(String::as_str));
                c.source = format!("profile {name}");
                Some(c)
            }
            _ => None,
        };
        let Some(role_arn) = p.get("role_arn") else {
            if let Some(c) = statics {
                return Ok(c);
            }
            if p.contains_key("sso_session") || p.contains_key("sso_start_url") {
                return Err(CloudError::config(
                    ctx,
                    "SSO profiles are not supported; use keys, a role or web identity",
                ));
            }
            if p.contains_key("credential_process") {
                return Err(CloudError::config(
                    ctx,
                    "credential_process is not supported",
                ));
            }
            return Err(CloudError::config(
                ctx,
                "the profile has neither keys nor role_arn",
            ));
        };
        if let Some(file) = p.get("web_identity_token_file") {
            let mut c = self.web_identity(
                file,
                role_arn,
                p.get("role_session_name").map(String::as_str),
            )?;
            c.source = format!("profile {name} (web identity)");
            return Ok(c);
        }
        let source = if let Some(src) = p.get("source_profile") {
            if src == name {
                // A profile may name itself: its own keys are the source.
                statics.ok_or_else(|| {
                    CloudError::config(
                        &ctx,
                        "source_profile names itself but the profile has no keys",
                    )
                })?
            } else {
                self.profile_credentials(profiles, src, depth + 1)?
            }
        } else if let Some(cs) = p.get("credential_source") {
            match cs.as_str() {
                "Environment" => self.static_keys()?.ok_or_else(|| {
                    CloudError::config(
                        &ctx,
                        "credential_source=Environment but AWS_ACCESS_KEY_ID is not set",
                    )
                })?,
                "Ec2InstanceMetadata" => self.imds()?,
                "EcsContainer" => self.container()?,
                other => {
                    return Err(CloudError::config(
                        ctx,
                        format!("unknown credential_source {other:?}"),
                    ))
                }
            }
        } else {
            return Err(CloudError::config(
                ctx,
                "role_arn needs source_profile, credential_source or web_identity_token_file",
            ));
        };
        let mut c = self
            .assume_role(&source, role_arn, p)
            .map_err(|e| e.context(&ctx))?;
        c.source = format!("profile {name} (assumed role)");
        Ok(c)
    }

    fn container(&self) -> Result<Credentials> {
        let ctx = "AWS container credentials";
        let url = if let Some(rel) = self.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            format!("http://169.254.170.2{rel}")
        } else {
            let full = self
                .get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                .unwrap_or_default()
                .to_string();
            check_full_uri(&full).map_err(|m| CloudError::config(ctx, m))?;
            full
        };
        let auth = match self.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            // Re-read each time: EKS Pod Identity rotates the file.
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        CloudError::auth(
                            ctx,
                            format!("reading AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {f}: {e}"),
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
            None => self
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(str::to_string),
        };
        let mut req = Request::get(url).timeout(self.metadata_timeout).what(ctx);
        if let Some(a) = &auth {
            if a.contains(['\r', '\n']) {
                return Err(CloudError::config(
                    ctx,
                    "the authorization token contains a line break",
                ));
            }
            req = req.header("Authorization", a.clone()).secret(a);
        }
        let v: serde_json::Value = self.http.send(&req)?.json()?;
        let mut c = json_credentials(&v, "Token", ctx)?;
        c.source = "container credentials".into();
        Ok(c)
    }

    fn imds(&self) -> Result<Credentials> {
        let ctx = "EC2 instance metadata";
        let base = self
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or("http://169.254.169.254")
            .trim_end_matches('/')
            .to_string();
        let t = self.metadata_timeout;
        let token = Request::new("PUT", format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .timeout(t)
            .no_retry()
            .what("IMDSv2 token");
        let token = match self.http.send(&token) {
            Ok(r) => Some(r.text().trim().to_string()),
            Err(e) => {
                // Containers behind a hop limit of 1 cannot reach the token endpoint: IMDSv1.
                log::debug!("IMDSv2 token failed, trying IMDSv1: {e}");
                None
            }
        };
        let get = |path: &str| -> Result<String> {
            let mut r = Request::get(format!("{base}{path}")).timeout(t).what(ctx);
            if let Some(tok) = &token {
                r = r
                    .header("X-aws-ec2-metadata-token", tok.clone())
                    .secret(tok);
            }
            Ok(self.http.send(&r)?.text())
        };
        let roles = get("/latest/meta-data/iam/security-credentials/")?;
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| CloudError::auth(ctx, "the instance has no IAM role attached"))?
            .to_string();
        let body = get(&format!(
            "/latest/meta-data/iam/security-credentials/{role}"
        ))?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| CloudError::decode(ctx, format!("credentials are not JSON: {e}")))?;
        if let Some(code) = v.get("Code").and_then(|c| c.as_str()) {
            if code != "Success" {
                let msg = v.get("Message").and_then(|m| m.as_str()).unwrap_or("");
                return Err(CloudError::auth(ctx, format!("role {role}: {code}: {msg}")));
            }
        }
        let mut c = json_credentials(&v, "Token", ctx)?;
        c.source = format!("instance metadata (role {role})");
        Ok(c)
    }
}

/// STS `AssumeRole` signed with `source`.
pub fn assume_role_call(
    http: &Http,
    env: &Env,
    region: &str,
    source: &Credentials,
    params: &[(String, String)],
) -> Result<Credentials> {
    let resp = query_call(
        http,
        env,
        region,
        Service::Sts,
        Some(source),
        "AssumeRole",
        params,
    )?;
    sts_credentials(resp.result(), "STS AssumeRole")
}

/// `.../Credentials/{AccessKeyId, SecretAccessKey, SessionToken, Expiration}` of an STS result.
fn sts_credentials(result: &crate::cloud::xml::Element, ctx: &str) -> Result<Credentials> {
    let c = result
        .child("Credentials")
        .ok_or_else(|| CloudError::decode(ctx, "the answer has no Credentials element"))?;
    let field = |n: &str| {
        c.text_at(&[n])
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CloudError::decode(ctx, format!("the answer has no Credentials/{n}")))
    };
    let mut creds = Credentials::new(
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        Some(field("SessionToken")?),
    );
    creds.expires_at = Some(
        parse_rfc3339(field("Expiration")?)
            .ok_or_else(|| CloudError::decode(ctx, "Credentials/Expiration is not a timestamp"))?,
    );
    Ok(creds)
}

/// `{AccessKeyId, SecretAccessKey, <token field>, Expiration}` (container and IMDS answers).
fn json_credentials(v: &serde_json::Value, token_field: &str, ctx: &str) -> Result<Credentials> {
    let s = |n: &str| v.get(n).and_then(|x| x.as_str()).filter(|x| !x.is_empty());
    let id =
        s("AccessKeyId").ok_or_else(|| CloudError::decode(ctx, "the answer has no AccessKeyId"))?;
    let secret = s("SecretAccessKey")
        .ok_or_else(|| CloudError::decode(ctx, "the answer has no SecretAccessKey"))?;
    let mut c = Credentials::new(id, secret, s(token_field));
    if let Some(e) = s("Expiration") {
        c.expires_at = Some(parse_rfc3339(e).ok_or_else(|| {
            CloudError::decode(ctx, format!("Expiration {e:?} is not a timestamp"))
        })?);
    }
    Ok(c)
}

/// The SDKs accept a full URI only over HTTPS, or HTTP to loopback / the ECS and EKS Pod
/// Identity agent addresses.
fn check_full_uri(url: &str) -> std::result::Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    if !url.starts_with("http://") {
        return Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {:?} is not an http(s) URL",
            crate::secret::url::mask(url)
        ));
    }
    let host = crate::cloud::http::host_of(url);
    let allowed = host == "localhost"
        || host.starts_with("127.")
        || host == "::1"
        || host == "169.254.170.2"
        || host == "169.254.170.23"
        || host.eq_ignore_ascii_case("fd00:ec2::23");
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI host {host:?} is not allowed over plain HTTP (loopback, 169.254.170.2, 169.254.170.23 or fd00:ec2::23 only)"
        ))
    }
}

fn session_name() -> String {
    format!(
        "dbtune-agent-{}",
        crate::cloud::crypto::random_u64() % 1_000_000_000
    )
}

fn redact_err(mut e: CloudError, secret: &str) -> CloudError {
    e.message = crate::cloud::http::redact(&e.message, &[secret.to_string()]);
    e
}

/// INI sections as the AWS CLI reads them: `[name]`, `key = value`, `#`/`;` comments, keys
/// lower-cased; indented lines (nested sub-sections such as `s3 =`) are skipped.
pub fn parse_ini(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for raw in text.lines() {
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(sec) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((sec.trim().to_string(), BTreeMap::new()));
            continue;
        }
        if let (Some((k, v)), Some(last)) = (line.split_once('='), out.last_mut()) {
            let v = v.trim();
            let v = v
                .split(" #")
                .next()
                .unwrap_or(v)
                .split(" ;")
                .next()
                .unwrap_or(v)
                .trim();
            last.1.insert(k.trim().to_ascii_lowercase(), v.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ini_profiles() {
        let ini = parse_ini("# c\n[default]\naws_access_key_id = A # note\nS3 =\n  max = 1\n[profile x]\nrole_arn=arn\n");
        assert_eq!(ini[0].0, "default");
        assert_eq!(ini[0].1.get("aws_access_key_id").unwrap(), "A");
        assert_eq!(ini[0].1.get("s3").unwrap(), "");
        assert!(!ini[0].1.contains_key("max"));
        assert_eq!(ini[1].0, "profile x");
    }

    #[test]
    fn full_uri_hosts_are_restricted() {
        assert!(check_full_uri("http://169.254.170.23/v1/credentials").is_ok());
        assert!(check_full_uri("http://127.0.0.1:9/x").is_ok());
        assert!(check_full_uri("https://anything.example/x").is_ok());
        assert!(check_full_uri("http://evil.example/x").is_err());
    }

    #[test]
    fn debug_never_shows_keys() {
        let c = Credentials::new("AKIAEXAMPLE", "very-secret-key", Some("tok-tok-tok"));
        let s = format!("{c:?}");
        assert!(!s.contains("AKIAEXAMPLE") && !s.contains("very-secret") && !s.contains("tok-tok"));
    }
}
