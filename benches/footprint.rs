//! Footprint benchmark (prints figures; not a test): runs the release agent against a real
//! PostgreSQL 15 under `pgbench -c 4` and the platform stand-in, and prints, minute by minute,
//! side by side: agent RSS, agent CPU seconds, PostgreSQL-side time of the agent's own
//! statements (pg_stat_statements rows carrying the `/*dbtune*/` marker), and bytes sent.
//!
//!   cargo bench --bench footprint -- [--minutes N] [--agent PATH]
//!
//! The agent binary defaults to the static release build
//! (target/x86_64-unknown-linux-musl/release/dbtune-agent), falling back to target/release.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::agent::{config_yaml, temp_dir};
use support::pgcluster::PgCluster;
use support::platform::PlatformStandIn;

fn proc_stat(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (
        kb("VmRSS:"),
        kb("VmHWM:"),
        (ticks(11) + ticks(12)) as f64 / hz,
    )
}

fn agent_pg_ms(c: &mut postgres::Client) -> (f64, i64) {
    let r = c
        .query_one(
            "SELECT coalesce(sum(total_exec_time + total_plan_time), 0)::float8, coalesce(sum(calls), 0)::bigint \
             FROM pg_stat_statements WHERE query LIKE '%/*dbtune*/%'",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

fn main() {
    let mut minutes = 5u64;
    let mut agent_bin: Option<String> = None;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--minutes" => {
                minutes = args[i + 1].parse().expect("--minutes N");
                i += 1;
            }
            "--agent" => {
                agent_bin = Some(args[i + 1].clone());
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = agent_bin.unwrap_or_else(|| {
        let musl = format!("{root}/target/x86_64-unknown-linux-musl/release/dbtune-agent");
        if std::path::Path::new(&musl).exists() {
            musl
        } else {
            format!("{root}/target/release/dbtune-agent")
        }
    });
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!(
        "agent binary: {bin} ({size} bytes, {:.2} MiB)",
        size as f64 / 1048576.0
    );

    let pg = PgCluster::start_with(&["max_connections = 50", "pg_stat_statements.max = 5000"]);
    let pgbench = pg.bin.bin.join("pgbench");
    let st = Command::new(&pgbench)
        .args([
            "-i",
            "-s",
            "10",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "pgbench -i failed");
    let platform = PlatformStandIn::start();
    let dir = temp_dir("bench");
    let cfg = dir.join("dbtune.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}\nstate_dir: \"{}\"\n",
            config_yaml(&pg.url(), &platform.url, ""),
            dir.join("state").display()
        ),
    )
    .unwrap();

    let total = Duration::from_secs(minutes * 60 + 30);
    let mut load = Command::new(&pgbench)
        .args([
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &total.as_secs().to_string(),
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut c = pg.client();
    c.batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();
    let mut agent = Command::new(&bin)
        .arg("--local")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = agent.id();
    let t0 = Instant::now();
    println!("\nminute | agent RSS MiB | agent peak RSS MiB | agent CPU s (this min) | PG time of agent stmts ms (this min) | agent stmts (this min) | bytes sent (this min)");
    let (mut last_cpu, mut last_pg, mut last_calls, mut last_bytes) = (0.0, 0.0, 0i64, 0usize);
    for m in 1..=minutes {
        while t0.elapsed() < Duration::from_secs(m * 60) {
            std::thread::sleep(Duration::from_millis(500));
        }
        let (rss, hwm, cpu) = proc_stat(pid);
        let (pgms, calls) = agent_pg_ms(&mut c);
        let bytes: usize = platform.requests().iter().map(|r| r.wire_len).sum();
        println!(
            "{m:>6} | {:>13.1} | {:>18.1} | {:>22.2} | {:>36.1} | {:>22} | {:>21}",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            cpu - last_cpu,
            pgms - last_pg,
            calls - last_calls,
            bytes - last_bytes
        );
        (last_cpu, last_pg, last_calls, last_bytes) = (cpu, pgms, calls, bytes);
    }
    let (rss, hwm, cpu) = proc_stat(pid);
    let (pgms, calls) = agent_pg_ms(&mut c);
    let secs = t0.elapsed().as_secs_f64();
    println!("\nsummary over {:.0} s under pgbench -c 4:", secs);
    println!("  binary size            {size} bytes");
    println!(
        "  RSS at end             {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  agent CPU              {:.2} s total, {:.3} s per minute",
        cpu,
        cpu / secs * 60.0
    );
    println!(
        "  PostgreSQL-side time   {:.1} ms total, {:.1} ms per minute ({calls} statements)",
        pgms,
        pgms / secs * 60.0
    );
    let mut per: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for r in platform.requests() {
        let e = per
            .entry(format!("{} {}", r.method, r.segment()))
            .or_default();
        e.0 += 1;
        e.1 += r.wire_len;
    }
    println!("  requests by endpoint (count, wire bytes per minute):");
    for (k, (n, b)) in per {
        println!("    {k:<40} {n:>6} {:>10.0}", b as f64 / secs * 60.0);
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = load.kill();
    let _ = load.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
