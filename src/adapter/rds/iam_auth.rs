//! `rds.iam_auth: true`: every new PostgreSQL connection logs in with an RDS IAM authentication
//! token (a SigV4-presigned `connect` URL, valid 15 minutes) instead of a password. Tokens are
//! cached and renewed 2 minutes before they expire; TLS is required (RDS refuses IAM logins
//! without it, and the token is a bearer credential).

use crate::cloud::aws::Aws;
use crate::cloud::time::now_unix;
use crate::error::{Error, Result};
use crate::pg::conninfo::{ConnInfo, SslMode};
use crate::pg::PasswordSource;
use crate::secret::Secret;
use std::sync::Mutex;

/// Token lifetime set by RDS.
const LIFETIME: i64 = 900;
/// Renew this long before expiry (a connection handshake must finish with a valid token).
const MARGIN: i64 = 120;

pub struct TokenSource {
    aws: Aws,
    host: String,
    port: u16,
    user: String,
    cache: Mutex<Option<(i64, Secret)>>,
}

impl TokenSource {
    pub fn new(aws: Aws, url: &str) -> Result<TokenSource> {
        let info = ConnInfo::parse(url)?;
        if matches!(
            info.sslmode,
            SslMode::Disable | SslMode::Allow | SslMode::Prefer
        ) {
            return Err(Error::invalid(
                "rds.iam_auth (DBT_RDS_IAM_AUTH) needs TLS to PostgreSQL: set sslmode=require (or verify-ca / verify-full) in postgresql.connection_url",
            ));
        }
        let host = match info.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                return Err(Error::invalid(
                    "rds.iam_auth (DBT_RDS_IAM_AUTH): postgresql.connection_url must name the instance's host name (the token is signed for it)",
                ))
            }
        };
        let port = info.config.get_ports().first().copied().unwrap_or(5432);
        let user = info
            .config
            .get_user()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::invalid("rds.iam_auth (DBT_RDS_IAM_AUTH): postgresql.connection_url must name the database user"))?
            .to_string();
        if info.config.get_password().is_some() {
            log::warn!("rds.iam_auth is on: the password in postgresql.connection_url is ignored");
        }
        Ok(TokenSource {
            aws,
            host,
            port,
            user,
            cache: Mutex::new(None),
        })
    }

    /// A token valid for at least [`MARGIN`] seconds more, at unix time `now`.
    pub fn token_at(&self, now: i64) -> std::result::Result<String, String> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((made, t)) = c
            .as_ref()
            .filter(|(made, _)| now < made + LIFETIME - MARGIN)
        {
            let _ = made;
            return Ok(t.expose().to_string());
        }
        let t = self
            .aws
            .rds_auth_token(&self.host, self.port, &self.user)
            .map_err(|e| {
                format!(
                    "making an RDS IAM auth token for {}@{}:{}: {e}",
                    self.user, self.host, self.port
                )
            })?;
        log::debug!(
            "new RDS IAM auth token for {}@{}:{}",
            self.user,
            self.host,
            self.port
        );
        *c = Some((now, Secret::new(&t)));
        Ok(t)
    }
}

impl PasswordSource for TokenSource {
    fn password(&self) -> std::result::Result<String, String> {
        self.token_at(now_unix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::aws::StaticKeys;
    use crate::cloud::{Env, Http};

    fn aws() -> Aws {
        Aws::new(
            Http::new(),
            Env::default(),
            "us-east-1",
            StaticKeys {
                access_key_id: Some("AKIDEXAMPLE".into()),
                secret_access_key: Some(Secret::new("secret")),
                session_token: None,
            },
        )
    }

    #[test]
    fn tls_is_required_and_tokens_are_cached_until_near_expiry() {
        let e = TokenSource::new(
            aws(),
            "postgres://u@db.x.rds.amazonaws.com/postgres?sslmode=disable",
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("sslmode=require"), "{e}");
        let s = TokenSource::new(
            aws(),
            "postgres://dbtune@db.x.rds.amazonaws.com:5432/postgres?sslmode=require",
        )
        .unwrap();
        let t1 = s.token_at(1_000_000).unwrap();
        assert!(
            t1.starts_with("db.x.rds.amazonaws.com:5432/?Action=connect&DBUser=dbtune"),
            "{t1}"
        );
        assert_eq!(s.token_at(1_000_000 + 600).unwrap(), t1);
        // Within two minutes of the 15-minute expiry: a new token.
        *s.cache.lock().unwrap() = Some((1_000_000 - 800, Secret::new("old")));
        assert_ne!(s.token_at(1_000_000).unwrap(), "old");
    }
}
