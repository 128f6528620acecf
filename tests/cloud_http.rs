//! The shared HTTP core against a real loopback server: bounded retries with back-off on 5xx
//! and throttling, Retry-After honoured, no retry on client errors, per-request timeouts,
//! chunked bodies, and secrets kept out of error text.

mod support;

use dbtune_agent::cloud::http::{Http, Request, RetryPolicy};
use dbtune_agent::cloud::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cloud::stand_in::{Resp, StandIn};

fn counting(f: impl Fn(usize) -> Resp + Send + Sync + 'static) -> StandIn {
    let n = Arc::new(AtomicUsize::new(0));
    StandIn::start(move |_| f(n.fetch_add(1, Ordering::SeqCst) + 1))
}

fn fast() -> Http {
    Http::new().with_retry(RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
    })
}

#[test]
fn retries_5xx_then_succeeds_and_gives_up_after_the_budget() {
    let s = counting(|n| {
        if n < 3 {
            Resp::text(503, "busy")
        } else {
            Resp::text(200, "ok")
        }
    });
    let r = fast()
        .send(&Request::get(format!("{}/x", s.url())))
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert_eq!(s.requests().len(), 3);

    let s = counting(|_| Resp::text(500, "always broken"));
    let err = fast()
        .send(&Request::get(format!("{}/x", s.url())).what("probe"))
        .unwrap_err();
    assert_eq!(s.requests().len(), 3, "bounded at max_attempts");
    assert_eq!((err.kind, err.status), (ErrorKind::Service, Some(500)));
    assert_eq!(
        err.to_string(),
        format!("probe (GET {}/x): HTTP 500 always broken", s.url())
    );
}

#[test]
fn throttling_honours_retry_after_and_client_errors_are_not_retried() {
    let s = counting(|n| {
        if n == 1 {
            Resp::json(429, serde_json::json!({"message": "slow down"})).header("Retry-After", "1")
        } else {
            Resp::text(200, "ok")
        }
    });
    let t = Instant::now();
    fast().send(&Request::get(s.url())).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        t.elapsed()
    );
    assert_eq!(s.requests().len(), 2);

    // AWS signals throttling with a 400 and a code.
    let s = counting(|n| {
        if n == 1 {
            Resp::new(400, "text/xml", "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>")
        } else {
            Resp::text(200, "ok")
        }
    });
    fast().send(&Request::get(s.url())).unwrap();
    assert_eq!(s.requests().len(), 2);

    // A Retry-After beyond our patience ends the retries at once, reported as throttling.
    let s = counting(|_| Resp::text(429, "later").header("Retry-After", "3600"));
    let err = fast().send(&Request::get(s.url())).unwrap_err();
    assert_eq!((err.kind, s.requests().len()), (ErrorKind::Throttled, 1));

    // Client errors are final.
    let s = counting(|_| {
        Resp::json(
            404,
            serde_json::json!({"error": {"code": "NotFound", "message": "no such thing"}}),
        )
    });
    let err = fast().send(&Request::get(s.url())).unwrap_err();
    assert_eq!((s.requests().len(), err.code()), (1, Some("NotFound")));
}

#[test]
fn timeouts_chunked_bodies_and_secret_hygiene() {
    let s = StandIn::start(|_| Resp::text(200, "late").delayed(Duration::from_millis(1500)));
    let t = Instant::now();
    let err = fast()
        .send(
            &Request::get(s.url())
                .timeout(Duration::from_millis(200))
                .no_retry(),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(t.elapsed() < Duration::from_millis(1200));

    let s = StandIn::start(|_| {
        Resp::json(
            200,
            serde_json::json!({"items": (0..50).collect::<Vec<_>>()}),
        )
        .chunked()
    });
    let v: serde_json::Value = fast().send(&Request::get(s.url())).unwrap().json().unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 50);

    // The service echoes our token and the URL carries a signature: neither reaches the error.
    let s = StandIn::start(|r| {
        let auth = r.header("Authorization").unwrap_or("").to_string();
        Resp::json(
            403,
            serde_json::json!({"error": "access_denied", "error_description": format!("bad credential {auth}")}),
        )
    });
    let err = fast()
        .send(
            &Request::get(format!("{}/p?X-Amz-Signature=deadbeefcafe", s.url()))
                .header("Authorization", "Bearer sekrit-token-value")
                .secret("Bearer sekrit-token-value"),
        )
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(
        text.contains("access_denied") && text.contains("(hidden)"),
        "{text}"
    );
    assert!(
        !text.contains("sekrit") && !text.contains("deadbeefcafe"),
        "{text}"
    );

    // Nothing listens: a transport error, retried, then reported.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = fast()
        .send(&Request::get(format!("http://127.0.0.1:{port}/")))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transport, "{err}");
}
