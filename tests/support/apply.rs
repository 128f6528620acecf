//! Helpers for the apply tests: a pool, a private state directory, recommendations, restart
//! scripts around the cluster's `pg_ctl restart`, and readers for what PostgreSQL shows.
#![allow(dead_code)]

use super::pgcluster::PgCluster;
use dbtune_agent::adapter::pgprem::restart::ScriptRestarter;
use dbtune_agent::config::apply::ApplyConfig;
use dbtune_agent::model::{KnobApplication, Recommendation, RecommendedKnob};
use dbtune_agent::pg::{Pg, SessionLimits};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty directory under the temp dir (state dirs, scripts).
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dbtune-apply-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn pool(c: &PgCluster) -> Pg {
    Pg::new(&c.url(), 2, SessionLimits::default()).unwrap()
}

pub fn policy() -> ApplyConfig {
    ApplyConfig {
        ready_timeout: Duration::from_secs(60),
        restart_timeout: Duration::from_secs(90),
        ..ApplyConfig::default()
    }
}

pub fn knob(name: &str, setting: Value, vartype: &str) -> RecommendedKnob {
    RecommendedKnob {
        name: name.into(),
        setting,
        unit: None,
        vartype: vartype.into(),
        context: String::new(),
    }
}

/// A recommendation applying every knob given, in order.
pub fn rec(knobs: Vec<RecommendedKnob>) -> Recommendation {
    Recommendation {
        knobs_overrides: knobs.iter().map(|k| k.name.clone()).collect(),
        config: knobs,
        knob_application: KnobApplication::Restart,
    }
}

/// `pg_settings.setting` and `pending_restart` of `name`, read on a new session.
pub fn setting(c: &PgCluster, name: &str) -> (String, bool) {
    let mut cl = c.client();
    let r = cl
        .query_one(
            "SELECT setting, pending_restart FROM pg_settings WHERE name = $1",
            &[&name],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

pub fn auto_conf(c: &PgCluster) -> String {
    std::fs::read_to_string(c.data_dir().join("postgresql.auto.conf")).unwrap()
}

/// How often the server logged a configuration reload.
pub fn reload_count(c: &PgCluster) -> usize {
    std::fs::read_to_string(&c.log)
        .unwrap_or_default()
        .matches("received SIGHUP, reloading configuration files")
        .count()
}

/// An executable script in `dir`: appends a line to `dir/restarts` (the count of runs), then
/// runs `body`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    let counter = dir.join("restarts");
    std::fs::write(
        &p,
        format!("#!/bin/sh\necho run >> {}\n{body}\n", counter.display()),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

pub fn script_runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("restarts"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A restart script that runs the cluster's `pg_ctl restart` and exits with its status
/// (or with `exit_code` when given).
pub fn pg_ctl_restarter(c: &PgCluster, dir: &Path, exit_code: Option<i32>) -> ScriptRestarter {
    let body = match exit_code {
        None => c.restart_command(),
        Some(code) => format!("{}\nexit {code}", c.restart_command()),
    };
    ScriptRestarter {
        path: script(dir, "restart.sh", &body),
        timeout: Duration::from_secs(90),
    }
}

pub fn start_time(c: &PgCluster) -> String {
    let mut cl = c.client();
    cl.query_one("SELECT pg_postmaster_start_time()::text", &[])
        .unwrap()
        .get(0)
}

pub fn journal_phase(state: &Path) -> Option<String> {
    let t = std::fs::read_to_string(state.join("apply-journal.json")).ok()?;
    let v: Value = serde_json::from_str(&t).unwrap();
    v["phase"].as_str().map(str::to_string)
}
