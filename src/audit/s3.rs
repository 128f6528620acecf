//! PUT of one object to S3 (or an S3-compatible store): the request is presigned by rusty-s3
//! (SigV4 query authentication, path-style when an endpoint is configured, virtual-host style
//! on AWS) and sent with ureq through `cloud::http` (proxies, timeouts, retries, error bodies).
//! Credentials come from the AWS chain in `cloud::aws`. Presigned URLs carry the signature and
//! any session token in the query string: errors and logs show the URL without it.

use crate::cloud::aws::CredentialProvider;
use crate::cloud::http::{Http, Request};
use crate::cloud::{CloudError, Env, ErrorKind};
use rusty_s3::{Bucket, S3Action, UrlStyle};
use std::time::Duration;

/// How long a presigned URL is valid: it is used at once.
const PRESIGN_FOR: Duration = Duration::from_secs(300);

/// `s3://bucket/prefix` split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub key: String,
}

impl S3Url {
    pub fn parse(s: &str) -> Result<S3Url, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?} is not an s3:// URL (expected s3://bucket/prefix)"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
        if !valid {
            return Err(format!(
                "{s:?}: {bucket:?} is not a valid bucket name (expected 3 to 63 lower-case letters, digits, '-' or '.')"
            ));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            key: key.trim_matches('/').to_string(),
        })
    }
}

pub struct S3 {
    bucket: Bucket,
    http: Http,
    credentials: CredentialProvider,
    /// For messages: `s3://bucket`.
    label: String,
}

impl S3 {
    /// `endpoint`: an S3-compatible store (path-style); `None`: AWS in `region`.
    pub fn new(bucket: &str, region: &str, endpoint: Option<&str>) -> Result<S3, String> {
        let (url, style) = match endpoint {
            Some(e) => (e.to_string(), UrlStyle::Path),
            None => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let parsed = url.parse().map_err(|e| {
            format!(
                "audit.s3_endpoint {:?} is not a URL: {e}",
                crate::secret::url::mask(&url)
            )
        })?;
        let bucket =
            Bucket::new(parsed, style, bucket.to_string(), region.to_string()).map_err(|e| {
                format!(
                    "S3 bucket {bucket:?} at {}: {e}",
                    crate::secret::url::mask(&url)
                )
            })?;
        let http = Http::new();
        let credentials = CredentialProvider::new(
            http.clone(),
            Env::from_process(),
            region,
            Default::default(),
        );
        Ok(S3 {
            label: format!("s3://{}", bucket.name()),
            bucket,
            http,
            credentials,
        })
    }

    /// Uploads `body` as `key`.
    pub fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), CloudError> {
        let what = format!("S3 PutObject {}/{key}", self.label);
        let c = self
            .credentials
            .credentials()
            .map_err(|e| e.context(&what))?;
        let creds = match &c.session_token {
            Some(t) => rusty_s3::Credentials::new_with_token(
                c.access_key_id.clone(),
                c.secret_access_key.expose(),
                t.expose(),
            ),
            None => {
                rusty_s3::Credentials::new(c.access_key_id.clone(), c.secret_access_key.expose())
            }
        };
        let url = self.bucket.put_object(Some(&creds), key).sign(PRESIGN_FOR);
        let mut req = Request::new("PUT", url.as_str())
            .header("Content-Type", content_type)
            .body(body)
            .timeout(Duration::from_secs(30))
            .what(what)
            .secret(c.secret_access_key.expose());
        if let Some(t) = &c.session_token {
            req = req.secret(t.expose());
        }
        match self.http.send(&req) {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.kind == ErrorKind::Auth {
                    // Rotated or revoked keys: the chain is asked again next time.
                    self.credentials.invalidate();
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        assert_eq!(
            S3Url::parse("s3://my-bucket/audit/db1/").unwrap(),
            S3Url {
                bucket: "my-bucket".into(),
                key: "audit/db1".into()
            }
        );
        assert_eq!(S3Url::parse("s3://b12").unwrap().key, "");
        assert!(S3Url::parse("https://x/y").unwrap_err().contains("s3://"));
        assert!(S3Url::parse("s3://A/x")
            .unwrap_err()
            .contains("bucket name"));
    }

    /// `url` is built with the IDNA stub (Cargo.toml: idna_adapter): ASCII and xn-- hosts
    /// parse, a non-ASCII host does not (config::audit refuses it first, with a clearer error).
    #[test]
    fn endpoint_hosts_under_the_idna_stub() {
        for e in [
            "http://127.0.0.1:9000",
            "https://minio.internal:9000/s3",
            "https://xn--bcher-kva.example",
        ] {
            let s3 = S3::new("audit-bkt", "eu-west-1", Some(e)).unwrap();
            assert_eq!(s3.label, "s3://audit-bkt");
        }
        let e = S3::new("audit-bkt", "eu-west-1", Some("https://bücher.example"))
            .err()
            .unwrap();
        assert!(e.contains("audit.s3_endpoint"), "{e}");
        S3::new("audit-bkt", "eu-west-1", None).unwrap();
    }
}
