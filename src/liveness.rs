//! Liveness for supervisors: the runner's supervision loop touches a liveness file while every
//! loop makes progress (and pings the systemd watchdog); `dbtune-agent --health` checks that
//! file, for container and Kubernetes exec probes without an HTTP server.
//!
//! The file lives in the runtime directory, not in `state_dir`: a read-only state directory
//! must not make a running agent look dead. The first of these that can be written is used:
//! `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`, first entry), `/run/dbtune-agent`,
//! `state_dir`, then `<temp dir>/dbtune-agent-<uid>` (mode 0700, ours only). `--health` reads
//! the freshest of those. The file is named for the state directory (`alive-<hash>`), so
//! several agents on one host, each with its own `state_dir`, do not share one file. Its
//! content: the time, the state directory and, while the agent waits for PostgreSQL, why it
//! is not ready.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A probe fails when the file is older than this (the runner refreshes it every 10 s at most).
pub const STALE_AFTER: Duration = Duration::from_secs(90);

/// The runtime directory systemd's `RuntimeDirectory=dbtune-agent` creates.
pub const RUN_DIR: &str = "/run/dbtune-agent";

const NOT_READY: &str = "not ready: ";

/// What `--health` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    pub age: Duration,
    pub file: PathBuf,
    /// Why the agent is not ready yet (e.g. waiting for PostgreSQL), if it said so.
    pub not_ready: Option<String>,
}

/// The file's name for `state_dir` (FNV-1a of its absolute path).
pub fn file_name(state_dir: &Path) -> String {
    let abs = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in abs.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("alive-{h:016x}")
}

/// The candidate directories, in the order the agent tries them.
pub fn candidates(state_dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(first) = std::env::var_os("RUNTIME_DIRECTORY")
        .as_deref()
        .and_then(|d| d.to_str().map(str::to_string))
        .and_then(|d| d.split(':').next().map(str::to_string))
        .filter(|d| !d.is_empty())
    {
        v.push(PathBuf::from(first));
    }
    v.push(PathBuf::from(RUN_DIR));
    v.push(state_dir.to_path_buf());
    v.push(private_temp_dir());
    v
}

fn private_temp_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("dbtune-agent-{uid}"))
}

/// The temp-dir fallback is shared ground: use it only when it is ours and private.
fn private_ok(dir: &Path) -> bool {
    if dir != private_temp_dir() {
        return true;
    }
    let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
    // SAFETY: as above.
    let uid = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0)
}

/// Records progress now in the first writable candidate; returns where (None: nowhere, which
/// must not stop the agent).
pub fn touch(state_dir: &Path, not_ready: Option<&str>) -> Option<PathBuf> {
    let mut text = format!(
        "{}\nstate_dir: {}\n",
        crate::timefmt::utc_seconds(SystemTime::now()),
        state_dir.display()
    );
    if let Some(r) = not_ready {
        // One line: the reason may come from a multi-line error.
        text.push_str(NOT_READY);
        text.push_str(&r.replace('\n', " "));
        text.push('\n');
    }
    let name = file_name(state_dir);
    for dir in candidates(state_dir) {
        if dir.as_path() == Path::new(RUN_DIR) || dir == state_dir {
            let _ = std::fs::create_dir_all(&dir);
        }
        if !private_ok(&dir) {
            continue;
        }
        let f = dir.join(&name);
        // Written beside and renamed, so a probe never reads half a file.
        let tmp = dir.join(format!(".{name}.tmp"));
        if std::fs::write(&tmp, &text).is_ok() && std::fs::rename(&tmp, &f).is_ok() {
            return Some(f);
        }
        let _ = std::fs::remove_file(&tmp);
    }
    None
}

/// `Ok` while the agent is alive (its freshest liveness file is recent), else the reason.
pub fn check(state_dir: &Path) -> Result<Alive, String> {
    let name = file_name(state_dir);
    let dirs = candidates(state_dir);
    let newest = dirs
        .iter()
        .map(|d| d.join(&name))
        .filter_map(|f| {
            let m = std::fs::metadata(&f).and_then(|m| m.modified()).ok()?;
            Some((m, f))
        })
        .max_by_key(|(m, _)| *m);
    let Some((m, file)) = newest else {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!(
            "no liveness file {name} in {} (is the agent running with this state_dir?)",
            looked.join(", ")
        ));
    };
    let age = SystemTime::now().duration_since(m).unwrap_or_default();
    if age > STALE_AFTER {
        return Err(format!(
            "loops made no progress for {}s ({} is stale)",
            age.as_secs(),
            file.display()
        ));
    }
    let not_ready = std::fs::read_to_string(&file).ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix(NOT_READY).map(str::to_string))
    });
    Ok(Alive {
        age,
        file,
        not_ready,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_missing_and_named_per_state_dir() {
        let d = std::env::temp_dir().join(format!("dbtune-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        assert!(check(&d).is_err());
        let f = touch(&d, Some("waiting for PostgreSQL:\nrefused")).unwrap();
        let a = check(&d).unwrap();
        assert!(a.age < Duration::from_secs(5));
        assert_eq!(a.file, f);
        assert_eq!(
            a.not_ready.as_deref(),
            Some("waiting for PostgreSQL: refused")
        );
        touch(&d, None);
        assert_eq!(check(&d).unwrap().not_ready, None);
        assert_ne!(file_name(&d), file_name(&d.join("other")));
        let _ = std::fs::remove_file(f);
        let _ = std::fs::remove_dir_all(&d);
    }
}
