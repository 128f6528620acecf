//! Decoding `GET configurations?status=recommended` (protocol.md §5.7): a JSON array whose
//! element [0] is used. Field names match case-insensitively as Go's decoder does; an invalid
//! or null `knob_application` rejects the whole response; a missing one is "unspecified".

use crate::error::{Error, Result};
use crate::model::{KnobApplication, Recommendation, RecommendedKnob};
use serde_json::{Map, Value};

/// Go's case-insensitive field lookup; with duplicates the last one wins.
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn opt_string(v: Option<&Value>, what: &str) -> Result<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::invalid(format!(
            "recommendation: {what} must be a string, got {other}"
        ))),
    }
}

/// Largest recommendation body accepted. PostgreSQL's whole configuration as JSON is about
/// 100 kB; anything near this is not a recommendation.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most knobs one recommendation may change (PostgreSQL has about 350 parameters).
pub const MAX_KNOBS: usize = 500;

/// `Ok(None)` for an empty array (nothing to apply).
pub fn decode(body: &[u8]) -> Result<Option<Recommendation>> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::invalid(format!(
            "decoding recommendations: the body is {} bytes, over the limit of {MAX_BODY_BYTES} bytes; nothing was applied",
            body.len()
        )));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Error::invalid(format!(
            "decoding recommendations: not JSON ({e}); body starts with {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)])
        ))
    })?;
    let arr = match v {
        Value::Array(a) => a,
        other => {
            let kind = match other {
                Value::Object(_) => "an object",
                Value::Null => "null",
                _ => "a scalar",
            };
            return Err(Error::invalid(format!(
                "decoding recommendations: expected a JSON array, got {kind}"
            )));
        }
    };
    let first = match arr.into_iter().next() {
        None => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(Error::invalid(format!(
                "decoding recommendations: element 0 is not an object: {other}"
            )))
        }
    };
    let knob_application = match field(&first, "knob_application") {
        None => KnobApplication::Unspecified,
        Some(Value::String(s)) if s == "restart" => KnobApplication::Restart,
        Some(Value::String(s)) if s == "reload" => KnobApplication::Reload,
        Some(other) => {
            return Err(Error::invalid(format!(
                "invalid knob_application {other} (expected \"restart\" or \"reload\")"
            )))
        }
    };
    let knobs_overrides = match field(&first, "knobs_overrides") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(Error::invalid(format!(
                    "recommendation: knobs_overrides entry {other} is not a string"
                ))),
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(Error::invalid(format!(
                "recommendation: knobs_overrides must be an array, got {other}"
            )))
        }
    };
    let config = match field(&first, "config") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rows)) => rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let m = r.as_object().ok_or_else(|| {
                    Error::invalid(format!("recommendation: config[{i}] is not an object"))
                })?;
                Ok(RecommendedKnob {
                    name: opt_string(field(m, "name"), &format!("config[{i}].name"))?
                        .unwrap_or_default(),
                    setting: field(m, "setting").cloned().unwrap_or(Value::Null),
                    unit: opt_string(field(m, "unit"), &format!("config[{i}].unit"))?,
                    vartype: opt_string(field(m, "vartype"), &format!("config[{i}].vartype"))?
                        .unwrap_or_default(),
                    context: opt_string(field(m, "context"), &format!("config[{i}].context"))?
                        .unwrap_or_default(),
                })
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(Error::invalid(format!(
                "recommendation: config must be an array, got {other}"
            )))
        }
    };
    if knobs_overrides.len() > MAX_KNOBS {
        return Err(Error::invalid(format!(
            "recommendation: {} knobs in knobs_overrides, over the limit of {MAX_KNOBS}; nothing was applied",
            knobs_overrides.len()
        )));
    }
    Ok(Some(Recommendation {
        config,
        knobs_overrides,
        knob_application,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_go_style() {
        let r = decode(br#"[{"Config":[{"name":"work_mem","setting":8192,"unit":"kB","vartype":"integer","context":"user"}],"knobs_overrides":["work_mem"],"knob_application":"reload","extra":1}]"#)
            .unwrap()
            .unwrap();
        assert_eq!(r.knob_application, KnobApplication::Reload);
        assert_eq!(r.config[0].name, "work_mem");
        assert_eq!(r.config[0].setting, serde_json::json!(8192));
        assert_eq!(decode(b"[]").unwrap(), None);
        let missing = decode(br#"[{"config":[],"knobs_overrides":[]}]"#)
            .unwrap()
            .unwrap();
        assert_eq!(missing.knob_application, KnobApplication::Unspecified);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(decode(br#"[{"knob_application":null}]"#).is_err());
        assert!(decode(br#"[{"knob_application":"RESTART"}]"#).is_err());
        assert!(decode(br#"{"error":"x"}"#).is_err());
        assert!(decode(b"<html>").is_err());
    }

    #[test]
    fn bounds_the_body_and_the_knob_count() {
        let big = format!(
            "[{{\"config\":[],\"knobs_overrides\":[],\"x\":\"{}\"}}]",
            "a".repeat(MAX_BODY_BYTES)
        );
        let e = decode(big.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("over the limit of 1048576 bytes"), "{e}");
        let names: Vec<String> = (0..=MAX_KNOBS).map(|i| format!("\"k{i}\"")).collect();
        let many = format!(
            "[{{\"config\":[],\"knobs_overrides\":[{}]}}]",
            names.join(",")
        );
        let e = decode(many.as_bytes()).unwrap_err().to_string();
        assert!(
            e.contains("501 knobs in knobs_overrides, over the limit of 500"),
            "{e}"
        );
    }
}
