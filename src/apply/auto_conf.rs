//! The `postgresql.auto.conf` snapshot of ALTER SYSTEM targets: what the file held for each affected parameter
//! (from `pg_file_settings`, else the file itself), and the file's full text when the agent
//! can read it, so a rollback also works while PostgreSQL refuses to start.

use super::journal::write_atomic;
use super::target::Previous;
use crate::error::{Context, Error, Result};
use crate::pg::alter as sql;
use postgres::Client;
use std::fs;
use std::os::unix::fs::{fchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct AutoConf {
    /// Per parameter name (lower-case): what auto.conf held.
    entries: Option<Vec<(String, String)>>,
    pub auto_conf_path: Option<PathBuf>,
    pub auto_conf_text: Option<String>,
}

impl AutoConf {
    /// Reads the state before an apply. `override_path` is `apply.auto_conf_path`.
    pub fn take(c: &mut Client, override_path: Option<&str>) -> Result<AutoConf> {
        let from_pg = sql::auto_conf_entries(c)?;
        let path = match override_path {
            Some(p) => Some(PathBuf::from(p)),
            None => sql::data_directory(c)?.map(|d| Path::new(&d).join("postgresql.auto.conf")),
        };
        let text = path.as_deref().and_then(|p| fs::read_to_string(p).ok());
        // Trust the local file only if it is the server's: same entries as PostgreSQL reports
        // (a remote server's data directory may exist here too, with other contents).
        let text = match (&text, &from_pg) {
            (Some(t), Some(pg)) if !same_entries(&parse_auto_conf(t), pg) => None,
            _ => text,
        };
        let entries = from_pg.or_else(|| text.as_deref().map(parse_auto_conf));
        Ok(AutoConf {
            entries,
            auto_conf_path: path,
            auto_conf_text: text,
        })
    }

    /// What auto.conf held for `name`.
    pub fn value(&self, name: &str) -> Previous {
        match &self.entries {
            None => Previous::Unknown,
            Some(e) => e
                .iter()
                .rev()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| Previous::Value(v.clone()))
                .unwrap_or(Previous::Absent),
        }
    }
}

fn same_entries(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let norm = |v: &[(String, String)]| {
        let mut m: Vec<(String, String)> = Vec::new();
        for (n, s) in v {
            let n = n.to_ascii_lowercase();
            m.retain(|(k, _)| *k != n);
            m.push((n, s.clone()));
        }
        m.sort();
        m
    };
    norm(a) == norm(b)
}

/// Parses `postgresql.auto.conf` (`name = 'value'` lines as ALTER SYSTEM writes them, with
/// `''` and backslash escapes inside quotes).
pub fn parse_auto_conf(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let name_end = l
            .find(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or(l.len());
        let name = &l[..name_end];
        let rest = l[name_end..].trim_start();
        let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
        let value = if let Some(q) = rest.strip_prefix('\'') {
            let mut v = String::new();
            let mut chars = q.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        v.push('\'');
                    }
                    '\'' => break,
                    '\\' => match chars.next() {
                        Some('n') => v.push('\n'),
                        Some('t') => v.push('\t'),
                        Some('r') => v.push('\r'),
                        Some('b') => v.push('\u{8}'),
                        Some('f') => v.push('\u{c}'),
                        Some(o) => v.push(o),
                        None => {}
                    },
                    c => v.push(c),
                }
            }
            v
        } else {
            rest.split(|c: char| c.is_whitespace() || c == '#')
                .next()
                .unwrap_or("")
                .to_string()
        };
        if !name.is_empty() {
            out.push((name.to_string(), value));
        }
    }
    out
}

/// Puts the saved text back into `path` (same owner and mode as the current file), for a
/// rollback while PostgreSQL is down.
pub fn restore_file(path: &Path, text: &str) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    write_atomic(path, text.as_bytes()).with_context(|| format!("restoring {}", path.display()))?;
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if meta.uid() != f.metadata().map(|m| m.uid()).unwrap_or(meta.uid())
        || meta.gid() != f.metadata().map(|m| m.gid()).unwrap_or(meta.gid())
    {
        fchown(&f, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| Error::other(format!("restoring the owner of {}: {e}", path.display())))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .with_context(|| format!("restoring the mode of {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_alter_system_writes() {
        let t = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n\
                 work_mem = '8MB'\nlog_line_prefix = '%m [%p] ''x'' \\\\ '\nshared_buffers = 2048\nwork_mem = '16MB'\n";
        let e = parse_auto_conf(t);
        assert_eq!(e[0], ("work_mem".to_string(), "8MB".to_string()));
        assert_eq!(
            e[1],
            ("log_line_prefix".to_string(), "%m [%p] 'x' \\ ".to_string())
        );
        assert_eq!(e[2], ("shared_buffers".to_string(), "2048".to_string()));
        let s = AutoConf {
            entries: Some(e),
            auto_conf_path: None,
            auto_conf_text: None,
        };
        assert_eq!(s.value("work_mem"), Previous::Value("16MB".into()));
        assert_eq!(s.value("port"), Previous::Absent);
    }
}
