//! Wire payloads (protocol.md §5), built as ordered JSON values: struct fields in the Go
//! agent's declaration order, map keys sorted. Encoded with `gojson` so hashes match Go.

use crate::gojson;
use crate::model::{ConfigRow, ErrorReport, GuardrailSignal, Metric};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::SystemTime;

fn obj(fields: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

/// Floats are rounded to 3 decimals in metrics and system info; other values pass unchanged.
fn rounded(v: &Value) -> Value {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => n
            .as_f64()
            .and_then(|f| serde_json::Number::from_f64(gojson::round3(f)))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        other => other.clone(),
    }
}

pub struct HeartbeatInfo<'a> {
    pub agent_version: &'a str,
    pub agent_start_time: SystemTime,
    pub agent_identifier: &'a str,
    pub allow_restart: bool,
}

pub fn heartbeat(h: &HeartbeatInfo<'_>) -> Value {
    obj(vec![
        ("agent_version", Value::from(h.agent_version)),
        (
            "agent_start_time",
            Value::from(crate::timefmt::utc_seconds(h.agent_start_time)),
        ),
        ("agent_identifier", Value::from(h.agent_identifier)),
        ("allow_restart", Value::from(h.allow_restart)),
    ])
}

/// `{"version":"2.0","metrics":{...sorted...},"timestamp":<local>}`; a repeated key keeps the
/// last value.
pub fn metrics(samples: &[Metric], now: SystemTime) -> Value {
    let mut sorted: BTreeMap<&str, Value> = BTreeMap::new();
    for m in samples {
        sorted.insert(m.key, rounded(&m.value));
    }
    let mut mm = Map::new();
    for (k, v) in sorted {
        mm.insert(k.to_string(), v);
    }
    obj(vec![
        ("version", Value::from("2.0")),
        ("metrics", Value::Object(mm)),
        ("timestamp", Value::from(crate::timefmt::local_seconds(now))),
    ])
}

/// The `system_info` map alone (what the hash covers).
pub fn system_info_map(samples: &[Metric]) -> Value {
    let mut sorted: BTreeMap<&str, Value> = BTreeMap::new();
    for m in samples {
        sorted.insert(
            m.key,
            obj(vec![
                ("type", Value::from(m.kind.wire())),
                ("value", rounded(&m.value)),
            ]),
        );
    }
    let mut mm = Map::new();
    for (k, v) in sorted {
        mm.insert(k.to_string(), v);
    }
    Value::Object(mm)
}

pub fn system_info(samples: &[Metric], now: SystemTime) -> Result<Value, String> {
    let map = system_info_map(samples);
    let hash = gojson::sha256_hex(&gojson::to_vec(&map)?);
    Ok(obj(vec![
        ("system_info", map),
        ("timestamp", Value::from(crate::timefmt::local_seconds(now))),
        ("hash", Value::from(hash)),
    ]))
}

pub fn config_row(r: &ConfigRow) -> Value {
    obj(vec![
        ("name", Value::from(r.name.as_str())),
        ("setting", r.setting.clone()),
        (
            "unit",
            r.unit.as_deref().map(Value::from).unwrap_or(Value::Null),
        ),
        ("vartype", Value::from(r.vartype.as_str())),
        ("context", Value::from(r.context.as_str())),
    ])
}

pub fn configurations(rows: &[ConfigRow]) -> Result<Value, String> {
    let arr = Value::Array(rows.iter().map(config_row).collect());
    let hash = gojson::sha256_hex(&gojson::to_vec(&arr)?);
    Ok(obj(vec![("config", arr), ("hash", Value::from(hash))]))
}

/// A fingerprint of the rows [`configurations`] encodes (equal rows, equal body).
pub fn config_fingerprint(rows: &[ConfigRow]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    rows.len().hash(&mut h);
    for r in rows {
        r.name.hash(&mut h);
        match &r.setting {
            Value::String(s) => (0u8, s.as_str()).hash(&mut h),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => (1u8, i).hash(&mut h),
                (None, Some(f)) => (2u8, f.to_bits()).hash(&mut h),
                _ => (3u8, n.to_string()).hash(&mut h),
            },
            other => (4u8, other.to_string()).hash(&mut h),
        }
        r.unit.hash(&mut h);
        r.vartype.hash(&mut h);
        r.context.hash(&mut h);
    }
    h.finish()
}

/// The `setting` of an active-config row: integer and real settings become numbers (int
/// first, then float), everything else stays text (protocol.md §5.6).
pub fn typed_setting(vartype: &str, setting: &str) -> Value {
    if vartype == "integer" || vartype == "real" {
        if let Ok(i) = setting.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = setting.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                // Go prints a whole float64 without a fraction: "1.0" → 1.
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    return Value::from(f as i64);
                }
                return Value::Number(n);
            }
        }
    }
    Value::from(setting)
}

pub fn guardrail(s: &GuardrailSignal) -> Value {
    obj(vec![
        ("level", Value::from(s.level_wire())),
        ("type", Value::from(s.type_wire())),
    ])
}

pub fn log_entry(r: &ErrorReport, now: SystemTime) -> Value {
    obj(vec![
        ("error_message", Value::from(r.error_message.as_str())),
        ("error_type", Value::from(r.error_type.as_str())),
        ("timestamp", Value::from(crate::timefmt::utc_seconds(now))),
    ])
}

/// One shipped log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawLog {
    pub message: String,
    pub level: &'static str,
    pub time: SystemTime,
}

pub fn raw_logs(entries: &[RawLog]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                obj(vec![
                    ("message", Value::from(e.message.as_str())),
                    ("level", Value::from(e.level)),
                    (
                        "timestamp",
                        Value::from(crate::timefmt::utc_seconds(e.time)),
                    ),
                ])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    //! Hash fixtures: the expected bytes are written by hand in Go's encoding and their SHA-256
    //! was computed outside this code (`printf '%s' '<bytes>' | sha256sum`).
    use super::*;
    use crate::model::MetricType;

    #[test]
    fn system_info_hash_matches_hand_computed_fixture() {
        let m = |key, value: Value, kind| Metric { key, value, kind };
        // Deliberately unsorted input: the hash must not depend on collection order.
        let samples = vec![
            m("pg_version", Value::from("16.4"), MetricType::String),
            m(
                "node_memory_total",
                Value::from(16658804736i64),
                MetricType::Bytes,
            ),
            m("node_os_info", Value::from("linux"), MetricType::String),
            m(
                "system_info_platform_version",
                Value::from("22.04"),
                MetricType::String,
            ),
            m(
                "system_info_platform",
                Value::from("ubuntu"),
                MetricType::String,
            ),
            m("pg_max_connections", Value::from(100), MetricType::Int),
            m("node_cpu_count", Value::from(8), MetricType::Int),
            m(
                "pg_current_database",
                Value::from("shop<dev> & co"),
                MetricType::String,
            ),
            m("pg_database_count", Value::from(2), MetricType::Int),
        ];
        let expected = r#"{"node_cpu_count":{"type":"int","value":8},"node_memory_total":{"type":"bytes","value":16658804736},"node_os_info":{"type":"string","value":"linux"},"pg_current_database":{"type":"string","value":"shop\u003cdev\u003e \u0026 co"},"pg_database_count":{"type":"int","value":2},"pg_max_connections":{"type":"int","value":100},"pg_version":{"type":"string","value":"16.4"},"system_info_platform":{"type":"string","value":"ubuntu"},"system_info_platform_version":{"type":"string","value":"22.04"}}"#;
        assert_eq!(
            gojson::to_string(&system_info_map(&samples)).unwrap(),
            expected
        );
        let body = system_info(&samples, SystemTime::now()).unwrap();
        assert_eq!(
            body["hash"],
            "146fdc16e1effca9ba25ec96f60ac313612c6e3d9520aaba1dfc533e6a9746c1"
        );
    }

    #[test]
    fn configurations_hash_matches_hand_computed_fixture() {
        let row = |name: &str, setting: &str, unit: Option<&str>, vartype: &str, context: &str| {
            ConfigRow {
                name: name.into(),
                setting: typed_setting(vartype, setting),
                unit: unit.map(Into::into),
                vartype: vartype.into(),
                context: context.into(),
            }
        };
        let rows = vec![
            row(
                "allow_in_place_tablespaces",
                "off",
                None,
                "bool",
                "superuser",
            ),
            row("autovacuum_naptime", "60", Some("s"), "integer", "sighup"),
            row("random_page_cost", "1.1", None, "real", "user"),
            row("seq_page_cost", "1.0", None, "real", "user"),
            row("vacuum_cost_delay", "1e-06", Some("ms"), "real", "user"),
            row("log_line_prefix", "%m [%p] <%u>", None, "string", "sighup"),
        ];
        let expected = r#"[{"name":"allow_in_place_tablespaces","setting":"off","unit":null,"vartype":"bool","context":"superuser"},{"name":"autovacuum_naptime","setting":60,"unit":"s","vartype":"integer","context":"sighup"},{"name":"random_page_cost","setting":1.1,"unit":null,"vartype":"real","context":"user"},{"name":"seq_page_cost","setting":1,"unit":null,"vartype":"real","context":"user"},{"name":"vacuum_cost_delay","setting":0.000001,"unit":"ms","vartype":"real","context":"user"},{"name":"log_line_prefix","setting":"%m [%p] \u003c%u\u003e","unit":null,"vartype":"string","context":"sighup"}]"#;
        let body = configurations(&rows).unwrap();
        assert_eq!(gojson::to_string(&body["config"]).unwrap(), expected);
        assert_eq!(
            body["hash"],
            "20ee460959f21a4a77886462afa754910f66408142c93aa16bd1ab7fad5efd81"
        );
        assert_eq!(
            configurations(&[]).unwrap()["hash"],
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }

    #[test]
    fn metrics_round_and_sort() {
        let samples = vec![
            Metric::float("node_cpu_usage", 7.12549),
            Metric::bytes("node_memory_used", 3284475904),
            Metric::int("node_disk_io_ops_total", 41),
        ];
        let v = metrics(&samples, SystemTime::now());
        let s = gojson::to_string(&v["metrics"]).unwrap();
        assert_eq!(
            s,
            r#"{"node_cpu_usage":7.125,"node_disk_io_ops_total":41,"node_memory_used":3284475904}"#
        );
        assert_eq!(v["version"], "2.0");
    }
}
