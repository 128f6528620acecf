//! Configuration: `dbtune.yaml` or `dbtune.toml` (first found in `/etc/`, `/etc/dbtune/`, `./`,
//! or `--config PATH`) overlaid by the exact `DBT_*` variables of the Go agent. Both formats give
//! one key tree (`sources`), read by the code below and its sections only.
//! Empty variables count as unset. Validation collects every problem and names the key, the bad
//! value (secrets masked) and what was expected.

pub mod apply;
pub mod audit;
pub mod collectors;
pub mod keys;
pub mod sources;

use crate::error::{Error, Result};
use crate::secret::{mask, Secret};
pub use sources::{Env, Sources};
use std::path::{Path, PathBuf};

pub const DEFAULT_SERVER_URL: &str = "https://app.dbtune.com";

#[derive(Clone, Debug)]
pub struct PostgresConfig {
    pub connection_url: Secret,
    pub service_name: String,
    pub restart_script_path: String,
    /// The section's own `allow_restart` (startup validation reads this one).
    pub allow_restart: bool,
    /// Agent connections to PostgreSQL (new; the Go agent uses the driver default).
    pub pool_size: u32,
}

#[derive(Clone, Debug)]
pub struct DbtuneConfig {
    pub server_url: String,
    pub api_key: Secret,
    pub database_id: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub debug: bool,
    pub disable_checks: bool,
    pub postgresql: PostgresConfig,
    /// The runtime "is restart allowed" flag: only the global `postgresql.allow_restart` key
    /// (protocol.md §2.3), which a legacy `postgres:` section does not set.
    pub runtime_allow_restart: bool,
    pub dbtune: DbtuneConfig,
    pub memory_threshold: f64,
    pub collectors: collectors::CollectorsConfig,
    pub apply: apply::ApplyConfig,
    /// The S3 audit trail (`audit:`).
    pub audit: audit::AuditConfig,
    /// Where the state (journal, freeze file) lives.
    pub state_dir: PathBuf,
    /// The file the values came from, if any.
    pub file: Option<PathBuf>,
    /// The parsed sources, for adapter sections (`docker:`, `rds:` …) read by their adapters.
    pub sources: Sources,
    /// Unknown keys and variables outside `apply` (logged at start, shown by `--check`).
    pub key_warnings: Vec<String>,
}

/// The directories searched, in order; the first holding a config file wins, nothing is merged.
pub const SEARCH_DIRS: [&str; 3] = ["/etc", "/etc/dbtune", "."];

/// The file names looked for in each directory: YAML as the Go agent, TOML read as TOML.
pub const FILE_NAMES: [&str; 2] = ["dbtune.yaml", "dbtune.toml"];

pub fn find_file(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(Error::invalid(format!(
                "--config {}: no such file",
                p.display()
            )));
        }
        return Ok(Some(p.to_path_buf()));
    }
    find_in(&SEARCH_DIRS.map(PathBuf::from))
}

/// The first directory with a config file wins; both a YAML and a TOML file there is refused
/// rather than guessed.
fn find_in(dirs: &[PathBuf]) -> Result<Option<PathBuf>> {
    for d in dirs {
        let found: Vec<PathBuf> = FILE_NAMES
            .iter()
            .map(|f| d.join(f))
            .filter(|p| p.is_file())
            .map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p))
            .collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(Some(one.clone())),
            [a, b, ..] => {
                return Err(Error::invalid(format!(
                    "both {} and {} exist; keep one (or pass --config PATH)",
                    a.display(),
                    b.display()
                )))
            }
        }
    }
    Ok(None)
}

impl Config {
    /// Loads from the file (if any) and the process environment.
    pub fn load(explicit: Option<&Path>, require_platform: bool) -> Result<Config> {
        let file = find_file(explicit)?;
        let sources = Sources::read(file.as_deref(), Env::from_process())?;
        Config::from_sources_opts(sources, file, require_platform)
    }

    pub fn from_sources(src: Sources, file: Option<PathBuf>) -> Result<Config> {
        Config::from_sources_opts(src, file, true)
    }

    /// `require_platform` false (dry-run): the `dbtune` section may be absent; anything that is
    /// given is still validated.
    pub fn from_sources_opts(
        src: Sources,
        file: Option<PathBuf>,
        require_platform: bool,
    ) -> Result<Config> {
        let mut errs: Vec<String> = Vec::new();

        let debug =
            take(&mut errs, src.bool(&["debug"], Some("DBT_DEBUG"), false)).unwrap_or(false);
        let disable_checks = take(
            &mut errs,
            src.bool(&["disable_checks"], Some("DBT_DISABLE_CHECKS"), false),
        )
        .unwrap_or(false);

        // The postgresql section: `postgresql:`, else legacy `postgres:`, else the root.
        let section: &[&str] = if src.is_map(&["postgresql"]) {
            &["postgresql"]
        } else if src.is_map(&["postgres"]) {
            &["postgres"]
        } else {
            &[]
        };
        let key = |k: &'static str| -> Vec<&'static str> {
            let mut v: Vec<&'static str> = section.to_vec();
            v.push(k);
            v
        };
        let connection_url = take(
            &mut errs,
            src.string(
                &key("connection_url"),
                Some("DBT_POSTGRESQL_CONNECTION_URL"),
            ),
        )
        .flatten();
        let service_name = take(
            &mut errs,
            src.string(&key("service_name"), Some("DBT_POSTGRESQL_SERVICE_NAME")),
        )
        .flatten()
        .unwrap_or_default();
        let restart_script_path = take(
            &mut errs,
            src.string(
                &key("restart_script_path"),
                Some("DBT_POSTGRESQL_RESTART_SCRIPT_PATH"),
            ),
        )
        .flatten()
        .unwrap_or_default();
        let allow_restart = take(
            &mut errs,
            src.bool(
                &key("allow_restart"),
                Some("DBT_POSTGRESQL_ALLOW_RESTART"),
                false,
            ),
        )
        .unwrap_or(false);
        let runtime_allow_restart = take(
            &mut errs,
            src.bool(
                &["postgresql", "allow_restart"],
                Some("DBT_POSTGRESQL_ALLOW_RESTART"),
                false,
            ),
        )
        .unwrap_or(false);
        let pool_size = take(
            &mut errs,
            src.int(&key("pool_size"), Some("DBT_POSTGRESQL_POOL_SIZE"), 2),
        )
        .unwrap_or(2);
        if !(1..=10).contains(&pool_size) {
            errs.push(format!(
                "{}: {pool_size} is out of range (expected 1 to 10)",
                src.label(&key("pool_size"), Some("DBT_POSTGRESQL_POOL_SIZE"))
            ));
        }

        let server_url = take(
            &mut errs,
            src.string(&["dbtune", "server_url"], Some("DBT_DBTUNE_SERVER_URL")),
        )
        .flatten()
        .unwrap_or_else(|| DEFAULT_SERVER_URL.to_string());
        let api_key = take(
            &mut errs,
            src.string(&["dbtune", "api_key"], Some("DBT_DBTUNE_API_KEY")),
        )
        .flatten();
        let database_id = take(
            &mut errs,
            src.string(&["dbtune", "database_id"], Some("DBT_DBTUNE_DATABASE_ID")),
        )
        .flatten();
        let memory_threshold = take(
            &mut errs,
            src.float(
                &["guardrail_settings", "memory_threshold"],
                Some("DBT_MEMORY_THRESHOLD"),
                90.0,
            ),
        )
        .unwrap_or(90.0);
        let state_dir = take(&mut errs, src.string(&["state_dir"], Some("DBT_STATE_DIR")))
            .flatten()
            .unwrap_or_else(|| "/var/lib/dbtune-agent".to_string());

        // Validation (all problems at once).
        match &connection_url {
            None => errs.push(
                "postgresql.connection_url (DBT_POSTGRESQL_CONNECTION_URL): missing (expected a postgres:// URL or key=value connection string)"
                    .into(),
            ),
            Some(u) => {
                if let Err(e) = crate::pg::conninfo::ConnInfo::parse(u) {
                    errs.push(format!(
                        "postgresql.connection_url (DBT_POSTGRESQL_CONNECTION_URL): {} is invalid: {e}",
                        crate::secret::redact_dsn(u)
                    ));
                }
            }
        }
        if !is_valid_url(&server_url) {
            errs.push(format!(
                "dbtune.server_url (DBT_DBTUNE_SERVER_URL): {:?} is not a URL (expected e.g. https://app.dbtune.com)",
                crate::secret::url::mask(&server_url)
            ));
        }
        let (api_key, database_id) = if require_platform {
            (api_key, database_id)
        } else {
            (
                Some(api_key.unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into())),
                Some(database_id.unwrap_or_else(|| "00000000-0000-0000-0000-000000000000".into())),
            )
        };
        match &api_key {
            None => errs.push("dbtune.api_key (DBT_DBTUNE_API_KEY): missing (expected a lower-case UUID)".into()),
            Some(k) if !is_lower_uuid(k) => errs.push(format!(
                "dbtune.api_key (DBT_DBTUNE_API_KEY): {} is not a lower-case UUID (expected 8-4-4-4-12 lower-case hex digits)",
                mask(k)
            )),
            _ => {}
        }
        match &database_id {
            None => errs.push("dbtune.database_id (DBT_DBTUNE_DATABASE_ID): missing (expected a lower-case UUID)".into()),
            Some(k) if !is_lower_uuid(k) => errs.push(format!(
                "dbtune.database_id (DBT_DBTUNE_DATABASE_ID): {k:?} is not a lower-case UUID (expected 8-4-4-4-12 lower-case hex digits, e.g. 6ba7b811-9dad-11d1-80b4-00c04fd430c8)"
            )),
            _ => {}
        }
        if !(1.0..=100.0).contains(&memory_threshold) {
            errs.push(format!(
                "{}: {memory_threshold} is out of range (expected 1 to 100)",
                src.label(
                    &["guardrail_settings", "memory_threshold"],
                    Some("DBT_MEMORY_THRESHOLD")
                )
            ));
        }
        if !restart_script_path.is_empty() {
            if let Err(e) = check_restart_script(Path::new(&restart_script_path)) {
                errs.push(e);
            }
        }
        let collectors = match collectors::CollectorsConfig::from_sources(&src) {
            Ok(c) => c,
            Err(e) => {
                errs.push(format!("failed to parse collectors config: {e}"));
                collectors::CollectorsConfig::default()
            }
        };
        let apply = match apply::ApplyConfig::from_sources(&src) {
            Ok(c) => c,
            Err(e) => {
                errs.push(e);
                apply::ApplyConfig::default()
            }
        };

        let audit = match audit::AuditConfig::from_sources(&src) {
            Ok(c) => c,
            Err(e) => {
                errs.push(e);
                audit::AuditConfig::default()
            }
        };

        // After every reader above, so what they read counts as known.
        let unknown = keys::check(&src);
        errs.extend(unknown.errors);

        if !errs.is_empty() {
            let origin = match &file {
                Some(f) => format!(" (file {})", f.display()),
                None => " (no config file; environment only)".to_string(),
            };
            return Err(Error::invalid(format!(
                "invalid configuration{origin}:\n  - {}",
                errs.join("\n  - ")
            )));
        }
        Ok(Config {
            debug,
            disable_checks,
            postgresql: PostgresConfig {
                connection_url: Secret::new(connection_url.unwrap_or_default()),
                service_name,
                restart_script_path,
                allow_restart,
                pool_size: pool_size as u32,
            },
            runtime_allow_restart,
            dbtune: DbtuneConfig {
                server_url,
                api_key: Secret::new(api_key.unwrap_or_default()),
                database_id: database_id.unwrap_or_default(),
            },
            memory_threshold,
            collectors,
            apply,
            audit,
            state_dir: PathBuf::from(state_dir),
            file,
            sources: src,
            key_warnings: unknown.warnings,
        })
    }
}

fn take<T>(errs: &mut Vec<String>, r: std::result::Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(e);
            None
        }
    }
}

/// `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
pub fn is_lower_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// The Go validator's `url` rule: a scheme and a host (or an opaque part); `file:` passes.
pub fn is_valid_url(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    if l.starts_with("file:") {
        return true;
    }
    match l.split_once(':') {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && match rest.strip_prefix("//") {
                    Some(after) => !after.split(['/', '?', '#']).next().unwrap_or("").is_empty(),
                    None => !rest.is_empty(),
                }
        }
        None => false,
    }
}

/// The restart script must exist, be a file and carry an execute bit (protocol.md §8.1 step 4).
pub fn check_restart_script(p: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(p).map_err(|e| {
        format!(
            "postgresql.restart_script_path is set but {} is not accessible: {e}",
            p.display()
        )
    })?;
    if md.is_dir() {
        return Err(format!(
            "postgresql.restart_script_path: {} is a directory, expected an executable file",
            p.display()
        ));
    }
    let mode = md.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(format!(
            "postgresql.restart_script_path: {} is not executable (mode {:o}); chmod +x it",
            p.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_order_and_both_formats_refused() {
        let root = std::env::temp_dir().join(format!("dbtune-find-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (a, b) = (root.join("etc"), root.join("etc/dbtune"));
        std::fs::create_dir_all(&b).unwrap();
        let dirs = [a.clone(), b.clone()];
        assert_eq!(find_in(&dirs).unwrap(), None);
        std::fs::write(b.join("dbtune.yaml"), "").unwrap();
        assert_eq!(find_in(&dirs).unwrap(), Some(b.join("dbtune.yaml")));
        // An earlier directory wins, whatever the format.
        std::fs::write(a.join("dbtune.toml"), "").unwrap();
        assert_eq!(find_in(&dirs).unwrap(), Some(a.join("dbtune.toml")));
        std::fs::write(a.join("dbtune.yaml"), "").unwrap();
        let err = find_in(&dirs).unwrap_err().to_string();
        assert!(
            err.contains("dbtune.yaml") && err.contains("dbtune.toml") && err.contains("keep one"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn uuid_rule_is_lower_case_only() {
        assert!(is_lower_uuid("6ba7b811-9dad-11d1-80b4-00c04fd430c8"));
        assert!(!is_lower_uuid("6BA7B811-9DAD-11D1-80B4-00C04FD430C8"));
        assert!(!is_lower_uuid("6ba7b8119dad11d180b400c04fd430c8"));
    }

    #[test]
    fn url_rule_matches_go_validator() {
        for ok in [
            "http://localhost",
            "http://192.168.1.100:3000",
            "https://x/api",
            "localhost:8080",
            "file:/x",
        ] {
            assert!(is_valid_url(ok), "{ok}");
        }
        for bad in ["app.dbtune.com", ":8080", "", "http://"] {
            assert!(!is_valid_url(bad), "{bad}");
        }
    }
}
