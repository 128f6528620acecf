//! Local policy: which parameters the agent may change at all (a default deny list of
//! parameters that run commands, load code, point at files or open the server to the network,
//! overridable with `apply.allow`; `apply.deny`), the freeze switch, and maintenance windows.

use crate::config::apply::ApplyConfig;
use std::path::{Path, PathBuf};

/// Parameters refused by default. Patterns end or start with `*`.
pub const DEFAULT_DENY: &[&str] = &[
    // Run shell commands.
    "*_command",
    "ssl_passphrase_command_supports_reload",
    // Load code into the server, or choose which code runs.
    "*_library",
    "*_libraries",
    "dynamic_library_path",
    "extension_control_path",
    "extension_destdir",
    "jit_provider",
    "search_path",
    // Point at files and directories (read, written or executed by the server).
    "*_file",
    "*_directory",
    "*_directories",
    "*_dir",
    "*_keyfile",
    "log_filename",
    "log_file_mode",
    "unix_socket_group",
    "unix_socket_permissions",
    // Network exposure, encryption and authentication, replication sources (credentials).
    "listen_addresses",
    "port",
    "ssl*",
    "password_encryption",
    "krb_*",
    "db_user_namespace",
    "primary_conninfo",
    "primary_slot_name",
    // Switch off crash safety or integrity checks, or the ALTER SYSTEM guard itself.
    "fsync",
    "full_page_writes",
    "data_sync_retry",
    "zero_damaged_pages",
    "ignore_checksum_failure",
    "ignore_invalid_pages",
    "ignore_system_indexes",
    "allow_system_table_mods",
    "allow_alter_system",
];

fn matches(pattern: &str, name: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix('*') {
        name.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        name.starts_with(prefix)
    } else {
        pattern == name
    }
}

/// Why a parameter may not be changed, or None.
pub fn refusal(cfg: &ApplyConfig, name: &str) -> Option<String> {
    let n = name.to_ascii_lowercase();
    if let Some(p) = cfg.deny.iter().find(|p| matches(p, &n)) {
        return Some(format!("denied by local policy (apply.deny: {p})"));
    }
    if cfg.allow.iter().any(|a| matches(a, &n)) {
        return None;
    }
    DEFAULT_DENY.iter().find(|p| matches(p, &n)).map(|p| {
        format!(
            "refused by the default policy ({p}: runs commands, loads code, points at files, changes the server's exposure or switches off a safety check); list it in apply.allow (DBT_APPLY_ALLOW) to permit it"
        )
    })
}

/// The freeze file: while it exists nothing is applied.
pub fn freeze_file(state_dir: &Path) -> PathBuf {
    state_dir.join("freeze")
}

/// Why applying is frozen, or None.
pub fn frozen(cfg: &ApplyConfig, state_dir: &Path) -> Option<String> {
    if cfg.frozen {
        return Some("configuration changes are frozen by apply.frozen (DBT_APPLY_FROZEN)".into());
    }
    let f = freeze_file(state_dir);
    if f.exists() {
        return Some(format!(
            "configuration changes are frozen by the freeze file {}",
            f.display()
        ));
    }
    None
}

/// UTC maintenance windows: `"02:00-04:00"` or `"sat,sun 01:00-05:00"` or `"mon-fri 22:00-02:00"`
/// (a window may cross midnight; days name the day it opens).
#[derive(Clone, Debug, Default)]
pub struct Windows(Vec<Window>);

#[derive(Clone, Debug)]
struct Window {
    /// Bit d set: opens on weekday d (0 = Sunday).
    days: u8,
    start: u32,
    end: u32,
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn day(s: &str) -> Result<usize, String> {
    DAYS.iter()
        .position(|d| s.eq_ignore_ascii_case(d))
        .ok_or_else(|| format!("{s:?} is not a day (expected sun, mon, tue, wed, thu, fri, sat)"))
}

fn minute(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time of day (expected HH:MM, 00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Windows {
    pub fn parse(items: &[String]) -> Result<Windows, String> {
        let mut out = Vec::new();
        for item in items {
            let item = item.trim();
            let (days_spec, range) = match item.rsplit_once(' ') {
                Some((d, r)) => (Some(d.trim()), r),
                None => (None, item),
            };
            let mut days = 0u8;
            match days_spec {
                None => days = 0x7f,
                Some(spec) => {
                    for part in spec.split(',') {
                        let part = part.trim();
                        if let Some((a, b)) = part.split_once('-') {
                            let (a, b) = (day(a)?, day(b)?);
                            let mut d = a;
                            loop {
                                days |= 1 << d;
                                if d == b {
                                    break;
                                }
                                d = (d + 1) % 7;
                            }
                        } else {
                            days |= 1 << day(part)?;
                        }
                    }
                }
            }
            let (s, e) = range.split_once('-').ok_or_else(|| {
                format!("{item:?}: expected [days ]HH:MM-HH:MM, e.g. \"sat,sun 02:00-05:00\"")
            })?;
            let (start, end) = (minute(s)?, minute(e)?);
            if start == end {
                return Err(format!("{item:?}: the window is empty"));
            }
            out.push(Window { days, start, end });
        }
        Ok(Windows(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `unix_secs` (UTC) falls in a window; true when no window is configured.
    pub fn is_open(&self, unix_secs: i64) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let days = unix_secs.div_euclid(86_400);
        let weekday = (days + 4).rem_euclid(7) as u8; // 1970-01-01 was a Thursday
        let yesterday = (weekday + 6) % 7;
        let m = (unix_secs.rem_euclid(86_400) / 60) as u32;
        self.0.iter().any(|w| {
            if w.start < w.end {
                w.days & (1 << weekday) != 0 && m >= w.start && m < w.end
            } else {
                (w.days & (1 << weekday) != 0 && m >= w.start)
                    || (w.days & (1 << yesterday) != 0 && m < w.end)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_deny_list_and_overrides() {
        let mut cfg = ApplyConfig::default();
        for n in [
            "archive_command",
            "restore_command",
            "archive_library",
            "shared_preload_libraries",
            "session_preload_libraries",
            "ssl_key_file",
            "ssl_crl_dir",
            "data_directory",
            "unix_socket_directories",
            "log_directory",
            "krb_server_keyfile",
            "port",
            "listen_addresses",
            "jit_provider",
            "ssl",
            "ssl_min_protocol_version",
            "fsync",
            "extension_destdir",
            "search_path",
        ] {
            assert!(refusal(&cfg, n).is_some(), "{n} should be denied");
        }
        for n in [
            "work_mem",
            "shared_buffers",
            "log_min_duration_statement",
            "max_wal_size",
            "log_temp_files",
            "log_replication_commands",
            "max_files_per_process",
            "temp_file_limit",
            "syslog_facility",
            "wal_compression",
            "synchronous_commit",
        ] {
            assert!(refusal(&cfg, n).is_none(), "{n} should be allowed");
        }
        cfg.allow = vec!["archive_command".into()];
        assert!(refusal(&cfg, "archive_command").is_none());
        cfg.deny = vec!["work_*".into(), "archive_command".into()];
        assert!(refusal(&cfg, "work_mem").unwrap().contains("apply.deny"));
        assert!(refusal(&cfg, "archive_command")
            .unwrap()
            .contains("apply.deny"));
    }

    #[test]
    fn windows() {
        // 2024-01-06 was a Saturday; 03:00 UTC.
        let sat_3am = 1_704_510_000;
        let w = Windows::parse(&["sat,sun 02:00-05:00".into()]).unwrap();
        assert!(w.is_open(sat_3am));
        assert!(!w.is_open(sat_3am + 3 * 3600));
        assert!(!w.is_open(sat_3am - 2 * 86_400));
        let night = Windows::parse(&["fri 22:00-04:00".into()]).unwrap();
        assert!(
            night.is_open(sat_3am),
            "Friday's window runs into Saturday 04:00"
        );
        assert!(Windows::parse(&[]).unwrap().is_open(0));
        assert!(Windows::parse(&["25:00-26:00".into()]).is_err());
        assert!(Windows::parse(&["funday 01:00-02:00".into()]).is_err());
    }
}
