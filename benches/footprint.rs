//! Footprint benchmark (prints figures; not a test): the real agent daemons — the static musl
//! build and the glibc build (`cargo build --release`), each under its own role — and Debian's
//! `prometheus-postgres-exporter` (its own role, default collectors, scraped every 5 s) run side
//! by side against one PostgreSQL under `pgbench -c 4`. Prints one table: peak and steady RSS,
//! CPU per minute, PostgreSQL-side time of each role's statements per minute (pg_stat_statements
//! with track_planning on), bytes per minute, and the ratios to the exporter.
//!
//!   cargo build --release && cargo build --release --target x86_64-unknown-linux-musl
//!   cargo bench --bench footprint -- [--minutes N] [--agent PATH]
//!
//! `--agent PATH` measures that one binary instead of the two builds. Targets (issue 13):
//! steady RSS <= 6 MiB (musl) / 8 MiB (glibc), CPU <= 0.1 s/min, PG time <= 30 ms/min.

#[path = "../tests/support/mod.rs"]
mod support;

mod common {
    #[path = "side_by_side.rs"]
    pub mod side_by_side;
    pub(crate) use super::support;
}

use common::side_by_side::{self as sbs, Subject};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::pgcluster::PgCluster;

fn main() {
    let minutes = sbs::arg_u64("--minutes", 5);
    let root = env!("CARGO_MANIFEST_DIR");
    let mut agents: Vec<(String, String, String)> = Vec::new();
    if let Some(bin) = sbs::arg("--agent") {
        agents.push(("agent".into(), bin, "bench_agent".into()));
    } else {
        for (label, target, role) in [
            (
                "agent (static musl)",
                "x86_64-unknown-linux-musl/release",
                "bench_agent_musl",
            ),
            ("agent (glibc)", "release", "bench_agent_glibc"),
        ] {
            let bin = format!("{root}/target/{target}/dbtune-agent");
            if std::path::Path::new(&bin).exists() {
                agents.push((label.into(), bin, role.into()));
            } else {
                eprintln!("{bin} not built: left out");
            }
        }
    }
    assert!(
        !agents.is_empty(),
        "no agent binary built (cargo build --release)"
    );
    for (label, bin, _) in &agents {
        let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
        println!(
            "{label}: {bin} ({size} bytes, {:.2} MiB)",
            size as f64 / 1048576.0
        );
    }

    let mut settings = vec!["max_connections = 50", "pg_stat_statements.max = 5000"];
    settings.extend_from_slice(sbs::PGSS_SETTINGS);
    let pg = PgCluster::start_with(&settings);
    let pgbench = pg.bin.bin.join("pgbench");
    let port = pg.port.to_string();
    let st = Command::new(&pgbench)
        .args([
            "-i",
            "-s",
            "10",
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "postgres",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "pgbench -i failed");
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
            &port,
            "-U",
            "postgres",
            "postgres",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    pg.client()
        .batch_execute("SELECT pg_stat_statements_reset()")
        .unwrap();

    let mut subjects: Vec<Subject> = agents
        .iter()
        .map(|(label, bin, role)| Subject::agent(label, bin, &pg, role))
        .collect();
    subjects.extend(Subject::exporter(&pg, "bench_exporter"));
    let case = format!("pgbench -c 4, {minutes} min");
    let rows = sbs::measure(&case, &pg, subjects, minutes);
    let _ = load.kill();
    let _ = load.wait();
    println!("\n== footprint benchmark: PostgreSQL {} under pgbench -c 4 (shared machine: figures are noisy) ==", pg.major());
    sbs::print_table(&rows);
    println!("\ntargets: steady RSS <= 6 MiB (musl) / <= 8 MiB (glibc), CPU <= 0.1 s/min, PG time <= 30 ms/min");
}
