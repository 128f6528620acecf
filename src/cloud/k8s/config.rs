//! Where the Kubernetes API is and how to authenticate: in-cluster service-account config
//! (tried first, like client-go's `InClusterConfig`) or a kubeconfig file (current or named
//! context: bearer token, token file, client certificate, exec plugin; CA file or data).
//! `insecure-skip-tls-verify` is refused unless the caller explicitly allows it.

use crate::cloud::encoding::b64_decode;
use crate::cloud::http::TlsOptions;
use crate::cloud::{CloudError, Env, Result};
use crate::secret::Secret;
use serde_norway::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// client-go re-reads the projected token about once a minute; bound tokens rotate hourly.
const TOKEN_REREAD: Duration = Duration::from_secs(60);

/// A token file re-read when it changes (mtime) or at least every minute.
pub struct TokenFile {
    pub path: PathBuf,
    state: Mutex<Option<(Option<SystemTime>, Instant, Secret)>>,
}

impl TokenFile {
    pub fn new(path: PathBuf) -> Self {
        TokenFile {
            path,
            state: Mutex::new(None),
        }
    }

    pub fn token(&self) -> Result<Secret> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((m, at, t)) = st.as_ref() {
            if *m == mtime && at.elapsed() < TOKEN_REREAD {
                return Ok(t.clone());
            }
        }
        self.reload(&mut st, mtime)
    }

    /// Forces a re-read (after the API server answered 401).
    pub fn refresh(&self) -> Result<Secret> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.reload(&mut st, mtime)
    }

    fn reload(
        &self,
        st: &mut Option<(Option<SystemTime>, Instant, Secret)>,
        mtime: Option<SystemTime>,
    ) -> Result<Secret> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            CloudError::auth(
                "Kubernetes service-account token",
                format!("reading {}: {e}", self.path.display()),
            )
        })?;
        let t = Secret::new(text.trim());
        if t.is_empty() {
            return Err(CloudError::auth(
                "Kubernetes service-account token",
                format!("{} is empty", self.path.display()),
            ));
        }
        *st = Some((mtime, Instant::now(), t.clone()));
        Ok(t)
    }
}

/// An exec credential plugin (`aws eks get-token`, `gke-gcloud-auth-plugin`, `kubelogin`).
pub struct ExecPlugin {
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub api_version: String,
    cache: Mutex<Option<(Secret, Option<i64>)>>,
}

impl ExecPlugin {
    pub fn token(&self) -> Result<Secret> {
        let ctx = format!("Kubernetes exec plugin {:?}", self.command);
        let now = crate::cloud::time::now_unix();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, exp)) = cache.as_ref() {
            if exp.is_some_and(|e| e - 60 > now) {
                return Ok(t.clone());
            }
        }
        let info = format!(
            r#"{{"apiVersion":"{}","kind":"ExecCredential","spec":{{"interactive":false}}}}"#,
            self.api_version
        );
        let out = std::process::Command::new(&self.command)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", info)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| CloudError::auth(&ctx, format!("cannot run it: {e}")))?;
        if !out.status.success() {
            let err: String = String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(300)
                .collect();
            return Err(CloudError::auth(
                ctx,
                format!("exited with {}: {}", out.status, err.trim()),
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            CloudError::decode(&ctx, format!("output is not an ExecCredential: {e}"))
        })?;
        let status = &v["status"];
        let token = status["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CloudError::decode(&ctx, "ExecCredential has no status.token (client certificates from plugins are not supported)"))?;
        let exp = status["expirationTimestamp"]
            .as_str()
            .and_then(crate::cloud::time::parse_rfc3339);
        let t = Secret::new(token);
        *cache = Some((t.clone(), exp));
        Ok(t)
    }
}

pub enum Auth {
    None,
    Token(Secret),
    TokenFile(TokenFile),
    Exec(ExecPlugin),
}

impl Auth {
    /// The bearer token for the next request, if this auth uses one.
    pub fn bearer(&self) -> Result<Option<Secret>> {
        match self {
            Auth::None => Ok(None),
            Auth::Token(t) => Ok(Some(t.clone())),
            Auth::TokenFile(f) => f.token().map(Some),
            Auth::Exec(e) => e.token().map(Some),
        }
    }
}

pub struct KubeConfig {
    /// `https://host:port`, no trailing slash.
    pub server: String,
    pub tls: TlsOptions,
    pub auth: Auth,
    /// The context's namespace (kubeconfig) or the service account's (in cluster).
    pub namespace: Option<String>,
    /// "in-cluster" or "kubeconfig <path> context <name>".
    pub source: String,
}

impl KubeConfig {
    /// In-cluster config from the standard service-account directory; `Ok(None)` when not
    /// running in a pod (either variable unset or the token unreadable).
    pub fn in_cluster(env: &Env) -> Result<Option<KubeConfig>> {
        Self::in_cluster_at(env, Path::new(SERVICE_ACCOUNT_DIR))
    }

    pub fn in_cluster_at(env: &Env, sa_dir: &Path) -> Result<Option<KubeConfig>> {
        let (Some(host), Some(port)) = (
            env.get("KUBERNETES_SERVICE_HOST"),
            env.get("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        let token = TokenFile::new(sa_dir.join("token"));
        if token.token().is_err() {
            return Ok(None);
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let ca_path = sa_dir.join("ca.crt");
        let ca = std::fs::read(&ca_path).map_err(|e| {
            CloudError::config(
                "Kubernetes in-cluster config",
                format!("reading {}: {e}", ca_path.display()),
            )
        })?;
        let namespace = std::fs::read_to_string(sa_dir.join("namespace"))
            .ok()
            .map(|s| s.trim().to_string());
        Ok(Some(KubeConfig {
            server: format!("https://{host}:{port}"),
            tls: TlsOptions {
                ca_pem: Some(ca),
                ..Default::default()
            },
            auth: Auth::TokenFile(token),
            namespace,
            source: "in-cluster".into(),
        }))
    }

    /// In-cluster first, then the kubeconfig file, as the CloudNativePG adapter resolves it.
    pub fn load(env: &Env, kubeconfig: Option<&Path>, allow_insecure: bool) -> Result<KubeConfig> {
        if let Some(c) = Self::in_cluster(env)? {
            return Ok(c);
        }
        let path = kubeconfig
            .map(Path::to_path_buf)
            .or_else(|| {
                env.get("HOME")
                    .map(|h| PathBuf::from(h).join(".kube/config"))
            })
            .ok_or_else(|| {
                CloudError::config(
                    "Kubernetes config",
                    "not in a cluster and no kubeconfig path",
                )
            })?;
        Self::from_kubeconfig(&path, None, allow_insecure)
    }

    /// Reads a kubeconfig file; `context = None` uses `current-context`.
    pub fn from_kubeconfig(
        path: &Path,
        context: Option<&str>,
        allow_insecure: bool,
    ) -> Result<KubeConfig> {
        let ctx = format!("kubeconfig {}", path.display());
        let text =
            std::fs::read_to_string(path).map_err(|e| CloudError::config(&ctx, e.to_string()))?;
        let doc: Value = serde_norway::from_str(&text)
            .map_err(|e| CloudError::config(&ctx, format!("not YAML: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let name = match context {
            Some(c) => c.to_string(),
            None => str_at(&doc, "current-context")
                .ok_or_else(|| CloudError::config(&ctx, "no current-context"))?
                .to_string(),
        };
        let find = |list: &str, n: &str, inner: &str| -> Result<Value> {
            doc.get(list)
                .and_then(Value::as_sequence)
                .and_then(|s| s.iter().find(|e| str_at(e, "name") == Some(n)))
                .and_then(|e| e.get(inner))
                .cloned()
                .ok_or_else(|| CloudError::config(&ctx, format!("{list} has no entry named {n:?}")))
        };
        let context_v = find("contexts", &name, "context")?;
        let cluster_name = str_at(&context_v, "cluster").ok_or_else(|| {
            CloudError::config(&ctx, format!("context {name:?} names no cluster"))
        })?;
        let cluster = find("clusters", cluster_name, "cluster")?;
        let user = match str_at(&context_v, "user") {
            Some(u) => find("users", u, "user")?,
            None => Value::Null,
        };
        let server = str_at(&cluster, "server")
            .ok_or_else(|| {
                CloudError::config(&ctx, format!("cluster {cluster_name:?} has no server"))
            })?
            .trim_end_matches('/')
            .to_string();
        let insecure = cluster
            .get("insecure-skip-tls-verify")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if insecure && !allow_insecure {
            return Err(CloudError::config(
                &ctx,
                format!("cluster {cluster_name:?} sets insecure-skip-tls-verify; refusing to talk to it without certificate checks unless explicitly allowed"),
            ));
        }
        let read = |data_key: &str, file_key: &str, v: &Value| -> Result<Option<Vec<u8>>> {
            if let Some(d) = str_at(v, data_key) {
                return b64_decode(d)
                    .map(Some)
                    .ok_or_else(|| CloudError::config(&ctx, format!("{data_key} is not base64")));
            }
            if let Some(f) = str_at(v, file_key) {
                let p = base.join(f);
                return std::fs::read(&p).map(Some).map_err(|e| {
                    CloudError::config(&ctx, format!("reading {file_key} {}: {e}", p.display()))
                });
            }
            Ok(None)
        };
        let tls = TlsOptions {
            ca_pem: read(
                "certificate-authority-data",
                "certificate-authority",
                &cluster,
            )?,
            client_cert_pem: read("client-certificate-data", "client-certificate", &user)?,
            client_key_pem: read("client-key-data", "client-key", &user)?,
            insecure,
        };
        let auth = if let Some(t) = str_at(&user, "token") {
            Auth::Token(Secret::new(t))
        } else if let Some(f) = str_at(&user, "tokenFile") {
            Auth::TokenFile(TokenFile::new(base.join(f)))
        } else if let Some(exec) = user.get("exec") {
            let command = str_at(exec, "command")
                .ok_or_else(|| CloudError::config(&ctx, "exec has no command"))?;
            let seq = |k: &str| {
                exec.get(k)
                    .and_then(Value::as_sequence)
                    .cloned()
                    .unwrap_or_default()
            };
            Auth::Exec(ExecPlugin {
                command: command.to_string(),
                args: seq("args")
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect(),
                env: seq("env")
                    .iter()
                    .filter_map(|e| {
                        Some((
                            str_at(e, "name")?.to_string(),
                            str_at(e, "value")?.to_string(),
                        ))
                    })
                    .collect(),
                api_version: str_at(exec, "apiVersion")
                    .unwrap_or("client.authentication.k8s.io/v1")
                    .to_string(),
                cache: Mutex::new(None),
            })
        } else if user.get("auth-provider").is_some() || user.get("username").is_some() {
            return Err(CloudError::config(ctx, "auth-provider and basic auth are not supported (use a token, client certificate or exec plugin)"));
        } else {
            Auth::None
        };
        Ok(KubeConfig {
            server,
            tls,
            auth,
            namespace: str_at(&context_v, "namespace").map(str::to_string),
            source: format!("kubeconfig {} context {name}", path.display()),
        })
    }
}

fn str_at<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}
