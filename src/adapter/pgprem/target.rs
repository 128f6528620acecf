//! The self-managed target: `ALTER SYSTEM` + `pg_reload_conf()`, or a restart through the
//! operator's restart script / `systemctl`; restored with ALTER SYSTEM while PostgreSQL is
//! up, by rewriting `postgresql.auto.conf` from the snapshot while it is down.

use super::restart::Restarter;
use crate::apply::journal::{Entry, KnobChange};
use crate::apply::{alter_system, auto_conf, Activation, Snapshot, Target, WriteError};
use crate::error::{Error, Result};
use crate::pg::Pg;
use std::path::Path;
use std::time::Duration;

pub struct LocalTarget {
    restarter: Option<Box<dyn Restarter>>,
    /// `apply.auto_conf_path`: where postgresql.auto.conf is when the agent cannot ask.
    auto_conf_path: Option<String>,
}

impl LocalTarget {
    pub fn new(restarter: Option<Box<dyn Restarter>>, auto_conf_path: Option<String>) -> Self {
        LocalTarget {
            restarter,
            auto_conf_path,
        }
    }
}

impl Target for LocalTarget {
    fn describe(&self) -> String {
        match &self.restarter {
            Some(r) => format!("the local server ({})", r.describe()),
            None => "the local server".into(),
        }
    }

    fn restart_unavailable(&self) -> Option<String> {
        self.restarter.is_none().then(|| {
            "neither service name nor restart script configured, refusing to apply: a restart is required to take effect".into()
        })
    }

    fn writes_auto_conf(&self) -> bool {
        true
    }

    fn snapshot(&self, pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        alter_system::snapshot(pg, knobs, self.auto_conf_path.as_deref())
    }

    fn write(&self, pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
        alter_system::write(pg, knobs)
    }

    fn activate(
        &self,
        pg: &Pg,
        how: Activation,
        _knobs: &[KnobChange],
        deadline: Duration,
    ) -> Result<()> {
        match how {
            Activation::Reload => alter_system::reload(pg),
            Activation::Restart => {
                let r = self.restarter.as_ref().ok_or_else(|| {
                    Error::other("no restart script or service name is configured")
                })?;
                r.restart(deadline)
            }
        }
    }

    fn restore(&self, pg: &Pg, entry: &Entry, knobs: &[KnobChange], pg_up: bool) -> Result<String> {
        if pg_up {
            return alter_system::restore_live(pg, knobs);
        }
        let (Some(path), Some(text)) = (&entry.auto_conf_path, &entry.auto_conf_before) else {
            return Err(Error::other(
                "PostgreSQL is not accepting connections and the agent could not read postgresql.auto.conf before applying, so it cannot restore it on disk; restore the previous values by hand (see the journal) and start PostgreSQL",
            ));
        };
        auto_conf::restore_file(Path::new(path), text)?;
        Ok(format!(
            "PostgreSQL was down; {path} was restored from the snapshot"
        ))
    }
}
