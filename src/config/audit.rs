//! The `audit:` section: where the S3 audit trail of configuration changes goes.
//! `audit.s3_url` (`s3://bucket/prefix`), `audit.s3_region`, `audit.s3_endpoint` (an
//! S3-compatible store, addressed path-style); env `DBT_AUDIT_S3_URL`, `DBT_AUDIT_S3_REGION`,
//! `DBT_AUDIT_S3_ENDPOINT`. The region and endpoint also serve `--output s3://…`.

use super::Sources;
use crate::audit::s3::S3Url;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// None: no audit trail.
    pub s3_url: Option<S3Url>,
    pub region: String,
    pub endpoint: Option<String>,
}

/// The keys read below (`config::keys`).
pub const KEYS: super::keys::Keys = super::keys::Keys {
    section: "audit",
    file: &["s3_url", "s3_region", "s3_endpoint"],
    env: &[
        "DBT_AUDIT_S3_URL",
        "DBT_AUDIT_S3_REGION",
        "DBT_AUDIT_S3_ENDPOINT",
    ],
};

pub const DEFAULT_REGION: &str = "us-east-1";

impl AuditConfig {
    pub fn from_sources(src: &Sources) -> Result<AuditConfig, String> {
        let mut errs = Vec::new();
        let url = src
            .string(&["audit", "s3_url"], Some("DBT_AUDIT_S3_URL"))
            .unwrap_or_else(|e| {
                errs.push(e);
                None
            });
        let s3_url = match url.as_deref().map(S3Url::parse) {
            Some(Ok(u)) => Some(u),
            Some(Err(e)) => {
                errs.push(format!("audit.s3_url (DBT_AUDIT_S3_URL): {e}"));
                None
            }
            None => None,
        };
        let region = src
            .string(&["audit", "s3_region"], Some("DBT_AUDIT_S3_REGION"))
            .unwrap_or_else(|e| {
                errs.push(e);
                None
            })
            .or_else(|| src.env.get("AWS_REGION").map(str::to_string))
            .or_else(|| src.env.get("AWS_DEFAULT_REGION").map(str::to_string))
            .filter(|r| !r.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        if !region
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            errs.push(format!(
                "audit.s3_region (DBT_AUDIT_S3_REGION): {region:?} is not a region name (expected e.g. eu-west-1)"
            ));
        }
        let endpoint = src
            .string(&["audit", "s3_endpoint"], Some("DBT_AUDIT_S3_ENDPOINT"))
            .unwrap_or_else(|e| {
                errs.push(e);
                None
            });
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 10 {
                errs.push(format!(
                    "audit.s3_endpoint (DBT_AUDIT_S3_ENDPOINT): {:?} is not an http(s) URL (expected e.g. https://minio.internal:9000)",
                    crate::secret::url::mask(e)
                ));
            } else if !endpoint_host(e).is_ascii() {
                // The URL parser behind rusty-s3 is built without Unicode tables (Cargo.toml:
                // idna_adapter), so it cannot map an internationalised name itself.
                errs.push(format!(
                    "audit.s3_endpoint (DBT_AUDIT_S3_ENDPOINT): {:?} has a non-ASCII host name (expected its ASCII form, xn--…)",
                    crate::secret::url::mask(e)
                ));
            }
        }
        if errs.is_empty() {
            Ok(AuditConfig {
                s3_url,
                region,
                endpoint,
            })
        } else {
            Err(errs.join("; "))
        }
    }
}

/// The host (and port) of an `http(s)://[user@]host[:port]/…` URL: user info is left out, the
/// parser percent-encodes it.
fn endpoint_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit('@').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn keys_env_and_errors() {
        let s = Sources::from_yaml(
            "audit:\n  s3_url: s3://audit-bkt/db1/\n",
            Env::from_pairs([
                ("DBT_AUDIT_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("AWS_REGION", "eu-west-1"),
            ]),
        )
        .unwrap();
        let c = AuditConfig::from_sources(&s).unwrap();
        assert_eq!(c.s3_url.unwrap().key, "db1");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        let s = Sources::from_yaml(
            "audit:\n  s3_url: https://x\n  s3_endpoint: minio:9000\n",
            Env::from_pairs(Vec::<(String, String)>::new()),
        )
        .unwrap();
        let e = AuditConfig::from_sources(&s).unwrap_err();
        assert!(e.contains("audit.s3_url (DBT_AUDIT_S3_URL)"), "{e}");
        assert!(
            e.contains("audit.s3_endpoint (DBT_AUDIT_S3_ENDPOINT)"),
            "{e}"
        );
    }

    #[test]
    fn a_non_ascii_endpoint_host_asks_for_its_ascii_form() {
        let load = |endpoint: &str| {
            let s = Sources::from_yaml(
                "audit:\n  s3_url: s3://audit-bkt/db1/\n",
                Env::from_pairs([("DBT_AUDIT_S3_ENDPOINT", endpoint)]),
            )
            .unwrap();
            AuditConfig::from_sources(&s)
        };
        let e = load("https://bücher.example:9000/s3").unwrap_err();
        assert!(
            e.contains("audit.s3_endpoint (DBT_AUDIT_S3_ENDPOINT)") && e.contains("xn--"),
            "{e}"
        );
        // The same store written in its ASCII form, and non-ASCII outside the host, load.
        let c = load("https://xn--bcher-kva.example:9000/s3").unwrap();
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://xn--bcher-kva.example:9000/s3")
        );
        load("https://minio.internal:9000/bücher").unwrap();
        assert_eq!(
            endpoint_host("https://user:pässword@minio:9000/x"),
            "minio:9000"
        );
    }
}
