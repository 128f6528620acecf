//! Distribution id and version, checked in the same order as the Go agent's host library:
//! vendor release files first, `/etc/os-release` last. Empty values become `unknown`.
//!
//! Not sysinfo: its `System::distribution_id`/`os_version` read only `/etc/os-release` (fixed
//! paths, so no fixture root), which answers `rhel` where the Go agent sends `redhat`, and `12`
//! where it sends Debian's `12.5` from `/etc/debian_version`; the platform has seen the Go
//! agent's answers for years, so they are kept (tests below pin Debian, RHEL and Alpine).

use super::etc_path;
use std::path::Path;

fn first_line(etc: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(etc.join(rel))
        .ok()
        .map(|t| t.lines().next().unwrap_or("").trim().to_string())
}

fn kv_file(etc: &Path, rel: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(etc.join(rel))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect()
}

fn kv(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// `Red Hat Enterprise Linux release 9.2 (Plow)` → ("redhat", "9.2").
fn redhatish(text: &str) -> (String, String) {
    let l = text.to_lowercase();
    let platform = if l.starts_with("red hat") {
        "redhat".to_string()
    } else if l.starts_with("centos") {
        "centos".to_string()
    } else if l.starts_with("scientific") {
        "scientific".to_string()
    } else if l.starts_with("amazon") {
        "amazon".to_string()
    } else {
        l.split_whitespace().next().unwrap_or("").to_string()
    };
    let version = l
        .split_whitespace()
        .skip_while(|w| *w != "release")
        .nth(1)
        .unwrap_or("")
        .to_string();
    (platform, version)
}

/// (platform, version), each `unknown` when empty.
pub fn detect() -> (String, String) {
    detect_at(&etc_path(""))
}

fn detect_at(etc: &Path) -> (String, String) {
    let (p, v) = detect_raw(etc);
    let or_unknown = |s: String| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s
        }
    };
    (or_unknown(p), or_unknown(v))
}

fn detect_raw(etc: &Path) -> (String, String) {
    if let Some(t) = first_line(etc, "oracle-release") {
        return ("oracle".into(), redhatish(&t).1);
    }
    if let Some(t) = first_line(etc, "enterprise-release") {
        return ("oracle".into(), redhatish(&t).1);
    }
    if let Some(t) = first_line(etc, "slackware-version") {
        return (
            "slackware".into(),
            t.split_whitespace().nth(1).unwrap_or("").to_string(),
        );
    }
    if let Some(t) = first_line(etc, "debian_version") {
        let lsb = kv_file(etc, "lsb-release");
        return match kv(&lsb, "DISTRIB_ID").as_deref() {
            Some("Ubuntu") => (
                "ubuntu".into(),
                kv(&lsb, "DISTRIB_RELEASE").unwrap_or_default(),
            ),
            Some("LinuxMint") => (
                "linuxmint".into(),
                kv(&lsb, "DISTRIB_RELEASE").unwrap_or_default(),
            ),
            _ => {
                let os = kv_file(etc, "os-release");
                match kv(&os, "ID").as_deref() {
                    Some("ubuntu") => ("ubuntu".into(), kv(&os, "VERSION_ID").unwrap_or_default()),
                    _ => ("debian".into(), t),
                }
            }
        };
    }
    for f in ["redhat-release", "system-release"] {
        if let Some(t) = first_line(etc, f) {
            return redhatish(&t);
        }
    }
    if let Some(t) = first_line(etc, "gentoo-release") {
        return (
            "gentoo".into(),
            t.split_whitespace().last().unwrap_or("").to_string(),
        );
    }
    if std::fs::metadata(etc.join("arch-release")).is_ok() {
        return ("arch".into(), String::new());
    }
    if let Some(t) = first_line(etc, "alpine-release") {
        return ("alpine".into(), t);
    }
    let os = kv_file(etc, "os-release");
    (
        kv(&os, "ID").unwrap_or_default(),
        kv(&os, "VERSION_ID").unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redhat_lines() {
        assert_eq!(
            redhatish("Rocky Linux release 9.3 (Blue Onyx)"),
            ("rocky".into(), "9.3".into())
        );
        assert_eq!(
            redhatish("Red Hat Enterprise Linux release 8.9 (Ootpa)"),
            ("redhat".into(), "8.9".into())
        );
    }

    fn etc(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/host/etc")
            .join(name)
    }

    #[test]
    fn debian_rhel_alpine_fixtures() {
        // Debian: the point release from debian_version, not os-release's VERSION_ID "12".
        assert_eq!(
            detect_at(&etc("debian12")),
            ("debian".into(), "12.5".into())
        );
        // Ubuntu also has debian_version; lsb-release names it.
        assert_eq!(
            detect_at(&etc("ubuntu22")),
            ("ubuntu".into(), "22.04".into())
        );
        // RHEL: redhat-release wins over os-release's ID "rhel".
        assert_eq!(detect_at(&etc("rhel9")), ("redhat".into(), "9.2".into()));
        assert_eq!(
            detect_at(&etc("alpine319")),
            ("alpine".into(), "3.19.1".into())
        );
        // Only os-release (e.g. a distroless image).
        assert_eq!(
            detect_at(&etc("osrelease-only")),
            ("opensuse-leap".into(), "15.5".into())
        );
        assert_eq!(
            detect_at(&etc("empty")),
            ("unknown".into(), "unknown".into())
        );
    }
}
