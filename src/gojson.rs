//! Go `encoding/json`-compatible encoding of a `serde_json::Value`.
//!
//! The platform hashes two payloads (system info, active configuration) and compares them with
//! what the Go agent would have produced, so the bytes must match Go exactly: HTML characters
//! escaped, U+2028/U+2029 escaped, whole floats without `.0`, Go's exponent thresholds.
//! Object members are written in the order the `Value` holds them (`preserve_order`): builders
//! insert struct fields in declaration order and map keys sorted, as Go does.

use serde_json::Value;

/// Encodes `v` as Go's `json.Marshal` would. Fails only on NaN/±Inf, which Go cannot encode.
pub fn to_string(v: &Value) -> Result<String, String> {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v)?;
    Ok(out)
}

pub fn to_vec(v: &Value) -> Result<Vec<u8>, String> {
    to_string(v).map(String::into_bytes)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    hex(d.as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Appends `v`'s Go encoding to `out` (the streaming encoder writes rows with it).
pub fn write_value(out: &mut String, v: &Value) -> Result<(), String> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                write_float(out, n.as_f64().unwrap_or(f64::NAN))?;
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, x)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_value(out, x)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Go's float64 rule: shortest round-trip digits; plain decimal for 1e-6 <= |v| < 1e21, else
/// exponent form where a negative exponent has no zero padding (`1e-7`) and a positive one has
/// at least two digits (`1e+21`).
pub fn write_float(out: &mut String, f: f64) -> Result<(), String> {
    if !f.is_finite() {
        return Err(format!("json: unsupported value: {f}"));
    }
    let a = f.abs();
    if a == 0.0 || (1e-6..1e21).contains(&a) {
        // Rust's Display is shortest round-trip and never uses an exponent; 1.0 prints as "1".
        let s = format!("{f}");
        out.push_str(if s == "-0" { "-0" } else { &s });
        return Ok(());
    }
    let s = format!("{f:e}"); // e.g. "1e-7", "1.5e21"
    let (mant, exp) = s.split_once('e').expect("exponent form");
    out.push_str(mant);
    out.push('e');
    if let Some(neg) = exp.strip_prefix('-') {
        out.push('-');
        out.push_str(neg);
    } else {
        out.push('+');
        if exp.len() < 2 {
            out.push('0');
        }
        out.push_str(exp);
    }
    Ok(())
}

/// Appends `s` as a Go JSON string. Runs of bytes that need no escape are copied at once (the
/// catalog payloads are mostly plain names); every escape Go makes is ASCII except U+2028/U+2029.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    write_str_body(out, s);
    out.push('"');
}

/// [`write_str`] without the quotes, so a long text can be written in pieces (split at char
/// boundaries).
pub fn write_str_body(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let esc: Option<&str> = match c {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            b'<' => Some("\\u003c"),
            b'>' => Some("\\u003e"),
            b'&' => Some("\\u0026"),
            0xE2 if b.get(i + 1) == Some(&0x80)
                && matches!(b.get(i + 2), Some(0xA8) | Some(0xA9)) =>
            {
                Some(if b[i + 2] == 0xA8 {
                    "\\u2028"
                } else {
                    "\\u2029"
                })
            }
            c if c < 0x20 => Some(""),
            _ => None,
        };
        let Some(e) = esc else {
            i += 1;
            continue;
        };
        out.push_str(&s[run..i]);
        if e.is_empty() {
            out.push_str(&format!("\\u{:04x}", c));
        } else {
            out.push_str(e);
        }
        i += if c == 0xE2 { 3 } else { 1 };
        run = i;
    }
    out.push_str(&s[run..]);
}

/// Rounds to three decimals, halves away from zero (Go's `math.Round(v*1000)/1000`).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: f64) -> String {
        let mut s = String::new();
        write_float(&mut s, v).unwrap();
        s
    }

    #[test]
    fn floats_follow_go() {
        assert_eq!(f(1.0), "1");
        assert_eq!(f(1.5), "1.5");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e-6), "0.000001");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(1.5e-10), "1.5e-10");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1e20), "100000000000000000000");
        assert_eq!(f(-2.5e22), "-2.5e+22");
        assert_eq!(f(0.10000000149011612), "0.10000000149011612");
        assert!(write_float(&mut String::new(), f64::NAN).is_err());
    }

    #[test]
    fn strings_escape_html_like_go() {
        let v = json!({"a<b": "x & y > z\u{2028}\u{1}\"\\/"});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"a\u003cb":"x \u0026 y \u003e z\u2028\u0001\"\\/"}"#
        );
        // Other characters starting with byte 0xE2 (€, …) pass unescaped; U+2029 is escaped.
        let mut s = String::new();
        write_str(&mut s, "€ é\u{2029}…\u{1f}");
        assert_eq!(s, r#""€ é\u2029…\u001f""#);
    }

    #[test]
    fn round3_halves_away_from_zero() {
        assert_eq!(round3(1.23456789), 1.235);
        assert_eq!(round3(-1.23456789), -1.235);
        assert_eq!(round3(0.0001234), 0.0);
        assert_eq!(round3(1.9999), 2.0);
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
