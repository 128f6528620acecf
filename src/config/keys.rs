//! Unknown configuration keys. Each section declares the keys its reader reads ([`Keys`], a
//! `KEYS` constant beside the reader in the section's own `config.rs`; providers list theirs
//! in `adapter::config_keys`, an exhaustive match, so a new provider cannot forget). The file
//! and the `DBT_*` environment are checked against the union of every declaration (all
//! providers, whichever runs: the Go agent ignores other providers' sections) and of what the
//! readers really asked for. Unknown keys under `apply:` and unknown `DBT_APPLY_*` variables
//! are errors (they are safety settings: a misspelt deny list must not silently allow);
//! anything else unknown is a warning. Each names the closest known key.

use super::Sources;
use serde_norway::Value;
use std::collections::BTreeSet;

/// One section's keys. `file`: relative to `section` (lower-case; `*` = the section's reader
/// checks everything under it itself). `env`: variables (`PREFIX_*` = the reader checks those).
pub struct Keys {
    pub section: &'static str,
    pub file: &'static [&'static str],
    pub env: &'static [&'static str],
}

/// The core keys (protocol.md §2.3). The `postgresql` section may also be spelt `postgres:`
/// or left out (keys at the root): both are accepted for these.
pub const CORE: Keys = Keys {
    section: "",
    file: &[
        "debug",
        "disable_checks",
        "state_dir",
        "dbtune.server_url",
        "dbtune.api_key",
        "dbtune.database_id",
        "guardrail_settings.memory_threshold",
    ],
    env: &[
        "DBT_DEBUG",
        "DBT_DISABLE_CHECKS",
        "DBT_STATE_DIR",
        "DBT_DBTUNE_SERVER_URL",
        "DBT_DBTUNE_API_KEY",
        "DBT_DBTUNE_DATABASE_ID",
        "DBT_MEMORY_THRESHOLD",
        // Set by the Go agent's docker-compose template; read by nothing, accepted.
        "DBT_ADAPTER",
    ],
};

pub const POSTGRESQL: Keys = Keys {
    section: "postgresql",
    file: &[
        "connection_url",
        "service_name",
        "restart_script_path",
        "allow_restart",
        "pool_size",
        "include_queries",
        "maximum_query_text_length",
    ],
    env: &[
        "DBT_POSTGRESQL_CONNECTION_URL",
        "DBT_POSTGRESQL_SERVICE_NAME",
        "DBT_POSTGRESQL_RESTART_SCRIPT_PATH",
        "DBT_POSTGRESQL_ALLOW_RESTART",
        "DBT_POSTGRESQL_POOL_SIZE",
        "DBT_POSTGRESQL_INCLUDE_QUERIES",
        "DBT_POSTGRESQL_MAXIMUM_QUERY_TEXT_LENGTH",
    ],
};

/// Every declaration.
pub fn all() -> Vec<&'static Keys> {
    let mut v: Vec<&'static Keys> = vec![
        &CORE,
        &POSTGRESQL,
        &super::apply::KEYS,
        &super::audit::KEYS,
        &super::collectors::KEYS,
    ];
    for p in crate::adapter::select::PRECEDENCE {
        v.extend(crate::adapter::config_keys(p).iter().copied());
    }
    v
}

/// What the check found: errors refuse the configuration, warnings are logged and shown by
/// `--check`.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

struct Known {
    /// Canonical dotted keys (suggestions come from these).
    keys: BTreeSet<String>,
    /// Accepted spellings: the canonical keys, their aliases and what the readers read.
    accepted: BTreeSet<String>,
    /// Subtrees checked by their own reader.
    subtrees: Vec<String>,
    env: BTreeSet<String>,
    env_prefixes: Vec<String>,
}

fn known(src: &Sources) -> Known {
    let mut k = Known {
        keys: BTreeSet::new(),
        accepted: src.reads(),
        subtrees: Vec::new(),
        env: BTreeSet::new(),
        env_prefixes: Vec::new(),
    };
    for s in all() {
        for f in s.file {
            let full = if s.section.is_empty() {
                f.to_string()
            } else {
                format!("{}.{f}", s.section)
            };
            if *f == "*" {
                k.subtrees.push(s.section.to_string());
                continue;
            }
            if s.section == "postgresql" {
                k.accepted.insert(format!("postgres.{f}"));
                k.accepted.insert(f.to_string());
            }
            k.accepted.insert(full.clone());
            k.keys.insert(full);
        }
        for e in s.env {
            match e.strip_suffix('*') {
                Some(p) => k.env_prefixes.push(p.to_string()),
                None => {
                    k.env.insert(e.to_string());
                }
            }
        }
    }
    k
}

/// Checks the file's keys and the `DBT_*` variables.
pub fn check(src: &Sources) -> Findings {
    let k = known(src);
    let mut f = Findings::default();
    let mut unknown = Vec::new();
    walk(&src.root, "", &k, &mut unknown);
    for path in unknown {
        let segs: Vec<&str> = path.split('.').collect();
        let hint = suggest_key(&path, &k.keys)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        let label = src.label(&segs, None);
        if path.starts_with("apply.") {
            f.errors.push(format!(
                "{label}: unknown key in the apply section{hint}; apply settings are safety settings, so an unknown one is refused rather than ignored"
            ));
        } else {
            f.warnings
                .push(format!("{label}: unknown configuration key, ignored{hint}"));
        }
    }
    for (var, _) in src.env.with_prefix("DBT_") {
        if k.env.contains(var) || k.env_prefixes.iter().any(|p| var.starts_with(p.as_str())) {
            continue;
        }
        let hint = closest(var, k.env.iter().map(String::as_str), 0)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        if var.starts_with("DBT_APPLY_") {
            f.errors.push(format!(
                "{var}: unknown variable{hint}; DBT_APPLY_* are safety settings, so an unknown one is refused rather than ignored"
            ));
        } else {
            f.warnings
                .push(format!("{var}: unknown DBT_* variable, ignored{hint}"));
        }
    }
    f
}

fn walk(v: &Value, prefix: &str, k: &Known, out: &mut Vec<String>) {
    let Some(m) = v.as_mapping() else { return };
    for (key, val) in m {
        let name = match key {
            Value::String(s) => s.clone(),
            other => serde_norway::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        if k.accepted.contains(&path) || k.subtrees.contains(&path) {
            continue;
        }
        let inner = format!("{path}.");
        let is_section = k.accepted.iter().any(|a| a.starts_with(&inner));
        if is_section {
            walk(val, &path, k, out);
        } else {
            out.push(path);
        }
    }
}

/// Levenshtein distance (characters).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Distance where one name extending the other (`deny_list` / `deny`) costs one edit per
/// four extra characters (at least one), so a true typo still wins over a mere prefix.
fn distance(a: &str, b: &str) -> usize {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let d = edit_distance(a, b);
    if short.len() >= 4 && long.starts_with(short) {
        return d.min(1 + (long.len() - short.len()) / 4);
    }
    d
}

/// The closest candidate within a typo's reach (a third of the name, at least 2 edits),
/// `penalty` added to every candidate's distance.
fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
    penalty: usize,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .map(|c| (distance(name, c) + penalty, c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// For a dotted key: the same section's keys first, then any section's key with the same
/// last part (a key put in the wrong place, e.g. `memory_threshold` at the root).
fn suggest_key<'a>(path: &str, keys: &'a BTreeSet<String>) -> Option<&'a str> {
    let (parent, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    let limit = (leaf.chars().count() / 3).max(3);
    keys.iter()
        .map(|c| {
            let (cp, cl) = c.rsplit_once('.').unwrap_or(("", c));
            let moved = usize::from(cp != parent);
            (distance(leaf, cl) + moved, c.as_str())
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn find(yaml: &str, env: &[(&str, &str)]) -> Findings {
        let s = Sources::from_yaml(yaml, Env::from_pairs(env.iter().copied())).unwrap();
        check(&s)
    }

    #[test]
    fn typos_are_found_with_the_closest_key() {
        let f = find(
            "apply:\n  deny_list: [work_mem]\n  frozen_typo: true\n  deny: [x]\nmemory_treshold: 50\nallow_restarts: true\nrds:\n  aws_region: x\n  rds_parameter_group_name: old\npostgres:\n  connection_url: x\n",
            &[("DBT_APPLY_DENY_LIST", "x"), ("DBT_APPLY_FROZN", "true"), ("DBT_MEMORY_TRESHOLD", "5"), ("DBT_ADAPTER", "docker")],
        );
        let errs = f.errors.join("\n");
        let warns = f.warnings.join("\n");
        for e in [
            "apply.deny_list: unknown key in the apply section (did you mean apply.deny?)",
            "apply.frozen_typo: unknown key in the apply section (did you mean apply.frozen?)",
            "DBT_APPLY_DENY_LIST: unknown variable (did you mean DBT_APPLY_DENY?)",
            "DBT_APPLY_FROZN: unknown variable (did you mean DBT_APPLY_FROZEN?)",
        ] {
            assert!(errs.contains(e), "missing {e:?} in\n{errs}");
        }
        for w in [
            "memory_treshold: unknown configuration key, ignored (did you mean guardrail_settings.memory_threshold?)",
            "allow_restarts: unknown configuration key, ignored (did you mean postgresql.allow_restart?)",
            "DBT_MEMORY_TRESHOLD: unknown DBT_* variable, ignored (did you mean DBT_MEMORY_THRESHOLD?)",
        ] {
            assert!(warns.contains(w), "missing {w:?} in\n{warns}");
        }
        assert_eq!(f.errors.len() + f.warnings.len(), 7, "{errs}\n{warns}");
    }

    #[test]
    fn every_sample_and_every_section_is_accepted() {
        let root = env!("CARGO_MANIFEST_DIR");
        for name in ["dbtune.yaml", "dbtune.toml"] {
            let p = std::path::Path::new(root).join(name);
            let s = Sources::read(Some(&p), Env::default()).unwrap();
            let f = check(&s);
            assert!(
                f.errors.is_empty() && f.warnings.is_empty(),
                "{name}: {f:?}"
            );
        }
    }

    /// Drift: every `"DBT_…"` name the code mentions is declared by some section.
    #[test]
    fn every_variable_in_the_code_is_declared() {
        let k = known(&Sources::default());
        let mut missing = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                if p.ends_with("config/keys.rs") || p.extension().is_none_or(|x| x != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                for part in text.split("\"DBT_").skip(1) {
                    let name: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    let var = format!("DBT_{name}");
                    let declared = k.env.contains(&var)
                        || k.env_prefixes.iter().any(|p| var.starts_with(p.as_str()));
                    // Test fixtures inside #[cfg(test)] name made-up variables on purpose.
                    let in_tests = text
                        .find("#[cfg(test)]")
                        .is_some_and(|t| text.find(&format!("\"{var}")).is_some_and(|i| i > t));
                    if !declared && !in_tests && part.starts_with(&format!("{name}\"")) {
                        missing.push(format!("{var} ({})", p.display()));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "variables read but not declared: {missing:?}"
        );
    }

    /// Drift: every file key a reader asks for is declared.
    #[test]
    fn every_key_a_reader_reads_is_declared() {
        // Required keys given, so no reader stops before reading the rest.
        let yaml = "postgresql:\n  connection_url: host=h\ndbtune:\n  x: 1\napply:\n  x: 1\naudit:\n  x: 1\nrds:\n  aws_region: r\n  rds_database_identifier: d\nrds-aurora:\n  aws_region: r\n  rds_database_identifier: d\ncloudsql:\n  project_id: p\n  database_name: d\nazure_flex:\n  subscription_id: s\n  resource_group_name: r\n  server_name: n\ncnpg:\n  namespace: n\n  cluster_name: c\npatroni:\n  node_name: n\n  patroni_api_url: http://10.0.0.1:8008\ndocker:\n  container_name: c\naiven:\n  aiven_api_token: t\n  aiven_project_name: p\n  aiven_service_name: s\nguardrail_settings:\n  x: 1\n";
        let s = Sources::from_yaml(yaml, Env::default()).unwrap();
        let _ = crate::config::Config::from_sources_opts(s.clone(), None, false);
        let _ = crate::adapter::rds::config::RdsConfig::from_sources(&s, false);
        let _ = crate::adapter::rds::config::RdsConfig::from_sources(&s, true);
        let _ = crate::adapter::cloudsql::config::CloudSqlConfig::from_sources(&s);
        let _ = crate::adapter::azure_flex::config::AzureFlexConfig::from_sources(&s);
        let _ = crate::adapter::cnpg::config::CnpgConfig::from_sources(&s);
        let _ = crate::adapter::patroni::config::PatroniConfig::from_sources(&s);
        let _ = crate::adapter::docker::config::DockerConfig::from_sources(&s);
        let _ = crate::adapter::aiven::config::AivenConfig::from_sources(&s);
        let k = known(&Sources::default());
        let undeclared: Vec<String> = s
            .reads()
            .into_iter()
            .filter(|r| {
                !k.accepted.contains(r)
                    && !k
                        .subtrees
                        .iter()
                        .any(|t| r == t || r.starts_with(&format!("{t}.")))
                    && !k.accepted.iter().any(|a| a.starts_with(&format!("{r}.")))
            })
            .collect();
        assert!(
            undeclared.is_empty(),
            "read but not declared: {undeclared:?}"
        );
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(distance("deny_list", "deny"), 2);
        assert_eq!(distance("allow_restarts", "allow"), 3);
    }
}
