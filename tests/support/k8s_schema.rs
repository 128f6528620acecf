//! A small structural validator for the Kubernetes schemas in the vendor-api folder: the CNPG
//! Cluster CRD's `openAPIV3Schema` and the core API's OpenAPI 3 components. Checks types,
//! required fields, enums, items, maps and unknown fields (strictly, as
//! `kubectl --validate=strict` does, unless the schema preserves unknown fields), following
//! `$ref` and `allOf`.

use serde_json::Value;
use std::path::PathBuf;

pub fn vendor_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/vendor-api");
    assert!(
        d.is_dir(),
        "vendor API descriptions missing at {} (CI lays shared/ beside the repository)",
        d.display()
    );
    d
}

/// The Cluster CRD's schema (version v1).
pub fn cluster_schema() -> Value {
    let text = std::fs::read_to_string(
        vendor_dir().join("cloudnativepg/postgresql.cnpg.io_clusters.yaml"),
    )
    .unwrap();
    let crd: Value = serde_norway::from_str(&text).unwrap();
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap()["schema"]["openAPIV3Schema"]
        .clone()
}

/// The core v1 OpenAPI document.
pub fn core_openapi() -> Value {
    let text =
        std::fs::read_to_string(vendor_dir().join("kubernetes/api__v1_openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Whether `path` (no query) is one of the document's path templates (`{x}` = one segment,
/// a trailing `{path}` = the rest).
pub fn path_known(doc: &Value, path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    doc["paths"].as_object().unwrap().keys().any(|t| {
        let ts: Vec<&str> = t.trim_start_matches('/').split('/').collect();
        if ts.last() == Some(&"{path}") {
            segs.len() >= ts.len()
                && ts[..ts.len() - 1]
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        } else {
            ts.len() == segs.len()
                && ts
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        }
    })
}

/// Problems of `v` against `schema` (`root`: the document `$ref`s point into).
pub fn validate(v: &Value, schema: &Value, root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(v, schema, root, "", &mut out);
    out
}

fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let ptr = r.trim_start_matches('#');
            root.pointer(ptr)
                .unwrap_or_else(|| panic!("unresolved $ref {r}"))
        }
        None => schema,
    }
}

fn walk(v: &Value, schema: &Value, root: &Value, at: &str, out: &mut Vec<String>) {
    let s = resolve(schema, root);
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            walk(v, sub, root, at, out);
        }
    }
    if v.is_null() && s["nullable"] == true {
        return;
    }
    if s["x-kubernetes-int-or-string"] == true {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            out.push(format!("{at}: expected int or string, got {v}"));
        }
        return;
    }
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
            out.push(format!("{at}: expected {t}, got {v}"));
            return;
        }
    }
    if let Some(e) = s["enum"].as_array() {
        if !e.contains(v) {
            out.push(format!(
                "{at}: {v} is not one of {}",
                Value::Array(e.clone())
            ));
        }
    }
    if let Some(items) = s.get("items") {
        if let Some(a) = v.as_array() {
            for (i, x) in a.iter().enumerate() {
                walk(x, items, root, &format!("{at}[{i}]"), out);
            }
        }
    }
    let Some(obj) = v.as_object() else { return };
    if let Some(req) = s["required"].as_array() {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                out.push(format!("{at}.{r}: required"));
            }
        }
    }
    let props = s["properties"].as_object();
    let extra = s.get("additionalProperties");
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    for (k, x) in obj {
        let here = format!("{at}.{k}");
        match props.and_then(|p| p.get(k)) {
            Some(ps) => walk(x, ps, root, &here, out),
            None => match extra {
                Some(Value::Bool(false)) => out.push(format!("{here}: unknown field")),
                Some(Value::Bool(true)) => {}
                Some(es) => walk(x, es, root, &here, out),
                None if preserve || (props.is_none() && s.get("allOf").is_none()) => {}
                None if s.get("allOf").is_some() && props.is_none() => {}
                None => out.push(format!("{here}: unknown field")),
            },
        }
    }
}
