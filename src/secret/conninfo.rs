//! PostgreSQL connection strings as shown in errors and logs. Only the values of options known
//! to be harmless (host, port, user, dbname, sslmode …) are shown; every other value — the
//! password, an unknown or misspelt option, a word without `=`, the rest of an unterminated
//! quote — is masked. The key=value form is read with libpq's own rules (spaces around `=`,
//! single quotes, backslash escapes), so a quoted password holding spaces is masked whole,
//! and a string that fails to parse is masked just as well as one that parses.

use super::url::{self, MASK};
use crate::pg::conninfo::{words, Word};

/// Options whose values are shown (lower-case).
const SHOWN: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslnegotiation",
    "gssencmode",
    "channel_binding",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "application_name",
    "fallback_application_name",
    "target_session_attrs",
    "load_balance_hosts",
    "service",
];

/// The masked form of a connection string (URL or key=value).
pub fn mask(s: &str) -> String {
    mask_collect(s).0
}

/// The raw parts [`mask`] hides (the password among them), for the log redactor.
pub fn hidden_parts(s: &str) -> Vec<String> {
    mask_collect(s).1
}

fn mask_collect(s: &str) -> (String, Vec<String>) {
    let s = s.trim();
    let mut hidden = Vec::new();
    let shown = if url::scheme_len(s).is_some() {
        url::mask_with(s, SHOWN, true, &mut hidden)
    } else {
        mask_pairs(s, &mut hidden)
    };
    hidden.retain(|h| !h.is_empty());
    (shown, hidden)
}

fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn mask_pairs(s: &str, hidden: &mut Vec<String>) -> String {
    let shown = |key: &str| SHOWN.contains(&key.to_ascii_lowercase().as_str());
    let mut out: Vec<String> = Vec::new();
    for w in words(s) {
        match w {
            // A word without `=` (libpq refuses it): shown only when it is an option's name.
            Word::Bare(key) if shown(&key) || key == "password" => out.push(key),
            Word::Bare(key) => {
                hidden.push(key);
                out.push(MASK.into());
            }
            Word::Pair {
                key,
                value,
                terminated,
            } => {
                if terminated && shown(&key) {
                    out.push(format!("{key}={}", quote(&value)));
                } else {
                    hidden.push(value);
                    out.push(format!("{key}={MASK}"));
                }
            }
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile forms: the secret (`S3cr`…) must never show, the harmless parts must.
    #[test]
    fn every_form_hides_the_password() {
        for (raw, shown) in [
            (
                "host=h port=abc password = S3crA",
                "host=h port=abc password=***",
            ),
            (
                "host=h password='S3cr B' port=5",
                "host=h password=*** port=5",
            ),
            (
                "host=h password=S3cr\\ C user=u",
                "host=h password=*** user=u",
            ),
            ("password='S3crD unterminated host=h", "password=***"),
            ("host='h password=S3crE", "host=***"),
            ("user=u passwd=S3crF", "user=u passwd=***"),
            ("host=h password S3crG", "host=h password ***"),
            ("u:S3crH@h/db", "***"),
            ("mysql://u:S3crI@h/db", "mysql://u:***@h/db"),
            ("postgres://u:S3c/rJ@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u:S3c@rK@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
            ("postgres://h:1/db?password=x@S3crQ", "postgres://***"),
            (
                "postgresql://u@h:5432/db?password=S3crL&application_name=a",
                "postgresql://u@h:5432/db?password=***&application_name=a",
            ),
            ("postgres://u:S3crM/h/db", "postgres://u:***/h/db"),
            ("postgres://h/db?password=x@S3crN", "postgres://***"),
            ("host=h sslpassword=S3crO", "host=h sslpassword=***"),
            ("host=h =S3crP", "host=h =***"),
        ] {
            let m = mask(raw);
            assert!(!m.contains("S3cr"), "{raw} -> {m}");
            assert_eq!(m, shown, "{raw}");
        }
        let h = hidden_parts("host=h password='S3cr B'");
        assert_eq!(h, vec!["S3cr B".to_string()]);
    }
}
