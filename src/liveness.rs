//! Liveness for supervisors: the runner's supervision loop touches `<state_dir>/alive` while
//! every loop makes progress (and pings the systemd watchdog); `dbtune-agent --health` checks
//! that file, for container and Kubernetes exec probes without an HTTP server.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A probe fails when the file is older than this (the runner refreshes it every 10 s at most).
pub const STALE_AFTER: Duration = Duration::from_secs(90);

pub fn alive_file(state_dir: &Path) -> PathBuf {
    state_dir.join("alive")
}

/// Records progress now. Errors are ignored (a read-only state dir must not stop the agent).
pub fn touch(state_dir: &Path) {
    let _ = std::fs::create_dir_all(state_dir);
    let _ = std::fs::write(
        alive_file(state_dir),
        crate::timefmt::utc_seconds(SystemTime::now()),
    );
}

/// `Ok(age)` while the agent is alive, else the reason.
pub fn check(state_dir: &Path) -> Result<Duration, String> {
    let f = alive_file(state_dir);
    let m = std::fs::metadata(&f)
        .and_then(|m| m.modified())
        .map_err(|e| {
            format!(
                "no liveness file {}: {e} (is the agent running with this state_dir?)",
                f.display()
            )
        })?;
    let age = SystemTime::now().duration_since(m).unwrap_or_default();
    if age > STALE_AFTER {
        Err(format!(
            "loops made no progress for {}s ({} is stale)",
            age.as_secs(),
            f.display()
        ))
    } else {
        Ok(age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_missing() {
        let d = std::env::temp_dir().join(format!("dbtune-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        assert!(check(&d).is_err());
        touch(&d);
        assert!(check(&d).unwrap() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&d);
    }
}
