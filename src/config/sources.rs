//! Raw configuration sources: the parsed file (keys lower-cased, as viper does) and a snapshot
//! of the environment (empty variables dropped: they count as unset). `*.toml` is read as TOML
//! into the same key tree as YAML (so every reader of a key is shared); anything else is YAML.
//! For TOML each key's line is kept so an error names file, line and key.

use crate::error::{Error, Result};
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Env(pub BTreeMap<String, String>);

/// Names only: the values hold passwords, keys and tokens.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Env {
    pub fn from_process() -> Env {
        Env(std::env::vars().filter(|(_, v)| !v.is_empty()).collect())
    }
    pub fn from_pairs<I: IntoIterator<Item = (S, S)>, S: Into<String>>(pairs: I) -> Env {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v): &(String, String)| !v.is_empty())
            .collect())
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    /// Variables starting with `prefix`, in name order.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[derive(Clone, Default)]
pub struct Sources {
    pub root: Value,
    pub env: Env,
    /// The file's path and, for TOML, the line of each dotted (lower-cased) key.
    origin: Option<(PathBuf, BTreeMap<String, usize>)>,
    /// Every dotted key a reader asked for (shared by clones): the unknown-key check accepts
    /// what is really read, whatever the declarations say.
    reads: Arc<Mutex<BTreeSet<String>>>,
}

/// The file and the variables' names only: values may be secrets.
impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("file", &self.origin.as_ref().map(|o| &o.0))
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// True for a file read as TOML (by extension, case-insensitive).
pub fn is_toml(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// TOML value → the YAML value tree the readers use (datetimes as their RFC 3339 text).
fn from_toml(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::Number(i.into()),
        toml::Value::Float(f) => Value::Number(f.into()),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Sequence(a.into_iter().map(from_toml).collect()),
        toml::Value::Table(t) => Value::Mapping(
            t.into_iter()
                .map(|(k, v)| (Value::String(k), from_toml(v)))
                .collect(),
        ),
    }
}

/// Dotted lower-cased key → line of the key, for every table key (arrays are leaves).
fn key_lines(
    text: &str,
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    out: &mut BTreeMap<String, usize>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.get_ref().to_lowercase()
        } else {
            format!("{prefix}.{}", k.get_ref().to_lowercase())
        };
        out.insert(key.clone(), line_of(text, k.span().start));
        if let toml::de::DeValue::Table(t) = v.get_ref() {
            key_lines(text, t, &key, out);
        }
    }
}

/// Go's strconv.ParseBool.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Mapping(m) => Value::Mapping(
            m.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => Value::String(s.to_lowercase()),
                        other => other,
                    };
                    (k, lowercase_keys(v))
                })
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

impl Sources {
    pub fn read(file: Option<&Path>, env: Env) -> Result<Sources> {
        let Some(p) = file else {
            return Ok(Sources {
                root: Value::Null,
                env,
                origin: None,
                reads: Default::default(),
            });
        };
        let bad =
            |e: String| Error::invalid(format!("Error reading config file {}: {e}", p.display()));
        let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
        let (root, lines) = if is_toml(p) {
            Sources::parse_toml(&text).map_err(bad)?
        } else {
            (Sources::parse_yaml(&text).map_err(bad)?, BTreeMap::new())
        };
        Ok(Sources {
            root,
            env,
            origin: Some((p.to_path_buf(), lines)),
            reads: Default::default(),
        })
    }

    /// The TOML document as the key tree (keys lower-cased) and each key's line. A syntax
    /// error names its line (toml's message names the key where there is one, e.g. a
    /// duplicate).
    pub fn parse_toml(text: &str) -> std::result::Result<(Value, BTreeMap<String, usize>), String> {
        let at = |e: toml::de::Error| {
            let msg = e.message().trim();
            let Some(span) = e.span() else {
                return msg.to_string();
            };
            let line = line_of(text, span.start);
            // The offending text (for a duplicate, the key itself) when it is short.
            match text.get(span).map(str::trim) {
                Some(t) if !t.is_empty() && t.len() <= 60 && !t.contains('\n') => {
                    format!("line {line}: {msg} (at `{t}`)")
                }
                _ => format!("line {line}: {msg}"),
            }
        };
        let spanned = toml::de::DeTable::parse(text).map_err(at)?;
        let mut lines = BTreeMap::new();
        key_lines(text, spanned.get_ref(), "", &mut lines);
        let table: toml::Table = toml::from_str(text).map_err(at)?;
        Ok((lowercase_keys(from_toml(toml::Value::Table(table))), lines))
    }

    pub fn parse_yaml(text: &str) -> std::result::Result<Value, String> {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        let v: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        Ok(lowercase_keys(v))
    }

    pub fn from_yaml(text: &str, env: Env) -> Result<Sources> {
        let root = Sources::parse_yaml(text).map_err(Error::invalid)?;
        Ok(Sources {
            root,
            env,
            origin: None,
            reads: Default::default(),
        })
    }

    /// The dotted keys readers asked for so far.
    pub fn reads(&self) -> BTreeSet<String> {
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        if !path.is_empty() {
            self.reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(Self::dotted(path));
        }
        let mut v = &self.root;
        for k in path {
            v = v.as_mapping()?.get(Value::String((*k).to_string()))?;
        }
        if v.is_null() && !path.is_empty() {
            return None;
        }
        Some(v)
    }

    pub fn is_map(&self, path: &[&str]) -> bool {
        self.get(path).is_some_and(Value::is_mapping)
    }

    fn dotted(path: &[&str]) -> String {
        path.join(".")
    }

    /// `key`, `key (ENV)`, and where the file gives a line, `key (ENV, /etc/dbtune.toml:7)`.
    pub fn label(&self, path: &[&str], env: Option<&str>) -> String {
        let key = Self::dotted(path);
        let at = self
            .origin
            .as_ref()
            .and_then(|(file, lines)| lines.get(&key).map(|l| format!("{}:{l}", file.display())));
        match (env, at) {
            (Some(e), Some(a)) => format!("{key} ({e}, {a})"),
            (Some(e), None) => format!("{key} ({e})"),
            (None, Some(a)) => format!("{key} ({a})"),
            (None, None) => key,
        }
    }

    /// A string: env (if bound and non-empty), else the file's scalar, else None.
    pub fn string(
        &self,
        path: &[&str],
        env: Option<&str>,
    ) -> std::result::Result<Option<String>, String> {
        if let Some(v) = env.and_then(|e| self.env.get(e)) {
            return Ok(Some(v.to_string()));
        }
        match self.get(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(if s.is_empty() { None } else { Some(s.clone()) }),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(format!("{}: expected a string", self.label(path, env))),
        }
    }

    pub fn bool(
        &self,
        path: &[&str],
        env: Option<&str>,
        default: bool,
    ) -> std::result::Result<bool, String> {
        let bad = |v: &str| {
            format!(
                "{}: cannot parse {v:?} as bool (expected true/false, 1/0, t/f)",
                self.label(path, env)
            )
        };
        if let Some(v) = env.and_then(|e| self.env.get(e)) {
            return parse_go_bool(v).ok_or_else(|| bad(v));
        }
        match self.get(path) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => parse_go_bool(s).ok_or_else(|| bad(s)),
            Some(other) => Err(bad(&format!("{other:?}"))),
        }
    }

    pub fn int(
        &self,
        path: &[&str],
        env: Option<&str>,
        default: i64,
    ) -> std::result::Result<i64, String> {
        let bad = |v: &str| {
            format!(
                "{}: cannot parse {v:?} as an integer",
                self.label(path, env)
            )
        };
        if let Some(v) = env.and_then(|e| self.env.get(e)) {
            return v.trim().parse().map_err(|_| bad(v));
        }
        match self.get(path) {
            None => Ok(default),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(i),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                _ => Err(bad(&n.to_string())),
            },
            Some(Value::String(s)) => s.trim().parse().map_err(|_| bad(s)),
            Some(other) => Err(bad(&format!("{other:?}"))),
        }
    }

    pub fn float(
        &self,
        path: &[&str],
        env: Option<&str>,
        default: f64,
    ) -> std::result::Result<f64, String> {
        let bad = |v: &str| format!("{}: cannot parse {v:?} as a number", self.label(path, env));
        if let Some(v) = env.and_then(|e| self.env.get(e)) {
            return v.trim().parse().map_err(|_| bad(v));
        }
        match self.get(path) {
            None => Ok(default),
            Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad(&n.to_string())),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| bad(s)),
            Some(other) => Err(bad(&format!("{other:?}"))),
        }
    }

    /// A list of strings (YAML sequence, or a comma-separated env value).
    pub fn string_list(
        &self,
        path: &[&str],
        env: Option<&str>,
    ) -> std::result::Result<Vec<String>, String> {
        if let Some(v) = env.and_then(|e| self.env.get(e)) {
            return Ok(v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect());
        }
        match self.get(path) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(s)) => s
                .iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "{}: expected a list of strings, found {other:?}",
                        self.label(path, env)
                    )),
                })
                .collect(),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()),
            Some(_) => Err(format!(
                "{}: expected a list of strings",
                self.label(path, env)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let s = Sources::from_yaml(
            "postgresql:\n  connection_url: postgres://u:S3cr@h/db\n",
            Env::from_pairs([("DBT_DBTUNE_API_KEY", "S3crKey")]),
        )
        .unwrap();
        let d = format!("{s:?}");
        assert!(
            !d.contains("S3cr") && d.contains("DBT_DBTUNE_API_KEY"),
            "{d}"
        );
    }
}
