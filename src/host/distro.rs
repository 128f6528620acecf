//! Distribution id and version, checked in the same order as the Go agent's host library:
//! vendor release files first, `/etc/os-release` last. Empty values become `unknown`.

use super::etc_path;

fn first_line(rel: &str) -> Option<String> {
    std::fs::read_to_string(etc_path(rel))
        .ok()
        .map(|t| t.lines().next().unwrap_or("").trim().to_string())
}

fn kv_file(rel: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(etc_path(rel))
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
    let (p, v) = detect_raw();
    let or_unknown = |s: String| {
        if s.is_empty() {
            "unknown".to_string()
        } else {
            s
        }
    };
    (or_unknown(p), or_unknown(v))
}

fn detect_raw() -> (String, String) {
    if let Some(t) = first_line("oracle-release") {
        return ("oracle".into(), redhatish(&t).1);
    }
    if let Some(t) = first_line("enterprise-release") {
        return ("oracle".into(), redhatish(&t).1);
    }
    if let Some(t) = first_line("slackware-version") {
        return (
            "slackware".into(),
            t.split_whitespace().nth(1).unwrap_or("").to_string(),
        );
    }
    if let Some(t) = first_line("debian_version") {
        let lsb = kv_file("lsb-release");
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
                let os = kv_file("os-release");
                match kv(&os, "ID").as_deref() {
                    Some("ubuntu") => ("ubuntu".into(), kv(&os, "VERSION_ID").unwrap_or_default()),
                    _ => ("debian".into(), t),
                }
            }
        };
    }
    for f in ["redhat-release", "system-release"] {
        if let Some(t) = first_line(f) {
            return redhatish(&t);
        }
    }
    if let Some(t) = first_line("gentoo-release") {
        return (
            "gentoo".into(),
            t.split_whitespace().last().unwrap_or("").to_string(),
        );
    }
    if std::fs::metadata(etc_path("arch-release")).is_ok() {
        return ("arch".into(), String::new());
    }
    if let Some(t) = first_line("alpine-release") {
        return ("alpine".into(), t);
    }
    let os = kv_file("os-release");
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
}
