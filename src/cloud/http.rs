//! The blocking HTTP core every cloud client shares: per-request timeouts, bounded retries with
//! back-off and jitter on throttling and 5xx (honouring `Retry-After`), JSON / XML decoding,
//! typed errors that keep the service's own error code and message, proxies from the
//! environment (`HTTPS_PROXY`, `NO_PROXY`, …; never for loopback or link-local metadata
//! endpoints), and no secret ever in an error: URLs are shown without their query string and
//! every value registered with [`Request::secret`] is masked out of the service's text.

use super::xml;
use std::fmt;
use std::time::{Duration, Instant};

/// What went wrong, coarsely, so callers can decide (retry later, re-authenticate, give up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The peer could not be reached or the connection broke.
    Transport,
    /// Our deadline ran out.
    Timeout,
    /// The service answered with an error (see `status`, `code`, `message`).
    Service,
    /// The service kept throttling us past the retry budget.
    Throttled,
    /// Credentials are missing, unreadable or rejected.
    Auth,
    /// The response did not have the documented shape.
    Decode,
    /// Bad local configuration (unparsable file, missing variable, refused option).
    Config,
}

/// An error from the cloud layer. `Display` reads like
/// `RDS DescribeDBInstances (POST https://rds.us-east-1.amazonaws.com/): HTTP 403 SignatureDoesNotMatch: The request signature …`.
#[derive(Clone, PartialEq, Eq)]
pub struct CloudError {
    pub kind: ErrorKind,
    /// What was being done, with which endpoint (query string removed).
    pub context: String,
    pub status: Option<u16>,
    /// The service's own error code (`SignatureDoesNotMatch`, `PERMISSION_DENIED`, `invalid_grant`, …).
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

impl CloudError {
    pub fn new(kind: ErrorKind, context: impl Into<String>, message: impl Into<String>) -> Self {
        CloudError {
            kind,
            context: context.into(),
            status: None,
            code: None,
            message: message.into(),
            request_id: None,
        }
    }
    /// True when the request certainly changed nothing: it was never sent (configuration,
    /// credentials) or the service refused it with a 4xx answer (throttling included). A 5xx,
    /// a timeout, a broken connection or an unreadable answer may have landed: a target's
    /// `write` counts such a request as written, so a rollback puts it back.
    pub fn changed_nothing(&self) -> bool {
        match self.kind {
            ErrorKind::Config | ErrorKind::Auth | ErrorKind::Throttled => true,
            ErrorKind::Service => self.status.is_some_and(|s| (400..500).contains(&s)),
            ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::Decode => false,
        }
    }
    pub fn config(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, context, message)
    }
    pub fn auth(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Auth, context, message)
    }
    pub fn decode(context: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Decode, context, message)
    }
    /// Prefixes more context: `loading AWS credentials: <self>`.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.context = if self.context.is_empty() {
            ctx.to_string()
        } else {
            format!("{ctx}: {}", self.context)
        };
        self
    }
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.context.is_empty() {
            write!(f, "{}: ", self.context)?;
        }
        if let Some(s) = self.status {
            write!(f, "HTTP {s} ")?;
        }
        if let Some(c) = &self.code {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(r) = &self.request_id {
            write!(f, " (request id {r})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {self}", self.kind)
    }
}

impl std::error::Error for CloudError {}

impl From<CloudError> for crate::error::Error {
    fn from(e: CloudError) -> Self {
        use crate::error::Kind;
        let kind = match e.kind {
            ErrorKind::Timeout => Kind::Timeout,
            ErrorKind::Config => Kind::Invalid,
            _ => Kind::Other,
        };
        crate::error::Error::new(kind, e.to_string())
    }
}

/// One HTTP request. Built with the methods below, sent with [`Http::send`].
#[derive(Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    timeout: Option<Duration>,
    what: String,
    secrets: Vec<String>,
    retry: bool,
}

impl fmt::Debug for Request {
    // Headers and body may hold credentials: never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Request({} {})", self.method, strip_query(&self.url))
    }
}

impl Request {
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Request {
            method: method.to_string(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            what: String::new(),
            secrets: Vec::new(),
            retry: true,
        }
    }
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    /// Sets a header, replacing any earlier one of the same name (case-insensitive).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
    }
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    pub fn json(self, v: &serde_json::Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(serde_json::to_vec(v).unwrap_or_default())
    }
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        self.header("Content-Type", "application/x-www-form-urlencoded")
            .body(super::encoding::form(pairs))
    }
    /// Deadline for one attempt (connect, send, receive the whole body).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Names the operation for error messages: `"RDS DescribeDBInstances"`.
    pub fn what(mut self, what: impl Into<String>) -> Self {
        self.what = what.into();
        self
    }
    /// Registers a value that must never appear in an error (tokens, keys, assertions).
    pub fn secret(mut self, value: &str) -> Self {
        if !value.is_empty() {
            self.secrets.push(value.to_string());
        }
        self
    }
    /// One attempt only (for calls whose repetition is unsafe or pointless, e.g. IMDS probes).
    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
    pub fn host(&self) -> &str {
        host_of(&self.url)
    }
    fn context(&self) -> String {
        let target = format!("{} {}", self.method, strip_query(&self.url));
        if self.what.is_empty() {
            target
        } else {
            format!("{} ({target})", self.what)
        }
    }
}

/// A response whose status was 2xx (others become [`CloudError`]s).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    context: String,
}

impl Response {
    pub fn new(
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        context: String,
    ) -> Self {
        Response {
            status,
            headers,
            body,
            context,
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> super::Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CloudError::decode(
                &self.context,
                format!("response is not the expected JSON: {e}"),
            )
        })
    }
    pub fn xml(&self) -> super::Result<xml::Element> {
        xml::parse(&self.text()).map_err(|e| CloudError::decode(&self.context, e))
    }
    pub fn context(&self) -> &str {
        &self.context
    }
}

/// Bounded retries: `max_attempts` in total, exponential back-off from `base` capped at `cap`,
/// with jitter; a `Retry-After` longer than `max_retry_after` ends the retries (the caller's
/// own cadence tries again later).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // The AWS SDK "standard" retryer: 3 attempts, 20 s cap (we cap lower: a collector runs
        // every 5 s).
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        // "Equal jitter": half fixed, half random, so two agents throttled together spread out.
        let half = exp / 2;
        let r = super::crypto::random_u64() % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(r)
    }
}

/// TLS settings for private endpoints (Kubernetes API servers).
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM bundle of trusted roots; `None` = the public web PKI roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// Skip server verification. Only ever set when the operator asked for it explicitly.
    pub insecure: bool,
}

/// The shared client. Cheap to clone (agents share their connection pools).
#[derive(Clone)]
pub struct Http {
    proxied: ureq::Agent,
    direct: ureq::Agent,
    pub retry: RetryPolicy,
    pub default_timeout: Duration,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

const USER_AGENT: &str = concat!("dbtune-agent/", env!("CARGO_PKG_VERSION"));
const MAX_BODY: u64 = 32 * 1024 * 1024;

impl Http {
    /// Public web PKI roots, proxies from the environment.
    pub fn new() -> Self {
        Self::with_tls(&TlsOptions::default()).expect("default TLS settings are valid")
    }

    pub fn with_tls(tls: &TlsOptions) -> super::Result<Self> {
        let ctx = "configuring TLS";
        let mut b = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &tls.ca_pem {
            let mut roots = Vec::new();
            for item in ureq::tls::parse_pem(ca) {
                if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                    roots.push(c);
                }
            }
            if roots.is_empty() {
                return Err(CloudError::config(
                    ctx,
                    "the CA bundle holds no PEM certificate",
                ));
            }
            b = b.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        match (&tls.client_cert_pem, &tls.client_key_pem) {
            (Some(cert), Some(key)) => {
                let chain: Vec<_> = ureq::tls::parse_pem(cert)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if chain.is_empty() {
                    return Err(CloudError::config(
                        ctx,
                        "the client certificate holds no PEM certificate",
                    ));
                }
                let key = ureq::tls::PrivateKey::from_pem(key).map_err(|_| {
                    CloudError::config(ctx, "the client key is not a PEM private key")
                })?;
                b = b.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
            }
            (None, None) => {}
            _ => {
                return Err(CloudError::config(
                    ctx,
                    "a client certificate needs both the certificate and the key",
                ))
            }
        }
        b = b.disable_verification(tls.insecure);
        let tls_config = b.build();
        let agent = |proxy: Option<ureq::Proxy>| -> ureq::Agent {
            crate::resolver::agent(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .user_agent(USER_AGENT)
                    .tls_config(tls_config.clone())
                    .proxy(proxy)
                    .max_redirects(0)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build(),
            )
        };
        Ok(Http {
            proxied: agent(ureq::Proxy::try_from_env()),
            direct: agent(None),
            retry: RetryPolicy::default(),
            default_timeout: Duration::from_secs(15),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends with retries; a non-2xx answer becomes a [`CloudError`] carrying the service's
    /// code and message.
    pub fn send(&self, req: &Request) -> super::Result<Response> {
        let attempts = if req.retry {
            self.retry.max_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 0;
        loop {
            let result = self.send_once(req);
            attempt += 1;
            let (err, retry_after) = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let retryable = is_retryable(&err);
            if !retryable || attempt >= attempts {
                let mut err = err;
                if retryable && is_throttling(&err) {
                    err.kind = ErrorKind::Throttled;
                }
                return Err(err);
            }
            let wait = match retry_after {
                Some(w) if w > self.retry.max_retry_after => {
                    let mut err = err;
                    err.kind = ErrorKind::Throttled;
                    return Err(err);
                }
                Some(w) => w,
                None => self.retry.backoff(attempt - 1),
            };
            log::debug!(
                "{}: attempt {attempt} failed ({}); retrying in {wait:?}",
                req.context(),
                err.message
            );
            std::thread::sleep(wait);
        }
    }

    fn send_once(
        &self,
        req: &Request,
    ) -> std::result::Result<Response, (CloudError, Option<Duration>)> {
        let ctx = req.context();
        let agent = if bypasses_proxy(req.host()) {
            &self.direct
        } else {
            &self.proxied
        };
        let mut b = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(req.url.as_str());
        for (n, v) in &req.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        let hreq = b.body(req.body.clone()).map_err(|e| {
            (
                CloudError::config(
                    &ctx,
                    format!("invalid request: {}", redact(&e.to_string(), &req.secrets)),
                ),
                None,
            )
        })?;
        let timeout = req.timeout.unwrap_or(self.default_timeout);
        let hreq = agent
            .configure_request(hreq)
            .timeout_global(Some(timeout))
            .allow_non_standard_methods(true)
            .build();
        let started = Instant::now();
        let mut resp = agent
            .run(hreq)
            .map_err(|e| (transport_error(&ctx, e, timeout, &req.secrets), None))?;
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = if req.method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_vec()
                .map_err(|e| (transport_error(&ctx, e, timeout, &req.secrets), None))?
        };
        log::trace!("{ctx}: HTTP {status} in {:?}", started.elapsed());
        let response = Response::new(status, headers, body, ctx.clone());
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let retry_after = retry_after(&response);
        Err((service_error(&ctx, &response, &req.secrets), retry_after))
    }
}

fn transport_error(ctx: &str, e: ureq::Error, timeout: Duration, secrets: &[String]) -> CloudError {
    match e {
        ureq::Error::Timeout(_) => CloudError::new(
            ErrorKind::Timeout,
            ctx,
            format!("no complete answer within {timeout:?}"),
        ),
        other => CloudError::new(
            ErrorKind::Transport,
            ctx,
            redact(&other.to_string(), secrets),
        ),
    }
}

/// Builds the error for a non-2xx response, reading whichever error shape the service uses.
pub fn service_error(ctx: &str, resp: &Response, secrets: &[String]) -> CloudError {
    let (code, message, request_id) = parse_service_error(&resp.body);
    let request_id = request_id
        .or_else(|| resp.header("x-amzn-RequestId").map(str::to_string))
        .or_else(|| resp.header("x-ms-request-id").map(str::to_string));
    let message = message.unwrap_or_else(|| status_text(resp.status).to_string());
    let kind = if matches!(resp.status, 401 | 403) {
        ErrorKind::Auth
    } else {
        ErrorKind::Service
    };
    CloudError {
        kind,
        context: ctx.to_string(),
        status: Some(resp.status),
        code: code.map(|c| redact(&c, secrets)),
        message: redact(&message, secrets),
        request_id,
    }
}

/// `(code, message, request id)` from any of the error bodies the vendors use: AWS query XML
/// (`ErrorResponse/Error`, EC2 `Response/Errors/Error`), AWS JSON (`__type`, `message`), Google
/// (`error.status`, `error.message`), ARM (`error.code`), OAuth (`error`, `error_description`),
/// Kubernetes `Status` (`reason`, `message`), Docker (`message`); else the text itself.
pub fn parse_service_error(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.starts_with('<') {
        if let Ok(doc) = xml::parse(t) {
            let get = |n: &str| {
                doc.find(n)
                    .map(|e| e.text.trim().to_string())
                    .filter(|s| !s.is_empty())
            };
            return (
                get("Code"),
                get("Message"),
                get("RequestId").or_else(|| get("RequestID")),
            );
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(t) {
        let s = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_str()).map(str::to_string);
        let err = v.get("error");
        if let Some(e) = err.filter(|e| e.is_object()) {
            // Google puts the canonical code in `status`, ARM in `code`.
            let code = s(e.get("status")).or_else(|| s(e.get("code")));
            return (code, s(e.get("message")), None);
        }
        if let Some(code) = s(err) {
            return (
                Some(code),
                s(v.get("error_description")).or_else(|| s(v.get("message"))),
                None,
            );
        }
        if let Some(t) = s(v.get("__type")) {
            let code = t.rsplit('#').next().unwrap_or(&t).to_string();
            return (
                Some(code),
                s(v.get("message")).or_else(|| s(v.get("Message"))),
                None,
            );
        }
        if v.get("kind").and_then(|k| k.as_str()) == Some("Status") {
            return (s(v.get("reason")), s(v.get("message")), None);
        }
        let msg = s(v.get("message")).or_else(|| s(v.get("Message")));
        let code = s(v.get("code")).or_else(|| s(v.get("Code")));
        if msg.is_some() || code.is_some() {
            return (code, msg, None);
        }
    }
    if t.is_empty() {
        return (None, None, None);
    }
    let mut m: String = t.chars().take(300).collect();
    if t.chars().count() > 300 {
        m.push('…');
    }
    (None, Some(m), None)
}

fn status_text(s: u16) -> &'static str {
    match s {
        400 => "bad request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not found",
        409 => "conflict",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "unexpected status",
    }
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RESOURCE_EXHAUSTED",
];

fn is_throttling(e: &CloudError) -> bool {
    e.status == Some(429) || e.code().is_some_and(|c| THROTTLING_CODES.contains(&c))
}

fn is_retryable(e: &CloudError) -> bool {
    match e.kind {
        ErrorKind::Transport | ErrorKind::Timeout => true,
        _ => is_throttling(e) || matches!(e.status, Some(500 | 502 | 503 | 504)),
    }
}

/// `Retry-After` (seconds or HTTP date), or Azure's `retry-after-ms` / `x-ms-retry-after-ms`.
pub fn retry_after(resp: &Response) -> Option<Duration> {
    for h in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = resp.header(h).and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = resp.header("retry-after")?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = parse_http_date(v)?;
    Some(Duration::from_secs(
        (at - super::time::now_unix()).max(0) as u64
    ))
}

/// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(s: &str) -> Option<i64> {
    let p: Vec<&str> = s.split_whitespace().collect();
    if p.len() != 6 || p[5] != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == p[2])? + 1;
    let iso = format!("{}-{m:02}-{:0>2}T{}Z", p[3], p[1], p[4]);
    super::time::parse_rfc3339(&iso)
}

/// Metadata services and local peers are never reached through a proxy.
fn bypasses_proxy(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h == "::1"
        || h.starts_with("127.")
        || h.starts_with("169.254.")
        || h.starts_with("fd00:ec2:")
        || h == "metadata.google.internal"
}

/// Host (without port) of an absolute URL.
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
    let auth = auth.rsplit('@').next().unwrap_or(auth);
    if auth.starts_with('[') {
        return auth.split(']').next().map(|h| &h[1..]).unwrap_or(auth);
    }
    auth.split(':').next().unwrap_or(auth)
}

/// The URL as shown in errors and logs: query strings (presigned signatures, tokens) removed,
/// userinfo masked (an endpoint override may carry credentials).
pub fn strip_query(url: &str) -> String {
    crate::secret::url::mask(url.split(['?', '#']).next().unwrap_or(url))
}

/// Replaces every registered secret in `text` with a mask.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), "(hidden)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_or_unsent_request_changed_nothing() {
        let answered = |status| {
            let mut e = CloudError::new(ErrorKind::Service, "PATCH x", "m");
            e.status = Some(status);
            e
        };
        assert!(answered(400).changed_nothing() && answered(409).changed_nothing());
        assert!(!answered(500).changed_nothing() && !answered(503).changed_nothing());
        assert!(CloudError::auth("token", "m").changed_nothing());
        assert!(!CloudError::new(ErrorKind::Transport, "x", "reset").changed_nothing());
        assert!(!CloudError::decode("x", "not JSON").changed_nothing());
    }

    #[test]
    fn parses_each_vendor_error_shape() {
        let aws = br#"<ErrorResponse xmlns="x"><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#;
        assert_eq!(
            parse_service_error(aws),
            (
                Some("SignatureDoesNotMatch".into()),
                Some("bad sig".into()),
                Some("r-1".into())
            )
        );
        let ec2 = br#"<Response><Errors><Error><Code>AuthFailure</Code><Message>m</Message></Error></Errors><RequestID>r-2</RequestID></Response>"#;
        assert_eq!(parse_service_error(ec2).0.as_deref(), Some("AuthFailure"));
        assert_eq!(parse_service_error(ec2).2.as_deref(), Some("r-2"));
        let g = br#"{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            parse_service_error(g).0.as_deref(),
            Some("PERMISSION_DENIED")
        );
        let arm = br#"{"error":{"code":"ResourceNotFound","message":"gone"}}"#;
        assert_eq!(
            parse_service_error(arm).0.as_deref(),
            Some("ResourceNotFound")
        );
        let oauth = br#"{"error":"invalid_grant","error_description":"expired"}"#;
        assert_eq!(
            parse_service_error(oauth),
            (Some("invalid_grant".into()), Some("expired".into()), None)
        );
        let pi = br#"{"__type":"com.amazon.pi#InvalidArgumentException","message":"no"}"#;
        assert_eq!(
            parse_service_error(pi).0.as_deref(),
            Some("InvalidArgumentException")
        );
        let k8s = br#"{"kind":"Status","reason":"Forbidden","message":"pods is forbidden"}"#;
        assert_eq!(parse_service_error(k8s).0.as_deref(), Some("Forbidden"));
        assert_eq!(
            parse_service_error(b"plain failure").1.as_deref(),
            Some("plain failure")
        );
    }

    #[test]
    fn urls_lose_their_query_and_secrets_are_masked() {
        assert_eq!(
            strip_query("https://h/p?X-Amz-Signature=abc"),
            "https://h/p"
        );
        assert_eq!(host_of("https://user@h.example:8443/x"), "h.example");
        assert_eq!(
            strip_query("https://u:pa/ss@h.example:8443/x?sig=1"),
            "https://u:***@h.example:8443/x"
        );
        assert_eq!(host_of("http://[::1]:80/"), "::1");
        assert_eq!(
            redact("token abcdef used", &["abcdef".into()]),
            "token (hidden) used"
        );
        assert!(
            bypasses_proxy("169.254.169.254")
                && bypasses_proxy("127.0.0.1")
                && !bypasses_proxy("rds.amazonaws.com")
        );
    }

    #[test]
    fn http_dates_and_backoff_are_bounded() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        let p = RetryPolicy::default();
        for a in 0..10 {
            let d = p.backoff(a);
            assert!(d <= p.cap && d >= p.base.min(p.cap) / 2, "{d:?}");
        }
    }
}
