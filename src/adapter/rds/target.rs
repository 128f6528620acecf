//! The RDS / Aurora target: values go into the instance's DB parameter group (Aurora: the
//! cluster parameter group for cluster-level parameters), in batches of at most 20, `immediate`
//! for dynamic and `pending-reboot` for static parameters (from the parameter's `ApplyType`).
//! The snapshot is the group's user values; restoring writes them back and resets parameters
//! that had none. Activation waits for `ParameterApplyStatus` without trusting a stale
//! `in-sync` (pitfall 7: the new values must show in `pg_settings`, or `applying` must have been
//! seen), or reboots and waits for `available` after seeing the reboot happen.

use super::api::{Change, GroupKind, BATCH};
use super::discovery::{self, is_default_group};
use super::Shared;
use crate::apply::journal::{Entry, KnobChange};
use crate::apply::{
    validate, wait, Activation, ApplyError, Previous, Snapshot, Target, WriteError,
};
use crate::error::{Error, Kind, Result};
use crate::pg::queries::{self, Setting};
use crate::pg::Pg;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the apply polls DescribeDBInstances.
const POLL: Duration = Duration::from_secs(3);
/// Instance states that end a wait for `available` with an error.
const FAILED_STATES: &[&str] = &[
    "deleted",
    "deleting",
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
];

/// Where each knob goes and how, kept in the journal so a rollback after a crash needs no
/// lookup.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Placement {
    pub instance: String,
    pub group: String,
    pub cluster_group: Option<String>,
    /// Per knob, in the entry's order.
    pub kinds: Vec<GroupKind>,
    pub methods: Vec<String>,
}

impl Placement {
    fn group_of(&self, k: GroupKind) -> &str {
        match k {
            GroupKind::Instance => &self.group,
            GroupKind::Cluster => self.cluster_group.as_deref().unwrap_or(&self.group),
        }
    }
}

/// Parameter definitions (name → ApplyType) of the groups in use.
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    pub group: String,
    pub cluster_group: Option<String>,
    pub instance: HashMap<String, String>,
    pub cluster: HashMap<String, String>,
}

pub struct RdsTarget {
    sh: Arc<Shared>,
    /// Set by `restore`: the next activation waits for the previous values, not the new ones.
    restoring: AtomicBool,
}

pub fn default_group_error(group: &str) -> ApplyError {
    ApplyError::typed(
        "default_parameter_group",
        format!("cannot apply config: instance uses default parameter group {group:?} which AWS does not allow modifying; attach a custom parameter group to the instance"),
    )
}

fn method_word(static_: bool) -> &'static str {
    if static_ {
        "pending-reboot"
    } else {
        "immediate"
    }
}

impl RdsTarget {
    pub fn new(sh: Arc<Shared>) -> Self {
        RdsTarget {
            sh,
            restoring: AtomicBool::new(false),
        }
    }

    fn deadline(&self) -> Duration {
        self.sh.deadline
    }

    /// Loads (once per group) the ApplyType of every parameter of the groups in use.
    fn definitions(&self) -> Result<Definitions> {
        let info = self.sh.info();
        let group = info
            .group()
            .ok_or_else(|| {
                Error::other(format!(
                    "instance {} has no DB parameter group",
                    info.instance.identifier
                ))
            })?
            .to_string();
        let cg = info.cluster_group().map(str::to_string);
        let mut defs = self.sh.defs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = defs
            .as_ref()
            .filter(|d| d.group == group && d.cluster_group == cg)
        {
            return Ok(d.clone());
        }
        let load = |kind: GroupKind, g: &str| -> Result<HashMap<String, String>> {
            let list = self.sh.api.retrying(
                &format!("reading the parameter definitions of {}", kind.describe(g)),
                Duration::from_secs(60),
                || self.sh.api.parameters(kind, g, None),
            )?;
            Ok(list
                .into_iter()
                .filter_map(|p| Some((p.name.to_ascii_lowercase(), p.apply_type?)))
                .collect())
        };
        let d = Definitions {
            instance: load(GroupKind::Instance, &group)?,
            cluster: match &cg {
                Some(c) => load(GroupKind::Cluster, c)?,
                None => HashMap::new(),
            },
            group,
            cluster_group: cg,
        };
        *defs = Some(d.clone());
        Ok(d)
    }

    fn apply_type<'a>(defs: &'a Definitions, name: &str) -> Option<&'a str> {
        let n = name.to_ascii_lowercase();
        defs.instance
            .get(&n)
            .or_else(|| defs.cluster.get(&n))
            .map(String::as_str)
    }

    fn placement(&self, knobs: &[KnobChange]) -> Result<Placement> {
        let defs = self.definitions()?;
        let info = self.sh.info();
        let mut p = Placement {
            instance: info.instance.identifier.clone(),
            group: defs.group.clone(),
            cluster_group: defs.cluster_group.clone(),
            ..Placement::default()
        };
        for k in knobs {
            let n = k.name.to_ascii_lowercase();
            // Cluster-level only: not a parameter of the instance group but of the cluster's.
            let kind = if defs.cluster_group.is_some()
                && !defs.instance.contains_key(&n)
                && defs.cluster.contains_key(&n)
            {
                GroupKind::Cluster
            } else {
                GroupKind::Instance
            };
            let static_ = match Self::apply_type(&defs, &n) {
                Some(t) => t == "static",
                None => k.context == "postmaster",
            };
            p.kinds.push(kind);
            p.methods.push(method_word(static_).to_string());
        }
        Ok(p)
    }

    /// Writes `values[i]` (or resets when None) for knob indexes `idx`, in list order, in
    /// batches of at most 20 per group; returns how many (from the start of `idx`) may have
    /// been written when a batch fails.
    fn put(
        &self,
        pl: &Placement,
        items: &[(usize, String, Option<String>)],
    ) -> std::result::Result<(), WriteError> {
        // One deadline for the whole write, however many batches it takes.
        let until = Instant::now() + self.deadline();
        let mut i = 0;
        while i < items.len() {
            let kind = pl.kinds[items[i].0];
            let reset = items[i].2.is_none();
            let mut j = i;
            while j < items.len()
                && j - i < BATCH
                && pl.kinds[items[j].0] == kind
                && items[j].2.is_none() == reset
            {
                j += 1;
            }
            let batch = &items[i..j];
            let group = pl.group_of(kind);
            let what = format!(
                "{} {} on {} ({})",
                if reset { "Reset" } else { "Modify" },
                batch.len(),
                kind.describe(group),
                batch
                    .iter()
                    .map(|b| b.1.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut ambiguous = false;
            let r = self.sh.api.retrying_until(&what, until, || {
                let r = if reset {
                    let names: Vec<(String, &'static str)> = batch
                        .iter()
                        .map(|(x, n, _)| {
                            (
                                n.clone(),
                                if pl.methods[*x] == "pending-reboot" {
                                    "pending-reboot"
                                } else {
                                    "immediate"
                                },
                            )
                        })
                        .collect();
                    self.sh.api.reset(kind, group, &names)
                } else {
                    let changes: Vec<Change> = batch
                        .iter()
                        .map(|(x, n, v)| Change {
                            name: n.clone(),
                            value: v.clone().unwrap_or_default(),
                            method: if pl.methods[*x] == "pending-reboot" {
                                "pending-reboot"
                            } else {
                                "immediate"
                            },
                        })
                        .collect();
                    self.sh.api.modify(kind, group, &changes)
                };
                // Throttled: refused before doing anything; a 5xx or a lost answer may have
                // written the batch.
                ambiguous = r
                    .as_ref()
                    .err()
                    .is_some_and(|e| super::api::transient(e) && !super::api::throttled(e));
                r
            });
            if let Err(e) = r {
                // A definite refusal wrote nothing of this batch; a lost answer may have.
                return Err(WriteError {
                    written: if ambiguous { j } else { i },
                    error: e,
                });
            }
            log::info!("{what}: done");
            i = j;
        }
        Ok(())
    }

    /// Waits until no group we wrote to is `applying`. For a reload, the new values must also
    /// show in `pg_settings` (or `applying` must have been seen and ended): a stale `in-sync`
    /// right after the Modify call is not trusted.
    fn wait_settled(
        &self,
        pg: &Pg,
        knobs: &[KnobChange],
        pl: &Placement,
        confirm: bool,
        deadline: Duration,
    ) -> Result<()> {
        let restoring = self.restoring.load(Ordering::SeqCst);
        let uses_cluster = pl.kinds.contains(&GroupKind::Cluster);
        let mut seen_applying = false;
        let mut polls = 0;
        let start = Instant::now();
        wait::until(
            &format!("the parameter group {} to apply the change", pl.group),
            deadline,
            POLL,
            |last| {
                polls += 1;
                let inst = match self.sh.api.describe_instance(&pl.instance) {
                    Ok(i) => i,
                    Err(e) => {
                        *last = e.to_string();
                        return Ok(None);
                    }
                };
                let mut states = vec![inst
                    .groups
                    .iter()
                    .find(|g| g.name == pl.group)
                    .map(|g| g.apply_status.clone().unwrap_or_default())
                    .unwrap_or_else(|| "missing".into())];
                if uses_cluster {
                    if let Some(c) = inst
                        .cluster
                        .as_deref()
                        .and_then(|c| self.sh.api.describe_cluster(c).ok())
                    {
                        if let Some((_, _, s)) =
                            c.members.iter().find(|(i, _, _)| *i == pl.instance)
                        {
                            states.push(s.clone().unwrap_or_else(|| "in-sync".into()));
                        }
                    }
                }
                *last = format!("ParameterApplyStatus {}", states.join(", "));
                for s in &states {
                    match s.as_str() {
                        "applying" => {
                            seen_applying = true;
                            return Ok(None);
                        }
                        "in-sync" | "pending-reboot" => {}
                        "missing" => return Ok(None),
                        "failed-to-apply" => {
                            return Err(Error::other(format!(
                                "parameter group {} is in an invalid state (failed-to-apply)",
                                pl.group
                            )))
                        }
                        other => {
                            return Err(Error::other(format!(
                                "parameter group {} has apply status {other:?}",
                                pl.group
                            )))
                        }
                    }
                }
                if !confirm || seen_applying {
                    return Ok(Some(()));
                }
                match self.shows(pg, knobs, pl, restoring) {
                    Ok(None) => Ok(Some(())),
                    // Nothing confirmable (backend-only parameters): settle after a while.
                    Ok(Some(_))
                        if polls >= 3
                            && start.elapsed() >= Duration::from_secs(6)
                            && !self.confirmable(knobs, pl) =>
                    {
                        Ok(Some(()))
                    }
                    Ok(Some(why)) => {
                        *last = format!("{last}; {why}");
                        Ok(None)
                    }
                    Err(e) => {
                        *last = format!("{last}; reading pg_settings: {e}");
                        Ok(None)
                    }
                }
            },
        )
    }

    fn confirmable(&self, knobs: &[KnobChange], pl: &Placement) -> bool {
        knobs.iter().enumerate().any(|(i, k)| {
            pl.methods.get(i).is_some_and(|m| m == "immediate") && !k.context.ends_with("backend")
        })
    }

    /// None when every dynamic, session-visible knob shows its expected value.
    fn shows(
        &self,
        pg: &Pg,
        knobs: &[KnobChange],
        pl: &Placement,
        previous: bool,
    ) -> Result<Option<String>> {
        let mut c = pg.conn()?;
        let settings: HashMap<String, Setting> = queries::pg_settings(&mut c)?
            .into_iter()
            .map(|s| (s.name.to_ascii_lowercase(), s))
            .collect();
        for (i, k) in knobs.iter().enumerate() {
            if pl.methods.get(i).is_none_or(|m| m != "immediate") || k.context.ends_with("backend")
            {
                continue;
            }
            let want = if previous {
                &k.previous_setting
            } else {
                &k.new_value
            };
            let Some(s) = settings.get(&k.name.to_ascii_lowercase()) else {
                continue;
            };
            let same = match (
                validate::normalise(s, &s.setting),
                validate::normalise(s, want),
            ) {
                (Ok(a), Ok(b)) => a.same(&b),
                _ => s.setting == *want,
            };
            if !same {
                return Ok(Some(format!("{} is still {:?}", k.name, s.setting)));
            }
        }
        Ok(None)
    }

    fn reboot_and_wait(&self, pg: &Pg, pl: &Placement, deadline: Duration) -> Result<()> {
        let started_before = pg
            .conn()
            .ok()
            .and_then(|mut c| queries::postmaster_start_time(&mut c).ok());
        let t0 = Instant::now();
        self.sh.api.retrying(
            &format!("RebootDBInstance {}", pl.instance),
            deadline,
            || self.sh.api.reboot(&pl.instance),
        )?;
        log::info!("RebootDBInstance {} accepted", pl.instance);
        let mut seen_reboot = false;
        let left = deadline.saturating_sub(t0.elapsed());
        wait::until(
            &format!("instance {} to reboot and be available", pl.instance),
            left,
            POLL,
            |last| {
                let inst = match self.sh.api.describe_instance(&pl.instance) {
                    Ok(i) => i,
                    Err(e) => {
                        *last = e.to_string();
                        return Ok(None);
                    }
                };
                *last = format!("DBInstanceStatus {}", inst.status);
                if FAILED_STATES.contains(&inst.status.as_str()) {
                    return Err(Error::other(format!(
                        "instance {} is {} after the reboot",
                        pl.instance, inst.status
                    )));
                }
                if inst.status != "available" {
                    seen_reboot = true;
                    return Ok(None);
                }
                // `available` before the reboot started is stale (pitfall 7): accept it only once the
                // reboot was seen, or PostgreSQL has a new start time.
                if seen_reboot {
                    return Ok(Some(()));
                }
                let now = pg
                    .conn()
                    .ok()
                    .and_then(|mut c| queries::postmaster_start_time(&mut c).ok());
                match (&started_before, &now) {
                    (Some(a), Some(b)) if a != b => Ok(Some(())),
                    (None, Some(_)) => Ok(Some(())),
                    _ => Ok(None),
                }
            },
        )
    }
}

impl Target for RdsTarget {
    fn describe(&self) -> String {
        let info = self.sh.info();
        let mut d = format!(
            "RDS instance {} (parameter group {}",
            info.instance.identifier,
            info.group().unwrap_or("?")
        );
        if let Some(c) = info.cluster_group() {
            d.push_str(&format!(", cluster parameter group {c}"));
        }
        d.push(')');
        d
    }

    fn preflight(&self) -> std::result::Result<(), ApplyError> {
        // No AWS call before this check (adapters.md §1.4 step 2).
        let info = self.sh.info();
        match info.group() {
            Some(g) if is_default_group(g) => return Err(default_group_error(g)),
            Some(_) => {}
            None => {
                return Err(ApplyError::config(format!(
                    "instance {} has no DB parameter group; nothing was changed",
                    info.instance.identifier
                )))
            }
        }
        if let Some(c) = info.cluster_group().filter(|c| is_default_group(c)) {
            log::debug!("cluster parameter group {c} is a default group: cluster-level parameters cannot be changed");
        }
        self.definitions()
            .map(|_| ())
            .map_err(|e| ApplyError::config(format!("{e}; nothing was changed")))
    }

    fn needs_restart(&self, s: &Setting) -> bool {
        let defs = self.sh.defs.lock().unwrap_or_else(|p| p.into_inner());
        match defs.as_ref().and_then(|d| Self::apply_type(d, &s.name)) {
            Some(t) => t == "static",
            None => s.context == "postmaster",
        }
    }

    fn settle(&self) -> Duration {
        // `activate` already saw the values in pg_settings (or AWS finish applying).
        Duration::from_secs(30)
    }

    fn snapshot(&self, _pg: &Pg, knobs: &[KnobChange]) -> Result<Snapshot> {
        // Fresh facts before writing (§1.4 step 3): the group may have been swapped.
        let prev = self.sh.info();
        let info = discovery::fetch(
            &self.sh.api,
            &self.sh.cfg.database_identifier,
            self.sh.aurora,
            Some(&prev),
        )
        .map_err(|e| Error::from(e).context("failed to refresh DB info before apply"))?;
        self.sh.set_info(info.clone());
        if let Some(g) = info.group().filter(|g| is_default_group(g)) {
            return Err(Error::other(default_group_error(g).message));
        }
        let pl = self.placement(knobs)?;
        let mut user: HashMap<(GroupKind, String), String> = HashMap::new();
        for kind in [GroupKind::Instance, GroupKind::Cluster] {
            if !pl.kinds.contains(&kind) {
                continue;
            }
            let g = pl.group_of(kind).to_string();
            let list = self.sh.api.retrying(
                &format!("reading the user values of {}", kind.describe(&g)),
                self.deadline(),
                || self.sh.api.parameters(kind, &g, Some("user")),
            )?;
            for p in list {
                // Some answers ignore the Source filter: keep only user values.
                if p.source.as_deref().is_none_or(|s| s == "user") {
                    if let Some(v) = p.value {
                        user.insert((kind, p.name.to_ascii_lowercase()), v);
                    }
                }
            }
        }
        let previous = knobs
            .iter()
            .zip(&pl.kinds)
            .map(
                |(k, kind)| match user.get(&(*kind, k.name.to_ascii_lowercase())) {
                    Some(v) => Previous::Value(v.clone()),
                    None => Previous::Absent,
                },
            )
            .collect();
        Ok(Snapshot {
            previous,
            auto_conf_path: None,
            auto_conf_text: None,
            state: Some(serde_json::to_value(&pl).map_err(|e| Error::other(e.to_string()))?),
        })
    }

    fn write(&self, _pg: &Pg, knobs: &[KnobChange]) -> std::result::Result<(), WriteError> {
        self.restoring.store(false, Ordering::SeqCst);
        let pl = self.placement(knobs).map_err(|e| WriteError {
            written: 0,
            error: e,
        })?;
        let items: Vec<(usize, String, Option<String>)> = knobs
            .iter()
            .enumerate()
            .map(|(i, k)| (i, k.name.clone(), Some(k.new_value.clone())))
            .collect();
        self.put(&pl, &items)
    }

    fn activate(
        &self,
        pg: &Pg,
        how: Activation,
        knobs: &[KnobChange],
        deadline: Duration,
    ) -> Result<()> {
        let pl = self.placement(knobs)?;
        let r = match how {
            Activation::Reload => self.wait_settled(pg, knobs, &pl, true, deadline),
            Activation::Restart => {
                let t0 = Instant::now();
                self.wait_settled(pg, knobs, &pl, false, deadline)
                    .and_then(|_| {
                        self.reboot_and_wait(pg, &pl, deadline.saturating_sub(t0.elapsed()))
                    })
            }
        };
        if how == Activation::Restart || r.is_ok() {
            self.restoring.store(false, Ordering::SeqCst);
        }
        r.map_err(|e| {
            if e.kind == Kind::Interrupted {
                e
            } else {
                e.context(format!("on {}", self.describe()))
            }
        })
    }

    /// A reboot RDS accepted goes on without us: wait until the instance is `available`
    /// again. Just after the request a stale `available` is possible, so within the first
    /// minute it counts only once PostgreSQL shows it restarted.
    fn settle_restart(&self, pg: &Pg, entry: &Entry, deadline: Duration) -> Result<()> {
        let id = self.sh.info().instance.identifier.clone();
        let started = entry.restart_started.unwrap_or(0);
        wait::until(
            &format!("instance {id} to be available after the interrupted reboot"),
            deadline,
            POLL,
            |last| {
                let inst = match self.sh.api.describe_instance(&id) {
                    Ok(i) => i,
                    Err(e) => {
                        *last = e.to_string();
                        return Ok(None);
                    }
                };
                *last = format!("DBInstanceStatus {}", inst.status);
                if FAILED_STATES.contains(&inst.status.as_str()) {
                    return Err(Error::other(format!("instance {id} is {}", inst.status)));
                }
                if inst.status != "available" {
                    return Ok(None);
                }
                let young = crate::apply::journal::now_unix() - started < 60;
                Ok(
                    (!young || crate::apply::inflight::restarted_since(pg, started) == Some(true))
                        .then_some(()),
                )
            },
        )?;
        wait::ready(pg, deadline)
    }

    fn restore(
        &self,
        _pg: &Pg,
        entry: &Entry,
        knobs: &[KnobChange],
        _pg_up: bool,
    ) -> Result<String> {
        let pl: Placement = match entry.target_state.clone().map(serde_json::from_value) {
            Some(Ok(p)) => p,
            _ => self.placement(&entry.knobs)?,
        };
        // `knobs` is a prefix of the entry's knobs: the placement indexes line up.
        let mut items = Vec::new();
        let (mut put_back, mut reset) = (Vec::new(), Vec::new());
        for (i, k) in knobs.iter().enumerate().rev() {
            let v = match &k.previous {
                Previous::Value(v) => Some(v.clone()),
                Previous::Unknown => Some(k.previous_setting.clone()),
                Previous::Absent => None,
            };
            if v.is_some() {
                put_back.push(k.name.clone())
            } else {
                reset.push(k.name.clone())
            }
            items.push((i, k.name.clone(), v));
        }
        self.put(&pl, &items)
            .map_err(|w| w.error.context("restoring the previous parameter values"))?;
        self.restoring.store(true, Ordering::SeqCst);
        let mut how = Vec::new();
        if !put_back.is_empty() {
            how.push(format!(
                "previous values of {} written back",
                put_back.join(", ")
            ));
        }
        if !reset.is_empty() {
            how.push(format!(
                "{} reset to the engine default (ResetDBParameterGroup)",
                reset.join(", ")
            ));
        }
        Ok(format!("{} in {}", how.join("; "), pl.group))
    }
}
