//! The `patroni:` section (adapters.md §6.1) and its `DBT_PATRONI_*` variables.
//!
//! Kept from the Go agent: `node_name` and `patroni_api_url` are required (unless the URL can be
//! built, below), `cluster_name` is informational. Fixed: `node_host` / `node_port` (bound but
//! ignored by the Go agent) build the REST URL when `patroni_api_url` is not set; `node_name`
//! identifies this node in `/cluster` (role and leader checks); optional HTTPS trust (`ca_file`)
//! and basic auth (`username` / `password`, Patroni's `restapi.authentication`).

use crate::config::keys::Keys;
use crate::config::Sources;
use crate::error::{Error, Result};
use crate::secret::Secret;
use std::time::Duration;

/// The keys read below (`config::keys`).
pub const KEYS: Keys = Keys {
    section: "patroni",
    file: &[
        "node_name",
        "patroni_api_url",
        "node_host",
        "node_port",
        "cluster_name",
        "ca_file",
        "username",
        "password",
        "request_timeout",
    ],
    env: &[
        "DBT_PATRONI_NODE_NAME",
        "DBT_PATRONI_API_URL",
        "DBT_PATRONI_NODE_HOST",
        "DBT_PATRONI_NODE_PORT",
        "DBT_PATRONI_CLUSTER_NAME",
        "DBT_PATRONI_CA_FILE",
        "DBT_PATRONI_USERNAME",
        "DBT_PATRONI_PASSWORD",
        "DBT_PATRONI_REQUEST_TIMEOUT",
    ],
};

#[derive(Clone, Debug)]
pub struct PatroniConfig {
    pub node_name: String,
    /// REST base of this node, without a trailing slash (`http://10.0.1.5:8008`).
    pub api_url: String,
    pub cluster_name: String,
    /// PEM bundle trusted for HTTPS (a private CA); None = the public web PKI roots.
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Deadline of one REST call (restarts have their own: `apply.restart_timeout`).
    pub request_timeout: Duration,
}

const SECTION: &str = "patroni";

fn key(k: &'static str) -> [&'static str; 2] {
    [SECTION, k]
}

impl PatroniConfig {
    pub fn from_sources(src: &Sources) -> Result<PatroniConfig> {
        let mut errs: Vec<String> = Vec::new();
        let mut s = |k: &'static str, env: &'static str| -> Option<String> {
            match src.string(&key(k), Some(env)) {
                Ok(v) => v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
                Err(e) => {
                    errs.push(e);
                    None
                }
            }
        };
        let node_name = s("node_name", "DBT_PATRONI_NODE_NAME");
        let api_url = s("patroni_api_url", "DBT_PATRONI_API_URL");
        let node_host = s("node_host", "DBT_PATRONI_NODE_HOST");
        let node_port = s("node_port", "DBT_PATRONI_NODE_PORT");
        let cluster_name = s("cluster_name", "DBT_PATRONI_CLUSTER_NAME").unwrap_or_default();
        let ca_file = s("ca_file", "DBT_PATRONI_CA_FILE");
        let username = s("username", "DBT_PATRONI_USERNAME");
        let password = s("password", "DBT_PATRONI_PASSWORD").map(Secret::new);
        let timeout = s("request_timeout", "DBT_PATRONI_REQUEST_TIMEOUT");

        if node_name.is_none() {
            errs.push(
                "patroni.node_name (DBT_PATRONI_NODE_NAME): required (the Patroni member name of this node, as in `patronictl list`)".into(),
            );
        }
        let port = match node_port.as_deref() {
            None => 8008,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    errs.push(format!(
                        "patroni.node_port (DBT_PATRONI_NODE_PORT): {p:?} is not a TCP port (1-65535)"
                    ));
                    8008
                }
            },
        };
        let api_url = match (api_url, node_host) {
            (Some(u), _) => Some(u),
            (None, Some(h)) => Some(format!("http://{}:{port}", bracket(&h))),
            (None, None) => {
                errs.push("patroni.patroni_api_url (DBT_PATRONI_API_URL): required (this node's Patroni REST API, e.g. http://10.0.1.5:8008), or patroni.node_host (DBT_PATRONI_NODE_HOST) to build it".into());
                None
            }
        };
        let api_url = api_url.map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &api_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
                errs.push(format!(
                    "patroni.patroni_api_url (DBT_PATRONI_API_URL): {:?} is not an http:// or https:// URL",
                    crate::secret::url::mask(u)
                ));
            }
        }
        if username.is_some() != password.is_some() {
            errs.push("patroni.username / patroni.password (DBT_PATRONI_USERNAME / DBT_PATRONI_PASSWORD): basic auth needs both".into());
        }
        if let Some(f) = &ca_file {
            if !std::path::Path::new(f).is_file() {
                errs.push(format!(
                    "patroni.ca_file (DBT_PATRONI_CA_FILE): {f:?}: no such file"
                ));
            }
        }
        let request_timeout = match timeout.as_deref() {
            None => Duration::from_secs(10),
            Some(t) => match t.parse::<u64>() {
                Ok(n) if (1..=300).contains(&n) => Duration::from_secs(n),
                _ => {
                    errs.push(format!(
                        "patroni.request_timeout (DBT_PATRONI_REQUEST_TIMEOUT): {t:?} is not a number of seconds between 1 and 300"
                    ));
                    Duration::from_secs(10)
                }
            },
        };
        if !errs.is_empty() {
            return Err(Error::invalid(format!(
                "invalid Patroni configuration: {}",
                errs.join("; ")
            )));
        }
        Ok(PatroniConfig {
            node_name: node_name.unwrap_or_default(),
            api_url: api_url.unwrap_or_default(),
            cluster_name,
            ca_file,
            username,
            password,
            request_timeout,
        })
    }
}

/// IPv6 literals need brackets in a URL (the Go agent leaves them bare).
pub fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<PatroniConfig> {
        let src = Sources::from_yaml(yaml, Env::from_pairs(env.iter().copied())).unwrap();
        PatroniConfig::from_sources(&src)
    }

    #[test]
    fn reads_the_section_and_env_overrides_it() {
        let c = load(
            "patroni:\n  node_name: n1\n  patroni_api_url: http://10.0.0.5:8008/\n  cluster_name: demo\n",
            &[("DBT_PATRONI_NODE_NAME", "n2")],
        )
        .unwrap();
        assert_eq!(c.node_name, "n2");
        assert_eq!(c.api_url, "http://10.0.0.5:8008");
        assert_eq!(c.cluster_name, "demo");
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert!(c.username.is_none() && c.ca_file.is_none());
    }

    #[test]
    fn node_host_and_port_build_the_url_with_ipv6_brackets() {
        let c = load(
            "",
            &[
                ("DBT_PATRONI_NODE_NAME", "n1"),
                ("DBT_PATRONI_NODE_HOST", "fd00::5"),
                ("DBT_PATRONI_NODE_PORT", "8010"),
            ],
        )
        .unwrap();
        assert_eq!(c.api_url, "http://[fd00::5]:8010");
        let c = load("patroni:\n  node_name: n1\n  node_host: 10.0.0.7\n", &[]).unwrap();
        assert_eq!(c.api_url, "http://10.0.0.7:8008");
    }

    #[test]
    fn every_problem_is_named() {
        let e = load(
            "patroni:\n  patroni_api_url: ftp://x\n  username: u\n  node_port: 99999\n  request_timeout: 0\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for want in [
            "patroni.node_name (DBT_PATRONI_NODE_NAME): required",
            "\"ftp://x\" is not an http:// or https:// URL",
            "basic auth needs both",
            "patroni.node_port (DBT_PATRONI_NODE_PORT): \"99999\"",
            "patroni.request_timeout",
        ] {
            assert!(e.contains(want), "{want} missing from {e}");
        }
        let e = load("", &[("DBT_PATRONI_NODE_NAME", "n1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("patroni.patroni_api_url (DBT_PATRONI_API_URL): required"),
            "{e}"
        );
    }

    #[test]
    fn the_password_never_shows() {
        let c = load(
            "patroni:\n  node_name: n1\n  patroni_api_url: https://h:8008\n  username: dbtune\n  password: s3cr3t-pw\n",
            &[],
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
        assert_eq!(c.password.unwrap().expose(), "s3cr3t-pw");
    }
}
