//! One pooled agent session: the driver's client plus the statements prepared on it.
//!
//! The collectors send the same few dozen statements every few seconds. Preparing each one once
//! per session saves a round trip per execution (Parse/Describe happen once) and the server-side
//! parse and plan work: a statement without parameters keeps its cached plan. The cache is
//! keyed by the exact (prefixed) text and bounded by [`MAX_PREPARED`]; a statement whose
//! execution fails is dropped from it so the next run prepares it afresh (e.g. after an
//! extension upgrade changed a function's result type).

use postgres::{Client, Statement};
use std::collections::HashMap;

/// Prepared statements kept per session at most. The agent's statement texts are fixed per
/// server version (parameters go in as `$n`), so this is never reached in normal operation; a
/// text that varies anyway clears the cache instead of growing it.
pub const MAX_PREPARED: usize = 128;

pub struct Session {
    client: Client,
    prepared: HashMap<String, Statement>,
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Session {
    pub fn new(client: Client) -> Session {
        Session {
            client,
            prepared: HashMap::new(),
        }
    }

    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The prepared statement for `sql` (already prefixed), preparing it on first use.
    pub fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        if self.prepared.len() >= MAX_PREPARED {
            self.prepared.clear();
        }
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Forgets `sql`'s statement (after it failed), so the next use prepares it again.
    pub fn forget(&mut self, sql: &str) {
        self.prepared.remove(sql);
    }

    pub fn prepared_count(&self) -> usize {
        self.prepared.len()
    }
}
