//! The runner: periodic tasks on a fixed pool of worker threads, no async runtime.
//!
//! One scheduler thread (the caller's) keeps each task's next due time, hands due tasks to a
//! lane (bounded crossbeam channel + fixed workers), and gets completions back on a channel.
//! A task never overlaps itself; missed ticks collapse into one. Database tasks skip while the
//! health gate is closed. Every run is wrapped in the panic guard. The scheduler also watches
//! run times (a task past its deadline is reported once) and feeds the systemd watchdog only
//! while no task is wedged. SIGTERM/SIGINT stop scheduling; running tasks get a few seconds to
//! finish; queued log lines are flushed.

pub mod guard;
pub mod health;
pub mod lanes;
pub mod signals;
pub mod startup;
pub mod status;
pub mod tasks;

use crate::adapter::Adapter;
use crate::collectors::{self, ServerInfo};
use crate::error::Error;
use crate::model::ErrorReport;
use crate::platform::Platform;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use guard::{Guarded, PanicGuard};
use health::HealthGate;
use lanes::Lane;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tasks::{CatalogSlot, FailedApply, MetricSlot};

/// Values SIGHUP may change while running.
#[derive(Clone, Debug)]
pub struct Settings {
    pub memory_threshold: f64,
    pub allow_restart: bool,
}

/// State shared by all tasks.
pub struct Shared {
    pub adapter: Arc<dyn Adapter>,
    pub platform: Arc<Platform>,
    pub health: Arc<HealthGate>,
    pub guard: Arc<PanicGuard>,
    pub stop: Arc<AtomicBool>,
    pub settings: Arc<RwLock<Settings>>,
    /// Swapped whole on a probe; a task takes a cheap `Arc` snapshot (no copy of the caps set).
    pub server: Arc<RwLock<Arc<ServerInfo>>>,
    pub agent_id: String,
    pub start_time: SystemTime,
    pub last_signal: Mutex<Option<Instant>>,
    pub failed_apply: Mutex<Option<FailedApply>>,
    /// The last invalid recommendation reported (reported once until it changes).
    pub bad_recommendation: Mutex<Option<String>>,
    /// Held while an apply runs, so shutdown can wait for it.
    pub applying: Mutex<()>,
    /// What `dbtune-agent status` shows: last sends, platform outage.
    pub tracker: status::Tracker,
    /// Where the status file goes (`None`: not written, e.g. in tests).
    pub state_dir: Option<std::path::PathBuf>,
    /// Set when the daemon must end with an error (a start-up check failed after the wait for
    /// PostgreSQL); the scheduler stops and the caller exits non-zero with it.
    pub exit_error: Mutex<Option<String>>,
}

/// Sends an error report (`log-entries`), logging it as the Go agent does.
pub fn report(platform: &Platform, error_type: &str, message: &str) {
    if platform.is_dry_run() {
        log::error!("🚨 Error Report (dry run, written to the output, not sent), type: {error_type}, message: {message}");
    } else {
        log::error!("🚨 Sending Error Report, type: {error_type}, message: {message}");
    }
    let r = ErrorReport {
        error_type: error_type.to_string(),
        error_message: message.to_string(),
    };
    if let Err(e) = platform.log_entry(&r) {
        log::error!("failed to send error report: {e}");
    }
}

/// Which worker lane a task runs on. Lanes isolate workloads: a backlog of catalog sends (a
/// platform outage, a slow catalog) never delays the core loops, and neither delays the
/// heartbeat or the guardrail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LaneKind {
    /// Heartbeat, guardrails, log shipping: platform only.
    Control = 0,
    /// Metrics, system info, config sync/apply.
    Core = 1,
    /// Catalog collectors.
    Catalog = 2,
}

enum Body {
    Heartbeat,
    Metrics(Vec<MetricSlot>),
    SystemInfo,
    Config,
    Guardrail,
    RawLogs,
    Catalog(CatalogSlot),
    Status,
}

struct Task {
    name: String,
    interval: Duration,
    lane: LaneKind,
    gated: bool,
    /// Past this a run is "wedged" for the watchdog and reported once.
    max_runtime: Duration,
    body: Body,
}

/// An apply counts as wedged once it has reported no progress for this long.
const APPLY_PROGRESS_STALL: Duration = Duration::from_secs(120);

/// Runs one task body: gate, panic guard, error handling. False when it did nothing (stopping,
/// or a database task with the health gate closed or its connection lost).
fn run_task(sh: &Shared, t: &Task) -> bool {
    if sh.stop.load(Ordering::SeqCst) {
        return false;
    }
    if t.gated && !sh.health.is_open() {
        log::debug!("{}: skipped, health gate closed", t.name);
        return false;
    }
    let r = sh.guard.run(&t.name, || match &t.body {
        Body::Heartbeat => tasks::heartbeat(sh),
        Body::Metrics(slots) => tasks::metrics(sh, slots),
        Body::SystemInfo => tasks::system_info(sh),
        Body::Config => tasks::config(sh),
        Body::Guardrail => tasks::guardrail(sh),
        Body::RawLogs => tasks::raw_logs(sh),
        Body::Catalog(slot) => tasks::catalog(sh, slot),
        Body::Status => tasks::status_file(sh),
    });
    match r {
        Guarded::Done(Ok(())) | Guarded::PanicQuiet => {}
        Guarded::Done(Err(e)) => {
            // A database task that lost its connection did nothing: counted as skipped.
            let lost = t.gated && e.is_connection();
            handle_error(sh, t, e);
            return !lost;
        }
        Guarded::PanicDue(msg) => {
            report(&sh.platform, &format!("{}_panic", t.name), &msg);
            log::error!("{} error: {msg}", t.name);
        }
    }
    true
}

fn handle_error(sh: &Shared, t: &Task, e: Error) {
    if t.gated && e.is_connection() {
        sh.health
            .connection_lost(sh.adapter.pg(), sh.stop.clone(), &e.to_string());
        log::debug!("{}: connection error (gate closed): {e}", t.name);
    } else if t.gated && e.is_suppressed() {
        log::debug!("{}: suppressed: {e}", t.name);
    } else {
        log::error!("{} error: {e}", t.name);
    }
}

/// A finished run: the task's index, and whether it ran (false: skipped, see [`run_task`]).
type Done = (usize, bool);

/// Options of a runner.
pub struct RunnerOptions {
    pub control_threads: usize,
    pub core_threads: usize,
    pub catalog_threads: usize,
    /// Called on SIGHUP.
    pub on_reload: Option<Box<dyn Fn() + Send>>,
    /// Called by the supervision loop while every task makes progress (systemd WATCHDOG=1).
    pub on_alive: Option<Box<dyn Fn() + Send>>,
    pub alive_every: Duration,
    /// How long shutdown waits for running tasks.
    pub shutdown_grace: Duration,
    /// Called once when shutdown begins (systemd STOPPING=1).
    pub on_stopping: Option<Box<dyn Fn() + Send>>,
    /// Caps every task's run-time bound (tests use a short one to see a wedged task).
    pub max_runtime_cap: Option<Duration>,
    /// Where `status.json` is written every 10 s (`None`: not written).
    pub state_dir: Option<std::path::PathBuf>,
    /// Start-up checks deferred because PostgreSQL was unreachable at start: retried with
    /// backoff until they pass (the gate opens) or fail (the daemon ends).
    pub startup_wait: Option<startup::StartupWait>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            control_threads: 2,
            core_threads: 2,
            catalog_threads: 2,
            on_reload: None,
            on_alive: None,
            alive_every: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(7),
            max_runtime_cap: None,
            on_stopping: None,
            state_dir: None,
            startup_wait: None,
        }
    }
}

pub struct Runner {
    shared: Arc<Shared>,
    tasks: Vec<Arc<Task>>,
    opts: RunnerOptions,
}

/// Commands from the signal thread (or tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Stop,
    Reload,
}

impl Runner {
    pub fn new(
        adapter: Arc<dyn Adapter>,
        platform: Arc<Platform>,
        settings: Settings,
        collectors_cfg: &crate::config::collectors::CollectorsConfig,
        opts: RunnerOptions,
    ) -> Runner {
        let stop = Arc::new(AtomicBool::new(false));
        let platform_dry_run = platform.is_dry_run();
        let server = Arc::new(RwLock::new(Arc::new(ServerInfo::default())));
        let (pg, srv) = (adapter.pg().clone(), server.clone());
        let health = HealthGate::new(Box::new(move || match collectors::probe::probe(&pg) {
            Ok(info) => *srv.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(info),
            Err(e) => log::warn!("capability probe after reconnect failed: {e}"),
        }));
        let shared = Arc::new(Shared {
            adapter: adapter.clone(),
            platform,
            health,
            guard: Arc::new(PanicGuard::default()),
            stop,
            settings: Arc::new(RwLock::new(settings)),
            server,
            agent_id: new_agent_id(),
            start_time: SystemTime::now(),
            last_signal: Mutex::new(None),
            failed_apply: Mutex::new(None),
            bad_recommendation: Mutex::new(None),
            applying: Mutex::new(()),
            tracker: status::Tracker::new(adapter.name(), platform_dry_run),
            state_dir: opts.state_dir.clone(),
            exit_error: Mutex::new(None),
        });
        log::info!("Agent instance ID: {}", shared.agent_id);
        let secs = Duration::from_secs;
        let mut tasks = vec![
            Task {
                name: "heartbeat".into(),
                interval: secs(15),
                lane: LaneKind::Control,
                gated: false,
                max_runtime: secs(30),
                body: Body::Heartbeat,
            },
            Task {
                name: "metrics".into(),
                interval: secs(5),
                lane: LaneKind::Core,
                gated: true,
                max_runtime: secs(40),
                body: Body::Metrics(
                    adapter
                        .metric_collectors()
                        .into_iter()
                        .map(|c| MetricSlot {
                            key: c.key(),
                            collector: Arc::new(Mutex::new(c)),
                            busy: Arc::new(AtomicBool::new(false)),
                        })
                        .collect(),
                ),
            },
            Task {
                name: "system info".into(),
                interval: secs(60),
                lane: LaneKind::Core,
                gated: true,
                max_runtime: secs(60),
                body: Body::SystemInfo,
            },
            // An apply may restart PostgreSQL and wait for it: its bound is the apply's own.
            Task {
                name: "config".into(),
                interval: secs(5),
                lane: LaneKind::Core,
                gated: true,
                max_runtime: secs(900),
                body: Body::Config,
            },
            Task {
                name: "guardrail".into(),
                interval: secs(1),
                lane: LaneKind::Control,
                gated: false,
                max_runtime: secs(30),
                body: Body::Guardrail,
            },
            Task {
                name: "status".into(),
                interval: secs(10),
                lane: LaneKind::Control,
                gated: false,
                max_runtime: secs(30),
                body: Body::Status,
            },
            Task {
                name: "raw-logs".into(),
                interval: secs(15),
                lane: LaneKind::Control,
                gated: false,
                max_runtime: secs(30),
                body: Body::RawLogs,
            },
        ];
        for b in collectors::build_enabled(collectors_cfg, adapter.forced_off_collectors()) {
            tasks.push(Task {
                name: b.def.name.to_string(),
                interval: b.interval,
                lane: LaneKind::Catalog,
                gated: true,
                max_runtime: b.interval.max(secs(30)) + secs(30),
                body: Body::Catalog(CatalogSlot {
                    def: b.def,
                    interval: b.interval,
                    collector: Mutex::new(b.collector),
                    timing_out: AtomicBool::new(false),
                }),
            });
        }
        if let Some(cap) = opts.max_runtime_cap {
            for t in &mut tasks {
                t.max_runtime = t.max_runtime.min(cap);
            }
        }
        Runner {
            shared,
            tasks: tasks.into_iter().map(Arc::new).collect(),
            opts,
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn probe(&self) {
        match collectors::probe::probe(self.shared.adapter.pg()) {
            Ok(info) => {
                *self
                    .shared
                    .server
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(info)
            }
            Err(e) => {
                log::warn!(
                    "capability probe failed (collectors use defaults until reconnect): {e}"
                );
                if e.is_connection() {
                    self.shared.health.connection_lost(
                        self.shared.adapter.pg(),
                        self.shared.stop.clone(),
                        &e.to_string(),
                    );
                }
            }
        }
    }

    /// `--once`: every task one time, in a fixed order, on this thread; then flush logs.
    pub fn run_once(self) {
        self.probe();
        let order = ["system info", "config", "metrics", "heartbeat", "guardrail"];
        for name in order {
            if let Some(t) = self.tasks.iter().find(|t| t.name == name) {
                run_task(&self.shared, t);
            }
        }
        for t in self
            .tasks
            .iter()
            .filter(|t| matches!(t.body, Body::Catalog(_)))
        {
            run_task(&self.shared, t);
        }
        tasks::raw_logs(&self.shared).ok();
        tasks::status_file(&self.shared).ok();
    }

    /// Runs until a `Stop` command arrives on `commands`.
    pub fn run(mut self, commands: Receiver<Command>) {
        match self.opts.startup_wait.take() {
            Some(w) => startup::spawn(self.shared.clone(), w),
            None => self.probe(),
        }
        let n = self.tasks.len();
        let mut lanes = [
            Lane::new("control", self.opts.control_threads, n),
            Lane::new("core", self.opts.core_threads, n),
            Lane::new("catalog", self.opts.catalog_threads, n),
        ];
        let (done_tx, done_rx): (Sender<Done>, Receiver<Done>) = bounded(n * 2);
        let start = Instant::now();
        let mut due: Vec<Option<Instant>> = vec![None; n];
        let mut running: Vec<Option<Instant>> = vec![None; n];
        let mut warned = vec![false; n];
        let mut bootstrap_left: Vec<usize> = Vec::new();
        // Bootstrap pass first (launches 200 ms apart); other catalog collectors wait for it.
        let mut k = 0u32;
        for (i, t) in self.tasks.iter().enumerate() {
            match &t.body {
                Body::Heartbeat | Body::RawLogs => due[i] = Some(start + t.interval),
                Body::Catalog(slot) if slot.def.bootstrap => {
                    due[i] = Some(start + Duration::from_millis(200) * k);
                    k += 1;
                    bootstrap_left.push(i);
                }
                Body::Catalog(_) => {}
                _ => due[i] = Some(start),
            }
        }
        let mut in_bootstrap = !bootstrap_left.is_empty();
        if !in_bootstrap {
            self.schedule_catalog(&mut due, Instant::now(), &[]);
        }
        let bootstrapped: Vec<usize> = bootstrap_left.clone();
        // Bootstrap collectors skipped because the health gate was closed (PostgreSQL down at
        // start): they run as soon as it opens, not an interval later.
        let mut bootstrap_skipped: Vec<usize> = Vec::new();
        let mut last_alive = Instant::now() - self.opts.alive_every;
        loop {
            let now = Instant::now();
            // The caller logs it and exits non-zero.
            if self
                .shared
                .exit_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                break;
            }
            if !bootstrap_skipped.is_empty() && self.shared.health.is_open() {
                log::info!(
                    "health gate open: running the {} skipped bootstrap collector(s)",
                    bootstrap_skipped.len()
                );
                for (k, i) in bootstrap_skipped.drain(..).enumerate() {
                    due[i] = Some(now + Duration::from_millis(200) * k as u32);
                }
            }
            // Dispatch what is due.
            for i in 0..n {
                let Some(d) = due[i] else { continue };
                if d > now || running[i].is_some() {
                    continue;
                }
                let t = self.tasks[i].clone();
                let sh = self.shared.clone();
                let tx = done_tx.clone();
                let job: lanes::Job = Box::new(move || {
                    let ran = run_task(&sh, &t);
                    let _ = tx.send((i, ran));
                });
                let lane = &lanes[self.tasks[i].lane as usize];
                if !lane.submit(job) {
                    log::warn!("{}: no free worker; run skipped", self.tasks[i].name);
                } else {
                    running[i] = Some(now);
                    if in_bootstrap && bootstrap_left.contains(&i) {
                        due[i] = None;
                        continue;
                    }
                }
                // Next tick; if we are behind, one pending tick fires as soon as the run ends.
                let next = d + self.tasks[i].interval;
                due[i] = Some(if next < now { now } else { next });
            }
            // Deadline check: report a run past its bound once.
            let mut wedged = false;
            for i in 0..n {
                if let Some(s) = running[i] {
                    // An apply that keeps reporting progress (a long restart or rollout
                    // inside its deadlines) is not wedged.
                    let progressing = matches!(self.tasks[i].body, Body::Config)
                        && crate::apply::wait::since_progress()
                            .is_some_and(|d| d < APPLY_PROGRESS_STALL);
                    if now.duration_since(s) > self.tasks[i].max_runtime && !progressing {
                        wedged = true;
                        if !warned[i] {
                            warned[i] = true;
                            log::error!(
                                "{} timed out: running for {:?} (bound {:?}); other tasks continue",
                                self.tasks[i].name,
                                now.duration_since(s),
                                self.tasks[i].max_runtime
                            );
                        }
                    }
                }
            }
            if !wedged && now.duration_since(last_alive) >= self.opts.alive_every {
                last_alive = now;
                // Freed heap pages go back to the system between payloads, not only after a
                // large one (glibc keeps them otherwise; a no-op elsewhere).
                crate::alloc::release();
                if let Some(f) = &self.opts.on_alive {
                    f();
                }
            }
            // A task still running is not due: its end wakes the loop through `done_rx`
            // (otherwise a tick that came due during a long run would spin this loop).
            let next_due = due
                .iter()
                .zip(running.iter())
                .filter(|(_, r)| r.is_none())
                .filter_map(|(d, _)| *d)
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            // Wake for the next due task or the next liveness ping, whichever comes first
            // (no ping is due while a task is wedged: that must not spin the loop either).
            let wake = if wedged {
                next_due
            } else {
                next_due.min(last_alive + self.opts.alive_every)
            };
            let wait = wake
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1));
            // Finished runs are picked up at the next wake (at most a second away: the guardrail
            // ticks every second); the loop is woken by a finish only when something waits for
            // it (the bootstrap pass, or a task that came due while running), which halves the
            // wake-ups of a steady cycle.
            let waiting_on_run = in_bootstrap
                || (0..n).any(|i| running[i].is_some() && due[i].is_some_and(|d| d <= now));
            let mut finished: Vec<Done> = done_rx.try_iter().collect();
            if finished.is_empty() {
                let woke = if waiting_on_run {
                    select! {
                        recv(done_rx) -> d => d.ok().map(Ok),
                        recv(commands) -> c => Some(Err(c)),
                        default(wait) => None,
                    }
                } else {
                    select! {
                        recv(commands) -> c => Some(Err(c)),
                        default(wait) => None,
                    }
                };
                match woke {
                    Some(Ok(d)) => finished.push(d),
                    Some(Err(Ok(Command::Reload))) => {
                        if let Some(f) = &self.opts.on_reload {
                            f();
                        }
                    }
                    Some(Err(Ok(Command::Stop) | Err(_))) => break,
                    None => {}
                }
                finished.extend(done_rx.try_iter());
            }
            for (i, ran) in finished {
                running[i] = None;
                warned[i] = false;
                if in_bootstrap && !ran && !self.shared.stop.load(Ordering::SeqCst) {
                    // Still part of the pass: it runs when the gate opens.
                    if bootstrap_left.contains(&i) && !bootstrap_skipped.contains(&i) {
                        bootstrap_skipped.push(i);
                    }
                } else if in_bootstrap {
                    if let Some(pos) = bootstrap_left.iter().position(|x| *x == i) {
                        bootstrap_left.remove(pos);
                        if bootstrap_left.is_empty() {
                            in_bootstrap = false;
                            log::info!("catalog bootstrap done in {:?}", start.elapsed());
                            self.schedule_catalog(&mut due, Instant::now(), &bootstrapped);
                        }
                    }
                }
            }
        }
        self.shutdown(&mut lanes, &done_rx, &mut running);
        for lane in lanes {
            lane.join();
        }
    }

    /// Steady state: collector i starts i × 200 ms after `t0`; bootstrapped ones a full
    /// interval later.
    fn schedule_catalog(&self, due: &mut [Option<Instant>], t0: Instant, bootstrapped: &[usize]) {
        let mut idx = 0u32;
        for (i, t) in self.tasks.iter().enumerate() {
            if let Body::Catalog(_) = t.body {
                let mut at = t0 + Duration::from_millis(200) * idx;
                if bootstrapped.contains(&i) {
                    at += t.interval;
                }
                due[i] = Some(at);
                idx += 1;
            }
        }
    }

    fn shutdown(
        &mut self,
        lanes: &mut [Lane],
        done_rx: &Receiver<Done>,
        running: &mut [Option<Instant>],
    ) {
        if let Some(f) = &self.opts.on_stopping {
            f();
        }
        log::info!(
            "shutting down: no new runs; waiting up to {:?} for running tasks",
            self.opts.shutdown_grace
        );
        let deadline = Instant::now() + self.opts.shutdown_grace;
        // An apply in progress holds `applying`: it finishes (or rolls back) before we stop
        // everything else; other tasks are told to stop at once.
        let apply_running = self.shared.applying.try_lock().is_err();
        // Long waits inside an apply stop at their next poll; a restart already running is
        // not killed, and the journal left behind is settled at the next start.
        crate::apply::wait::request_stop();
        if !apply_running {
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        for lane in lanes.iter_mut() {
            lane.close();
        }
        while running.iter().any(Option::is_some) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let names: Vec<&str> = (0..running.len())
                    .filter(|i| running[*i].is_some())
                    .map(|i| self.tasks[i].name.as_str())
                    .collect();
                log::warn!(
                    "shutdown: still running after grace period: {}",
                    names.join(", ")
                );
                break;
            }
            if let Ok((i, _)) = done_rx.recv_timeout(left.min(Duration::from_millis(200))) {
                running[i] = None;
            }
            if self.shared.applying.try_lock().is_ok() {
                self.shared.stop.store(true, Ordering::SeqCst);
            }
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        // The last word for `status` (which sees the pid gone and says "not running").
        let _ = tasks::status_file(&self.shared);
        // Flush queued log lines (one attempt, short timeout).
        let entries = crate::logging::drain_raw();
        if !entries.is_empty() {
            let _ = self.shared.platform.raw_logs(&entries);
        }
    }
}

/// A random UUIDv4 for this process (protocol.md §12).
pub fn new_agent_id() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::gojson::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
