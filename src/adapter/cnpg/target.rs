//! The CloudNativePG target: values live in the Cluster's `spec.postgresql.parameters`.
//! Write = one merge-patch of the changed parameters (in the units PostgreSQL shows, e.g.
//! `8192kB`, so they read back as written); activate = wait until the operator reconciled
//! that generation and the Cluster is healthy. For restart-only parameters CloudNativePG
//! rolls the instances itself; only when it has not done so (the primary still shows
//! `pending_restart`) is the `restartedAt` annotation set: one rollout, never two
//! (adapters.md §5.8.3). Restore = merge-patch the previous values (`null` for keys that
//! were absent).

use super::api::RESTART_ANNOTATION;
use super::rollout::{self, POLL};
use super::Inner;
use crate::apply::journal::{Entry, KnobChange};
use crate::apply::{wait, Activation, ApplyError, Previous, Snapshot, Target, WriteError};
use crate::error::{Error, Kind, Result};
use crate::pg::{alter, queries, Pg};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long CloudNativePG gets to start its own rolling restart after reconciling a
/// restart-only change, before the agent asks for one.
const OWN_ROLLOUT_GRACE: Duration = Duration::from_secs(20);

/// Parameters CloudNativePG sets itself and refuses in `spec.postgresql.parameters`
/// (adapters.md §5.4).
pub const MANAGED: &[&str] = &[
    "archive_mode",
    "archive_command",
    "archive_cleanup_command",
    "restore_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "hot_standby",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_min_apply_delay",
    "synchronous_standby_names",
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_crl_file",
    "ssl_dh_params_file",
    "ssl_ecdh_curve",
    "ssl_key_file",
    "ssl_passphrase_command",
    "ssl_passphrase_command_supports_reload",
    "ssl_prefer_server_ciphers",
    "log_destination",
    "log_directory",
    "log_file_mode",
    "log_filename",
    "log_rotation_age",
    "log_rotation_size",
    "log_truncate_on_rotation",
    "logging_collector",
    "stats_temp_directory",
    "syslog_facility",
    "syslog_ident",
    "syslog_sequence_numbers",
    "syslog_split_messages",
    "cluster_name",
    "config_file",
    "data_directory",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "promote_trigger_file",
    "restart_after_crash",
    "allow_alter_system",
    "allow_system_table_mods",
    "data_sync_retry",
    "jit_provider",
    "shared_preload_libraries",
    "event_source",
    "bonjour",
    "bonjour_name",
];

/// A base-unit value as CloudNativePG should carry it: with PostgreSQL's unit (`8kB` units
/// become `kB`), so the Cluster reads like `SHOW` and round-trips; unit-less values as is.
pub fn cnpg_value(value: &str, unit: Option<&str>) -> String {
    let Some(unit) = unit.filter(|u| !u.is_empty()) else {
        return value.to_string();
    };
    let numeric = value.parse::<f64>().is_ok_and(|f| f.is_finite());
    if !numeric || value.starts_with('-') {
        // -1 and friends mean "default/disabled": never scaled.
        return value.to_string();
    }
    if let Some(mult) = unit
        .strip_suffix("kB")
        .filter(|m| !m.is_empty())
        .and_then(|m| m.parse::<i64>().ok())
    {
        if let Ok(n) = value.parse::<i64>() {
            return format!("{}kB", n * mult);
        }
    }
    format!("{value}{unit}")
}

pub struct CnpgTarget {
    inner: Arc<Inner>,
    /// `metadata.generation` after our last patch: what activation waits for.
    generation: Mutex<i64>,
    /// `pg_postmaster_start_time()` before the change: a different one means restarted.
    start_before: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CnpgTarget {
    pub fn new(inner: Arc<Inner>) -> CnpgTarget {
        CnpgTarget {
            inner,
            generation: Mutex::new(0),
            start_before: Mutex::new(None),
        }
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.inner.cfg.namespace, self.inner.cfg.cluster_name
        )
    }

    fn patch(&self, params: &Map<String, Value>) -> crate::cloud::Result<()> {
        let c = self.inner.api.patch_parameters(params)?;
        *lock(&self.generation) = c.generation;
        self.inner.invalidate_cluster();
        Ok(())
    }

    fn remember_start(&self, pg: &Pg) {
        let s = crate::apply::with_conn(pg, alter::postmaster_start).ok();
        *lock(&self.start_before) = s;
    }

    /// PostgreSQL restarted since `remember_start` and none of `knobs` waits for a restart.
    /// Errors (PostgreSQL down mid-restart) read as "not yet".
    fn restarted(&self, pg: &Pg, knobs: &[KnobChange]) -> bool {
        let before = lock(&self.start_before).clone();
        let r = pg.conn().and_then(|mut c| {
            let start = alter::postmaster_start(&mut c)?;
            let pending = queries::pg_settings(&mut c)?
                .into_iter()
                .any(|s| s.pending_restart && knobs.iter().any(|k| k.name == s.name));
            Ok((start, pending))
        });
        match r {
            Ok((start, pending)) => !pending && before.is_none_or(|b| b != start),
            Err(_) => false,
        }
    }

    /// Reload path: the primary (looked up afresh, never a name from before a failover) is
    /// Ready.
    fn primary_ready(&self) -> Result<()> {
        let inner = &self.inner;
        inner.forget_primary();
        let c = inner.cluster(Duration::ZERO).ok();
        let pod = inner.primary_pod(c.as_ref())?;
        let view = super::resources::PodView::from_pod(&pod, &inner.cfg.container_name)?;
        if !view.ready {
            return Err(Error::other(format!(
                "primary pod {} is not Ready after the change",
                view.name
            )));
        }
        Ok(())
    }

    fn restart(&self, pg: &Pg, knobs: &[KnobChange], deadline: Duration) -> Result<()> {
        let inner = &self.inner;
        let started = Instant::now();
        let left = || deadline.saturating_sub(started.elapsed());
        let own = if self.restarted(pg, knobs) {
            true
        } else {
            // CloudNativePG may be about to roll the instances itself: give it the chance.
            let r = wait::until(
                "CloudNativePG to restart the instances for the changed parameters",
                OWN_ROLLOUT_GRACE.min(left()),
                POLL,
                |last| {
                    if self.restarted(pg, knobs) {
                        return match inner.cluster(Duration::ZERO) {
                            Ok(c) if c.settled() => Ok(Some(())),
                            Ok(c) => {
                                *last = c.summary();
                                Ok(None)
                            }
                            Err(e) => {
                                *last = e.to_string();
                                Ok(None)
                            }
                        };
                    }
                    *last = "the primary still shows pending_restart".into();
                    Ok(None)
                },
            );
            match r {
                Ok(()) => true,
                Err(e) if e.kind == Kind::Timeout => false,
                Err(e) => return Err(e),
            }
        };
        if own {
            log::info!(
                "CloudNativePG restarted the instances of Cluster {} itself",
                self.name()
            );
        } else {
            let at = crate::timefmt::utc_seconds(std::time::SystemTime::now());
            log::warn!(
                "CloudNativePG did not restart Cluster {}; requesting a rolling restart ({RESTART_ANNOTATION}={at})",
                self.name()
            );
            inner.api.patch_restart(&at).map_err(|e| {
                Error::other(format!(
                    "setting the {RESTART_ANNOTATION} annotation on Cluster {}: {e}",
                    self.name()
                ))
            })?;
            inner.invalidate_cluster();
            wait::until(
                &format!("the rolling restart of Cluster {}", self.name()),
                left(),
                POLL,
                |last| {
                    if !self.restarted(pg, knobs) {
                        *last = "PostgreSQL not restarted yet".into();
                        return Ok(None);
                    }
                    match inner.api.cluster() {
                        Ok(c) if c.failed().is_some() => Err(Error::other(format!(
                            "Cluster {} went to {} during the rolling restart",
                            self.name(),
                            c.failed().unwrap_or_default()
                        ))),
                        Ok(c) if c.settled() => Ok(Some(())),
                        Ok(c) => {
                            *last = c.summary();
                            Ok(None)
                        }
                        Err(e) => {
                            *last = e.to_string();
                            Ok(None)
                        }
                    }
                },
            )?;
        }
        // A rollout may have moved the primary (switchover): look it up again.
        inner.forget_primary();
        inner.invalidate_cluster();
        let c = inner.cluster(Duration::ZERO).ok();
        inner.primary(c.as_ref())?;
        Ok(())
    }
}

impl Target for CnpgTarget {
    fn describe(&self) -> String {
        format!("the CloudNativePG Cluster {}", self.name())
    }

    fn managed(&self, name: &str) -> Option<String> {
        MANAGED.iter().any(|m| m.eq_ignore_ascii_case(name)).then(|| {
            "managed by CloudNativePG: the operator sets it itself and rejects it in spec.postgresql.parameters".to_string()
        })
    }

    fn preflight(&self) -> std::result::Result<(), ApplyError> {
        let inner = &self.inner;
        let c = match inner.check_failover_within(Duration::ZERO) {
            Err(e) => {
                return Err(ApplyError::config(format!(
                    "{e}; not applying while a failover is in progress or being stabilised"
                )))
            }
            Ok(None) => {
                return Err(ApplyError::config(format!(
                    "cannot read Cluster {}; nothing was changed",
                    self.name()
                )))
            }
            Ok(Some(c)) => c,
        };
        if let Some(why) = c.failed() {
            return Err(ApplyError::config(format!(
                "Cluster {} reports {why}; nothing was changed",
                self.name()
            )));
        }
        if !c.settled() {
            return Err(ApplyError::config(format!(
                "Cluster {} is not healthy ({}); not applying now",
                self.name(),
                c.summary()
            )));
        }
        match crate::apply::with_conn(&inner.pg, queries::in_recovery) {
            Ok(false) => Ok(()),
            Ok(true) => Err(ApplyError::config(format!(
                "the PostgreSQL connection reaches a standby, not the primary of Cluster {}: point postgresql.connection_url at the {}-rw service; nothing was changed",
                self.name(),
                inner.cfg.cluster_name
            ))),
            Err(e) => Err(ApplyError::config(format!(
                "checking that the connection reaches the primary: {e}; nothing was changed"
            ))),
        }
    }

    fn snapshot(&self, pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        let c = self
            .inner
            .cluster(Duration::ZERO)
            .map_err(|e| Error::other(format!("reading Cluster {}: {e}", self.name())))?;
        self.remember_start(pg);
        let previous = knobs
            .iter()
            .map(|k| {
                c.parameters
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&k.name))
                    .map(|(_, v)| match v {
                        Value::String(s) => Previous::Value(s.clone()),
                        other => Previous::Value(other.to_string()),
                    })
                    .unwrap_or(Previous::Absent)
            })
            .collect();
        Ok(Snapshot {
            previous,
            auto_conf_path: None,
            auto_conf_text: None,
            state: Some(json!({"cluster": self.name(), "generation": c.generation})),
        })
    }

    fn write(&self, _pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
        let params: Map<String, Value> = knobs
            .iter()
            .map(|k| {
                (
                    k.name.clone(),
                    Value::String(cnpg_value(&k.new_value, k.unit.as_deref())),
                )
            })
            .collect();
        self.patch(&params).map_err(|e| WriteError {
            // A refused request changed nothing; a lost answer may have.
            written: if e.changed_nothing() { 0 } else { knobs.len() },
            error: Error::other(format!(
                "merge-patching spec.postgresql.parameters of Cluster {}: {e}",
                self.name()
            )),
        })
    }

    fn activate(
        &self,
        pg: &Pg,
        how: Activation,
        knobs: &[KnobChange],
        deadline: Duration,
    ) -> Result<()> {
        let started = Instant::now();
        let generation = *lock(&self.generation);
        rollout::wait_reconciled(&self.inner, generation, deadline, "apply the parameters")?;
        match how {
            Activation::Reload => self.primary_ready(),
            Activation::Restart => {
                self.restart(pg, knobs, deadline.saturating_sub(started.elapsed()))
            }
        }
    }

    /// The operator carries on a rolling restart by itself: wait until the Cluster is healthy
    /// again (every instance ready, the generation observed).
    fn settle_restart(&self, pg: &Pg, _entry: &Entry, deadline: Duration) -> Result<()> {
        let inner = &self.inner;
        wait::until(
            &format!(
                "Cluster {} to settle after the interrupted restart",
                self.name()
            ),
            deadline,
            POLL,
            |last| match inner.api.cluster() {
                Ok(c) if c.failed().is_some() => Err(Error::other(format!(
                    "Cluster {} reports {}",
                    self.name(),
                    c.failed().unwrap_or_default()
                ))),
                Ok(c) if c.settled() => Ok(Some(())),
                Ok(c) => {
                    *last = c.summary();
                    Ok(None)
                }
                Err(e) => {
                    *last = e.to_string();
                    Ok(None)
                }
            },
        )?;
        inner.forget_primary();
        inner.invalidate_cluster();
        wait::ready(pg, deadline)
    }

    fn restore(
        &self,
        pg: &Pg,
        _entry: &Entry,
        knobs: &[KnobChange],
        pg_up: bool,
    ) -> Result<String> {
        if pg_up {
            self.remember_start(pg);
        }
        let (mut back, mut removed) = (0, 0);
        let params: Map<String, Value> = knobs
            .iter()
            .map(|k| {
                let v = match &k.previous {
                    Previous::Value(v) => {
                        back += 1;
                        Value::String(v.clone())
                    }
                    Previous::Absent => {
                        removed += 1;
                        Value::Null
                    }
                    Previous::Unknown => {
                        back += 1;
                        Value::String(cnpg_value(&k.previous_setting, k.unit.as_deref()))
                    }
                };
                (k.name.clone(), v)
            })
            .collect();
        self.patch(&params).map_err(|e| {
            Error::other(format!(
                "merge-patching the previous parameters back into Cluster {}: {e}",
                self.name()
            ))
        })?;
        Ok(format!(
            "spec.postgresql.parameters of Cluster {} patched back ({back} restored, {removed} removed)",
            self.name()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_postgresql_units() {
        assert_eq!(cnpg_value("8192", Some("kB")), "8192kB");
        assert_eq!(cnpg_value("16384", Some("8kB")), "131072kB");
        assert_eq!(cnpg_value("1024", Some("MB")), "1024MB");
        assert_eq!(cnpg_value("200", Some("ms")), "200ms");
        assert_eq!(cnpg_value("2.5", Some("ms")), "2.5ms");
        assert_eq!(cnpg_value("-1", Some("kB")), "-1");
        assert_eq!(cnpg_value("on", None), "on");
        assert_eq!(cnpg_value("0.9", None), "0.9");
    }

    #[test]
    fn managed_parameters_are_refused_case_insensitively() {
        assert!(MANAGED.contains(&"shared_preload_libraries"));
        assert_eq!(MANAGED.len(), 62);
    }
}
