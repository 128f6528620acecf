//! The `aiven:` section and its `DBT_AIVEN_*` variables (adapters.md §4.1), plus the API base
//! URL. Unlike the Go agent, `DBT_AIVEN_METRIC_RESOLUTION_SECONDS` and `DBT_AIVEN_DATABASE_NAME`
//! are read (Go binds them to other keys and ignores them), and the Go client's own
//! `AIVEN_WEB_URL` / `AIVEN_TOKEN` are honoured as fallbacks.

use crate::config::keys::Keys;
use crate::config::Sources;
use crate::secret::Secret;
use std::time::Duration;

pub const API_URL: &str = "https://api.aiven.io";
const DEFAULT_RESOLUTION: i64 = 30;

/// The keys read below (`config::keys`): adapters.md §4.1 plus the `api_url` override.
pub const KEYS: Keys = Keys {
    section: "aiven",
    file: &[
        "aiven_api_token",
        "aiven_project_name",
        "aiven_service_name",
        "metric_resolution_seconds",
        "database_name",
        "api_url",
    ],
    env: &[
        "DBT_AIVEN_API_TOKEN",
        "DBT_AIVEN_PROJECT_NAME",
        "DBT_AIVEN_SERVICE_NAME",
        "DBT_AIVEN_METRIC_RESOLUTION_SECONDS",
        "DBT_AIVEN_DATABASE_NAME",
        "DBT_AIVEN_API_URL",
    ],
};

#[derive(Clone, Debug)]
pub struct AivenConfig {
    pub token: Secret,
    /// Where the token came from (for `--check`; never the value).
    pub token_source: String,
    pub project: String,
    pub service: String,
    /// How often Aiven's metrics are fetched (and the guardrail checked).
    pub resolution: Duration,
    /// Accepted for compatibility; Aiven's metrics are per service, so nothing uses it.
    pub database_name: Option<String>,
    /// Base URL without the `/v1` suffix.
    pub api_url: String,
}

impl AivenConfig {
    pub fn from_sources(src: &Sources) -> Result<AivenConfig, String> {
        let mut errs = Vec::new();
        let mut get = |key: &str, env: &str| match src.string(&["aiven", key], Some(env)) {
            Ok(v) => v,
            Err(e) => {
                errs.push(e);
                None
            }
        };
        let token_env = src.env.get("DBT_AIVEN_API_TOKEN").is_some();
        let mut token = get("aiven_api_token", "DBT_AIVEN_API_TOKEN");
        let mut token_source = if token_env {
            "DBT_AIVEN_API_TOKEN".to_string()
        } else {
            "aiven.AIVEN_API_TOKEN".to_string()
        };
        if token.is_none() {
            if let Some(t) = src.env.get("AIVEN_TOKEN") {
                token = Some(t.to_string());
                token_source = "AIVEN_TOKEN".into();
            }
        }
        let project = get("aiven_project_name", "DBT_AIVEN_PROJECT_NAME");
        let service = get("aiven_service_name", "DBT_AIVEN_SERVICE_NAME");
        let database_name = get("database_name", "DBT_AIVEN_DATABASE_NAME");
        let api_url = get("api_url", "DBT_AIVEN_API_URL")
            .or_else(|| src.env.get("AIVEN_WEB_URL").map(str::to_string));
        let resolution = match src.int(
            &["aiven", "metric_resolution_seconds"],
            Some("DBT_AIVEN_METRIC_RESOLUTION_SECONDS"),
            DEFAULT_RESOLUTION,
        ) {
            Ok(s) if (1..=3600).contains(&s) => s,
            Ok(s) => {
                errs.push(format!(
                    "{}: {s} is out of range (expected whole seconds, 1 to 3600)",
                    src.label(
                        &["aiven", "metric_resolution_seconds"],
                        Some("DBT_AIVEN_METRIC_RESOLUTION_SECONDS")
                    )
                ));
                DEFAULT_RESOLUTION
            }
            Err(e) => {
                errs.push(format!("{e} (whole seconds, e.g. 30)"));
                DEFAULT_RESOLUTION
            }
        };
        if token.is_none() {
            errs.push("aiven.AIVEN_API_TOKEN (DBT_AIVEN_API_TOKEN) is required".into());
        }
        if project.is_none() {
            errs.push("aiven.AIVEN_PROJECT_NAME (DBT_AIVEN_PROJECT_NAME) is required".into());
        }
        if service.is_none() {
            errs.push("aiven.AIVEN_SERVICE_NAME (DBT_AIVEN_SERVICE_NAME) is required".into());
        }
        if let Some(u) = &api_url {
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                errs.push(format!(
                    "aiven.api_url (DBT_AIVEN_API_URL, AIVEN_WEB_URL): expected an http(s) URL, got {:?}",
                    crate::secret::url::mask(u)
                ));
            }
        }
        if !errs.is_empty() {
            return Err(errs.join("; "));
        }
        // Paths carry `/v1`; accept a base given with it too (the OpenAPI server URL has it).
        let api_url = api_url.unwrap_or_else(|| API_URL.to_string());
        let api_url = api_url.trim_end_matches('/');
        let api_url = api_url.strip_suffix("/v1").unwrap_or(api_url).to_string();
        Ok(AivenConfig {
            token: Secret::new(token.unwrap_or_default()),
            token_source,
            project: project.unwrap_or_default(),
            service: service.unwrap_or_default(),
            resolution: Duration::from_secs(resolution as u64),
            database_name,
            api_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn keys_env_fallbacks_and_errors() {
        let s = Sources::from_yaml(
            "aiven:\n  AIVEN_API_TOKEN: t0k\n  AIVEN_PROJECT_NAME: p\n  AIVEN_SERVICE_NAME: s\n",
            Env::default(),
        )
        .unwrap();
        let c = AivenConfig::from_sources(&s).unwrap();
        assert_eq!((c.project.as_str(), c.service.as_str()), ("p", "s"));
        assert_eq!(c.token.expose(), "t0k");
        assert_eq!(c.token_source, "aiven.AIVEN_API_TOKEN");
        assert_eq!(c.api_url, API_URL);
        assert_eq!(c.resolution, Duration::from_secs(30));
        assert!(!format!("{c:?}").contains("t0k"));

        // The variables the Go agent ignores are read; AIVEN_WEB_URL and AIVEN_TOKEN are
        // fallbacks; a configured token wins over AIVEN_TOKEN.
        let s = Sources::from_yaml(
            "aiven:\n  AIVEN_PROJECT_NAME: p\n",
            Env::from_pairs([
                ("DBT_AIVEN_SERVICE_NAME", "env-s"),
                ("DBT_AIVEN_METRIC_RESOLUTION_SECONDS", "10"),
                ("DBT_AIVEN_DATABASE_NAME", "db1"),
                ("AIVEN_WEB_URL", "http://127.0.0.1:9/v1/"),
                ("AIVEN_TOKEN", "fallback"),
            ]),
        )
        .unwrap();
        let c = AivenConfig::from_sources(&s).unwrap();
        assert_eq!(c.service, "env-s");
        assert_eq!(c.resolution, Duration::from_secs(10));
        assert_eq!(c.database_name.as_deref(), Some("db1"));
        assert_eq!(c.api_url, "http://127.0.0.1:9");
        assert_eq!(
            (c.token.expose(), c.token_source.as_str()),
            ("fallback", "AIVEN_TOKEN")
        );
        let s = Sources::from_yaml(
            "aiven:\n  AIVEN_PROJECT_NAME: p\n  AIVEN_SERVICE_NAME: s\n  api_url: http://a\n",
            Env::from_pairs([
                ("DBT_AIVEN_API_TOKEN", "mine"),
                ("AIVEN_TOKEN", "other"),
                ("AIVEN_WEB_URL", "http://b"),
            ]),
        )
        .unwrap();
        let c = AivenConfig::from_sources(&s).unwrap();
        assert_eq!((c.token.expose(), c.api_url.as_str()), ("mine", "http://a"));
        assert_eq!(c.token_source, "DBT_AIVEN_API_TOKEN");

        let e = AivenConfig::from_sources(&Sources::default()).unwrap_err();
        assert!(
            e.contains("DBT_AIVEN_API_TOKEN")
                && e.contains("DBT_AIVEN_PROJECT_NAME")
                && e.contains("DBT_AIVEN_SERVICE_NAME"),
            "{e}"
        );
        // A duration string is refused (Go would multiply it again), with the key named.
        let s = Sources::from_yaml(
            "aiven:\n  AIVEN_API_TOKEN: t\n  AIVEN_PROJECT_NAME: p\n  AIVEN_SERVICE_NAME: s\n  metric_resolution_seconds: 30s\n",
            Env::default(),
        )
        .unwrap();
        let e = AivenConfig::from_sources(&s).unwrap_err();
        assert!(e.contains("aiven.metric_resolution_seconds"), "{e}");
    }
}
