//! The `collectors:` section and `DBT_COLLECTOR_*` variables (collectors.md §5): per collector
//! `enabled`, `interval_seconds` (may lengthen, never shorten the default) and typed options with
//! ranges; env names matched to collectors by the longest-name conflict table, strict by default;
//! legacy `postgresql.include_queries` / `maximum_query_text_length` forwards.

use super::sources::parse_go_bool;
use super::Sources;
use serde_norway::Value as Yaml;
use std::collections::BTreeMap;

/// The section's keys: everything under `collectors:` and every `DBT_COLLECTOR_*` is checked by
/// the reader below itself (unknown collectors and fields are refused; variables by the
/// strict-env rule).
pub const KEYS: super::keys::Keys = super::keys::Keys {
    section: "collectors",
    file: &["*"],
    env: &["DBT_COLLECTOR_*"],
};

/// One collector's settings after parsing.
#[derive(Clone, Debug)]
pub struct CollectorSettings {
    pub enabled: bool,
    /// 0 = the collector's default.
    pub interval_seconds: u64,
    /// Typed extra options (`diff_limit`, `include_queries`, …) with their defaults filled in.
    pub options: BTreeMap<String, OptionValue>,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        CollectorSettings {
            enabled: true,
            interval_seconds: 0,
            options: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    Bool(bool),
    Int(i64),
}

impl CollectorSettings {
    pub fn int(&self, k: &str, default: i64) -> i64 {
        match self.options.get(k) {
            Some(OptionValue::Int(i)) => *i,
            _ => default,
        }
    }
    pub fn bool(&self, k: &str, default: bool) -> bool {
        match self.options.get(k) {
            Some(OptionValue::Bool(b)) => *b,
            _ => default,
        }
    }
    /// Settings of a collector with its typed defaults.
    pub fn defaults_for(name: &str) -> CollectorSettings {
        let mut s = CollectorSettings::default();
        for f in typed_fields(name) {
            s.options.insert(f.name.to_string(), f.default.clone());
        }
        s
    }
}

#[derive(Clone, Copy, Debug)]
enum FieldKind {
    Bool,
    Int { min: i64, max: Option<i64> },
}

struct FieldDef {
    name: &'static str,
    kind: FieldKind,
    default: OptionValue,
}

const fn int(name: &'static str, default: i64, min: i64, max: Option<i64>) -> FieldDef {
    FieldDef {
        name,
        kind: FieldKind::Int { min, max },
        default: OptionValue::Int(default),
    }
}
const fn boolean(name: &'static str, default: bool) -> FieldDef {
    FieldDef {
        name,
        kind: FieldKind::Bool,
        default: OptionValue::Bool(default),
    }
}

static PGSS_FIELDS: [FieldDef; 3] = [
    int("diff_limit", 500, 0, Some(500)),
    boolean("include_queries", true),
    int("max_query_text_length", 8192, 0, Some(8192)),
];
static PG_CLASS_FIELDS: [FieldDef; 1] = [int("backfill_batch_size", 500, 0, None)];
static PG_STATS_FIELDS: [FieldDef; 2] = [
    int("backfill_batch_size", 200, 0, None),
    boolean("include_table_data", false),
];
static CATEGORY_FIELDS: [FieldDef; 1] = [int("category_limit", 200, 0, None)];
static STATIO_FIELDS: [FieldDef; 1] = [int("backfill_batch_size", 2000, 0, None)];

fn typed_fields(collector: &str) -> &'static [FieldDef] {
    match collector {
        "pg_stat_statements" => &PGSS_FIELDS,
        "pg_class" => &PG_CLASS_FIELDS,
        "pg_stats" => &PG_STATS_FIELDS,
        "pg_stat_user_tables" | "pg_stat_user_indexes" => &CATEGORY_FIELDS,
        "pg_statio_user_indexes" => &STATIO_FIELDS,
        _ => &[],
    }
}

/// Names accepted in `collectors:` and `DBT_COLLECTOR_*` (§5.3), in registry (parse) order.
/// `ddl` and `pg_index_inventory` are real collectors but not configurable.
pub const ACCEPTED: &[&str] = &[
    "pg_stat_statements",
    "pg_class",
    "pg_stats",
    "pg_stat_user_tables",
    "pg_stat_user_indexes",
    "pg_statio_user_indexes",
    "autovacuum_count",
    "pg_attribute",
    "pg_constraint",
    "pg_database",
    "pg_index",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_replication_slots",
    "pg_type",
    "pg_stat_activity",
    "pg_stat_archiver",
    "pg_stat_bgwriter",
    "pg_stat_checkpointer",
    "pg_stat_database",
    "pg_stat_database_conflicts",
    "pg_stat_io",
    "pg_stat_progress_analyze",
    "pg_stat_progress_create_index",
    "pg_stat_progress_vacuum",
    "pg_stat_recovery_prefetch",
    "pg_stat_replication",
    "pg_stat_replication_slots",
    "pg_stat_slru",
    "pg_stat_subscription",
    "pg_stat_subscription_stats",
    "pg_stat_user_functions",
    "pg_stat_wal",
    "pg_stat_wal_receiver",
    "pg_statio_user_tables",
    "database_transactions",
    "server_uptime",
    "wait_events",
    "database_connections",
    "system_db_size",
    // Legacy metric-collector names: accepted, no effect.
    "database_transactions_per_second",
    "database_autovacuum_count",
    "pg_user_tables",
    "pg_bgwriter",
    "pg_wal",
    "database_wait_events",
    "hardware",
    "pg_checkpointer",
    "cpu_utilization",
    "memory_used",
];

/// Env-name prefix conflicts that resolve to the longer collector name (§5.4).
const CONFLICTS: &[(&str, &str)] = &[
    ("database_transactions", "database_transactions_per_second"),
    ("pg_stat_database", "pg_stat_database_conflicts"),
    ("pg_stat_replication", "pg_stat_replication_slots"),
    ("pg_stat_subscription", "pg_stat_subscription_stats"),
    ("pg_stat_wal", "pg_stat_wal_receiver"),
];

#[derive(Clone, Debug)]
enum Raw {
    Yaml(Yaml),
    Env(String),
}

#[derive(Clone, Debug, Default)]
pub struct CollectorsConfig {
    pub entries: BTreeMap<String, CollectorSettings>,
}

fn yaml_type(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "null",
        Yaml::Bool(_) => "bool",
        Yaml::Number(_) => "number",
        Yaml::String(_) => "string",
        Yaml::Sequence(_) => "list",
        Yaml::Mapping(_) => "map",
        Yaml::Tagged(_) => "tagged value",
    }
}

fn parse_bool(field: &str, v: &Raw) -> Result<bool, String> {
    let bad = |s: &str| {
        format!("{field}: cannot parse {s:?} as a boolean (expected true/false, 1/0, t/f)")
    };
    match v {
        Raw::Env(s) => parse_go_bool(s).ok_or_else(|| bad(s)),
        Raw::Yaml(Yaml::Bool(b)) => Ok(*b),
        Raw::Yaml(Yaml::String(s)) => parse_go_bool(s).ok_or_else(|| bad(s)),
        Raw::Yaml(other) => Err(format!(
            "{field}: expected a boolean, got {}",
            yaml_type(other)
        )),
    }
}

fn parse_int(field: &str, v: &Raw) -> Result<i64, String> {
    let bad = |s: &str| format!("{field}: cannot parse {s:?} as an integer");
    match v {
        Raw::Env(s) | Raw::Yaml(Yaml::String(s)) => s.trim().parse().map_err(|_| bad(s)),
        Raw::Yaml(Yaml::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
            _ => Err(bad(&n.to_string())),
        },
        Raw::Yaml(other) => Err(format!(
            "{field}: expected an integer, got {}",
            yaml_type(other)
        )),
    }
}

fn range_text(min: i64, max: Option<i64>) -> String {
    match max {
        Some(m) => format!("{min}..{m}"),
        None => format!(">= {min}"),
    }
}

fn check_range(field: &str, v: i64, min: i64, max: Option<i64>) -> Result<(), String> {
    if v < min {
        return Err(format!(
            "{field} must be >= {min} (allowed: {}), got {v}",
            range_text(min, max)
        ));
    }
    if let Some(m) = max {
        if v > m {
            return Err(format!(
                "{field} must be <= {m} (allowed: {}), got {v}",
                range_text(min, max)
            ));
        }
    }
    Ok(())
}

/// Which collector an env suffix (`pg_stat_wal_receiver_enabled`) belongs to.
fn match_env(suffix: &str) -> Result<Option<&'static str>, String> {
    let mut cands: Vec<&'static str> = ACCEPTED
        .iter()
        .copied()
        .filter(|n| suffix.starts_with(&format!("{n}_")))
        .collect();
    cands.sort_unstable();
    cands.dedup();
    match cands.len() {
        0 => Ok(None),
        1 => Ok(Some(cands[0])),
        _ => {
            let (a, b) = (cands[0], cands[1]);
            match CONFLICTS
                .iter()
                .find(|(x, y)| (*x == a && *y == b) || (*x == b && *y == a))
            {
                Some((x, y)) if cands.len() == 2 => {
                    Ok(Some(if x.len() >= y.len() { x } else { y }))
                }
                _ => Err(format!(
                    "env var DBT_COLLECTOR_{} is ambiguous, matches collectors: {}",
                    suffix.to_uppercase(),
                    cands.join(", ")
                )),
            }
        }
    }
}

fn default_interval_secs(name: &str) -> u64 {
    crate::collectors::registry::find(name)
        .map(|d| d.default_interval.as_secs())
        .unwrap_or(0)
}

fn parse_collector(
    name: &str,
    fields: &BTreeMap<String, Raw>,
) -> Result<CollectorSettings, String> {
    let mut s = CollectorSettings::defaults_for(name);
    let typed = typed_fields(name);
    for (k, v) in fields {
        match k.as_str() {
            "enabled" => s.enabled = parse_bool(k, v)?,
            "interval_seconds" => {
                let n = parse_int(k, v)?;
                if n < 0 {
                    return Err(format!("interval_seconds must be >= 0, got {n}"));
                }
                let min = default_interval_secs(name);
                if n != 0 && (n as u64) < min {
                    return Err(format!(
                        "interval_seconds {n} is below the minimum of {min}"
                    ));
                }
                s.interval_seconds = n as u64;
            }
            other => {
                let Some(f) = typed.iter().find(|f| f.name == other) else {
                    let allowed: Vec<&str> = ["enabled", "interval_seconds"]
                        .into_iter()
                        .chain(typed.iter().map(|f| f.name))
                        .collect();
                    return Err(format!(
                        "unknown field {other:?} (allowed: {})",
                        allowed.join(", ")
                    ));
                };
                let val = match f.kind {
                    FieldKind::Bool => OptionValue::Bool(parse_bool(k, v)?),
                    FieldKind::Int { min, max } => {
                        let n = parse_int(k, v)?;
                        check_range(k, n, min, max)?;
                        OptionValue::Int(n)
                    }
                };
                s.options.insert(f.name.to_string(), val);
            }
        }
    }
    Ok(s)
}

impl CollectorsConfig {
    /// A collector's settings (defaults when the configuration does not mention it).
    pub fn settings(&self, name: &str) -> CollectorSettings {
        self.entries
            .get(name)
            .cloned()
            .unwrap_or_else(|| CollectorSettings::defaults_for(name))
    }

    pub fn from_sources(src: &Sources) -> Result<CollectorsConfig, String> {
        let mut raw: BTreeMap<&'static str, BTreeMap<String, Raw>> = BTreeMap::new();

        // 1. YAML.
        if let Some(section) = src.get(&["collectors"]) {
            let Some(m) = section.as_mapping() else {
                return Err(format!(
                    "collectors: expected map, got {}",
                    yaml_type(section)
                ));
            };
            for (k, v) in m {
                let name = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{k:?}"));
                let Some(known) = ACCEPTED.iter().copied().find(|n| *n == name) else {
                    return Err(format!("unknown collector {name:?}"));
                };
                let Some(fields) = v.as_mapping() else {
                    return Err(format!(
                        "collector {name:?}: expected map, got {}",
                        yaml_type(v)
                    ));
                };
                let entry = raw.entry(known).or_default();
                for (fk, fv) in fields {
                    let fname = fk
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{fk:?}"));
                    entry.insert(fname, Raw::Yaml(fv.clone()));
                }
            }
        }

        // 2. DBT_COLLECTOR_<NAME>_<FIELD> overrides the same field.
        let strict = src.env.get("DBT_COLLECTOR_STRICT_ENV") != Some("false");
        for (var, value) in src.env.with_prefix("DBT_COLLECTOR_") {
            if var == "DBT_COLLECTOR_STRICT_ENV" {
                continue;
            }
            let suffix = var["DBT_COLLECTOR_".len()..].to_lowercase();
            match match_env(&suffix)? {
                Some(name) => {
                    let field = suffix[name.len() + 1..].to_string();
                    raw.entry(name).or_default().insert(field, Raw::Env(value.to_string()));
                }
                None if strict => {
                    return Err(format!(
                        "env var {var} does not match any known collector (set DBT_COLLECTOR_STRICT_ENV=false to skip unknown env vars)"
                    ))
                }
                None => log::warn!("ignoring {var}: it does not match any known collector"),
            }
        }

        // 3. Legacy forwards for pg_stat_statements, only where the new field is unset.
        let pgss = raw.entry("pg_stat_statements").or_default();
        if !pgss.contains_key("include_queries") {
            let legacy = src
                .env
                .get("DBT_POSTGRESQL_INCLUDE_QUERIES")
                .map(|v| Raw::Env(v.to_string()))
                .or_else(|| {
                    src.get(&["postgresql", "include_queries"])
                        .cloned()
                        .map(Raw::Yaml)
                })
                .or_else(|| {
                    src.get(&["postgres", "include_queries"])
                        .cloned()
                        .map(Raw::Yaml)
                });
            if let Some(v) = legacy {
                pgss.insert("include_queries".into(), v);
            }
        }
        if !pgss.contains_key("max_query_text_length") {
            let legacy = src
                .env
                .get("DBT_POSTGRESQL_MAXIMUM_QUERY_TEXT_LENGTH")
                .map(|v| Raw::Env(v.to_string()))
                .or_else(|| {
                    src.get(&["postgresql", "maximum_query_text_length"])
                        .cloned()
                        .map(Raw::Yaml)
                })
                .or_else(|| {
                    src.get(&["postgres", "maximum_query_text_length"])
                        .cloned()
                        .map(Raw::Yaml)
                });
            if let Some(v) = legacy {
                pgss.insert("max_query_text_length".into(), v);
            }
        }

        // 4. Parse in registry order; the first error names the collector.
        let mut entries = BTreeMap::new();
        for name in ACCEPTED {
            if let Some(fields) = raw.get(name) {
                let s = parse_collector(name, fields)
                    .map_err(|e| format!("collector {name:?}: {e}"))?;
                entries.insert((*name).to_string(), s);
            }
        }
        Ok(CollectorsConfig { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn parse(yaml: &str, env: &[(&str, &str)]) -> Result<CollectorsConfig, String> {
        let src =
            Sources::from_yaml(yaml, Env::from_pairs(env.iter().map(|(a, b)| (*a, *b)))).unwrap();
        CollectorsConfig::from_sources(&src)
    }

    #[test]
    fn defaults_and_typed_options() {
        let c = parse("", &[]).unwrap();
        let s = c.settings("pg_stat_statements");
        assert!(s.enabled);
        assert_eq!(s.int("diff_limit", -1), 500);
        assert!(s.bool("include_queries", false));
        assert!(!c.settings("pg_stats").bool("include_table_data", true));
        assert_eq!(
            c.settings("pg_statio_user_indexes")
                .int("backfill_batch_size", 0),
            2000
        );

        let c = parse(
            "collectors:\n  pg_stat_statements:\n    diff_limit: 0\n    include_queries: \"f\"\n  pg_class:\n    interval_seconds: 120\n    backfill_batch_size: 50\n",
            &[],
        )
        .unwrap();
        let s = c.settings("pg_stat_statements");
        assert_eq!(s.int("diff_limit", -1), 0);
        assert!(!s.bool("include_queries", true));
        assert_eq!(c.settings("pg_class").interval_seconds, 120);
        assert_eq!(c.settings("pg_class").int("backfill_batch_size", 0), 50);
    }

    #[test]
    fn errors_name_collector_field_and_range() {
        let e = parse(
            "collectors:\n  pg_stat_statements:\n    diff_limit: 501\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("collector \"pg_stat_statements\"")
                && e.contains("diff_limit must be <= 500")
                && e.contains("0..500"),
            "{e}"
        );
        let e = parse("collectors:\n  pg_class:\n    diff_limit: 5\n", &[]).unwrap_err();
        assert!(
            e.contains("collector \"pg_class\": unknown field \"diff_limit\""),
            "{e}"
        );
        let e = parse("collectors:\n  nope:\n    enabled: false\n", &[]).unwrap_err();
        assert_eq!(e, "unknown collector \"nope\"");
        let e = parse("collectors:\n  ddl:\n    enabled: false\n", &[]).unwrap_err();
        assert_eq!(e, "unknown collector \"ddl\"");
        let e = parse("collectors:\n  pg_class: true\n", &[]).unwrap_err();
        assert_eq!(e, "collector \"pg_class\": expected map, got bool");
        let e = parse("collectors:\n  pg_class:\n", &[]).unwrap_err();
        assert_eq!(e, "collector \"pg_class\": expected map, got null");
        let e = parse(
            "collectors:\n  pg_stat_database:\n    interval_seconds: 30\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e,
            "collector \"pg_stat_database\": interval_seconds 30 is below the minimum of 60"
        );
        assert!(parse(
            "collectors:\n  pg_stat_database:\n    interval_seconds: 60\n",
            &[]
        )
        .is_ok());
        assert!(parse(
            "collectors:\n  pg_stat_database:\n    interval_seconds: 0\n",
            &[]
        )
        .is_ok());
        let e = parse(
            "collectors:\n  pg_class:\n    interval_seconds: notanumber\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("interval_seconds: cannot parse \"notanumber\" as an integer"),
            "{e}"
        );
    }

    #[test]
    fn env_longest_name_and_strict_mode() {
        let c = parse(
            "",
            &[("DBT_COLLECTOR_PG_STAT_WAL_RECEIVER_ENABLED", "false")],
        )
        .unwrap();
        assert!(!c.settings("pg_stat_wal_receiver").enabled);
        assert!(c.settings("pg_stat_wal").enabled);
        let c = parse("", &[("DBT_COLLECTOR_PG_STAT_WAL_ENABLED", "false")]).unwrap();
        assert!(!c.settings("pg_stat_wal").enabled);
        assert!(c.settings("pg_stat_wal_receiver").enabled);
        let c = parse(
            "collectors:\n  pg_stat_statements:\n    diff_limit: 10\n",
            &[(
                "DBT_COLLECTOR_PG_STAT_STATEMENTS_MAX_QUERY_TEXT_LENGTH",
                "4096",
            )],
        )
        .unwrap();
        let s = c.settings("pg_stat_statements");
        assert_eq!(
            (s.int("diff_limit", 0), s.int("max_query_text_length", 0)),
            (10, 4096)
        );
        let e = parse("", &[("DBT_COLLECTOR_TOTALLY_FAKE_ENABLED", "true")]).unwrap_err();
        assert!(
            e.starts_with(
                "env var DBT_COLLECTOR_TOTALLY_FAKE_ENABLED does not match any known collector"
            ),
            "{e}"
        );
        assert!(parse(
            "",
            &[
                ("DBT_COLLECTOR_TOTALLY_FAKE_ENABLED", "true"),
                ("DBT_COLLECTOR_STRICT_ENV", "false")
            ]
        )
        .is_ok());
        let e = parse("", &[("DBT_COLLECTOR_PG_CLASS_ENABLED", "maybe")]).unwrap_err();
        assert!(
            e.contains("collector \"pg_class\": enabled: cannot parse \"maybe\""),
            "{e}"
        );
    }

    #[test]
    fn legacy_forwards() {
        let c = parse(
            "postgresql:\n  include_queries: false\n  maximum_query_text_length: 100\n",
            &[],
        )
        .unwrap();
        let s = c.settings("pg_stat_statements");
        assert!(!s.bool("include_queries", true));
        assert_eq!(s.int("max_query_text_length", 0), 100);
        // The new field wins over the legacy one.
        let c = parse(
            "postgresql:\n  include_queries: false\ncollectors:\n  pg_stat_statements:\n    include_queries: true\n",
            &[("DBT_POSTGRESQL_MAXIMUM_QUERY_TEXT_LENGTH", "64")],
        )
        .unwrap();
        let s = c.settings("pg_stat_statements");
        assert!(s.bool("include_queries", false));
        assert_eq!(s.int("max_query_text_length", 0), 64);
        let e = parse("postgresql:\n  maximum_query_text_length: 9000\n", &[]).unwrap_err();
        assert!(e.contains("max_query_text_length must be <= 8192"), "{e}");
    }
}
