//! A string that must never be printed: API keys, passwords, tokens.

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

/// Replaces the password in a PostgreSQL connection URL or key=value DSN with `***`.
pub fn redact_dsn(dsn: &str) -> String {
    if let Some(rest) = dsn
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            dsn.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        let (auth_host, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let auth_host = match auth_host.rfind('@') {
            Some(at) => {
                let (auth, host) = auth_host.split_at(at);
                match auth.find(':') {
                    Some(c) => format!("{}:***{}", &auth[..c], host),
                    None => auth_host.to_string(),
                }
            }
            None => auth_host.to_string(),
        };
        let tail = redact_query_password(tail);
        return format!("{scheme}{auth_host}{tail}");
    }
    // key=value form
    dsn.split_whitespace()
        .map(|kv| {
            if kv.to_ascii_lowercase().starts_with("password=") {
                "password=***".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_query_password(tail: &str) -> String {
    match tail.find('?') {
        None => tail.to_string(),
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let parts: Vec<String> = query
                .split('&')
                .map(|p| {
                    if p.to_ascii_lowercase().starts_with("password=") {
                        "password=***".to_string()
                    } else {
                        p.to_string()
                    }
                })
                .collect();
            format!("{path}{}", parts.join("&"))
        }
    }
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

    #[test]
    fn dsn_passwords_are_redacted() {
        assert_eq!(
            redact_dsn("postgres://u:p4ss@h:5432/db?sslmode=require&password=x"),
            "postgres://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact_dsn("host=h password=p4ss user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(redact_dsn("postgresql://u@h/db"), "postgresql://u@h/db");
    }
}
