//! Checking a rendered value against the parameter's `pg_settings` row before anything is
//! touched (name, context, vartype, unit, min_val/max_val, enumvals), and normalising values
//! so "already set" is decided the way PostgreSQL sees it: `'4MB'` equals `4096` for a kB
//! parameter, `on` equals `true`, real `1.0` equals `1`.

use super::units::{parse_bool, parse_number, same_real, BaseUnit};
use crate::pg::queries::Setting;

/// A value as PostgreSQL understands it.
#[derive(Clone, Debug, PartialEq)]
pub enum Norm {
    Bool(bool),
    /// In the parameter's base unit.
    Int(i64),
    Real(f64),
    /// The canonical (lower-case) enum label.
    Enum(String),
    Str(String),
}

impl Norm {
    pub fn same(&self, other: &Norm) -> bool {
        match (self, other) {
            (Norm::Real(a), Norm::Real(b)) => same_real(*a, *b),
            (Norm::Enum(a), Norm::Enum(b)) => a.eq_ignore_ascii_case(b),
            _ => self == other,
        }
    }

    /// The text written with ALTER SYSTEM (as a quoted literal) — base units, canonical.
    pub fn text(&self) -> String {
        match self {
            Norm::Bool(b) => if *b { "on" } else { "off" }.to_string(),
            Norm::Int(i) => i.to_string(),
            Norm::Real(f) => super::render::shortest(*f),
            Norm::Enum(s) | Norm::Str(s) => s.clone(),
        }
    }
}

fn base_unit(s: &Setting) -> Option<BaseUnit> {
    s.unit
        .as_deref()
        .filter(|u| !u.is_empty())
        .and_then(BaseUnit::parse)
}

fn unit_label(s: &Setting) -> String {
    match s.unit.as_deref() {
        Some(u) if !u.is_empty() => format!(" (base unit {u})"),
        _ => String::new(),
    }
}

/// Interprets `text` for the parameter `s`, checking type, unit, range and enum labels.
pub fn normalise(s: &Setting, text: &str) -> Result<Norm, String> {
    if text.contains('\0') {
        return Err("the value contains a NUL character".into());
    }
    match s.vartype.as_str() {
        "bool" => parse_bool(text).map(Norm::Bool).ok_or_else(|| {
            format!("{text:?} is not a boolean (expected on/off, true/false, yes/no, 1/0)")
        }),
        "integer" => {
            let base = base_unit(s);
            let v = parse_number(text, base)
                .map_err(|e| format!("{e}: expected an integer{}", unit_label(s)))?;
            let has_unit = text.trim().ends_with(|c: char| c.is_ascii_alphabetic());
            if !has_unit && v.fract() != 0.0 {
                return Err(format!("{text:?} is not an integer{}", unit_label(s)));
            }
            let r = v.round();
            if r < i64::MIN as f64 || r >= i64::MAX as f64 {
                return Err(format!("{text:?} is out of range for an integer"));
            }
            let i = r as i64;
            let min = s.min_val.as_deref().and_then(|m| m.parse::<i64>().ok());
            let max = s.max_val.as_deref().and_then(|m| m.parse::<i64>().ok());
            if min.is_some_and(|m| i < m) || max.is_some_and(|m| i > m) {
                return Err(format!(
                    "{i} is outside the allowed range {} to {}{}",
                    s.min_val.as_deref().unwrap_or("?"),
                    s.max_val.as_deref().unwrap_or("?"),
                    unit_label(s)
                ));
            }
            Ok(Norm::Int(i))
        }
        "real" => {
            let v = parse_number(text, base_unit(s))
                .map_err(|e| format!("{e}: expected a number{}", unit_label(s)))?;
            let min = s.min_val.as_deref().and_then(|m| m.parse::<f64>().ok());
            let max = s.max_val.as_deref().and_then(|m| m.parse::<f64>().ok());
            if min.is_some_and(|m| v < m && !same_real(v, m))
                || max.is_some_and(|m| v > m && !same_real(v, m))
            {
                return Err(format!(
                    "{v} is outside the allowed range {} to {}{}",
                    s.min_val.as_deref().unwrap_or("?"),
                    s.max_val.as_deref().unwrap_or("?"),
                    unit_label(s)
                ));
            }
            Ok(Norm::Real(v))
        }
        "enum" => {
            let vals = s.enumvals.clone().unwrap_or_default();
            vals.iter()
                .find(|v| v.eq_ignore_ascii_case(text))
                .map(|v| Norm::Enum(v.clone()))
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not one of the allowed values [{}]",
                        vals.join(", ")
                    )
                })
        }
        _ => Ok(Norm::Str(text.to_string())),
    }
}

/// Checks a recommended value (already rendered to text) for the parameter `s`. `rec_unit` is
/// the unit the platform says the value is in: it must be the parameter's base unit.
pub fn check(s: &Setting, text: &str, rec_unit: Option<&str>) -> Result<Norm, String> {
    if s.context == "internal" {
        return Err("is read-only (context internal) and cannot be changed".into());
    }
    if let Some(u) = rec_unit.map(str::trim).filter(|u| !u.is_empty()) {
        match s.unit.as_deref().filter(|u| !u.is_empty()) {
            Some(base) if base == u => {}
            Some(base) => {
                return Err(format!(
                    "the value is declared in unit {u:?} but PostgreSQL's base unit is {base:?}; values must be sent in base units"
                ))
            }
            None => return Err(format!("the value is declared in unit {u:?} but the parameter has no unit")),
        }
    }
    normalise(s, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(
        name: &str,
        vartype: &str,
        unit: Option<&str>,
        min: Option<&str>,
        max: Option<&str>,
    ) -> Setting {
        Setting {
            name: name.into(),
            setting: String::new(),
            unit: unit.map(Into::into),
            vartype: vartype.into(),
            context: "user".into(),
            source: "default".into(),
            min_val: min.map(Into::into),
            max_val: max.map(Into::into),
            enumvals: None,
            boot_val: None,
            reset_val: None,
            pending_restart: false,
        }
    }

    #[test]
    fn integers_with_units_and_ranges() {
        let wm = setting(
            "work_mem",
            "integer",
            Some("kB"),
            Some("64"),
            Some("2147483647"),
        );
        assert_eq!(check(&wm, "4MB", None).unwrap(), Norm::Int(4096));
        assert!(check(&wm, "4MB", None)
            .unwrap()
            .same(&normalise(&wm, "4096").unwrap()));
        assert_eq!(check(&wm, "8192", Some("kB")).unwrap(), Norm::Int(8192));
        assert!(check(&wm, "8192", Some("MB"))
            .unwrap_err()
            .contains("base unit is \"kB\""));
        assert!(check(&wm, "1", None)
            .unwrap_err()
            .contains("outside the allowed range 64 to 2147483647"));
        assert!(check(&wm, "1.5", None)
            .unwrap_err()
            .contains("not an integer"));
        assert!(check(&wm, "'; DROP TABLE t; --", None).is_err());
    }

    #[test]
    fn reals_bools_enums() {
        let rpc = setting(
            "random_page_cost",
            "real",
            None,
            Some("0"),
            Some("1.79769e+308"),
        );
        assert!(check(&rpc, "1.0", None)
            .unwrap()
            .same(&normalise(&rpc, "1").unwrap()));
        assert!(check(&rpc, "-1", None).is_err());
        let b = setting("jit", "bool", None, None, None);
        assert!(check(&b, "true", None)
            .unwrap()
            .same(&normalise(&b, "on").unwrap()));
        assert!(check(&b, "maybe", None).is_err());
        let mut e = setting("wal_level", "enum", None, None, None);
        e.enumvals = Some(vec!["minimal".into(), "replica".into(), "logical".into()]);
        assert_eq!(
            check(&e, "Replica", None).unwrap(),
            Norm::Enum("replica".into())
        );
        assert!(check(&e, "replca", None)
            .unwrap_err()
            .contains("[minimal, replica, logical]"));
        let mut i = setting("block_size", "integer", None, None, None);
        i.context = "internal".into();
        assert!(check(&i, "8192", None).unwrap_err().contains("read-only"));
    }
}
