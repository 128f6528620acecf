//! The runner with a test adapter: a collector that panics, one that hangs, a task that wedges.
//! None of them stops the others; panics are reported once per 1/10/100…; the watchdog stops
//! being fed while a task is wedged. Real PostgreSQL (for the pool) and real HTTP.
mod support;

use dbtune_agent::adapter::pgprem::target::LocalTarget;
use dbtune_agent::adapter::Adapter;
use dbtune_agent::apply::{Applier, ApplyError, Outcome, Runtime};
use dbtune_agent::config::collectors::CollectorsConfig;
use dbtune_agent::error::Result;
use dbtune_agent::metrics::MetricCollector;
use dbtune_agent::model::{ConfigRow, GuardrailSignal, Metric, Recommendation};
use dbtune_agent::pg::{Pg, SessionLimits};
use dbtune_agent::platform::http::Timing;
use dbtune_agent::platform::Platform;
use dbtune_agent::runner::{Command, Runner, RunnerOptions, Settings};
use dbtune_agent::secret::Secret;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::agent::{API_KEY, DB_ID};
use support::pgcluster::PgCluster;
use support::platform::PlatformStandIn;

struct Healthy;
impl MetricCollector for Healthy {
    fn key(&self) -> &'static str {
        "healthy"
    }
    fn collect(&mut self) -> Result<Vec<Metric>> {
        Ok(vec![Metric::int("node_cpu_count", 2)])
    }
}

struct Panicky;
impl MetricCollector for Panicky {
    fn key(&self) -> &'static str {
        "panicky"
    }
    fn collect(&mut self) -> Result<Vec<Metric>> {
        let v: Vec<i32> = Vec::new();
        Ok(vec![Metric::int("never", v[3] as i64)])
    }
}

struct Hangs(Arc<AtomicU32>);
impl MetricCollector for Hangs {
    fn key(&self) -> &'static str {
        "hangs"
    }
    fn collect(&mut self) -> Result<Vec<Metric>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(25));
        Ok(vec![])
    }
}

struct TestAdapter {
    pg: Pg,
    hang_starts: Arc<AtomicU32>,
    wedge_config: Arc<AtomicBool>,
    applier: Applier,
}

fn test_applier() -> Applier {
    Applier::from_parts(
        Box::new(LocalTarget::new(None, None)),
        Runtime {
            allow_restart: false,
            apply: Default::default(),
        },
        std::env::temp_dir().join(format!("dbtune-runner-test-{}", std::process::id())),
    )
}

impl Adapter for TestAdapter {
    fn name(&self) -> &'static str {
        "test"
    }
    fn pg(&self) -> &Pg {
        &self.pg
    }
    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        vec![
            Box::new(Healthy),
            Box::new(Panicky),
            Box::new(Hangs(self.hang_starts.clone())),
        ]
    }
    fn system_info(&self) -> Result<Vec<Metric>> {
        Ok(vec![Metric::string("pg_version", "15.0")])
    }
    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        while self.wedge_config.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(vec![])
    }
    fn applier(&self) -> &Applier {
        &self.applier
    }
    fn apply(&self, _: &Recommendation) -> std::result::Result<Outcome, ApplyError> {
        Ok(Outcome::Unchanged)
    }
    fn guardrail(&self, _: f64) -> Result<Option<GuardrailSignal>> {
        Ok(None)
    }
}

fn all_collectors_off() -> CollectorsConfig {
    let mut c = CollectorsConfig::default();
    for d in dbtune_agent::collectors::registry::REGISTRY {
        c.entries.insert(
            d.name.to_string(),
            dbtune_agent::config::collectors::CollectorSettings {
                enabled: false,
                ..Default::default()
            },
        );
    }
    c
}

#[test]
fn panicking_and_hanging_collectors_never_stop_the_rest_and_a_wedged_task_starves_the_watchdog() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    let hang_starts = Arc::new(AtomicU32::new(0));
    let wedge = Arc::new(AtomicBool::new(false));
    let adapter = Arc::new(TestAdapter {
        pg: Pg::new(&pg.url(), 2, SessionLimits::default()).unwrap(),
        hang_starts: hang_starts.clone(),
        wedge_config: wedge.clone(),
        applier: test_applier(),
    });
    let plat = Arc::new(Platform::http(
        &platform.url,
        DB_ID,
        Secret::new(API_KEY),
        Timing::default(),
    ));
    let alive = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let alive2 = alive.clone();
    let opts = RunnerOptions {
        on_alive: Some(Box::new(move || {
            alive2.lock().unwrap().push(Instant::now())
        })),
        alive_every: Duration::from_millis(500),
        // Above the 10 s a hung metric collector may hold a round, below the test's patience.
        max_runtime_cap: Some(Duration::from_secs(12)),
        ..RunnerOptions::default()
    };
    let settings = Settings {
        memory_threshold: 90.0,
        allow_restart: false,
    };
    let runner = Runner::new(adapter, plat, settings, &all_collectors_off(), opts);
    let (tx, rx) = crossbeam_channel::bounded(4);
    let h = std::thread::spawn(move || runner.run(rx));

    // Rounds keep coming every 5 s with the healthy collector's sample.
    let reqs = platform.wait_for("three metrics rounds", Duration::from_secs(25), |r| {
        r.iter().filter(|x| x.segment() == "metrics").count() >= 3
    });
    let metrics: Vec<_> = reqs.iter().filter(|x| x.segment() == "metrics").collect();
    for m in &metrics {
        assert_eq!(
            m.json()["metrics"]["node_cpu_count"],
            2,
            "partial metrics still sent"
        );
    }
    // The panic is reported once (1st occurrence), as <key>_panic.
    let panics: Vec<_> = reqs
        .iter()
        .filter(|x| x.segment() == "log-entries")
        .map(|x| x.json())
        .collect();
    let p: Vec<_> = panics
        .iter()
        .filter(|e| e["error_type"] == "panicky_panic")
        .collect();
    assert_eq!(p.len(), 1, "{panics:?}");
    assert!(p[0]["error_message"]
        .as_str()
        .unwrap()
        .starts_with("panic in panicky (consecutive panics: 1): index out of bounds"));
    // The hung collector is started once; later rounds report it instead of piling up threads.
    assert_eq!(hang_starts.load(Ordering::SeqCst), 1);

    // The watchdog is fed while nothing is wedged…
    let fed_before = alive.lock().unwrap().len();
    assert!(fed_before >= 5, "watchdog fed {fed_before} times");
    // …and stops while a task is stuck past its bound.
    wedge.store(true, Ordering::SeqCst);
    // The next config run (within 5 s) wedges; 12 s later the watchdog must go quiet.
    std::thread::sleep(Duration::from_secs(19));
    let t = Instant::now();
    // 12 s: the hung collector makes some rounds wait its full 10 s deadline.
    std::thread::sleep(Duration::from_secs(12));
    let recent = alive.lock().unwrap().iter().filter(|i| **i >= t).count();
    assert_eq!(
        recent, 0,
        "watchdog must not be fed while the config task is wedged"
    );
    let metrics_during = platform
        .requests()
        .iter()
        .filter(|r| r.segment() == "metrics" && r.at >= t)
        .count();
    assert!(
        metrics_during >= 1,
        "other loops keep running while one task is wedged"
    );
    wedge.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    let t2 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        alive.lock().unwrap().iter().any(|i| *i >= t2),
        "watchdog fed again once the task finished"
    );

    let stop_at = Instant::now();
    tx.send(Command::Stop).unwrap();
    h.join().unwrap();
    assert!(stop_at.elapsed() < Duration::from_secs(10));
}
