//! Kubernetes resource quantities (`512Mi`, `2`, `500m`, `1.5G`, `1e3`), with the Go
//! client's rounding: [`Quantity::value`] and [`Quantity::milli_value`] round up.

/// An exact quantity: `digits / 10^decimals × 10^exp10 × 2^exp2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    digits: u128,
    decimals: u32,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses the canonical quantity grammar: `[+-]` digits with an optional fraction, then a
    /// binary suffix (`Ki` … `Ei`), a decimal suffix (`n u m k M G T P E`) or an exponent
    /// (`e3`, `E-2`).
    pub fn parse(s: &str) -> Result<Quantity, String> {
        let bad = |why: &str| format!("{s:?} is not a Kubernetes quantity ({why})");
        let t = s.trim();
        if t.is_empty() || t.len() != s.len() {
            return Err(bad("empty or padded"));
        }
        let (negative, rest) = match t.as_bytes()[0] {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (num, suffix) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad("no number"));
        }
        let all = format!("{int}{frac}");
        let digits: u128 = all.trim_start_matches('0').parse().or_else(|_| {
            if all.chars().all(|c| c == '0') {
                Ok(0)
            } else {
                Err(bad("too many digits"))
            }
        })?;
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            e if e.starts_with(['e', 'E']) && e.len() > 1 => {
                let x: i32 = e[1..].parse().map_err(|_| bad("bad exponent"))?;
                if x.abs() > 30 {
                    return Err(bad("exponent out of range"));
                }
                (x, 0)
            }
            _ => return Err(bad("unknown suffix")),
        };
        Ok(Quantity {
            negative,
            digits,
            decimals: frac.len() as u32,
            exp10,
            exp2,
        })
    }

    /// The value × 10^scale, rounded up (towards +∞), e.g. scale 3 = milli-units.
    pub fn scaled_ceil(&self, scale: i32) -> Option<i64> {
        let mut n = self.digits.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let p = self.exp10 + scale - self.decimals as i32;
        let mut div = 1u128;
        if p >= 0 {
            n = n.checked_mul(10u128.checked_pow(p as u32)?)?;
        } else {
            div = 10u128.checked_pow((-p) as u32)?;
        }
        let (q, r) = (n / div, n % div);
        let v = if self.negative {
            -(q as i128)
        } else {
            q as i128 + if r > 0 { 1 } else { 0 }
        };
        i64::try_from(v).ok()
    }

    /// Whole units, rounded up (`Value()` in Go): bytes for memory, cores for CPU.
    pub fn value(&self) -> Option<i64> {
        self.scaled_ceil(0)
    }

    /// Thousandths, rounded up (`MilliValue()` in Go): millicores for CPU.
    pub fn milli_value(&self) -> Option<i64> {
        self.scaled_ceil(3)
    }
}

impl std::str::FromStr for Quantity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Quantity::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parses_the_forms_kubernetes_uses() {
        assert_eq!(q("512Mi").value(), Some(536_870_912));
        assert_eq!(q("2").milli_value(), Some(2000));
        assert_eq!(q("500m").milli_value(), Some(500));
        assert_eq!(q("500m").value(), Some(1), "rounds up like Go");
        assert_eq!(q("1.5Gi").value(), Some(1_610_612_736));
        assert_eq!(q("1e3").value(), Some(1000));
        assert_eq!(q("100k").value(), Some(100_000));
        assert_eq!(q("0.1").milli_value(), Some(100));
        assert_eq!(q("1n").milli_value(), Some(1), "rounds up");
        assert_eq!(q("250u").milli_value(), Some(1));
        assert_eq!(q(".5").milli_value(), Some(500));
        assert_eq!(q("0").value(), Some(0));
        assert_eq!(q("-1").value(), Some(-1));
        assert_eq!(q("8Ei").value(), None, "overflows i64");
        for bad in ["", " 1", "1 ", "abc", "1Qi", "1.2.3", "Mi", "1e", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?}");
        }
    }
}
