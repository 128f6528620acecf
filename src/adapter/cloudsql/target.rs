//! The Cloud SQL target: values are database flags. `instances.patch` replaces the whole flag
//! list, so every write and restore sends the current list with our knobs overlaid; the
//! operation the patch returned is the one awaited (not `operations.list`'s newest, which may
//! be a concurrent backup), and an operation that ends `DONE` with an error is a failure.
//! `operationInProgress` (HTTP 409) is retried with back-off until the apply deadline.
//! Cloud SQL restarts the instance itself when a restart-only flag changes.

use crate::apply::journal::{Entry, KnobChange};
use crate::apply::{wait, Activation, ApplyError, Previous, Snapshot, Target, WriteError};
use crate::cloud::gcp::Google;
use crate::cloud::{CloudError, ErrorKind};
use crate::error::{Error, Kind, Result};
use crate::pg::Pg;
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct CloudSqlTarget {
    google: Google,
    project: String,
    instance: String,
    /// The operation the last patch started; `activate` waits for exactly this one.
    pending: Mutex<Option<String>>,
    /// How long a patch keeps being retried while another operation runs.
    busy_deadline: Duration,
}

const POLL: Duration = Duration::from_secs(1);

impl CloudSqlTarget {
    pub fn new(google: Google, project: &str, instance: &str, busy_deadline: Duration) -> Self {
        CloudSqlTarget {
            google,
            project: project.into(),
            instance: instance.into(),
            pending: Mutex::new(None),
            busy_deadline,
        }
    }

    fn resource(&self) -> String {
        format!("projects/{}/instances/{}", self.project, self.instance)
    }

    /// `settings.databaseFlags` as the instance holds them now.
    pub fn flags(&self) -> Result<Vec<Value>> {
        let inst = self
            .google
            .sql_instance_get(&self.project, &self.instance)
            .map_err(|e| {
                Error::from(e).context(format!("reading the flags of {}", self.resource()))
            })?;
        Ok(inst["settings"]["databaseFlags"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Sends the whole flag list; retries while another operation runs. Returns the
    /// operation's name.
    fn patch(&self, flags: Vec<Value>) -> std::result::Result<String, CloudError> {
        let body = json!({"settings": {"databaseFlags": flags}});
        let start = Instant::now();
        let mut backoff = Duration::from_secs(1);
        loop {
            match self
                .google
                .sql_instance_patch(&self.project, &self.instance, &body)
            {
                Ok(op) => {
                    return op
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            CloudError::decode(
                                format!("Cloud SQL instances.patch of {}", self.resource()),
                                "the answer is not an Operation (no name)",
                            )
                        })
                }
                // Cloud SQL answers 409 (reason operationInProgress) while another operation
                // runs on the instance.
                Err(e)
                    if e.status == Some(409) && start.elapsed() + backoff < self.busy_deadline =>
                {
                    log::info!(
                        "{} is busy with another operation; retrying the patch in {}s",
                        self.resource(),
                        backoff.as_secs()
                    );
                    wait::sleep(backoff, "another Cloud SQL operation to finish").map_err(|i| {
                        CloudError::new(
                            ErrorKind::Timeout,
                            "Cloud SQL instances.patch",
                            i.to_string(),
                        )
                    })?;
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn patch_and_remember(&self, flags: Vec<Value>) -> std::result::Result<String, CloudError> {
        let op = self.patch(flags)?;
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(op.clone());
        Ok(op)
    }

    /// Polls `operations.get` until `DONE`; an error in a finished operation fails.
    fn wait_operation(&self, op: &str, deadline: Duration) -> Result<()> {
        let what = format!("Cloud SQL operation {op} on {}", self.resource());
        wait::until(&what, deadline, POLL, |last| {
            let v = self
                .google
                .sql_operation_get(&self.project, op)
                .map_err(|e| Error::from(e).context(format!("waiting for {what}")))?;
            let status = v["status"].as_str().unwrap_or("");
            *last = format!("status {status}");
            if status != "DONE" {
                return Ok(None);
            }
            let errors = v["error"]["errors"].as_array().cloned().unwrap_or_default();
            if errors.is_empty() {
                return Ok(Some(()));
            }
            let text: Vec<String> = errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("(no message)")
                    )
                })
                .collect();
            Err(Error::other(format!(
                "{what} finished with an error: {}",
                text.join("; ")
            )))
        })
    }
}

fn flag_value(flags: &[Value], name: &str) -> Option<String> {
    flags
        .iter()
        .find(|f| f["name"].as_str() == Some(name))
        .map(|f| f["value"].as_str().unwrap_or("").to_string())
}

/// `flags` with `name` set to `value` (or removed when `None`), other flags untouched.
fn overlay(flags: &mut Vec<Value>, name: &str, value: Option<&str>) {
    flags.retain(|f| f["name"].as_str() != Some(name));
    if let Some(v) = value {
        flags.push(json!({"name": name, "value": v}));
    }
}

impl Target for CloudSqlTarget {
    fn describe(&self) -> String {
        format!("Cloud SQL instance {}", self.resource())
    }

    fn preflight(&self) -> std::result::Result<(), ApplyError> {
        let inst = self
            .google
            .sql_instance_get(&self.project, &self.instance)
            .map_err(|e| {
                ApplyError::config(format!(
                    "reading {} before applying: {e}; nothing was changed",
                    self.resource()
                ))
            })?;
        if inst["instanceType"].as_str() == Some("READ_REPLICA_INSTANCE") {
            return Err(ApplyError::config(format!(
                "{} is a read replica: its flags follow the primary; nothing was changed",
                self.resource()
            )));
        }
        Ok(())
    }

    fn restart_not_allowed_type(&self) -> &'static str {
        "restart_not_allowed"
    }

    fn snapshot(&self, _pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        let flags = self.flags()?;
        Ok(Snapshot {
            previous: knobs
                .iter()
                .map(|k| match flag_value(&flags, &k.name) {
                    Some(v) => Previous::Value(v),
                    None => Previous::Absent,
                })
                .collect(),
            state: Some(json!({"database_flags": flags})),
            ..Snapshot::default()
        })
    }

    fn write(&self, _pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
        let mut flags = self
            .flags()
            .map_err(|error| WriteError { written: 0, error })?;
        for k in knobs {
            overlay(&mut flags, &k.name, Some(&k.new_value));
        }
        match self.patch_and_remember(flags) {
            Ok(op) => {
                log::info!(
                    "{}: instances.patch started operation {op}",
                    self.resource()
                );
                Ok(())
            }
            Err(e) => Err(WriteError {
                // An error answer means the patch was refused; a lost answer may have landed.
                written: if e.changed_nothing() { 0 } else { knobs.len() },
                error: Error::from(e),
            }),
        }
    }

    fn activate(
        &self,
        _pg: &Pg,
        _how: Activation,
        _knobs: &[KnobChange],
        deadline: Duration,
    ) -> Result<()> {
        let op = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match op {
            Some(op) => self.wait_operation(&op, deadline),
            // Nothing was patched since the last wait (a second activation of a rollback).
            None => Ok(()),
        }
    }

    fn restore(
        &self,
        _pg: &Pg,
        entry: &Entry,
        knobs: &[KnobChange],
        _pg_up: bool,
    ) -> Result<String> {
        let mut flags = match self.flags() {
            Ok(f) => f,
            Err(e) => {
                // The snapshot taken before the apply is the next best base.
                log::warn!("{e}; restoring onto the flag list read before the apply");
                entry
                    .target_state
                    .as_ref()
                    .and_then(|s| s["database_flags"].as_array().cloned())
                    .ok_or_else(|| e.context("no snapshot of the flags either"))?
            }
        };
        for k in knobs {
            match &k.previous {
                Previous::Value(v) => overlay(&mut flags, &k.name, Some(v)),
                Previous::Absent => overlay(&mut flags, &k.name, None),
                Previous::Unknown => overlay(&mut flags, &k.name, Some(&k.previous_setting)),
            }
        }
        let op = self.patch_and_remember(flags).map_err(|e| {
            let kind = if e.kind == ErrorKind::Timeout {
                Kind::Timeout
            } else {
                Kind::Other
            };
            Error::new(kind, format!("putting the previous flags back: {e}"))
        })?;
        Ok(format!(
            "instances.patch put the previous flags of {} back (operation {op})",
            self.resource()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_keeps_other_flags_and_removes_absent_ones() {
        let mut f = vec![
            json!({"name": "work_mem", "value": "4096"}),
            json!({"name": "cloudsql.iam_authentication", "value": "on"}),
        ];
        overlay(&mut f, "work_mem", Some("8192"));
        overlay(&mut f, "max_connections", Some("200"));
        assert_eq!(flag_value(&f, "work_mem").as_deref(), Some("8192"));
        assert_eq!(
            flag_value(&f, "cloudsql.iam_authentication").as_deref(),
            Some("on")
        );
        overlay(&mut f, "max_connections", None);
        assert_eq!(flag_value(&f, "max_connections"), None);
        assert_eq!(f.len(), 2);
    }
}
