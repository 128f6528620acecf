//! A restart in flight: the process running it (a restart script, `systemctl restart`), as
//! recorded in the journal, so an agent started later (after a SIGKILL, a crash, a stop in
//! the middle of a restart) can tell whether that restart is still running and wait for it
//! instead of judging a half-restarted server or starting a second restart beside it.
//!
//! A process is identified by pid, its start time in clock ticks since boot
//! (`/proc/<pid>/stat` field 22) and the boot id, so a reused pid or a reboot never passes
//! for the restarter.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: i32,
    /// Its own process group and session (it is started with `setsid`).
    pub pgid: i32,
    pub start_ticks: u64,
    #[serde(default)]
    pub boot_id: String,
    /// For messages: what runs (`restart script /x`).
    pub command: String,
}

impl Process {
    /// The identity of the running process `pid`, if it exists.
    pub fn of(pid: i32, command: &str) -> Option<Process> {
        Some(Process {
            pid,
            pgid: pid,
            start_ticks: start_ticks(pid)?,
            boot_id: boot_id(),
            command: command.to_string(),
        })
    }

    /// Whether this very process is still running (not exited, not a zombie).
    pub fn alive(&self) -> bool {
        if self.boot_id != boot_id() {
            return false;
        }
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.command, self.pid)
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Start time of a live (non-zombie) process, from `/proc/<pid>/stat`.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields start after the
    // last ')'. Field 3 is the state, field 22 the start time.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether PostgreSQL (re)started at or after `t` (unix seconds); None when it cannot be
/// asked.
pub fn restarted_since(pg: &crate::pg::Pg, t: i64) -> Option<bool> {
    let mut c = pg.conn().ok()?;
    crate::pg::queries::postmaster_start_epoch(&mut c)
        .ok()
        .map(|s| s >= t)
}

/// What `watch` was given: called with each restart command spawned.
type OnSpawn = Box<dyn FnMut(&Process)>;

thread_local! {
    static WATCH: RefCell<Option<OnSpawn>> = const { RefCell::new(None) };
}

/// While the returned guard lives, a restart command spawned on this thread is reported to
/// `on_spawn` at once (the pipeline journals it before waiting on it).
pub fn watch(on_spawn: impl FnMut(&Process) + 'static) -> Watch {
    WATCH.with(|w| *w.borrow_mut() = Some(Box::new(on_spawn)));
    Watch(())
}

pub struct Watch(());

impl Drop for Watch {
    fn drop(&mut self) {
        WATCH.with(|w| *w.borrow_mut() = None);
    }
}

/// Called by whatever spawns a restart command, right after the spawn.
pub fn spawned(p: &Process) {
    WATCH.with(|w| {
        if let Some(f) = w.borrow_mut().as_mut() {
            f(p);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_recognised_and_an_exited_one_is_not() {
        let me = Process::of(std::process::id() as i32, "test").unwrap();
        assert!(me.alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let p = Process::of(child.id() as i32, "true");
        child.wait().unwrap();
        if let Some(p) = p {
            assert!(!p.alive(), "an exited process is not alive");
        }
        let reused = Process {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(!reused.alive(), "a different start time is another process");
        let rebooted = Process {
            boot_id: "other".into(),
            ..me
        };
        assert!(!rebooted.alive());
    }

    #[test]
    fn the_watch_sees_spawns_only_while_armed() {
        use std::rc::Rc;
        let seen = Rc::new(RefCell::new(Vec::new()));
        let p = Process::of(std::process::id() as i32, "x").unwrap();
        spawned(&p);
        {
            let s = seen.clone();
            let _w = watch(move |p| s.borrow_mut().push(p.pid));
            spawned(&p);
        }
        spawned(&p);
        assert_eq!(*seen.borrow(), vec![p.pid]);
    }
}
