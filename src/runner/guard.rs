//! Panic guard (protocol.md §10): a panic in one task or collector becomes that unit's error;
//! it never reaches the daemon. Consecutive panics per name are counted and reported to
//! `log-entries` as `<name>_panic` at the 1st, 10th, 100th, … occurrence.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once};

thread_local! {
    /// Message, location and backtrace of the last panic on this thread (set by the hook).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Depth of guarded runs on this thread: panics outside a guard keep the default report.
    static IN_GUARD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

static HOOK: Once = Once::new();

/// Wraps the panic hook: inside a guarded run the panic is recorded for the guard (which
/// decides what is logged and reported); elsewhere the previous hook reports it as usual.
pub fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_GUARD.with(|g| g.get()) == 0 {
                previous(info);
                return;
            }
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "panic with a non-string payload".to_string()
            };
            let loc = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let bt = std::backtrace::Backtrace::force_capture().to_string();
            let text = format!("{msg}{loc}\n{bt}");
            log::debug!("panic recorded: {msg}{loc}");
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(text));
        }));
    });
}

fn is_due(n: u64) -> bool {
    let mut p = 1u64;
    while p <= 100_000_000 {
        if n == p {
            return true;
        }
        p *= 10;
    }
    false
}

/// The outcome of a guarded run.
pub enum Guarded<T> {
    Done(T),
    /// A panic to report: the error message (`panic in <name> (consecutive panics: n): …`).
    PanicDue(String),
    /// A repeated panic that is not due for a report (counts as success, logged at debug).
    PanicQuiet,
}

#[derive(Default)]
pub struct PanicGuard {
    counts: Mutex<HashMap<String, u64>>,
}

impl PanicGuard {
    pub fn run<T>(&self, name: &str, f: impl FnOnce() -> T) -> Guarded<T> {
        install_hook();
        IN_GUARD.with(|g| g.set(g.get() + 1));
        let result = catch_unwind(AssertUnwindSafe(f));
        IN_GUARD.with(|g| g.set(g.get() - 1));
        match result {
            Ok(v) => {
                self.counts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Guarded::Done(v)
            }
            Err(_) => {
                let n = {
                    let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
                    let e = c.entry(name.to_string()).or_insert(0);
                    *e += 1;
                    *e
                };
                let detail = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| "unknown panic".into());
                let mut msg = format!("panic in {name} (consecutive panics: {n}): {detail}");
                if msg.len() > 4096 + 64 {
                    let mut cut = 4096 + 64;
                    while !msg.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    msg.truncate(cut);
                }
                if is_due(n) {
                    Guarded::PanicDue(msg)
                } else {
                    log::debug!("{msg}");
                    Guarded::PanicQuiet
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_first_and_tenth() {
        let g = PanicGuard::default();
        let mut due = Vec::new();
        for i in 1..=12 {
            if let Guarded::PanicDue(m) = g.run("x", || -> () { panic!("boom {i}") }) {
                due.push(m);
            }
        }
        assert_eq!(due.len(), 2);
        assert!(
            due[0].starts_with("panic in x (consecutive panics: 1): boom 1"),
            "{}",
            due[0]
        );
        assert!(due[1].starts_with("panic in x (consecutive panics: 10): boom 10"));
        assert!(matches!(g.run("x", || 5), Guarded::Done(5)));
        assert!(matches!(
            g.run("x", || -> () { panic!("again") }),
            Guarded::PanicDue(_)
        ));
    }
}
