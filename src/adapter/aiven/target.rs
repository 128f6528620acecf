//! The Aiven target (adapters.md §4.4): values are `user_config` keys of the service, sent
//! with `ServiceUpdate` (only the changed keys; Aiven merges them and `null` removes a key).
//! Only the parameters of the modifiability table can be changed; everything else is
//! refused before any call. `shared_buffers` is set as `shared_buffers_percentage` of node
//! memory and `work_mem` in MB: [`Target::present`] shows `pg_settings` that way, derived
//! from PostgreSQL's real values, so proposals round-trip and verification reads the server.
//! Aiven restarts PostgreSQL itself when a restart-only key changes; the target then waits
//! for the service to go through a rebuild and back to `RUNNING`.

use super::api::AivenApi;
use crate::apply::journal::{Entry, KnobChange};
use crate::apply::units::BaseUnit;
use crate::apply::{wait, Activation, ApplyError, Previous, Snapshot, Target, WriteError};
use crate::error::{Error, Result};
use crate::pg::queries::Setting;
use crate::pg::Pg;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a modifiable knob lives in `user_config`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    /// `user_config.<name>`
    Service,
    /// `user_config.pg.<name>`
    Pg,
}

/// The modifiability table: name, where it lives, whether changing it restarts PostgreSQL.
pub const MODIFIABLE: &[(&str, Level, bool)] = &[
    ("shared_buffers_percentage", Level::Service, true),
    ("work_mem", Level::Service, false),
    ("bgwriter_lru_maxpages", Level::Pg, false),
    ("bgwriter_delay", Level::Pg, false),
    ("max_parallel_workers_per_gather", Level::Pg, false),
    ("max_parallel_workers", Level::Pg, false),
];

/// Listed as not modifiable on Aiven.
pub const NO_MODIFY: &[&str] = &[
    "random_page_cost",
    "seq_page_cost",
    "effective_io_concurrency",
    "checkpoint_completion_target",
    "max_wal_size",
    "min_wal_size",
    "shared_buffers",
    "max_worker_processes",
];

/// Aiven's default when `shared_buffers_percentage` is not set.
pub const DEFAULT_SHARED_BUFFERS_PERCENTAGE: f64 = 20.0;
/// How far (percentage points) the share `shared_buffers` has of node memory may be from the
/// configured percentage and still count as it (Aiven rounds to whole MB).
const PERCENTAGE_TOLERANCE: f64 = 0.5;
/// Service state polls while waiting (the Go agent polls every 10 s).
const POLL: Duration = Duration::from_secs(3);
/// How long a restart-implying update may show `RUNNING` without a rebuild before the wait
/// gives up expecting one (verification then judges).
const REBUILD_GRACE: Duration = Duration::from_secs(30);
/// `present` reuses a `ServiceGet` this young (it runs on every verification poll).
const SERVICE_CACHE: Duration = Duration::from_secs(3);

fn knob(name: &str) -> Option<(Level, bool)> {
    MODIFIABLE
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, l, r)| (*l, *r))
}

/// A numeric `user_config` value (number or numeric string, as Go accepts).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The value of `name` in `user_config`, or None when absent.
pub fn user_config_value<'a>(uc: &'a Value, name: &str) -> Option<&'a Value> {
    let v = match knob(name)?.0 {
        Level::Service => uc.get(name),
        Level::Pg => uc.get("pg").and_then(|p| p.get(name)),
    };
    v.filter(|v| !v.is_null())
}

/// A value as Aiven's schema types it: integers and numbers as JSON numbers (the Go agent
/// forwards whatever JSON the platform sent, strings included).
fn typed(vartype: &str, text: &str) -> Value {
    match vartype {
        "integer" => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(text)),
        "real" => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| Value::from(text)),
        _ => Value::from(text),
    }
}

/// A `user_config` fragment: service-level keys at the top, the others under `pg`.
fn fragment(values: &[(&str, Value)]) -> Value {
    let mut top = Map::new();
    let mut pg = Map::new();
    for (name, v) in values {
        match knob(name).map(|k| k.0) {
            Some(Level::Pg) => pg.insert(name.to_string(), v.clone()),
            _ => top.insert(name.to_string(), v.clone()),
        };
    }
    if !pg.is_empty() {
        top.insert("pg".into(), Value::Object(pg));
    }
    Value::Object(top)
}

/// The share of node memory `shared_buffers` has, in percent.
fn shared_buffers_share(sb: &Setting, node_memory_mb: f64) -> Option<f64> {
    let pages: f64 = sb.setting.parse().ok()?;
    let unit = match sb.unit.as_deref().and_then(BaseUnit::parse) {
        Some(BaseUnit::Memory(b)) => b,
        _ => return None,
    };
    (node_memory_mb > 0.0).then(|| pages * unit / (node_memory_mb * 1048576.0) * 100.0)
}

/// `pg_settings` as Aiven takes the values: `work_mem` in MB (kB / 1024, rounded down, as the
/// Go agent reports it) and a `shared_buffers_percentage` row derived from the real
/// `shared_buffers` and the node memory. The configured percentage is shown while
/// `shared_buffers` matches it; otherwise the share PostgreSQL really has.
pub fn present_settings(settings: &mut HashMap<String, Setting>, service: &Value) -> Result<()> {
    if let Some(w) = settings.get_mut("work_mem") {
        if w.unit.as_deref() == Some("kB") {
            let mb = |v: &Option<String>| {
                v.as_deref()
                    .and_then(|x| x.parse::<i64>().ok())
                    .map(|k| (k / 1024).to_string())
            };
            w.setting = mb(&Some(w.setting.clone())).ok_or_else(|| {
                Error::other(format!(
                    "work_mem in pg_settings is {:?}, not an integer",
                    w.setting
                ))
            })?;
            w.boot_val = mb(&w.boot_val);
            w.reset_val = mb(&w.reset_val);
            w.unit = Some("MB".into());
            // Aiven's user_config range for work_mem (MB).
            w.min_val = Some("1".into());
            w.max_val = Some("1024".into());
        }
    }
    let configured = match service["user_config"].get("shared_buffers_percentage") {
        None | Some(Value::Null) => None,
        Some(v) => Some(number(v).ok_or_else(|| {
            Error::other(format!(
                "user_config.shared_buffers_percentage is {v}, not a number"
            ))
        })?),
    };
    let memory = service["node_memory_mb"].as_f64().unwrap_or(0.0);
    let Some(sb) = settings.get("shared_buffers").cloned() else {
        return Ok(());
    };
    let want = configured.unwrap_or(DEFAULT_SHARED_BUFFERS_PERCENTAGE);
    let shown = match shared_buffers_share(&sb, memory) {
        Some(real) if (real - want).abs() <= PERCENTAGE_TOLERANCE => want,
        Some(real) => (real * 10.0).round() / 10.0,
        None => want,
    };
    settings.insert(
        "shared_buffers_percentage".into(),
        Setting {
            name: "shared_buffers_percentage".into(),
            setting: crate::apply::render::shortest(shown),
            unit: Some("percentage".into()),
            vartype: "real".into(),
            context: "postmaster".into(),
            source: "aiven user_config".into(),
            min_val: Some("20".into()),
            max_val: Some("60".into()),
            enumvals: None,
            boot_val: Some("20".into()),
            reset_val: Some("20".into()),
            pending_restart: sb.pending_restart,
        },
    );
    Ok(())
}

pub struct AivenTarget {
    api: AivenApi,
    /// The last `ServiceGet` (or `ServiceUpdate` answer) and when it was read.
    service: Mutex<Option<(Instant, Value)>>,
    /// Set by a write or restore that changed a restart-only key; `activate` then waits for
    /// Aiven's rebuild. The flag says whether the update's answer already showed it.
    rebuild: Mutex<Option<bool>>,
}

impl AivenTarget {
    pub fn new(api: AivenApi) -> AivenTarget {
        AivenTarget {
            api,
            service: Mutex::new(None),
            rebuild: Mutex::new(None),
        }
    }

    /// A fresh `ServiceGet`, remembered for `present`.
    pub fn service(&self) -> Result<Value> {
        let s = self
            .api
            .service_get()
            .map_err(|e| Error::from(e).context(format!("reading {}", self.api.resource())))?;
        *self.service.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), s.clone()));
        Ok(s)
    }

    fn recent_service(&self) -> Result<Value> {
        if let Some((at, s)) = self
            .service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if at.elapsed() < SERVICE_CACHE {
                return Ok(s.clone());
            }
        }
        self.service()
    }

    fn forget_service(&self) {
        *self.service.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Sends `user_config` and remembers whether a rebuild is to be awaited.
    fn update(&self, user_config: &Value, restart: bool) -> crate::cloud::Result<Value> {
        self.forget_service();
        let s = self.api.service_update(user_config)?;
        if restart {
            let rebuilding = s["state"].as_str().is_some_and(|st| st != "RUNNING");
            *self.rebuild.lock().unwrap_or_else(|p| p.into_inner()) = Some(rebuilding);
        }
        Ok(s)
    }
}

impl Target for AivenTarget {
    fn describe(&self) -> String {
        self.api.resource()
    }

    fn managed(&self, name: &str) -> Option<String> {
        if knob(name).is_some() {
            return None;
        }
        if NO_MODIFY.contains(&name) {
            return Some(if name == "shared_buffers" {
                "cannot be modified on Aiven (Aiven sets it from user_config.shared_buffers_percentage; recommend shared_buffers_percentage)".into()
            } else {
                "cannot be modified on Aiven".into()
            });
        }
        Some(format!(
            "unknown modifiability status on Aiven: only {} can be changed",
            MODIFIABLE
                .iter()
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn preflight(&self) -> std::result::Result<(), ApplyError> {
        let s = self
            .service()
            .map_err(|e| ApplyError::config(format!("{e} before applying; nothing was changed")))?;
        let kind = s["service_type"].as_str().unwrap_or("?");
        if kind != "pg" {
            return Err(ApplyError::config(format!(
                "{} is a {kind:?} service, not PostgreSQL (pg); nothing was changed",
                self.api.resource()
            )));
        }
        let state = s["state"].as_str().unwrap_or("?");
        if state != "RUNNING" {
            return Err(ApplyError::config(format!(
                "{} is {state}, not RUNNING; not applying now, nothing was changed",
                self.api.resource()
            )));
        }
        Ok(())
    }

    fn restart_not_allowed_type(&self) -> &'static str {
        "restart_not_allowed"
    }

    fn needs_restart(&self, s: &Setting) -> bool {
        knob(&s.name).map_or(s.context == "postmaster", |k| k.1)
    }

    fn settle(&self) -> Duration {
        // Aiven pushes a reload-level change to PostgreSQL a moment after the update.
        Duration::from_secs(30)
    }

    fn present(&self, settings: &mut HashMap<String, Setting>) -> Result<()> {
        let s = self.recent_service()?;
        present_settings(settings, &s)
    }

    fn snapshot(&self, _pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        let s = self.service()?;
        let uc = &s["user_config"];
        let mut before = Map::new();
        let previous = knobs
            .iter()
            .map(|k| {
                let v = user_config_value(uc, &k.name).cloned();
                before.insert(k.name.clone(), v.clone().unwrap_or(Value::Null));
                match v {
                    None => Previous::Absent,
                    Some(Value::String(s)) => Previous::Value(s),
                    Some(v) => Previous::Value(v.to_string()),
                }
            })
            .collect();
        Ok(Snapshot {
            previous,
            // The raw previous values (null = not set), so a rollback sends them back as
            // they were, numbers as numbers.
            state: Some(json!({"user_config_before": before})),
            ..Snapshot::default()
        })
    }

    fn write(&self, _pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
        let values: Vec<(&str, Value)> = knobs
            .iter()
            .map(|k| (k.name.as_str(), typed(&k.vartype, &k.new_value)))
            .collect();
        let restart = knobs.iter().any(|k| knob(&k.name).is_some_and(|x| x.1));
        let body = fragment(&values);
        match self.update(&body, restart) {
            Ok(_) => {
                log::info!(
                    "{}: ServiceUpdate accepted user_config {body}",
                    self.api.resource()
                );
                Ok(())
            }
            Err(e) => Err(WriteError {
                // Aiven validates the whole update before applying any of it: an error answer
                // changed nothing; a lost answer may have landed.
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
        // What was sent decides, not `how`: Aiven restarts on its own when a restart-only key
        // changed (also when a rollback puts one back).
        let rebuild = self
            .rebuild
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut seen_rebuild = rebuild.unwrap_or(false);
        let start = Instant::now();
        let what = format!("{} to be RUNNING", self.api.resource());
        let r = wait::until(&what, deadline, POLL, |last| {
            let s = match self.service() {
                Ok(s) => s,
                Err(e) => {
                    // As the Go agent: an error while waiting is not the end of the wait.
                    *last = e.to_string();
                    return Ok(None);
                }
            };
            let state = s["state"].as_str().unwrap_or("?").to_string();
            *last = format!("state {state}");
            if state != "RUNNING" {
                seen_rebuild = true;
                return Ok(None);
            }
            let done = rebuild.is_none() || seen_rebuild || start.elapsed() >= REBUILD_GRACE;
            Ok(done.then_some(()))
        });
        self.forget_service();
        r
    }

    /// Aiven carries on a rebuild it started by itself: wait until the service is `RUNNING`.
    fn settle_restart(&self, pg: &Pg, _entry: &Entry, deadline: Duration) -> Result<()> {
        let what = format!(
            "{} to be RUNNING after the interrupted restart",
            self.api.resource()
        );
        wait::until(&what, deadline, POLL, |last| match self.service() {
            Ok(s) => {
                let state = s["state"].as_str().unwrap_or("?").to_string();
                *last = format!("state {state}");
                Ok((state == "RUNNING").then_some(()))
            }
            Err(e) => {
                *last = e.to_string();
                Ok(None)
            }
        })?;
        self.forget_service();
        wait::ready(pg, deadline)
    }

    fn restore(
        &self,
        _pg: &Pg,
        entry: &Entry,
        knobs: &[KnobChange],
        _pg_up: bool,
    ) -> Result<String> {
        if knobs.is_empty() {
            return Ok("nothing was written, nothing to put back".into());
        }
        let before = entry
            .target_state
            .as_ref()
            .and_then(|s| s.get("user_config_before"));
        let values: Vec<(&str, Value)> = knobs
            .iter()
            .map(|k| {
                let v = match before.and_then(|b| b.get(&k.name)) {
                    Some(v) => v.clone(),
                    None => match &k.previous {
                        Previous::Value(v) => typed(&k.vartype, v),
                        Previous::Absent => Value::Null,
                        Previous::Unknown => typed(&k.vartype, &k.previous_setting),
                    },
                };
                (k.name.as_str(), v)
            })
            .collect();
        let restart = knobs.iter().any(|k| knob(&k.name).is_some_and(|x| x.1));
        let body = fragment(&values);
        self.update(&body, restart)
            .map_err(|e| Error::from(e).context("putting the previous user_config values back"))?;
        Ok(format!(
            "ServiceUpdate put the previous user_config values of {} back ({body})",
            self.api.resource()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, setting: &str, unit: &str, context: &str) -> Setting {
        Setting {
            name: name.into(),
            setting: setting.into(),
            unit: Some(unit.into()),
            vartype: "integer".into(),
            context: context.into(),
            source: "default".into(),
            min_val: None,
            max_val: None,
            enumvals: None,
            boot_val: Some("4096".into()),
            reset_val: None,
            pending_restart: false,
        }
    }

    #[test]
    fn work_mem_in_mb_and_a_percentage_row_from_real_shared_buffers() {
        let mut m = HashMap::new();
        m.insert("work_mem".into(), row("work_mem", "1023", "kB", "user"));
        m.insert(
            "shared_buffers".into(),
            row("shared_buffers", "16384", "8kB", "postmaster"),
        );
        // 16384 × 8 kB = 128 MB = 20 % of 640 MB.
        let svc = json!({"node_memory_mb": 640.0, "user_config": {}});
        present_settings(&mut m, &svc).unwrap();
        assert_eq!(
            m["work_mem"].setting, "0",
            "1023 kB is 0 MB, as Go reports it"
        );
        assert_eq!(m["work_mem"].unit.as_deref(), Some("MB"));
        assert_eq!(m["work_mem"].boot_val.as_deref(), Some("4"));
        let p = &m["shared_buffers_percentage"];
        assert_eq!((p.setting.as_str(), p.vartype.as_str()), ("20", "real"));
        // Configured 25 %, but PostgreSQL still has 20 %: the real share is shown.
        let svc =
            json!({"node_memory_mb": 640.0, "user_config": {"shared_buffers_percentage": 25}});
        present_settings(&mut m, &svc).unwrap();
        assert_eq!(m["shared_buffers_percentage"].setting, "20");
        m.get_mut("shared_buffers").unwrap().setting = "20480".into(); // 160 MB = 25 %
        present_settings(&mut m, &svc).unwrap();
        assert_eq!(m["shared_buffers_percentage"].setting, "25");
        let bad =
            json!({"node_memory_mb": 640.0, "user_config": {"shared_buffers_percentage": "lots"}});
        let e = present_settings(&mut m, &bad).unwrap_err();
        assert!(e.to_string().contains("shared_buffers_percentage"), "{e}");
    }

    #[test]
    fn fragments_nest_pg_keys_and_type_values() {
        let v = fragment(&[
            ("work_mem", typed("integer", "16")),
            ("bgwriter_delay", typed("integer", "200")),
            ("shared_buffers_percentage", typed("real", "25.5")),
            ("max_parallel_workers", Value::Null),
        ]);
        assert_eq!(
            v,
            json!({"work_mem": 16, "shared_buffers_percentage": 25.5,
                "pg": {"bgwriter_delay": 200, "max_parallel_workers": null}})
        );
        assert_eq!(
            user_config_value(&json!({"pg": {"bgwriter_delay": 100}}), "bgwriter_delay"),
            Some(&json!(100))
        );
        assert_eq!(
            user_config_value(&json!({"work_mem": null}), "work_mem"),
            None
        );
    }
}
