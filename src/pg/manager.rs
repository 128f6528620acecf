//! The pool's connection manager: r2d2_postgres over rustls, wrapping each connection in a
//! [`Session`] (its prepared statements), plus an optional [`PasswordSource`] asked for a
//! password on every new connection (RDS IAM and Entra tokens expire, so a password fixed at
//! start-up would stop working).

use super::session::Session;
use r2d2_postgres::PostgresConnectionManager;
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

/// Makes pooled [`Session`]s: r2d2_postgres connects and checks connections; a
/// [`PasswordSource`], when set, supplies the password of each new one.
pub struct Manager {
    inner: PostgresConnectionManager<MakeRustlsConnect>,
    config: postgres::Config,
    tls: MakeRustlsConnect,
    password: Option<Arc<dyn PasswordSource>>,
}

impl Manager {
    pub fn new(
        config: postgres::Config,
        tls: MakeRustlsConnect,
        password: Option<Arc<dyn PasswordSource>>,
    ) -> Manager {
        Manager {
            inner: PostgresConnectionManager::new(config.clone(), tls.clone()),
            config,
            tls,
            password,
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Session;
    type Error = ConnectError;

    fn connect(&self) -> Result<Session, ConnectError> {
        let client = match &self.password {
            Some(src) => {
                let mut cfg = self.config.clone();
                cfg.password(src.password().map_err(ConnectError::Password)?);
                PostgresConnectionManager::new(cfg, self.tls.clone()).connect()?
            }
            None => self.inner.connect()?,
        };
        Ok(Session::new(client))
    }

    fn is_valid(&self, s: &mut Session) -> Result<(), ConnectError> {
        Ok(self.inner.is_valid(s.client_mut())?)
    }

    fn has_broken(&self, s: &mut Session) -> bool {
        self.inner.has_broken(s.client_mut())
    }
}
