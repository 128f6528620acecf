//! A long apply is progress, not a wedge: while an apply keeps reporting progress (a restart
//! or rollout inside its deadlines) the runner keeps feeding the watchdog past the config
//! task's run-time bound, and shutdown interrupts the apply's wait at a safe point. Its own
//! test binary: the shutdown flag of `apply::wait` is process-wide.
mod support;

use dbtune_agent::adapter::pgprem::target::LocalTarget;
use dbtune_agent::adapter::Adapter;
use dbtune_agent::apply::{wait, Applier, ApplyError, Outcome, Runtime};
use dbtune_agent::error::{Kind, Result};
use dbtune_agent::metrics::MetricCollector;
use dbtune_agent::model::{ConfigRow, GuardrailSignal, Metric, Recommendation};
use dbtune_agent::pg::{Pg, SessionLimits};
use dbtune_agent::platform::http::Timing;
use dbtune_agent::platform::Platform;
use dbtune_agent::runner::{Command, Runner, RunnerOptions, Settings};
use dbtune_agent::secret::Secret;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::agent::{API_KEY, DB_ID};
use support::pgcluster::PgCluster;
use support::platform::PlatformStandIn;

/// An adapter whose apply is a 60 s wait that reports progress, as a cloud reboot does.
struct SlowApply {
    pg: Pg,
    applier: Applier,
    started: Mutex<Option<Instant>>,
    ended: Mutex<Option<(Instant, Kind)>>,
}

impl Adapter for SlowApply {
    fn name(&self) -> &'static str {
        "slow-apply"
    }
    fn pg(&self) -> &Pg {
        &self.pg
    }
    fn metric_collectors(&self) -> Vec<Box<dyn MetricCollector>> {
        Vec::new()
    }
    fn system_info(&self) -> Result<Vec<Metric>> {
        Ok(vec![Metric::string("pg_version", "15.0")])
    }
    fn active_config(&self) -> Result<Vec<ConfigRow>> {
        Ok(vec![])
    }
    fn applier(&self) -> &Applier {
        &self.applier
    }
    fn apply(&self, _: &Recommendation) -> std::result::Result<Outcome, ApplyError> {
        let _progress = wait::InProgress::start();
        *self.started.lock().unwrap() = Some(Instant::now());
        let r = wait::sleep(Duration::from_secs(60), "a long rollout");
        let kind = r.err().map(|e| e.kind).unwrap_or(Kind::Other);
        *self.ended.lock().unwrap() = Some((Instant::now(), kind));
        Err(ApplyError::config("interrupted"))
    }
    fn guardrail(&self, _: f64) -> Result<Option<GuardrailSignal>> {
        Ok(None)
    }
}

#[test]
fn a_long_apply_keeps_the_watchdog_fed_and_stops_at_shutdown() {
    let pg = PgCluster::start();
    let platform = PlatformStandIn::start();
    platform.set_recommendation(
        r#"[{"config":[{"name":"work_mem","setting":8192,"unit":"kB","vartype":"integer","context":"user"}],"knobs_overrides":["work_mem"],"knob_application":"reload"}]"#,
    );
    let state = std::env::temp_dir().join(format!("dbtune-progress-{}", std::process::id()));
    let adapter = Arc::new(SlowApply {
        pg: Pg::new(&pg.url(), 2, SessionLimits::default()).unwrap(),
        applier: Applier::from_parts(
            Box::new(LocalTarget::new(None, None)),
            Runtime {
                allow_restart: false,
                apply: Default::default(),
            },
            state,
        ),
        started: Mutex::new(None),
        ended: Mutex::new(None),
    });
    let alive = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let alive2 = alive.clone();
    let opts = RunnerOptions {
        on_alive: Some(Box::new(move || {
            alive2.lock().unwrap().push(Instant::now())
        })),
        alive_every: Duration::from_millis(500),
        // Far below the apply's 60 s: without progress reports the config task would count
        // as wedged after 3 s and the watchdog would starve.
        max_runtime_cap: Some(Duration::from_secs(3)),
        ..RunnerOptions::default()
    };
    let settings = Settings {
        memory_threshold: 90.0,
        allow_restart: false,
    };
    let plat = Arc::new(Platform::http(
        &platform.url,
        DB_ID,
        Secret::new(API_KEY),
        Timing::default(),
    ));
    let collectors = {
        let mut c = dbtune_agent::config::collectors::CollectorsConfig::default();
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
    };
    let runner = Runner::new(adapter.clone(), plat, settings, &collectors, opts);
    let (tx, rx) = crossbeam_channel::bounded(4);
    let h = std::thread::spawn(move || runner.run(rx));

    let end = Instant::now() + Duration::from_secs(30);
    let started = loop {
        if let Some(t) = *adapter.started.lock().unwrap() {
            break t;
        }
        assert!(Instant::now() < end, "the apply never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Well past the 3 s bound, the watchdog is still fed every ~0.5 s.
    std::thread::sleep(Duration::from_secs(8));
    let late = started + Duration::from_secs(5);
    let fed = alive.lock().unwrap().iter().filter(|t| **t >= late).count();
    assert!(
        fed >= 4,
        "watchdog fed {fed} times in the last 3 s of a progressing apply"
    );

    let stop_at = Instant::now();
    tx.send(Command::Stop).unwrap();
    h.join().unwrap();
    let (ended, kind) = adapter.ended.lock().unwrap().expect("the apply returned");
    assert_eq!(
        kind,
        Kind::Interrupted,
        "the wait was interrupted by shutdown"
    );
    assert!(ended.duration_since(stop_at) < Duration::from_secs(2));
    assert!(stop_at.elapsed() < Duration::from_secs(10));
}
