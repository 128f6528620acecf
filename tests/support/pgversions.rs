//! PostgreSQL binaries for the version matrix: `.ci/setup-pg-versions.sh` fetches 13, 14, 16, 17
//! and 18 into `.cache/pg/<major>/` (override with `DBTUNE_TEST_PG_CACHE`); 15 is the system's.
//! With `CI=true` every major must be present, otherwise the matrix test fails.

#![allow(dead_code)]

use super::pgcluster::PgBin;
use std::path::PathBuf;

pub const MAJORS: &[u32] = &[13, 14, 15, 16, 17, 18];

pub fn cache_dir() -> PathBuf {
    std::env::var("DBTUNE_TEST_PG_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/pg"))
}

/// Binaries of one major, if available.
pub fn bin_for(major: u32) -> Option<PgBin> {
    // Resolved, so a cache linked outside an unreadable checkout is reached by user postgres.
    let base = cache_dir();
    let dir = std::fs::canonicalize(&base)
        .unwrap_or(base)
        .join(major.to_string());
    if dir.join("bin/initdb").exists() {
        let lib = dir.join("lib");
        // The system's PostgreSQL (linked into the cache) needs no bundled libraries.
        let bundled = lib.is_dir() && !dir.join("bin").is_symlink();
        return Some(PgBin {
            bin: dir.join("bin"),
            lib: bundled.then_some(lib),
        });
    }
    let system = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    system.join("initdb").exists().then_some(PgBin {
        bin: system,
        lib: None,
    })
}

/// The majors that can run here; with `CI=true` all of [`MAJORS`] are required.
pub fn available() -> Vec<(u32, PgBin)> {
    let found: Vec<(u32, PgBin)> = MAJORS
        .iter()
        .filter_map(|m| bin_for(*m).map(|b| (*m, b)))
        .collect();
    if std::env::var("CI").as_deref() == Ok("true") {
        let have: Vec<u32> = found.iter().map(|(m, _)| *m).collect();
        let missing: Vec<u32> = MAJORS
            .iter()
            .copied()
            .filter(|m| !have.contains(m))
            .collect();
        assert!(
            missing.is_empty(),
            "CI=true but PostgreSQL {missing:?} are missing from {} (run .ci/setup-pg-versions.sh)",
            cache_dir().display()
        );
    }
    found
}
