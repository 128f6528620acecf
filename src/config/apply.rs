//! The `apply:` section: local policy for configuration changes (allow/deny lists, freeze,
//! restart budget, maintenance window, timeouts). Every key has a `DBT_APPLY_*` equivalent.

use super::Sources;
use std::time::Duration;

pub const DEFAULT_MAX_RESTARTS_PER_DAY: u32 = 6;
pub const DEFAULT_RESTART_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// The keys read below (unknown ones are refused: `config::keys`).
pub const KEYS: super::keys::Keys = super::keys::Keys {
    section: "apply",
    file: &[
        "allow",
        "deny",
        "frozen",
        "max_restarts_per_day",
        "maintenance_window",
        "restart_timeout",
        "ready_timeout",
        "auto_conf_path",
        "history_limit",
    ],
    env: &[
        "DBT_APPLY_ALLOW",
        "DBT_APPLY_DENY",
        "DBT_APPLY_FROZEN",
        "DBT_APPLY_MAX_RESTARTS_PER_DAY",
        "DBT_APPLY_MAINTENANCE_WINDOW",
        "DBT_APPLY_RESTART_TIMEOUT",
        "DBT_APPLY_READY_TIMEOUT",
        "DBT_APPLY_AUTO_CONF_PATH",
        "DBT_APPLY_HISTORY_LIMIT",
    ],
};

#[derive(Clone, Debug)]
pub struct ApplyConfig {
    /// Parameters the operator explicitly allows although the default deny list refuses them.
    pub allow: Vec<String>,
    /// Parameters never applied (exact names, or globs with `*`). Beats `allow`.
    pub deny: Vec<String>,
    /// Nothing is applied while frozen.
    pub frozen: bool,
    /// Restarts allowed per rolling 24 hours (0: none).
    pub max_restarts_per_day: u32,
    /// UTC windows in which restarts may happen (`"sat,sun 02:00-05:00"`, `"01:00-03:00"`);
    /// empty: any time.
    pub maintenance_window: Vec<String>,
    /// Upper bound for the restart script / systemctl.
    pub restart_timeout: Duration,
    /// Upper bound for PostgreSQL to accept connections after a restart.
    pub ready_timeout: Duration,
    /// Where `postgresql.auto.conf` is, for rollbacks while PostgreSQL is down; default
    /// `<data_directory>/postgresql.auto.conf` as reported by the server.
    pub auto_conf_path: Option<String>,
    /// Apply attempts kept in the local history (`dbtune-agent history`).
    pub history_limit: usize,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            frozen: false,
            max_restarts_per_day: DEFAULT_MAX_RESTARTS_PER_DAY,
            maintenance_window: Vec::new(),
            restart_timeout: DEFAULT_RESTART_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            auto_conf_path: None,
            history_limit: crate::apply::history::DEFAULT_LIMIT,
        }
    }
}

impl ApplyConfig {
    pub fn from_sources(src: &Sources) -> Result<ApplyConfig, String> {
        let mut errs = Vec::new();
        let mut note = |r: Result<(), String>| {
            if let Err(e) = r {
                errs.push(e)
            }
        };
        let mut c = ApplyConfig::default();
        note(
            src.string_list(&["apply", "allow"], Some("DBT_APPLY_ALLOW"))
                .map(|v| c.allow = lower(v)),
        );
        note(
            src.string_list(&["apply", "deny"], Some("DBT_APPLY_DENY"))
                .map(|v| c.deny = lower(v)),
        );
        note(
            src.bool(&["apply", "frozen"], Some("DBT_APPLY_FROZEN"), false)
                .map(|v| c.frozen = v),
        );
        note(
            src.int(
                &["apply", "max_restarts_per_day"],
                Some("DBT_APPLY_MAX_RESTARTS_PER_DAY"),
                DEFAULT_MAX_RESTARTS_PER_DAY as i64,
            )
            .and_then(|v| {
                u32::try_from(v)
                    .ok()
                    .filter(|n| *n <= 1000)
                    .map(|n| c.max_restarts_per_day = n)
                    .ok_or_else(|| {
                        format!("apply.max_restarts_per_day (DBT_APPLY_MAX_RESTARTS_PER_DAY): {v} is out of range (expected 0 to 1000)")
                    })
            }),
        );
        note(
            src.string_list(
                &["apply", "maintenance_window"],
                Some("DBT_APPLY_MAINTENANCE_WINDOW"),
            )
            .and_then(|v| {
                crate::apply::policy::Windows::parse(&v).map_err(|e| {
                    format!("apply.maintenance_window (DBT_APPLY_MAINTENANCE_WINDOW): {e}")
                })?;
                c.maintenance_window = v;
                Ok(())
            }),
        );
        note(
            seconds(
                src,
                "restart_timeout",
                "DBT_APPLY_RESTART_TIMEOUT",
                DEFAULT_RESTART_TIMEOUT,
            )
            .map(|d| c.restart_timeout = d),
        );
        note(
            seconds(
                src,
                "ready_timeout",
                "DBT_APPLY_READY_TIMEOUT",
                DEFAULT_READY_TIMEOUT,
            )
            .map(|d| c.ready_timeout = d),
        );
        note(
            src.string(
                &["apply", "auto_conf_path"],
                Some("DBT_APPLY_AUTO_CONF_PATH"),
            )
            .map(|v| c.auto_conf_path = v),
        );
        note(
            src.int(
                &["apply", "history_limit"],
                Some("DBT_APPLY_HISTORY_LIMIT"),
                crate::apply::history::DEFAULT_LIMIT as i64,
            )
            .and_then(|v| {
                usize::try_from(v)
                    .ok()
                    .filter(|n| (2..=100_000).contains(n))
                    .map(|n| c.history_limit = n)
                    .ok_or_else(|| {
                        format!("apply.history_limit (DBT_APPLY_HISTORY_LIMIT): {v} is out of range (expected 2 to 100000)")
                    })
            }),
        );
        if errs.is_empty() {
            Ok(c)
        } else {
            Err(errs.join("; "))
        }
    }
}

fn lower(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// A timeout in whole seconds, 1 s to 1 h: never unbounded.
fn seconds(src: &Sources, key: &str, env: &str, default: Duration) -> Result<Duration, String> {
    let v = src.int(&["apply", key], Some(env), default.as_secs() as i64)?;
    if !(1..=3600).contains(&v) {
        return Err(format!(
            "apply.{key} ({env}): {v} is out of range (expected 1 to 3600 seconds)"
        ));
    }
    Ok(Duration::from_secs(v as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, Sources};

    #[test]
    fn defaults_and_env_overrides() {
        let s = Sources::from_yaml(
            "apply:\n  allow: [Archive_Command]\n  frozen: true\n",
            Env::from_pairs([("DBT_APPLY_MAX_RESTARTS_PER_DAY", "2")]),
        )
        .unwrap();
        let c = ApplyConfig::from_sources(&s).unwrap();
        assert_eq!(c.allow, vec!["archive_command"]);
        assert!(c.frozen);
        assert_eq!(c.max_restarts_per_day, 2);
        assert_eq!(c.ready_timeout, DEFAULT_READY_TIMEOUT);
    }

    #[test]
    fn bad_values_name_the_key() {
        let s = Sources::from_yaml(
            "apply:\n  restart_timeout: 0\n  maintenance_window: [\"25:00-26:00\"]\n",
            Env::from_pairs(Vec::<(String, String)>::new()),
        )
        .unwrap();
        let e = ApplyConfig::from_sources(&s).unwrap_err();
        assert!(
            e.contains("apply.restart_timeout (DBT_APPLY_RESTART_TIMEOUT): 0 is out of range"),
            "{e}"
        );
        assert!(e.contains("apply.maintenance_window"), "{e}");
    }
}
