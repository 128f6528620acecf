//! Turning a recommended `setting` (JSON number, string, bool or null) into text, by
//! `vartype` (protocol.md §7.2). Differences from the Go agent, all deliberate: reals keep
//! their full precision (shortest round-trip form instead of `%.6g`), and null is refused
//! instead of becoming the text `<nil>`. The text is checked against `pg_settings` afterwards
//! (validate.rs) and only ever reaches SQL as a quoted literal.

use serde_json::Value;

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Renders `v` for a parameter of `vartype`.
pub fn render(vartype: &str, v: &Value) -> Result<String, String> {
    match (vartype, v) {
        ("integer", Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(i.to_string());
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Go truncates toward zero (8192.7 → 8192); out of int64 range is an error here.
            if !f.is_finite() || f.trunc() < i64::MIN as f64 || f.trunc() >= i64::MAX as f64 {
                return Err(format!("integer setting {n} is out of range"));
            }
            Ok((f.trunc() as i64).to_string())
        }
        ("integer", Value::String(s)) => Ok(s.clone()),
        ("integer", other) => Err(format!(
            "unexpected type for integer setting: {}",
            json_type(other)
        )),
        ("real", Value::Number(n)) => {
            let f = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("real setting {n} is not finite"))?;
            Ok(shortest(f))
        }
        ("real", Value::String(s)) => Ok(s.clone()),
        ("real", other) => Err(format!(
            "unexpected type for real setting: {}",
            json_type(other)
        )),
        (_, Value::String(s)) => Ok(s.clone()),
        (_, Value::Bool(b)) => Ok(b.to_string()),
        (_, Value::Number(n)) => match n.as_f64() {
            Some(f) => Ok(go_shortest_g(f)),
            None => Ok(n.to_string()),
        },
        (t, other) => Err(format!(
            "unexpected type for {t} setting: {} (expected a string)",
            json_type(other)
        )),
    }
}

/// The shortest text that reads back as `f` (`0.9`, `1`, `1e-05` → `0.00001`).
pub fn shortest(f: f64) -> String {
    if f == f.trunc() && f.abs() < 1e15 {
        return format!("{}", f as i64);
    }
    format!("{f}")
}

/// Go's `%v` for a float64 (protocol.md §7.2): shortest digits, exponent form `e±dd` when the
/// exponent is < −4 or ≥ 6 (`1e+06`, `1e-05`, `123456`).
pub fn go_shortest_g(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}"); // e.g. "1.234567e6", "-5e-5"
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers() {
        assert_eq!(render("integer", &json!(8192)).unwrap(), "8192");
        assert_eq!(render("integer", &json!(8192.7)).unwrap(), "8192");
        assert_eq!(render("integer", &json!(-1)).unwrap(), "-1");
        assert_eq!(render("integer", &json!("8192")).unwrap(), "8192");
        assert_eq!(
            render("integer", &json!(true)).unwrap_err(),
            "unexpected type for integer setting: bool"
        );
        assert_eq!(
            render("integer", &json!(null)).unwrap_err(),
            "unexpected type for integer setting: <nil>"
        );
    }

    #[test]
    fn reals_keep_precision() {
        assert_eq!(render("real", &json!(0.9)).unwrap(), "0.9");
        assert_eq!(render("real", &json!(1.0)).unwrap(), "1");
        assert_eq!(render("real", &json!(4.5)).unwrap(), "4.5");
        assert_eq!(render("real", &json!(1234567)).unwrap(), "1234567");
        assert_eq!(render("real", &json!(1.1234567)).unwrap(), "1.1234567");
        assert_eq!(render("real", &json!("1.5")).unwrap(), "1.5");
        assert!(render("real", &json!(false))
            .unwrap_err()
            .contains("unexpected type for real setting: bool"));
    }

    #[test]
    fn strings_enums_bools_like_go_v() {
        assert_eq!(render("bool", &json!(true)).unwrap(), "true");
        assert_eq!(render("bool", &json!("on")).unwrap(), "on");
        assert_eq!(render("enum", &json!("replica")).unwrap(), "replica");
        assert_eq!(render("string", &json!(1000000)).unwrap(), "1e+06");
        assert_eq!(render("string", &json!(123456)).unwrap(), "123456");
        assert_eq!(render("string", &json!(0.00001)).unwrap(), "1e-05");
        assert_eq!(render("string", &json!(0.5)).unwrap(), "0.5");
        assert!(render("string", &json!(null)).is_err());
    }
}
