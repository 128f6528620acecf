//! The Docker client over a real unix socket (in a temp dir) served by a stand-in that answers
//! like the Engine API: `/_ping` with `API-Version`, chunked JSON, 204 on restart, `{"message"}`
//! errors.

mod support;

use dbtune_agent::cloud::docker::Docker;
use dbtune_agent::cloud::{Env, ErrorKind};
use serde_json::json;
use std::time::{Duration, Instant};
use support::cloud::stand_in::{Resp, StandIn};

fn engine(dir: &std::path::Path, daemon_api: &'static str, head_ping: bool) -> StandIn {
    StandIn::start_unix(&dir.join("docker.sock"), move |r| {
        assert_eq!(r.header("Host"), Some("api.moby.localhost"));
        let p = r.path();
        if p == "/_ping" {
            if r.method == "HEAD" && !head_ping {
                return Resp::empty(405);
            }
            return Resp::text(200, "OK")
                .header("API-Version", daemon_api)
                .header("Docker-Experimental", "false");
        }
        let Some(rest) = p
            .strip_prefix("/v1.")
            .and_then(|r| r.split_once('/'))
            .map(|x| x.1)
        else {
            return Resp::json(400, json!({"message": "unversioned request"}));
        };
        match (r.method.as_str(), rest) {
            ("GET", "containers/pg/json") => Resp::json(200, json!({"Id": "abc123", "Name": "/pg",
                "Config": {"Image": "postgres:17"}, "HostConfig": {"NanoCpus": 2_000_000_000u64, "CpuQuota": 0, "CpuPeriod": 0, "Memory": 4294967296u64}}))
            .chunked(),
            ("GET", "containers/pg/stats") => {
                let q = r.query();
                assert_eq!((q["stream"].as_str(), q["one-shot"].as_str()), ("false", "true"));
                Resp::json(200, json!({"read": "2025-01-01T00:00:00Z", "preread": "0001-01-01T00:00:00Z",
                    "cpu_stats": {"cpu_usage": {"total_usage": 123456789u64, "percpu_usage": [1, 2]}, "system_cpu_usage": 999999999u64, "online_cpus": 2},
                    "precpu_stats": {"cpu_usage": {"total_usage": 0}},
                    "memory_stats": {"usage": 104857600u64, "limit": 4294967296u64, "stats": {"inactive_file": 1048576u64}}}))
                .chunked()
            }
            ("POST", "containers/pg/restart") => Resp::empty(204),
            ("GET", "containers/slow/json") => Resp::json(200, json!({})).delayed(Duration::from_millis(1500)),
            (_, r) => Resp::json(404, json!({"message": format!("No such container: {}", r.split('/').nth(1).unwrap_or(""))})),
        }
    })
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dbtune-docker-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn negotiates_then_inspects_stats_and_restarts() {
    let dir = tmpdir("ok");
    let s = engine(&dir, "1.45", true);
    let sock = format!("unix://{}", dir.join("docker.sock").display());
    let d = Docker::from_env(&Env::from_pairs([("DOCKER_HOST", sock.as_str())])).unwrap();
    assert_eq!(
        d.api_version().unwrap(),
        "1.45",
        "older daemon: its version"
    );
    let i = d.inspect("pg").unwrap();
    assert_eq!(
        (
            i["Config"]["Image"].as_str(),
            i["HostConfig"]["NanoCpus"].as_u64()
        ),
        (Some("postgres:17"), Some(2_000_000_000))
    );
    let st = d.stats_once("pg").unwrap();
    assert_eq!(st["memory_stats"]["usage"], 104857600u64);
    assert_eq!(
        st["cpu_stats"]["cpu_usage"]["percpu_usage"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    d.restart("pg").unwrap();
    let reqs = s.requests();
    assert_eq!(
        reqs.iter().filter(|r| r.path() == "/_ping").count(),
        1,
        "negotiated once"
    );
    assert!(reqs
        .iter()
        .any(|r| r.method == "POST" && r.path() == "/v1.45/containers/pg/restart"));

    let err = d.inspect("ghost").unwrap_err();
    assert_eq!((err.status, err.kind), (Some(404), ErrorKind::Service));
    assert!(
        err.to_string().contains("No such container: ghost"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn newer_daemons_get_our_version_old_ones_are_refused_and_reads_time_out() {
    let dir = tmpdir("new");
    let _s = engine(&dir, "1.52", false);
    let d = Docker::new(dir.join("docker.sock"));
    assert_eq!(
        d.api_version().unwrap(),
        "1.47",
        "GET /_ping fallback, capped at our max"
    );

    let dir2 = tmpdir("old");
    let _s2 = engine(&dir2, "1.30", true);
    let err = Docker::new(dir2.join("docker.sock"))
        .inspect("pg")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.to_string().contains("1.30"), "{err}");

    let mut d = Docker::new(dir.join("docker.sock"));
    d.http.timeout = Duration::from_millis(300);
    let t = Instant::now();
    let err = d.inspect("slow").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(t.elapsed() < Duration::from_millis(1200));

    let err = Docker::new(dir.join("missing.sock"))
        .inspect("pg")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transport);
    assert!(Docker::from_env(&Env::from_pairs([("DOCKER_HOST", "tcp://1.2.3.4:2375")])).is_err());
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
}
