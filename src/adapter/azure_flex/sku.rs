//! CPU and memory from the server's SKU name (adapters.md §3.7): the first match of
//! `[BDE]<cores>(ds|ads|s|ms)(_v<n>)?` inside `sku.name` (`Standard_D4ds_v5`). The Go pattern's
//! character class also contains a comma, which no SKU has; it is left out. A family the table
//! does not know is reported as unknown (system info goes out without CPU and memory) instead
//! of failing system info.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sku {
    pub cores: u32,
    pub memory_bytes: u64,
}

const SUFFIXES: [&str; 4] = ["ds", "ads", "s", "ms"];

/// `None` for a SKU whose family or shape is unknown.
pub fn parse(name: &str) -> Option<Sku> {
    let b = name.as_bytes();
    for i in 0..b.len() {
        let family = b[i];
        if !matches!(family, b'B' | b'D' | b'E') {
            continue;
        }
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            continue;
        }
        let rest = &name[i + 1 + digits..];
        let Some(suffix) = SUFFIXES.iter().find(|s| rest.starts_with(**s)) else {
            continue;
        };
        let cores: u32 = name[i + 1..i + 1 + digits].parse().ok()?;
        let gib: u64 = match family {
            b'B' => match cores {
                1 => 2,
                2 if *suffix == "s" => 4,
                2 => 8,
                c => 4 * c as u64,
            },
            b'D' => 4 * cores as u64,
            _ => match cores {
                96 => 672,
                64 => 432,
                c => 8 * c as u64,
            },
        };
        return Some(Sku {
            cores,
            memory_bytes: gib << 30,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_3_7() {
        let gib = |n: u64| n << 30;
        assert_eq!(
            parse("Standard_D4ds_v5"),
            Some(Sku {
                cores: 4,
                memory_bytes: gib(16)
            })
        );
        assert_eq!(
            parse("Standard_B1ms"),
            Some(Sku {
                cores: 1,
                memory_bytes: gib(2)
            })
        );
        assert_eq!(
            parse("Standard_B2s"),
            Some(Sku {
                cores: 2,
                memory_bytes: gib(4)
            })
        );
        assert_eq!(
            parse("Standard_B2ms"),
            Some(Sku {
                cores: 2,
                memory_bytes: gib(8)
            })
        );
        assert_eq!(
            parse("Standard_E64ds_v4"),
            Some(Sku {
                cores: 64,
                memory_bytes: gib(432)
            })
        );
        assert_eq!(
            parse("Standard_E96ads_v5"),
            Some(Sku {
                cores: 96,
                memory_bytes: gib(672)
            })
        );
        assert_eq!(
            parse("Standard_E8ads_v5"),
            Some(Sku {
                cores: 8,
                memory_bytes: gib(64)
            })
        );
        // Unknown families and shapes are unknown, not an error.
        assert_eq!(parse("Standard_M128ms"), None);
        assert_eq!(parse("Standard_E2bds_v5"), None);
        assert_eq!(parse(""), None);
    }
}
