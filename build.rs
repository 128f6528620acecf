//! Embeds the build identity read by `src/version.rs`: `DBTUNE_COMMIT` (short git hash) and
//! `DBTUNE_BUILD_DATE` (UTC, `YYYY-MM-DDTHH:MM:SSZ`). A value already set in the environment wins,
//! so release pipelines and reproducible builds (`SOURCE_DATE_EPOCH`) control both.
//! `DBTUNE_VERSION` is never invented here: unset, the crate version is used.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "DBTUNE_VERSION",
        "DBTUNE_COMMIT",
        "DBTUNE_BUILD_DATE",
        "SOURCE_DATE_EPOCH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    if std::env::var_os("DBTUNE_COMMIT").is_none() {
        watch_git_head();
        if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
            println!("cargo:rustc-env=DBTUNE_COMMIT={commit}");
        }
    }

    if std::env::var_os("DBTUNE_BUILD_DATE").is_none() {
        let secs = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v.trim().parse::<i64>().unwrap_or_else(|_| {
                panic!("SOURCE_DATE_EPOCH must be whole seconds since 1970, got {v:?}")
            }),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        };
        println!("cargo:rustc-env=DBTUNE_BUILD_DATE={}", utc_rfc3339(secs));
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// Rebuild when HEAD moves: watch `.git/HEAD` and the ref it points at (worktrees included, via
/// `git rev-parse --git-path`). Without git nothing is watched and the commit stays `unknown`.
fn watch_git_head() {
    let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) else {
        return;
    };
    println!("cargo:rerun-if-changed={head}");
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(path) = git(&["rev-parse", "--git-path", &reference]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        // Packed refs move on `git gc`/`git pack-refs`.
        if let Some(packed) = git(&["rev-parse", "--git-path", "packed-refs"]) {
            if std::path::Path::new(&packed).exists() {
                println!("cargo:rerun-if-changed={packed}");
            }
        }
    }
}

/// Seconds since the epoch → `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, civil-from-days).
fn utc_rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}
