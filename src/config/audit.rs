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
}
