//! PostgreSQL's value syntax for GUCs, as the server parses it: booleans (with unique
//! prefixes), numbers with memory or time units converted to a parameter's base unit
//! (`4MB` for a `kB` parameter is 4096), and the `%g` precision `pg_settings` shows reals with.

/// PostgreSQL's `parse_bool`: on/off, true/false, yes/no, 1/0 and unique prefixes.
pub fn parse_bool(s: &str) -> Option<bool> {
    let l = s.trim().to_ascii_lowercase();
    if l.is_empty() {
        return None;
    }
    let prefix_of = |word: &str| word.starts_with(l.as_str());
    match l.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        "on" => Some(true),
        "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

const MEMORY: &[(&str, f64)] = &[
    ("B", 1.0),
    ("kB", 1024.0),
    ("MB", 1024.0 * 1024.0),
    ("GB", 1024.0 * 1024.0 * 1024.0),
    ("TB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
];
const TIME: &[(&str, f64)] = &[
    ("us", 0.001),
    ("ms", 1.0),
    ("s", 1000.0),
    ("min", 60_000.0),
    ("h", 3_600_000.0),
    ("d", 86_400_000.0),
];

/// A parameter's base unit (`pg_settings.unit`, e.g. `8kB`, `ms`, `16MB`): its kind and size
/// in bytes or milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaseUnit {
    Memory(f64),
    Time(f64),
}

impl BaseUnit {
    pub fn parse(unit: &str) -> Option<BaseUnit> {
        let u = unit.trim();
        let split = u.find(|c: char| !c.is_ascii_digit()).unwrap_or(u.len());
        let (mult, name) = u.split_at(split);
        let mult: f64 = if mult.is_empty() {
            1.0
        } else {
            mult.parse().ok()?
        };
        if let Some((_, f)) = MEMORY.iter().find(|(n, _)| *n == name) {
            return Some(BaseUnit::Memory(mult * f));
        }
        TIME.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| BaseUnit::Time(mult * f))
    }

    fn units(self) -> &'static [(&'static str, f64)] {
        match self {
            BaseUnit::Memory(_) => MEMORY,
            BaseUnit::Time(_) => TIME,
        }
    }

    fn size(self) -> f64 {
        match self {
            BaseUnit::Memory(f) | BaseUnit::Time(f) => f,
        }
    }

    pub fn unit_names(self) -> String {
        self.units()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parses `text` as a number, optionally followed by a unit valid for `base` (case-sensitive,
/// as PostgreSQL), and returns the value in base units. `Err` says what was expected.
pub fn parse_number(text: &str, base: Option<BaseUnit>) -> Result<f64, String> {
    let t = text.trim();
    // Units are letters only; the number is everything before the trailing run of letters.
    let split = t.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len();
    let (num, unit) = t.split_at(split);
    let num = num.trim_end();
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !value.is_finite() {
        return Err(format!("{text:?} is not a finite number"));
    }
    let unit = unit.trim();
    if unit.is_empty() {
        return Ok(value);
    }
    let Some(base) = base else {
        return Err(format!("{text:?}: this parameter takes no unit"));
    };
    match base.units().iter().find(|(n, _)| *n == unit) {
        Some((_, f)) => Ok(value * f / base.size()),
        None => Err(format!(
            "{text:?}: unknown unit {unit:?} (expected one of {})",
            base.unit_names()
        )),
    }
}

/// Two reals are the same setting when they print the same with `%g` (six significant
/// digits), which is all `pg_settings` shows.
pub fn same_real(a: f64, b: f64) -> bool {
    format!("{a:.5e}") == format!("{b:.5e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_postgres() {
        for t in ["on", "ON", "true", "t", "yes", "y", "1", "tr"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["off", "of", "false", "f", "no", "n", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["o", "", "maybe", "2", "onn"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }

    #[test]
    fn units_convert_to_base() {
        let kb = BaseUnit::parse("kB");
        let pages = BaseUnit::parse("8kB");
        let ms = BaseUnit::parse("ms");
        assert_eq!(parse_number("4MB", kb).unwrap(), 4096.0);
        assert_eq!(parse_number("4096", kb).unwrap(), 4096.0);
        assert_eq!(parse_number("128MB", pages).unwrap(), 16384.0);
        assert_eq!(parse_number("1GB", pages).unwrap(), 131072.0);
        assert_eq!(parse_number("5min", ms).unwrap(), 300000.0);
        assert_eq!(parse_number("1.5s", ms).unwrap(), 1500.0);
        assert_eq!(parse_number("1e3", None).unwrap(), 1000.0);
        assert_eq!(parse_number("-1", kb).unwrap(), -1.0);
        assert!(parse_number("4mb", kb)
            .unwrap_err()
            .contains("unknown unit \"mb\""));
        assert!(parse_number("4MB", None)
            .unwrap_err()
            .contains("takes no unit"));
        assert!(parse_number("abc", kb).is_err());
        assert!(parse_number("4 MB; DROP", kb).is_err());
        assert!(parse_number("5min", kb).is_err());
    }

    #[test]
    fn reals_compare_at_pg_precision() {
        assert!(same_real(1.1, 1.1000000001));
        assert!(same_real(1.0, 1.0));
        assert!(!same_real(1.1, 1.2));
        assert!(same_real(1.23457e6, 1234567.0));
    }
}
