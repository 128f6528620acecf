//! The Flexible Server target: server parameters through Resource Manager. Snapshot =
//! `Configurations_Get` per knob; write = `Configurations_Put` per knob (`source:
//! user-override`), each operation awaited; a failure reports how many were sent so the
//! pipeline puts every already-changed knob back (the Go agent leaves them applied). Azure
//! applies dynamic parameters itself; `isConfigPendingRestart` says a restart is needed, done
//! with `Servers_Restart`.

use super::lro;
use crate::apply::journal::{Entry, KnobChange};
use crate::apply::{Activation, Previous, Snapshot, Target, WriteError};
use crate::cloud::azure::Arm;
use crate::cloud::encoding::uri_encode;
use crate::cloud::http::Request;
use crate::error::{Error, Result};
use crate::pg::Pg;
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Flexible Server REST API version used (the vendor description in the repository).
pub const API_VERSION: &str = "2024-08-01";

pub struct AzureTarget {
    arm: Arm,
    /// ARM resource id of the server.
    id: String,
    /// Knobs Azure reported as pending a restart since the last activation.
    pending_restart: Mutex<Vec<String>>,
    /// Set while a rollback restores: a pending restart is then the pipeline's to resolve.
    restoring: Mutex<bool>,
    deadline: Duration,
}

impl AzureTarget {
    pub fn new(arm: Arm, id: String, deadline: Duration) -> Self {
        AzureTarget {
            arm,
            id,
            pending_restart: Mutex::new(Vec::new()),
            restoring: Mutex::new(false),
            deadline,
        }
    }

    fn config_path(&self, name: &str) -> String {
        format!("{}/configurations/{}", self.id, uri_encode(name, false))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API_VERSION}", self.arm.base)
    }

    /// `Configurations_Get`: the value the server holds for `name`.
    pub fn get(&self, name: &str) -> Result<Value> {
        self.arm
            .get(&self.config_path(name), API_VERSION)
            .map_err(|e| {
                Error::from(e).context(format!("Configurations_Get {name} on {}", self.id))
            })
    }

    /// `Configurations_Put` of one value, awaited until `deadline`; notes a pending restart.
    fn put(&self, name: &str, value: &str, deadline: Duration) -> Result<()> {
        let url = self.url(&self.config_path(name));
        let what = format!("Configurations_Put {name}={value} on {}", self.id);
        let body = json!({"properties": {"value": value, "source": "user-override"}});
        let result = lro::call(
            &self.arm,
            Request::new("PUT", url.clone()).json(&body),
            Some(&url),
            &what,
            deadline,
        )?;
        if result
            .as_ref()
            .and_then(|r| r["properties"]["isConfigPendingRestart"].as_bool())
            .unwrap_or(false)
        {
            let mut p = self
                .pending_restart
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !p.iter().any(|n| n == name) {
                p.push(name.to_string());
            }
        }
        Ok(())
    }

    fn restart(&self, deadline: Duration) -> Result<()> {
        let path = format!("{}/restart", self.id);
        lro::call(
            &self.arm,
            Request::post(self.url(&path)),
            None,
            &format!("Servers_Restart of {}", self.id),
            deadline,
        )?;
        self.pending_restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }
}

impl Target for AzureTarget {
    fn describe(&self) -> String {
        format!("Azure Flexible Server {}", self.id)
    }

    fn restart_not_allowed_type(&self) -> &'static str {
        "restart_not_allowed"
    }

    fn snapshot(&self, _pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        let mut previous = Vec::with_capacity(knobs.len());
        for k in knobs {
            let c = self.get(&k.name)?;
            previous.push(match c["properties"]["value"].as_str() {
                Some(v) => Previous::Value(v.to_string()),
                None => Previous::Unknown,
            });
        }
        Ok(Snapshot {
            previous,
            ..Snapshot::default()
        })
    }

    fn write(&self, _pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
        *self.restoring.lock().unwrap_or_else(|p| p.into_inner()) = false;
        // One deadline for all the knobs, not one each.
        let start = Instant::now();
        for (i, k) in knobs.iter().enumerate() {
            // A failed PUT may still have landed: it counts as written.
            self.put(
                &k.name,
                &k.new_value,
                self.deadline.saturating_sub(start.elapsed()),
            )
            .map_err(|error| WriteError {
                written: i + 1,
                error,
            })?;
        }
        Ok(())
    }

    fn activate(
        &self,
        _pg: &Pg,
        how: Activation,
        _knobs: &[KnobChange],
        deadline: Duration,
    ) -> Result<()> {
        let pending = self
            .pending_restart
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match how {
            Activation::Restart => {
                if pending.is_empty() {
                    log::info!(
                        "{}: no parameter is pending a restart; not restarting",
                        self.id
                    );
                    return Ok(());
                }
                self.restart(deadline)
            }
            // Azure applied dynamic values itself.
            Activation::Reload => {
                let restoring = *self.restoring.lock().unwrap_or_else(|p| p.into_inner());
                if pending.is_empty() || restoring {
                    return Ok(());
                }
                Err(Error::other(format!(
                    "Azure reports isConfigPendingRestart for [{}] but the apply was planned as a reload",
                    pending.join(" ")
                )))
            }
        }
    }

    /// Servers_Restart goes on in Azure without us: wait until the server is `Ready` again.
    fn settle_restart(&self, pg: &Pg, _entry: &Entry, deadline: Duration) -> Result<()> {
        crate::apply::wait::until(
            &format!("{} to be Ready after the interrupted restart", self.id),
            deadline,
            Duration::from_secs(2),
            |last| match self.arm.get(&self.id, API_VERSION) {
                Ok(s) => {
                    let state = s["properties"]["state"].as_str().unwrap_or("?").to_string();
                    *last = format!("state {state}");
                    Ok((state == "Ready").then_some(()))
                }
                Err(e) => {
                    *last = e.to_string();
                    Ok(None)
                }
            },
        )?;
        crate::apply::wait::ready(pg, deadline)
    }

    fn restore(
        &self,
        _pg: &Pg,
        _entry: &Entry,
        knobs: &[KnobChange],
        _pg_up: bool,
    ) -> Result<String> {
        *self.restoring.lock().unwrap_or_else(|p| p.into_inner()) = true;
        let mut done = Vec::new();
        let start = Instant::now();
        for k in knobs.iter().rev() {
            let v = match &k.previous {
                Previous::Value(v) => v.clone(),
                Previous::Absent | Previous::Unknown => k.previous_setting.clone(),
            };
            self.put(&k.name, &v, self.deadline.saturating_sub(start.elapsed()))
                .map_err(|e| e.context(format!("putting {} back to {v:?}", k.name)))?;
            done.push(k.name.clone());
        }
        Ok(format!(
            "Configurations_Put put back [{}] on {}",
            done.join(" "),
            self.id
        ))
    }
}
