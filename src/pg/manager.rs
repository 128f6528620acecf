//! The pool's connection manager: `postgres::Config` + rustls, plus an optional
//! [`PasswordSource`] asked for a password on every new connection (RDS IAM auth tokens expire,
//! so a password fixed at start-up would stop working). Without a source it behaves like
//! `r2d2_postgres`' manager.

use std::fmt;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Supplies the password for each new PostgreSQL connection (e.g. a fresh RDS IAM token).
pub trait PasswordSource: Send + Sync {
    /// The password to log in with now. The error text must not contain secrets.
    fn password(&self) -> Result<String, String>;
}

/// Why a connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    Pg(postgres::Error),
    /// The password source failed (no PostgreSQL connection was attempted).
    Password(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Pg(e) => write!(f, "{e}"),
            ConnectError::Password(e) => write!(f, "getting the PostgreSQL password: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Pg(e) => std::error::Error::source(e),
            ConnectError::Password(_) => None,
        }
    }
}

impl From<postgres::Error> for ConnectError {
    fn from(e: postgres::Error) -> Self {
        ConnectError::Pg(e)
    }
}

pub struct Manager {
    pub config: postgres::Config,
    pub tls: MakeRustlsConnect,
    pub password: Option<Arc<dyn PasswordSource>>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = postgres::Client;
    type Error = ConnectError;

    fn connect(&self) -> Result<postgres::Client, ConnectError> {
        match &self.password {
            Some(src) => {
                let mut cfg = self.config.clone();
                cfg.password(src.password().map_err(ConnectError::Password)?);
                Ok(cfg.connect(self.tls.clone())?)
            }
            None => Ok(self.config.connect(self.tls.clone())?),
        }
    }

    fn is_valid(&self, c: &mut postgres::Client) -> Result<(), ConnectError> {
        Ok(c.simple_query("")?).map(|_| ())
    }

    fn has_broken(&self, c: &mut postgres::Client) -> bool {
        c.is_closed()
    }
}
