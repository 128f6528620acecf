//! The Patroni target (adapters.md §6.4): the DCS is where parameters live, so a change is an
//! `ALTER SYSTEM RESET` of the knobs on this node (a `postgresql.auto.conf` entry would shadow
//! the DCS value) and one `PATCH /config`; Patroni reloads every member itself. Knobs that need
//! a restart restart the members Patroni flags `pending_restart`, replicas first, then the
//! leader, each waited for. Restore PATCHes the previous DCS values back (`null` removes a key
//! that was absent) and puts back any `postgresql.auto.conf` entry the write reset.

use super::failover::Failover;
use super::rest::{Cluster, Member, Rest};
use crate::apply::journal::{Entry, KnobChange};
use crate::apply::{alter_system, validate, wait, with_conn, Activation, ApplyError, Previous};
use crate::apply::{Snapshot, Target, WriteError};
use crate::error::{Error, Kind, Result};
use crate::pg::{alter as sql, queries, Pg};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parameters Patroni sets on every node itself (adapters.md §6.4 step 6); a value in the
/// dynamic `postgresql.parameters` is overridden or refused by Patroni.
pub const MANAGED: &[&str] = &[
    "hot_standby",
    "in_hot_standby",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_min_apply_delay",
    "synchronous_standby_names",
    "transaction_read_only",
    "max_connections",
    "max_wal_senders",
    "wal_level",
    "max_replication_slots",
    "cluster_name",
];

pub fn is_managed(name: &str) -> bool {
    MANAGED.iter().any(|m| m.eq_ignore_ascii_case(name))
}

pub const STANDBY_MESSAGE: &str = "Tuning operation rejected: Agent is running on a Standby node.";

pub struct PatroniTarget {
    pub rest: Arc<Rest>,
    pub failover: Arc<Failover>,
    /// For the preflight's replica check (the trait gives `preflight` no session).
    pub pg: Pg,
    pub node_name: String,
}

/// A DCS value as the text PostgreSQL gets (Patroni keeps numbers from its bootstrap YAML).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rest_err(e: crate::cloud::CloudError) -> Error {
    Error::from(e)
}

impl PatroniTarget {
    fn cluster(&self) -> Result<Cluster> {
        self.rest.cluster().map_err(rest_err)
    }

    /// Polls `/cluster` until `member` is up again without `pending_restart`.
    fn wait_member(&self, name: &str, deadline: Duration) -> Result<()> {
        wait::until(
            &format!("Patroni member {name} to be up after its restart"),
            deadline,
            Duration::from_millis(500),
            |last| {
                let c = match self.rest.cluster() {
                    Ok(c) => c,
                    Err(e) => {
                        *last = e.to_string();
                        return Ok(None);
                    }
                };
                let Some(m) = c.member(name) else {
                    *last = format!("{name} is not in /cluster");
                    return Ok(None);
                };
                *last = format!("state {}, pending_restart {}", m.state, m.pending_restart);
                Ok((m.is_up() && !m.pending_restart).then_some(()))
            },
        )
    }

    /// Members Patroni flags `pending_restart` once it has loaded the new DCS configuration:
    /// waits until every member that is up has the flag (the leader at least).
    fn pending_members(&self, deadline: Duration) -> Result<Cluster> {
        let r = wait::until(
            "Patroni to flag the members pending restart",
            deadline,
            Duration::from_millis(500),
            |last| {
                let c = match self.rest.cluster() {
                    Ok(c) => c,
                    Err(e) => {
                        *last = e.to_string();
                        return Ok(None);
                    }
                };
                let up: Vec<&Member> = c.members.iter().filter(|m| m.is_up()).collect();
                let pending: Vec<&str> = up
                    .iter()
                    .filter(|m| m.pending_restart)
                    .map(|m| m.name.as_str())
                    .collect();
                *last = format!(
                    "pending restart: [{}] of {} up",
                    pending.join(" "),
                    up.len()
                );
                Ok((!up.is_empty() && pending.len() == up.len()).then_some(c))
            },
        );
        match r {
            Ok(c) => Ok(c),
            // Some member never flagged (a lagging or stopped replica): restart those that did,
            // provided the leader is among them (verification runs on the leader).
            Err(e) if e.kind == Kind::Timeout => {
                let c = self.cluster()?;
                match c.leader() {
                    Some(l) if l.pending_restart => {
                        log::warn!("{e}; restarting only the members flagged pending restart");
                        Ok(c)
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn restart_members(&self, deadline: Duration) -> Result<()> {
        let end = Instant::now() + deadline;
        let left = || end.saturating_duration_since(Instant::now());
        let _window = self.failover.restart_window();
        let c = self.pending_members(left().min(Duration::from_secs(60)))?;
        let leader = c
            .leader()
            .cloned()
            .ok_or_else(|| Error::other("the Patroni cluster has no leader; not restarting"))?;
        let mut order: Vec<&Member> = c
            .members
            .iter()
            .filter(|m| !m.is_leader() && m.pending_restart)
            .collect();
        if leader.pending_restart {
            order.push(&leader);
        }
        for m in order {
            let started = Instant::now();
            let answer = self
                .rest
                .restart(m, left().max(Duration::from_secs(1)))
                .map_err(|e| rest_err(e).context(format!("restarting member {}", m.name)))?;
            self.wait_member(&m.name, left().max(Duration::from_secs(1)))?;
            log::info!(
                "Patroni member {} ({}) restarted in {:.1}s: {answer}",
                m.name,
                m.role,
                started.elapsed().as_secs_f64()
            );
        }
        let after = self.cluster()?;
        match after.leader() {
            Some(l) if l.name.trim().eq_ignore_ascii_case(leader.name.trim()) => Ok(()),
            Some(l) => Err(Error::other(format!(
                "the leader changed from {} to {} during the restart",
                leader.name, l.name
            ))),
            None => Err(Error::other(format!(
                "the cluster has no leader after restarting {}",
                leader.name
            ))),
        }
    }

    /// Waits until this node runs what the DCS now holds for `knobs` (a postmaster knob: until
    /// it is pending a restart). Knobs absent from the DCS and backend-context knobs (existing
    /// sessions never show them) are not waited for.
    fn wait_applied(&self, pg: &Pg, knobs: &[KnobChange], deadline: Duration) -> Result<()> {
        wait::until(
            &format!("Patroni to apply the configuration on {}", self.node_name),
            deadline,
            Duration::from_millis(500),
            |last| {
                // The DCS is read on every poll: right after a PATCH, Patroni's REST API can
                // still answer with its previous view of the configuration.
                let dcs = self.rest.parameters().map_err(rest_err)?;
                let want: Vec<(&KnobChange, String)> = knobs
                    .iter()
                    .filter(|k| !matches!(k.context.as_str(), "backend" | "superuser-backend"))
                    .filter_map(|k| dcs.get(&k.name).map(|v| (k, text(v))))
                    .collect();
                if want.is_empty() {
                    return Ok(Some(()));
                }
                let settings = with_conn(pg, queries::pg_settings)?;
                let mut missing = Vec::new();
                for (k, v) in &want {
                    let Some(s) = settings
                        .iter()
                        .find(|s| s.name.eq_ignore_ascii_case(&k.name))
                    else {
                        continue;
                    };
                    let same = match (
                        validate::normalise(s, &s.setting),
                        validate::normalise(s, v),
                    ) {
                        (Ok(a), Ok(b)) => a.same(&b),
                        _ => &s.setting == v,
                    };
                    if !(same || (s.context == "postmaster" && s.pending_restart)) {
                        missing.push(format!("{} is {} (DCS: {v})", k.name, s.setting));
                    }
                }
                *last = missing.join(", ");
                Ok(missing.is_empty().then_some(()))
            },
        )
    }
}

impl Target for PatroniTarget {
    fn describe(&self) -> String {
        format!("the Patroni cluster (through {})", self.rest.base)
    }

    fn managed(&self, name: &str) -> Option<String> {
        is_managed(name).then(|| {
            "managed by Patroni: it sets this parameter on every node itself (change it in Patroni's configuration, not through DBtune)".to_string()
        })
    }

    fn preflight(&self) -> std::result::Result<(), ApplyError> {
        let r = self.failover.check(&self.rest, &self.pg);
        if let Err(d) = r {
            return Err(ApplyError::config(format!(
                "{d}; configuration is applied only on a stable cluster, nothing was changed"
            )));
        }
        match with_conn(&self.pg, queries::in_recovery) {
            Ok(true) => Err(ApplyError::typed("standby_node_detected", STANDBY_MESSAGE)),
            Ok(false) => Ok(()),
            Err(e) => Err(ApplyError::config(format!(
                "checking whether this node is a replica (pg_is_in_recovery): {e}; nothing was changed"
            ))),
        }
    }

    fn settle(&self) -> Duration {
        // Patroni reloads every member on its next HA loop (loop_wait, 10 s by default).
        Duration::from_secs(30)
    }

    fn snapshot(&self, pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        let dcs = self
            .rest
            .parameters()
            .map_err(|e| rest_err(e).context("reading the DCS configuration"))?;
        let entries = with_conn(pg, sql::auto_conf_entries)?.unwrap_or_default();
        let mut auto = Map::new();
        for k in knobs {
            if let Some((_, v)) = entries
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(&k.name))
            {
                auto.insert(k.name.clone(), Value::String(v.clone()));
            }
        }
        Ok(Snapshot {
            previous: knobs
                .iter()
                .map(|k| match dcs.get(&k.name) {
                    Some(Value::Null) | None => Previous::Absent,
                    Some(v) => Previous::Value(text(v)),
                })
                .collect(),
            auto_conf_path: None,
            auto_conf_text: None,
            state: Some(serde_json::json!({ "auto_conf": auto })),
        })
    }

    fn write(&self, pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
        let all = |error: Error| WriteError {
            written: knobs.len(),
            error,
        };
        let names: Vec<String> = knobs.iter().map(|k| k.name.clone()).collect();
        let reset = alter_system::reset(pg, &names).map_err(all)?;
        if !reset.is_empty() {
            log::info!(
                "ALTER SYSTEM RESET [{}] so postgresql.auto.conf does not shadow Patroni's configuration",
                reset.join(" ")
            );
            alter_system::reload(pg).map_err(all)?;
        }
        let params: Map<String, Value> = knobs
            .iter()
            .map(|k| (k.name.clone(), Value::String(k.new_value.clone())))
            .collect();
        self.rest
            .patch_parameters(params)
            .map_err(|e| all(rest_err(e).context("PATCH /config")))
    }

    fn activate(
        &self,
        pg: &Pg,
        how: Activation,
        knobs: &[KnobChange],
        deadline: Duration,
    ) -> Result<()> {
        match how {
            Activation::Reload => self.wait_applied(pg, knobs, deadline.min(self.settle())),
            Activation::Restart => self.restart_members(deadline),
        }
    }

    /// Patroni carries on a restart it accepted on its own: wait until the leader is up and no
    /// member is restarting, starting or stopping (a replica down for other reasons does not
    /// hold recovery up).
    fn settle_restart(&self, pg: &Pg, _entry: &Entry, deadline: Duration) -> Result<()> {
        wait::until(
            "every Patroni member to be up after the interrupted restart",
            deadline,
            Duration::from_millis(500),
            |last| {
                let c = match self.rest.cluster() {
                    Ok(c) => c,
                    Err(e) => {
                        *last = e.to_string();
                        return Ok(None);
                    }
                };
                let moving: Vec<String> = c
                    .members
                    .iter()
                    .filter(|m| matches!(m.state.as_str(), "restarting" | "starting" | "stopping"))
                    .map(|m| format!("{} {}", m.name, m.state))
                    .collect();
                *last = format!("in transition: [{}]", moving.join(", "));
                let leader_up = c.leader().is_some_and(|l| l.is_up());
                Ok((moving.is_empty() && leader_up).then_some(()))
            },
        )?;
        wait::ready(pg, deadline)
    }

    fn restore(&self, pg: &Pg, entry: &Entry, knobs: &[KnobChange], pg_up: bool) -> Result<String> {
        let params: Map<String, Value> = knobs
            .iter()
            .map(|k| {
                let v = match &k.previous {
                    Previous::Absent => Value::Null,
                    Previous::Value(v) => Value::String(v.clone()),
                    Previous::Unknown => Value::String(k.previous_setting.clone()),
                };
                (k.name.clone(), v)
            })
            .collect();
        self.rest
            .patch_parameters(params)
            .map_err(|e| rest_err(e).context("PATCH /config with the previous values"))?;
        let mut how = vec!["PATCH /config put the previous DCS values back".to_string()];
        let auto = entry
            .target_state
            .as_ref()
            .and_then(|s| s.get("auto_conf"))
            .and_then(|a| a.as_object())
            .cloned()
            .unwrap_or_default();
        let back: Vec<(&String, String)> = knobs
            .iter()
            .filter_map(|k| auto.get(&k.name).map(|v| (&k.name, text(v))))
            .collect();
        if !back.is_empty() {
            if !pg_up {
                how.push("the postgresql.auto.conf entries reset by the apply stay removed (PostgreSQL is down)".into());
            } else {
                for (n, v) in &back {
                    with_conn(pg, |c| sql::alter_set(c, n, v)).map_err(|e| {
                        e.context(format!("restoring the postgresql.auto.conf entry of {n}"))
                    })?;
                }
                how.push(format!(
                    "ALTER SYSTEM restored the postgresql.auto.conf entries of [{}]",
                    back.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
        Ok(how.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managed_list_is_case_insensitive_and_complete() {
        assert_eq!(MANAGED.len(), 12);
        assert!(is_managed("MAX_CONNECTIONS"));
        assert!(is_managed("wal_level"));
        assert!(!is_managed("work_mem"));
    }

    #[test]
    fn dcs_values_become_text() {
        assert_eq!(text(&Value::from(10)), "10");
        assert_eq!(text(&Value::from("4MB")), "4MB");
        assert_eq!(text(&Value::from(true)), "true");
    }
}
