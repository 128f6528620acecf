//! The two wire protocols our AWS calls use: the Query protocol (form-encoded `POST /`, XML
//! answers: RDS, EC2, CloudWatch, STS) and JSON 1.1 (Performance Insights). Both are plain
//! functions over explicit credentials so the credential chain can call STS with them too.

use super::credentials::Credentials;
use super::endpoint::{endpoint, Service};
use super::sigv4::{sign_request, SigningParams};
use crate::cloud::http::{Http, Request};
use crate::cloud::time::now_unix;
use crate::cloud::xml::Element;
use crate::cloud::{CloudError, Env, Result};

/// A parsed query-protocol answer.
#[derive(Clone, Debug)]
pub struct QueryResponse {
    pub action: String,
    pub root: Element,
}

impl QueryResponse {
    /// `<{Action}Result>` (RDS, CloudWatch, STS) or the root itself (EC2 puts fields there).
    pub fn result(&self) -> &Element {
        let name = format!("{}Result", self.action);
        self.root.child(&name).unwrap_or(&self.root)
    }
    pub fn request_id(&self) -> Option<&str> {
        self.root
            .find("RequestId")
            .or_else(|| self.root.find("requestId"))
            .map(|e| e.text.trim())
    }
}

/// One query-protocol call. `credentials = None` sends it unsigned (STS
/// `AssumeRoleWithWebIdentity`). Parameter values are given decoded.
pub fn query_call(
    http: &Http,
    env: &Env,
    region: &str,
    service: Service,
    credentials: Option<&Credentials>,
    action: &str,
    params: &[(String, String)],
) -> Result<QueryResponse> {
    let version = service.query_version().ok_or_else(|| {
        CloudError::config(
            format!("{} {action}", service.display()),
            "not a query-protocol service",
        )
    })?;
    let mut pairs: Vec<(&str, &str)> = vec![("Action", action), ("Version", version)];
    pairs.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let url = format!("{}/", endpoint(env, service, region));
    let mut req = Request::post(url)
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(crate::cloud::encoding::form(&pairs))
        .what(format!("{} {action}", service.display()));
    if let Some(c) = credentials {
        req = req.secret(c.access_key_id.as_str());
        if let Some(t) = &c.session_token {
            req = req.secret(t.expose());
        }
        let p = SigningParams::new(c, region, service.signing_name(), now_unix());
        sign_request(&mut req, &p);
    }
    let resp = http.send(&req)?;
    let root = resp.xml()?;
    Ok(QueryResponse {
        action: action.to_string(),
        root,
    })
}

/// One JSON 1.1 call (`X-Amz-Target: {target_prefix}.{operation}`).
pub fn json11_call(
    http: &Http,
    env: &Env,
    region: &str,
    service: Service,
    credentials: &Credentials,
    target: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value> {
    let url = format!("{}/", endpoint(env, service, region));
    let op = target.rsplit('.').next().unwrap_or(target);
    let mut req = Request::post(url)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", target)
        .body(serde_json::to_vec(body).unwrap_or_default())
        .what(format!("{} {op}", service.display()));
    if let Some(t) = &credentials.session_token {
        req = req.secret(t.expose());
    }
    let p = SigningParams::new(credentials, region, service.signing_name(), now_unix());
    sign_request(&mut req, &p);
    http.send(&req)?.json()
}

/// Flattens a list the query-protocol way: `prefix.1.field=…`, with `prefix` like
/// `Parameters.Parameter` (RDS), `Dimensions.member` (CloudWatch) or `InstanceType` (EC2,
/// no field: pass `None`).
pub fn list_params(prefix: &str, items: &[Vec<(&str, String)>]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for (field, value) in item {
            let key = if field.is_empty() {
                format!("{prefix}.{}", i + 1)
            } else {
                format!("{prefix}.{}.{field}", i + 1)
            };
            out.push((key, value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_lists() {
        let p = list_params(
            "Parameters.Parameter",
            &[
                vec![
                    ("ParameterName", "a".into()),
                    ("ParameterValue", "1".into()),
                ],
                vec![("ParameterName", "b".into())],
            ],
        );
        assert_eq!(
            p,
            vec![
                (
                    "Parameters.Parameter.1.ParameterName".to_string(),
                    "a".to_string()
                ),
                (
                    "Parameters.Parameter.1.ParameterValue".to_string(),
                    "1".to_string()
                ),
                (
                    "Parameters.Parameter.2.ParameterName".to_string(),
                    "b".to_string()
                ),
            ]
        );
        assert_eq!(
            list_params("InstanceType", &[vec![("", "m5.large".into())]])[0].0,
            "InstanceType.1"
        );
    }
}
