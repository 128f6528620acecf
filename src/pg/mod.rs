//! PostgreSQL access. Every statement the agent sends goes through this module: it carries the
//! `/*dbtune*/ ` prefix, and every session sets `application_name`, `statement_timeout`,
//! `lock_timeout` and `idle_in_transaction_session_timeout` so the agent can never wait on the
//! workload for long. No SQL lives outside `src/pg` and the collectors' query files.

pub mod alter;
pub mod conninfo;
pub mod manager;
pub mod queries;
pub mod session;
pub mod tls;
pub mod version;

use crate::error::{Context, Error, Kind, Result};
use postgres::types::ToSql;
use postgres::Row;
use r2d2::{CustomizeConnection, Pool, PooledConnection};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use manager::PasswordSource;
use manager::{ConnectError, Manager};
pub use version::ServerVersion;

pub const QUERY_PREFIX: &str = "/*dbtune*/ ";
pub const MARKER: &str = "/*dbtune*/";

/// Trims `sql` and marks it as the agent's: the `/*dbtune*/ ` prefix of the contract, and the
/// same marker again after the first keyword. PostgreSQL 18 stores a statement's text without
/// its leading comments in pg_stat_statements, so the prefix alone no longer identifies the
/// agent's statements there; the inner marker survives (`SELECT /*dbtune*/ …`).
pub fn prefixed(sql: &str) -> String {
    let s = sql.trim();
    if s.starts_with(MARKER) {
        return s.to_string();
    }
    match s.find(char::is_whitespace) {
        Some(i) => format!("{QUERY_PREFIX}{} {MARKER}{}", &s[..i], &s[i..]),
        None => format!("{QUERY_PREFIX}{s}"),
    }
}

/// SQL predicate: true when the text in `col` is one of the agent's statements (either form
/// that pg_stat_statements may store). NULL when `col` is NULL.
pub fn agent_statement_sql(col: &str) -> String {
    format!("(starts_with({col}, '{MARKER}') OR starts_with(substring({col} from '^\\S+\\s+(.*)$'), '{MARKER}'))")
}

/// Session limits applied to every pooled connection.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_millis(500),
            idle_in_transaction_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

pub type Conn = PooledConnection<Manager>;

/// Keeps the last connection error with its whole cause chain (r2d2 keeps only the top line,
/// e.g. "error performing TLS handshake" without the certificate problem behind it).
#[derive(Debug, Default, Clone)]
struct LastConnectError(Arc<Mutex<Option<String>>>);

impl r2d2::HandleError<ConnectError> for LastConnectError {
    fn handle_error(&self, e: ConnectError) {
        let m = render_connect_error(&e);
        log::debug!("PostgreSQL connection attempt failed: {m}");
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
    }
}

/// A connection failure with its cause chain; a server's refusal carries its SQLSTATE.
fn render_connect_error(e: &ConnectError) -> String {
    if let ConnectError::Pg(pe) = e {
        if let Some(db) = pe.as_db_error() {
            return format!(
                "db error: {}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
        }
    }
    let mut m = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        m = format!("{m}: {s}");
        src = s.source();
    }
    m
}

/// Whether a failure to connect may clear by itself (server down, starting up, restarting,
/// out of connection slots, unreachable, name not resolvable yet), so a starting agent waits
/// for it, rather than needing an operator (authentication, a missing database or role, no
/// CONNECT privilege, TLS set up wrong), which ends the agent at start.
fn is_transient(e: &ConnectError) -> bool {
    let pe = match e {
        // A token source (cloud IAM) may need a network that is still coming up.
        ConnectError::Password(_) => return true,
        ConnectError::Pg(pe) => pe,
    };
    if let Some(db) = pe.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
    }
    // The driver says "error performing TLS handshake" (a certificate or sslmode problem, set
    // up wrong) whatever the cause below; anything else is the network or the server going
    // away (refused, timed out, reset, name not resolvable yet).
    !pe.to_string().contains("TLS")
}

/// A small pool of agent sessions (default 2 connections), connecting lazily.
#[derive(Clone)]
pub struct Pg {
    pool: Pool<Manager>,
    /// The pool's connection recipe, for one direct attempt ([`Pg::try_connect`]).
    direct: Arc<Manager>,
    last_error: LastConnectError,
    /// The connection string with its password hidden, for messages.
    pub display_url: String,
}

#[derive(Debug)]
struct SessionSetup(SessionLimits);

impl CustomizeConnection<session::Session, ConnectError> for SessionSetup {
    fn on_acquire(&self, c: &mut session::Session) -> std::result::Result<(), ConnectError> {
        let ms = |d: Duration| d.as_millis().to_string();
        c.execute(
            &prefixed(
                "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false), \
                 set_config('idle_in_transaction_session_timeout', $3, false)",
            ),
            &[&ms(self.0.statement_timeout), &ms(self.0.lock_timeout), &ms(self.0.idle_in_transaction_timeout)],
        ).map_err(ConnectError::Pg)?;
        Ok(())
    }
}

impl Pg {
    /// Builds the pool without connecting; only a malformed connection string fails here.
    pub fn new(url: &str, pool_size: u32, limits: SessionLimits) -> Result<Pg> {
        Self::build(url, pool_size, limits, None)
    }

    /// Like [`Pg::new`], but every new connection asks `password` for its password (it wins
    /// over one in the URL).
    pub fn with_password(
        url: &str,
        pool_size: u32,
        limits: SessionLimits,
        password: Arc<dyn PasswordSource>,
    ) -> Result<Pg> {
        Self::build(url, pool_size, limits, Some(password))
    }

    fn build(
        url: &str,
        pool_size: u32,
        limits: SessionLimits,
        password: Option<Arc<dyn PasswordSource>>,
    ) -> Result<Pg> {
        let info = conninfo::ConnInfo::parse(url).context("parsing postgresql.connection_url")?;
        let mut cfg = info.config.clone();
        cfg.application_name("dbtune-agent");
        cfg.connect_timeout(limits.connect_timeout);
        let tls = tls::make_tls(&info).context("setting up TLS for PostgreSQL")?;
        let manager = Manager::new(cfg.clone(), tls.clone(), password.clone());
        let direct = Arc::new(Manager::new(cfg, tls, password));
        let last_error = LastConnectError::default();
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(limits.connect_timeout + Duration::from_secs(1))
            .idle_timeout(Some(Duration::from_secs(300)))
            .thread_pool(Arc::new(
                scheduled_thread_pool::ScheduledThreadPool::builder()
                    .num_threads(1)
                    .thread_name_pattern("pg-pool-{}")
                    .build(),
            ))
            .error_handler(Box::new(last_error.clone()))
            .connection_customizer(Box::new(SessionSetup(limits)))
            .build_unchecked(manager);
        Ok(Pg {
            pool,
            direct,
            last_error,
            display_url: info.display(),
        })
    }

    /// One connection attempt outside the pool, closed again: the pool retries a failing
    /// connect until its timeout, while a start-up check must tell at once that PostgreSQL is
    /// down or refuses the login. The error's kind is `Connection` when it may clear by itself
    /// (down, starting, unreachable), `Invalid` when an operator must act (authentication, no
    /// such database, TLS).
    pub fn try_connect(&self) -> Result<()> {
        r2d2::ManageConnection::connect(&*self.direct)
            .map(drop)
            .map_err(|e| {
                Error::new(
                    if is_transient(&e) {
                        Kind::Connection
                    } else {
                        Kind::Invalid
                    },
                    format!(
                        "connecting to PostgreSQL at {}: {}",
                        self.display_url,
                        render_connect_error(&e)
                    ),
                )
            })
    }

    /// A session from the pool. A broken connection (server restarted) is replaced.
    pub fn conn(&self) -> Result<Conn> {
        self.pool.get().map_err(|e| {
            let last = self
                .last_error
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            match last {
                // The cause chain says what really failed (refused, TLS, authentication).
                Some(detail) => {
                    let kind = if crate::error::is_connection_text(&detail)
                        || detail.contains("error connecting")
                        || detail.contains("TLS")
                        || detail.contains("password")
                        || detail.contains("db error")
                    {
                        Kind::Connection
                    } else {
                        Kind::Timeout
                    };
                    Error::new(
                        kind,
                        format!("connecting to PostgreSQL at {}: {detail}", self.display_url),
                    )
                }
                None => Error::from(e),
            }
        })
    }

    /// Runs a query (prefixed) on a pooled session, prepared once per session.
    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        self.for_each_row(sql, params, |r| {
            rows.push(r);
            Ok(())
        })?;
        Ok(rows)
    }

    pub fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let mut rows = self.query(sql, params)?;
        match rows.len() {
            1 => Ok(rows.remove(0)),
            0 => Err(Error::other("query returned no rows (expected one)")),
            n => Err(Error::other(format!(
                "query returned {n} rows (expected one)"
            ))),
        }
    }

    /// Runs a query (prefixed, prepared once per session) and hands each row to `f` as it
    /// arrives: the driver reads the socket only as rows are consumed, so memory stays at one
    /// row plus the socket buffers whatever the result size. Returns the number of rows.
    /// An error from `f` stops the query (the rest of the result is discarded).
    pub fn for_each_row(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        mut f: impl FnMut(Row) -> Result<()>,
    ) -> Result<u64> {
        self.each_row(sql, params, &mut f)
    }

    /// [`Pg::for_each_row`] with a dynamic callback: one copy of the driver loop for every caller.
    fn each_row(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        f: &mut dyn FnMut(Row) -> Result<()>,
    ) -> Result<u64> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut c = self.conn()?;
        let text = prefixed(sql);
        let stmt = c.statement(&text).map_err(Error::from)?;
        let mut n = 0u64;
        // A failure of the statement itself (not of `f`) drops it from the session's cache.
        let mut driver_failed = false;
        let r = (|| {
            let mut it = c
                .query_raw(&stmt, params.iter().map(|p| *p as &dyn ToSql))
                .map_err(|e| {
                    driver_failed = true;
                    Error::from(e)
                })?;
            loop {
                let row = it.next().map_err(|e| {
                    driver_failed = true;
                    Error::from(e)
                })?;
                let Some(row) = row else { break };
                n += 1;
                f(row)?;
            }
            Ok(())
        })();
        if driver_failed {
            c.forget(&text);
        }
        r.map(|_| n)
    }

    /// `SELECT 1` with a short deadline: used by the health gate and readiness waits.
    pub fn ping(&self) -> Result<()> {
        let mut c = self.conn()?;
        c.simple_query(&prefixed("SELECT 1"))
            .map(|_| ())
            .map_err(Error::from)
    }
}

pub fn query(
    c: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    c.query(&prefixed(sql), params).map_err(Error::from)
}

/// Runs `sql` (prefixed, not prepared: for rarely run statements) on `c` and hands each row to
/// `f` as it arrives, so a large result is never held whole. Returns the number of rows.
/// (`f` is dynamic: one copy of the driver loop serves every caller, which keeps the binary small.)
pub fn for_each_row(
    c: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    f: &mut dyn FnMut(Row) -> Result<()>,
) -> Result<u64> {
    use postgres::fallible_iterator::FallibleIterator;
    let text = prefixed(sql);
    let mut it = c
        .query_raw(text.as_str(), params.iter().map(|p| *p as &dyn ToSql))
        .map_err(Error::from)?;
    let mut n = 0u64;
    while let Some(row) = it.next().map_err(Error::from)? {
        n += 1;
        f(row)?;
    }
    Ok(n)
}

pub fn query_one(
    c: &mut postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row> {
    c.query_one(&prefixed(sql), params).map_err(Error::from)
}

pub fn execute(c: &mut postgres::Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    c.execute(&prefixed(sql), params).map_err(Error::from)
}

/// Runs a single statement that cannot take bind parameters (ALTER SYSTEM), prefixed.
pub fn simple(c: &mut postgres::Client, sql: &str) -> Result<()> {
    c.simple_query(&prefixed(sql))
        .map(|_| ())
        .map_err(Error::from)
}

/// Quotes a string as a SQL literal (standard_conforming_strings on: double the quotes; an
/// E'' literal when a backslash is present so the meaning never depends on the setting).
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Quotes an identifier (`"name"`), doubling embedded quotes.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_added_once() {
        assert_eq!(prefixed("  SELECT 1 \n"), "/*dbtune*/ SELECT /*dbtune*/ 1");
        assert_eq!(prefixed("/*dbtune*/ SELECT 1"), "/*dbtune*/ SELECT 1");
        assert_eq!(prefixed("SHOW\tall"), "/*dbtune*/ SHOW /*dbtune*/\tall");
        assert_eq!(prefixed("ROLLBACK"), "/*dbtune*/ ROLLBACK");
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(
            quote_literal("'; DROP TABLE t; --"),
            "'''; DROP TABLE t; --'"
        );
        assert_eq!(quote_literal(r"a\b'"), r"E'a\\b'''");
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
    }
}
