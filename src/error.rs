//! The crate's error: a message that carries its context chain ("what was being done, with
//! which object") and a kind, so the runner can tell a lost database connection (health gate)
//! from an ordinary failure.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The database cannot be reached (protocol.md §9.2): closes the health gate.
    Connection,
    /// The server is in recovery or failing over: suppressed like a connection error.
    Recovery,
    /// A deadline ran out (statement_timeout, lock_timeout, our own deadline).
    Timeout,
    /// Bad input from the operator or the platform.
    Invalid,
    /// Shutdown asked a long wait to stop at a safe point (the journal settles the rest).
    Interrupted,
    Other,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    msg: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
        }
    }
    pub fn other(msg: impl Into<String>) -> Self {
        Error::new(Kind::Other, msg)
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::new(Kind::Invalid, msg)
    }
    /// Prefixes what was being done: `reading pg_settings: <cause>`.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
    pub fn message(&self) -> &str {
        &self.msg
    }
    pub fn is_connection(&self) -> bool {
        self.kind == Kind::Connection
    }
    /// Errors the runner suppresses (protocol.md §6.7): connection and recovery errors.
    pub fn is_suppressed(&self) -> bool {
        matches!(self.kind, Kind::Connection | Kind::Recovery) || is_recovery_text(&self.msg)
    }
}

fn is_recovery_text(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("failover detected") || m.contains("recovery in progress")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.msg)
    }
}

impl std::error::Error for Error {}

/// `.context(..)` on any `Result` whose error converts into ours.
pub trait Context<T> {
    fn context(self, ctx: impl fmt::Display) -> Result<T>;
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(ctx))
    }
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::other(e.to_string())
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        let kind = classify_pg(&e);
        // The driver's Display for a server error is only "db error"; show the server's text.
        let msg = match e.as_db_error() {
            Some(db) => format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            ),
            None => {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    m = format!("{m}: {s}");
                    src = s.source();
                }
                m
            }
        };
        Error::new(kind, msg)
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        let msg = e.to_string();
        // r2d2 reports both "timed out waiting for connection" and the last connect error;
        // with the database down it carries the connect error text.
        let kind = if is_connection_text(&msg) || msg.contains("error connecting") {
            Kind::Connection
        } else {
            Kind::Timeout
        };
        Error::new(kind, format!("getting a PostgreSQL connection: {msg}"))
    }
}

/// protocol.md §9.2, for the driver's error type.
fn classify_pg(e: &postgres::Error) -> Kind {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code.starts_with("08") || matches!(code, "57000" | "57P01" | "57P02" | "57P03" | "57P04")
        {
            return Kind::Connection;
        }
        if code == "57014" || code == "55P03" {
            return Kind::Timeout;
        }
        return Kind::Other;
    }
    if e.is_closed() {
        return Kind::Connection;
    }
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>().is_some() {
            return Kind::Connection;
        }
        text.push(' ');
        text.push_str(&s.to_string());
        src = s.source();
    }
    if is_connection_text(&text) || text.contains("error connecting") {
        Kind::Connection
    } else {
        Kind::Other
    }
}

pub fn is_connection_text(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "connection refused",
        "connection reset",
        "broken pipe",
        "no such host",
        "i/o timeout",
        "connection timed out",
        "conn closed",
        "connection closed",
        "unexpected eof",
    ]
    .iter()
    .any(|p| m.contains(p))
}
