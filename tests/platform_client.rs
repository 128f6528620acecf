//! The platform client against the stand-in over real loopback HTTP: retries, Retry-After,
//! budgets, error shapes, and that the API key never shows up in an error.
mod support;

use dbtune_agent::model::{GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use dbtune_agent::platform::http::Timing;
use dbtune_agent::platform::Platform;
use dbtune_agent::secret::Secret;
use std::time::{Duration, Instant};
use support::agent::{API_KEY, DB_ID};
use support::platform::{Mode, PlatformStandIn};

fn client(p: &PlatformStandIn, per_attempt: Duration) -> Platform {
    Platform::http(
        &p.url,
        DB_ID,
        Secret::new(API_KEY),
        Timing {
            per_attempt,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(2),
        },
    )
}

#[test]
fn retry_after_is_honoured_then_the_call_succeeds() {
    let p = PlatformStandIn::start();
    let c = client(&p, Duration::from_secs(4));
    p.fail_next(1, 429, Some(2));
    let t = Instant::now();
    c.metrics(&[Metric::float("node_cpu_usage", 1.0)])
        .expect("second attempt succeeds");
    let reqs = p.by_segment("metrics");
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 not honoured (gap {gap:?})"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_retry_after_beyond_the_budget_gives_up_at_once() {
    let p = PlatformStandIn::start();
    let c = client(&p, Duration::from_secs(4));
    p.fail_next(5, 503, Some(120));
    let t = Instant::now();
    let e = c
        .guardrail(&GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        })
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        e.to_string().contains("giving up after 1 attempt(s)"),
        "{e}"
    );
    assert!(e.to_string().contains("status 503"), "{e}");
}

#[test]
fn server_errors_are_retried_within_the_budget_only() {
    let p = PlatformStandIn::start();
    let mut c = client(&p, Duration::from_secs(4));
    c.budgets.metrics = Duration::from_secs(3);
    p.set_mode(Mode::Status(500, None));
    let t = Instant::now();
    let e = c.metrics(&[]).unwrap_err().to_string();
    let took = t.elapsed();
    assert!(
        took <= Duration::from_millis(3200),
        "budget exceeded: {took:?}"
    );
    let n = p.by_segment("metrics").len();
    assert!(n >= 3, "expected several attempts, saw {n}");
    assert!(
        e.contains("giving up after") && e.contains("status 500"),
        "{e}"
    );
    assert!(!e.contains(API_KEY));
    // 4xx other than 429 is final: one attempt.
    p.clear();
    p.set_mode(Mode::Status(404, None));
    let e = c.metrics(&[]).unwrap_err().to_string();
    assert_eq!(p.by_segment("metrics").len(), 1);
    assert!(e.contains("failed to send metrics, code: 404"), "{e}");
}

#[test]
fn slow_answers_hit_the_per_attempt_timeout_and_the_budget() {
    let p = PlatformStandIn::start();
    let mut c = client(&p, Duration::from_millis(500));
    c.budgets.heartbeat = Duration::from_secs(2);
    p.set_mode(Mode::Slow(Duration::from_secs(3)));
    let t = Instant::now();
    let e = c
        .heartbeat(&dbtune_agent::platform::payload::HeartbeatInfo {
            agent_version: "t",
            agent_start_time: std::time::SystemTime::now(),
            agent_identifier: "x",
            allow_restart: false,
        })
        .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_millis(2300),
        "{:?}",
        t.elapsed()
    );
    assert!(
        p.by_segment("heartbeat").len() >= 2,
        "timed-out attempts are retried"
    );
    assert!(e.to_string().to_lowercase().contains("time"), "{e}");
}

#[test]
fn recommendation_bodies_are_decoded_or_rejected_whole() {
    let p = PlatformStandIn::start();
    let c = client(&p, Duration::from_secs(4));
    assert_eq!(c.recommendation().unwrap(), None);
    p.set_recommendation(r#"[{"config":[{"name":"work_mem","setting":8192,"unit":"kB","vartype":"integer","context":"user"}],"knobs_overrides":["work_mem"],"knob_application":"reload"}]"#);
    let r = c.recommendation().unwrap().unwrap();
    assert_eq!(r.knobs_overrides, vec!["work_mem".to_string()]);
    p.set_mode(Mode::Garbage);
    let e = c.recommendation().unwrap_err().to_string();
    assert!(e.contains("not JSON") && e.contains("<html>"), "{e}");
    p.set_mode(Mode::Normal);
    p.set_recommendation(r#"[{"config":[],"knobs_overrides":[],"knob_application":"now"}]"#);
    assert!(c
        .recommendation()
        .unwrap_err()
        .to_string()
        .contains("invalid knob_application"));
}

#[test]
fn during_an_outage_each_call_makes_one_attempt_until_the_platform_answers() {
    let p = PlatformStandIn::start();
    let mut c = client(&p, Duration::from_secs(1));
    c.budgets.metrics = Duration::from_secs(2);
    p.set_mode(Mode::Status(503, None));
    for _ in 0..dbtune_agent::platform::http::OUTAGE_AFTER {
        assert!(c.metrics(&[]).is_err());
    }
    let before = p.by_segment("metrics").len();
    assert!(
        before >= 2 * dbtune_agent::platform::http::OUTAGE_AFTER as usize,
        "retries before the outage is declared"
    );
    let t = Instant::now();
    assert!(c.metrics(&[]).is_err());
    assert_eq!(
        p.by_segment("metrics").len(),
        before + 1,
        "one attempt per call in an outage"
    );
    assert!(t.elapsed() < Duration::from_millis(500));
    // The platform answers: retries resume.
    p.set_mode(Mode::Normal);
    c.metrics(&[]).unwrap();
    p.fail_next(1, 503, None);
    c.metrics(&[]).expect("a single failure is retried again");
}
