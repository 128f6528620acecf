//! Checks requests and answers against Aiven's own OpenAPI 3 description
//! (vendor-api/aiven/openapi.json): the operation (method + path template under the server
//! URL's `/v1`), declared query parameters and their types, the `tokenAuth` header format
//! (`authorization: aivenv1 <TOKEN>`), and JSON bodies against the schemas (type, required,
//! enum, min/max, lengths, undeclared fields). Aiven's generator writes free-form objects
//! (`user_config`, `metrics`) as `properties: {}`: those accept any keys.

use serde_json::Value;
use std::collections::BTreeMap;

pub struct OpenApi {
    doc: Value,
    /// The path prefix of `servers[0].url` (`/v1`).
    prefix: String,
}

pub struct Operation {
    pub id: String,
    pub op: Value,
}

fn template_matches(tpl: &str, path: &str) -> bool {
    let t: Vec<&str> = tpl.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

impl OpenApi {
    pub fn load() -> OpenApi {
        let path = super::super::k8s_schema::vendor_dir().join("aiven/openapi.json");
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let server = doc["servers"][0]["url"].as_str().unwrap().to_string();
        let prefix = server
            .splitn(4, '/')
            .nth(3)
            .map(|p| format!("/{p}"))
            .unwrap_or_default();
        OpenApi { doc, prefix }
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v["$ref"].as_str() {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("unresolved $ref {r}")),
            None => v,
        }
    }

    /// The operation, or what does not fit: method and path, query parameters, the auth
    /// header (`token` is the valid token), the request body.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Operation, String> {
        let rel = path.strip_prefix(&self.prefix).ok_or_else(|| {
            format!(
                "{method} {path}: not under the server URL's {}",
                self.prefix
            )
        })?;
        let m = method.to_ascii_lowercase();
        let (_, ops) = self.doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(t, _)| template_matches(t, rel))
            .ok_or_else(|| format!("{method} {path}: no such path in Aiven's API description"))?;
        let op = ops
            .get(&m)
            .ok_or_else(|| format!("{method} {path}: the path has no {method} operation"))?
            .clone();
        let id = op["operationId"].as_str().unwrap_or("?").to_string();
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|a| a.iter().map(|p| self.resolve(p)).collect())
            .unwrap_or_default();
        for (k, v) in query {
            // Aiven's Go client adds limit=999 everywhere (harmless, adapters.md §4.2).
            if k == "limit" {
                continue;
            }
            let Some(p) = params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == *k)
            else {
                return Err(format!("{id}: undeclared query parameter {k}={v}"));
            };
            if p["schema"]["type"] == "boolean" && v != "true" && v != "false" {
                return Err(format!("{id}: query parameter {k}={v} is not a boolean"));
            }
        }
        // tokenAuth: "Header should be of the format `authorization: aivenv1 <TOKEN>`".
        if op["security"].is_array() {
            match authorization {
                Some(h) if h.starts_with("aivenv1 ") && h.len() > 8 => {}
                Some(_) => {
                    return Err(format!(
                        "{id}: authorization header is not `aivenv1 <TOKEN>`"
                    ))
                }
                None => return Err(format!("{id}: no authorization header")),
            }
        }
        let body_schema = op["requestBody"]["content"]["application/json"]["schema"].clone();
        match (body, body_schema.is_null()) {
            (Some(b), false) => {
                let errs = self.validate(b, &body_schema);
                if !errs.is_empty() {
                    return Err(format!("{id} request body: {}", errs.join("; ")));
                }
            }
            (Some(_), true) => return Err(format!("{id} takes no request body")),
            (None, false) if m != "get" => return Err(format!("{id}: request body missing")),
            _ => {}
        }
        Ok(Operation { id, op })
    }

    /// Problems of a 200 answer of `op`.
    pub fn check_response(&self, op: &Operation, v: &Value) -> Vec<String> {
        let s = &op.op["responses"]["200"]["content"]["application/json"]["schema"];
        self.validate(v, s)
    }

    pub fn validate(&self, v: &Value, schema: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.walk(v, schema, "", &mut out);
        out
    }

    fn walk(&self, v: &Value, schema: &Value, at: &str, out: &mut Vec<String>) {
        let s = self.resolve(schema);
        let at_ = if at.is_empty() { "." } else { at };
        if let Some(t) = s["type"].as_str() {
            let ok = match t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            };
            if !ok {
                out.push(format!("{at_}: expected {t}, got {v}"));
                return;
            }
        }
        if let Some(e) = s["enum"].as_array() {
            if !e.contains(v) {
                out.push(format!(
                    "{at_}: {v} is not one of {}",
                    Value::Array(e.clone())
                ));
            }
        }
        if let Some(x) = v.as_str() {
            let n = x.chars().count() as u64;
            if s["maxLength"].as_u64().is_some_and(|m| n > m)
                || s["minLength"].as_u64().is_some_and(|m| n < m)
            {
                out.push(format!("{at_}: length {n} outside the declared bounds"));
            }
        }
        if let Some(x) = v.as_f64() {
            if s["minimum"].as_f64().is_some_and(|m| x < m)
                || s["maximum"].as_f64().is_some_and(|m| x > m)
            {
                out.push(format!("{at_}: {x} outside the declared range"));
            }
        }
        if let Some(a) = v.as_array() {
            if s["maxItems"].as_u64().is_some_and(|m| a.len() as u64 > m) {
                out.push(format!("{at_}: more than {} items", s["maxItems"]));
            }
            if let Some(items) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    self.walk(x, items, &format!("{at}[{i}]"), out);
                }
            }
        }
        let Some(obj) = v.as_object() else { return };
        for r in s["required"].as_array().into_iter().flatten() {
            if let Some(r) = r.as_str() {
                if !obj.contains_key(r) {
                    out.push(format!("{at}.{r}: required"));
                }
            }
        }
        let props = s["properties"].as_object();
        let free_form = props.is_none_or(|p| p.is_empty());
        for (k, x) in obj {
            let here = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => self.walk(x, ps, &here, out),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(format!("{here}: undeclared field")),
                    Some(Value::Bool(true)) => {}
                    Some(es) => self.walk(x, es, &here, out),
                    None if free_form => {}
                    None => out.push(format!("{here}: undeclared field")),
                },
            }
        }
    }
}
