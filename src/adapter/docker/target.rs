//! The Docker target: `ALTER SYSTEM` + `pg_reload_conf()`, or a container restart through the
//! Engine API. While PostgreSQL is down (it would not start with the new values, so the
//! container exited) the snapshot of `postgresql.auto.conf` is put back into the container
//! with `PUT /containers/{id}/archive`, which works on a stopped container.

use crate::apply::journal::{Entry, KnobChange};
use crate::apply::{alter_system, wait, Activation, Snapshot, Target, WriteError};
use crate::cloud::docker::{tar, Docker};
use crate::error::{Error, Result};
use crate::pg::Pg;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A stopped container is ours to start only when the interrupted restart is this recent
/// (older, the operator may have stopped it since).
const RESTART_RECENT: Duration = Duration::from_secs(3600);

pub struct DockerTarget {
    pub docker: Arc<Docker>,
    pub container: String,
    pub stop_timeout: u64,
}

/// (directory, file name) of a path inside the container.
fn split(path: &str) -> Option<(&str, &str)> {
    let (dir, name) = path.rsplit_once('/')?;
    Some((if dir.is_empty() { "/" } else { dir }, name))
}

impl DockerTarget {
    /// Restarts the container with PostgreSQL's *fast* shutdown. The Engine stops a container
    /// with its configured stop signal; SIGTERM (the default) is PostgreSQL's smart shutdown,
    /// which waits for every session, including the agent's own, until the daemon kills it
    /// (crash recovery at start). API 1.41 cannot pass a signal to restart, so unless the
    /// image sets STOPSIGNAL SIGINT (as the official image does) the agent sends SIGINT
    /// itself, waits for the exit and starts the container.
    fn restart(&self, deadline: Duration) -> Result<()> {
        let e = |e: crate::cloud::CloudError| Error::other(e.to_string());
        let inspect = self.docker.inspect(&self.container).map_err(e)?;
        let stop_signal = inspect["Config"]["StopSignal"].as_str().unwrap_or("");
        let running = inspect["State"]["Running"].as_bool().unwrap_or(false);
        if !running || matches!(stop_signal, "SIGINT" | "2" | "INT") {
            wait::tick();
            return self
                .docker
                .restart_within(&self.container, self.stop_timeout, deadline)
                .map_err(e);
        }
        self.docker.kill(&self.container, "SIGINT").map_err(e)?;
        let stopped = wait::until(
            &format!("container {} to stop after SIGINT", self.container),
            Duration::from_secs(self.stop_timeout).min(deadline),
            Duration::from_millis(200),
            |last| {
                let v = self.docker.inspect(&self.container).map_err(e)?;
                let status = v["State"]["Status"].as_str().unwrap_or("?").to_string();
                *last = status.clone();
                Ok((status != "running").then_some(()))
            },
        );
        match stopped {
            Ok(()) => self.docker.start(&self.container).map_err(e),
            Err(err) if err.kind == crate::error::Kind::Interrupted => Err(err),
            // Still running: the Engine's own restart stops it the hard way.
            Err(_) => self
                .docker
                .restart_within(&self.container, 1, deadline)
                .map_err(e),
        }
    }
}

impl Target for DockerTarget {
    fn describe(&self) -> String {
        format!("container {}", self.container)
    }

    fn writes_auto_conf(&self) -> bool {
        true
    }

    fn snapshot(&self, pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        let mut s = alter_system::snapshot(pg, knobs, None)?;
        // The file lives in the container: read it there (a same-named path on this host is
        // not the server's file).
        s.auto_conf_text = None;
        if let Some(path) = s.auto_conf_path.clone() {
            match self
                .docker
                .archive_get(&self.container, &path)
                .map_err(|e| e.to_string())
                .and_then(|a| tar::first_file(&a).map_err(|e| e.to_string()))
            {
                Ok(f) => {
                    s.auto_conf_text = Some(String::from_utf8_lossy(&f.data).into_owned());
                    s.state = Some(json!({"mode": f.mode, "uid": f.uid, "gid": f.gid}));
                }
                Err(e) => log::warn!(
                    "reading {path} from container {}: {e}; a rollback while PostgreSQL is down will not be possible",
                    self.container
                ),
            }
        }
        Ok(s)
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
            Activation::Restart => self.restart(deadline),
        }
    }

    /// The Engine's restart may still be running (`restarting`), or this agent's own SIGINT
    /// restart was interrupted between the stop and the start: that restart is finished here
    /// (the container started), not repeated.
    fn settle_restart(&self, pg: &Pg, entry: &Entry, deadline: Duration) -> Result<()> {
        let e = |e: crate::cloud::CloudError| Error::other(e.to_string());
        let status = wait::until(
            &format!("container {} to finish restarting", self.container),
            deadline,
            Duration::from_millis(500),
            |last| {
                let v = self.docker.inspect(&self.container).map_err(e)?;
                let status = v["State"]["Status"].as_str().unwrap_or("?").to_string();
                *last = status.clone();
                Ok((!matches!(status.as_str(), "restarting" | "removing")).then_some(status))
            },
        )?;
        let recent = entry.restart_started.is_some_and(|t| {
            crate::apply::journal::now_unix() - t < RESTART_RECENT.as_secs() as i64
        });
        if matches!(status.as_str(), "exited" | "created") && recent {
            log::warn!(
                "container {} is {status} after a restart interrupted between its stop and its start; starting it (the rest of that restart)",
                self.container
            );
            self.docker.start(&self.container).map_err(e)?;
        }
        wait::ready(pg, deadline)
    }

    fn restore(&self, pg: &Pg, entry: &Entry, knobs: &[KnobChange], pg_up: bool) -> Result<String> {
        if pg_up {
            return alter_system::restore_live(pg, knobs);
        }
        let (Some(path), Some(text)) = (&entry.auto_conf_path, &entry.auto_conf_before) else {
            return Err(Error::other(format!(
                "PostgreSQL is not accepting connections and postgresql.auto.conf could not be read from container {} before applying, so it cannot be restored; restore the previous values by hand (see the journal)",
                self.container
            )));
        };
        let (dir, name) = split(path)
            .ok_or_else(|| Error::other(format!("{path:?} is not an absolute file path")))?;
        let st = entry.target_state.clone().unwrap_or_default();
        let num = |k: &str, d: u64| st.get(k).and_then(|v| v.as_u64()).unwrap_or(d) as u32;
        let archive = tar::single_file(
            name,
            text.as_bytes(),
            num("mode", 0o600),
            num("uid", 0),
            num("gid", 0),
        )
        .map_err(|e| Error::other(e.to_string()))?;
        self.docker
            .archive_put(&self.container, dir, &archive)
            .map_err(|e| Error::other(e.to_string()))?;
        Ok(format!(
            "PostgreSQL was down; {path} was restored from the snapshot inside container {}",
            self.container
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_container_paths() {
        assert_eq!(
            super::split("/var/lib/postgresql/data/postgresql.auto.conf"),
            Some(("/var/lib/postgresql/data", "postgresql.auto.conf"))
        );
        assert_eq!(super::split("/x"), Some(("/", "x")));
        assert_eq!(super::split("x"), None);
    }
}
