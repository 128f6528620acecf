//! The `collectors:` section and `DBT_COLLECTOR_*` variables (collectors.md §5).
//! Minimal for now: `enabled` and `interval_seconds`; the full schema (typed options, strict env
//! matching, legacy forwards) is built by the collectors issue.

use super::Sources;
use std::collections::BTreeMap;

/// One collector's settings after parsing.
#[derive(Clone, Debug)]
pub struct CollectorSettings {
    pub enabled: bool,
    /// 0 = the collector's default.
    pub interval_seconds: u64,
    /// Typed extra options (`diff_limit`, `include_queries`, …) as parsed values.
    pub options: BTreeMap<String, OptionValue>,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        CollectorSettings { enabled: true, interval_seconds: 0, options: BTreeMap::new() }
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
}

#[derive(Clone, Debug, Default)]
pub struct CollectorsConfig {
    pub entries: BTreeMap<String, CollectorSettings>,
}

impl CollectorsConfig {
    pub fn settings(&self, name: &str) -> CollectorSettings {
        self.entries.get(name).cloned().unwrap_or_default()
    }

    pub fn from_sources(src: &Sources) -> Result<CollectorsConfig, String> {
        let mut entries = BTreeMap::new();
        if let Some(m) = src.get(&["collectors"]).and_then(|v| v.as_mapping()) {
            for (k, _) in m {
                let name = k.as_str().unwrap_or_default().to_string();
                let enabled = src.bool(&["collectors", &name, "enabled"], None, true)?;
                let interval = src.int(&["collectors", &name, "interval_seconds"], None, 0)?;
                if interval < 0 {
                    return Err(format!("collector {name:?}: interval_seconds must be >= 0"));
                }
                entries.insert(
                    name,
                    CollectorSettings { enabled, interval_seconds: interval as u64, options: BTreeMap::new() },
                );
            }
        }
        Ok(CollectorsConfig { entries })
    }
}
