//! Row mapping shared by the catalog collectors (collectors.md §2.6.4): result columns are matched
//! to the declared fields by name (case-insensitively), a field without a column is `null`, a
//! column without a field is dropped. Values are decoded from PostgreSQL's binary format by type,
//! so "all columns of V" queries work on every server version without per-version casts.
//!
//! JSON rendering per type: xid → string, interval → integer microseconds, inet without a host
//! mask, float4 widened to float64, timestamptz → RFC 3339 with trimmed fraction in the process's
//! local zone, pg_lsn → `X/Y`, numeric → integer when whole, arrays → JSON arrays.

use postgres::types::{FromSql, Kind, Type};
use postgres::Row;
use serde_json::{Map, Number, Value};
use std::error::Error as StdError;
use std::time::{Duration, UNIX_EPOCH};

type BoxErr = Box<dyn StdError + Sync + Send>;

/// Any column decoded into its JSON form.
pub struct AnyJson(pub Value);

impl<'a> FromSql<'a> for AnyJson {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxErr> {
        decode(ty, raw).map(AnyJson)
    }
    fn from_sql_null(_: &Type) -> Result<Self, BoxErr> {
        Ok(AnyJson(Value::Null))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be_i16(b: &[u8]) -> Result<i16, BoxErr> {
    Ok(i16::from_be_bytes(
        b.get(..2).ok_or("short int2")?.try_into()?,
    ))
}
fn be_i32(b: &[u8]) -> Result<i32, BoxErr> {
    Ok(i32::from_be_bytes(
        b.get(..4).ok_or("short int4")?.try_into()?,
    ))
}
fn be_i64(b: &[u8]) -> Result<i64, BoxErr> {
    Ok(i64::from_be_bytes(
        b.get(..8).ok_or("short int8")?.try_into()?,
    ))
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Seconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_UNIX: i64 = 946_684_800;

/// RFC 3339 with nanoseconds, trailing zeros trimmed, in the process's local zone.
pub fn local_rfc3339(unix_secs: i64, nanos: u32) -> String {
    let off = crate::timefmt::local_offset_seconds(unix_secs);
    let shifted = unix_secs + off;
    let t = if shifted >= 0 {
        UNIX_EPOCH + Duration::new(shifted as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(shifted.unsigned_abs())
            + Duration::from_nanos(nanos as u64)
    };
    let s = crate::timefmt::utc_nanos(t);
    if off == 0 {
        return s;
    }
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.abs();
    format!(
        "{}{sign}{:02}:{:02}",
        s.trim_end_matches('Z'),
        a / 3600,
        (a / 60) % 60
    )
}

fn timestamp(us: i64) -> Value {
    if us == i64::MAX || us == i64::MIN {
        // ±infinity: Go's zero time.
        return Value::from("0001-01-01T00:00:00Z");
    }
    let secs = us.div_euclid(1_000_000) + PG_EPOCH_UNIX;
    let nanos = (us.rem_euclid(1_000_000) * 1000) as u32;
    Value::from(local_rfc3339(secs, nanos))
}

fn numeric(raw: &[u8]) -> Result<Value, BoxErr> {
    let ndigits = be_i16(raw)? as usize;
    let weight = be_i16(&raw[2..])? as i32;
    let sign = u16::from_be_bytes(raw.get(4..6).ok_or("short numeric")?.try_into()?);
    if sign == 0xC000 || sign == 0xD000 || sign == 0xF000 {
        return Ok(Value::Null); // NaN / ±Infinity have no JSON form
    }
    let mut int: i128 = 0;
    let mut exact = true;
    let mut f: f64 = 0.0;
    for i in 0..ndigits {
        let d = be_i16(raw.get(8 + 2 * i..).ok_or("short numeric")?)? as i64;
        let pow = weight - i as i32;
        f += d as f64 * 10000f64.powi(pow);
        if pow >= 0 {
            int = int
                .saturating_add((d as i128).saturating_mul(10000i128.saturating_pow(pow as u32)));
        } else if d != 0 {
            exact = false;
        }
    }
    let neg = sign == 0x4000;
    if exact && int <= i64::MAX as i128 {
        let v = int as i64;
        return Ok(Value::from(if neg { -v } else { v }));
    }
    Ok(float(if neg { -f } else { f }))
}

fn inet(raw: &[u8]) -> Result<Value, BoxErr> {
    let family = *raw.first().ok_or("short inet")?;
    let bits = *raw.get(1).ok_or("short inet")?;
    let addr = raw.get(4..).ok_or("short inet")?;
    let (ip, max): (std::net::IpAddr, u8) = if family == 2 {
        let a: [u8; 4] = addr.get(..4).ok_or("short inet")?.try_into()?;
        (a.into(), 32)
    } else {
        let a: [u8; 16] = addr.get(..16).ok_or("short inet")?.try_into()?;
        (a.into(), 128)
    };
    Ok(Value::from(if bits == max {
        ip.to_string()
    } else {
        format!("{ip}/{bits}")
    }))
}

fn array(elem: &Type, raw: &[u8]) -> Result<Value, BoxErr> {
    let ndim = be_i32(raw)?;
    if ndim == 0 {
        return Ok(Value::Array(Vec::new()));
    }
    let mut pos = 12usize;
    let mut count: usize = 1;
    for _ in 0..ndim {
        count *= be_i32(raw.get(pos..).ok_or("short array")?)?.max(0) as usize;
        pos += 8;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = be_i32(raw.get(pos..).ok_or("short array")?)?;
        pos += 4;
        if len < 0 {
            out.push(Value::Null);
        } else {
            let end = pos + len as usize;
            out.push(decode(
                elem,
                raw.get(pos..end).ok_or("short array element")?,
            )?);
            pos = end;
        }
    }
    Ok(Value::Array(out))
}

/// Decodes one non-NULL binary value into JSON.
pub fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxErr> {
    if let Kind::Array(elem) = ty.kind() {
        return array(elem, raw);
    }
    Ok(match *ty {
        Type::BOOL => Value::Bool(*raw.first().ok_or("short bool")? != 0),
        Type::INT2 => Value::from(be_i16(raw)?),
        Type::INT4 => Value::from(be_i32(raw)?),
        Type::INT8 => Value::from(be_i64(raw)?),
        Type::OID
        | Type::REGCLASS
        | Type::REGPROC
        | Type::REGTYPE
        | Type::REGNAMESPACE
        | Type::REGROLE => Value::from(be_i32(raw)? as u32),
        Type::XID | Type::CID => Value::from((be_i32(raw)? as u32).to_string()),
        Type::XID8 => Value::from((be_i64(raw)? as u64).to_string()),
        Type::FLOAT4 => float(f32::from_bits(be_i32(raw)? as u32) as f64),
        Type::FLOAT8 => float(f64::from_bits(be_i64(raw)? as u64)),
        Type::NUMERIC => numeric(raw)?,
        Type::TIMESTAMPTZ | Type::TIMESTAMP => timestamp(be_i64(raw)?),
        Type::INTERVAL => {
            let us = be_i64(raw)?;
            let days = be_i32(&raw[8..])? as i64;
            let months = be_i32(&raw[12..])? as i64;
            Value::from(us + days * 86_400_000_000 + months * 30 * 86_400_000_000)
        }
        Type::INET | Type::CIDR => inet(raw)?,
        Type::PG_LSN => {
            let v = be_i64(raw)? as u64;
            Value::from(format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff))
        }
        Type::JSON => serde_json::from_slice(raw)?,
        Type::JSONB => serde_json::from_slice(raw.get(1..).ok_or("short jsonb")?)?,
        Type::CHAR => Value::from(String::from_utf8_lossy(raw).into_owned()),
        Type::TEXT | Type::NAME | Type::VARCHAR | Type::BPCHAR | Type::UNKNOWN => {
            Value::from(String::from_utf8_lossy(raw).into_owned())
        }
        // Anything else is a query bug (cast it in SQL); never guess at a binary format.
        _ => return Err(format!("unsupported column type {}", ty.name()).into()),
    })
}

/// Appends the Go JSON encoding of one non-NULL binary value to `out` (the streaming path).
/// The frequent scalar types are written directly; the others go through [`decode`], so both
/// paths render every type the same way.
pub fn encode(ty: &Type, raw: &[u8], out: &mut String) -> Result<(), BoxErr> {
    use std::fmt::Write as _;
    let float = |out: &mut String, f: f64| {
        if f.is_finite() {
            crate::gojson::write_float(out, f).map_err(BoxErr::from)
        } else {
            out.push_str("null");
            Ok(())
        }
    };
    match *ty {
        Type::BOOL => out.push_str(if *raw.first().ok_or("short bool")? != 0 {
            "true"
        } else {
            "false"
        }),
        Type::INT2 => write!(out, "{}", be_i16(raw)?)?,
        Type::INT4 => write!(out, "{}", be_i32(raw)?)?,
        Type::INT8 => write!(out, "{}", be_i64(raw)?)?,
        Type::OID
        | Type::REGCLASS
        | Type::REGPROC
        | Type::REGTYPE
        | Type::REGNAMESPACE
        | Type::REGROLE => write!(out, "{}", be_i32(raw)? as u32)?,
        Type::XID | Type::CID => write!(out, "\"{}\"", be_i32(raw)? as u32)?,
        Type::FLOAT4 => float(out, f32::from_bits(be_i32(raw)? as u32) as f64)?,
        Type::FLOAT8 => float(out, f64::from_bits(be_i64(raw)? as u64))?,
        Type::TEXT | Type::NAME | Type::VARCHAR | Type::BPCHAR | Type::UNKNOWN | Type::CHAR => {
            crate::gojson::write_str(out, &String::from_utf8_lossy(raw))
        }
        _ => crate::gojson::write_value(out, &decode(ty, raw)?)?,
    }
    Ok(())
}

/// Maps one row onto `fields` by column name: missing columns → `null`, extra columns dropped.
/// `omitempty` fields are left out when NULL.
pub fn map_row(row: &Row, fields: &[&str], omitempty: &[&str]) -> crate::error::Result<Value> {
    let cols = row.columns();
    let mut m = Map::with_capacity(fields.len());
    for f in fields {
        let idx = cols.iter().position(|c| c.name().eq_ignore_ascii_case(f));
        let v = match idx {
            Some(i) => {
                row.try_get::<_, AnyJson>(i)
                    .map_err(|e| crate::error::Error::other(format!("decoding column {f}: {e}")))?
                    .0
            }
            None => Value::Null,
        };
        if v.is_null() && omitempty.contains(f) {
            continue;
        }
        m.insert((*f).to_string(), v);
    }
    Ok(Value::Object(m))
}

/// SQL condition: the relation `rel_oid_expr` is not locked (or waited for) in
/// AccessExclusiveLock mode by anyone. Catalog reads of such relations are skipped, never waited on.
pub fn not_exclusively_locked(rel_oid_expr: &str) -> String {
    format!(
        "{rel_oid_expr} NOT IN (SELECT lk.relation FROM pg_catalog.pg_locks lk WHERE lk.locktype = 'relation' \
         AND lk.mode = 'AccessExclusiveLock' AND lk.relation IS NOT NULL \
         AND lk.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database()))"
    )
}

/// The table an index belongs to (the relation itself when it is not an index), for the lock test.
pub fn table_of(rel_oid_expr: &str) -> String {
    format!("COALESCE((SELECT x.indrelid FROM pg_catalog.pg_index x WHERE x.indexrelid = {rel_oid_expr}), {rel_oid_expr})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_rendering() {
        assert_eq!(
            decode(&Type::XID, &7u32.to_be_bytes()).unwrap(),
            Value::from("7")
        );
        assert_eq!(
            decode(&Type::FLOAT4, &0.1f32.to_bits().to_be_bytes())
                .unwrap()
                .to_string(),
            "0.10000000149011612"
        );
        let mut iv = 1_500_000i64.to_be_bytes().to_vec();
        iv.extend(1i32.to_be_bytes());
        iv.extend(0i32.to_be_bytes());
        assert_eq!(
            decode(&Type::INTERVAL, &iv).unwrap(),
            Value::from(86_401_500_000i64)
        );
        assert_eq!(
            decode(&Type::INET, &[2, 32, 0, 4, 10, 0, 0, 1]).unwrap(),
            Value::from("10.0.0.1")
        );
        assert_eq!(
            decode(&Type::INET, &[2, 8, 1, 4, 10, 0, 0, 0]).unwrap(),
            Value::from("10.0.0.0/8")
        );
        let lsn = (0x16u64 << 32 | 0xB374D848).to_be_bytes();
        assert_eq!(
            decode(&Type::PG_LSN, &lsn).unwrap(),
            Value::from("16/B374D848")
        );
        // numeric 123456789 = [1, 2345, 6789] weight 2
        let mut n = Vec::new();
        for x in [3i16, 2, 0, 0, 1, 2345, 6789] {
            n.extend(x.to_be_bytes());
        }
        assert_eq!(
            decode(&Type::NUMERIC, &n).unwrap(),
            Value::from(123_456_789i64)
        );
        // numeric 12.5 = [12, 5000] weight 0 dscale 1
        let mut n = Vec::new();
        for x in [2i16, 0, 0, 1, 12, 5000] {
            n.extend(x.to_be_bytes());
        }
        assert_eq!(decode(&Type::NUMERIC, &n).unwrap(), Value::from(12.5));
        assert_eq!(timestamp(i64::MAX), Value::from("0001-01-01T00:00:00Z"));
    }
}
