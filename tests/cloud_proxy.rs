//! Proxies come from the environment (`HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`, `NO_PROXY`),
//! and loopback or link-local metadata endpoints never go through them. One test in its own
//! binary because it sets process environment variables.

mod support;

use dbtune_agent::cloud::http::{Http, Request, RetryPolicy};
use support::cloud::stand_in::{Resp, StandIn};

#[test]
fn remote_hosts_go_through_the_proxy_and_local_peers_do_not() {
    // The "proxy" refuses everything, but records what it was asked for.
    let proxy = StandIn::start(|_| Resp::text(403, "proxy says no"));
    let local = StandIn::start(|_| Resp::text(200, "direct"));
    for k in [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        std::env::remove_var(k);
    }
    std::env::set_var("HTTP_PROXY", proxy.url());
    let http = Http::new().with_retry(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    });

    let err = http
        .send(&Request::get("http://rds.example.invalid/x"))
        .expect_err("the proxy refuses");
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "the remote request went to the proxy: {err}");
    assert!(
        seen[0].target.contains("rds.example.invalid")
            || seen[0]
                .header("Host")
                .is_some_and(|h| h.contains("rds.example.invalid")),
        "{:?}",
        seen[0]
    );

    let r = http
        .send(&Request::get(format!("{}/y", local.url())))
        .unwrap();
    assert_eq!(r.text(), "direct");
    assert_eq!(proxy.requests().len(), 1, "loopback bypasses the proxy");
    std::env::remove_var("HTTP_PROXY");
}
