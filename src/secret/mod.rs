//! A string that must never be printed: API keys, passwords, tokens; and the masked forms of
//! connection strings and URLs used wherever one reaches an error or a log line.

pub mod conninfo;
pub mod url;

use std::fmt;

/// Holds a secret value. `Debug` and `Display` never show it; call [`Secret::expose`] at the one
/// place the value is put on the wire.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

/// How a secret is shown in errors: never its characters, only its length.
pub fn mask(s: &str) -> String {
    if s.is_empty() {
        "(empty)".to_string()
    } else {
        format!("(hidden, {} characters)", s.chars().count())
    }
}

/// A connection string (URL or key=value) as shown in errors and logs: see [`conninfo::mask`].
pub fn redact_dsn(dsn: &str) -> String {
    conninfo::mask(dsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_never_displayed() {
        let s = Secret::new("1b4e28ba-2fa1-11d2-883f-0016d3cca427");
        assert!(!format!("{s} {s:?}").contains("1b4e"));
        assert_eq!(s.expose(), "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
    }
}
