//! Connection strings: `postgres://` URLs and `key=value` DSNs as libpq accepts them. The driver
//! knows only part of libpq's options, so the TLS ones (`sslmode` verify modes, `sslrootcert`)
//! are taken out here and handled by `pg::tls`, and pool options some operators carry over from
//! other agents (`pool_max_conns`, …) are dropped instead of failing.

use crate::error::{Error, Result};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::invalid(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }
}

#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub config: postgres::Config,
    pub sslmode: SslMode,
    pub sslrootcert: Option<String>,
    /// What `secret::conninfo::mask` hides of the raw string: a parsed part found in it is
    /// not shown either (the driver may read a password as a host name).
    hidden: Vec<String>,
}

/// Options the driver understands and we pass through.
const DRIVER_KEYS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

impl ConnInfo {
    pub fn parse(s: &str) -> Result<ConnInfo> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::invalid("the connection string is empty"));
        }
        let is_url = s.starts_with("postgres://") || s.starts_with("postgresql://");
        // No error below quotes any part of the string (it may hold the password): they name
        // the option or the position instead; callers show it through `secret::conninfo::mask`.
        if let Some(n) = crate::secret::url::scheme_len(s).filter(|_| !is_url) {
            return Err(Error::invalid(format!(
                "the URL scheme {}:// is not supported (expected postgres:// or postgresql://, or key=value pairs)",
                &s[..n - 3]
            )));
        }
        let pairs = if is_url { url_params(s) } else { dsn_pairs(s)? };
        let mut sslmode = None;
        let mut sslrootcert = None;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "sslmode" => sslmode = Some(SslMode::parse(&percent_decode(&v))?),
                "sslrootcert" => sslrootcert = Some(percent_decode(&v)),
                k if DRIVER_KEYS.contains(&k) => kept.push((k.to_string(), v)),
                other => log::debug!(
                    "connection string option {other:?} is not used by the agent; ignored"
                ),
            }
        }
        let rebuilt = if is_url {
            let base = s.split('?').next().unwrap_or(s);
            if kept.is_empty() {
                base.to_string()
            } else {
                let q: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{base}?{}", q.join("&"))
            }
        } else {
            kept.iter()
                .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut config = postgres::Config::from_str(&rebuilt).map_err(|e| {
            // The driver's cause names the option (`invalid value for option `port``) or a
            // character of the text; only the first kind is shown.
            let cause = std::error::Error::source(&e)
                .map(|c| c.to_string())
                .filter(|c| {
                    c.starts_with("invalid value for option") || c.starts_with("unknown option")
                })
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            Error::invalid(format!(
                "not a valid PostgreSQL connection string ({e}{cause})"
            ))
        })?;
        apply_env_defaults(&mut config);
        let sslmode = match sslmode {
            Some(m) => m,
            None => match std::env::var("PGSSLMODE").ok().filter(|v| !v.is_empty()) {
                Some(v) => SslMode::parse(&v)?,
                None => SslMode::Prefer,
            },
        };
        let sslrootcert = sslrootcert.or_else(|| {
            std::env::var("PGSSLROOTCERT")
                .ok()
                .filter(|v| !v.is_empty())
        });
        config.ssl_mode(match sslmode {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        });
        Ok(ConnInfo {
            config,
            sslmode,
            sslrootcert,
            hidden: crate::secret::conninfo::hidden_parts(s),
        })
    }
}

impl ConnInfo {
    /// `user@host:port/dbname`, built from the parsed options (never from the raw string, so
    /// no password can reach a message however it was written).
    pub fn display(&self) -> String {
        let c = &self.config;
        let shown = |part: String| -> String {
            if self.hidden.iter().any(|h| h.contains(part.as_str())) {
                crate::secret::url::MASK.to_string()
            } else {
                part
            }
        };
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = shown(match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                });
                match c.get_ports().get(i).or(c.get_ports().first()) {
                    Some(p) => format!("{h}:{p}"),
                    None => h,
                }
            })
            .collect();
        let user = c
            .get_user()
            .map(|u| format!("{}@", shown(u.to_string())))
            .unwrap_or_default();
        let db = c
            .get_dbname()
            .map(|d| shown(d.to_string()))
            .unwrap_or_default();
        format!("postgres://{user}{}/{db}", hosts.join(","))
    }
}

/// libpq's `PG*` environment variables act as defaults for what the string leaves out.
fn apply_env_defaults(c: &mut postgres::Config) {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if c.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(h) => {
                c.host(&h);
            }
            None => {
                c.host("localhost");
            }
        }
    }
    if c.get_ports().is_empty() {
        if let Some(p) = env("PGPORT").and_then(|p| p.parse().ok()) {
            c.port(p);
        }
    }
    if c.get_user().is_none() {
        if let Some(u) = env("PGUSER") {
            c.user(&u);
        }
    }
    if c.get_password().is_none() {
        if let Some(p) = env("PGPASSWORD") {
            c.password(p);
        }
    }
    if c.get_dbname().is_none() {
        if let Some(d) = env("PGDATABASE") {
            c.dbname(&d);
        }
    }
}

fn url_params(s: &str) -> Vec<(String, String)> {
    match s.split_once('?') {
        None => Vec::new(),
        Some((_, q)) => q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect(),
    }
}

/// One word of a key=value connection string, read with libpq's rules.
#[derive(Debug, PartialEq, Eq)]
pub enum Word {
    /// `key=value` (spaces around `=` allowed; the value unquoted and unescaped).
    /// `terminated` is false when a quoted value ran to the end of the string.
    Pair {
        key: String,
        value: String,
        terminated: bool,
    },
    /// A word not followed by `=` (libpq refuses the string).
    Bare(String),
}

/// Reads a key=value connection string into words, never failing: the parser refuses what
/// libpq refuses ([`dsn_pairs`]), the masker hides it ([`crate::secret::conninfo`]); one
/// reading serves both so they cannot disagree on where a value (a password) ends.
pub fn words(s: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
    };
    loop {
        skip_ws(&mut it);
        if it.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        skip_ws(&mut it);
        if it.peek() != Some(&'=') {
            out.push(Word::Bare(key));
            continue;
        }
        it.next();
        skip_ws(&mut it);
        let mut value = String::new();
        let mut terminated = true;
        if it.peek() == Some(&'\'') {
            it.next();
            terminated = false;
            while let Some(c) = it.next() {
                match c {
                    '\\' => value.extend(it.next()),
                    '\'' => {
                        terminated = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                it.next();
                if c == '\\' {
                    value.extend(it.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push(Word::Pair {
            key,
            value,
            terminated,
        });
    }
    out
}

/// Splits `key=value key='quoted value'` into pairs (values unquoted), refusing what libpq
/// refuses.
fn dsn_pairs(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for w in words(s) {
        match w {
            Word::Bare(_) => {
                return Err(Error::invalid(format!(
                    "connection string: word {} has no `=` (expected key=value pairs, or a postgres:// URL)",
                    out.len() + 1
                )))
            }
            Word::Pair {
                terminated: false, ..
            } => {
                return Err(Error::invalid(
                    "connection string: unterminated quoted value",
                ))
            }
            Word::Pair { key, value, .. } => out.push((key, value)),
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_libpq_quoting_and_escapes() {
        let pair = |k: &str, v: &str| Word::Pair {
            key: k.into(),
            value: v.into(),
            terminated: true,
        };
        assert_eq!(
            words(r"host = h password='a b\'c' user=u\ v"),
            vec![
                pair("host", "h"),
                pair("password", "a b'c"),
                pair("user", "u v")
            ]
        );
        assert_eq!(
            words("port 5 password='x y"),
            vec![
                Word::Bare("port".into()),
                Word::Bare("5".into()),
                Word::Pair {
                    key: "password".into(),
                    value: "x y".into(),
                    terminated: false
                }
            ]
        );
        assert!(dsn_pairs("password='x y").is_err() && dsn_pairs("port 5").is_err());
    }

    #[test]
    fn url_with_tls_and_foreign_options() {
        let c = ConnInfo::parse(
            "postgres://u:p@db.example:6432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&pool_max_conns=4",
        )
        .unwrap();
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(c.config.get_dbname(), Some("app"));
        assert_eq!(c.config.get_ports(), &[6432]);
        assert_eq!(c.display(), "postgres://u@db.example:6432/app");
        let c = ConnInfo::parse("postgres://u:S3c/ret@127.0.0.1:1/db").unwrap();
        assert!(!c.display().contains("S3c"), "{}", c.display());
        let c = ConnInfo::parse("postgres://127.0.0.1:1/db?password=x@S3crJ").unwrap();
        assert!(!c.display().contains("S3c"), "{}", c.display());
    }

    #[test]
    fn dsn_form() {
        let c = ConnInfo::parse(
            "host=127.0.0.1 port=5433 user=postgres password='a b\\'c' sslmode=disable dbname=x",
        )
        .unwrap();
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(c.config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(c.config.get_ports(), &[5433]);
    }

    #[test]
    fn errors_never_quote_the_string() {
        for raw in [
            "mysql://u:S3crA@h/db",
            "host=h password=S3crB port",
            "S3crC",
            "host=h port=S3crD",
            "postgres://u:p@h:S3crE/db",
        ] {
            let e = ConnInfo::parse(raw).unwrap_err().to_string();
            assert!(!e.contains("S3cr"), "{raw}: {e}");
        }
        let e = ConnInfo::parse("host=h port=x").unwrap_err().to_string();
        assert!(e.contains("`port`"), "{e}");
    }

    #[test]
    fn bad_sslmode_names_the_option() {
        let e = ConnInfo::parse("postgres://h/db?sslmode=maybe").unwrap_err();
        assert!(e.to_string().contains("sslmode \"maybe\""), "{e}");
    }
}
