//! Inert data passed between collectors, adapters and the platform module. Nothing here does
//! I/O; `platform` turns these into wire payloads.

use serde_json::Value;

/// Metric type names as on the wire (`{"type": ...}` in system info).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Int,
    Bytes,
    Time,
    Float,
    Percentage,
    String,
    Boolean,
}

impl MetricType {
    pub fn wire(self) -> &'static str {
        match self {
            MetricType::Int => "int",
            MetricType::Bytes => "bytes",
            MetricType::Time => "time",
            MetricType::Float => "float",
            MetricType::Percentage => "percentage",
            MetricType::String => "string",
            MetricType::Boolean => "boolean",
        }
    }
}

/// One sample: key, value and type (the Go agent's FlatValue).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub key: &'static str,
    pub value: Value,
    pub kind: MetricType,
}

impl Metric {
    pub fn int(key: &'static str, v: i64) -> Self {
        Metric {
            key,
            value: Value::from(v),
            kind: MetricType::Int,
        }
    }
    pub fn bytes(key: &'static str, v: i64) -> Self {
        Metric {
            key,
            value: Value::from(v),
            kind: MetricType::Bytes,
        }
    }
    pub fn float(key: &'static str, v: f64) -> Self {
        Metric {
            key,
            value: Value::from(v),
            kind: MetricType::Float,
        }
    }
    pub fn percentage(key: &'static str, v: f64) -> Self {
        Metric {
            key,
            value: Value::from(v),
            kind: MetricType::Percentage,
        }
    }
    pub fn string(key: &'static str, v: impl Into<String>) -> Self {
        Metric {
            key,
            value: Value::from(v.into()),
            kind: MetricType::String,
        }
    }
}

/// One row of the active configuration (`pg_settings` projected to the five wire fields).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigRow {
    pub name: String,
    /// Already typed as the wire wants it: a number for integer/real settings, else a string.
    pub setting: Value,
    pub unit: Option<String>,
    pub vartype: String,
    pub context: String,
}

/// How the platform says a recommendation should take effect. Only a hint: whether a restart
/// is needed is decided from `pg_settings.context`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnobApplication {
    Restart,
    Reload,
    /// The field was absent; behaves like `Restart` (a hint).
    Unspecified,
}

/// One `config` entry of a recommendation.
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendedKnob {
    pub name: String,
    /// As received: number, string, bool or null.
    pub setting: Value,
    pub unit: Option<String>,
    pub vartype: String,
    pub context: String,
}

/// Element `[0]` of `GET configurations?status=recommended`.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    pub config: Vec<RecommendedKnob>,
    pub knobs_overrides: Vec<String>,
    pub knob_application: KnobApplication,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardrailLevel {
    Critical,
    NonCritical,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardrailType {
    Memory,
    FreeableMemory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardrailSignal {
    pub level: GuardrailLevel,
    pub kind: GuardrailType,
}

impl GuardrailSignal {
    pub fn level_wire(&self) -> &'static str {
        match self.level {
            GuardrailLevel::Critical => "critical",
            GuardrailLevel::NonCritical => "non-critical",
        }
    }
    pub fn type_wire(&self) -> &'static str {
        match self.kind {
            GuardrailType::Memory => "memory",
            GuardrailType::FreeableMemory => "freeable_memory",
        }
    }
}

/// An error for `log-entries`: `error_type` is one of the contract's values (§11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReport {
    pub error_type: String,
    pub error_message: String,
}
