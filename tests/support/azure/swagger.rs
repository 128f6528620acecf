//! Checks requests against Azure's OpenAPI 2.0 descriptions (the vendor's own files under
//! vendor-api/azure/specification, `$ref`s followed across files): the operation is found by
//! method and path template (case-insensitive, as ARM is), `api-version` must be the file's
//! version, every query parameter must be declared (enums checked), required ones present, and
//! the body must fit the schema (no undeclared or read-only field, JSON types and enums).

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub struct Swagger {
    files: HashMap<PathBuf, Value>,
    specs: Vec<PathBuf>,
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // `/{resourceUri}/…` (x-ms-skip-url-encoding) stands for any resource id.
    if t.first() == Some(&"{resourceUri}") {
        let tail = &t[1..];
        return p.len() > tail.len()
            && p[p.len() - tail.len()..]
                .iter()
                .zip(tail)
                .all(|(a, b)| a.eq_ignore_ascii_case(b));
    }
    t.len() == p.len()
        && t.iter().zip(&p).all(|(a, b)| {
            if a.starts_with('{') && a.ends_with('}') {
                !b.is_empty()
            } else {
                a.eq_ignore_ascii_case(b)
            }
        })
}

impl Swagger {
    pub fn load(specs: &[&str]) -> Swagger {
        let mut s = Swagger {
            files: HashMap::new(),
            specs: Vec::new(),
        };
        for rel in specs {
            let p = normalize(&super::super::cloudsql::discovery::vendor_file(rel));
            s.file(&p);
            s.specs.push(p);
        }
        s
    }

    fn file(&mut self, p: &Path) -> &Value {
        if !self.files.contains_key(p) {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            self.files
                .insert(p.to_path_buf(), serde_json::from_str(&text).unwrap());
        }
        &self.files[p]
    }

    /// Follows `$ref` (relative to `from`) to (file, value).
    fn resolve(&mut self, from: &Path, r: &str) -> (PathBuf, Value) {
        let (file, pointer) = r.split_once('#').unwrap_or((r, ""));
        let target = if file.is_empty() {
            from.to_path_buf()
        } else {
            normalize(&from.parent().unwrap().join(file))
        };
        let v = self
            .file(&target)
            .pointer(pointer)
            .cloned()
            .unwrap_or_else(|| panic!("unresolved $ref {r} from {}", from.display()));
        (target, v)
    }

    fn deref(&mut self, from: &Path, v: &Value) -> (PathBuf, Value) {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let (f, x) = self.resolve(from, r);
                self.deref(&f, &x)
            }
            None => (from.to_path_buf(), v.clone()),
        }
    }

    /// The operationId, or what does not fit.
    pub fn check(
        &mut self,
        method: &str,
        path: &str,
        query: &BTreeMap<String, String>,
        body: Option<&Value>,
    ) -> Result<String, String> {
        let m = method.to_ascii_lowercase();
        let mut found = None;
        for spec in self.specs.clone() {
            let doc = self.file(&spec).clone();
            for (tpl, ops) in doc["paths"].as_object().unwrap() {
                if template_matches(tpl, path) {
                    if let Some(op) = ops.get(&m) {
                        found = Some((spec.clone(), doc.clone(), op.clone()));
                    }
                }
            }
        }
        let (spec, doc, op) = found.ok_or_else(|| {
            format!("{method} {path}: no such operation in the Azure descriptions")
        })?;
        let id = op["operationId"].as_str().unwrap_or("?").to_string();
        let version = doc["info"]["version"].as_str().unwrap_or("");
        match query.get("api-version") {
            Some(v) if v == version => {}
            other => {
                return Err(format!(
                    "{id}: api-version {other:?}, the description is {version}"
                ))
            }
        }
        let mut declared: Vec<(String, Value)> = Vec::new();
        let mut body_schema = None;
        for p in op["parameters"].as_array().cloned().unwrap_or_default() {
            let (f, p) = self.deref(&spec, &p);
            match p["in"].as_str() {
                Some("query") => declared.push((p["name"].as_str().unwrap().to_string(), p)),
                Some("body") => body_schema = Some((f, p["schema"].clone(), p["required"] == true)),
                _ => {}
            }
        }
        for (k, v) in query {
            let Some((_, p)) = declared.iter().find(|(n, _)| n == k) else {
                return Err(format!("{id}: undeclared query parameter {k}"));
            };
            if let Some(e) = p["enum"].as_array() {
                if !e.iter().any(|x| x == v) {
                    return Err(format!("{id}: {k}={v} is not one of {e:?}"));
                }
            }
        }
        for (n, p) in &declared {
            if p["required"] == true && !query.contains_key(n) {
                return Err(format!("{id}: required query parameter {n} missing"));
            }
        }
        match (body_schema, body) {
            (Some((f, s, _)), Some(b)) => self.fits(&f, &s, b, &id)?,
            (Some((_, _, true)), None) => return Err(format!("{id}: body required")),
            (None, Some(b)) => return Err(format!("{id}: takes no body, got {b}")),
            _ => {}
        }
        Ok(id)
    }

    /// Properties of a schema, `allOf` parents included.
    fn properties(&mut self, from: &Path, s: &Value) -> Vec<(PathBuf, String, Value)> {
        let (f, s) = self.deref(from, s);
        let mut out: Vec<(PathBuf, String, Value)> = s["properties"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (f.clone(), k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for parent in s["allOf"].as_array().cloned().unwrap_or_default() {
            out.extend(self.properties(&f, &parent));
        }
        out
    }

    fn fits(&mut self, from: &Path, s: &Value, v: &Value, at: &str) -> Result<(), String> {
        let (f, s) = self.deref(from, s);
        let ty = s["type"].as_str().unwrap_or(
            if s.get("properties").is_some() || s.get("allOf").is_some() {
                "object"
            } else {
                ""
            },
        );
        let bad = || format!("{at}: expected {ty}, got {v}");
        match ty {
            "object" => {
                let o = v.as_object().ok_or_else(bad)?;
                let props = self.properties(&f, &s);
                for (k, x) in o {
                    let Some((pf, _, p)) = props.iter().find(|(_, n, _)| n == k).cloned() else {
                        if let Some(ap) = s.get("additionalProperties") {
                            self.fits(&f, ap, x, &format!("{at}.{k}"))?;
                            continue;
                        }
                        return Err(format!("{at}: undeclared field {k}"));
                    };
                    let (_, pd) = self.deref(&pf, &p);
                    if pd["readOnly"] == true || p["readOnly"] == true {
                        return Err(format!("{at}: {k} is read-only"));
                    }
                    self.fits(&pf, &p, x, &format!("{at}.{k}"))?;
                }
                Ok(())
            }
            "array" => {
                for (i, x) in v.as_array().ok_or_else(bad)?.iter().enumerate() {
                    self.fits(&f, &s["items"], x, &format!("{at}[{i}]"))?;
                }
                Ok(())
            }
            "string" => {
                let t = v.as_str().ok_or_else(bad)?;
                if let Some(e) = s["enum"].as_array() {
                    if !e.iter().any(|x| x == t) {
                        return Err(format!("{at}: {t:?} is not one of {e:?}"));
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
}
