//! Checks requests against a Google API discovery document (the vendor's own description in
//! /work/shared/testdata/vendor-api/google): the method is found by HTTP method and path
//! template, every query parameter must be declared (with its enum and type), and the body
//! must fit the request schema (no undeclared field, JSON types as the document says; int64
//! fields are strings).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn vendor_file(rel: &str) -> PathBuf {
    // `<repo>/../shared/testdata` as the other vendor-data tests use it, else the shared
    // folder of this machine (worktrees live one level deeper).
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/vendor-api");
    let base = std::env::var("DBTUNE_VENDOR_API_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            if repo.exists() {
                repo
            } else {
                PathBuf::from("/work/shared/testdata/vendor-api")
            }
        });
    base.join(rel)
}

pub struct Discovery {
    doc: Value,
}

fn methods<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    if let Some(m) = v.get("methods").and_then(Value::as_object) {
        out.extend(m.values());
    }
    if let Some(r) = v.get("resources").and_then(Value::as_object) {
        for x in r.values() {
            methods(x, out);
        }
    }
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(a, b)| {
            if a.starts_with('{') && a.ends_with('}') {
                !b.is_empty()
            } else {
                a == b
            }
        })
}

impl Discovery {
    pub fn load(rel: &str) -> Discovery {
        let p = vendor_file(rel);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Discovery {
            doc: serde_json::from_str(&text).unwrap(),
        }
    }

    /// The method id (`sql.instances.patch`) or what does not fit the description.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        body: Option<&Value>,
    ) -> Result<String, String> {
        let mut all = Vec::new();
        methods(&self.doc, &mut all);
        let service = self.doc["servicePath"].as_str().unwrap_or("");
        let m = all
            .into_iter()
            .find(|m| {
                m["httpMethod"] == method
                    && template_matches(
                        &format!(
                            "{service}{}",
                            m["flatPath"].as_str().or(m["path"].as_str()).unwrap_or("")
                        ),
                        path,
                    )
            })
            .ok_or_else(|| format!("{method} {path} is not a method of {}", self.doc["name"]))?;
        let id = m["id"].as_str().unwrap_or("?").to_string();
        for (k, v) in query {
            let p = m["parameters"]
                .get(k)
                .or_else(|| self.doc["parameters"].get(k))
                .ok_or_else(|| format!("{id}: undeclared query parameter {k}"))?;
            if p["location"] != "query" {
                return Err(format!("{id}: {k} is not a query parameter"));
            }
            if let Some(e) = p["enum"].as_array() {
                if !e.iter().any(|x| x == v) {
                    return Err(format!("{id}: {k}={v} is not one of {e:?}"));
                }
            }
            if p["type"] == "integer" && v.parse::<i64>().is_err() {
                return Err(format!("{id}: {k}={v} is not an integer"));
            }
        }
        if let Some(params) = m["parameters"].as_object() {
            for (k, p) in params {
                if p["required"] == true && p["location"] == "query" && !query.contains_key(k) {
                    return Err(format!("{id}: required query parameter {k} missing"));
                }
            }
        }
        match (m["request"]["$ref"].as_str(), body) {
            (Some(r), Some(b)) => self.fits(b, r, &id)?,
            (Some(_), None) => return Err(format!("{id}: a request body is required")),
            (None, Some(b)) if !b.is_null() => {
                return Err(format!("{id}: takes no request body, got {b}"))
            }
            _ => {}
        }
        Ok(id)
    }

    fn fits(&self, v: &Value, schema_ref: &str, at: &str) -> Result<(), String> {
        let s = &self.doc["schemas"][schema_ref];
        if s.is_null() {
            return Err(format!("{at}: schema {schema_ref} unknown"));
        }
        self.fits_schema(v, s, at)
    }

    fn fits_schema(&self, v: &Value, s: &Value, at: &str) -> Result<(), String> {
        if let Some(r) = s["$ref"].as_str() {
            return self.fits(v, r, at);
        }
        let ty = s["type"].as_str().unwrap_or("");
        let bad = || format!("{at}: expected {ty}, got {v}");
        match ty {
            "object" => {
                let o = v.as_object().ok_or_else(bad)?;
                for (k, x) in o {
                    let p = s["properties"]
                        .get(k)
                        .or_else(|| s.get("additionalProperties"))
                        .ok_or_else(|| format!("{at}: undeclared field {k}"))?;
                    self.fits_schema(x, p, &format!("{at}.{k}"))?;
                }
                Ok(())
            }
            "array" => {
                for (i, x) in v.as_array().ok_or_else(bad)?.iter().enumerate() {
                    self.fits_schema(x, &s["items"], &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            "string" => {
                let t = v.as_str().ok_or_else(bad)?;
                if let Some(e) = s["enum"].as_array() {
                    if !e.iter().any(|x| x == t) {
                        return Err(format!("{at}: {t:?} is not one of the enum values"));
                    }
                }
                Ok(())
            }
            "boolean" => v.as_bool().map(|_| ()).ok_or_else(bad),
            "integer" => v.as_i64().map(|_| ()).ok_or_else(bad),
            "number" => v.as_f64().map(|_| ()).ok_or_else(bad),
            _ => Ok(()),
        }
    }

    /// Checks an answer the stand-in is about to send against the response schema.
    pub fn check_response(&self, schema_ref: &str, v: &Value) -> Result<(), String> {
        self.fits(v, schema_ref, schema_ref)
    }
}
