//! AWS Signature Version 4: header signing (the `Authorization` header) and query signing
//! (presigned URLs such as RDS IAM authentication tokens). Verified against the AWS CRT
//! signing test suite (tests/cloud_sigv4.rs).

use super::credentials::Credentials;
use crate::cloud::crypto::{hex, hmac_sha256, sha256_hex};
use crate::cloud::encoding::{percent_decode, uri_encode};
use crate::cloud::http::Request;
use crate::cloud::time::amz_date;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Everything that goes into a signature besides the request itself.
#[derive(Clone, Debug)]
pub struct SigningParams<'a> {
    pub credentials: &'a Credentials,
    pub region: &'a str,
    /// Signing name: `rds`, `ec2`, `monitoring`, `pi`, `sts`, `rds-db`.
    pub service: &'a str,
    /// Unix seconds.
    pub time: i64,
    /// Remove `.`/`..` segments and duplicate slashes before encoding (every service but S3).
    pub normalize_path: bool,
    /// Add and sign `x-amz-content-sha256` (header signing only).
    pub sign_body: bool,
    /// Add the session token after signing instead of signing it (a few services want that).
    pub omit_session_token: bool,
}

impl<'a> SigningParams<'a> {
    pub fn new(credentials: &'a Credentials, region: &'a str, service: &'a str, time: i64) -> Self {
        SigningParams {
            credentials,
            region,
            service,
            time,
            normalize_path: true,
            sign_body: false,
            omit_session_token: false,
        }
    }
    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            &amz_date(self.time)[..8],
            self.region,
            self.service
        )
    }
}

/// Where the signature goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Headers,
    /// Presigned URL valid for this many seconds.
    Query {
        expires_in: u64,
    },
}

/// The request as it will go on the wire: raw (already encoded) path and query.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Must include `host`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The signing result; the intermediate strings are kept for tests and debugging (they hold
/// no secret: the key only enters the HMAC chain).
#[derive(Clone, Debug)]
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    /// Headers to add to the request (header mode), in this order.
    pub add_headers: Vec<(String, String)>,
    /// Query parameters (already encoded) to append (query mode), in this order.
    pub add_query: Vec<(String, String)>,
}

/// Signs `parts`.
pub fn sign_parts(parts: &Parts, p: &SigningParams, mode: Mode) -> Signed {
    let date = amz_date(p.time);
    let scope = p.scope();
    let token = p
        .credentials
        .session_token
        .as_ref()
        .map(|t| t.expose().to_string());
    let payload_hash = sha256_hex(&parts.body);

    let mut headers = parts.headers.clone();
    // Headers the signer owns replace whatever the caller had.
    headers.retain(|(n, _)| {
        let n = n.to_ascii_lowercase();
        n != "authorization"
            && n != "x-amz-date"
            && n != "x-amz-security-token"
            && n != "x-amz-content-sha256"
    });
    let mut add_headers = Vec::new();
    let mut extra_query: Vec<(String, String)> = Vec::new();
    match mode {
        Mode::Headers => {
            add_headers.push(("X-Amz-Date".to_string(), date.clone()));
            if p.sign_body {
                add_headers.push(("x-amz-content-sha256".to_string(), payload_hash.clone()));
            }
            if let (Some(t), false) = (&token, p.omit_session_token) {
                add_headers.push(("X-Amz-Security-Token".to_string(), t.clone()));
            }
            headers.extend(add_headers.iter().cloned());
        }
        Mode::Query { .. } => {}
    }

    let (canonical_headers, signed_headers) = canonical_headers(&headers);
    let mut query = parse_query(&parts.query);
    if let Mode::Query { expires_in } = mode {
        extra_query = vec![
            ("X-Amz-Algorithm".into(), ALGORITHM.into()),
            (
                "X-Amz-Credential".into(),
                uri_encode(&format!("{}/{scope}", p.credentials.access_key_id), false),
            ),
            ("X-Amz-Date".into(), date.clone()),
            (
                "X-Amz-SignedHeaders".into(),
                uri_encode(&signed_headers, false),
            ),
            ("X-Amz-Expires".into(), expires_in.to_string()),
        ];
        if let (Some(t), false) = (&token, p.omit_session_token) {
            extra_query.push(("X-Amz-Security-Token".into(), uri_encode(t, false)));
        }
        query.extend(extra_query.iter().cloned());
    }
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let path = if p.normalize_path {
        normalize_path(&parts.path)
    } else {
        parts.path.clone()
    };
    let canonical_path = uri_encode(if path.is_empty() { "/" } else { &path }, true);

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method,
        canonical_path,
        canonical_query,
        canonical_headers,
        signed_headers,
        payload_hash
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let signature = hex(&hmac_sha256(&signing_key(p), string_to_sign.as_bytes()));

    match mode {
        Mode::Headers => {
            add_headers.push((
                "Authorization".to_string(),
                format!(
                    "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                    p.credentials.access_key_id
                ),
            ));
            if let (Some(t), true) = (&token, p.omit_session_token) {
                add_headers.push(("X-Amz-Security-Token".to_string(), t.clone()));
            }
        }
        Mode::Query { .. } => {
            if let (Some(t), true) = (&token, p.omit_session_token) {
                extra_query.push(("X-Amz-Security-Token".into(), uri_encode(t, false)));
            }
            // The order the AWS SDKs emit: signed-headers before expires, signature last.
            let order = [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-SignedHeaders",
                "X-Amz-Expires",
                "X-Amz-Security-Token",
            ];
            extra_query.sort_by_key(|(k, _)| order.iter().position(|o| o == k));
            extra_query.push(("X-Amz-Signature".into(), signature.clone()));
        }
    }
    Signed {
        canonical_request,
        string_to_sign,
        signature,
        add_headers,
        add_query: extra_query,
    }
}

fn signing_key(p: &SigningParams) -> [u8; 32] {
    let secret = format!("AWS4{}", p.credentials.secret_access_key.expose());
    let k_date = hmac_sha256(secret.as_bytes(), &amz_date(p.time).as_bytes()[..8]);
    let k_region = hmac_sha256(&k_date, p.region.as_bytes());
    let k_service = hmac_sha256(&k_region, p.service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// Lower-cased names sorted, values trimmed with inner runs of spaces collapsed, repeated
/// headers joined with commas. Returns (canonical block, signed-headers list).
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (n, v) in headers {
        let name = n.trim().to_ascii_lowercase();
        let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
        match merged.iter_mut().find(|(m, _)| *m == name) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            None => merged.push((name, value)),
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let block: String = merged.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let names = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (block, names)
}

/// Query pairs, each decoded then re-encoded the SigV4 way.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(k, false), false),
                uri_encode(&percent_decode(v, false), false),
            )
        })
        .collect()
}

/// RFC 3986 dot-segment removal plus collapsing of empty segments; keeps a trailing slash.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    let mut s = format!("/{}", out.join("/"));
    if trailing && s.len() > 1 {
        s.push('/');
    }
    s
}

/// Splits an absolute URL into (authority for the `host` header, raw path, raw query).
pub fn split_url(url: &str) -> (String, String, String) {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let rest = rest.split('#').next().unwrap_or(rest);
    let (auth, path_query) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let mut host = auth.to_string();
    // Default ports are not part of the Host header.
    if url.starts_with("https://") {
        if let Some(h) = host.strip_suffix(":443") {
            host = h.to_string();
        }
    } else if let Some(h) = host.strip_suffix(":80") {
        host = h.to_string();
    }
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    };
    (host, path, query.to_string())
}

/// Signs an outgoing request in place (header mode).
pub fn sign_request(req: &mut Request, p: &SigningParams) {
    let (host, path, query) = split_url(&req.url);
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
        .cloned()
        .collect();
    headers.push(("host".to_string(), host));
    let parts = Parts {
        method: req.method.clone(),
        path,
        query,
        headers,
        body: req.body.clone(),
    };
    let signed = sign_parts(&parts, p, Mode::Headers);
    for (n, v) in signed.add_headers {
        req.set_header(&n, v);
    }
}

/// A presigned URL for `method url`, valid `expires_in` seconds.
pub fn presign_url(method: &str, url: &str, p: &SigningParams, expires_in: u64) -> String {
    presign_url_with(method, url, p, expires_in, |_| {})
}

/// [`presign_url`], `arrange` reordering the added parameters first (they are signed sorted,
/// so any order is valid).
fn presign_url_with(
    method: &str,
    url: &str,
    p: &SigningParams,
    expires_in: u64,
    arrange: impl FnOnce(&mut Vec<(String, String)>),
) -> String {
    let (host, path, query) = split_url(url);
    let parts = Parts {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: vec![("host".to_string(), host.clone())],
        body: Vec::new(),
    };
    let mut signed = sign_parts(&parts, p, Mode::Query { expires_in });
    arrange(&mut signed.add_query);
    let scheme = url.split_once("://").map(|x| x.0).unwrap_or("https");
    let mut q = query;
    for (k, v) in signed.add_query {
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(&format!("{k}={v}"));
    }
    format!("{scheme}://{host}{path}?{q}")
}

/// An RDS IAM database authentication token (used as the PostgreSQL password): a presigned
/// `GET https://{host}:{port}/?Action=connect&DBUser={user}` for service `rds-db`, valid 15
/// minutes, without the scheme.
pub fn rds_auth_token(
    host: &str,
    port: u16,
    user: &str,
    region: &str,
    creds: &Credentials,
    now: i64,
) -> String {
    let url = format!(
        "https://{host}:{port}/?Action=connect&DBUser={}",
        uri_encode(user, false)
    );
    let p = SigningParams::new(creds, region, "rds-db", now);
    // presign_url drops only default ports; 5432 stays in the host, as RDS expects. The
    // parameters in botocore's order (`X-Amz-Expires` before `X-Amz-SignedHeaders`, unlike
    // the SigV4 suite's), so the token is byte for byte `generate_db_auth_token`'s
    // (tests/rds_moto.rs compares them).
    let signed = presign_url_with("GET", &url, &p, 900, |q| {
        let at = |name: &str| q.iter().position(|(k, _)| k == name);
        if let (Some(e), Some(s)) = (at("X-Amz-Expires"), at("X-Amz-SignedHeaders")) {
            if e > s {
                let expires = q.remove(e);
                q.insert(s, expires);
            }
        }
    });
    signed.trim_start_matches("https://").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths_like_the_suite() {
        assert_eq!(normalize_path("/example/.."), "/");
        assert_eq!(normalize_path("//example//"), "/example/");
        assert_eq!(normalize_path("/./example"), "/example");
        assert_eq!(normalize_path("/"), "/");
    }

    #[test]
    fn splits_urls_and_drops_default_ports() {
        assert_eq!(
            split_url("https://h:443/a?b=c"),
            ("h".into(), "/a".into(), "b=c".into())
        );
        assert_eq!(
            split_url("http://127.0.0.1:5000"),
            ("127.0.0.1:5000".into(), "/".into(), "".into())
        );
    }
}
