//! Scale benchmark (prints figures; not a test): the real agent daemon and Debian's
//! `prometheus-postgres-exporter` (each under its own role, the exporter scraped every 5 s) run
//! side by side against a cluster with N tables (each with a primary key and a secondary index)
//! and M distinct statements of ~1.9 kB in pg_stat_statements, under a light workload (100
//! statements per second). Both cases — 100 tables / 200 statements and 10,000 tables / 5,000
//! statements — are measured and printed in one table (peak and steady RSS, CPU per minute,
//! PostgreSQL-side time of each role's statements per minute with track_planning on, bytes per
//! minute), with the ratios to the exporter and the slowest statements of each process.
//!
//!   cargo build --release
//!   cargo bench --bench scale -- [--minutes N] [--tables N --statements M] [--agent PATH]
//!
//! `--tables`/`--statements` run that one case only. `--agent2 PATH` runs a second agent binary
//! (its own role) in the same run, for before/after comparisons under the same conditions. The agent defaults to the glibc release
//! build (target/release). Targets at 10,000 tables (issue 13): peak RSS <= 16 MiB, steady <= 12,
//! CPU <= 1 s/min, PG time <= 1 s/min after the bootstrap minute.

#[path = "../tests/support/mod.rs"]
mod support;

mod common {
    #[path = "side_by_side.rs"]
    pub mod side_by_side;
    pub(crate) use super::support;
}

use common::side_by_side::{self as sbs, Subject};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::pgcluster::PgCluster;

fn statement(i: u64) -> String {
    // Distinct per table (so a distinct queryid), ~1,900 characters of text after normalisation.
    let cols: Vec<String> = (0..24)
        .map(|j| format!("v AS \"col_{j}_{}\"", "abcdefghij".repeat(6)))
        .collect();
    format!("SELECT id, {} FROM t_{i} WHERE id = $1", cols.join(", "))
}

fn run_case(
    bin: &str,
    tables: u64,
    statements: u64,
    minutes: u64,
    with_exporter: bool,
) -> Vec<sbs::Figures> {
    let statements = statements.min(tables); // each statement reads its own table
    eprintln!("scale: {tables} tables, {statements} statements, {minutes} min");
    let mut settings = vec![
        "pg_stat_statements.max = 10000",
        "max_locks_per_transaction = 1024",
        "shared_buffers = 128MB",
        "autovacuum = off",
    ];
    settings.extend_from_slice(sbs::PGSS_SETTINGS);
    let pg = PgCluster::start_with(&settings);
    let t0 = Instant::now();
    let mut admin = pg.client();
    for start in (0..tables).step_by(250) {
        let mut sql = String::from("BEGIN;");
        for i in start..(start + 250).min(tables) {
            sql.push_str(&format!(
                "CREATE TABLE t_{i} (id int PRIMARY KEY, v text, n int); CREATE INDEX t_{i}_v ON t_{i} (v); \
                 INSERT INTO t_{i} VALUES (1, 'x', 1), (2, 'y', 2);"
            ));
        }
        sql.push_str("COMMIT;");
        admin.batch_execute(&sql).unwrap();
    }
    admin.batch_execute("ANALYZE").unwrap();
    for i in 0..statements {
        admin.query(statement(i).as_str(), &[&1i32]).unwrap();
    }
    eprintln!("setup done in {:.0} s", t0.elapsed().as_secs_f64());

    // A light workload: 100 statements per second from the set, so deltas exist.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), pg.url());
        thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = c.query(statement(i % statements).as_str(), &[&1i32]);
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    >> 3;
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut subjects = vec![Subject::agent("agent", bin, &pg, "bench_agent")];
    // A second agent binary in the same run (same cluster, same load): before/after comparisons
    // on a shared machine.
    if let Some(b) = sbs::arg("--agent2") {
        subjects.push(Subject::agent("agent2", &b, &pg, "bench_agent2"));
    }
    if with_exporter {
        subjects.extend(Subject::exporter(&pg, "bench_exporter"));
    }
    let rows = sbs::measure(
        &format!("{tables} tables, {statements} stmts, {minutes} min"),
        &pg,
        subjects,
        minutes,
    );
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    rows
}

/// CI budget mode (`cargo test --bench scale -- --ci --agent BIN --budget-small MIB
/// [--budget-large MIB]`, run by .ci/footprint.sh): the 100-table case, and with
/// `--budget-large` the 10,000-table case at the same time, for `--minutes` (default 2), agent
/// only; fails with the figure and the budget when a peak RSS is over its budget.
fn ci(bin: &str, minutes: u64) {
    let budget = |name: &str| {
        sbs::arg(name).map(|v| v.parse::<f64>().unwrap_or_else(|_| panic!("{name} MIB")))
    };
    let small_budget = budget("--budget-small").expect("--budget-small MIB");
    let large_budget = budget("--budget-large");
    let large = large_budget.map(|_| {
        let bin = bin.to_string();
        thread::spawn(move || run_case(&bin, 10_000, 5_000, minutes, false))
    });
    let mut rows = run_case(bin, 100, 200, minutes, false);
    let mut budgets = vec![small_budget];
    if let (Some(h), Some(b)) = (large, large_budget) {
        rows.extend(h.join().expect("10,000-table case"));
        budgets.push(b);
    }
    sbs::print_table(&rows);
    let mut failed = Vec::new();
    for (r, budget) in rows.iter().zip(budgets) {
        let verdict = if r.peak_mib <= budget {
            "ok"
        } else {
            "OVER BUDGET"
        };
        println!(
            "footprint [{}]: peak RSS {:.1} MiB, budget {budget:.1} MiB: {verdict}",
            r.case, r.peak_mib
        );
        if r.peak_mib > budget {
            failed.push(format!(
                "[{}] peak RSS {:.1} MiB > budget {budget:.1} MiB",
                r.case, r.peak_mib
            ));
        }
    }
    if !failed.is_empty() {
        eprintln!("footprint budget exceeded: {}", failed.join("; "));
        std::process::exit(1);
    }
}

fn main() {
    let bin = sbs::agent_bin("release");
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "{bin} not built (cargo build --release)");
    if std::env::args().any(|a| a == "--ci") {
        return ci(&bin, sbs::arg_u64("--minutes", 2));
    }
    let minutes = sbs::arg_u64("--minutes", 5);
    let cases: Vec<(u64, u64)> = match (sbs::arg("--tables"), sbs::arg("--statements")) {
        (None, None) => vec![(100, 200), (10_000, 5_000)],
        _ => vec![(
            sbs::arg_u64("--tables", 10_000),
            sbs::arg_u64("--statements", 5_000),
        )],
    };
    let mut rows = Vec::new();
    for (t, s) in cases {
        rows.extend(run_case(&bin, t, s, minutes, true));
    }
    println!("\n== scale benchmark: agent {bin} ({size} bytes) vs prometheus-postgres-exporter (shared machine: figures are noisy) ==");
    sbs::print_table(&rows);
    println!("\ntargets at 10,000 tables: peak RSS <= 16 MiB, steady <= 12 MiB, CPU <= 1 s/min, PG time <= 1 s/min after bootstrap");
}
