//! Scale benchmark for the catalog collectors (prints figures; not a timed test).
//!
//! Builds a throwaway cluster with 10,000 tables (each with a primary key and a secondary index)
//! and 5,000 distinct statements with long texts in pg_stat_statements, keeps a light workload
//! running, then runs all 42 collectors on their default intervals for N minutes (default 5;
//! `--minutes 1` for a quick run; `--tables`/`--statements` to scale down). Prints peak RSS, CPU
//! seconds, JSON and gzip bytes per collector per minute, PostgreSQL-side time of the agent's own
//! statements per minute and the RSS curve (one sample per 10 s).
//!
//! Run: `cargo bench --bench scale -- --minutes 1` (as root, the cluster runs as `postgres`).

#[path = "../tests/support/pgcluster.rs"]
mod pgcluster;

use dbtune_agent::collectors::{probe, registry, CatalogCollector, CollectCtx, CollectorSettings};
use dbtune_agent::pg::{Pg, SessionLimits};
use flate2::write::GzEncoder;
use flate2::Compression;
use pgcluster::PgCluster;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn gzip_len(b: &[u8]) -> usize {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap().len()
}

fn statement(i: u64) -> String {
    // Distinct per table (so a distinct queryid), ~1,900 characters of text after normalisation.
    let cols: Vec<String> = (0..24)
        .map(|j| format!("v AS \"col_{j}_{}\"", "abcdefghij".repeat(6)))
        .collect();
    format!("SELECT id, {} FROM t_{i} WHERE id = $1", cols.join(", "))
}

fn agent_pg_ms(c: &mut postgres::Client) -> f64 {
    c.query_one(
        "SELECT COALESCE(sum(total_exec_time), 0)::float8 FROM pg_stat_statements WHERE query LIKE '%/*dbtune*/%'",
        &[],
    )
    .unwrap()
    .get(0)
}

fn main() {
    let minutes = arg("--minutes", 5);
    let tables = arg("--tables", 10_000);
    let statements = arg("--statements", 5_000).min(tables);
    eprintln!("scale: {tables} tables, {statements} statements, {minutes} min");

    let pg = PgCluster::start_with(&[
        "pg_stat_statements.max = 10000",
        "max_locks_per_transaction = 1024",
        "shared_buffers = 128MB",
        "autovacuum = off",
    ]);
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
    let ran = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, ran, url) = (stop.clone(), ran.clone(), pg.url());
        thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = c.query(statement(i % statements).as_str(), &[&1i32]);
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    >> 3;
                ran.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let pool = Pg::new(&pg.url(), 2, SessionLimits::default()).unwrap();
    let server = probe::probe(&pool).unwrap();
    let ctx = CollectCtx {
        pg: &pool,
        server: &server,
    };
    struct Slot {
        name: &'static str,
        every: Duration,
        next: Instant,
        c: Box<dyn CatalogCollector>,
        json: u64,
        gz: u64,
        runs: u64,
        errors: u64,
        wall: Duration,
    }
    let start = Instant::now();
    let mut slots: Vec<Slot> = registry::REGISTRY
        .iter()
        .enumerate()
        .map(|(i, d)| Slot {
            name: d.name,
            every: d.default_interval,
            next: start + Duration::from_millis(200 * i as u64),
            c: (d.build)(&CollectorSettings::defaults_for(d.name)),
            json: 0,
            gz: 0,
            runs: 0,
            errors: 0,
            wall: Duration::ZERO,
        })
        .collect();
    let cpu0 = cpu_seconds();
    let pg_ms0 = agent_pg_ms(&mut admin);
    let end = start + Duration::from_secs(minutes * 60);
    let mut curve = vec![(0u64, status_kb("VmRSS:"))];
    let mut next_sample = start + Duration::from_secs(10);
    let mut per_minute_pg = Vec::new();
    let mut last_pg = pg_ms0;
    let mut next_minute = start + Duration::from_secs(60);
    while Instant::now() < end {
        let now = Instant::now();
        for s in slots.iter_mut().filter(|s| s.next <= now) {
            let t = Instant::now();
            match s.c.collect(&ctx) {
                Ok(Some(v)) => {
                    let bytes = dbtune_agent::gojson::to_vec(&v).unwrap();
                    s.json += bytes.len() as u64;
                    s.gz += gzip_len(&bytes) as u64;
                }
                Ok(None) => {}
                Err(e) => {
                    s.errors += 1;
                    eprintln!("{}: {e}", s.name);
                }
            }
            s.wall += t.elapsed();
            s.runs += 1;
            s.next += s.every;
        }
        if Instant::now() >= next_sample {
            curve.push((start.elapsed().as_secs(), status_kb("VmRSS:")));
            next_sample += Duration::from_secs(10);
        }
        if Instant::now() >= next_minute {
            let p = agent_pg_ms(&mut admin);
            per_minute_pg.push(p - last_pg);
            last_pg = p;
            next_minute += Duration::from_secs(60);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_seconds() - cpu0;
    let pg_total = agent_pg_ms(&mut admin) - pg_ms0;
    if per_minute_pg.len() < minutes as usize {
        per_minute_pg.push(pg_ms0 + pg_total - last_pg);
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let mins = minutes.max(1) as f64;
    println!("== scale benchmark: {tables} tables (+PK +index), {statements} statements, {minutes} min ==");
    println!("workload statements run: {}", ran.load(Ordering::Relaxed));
    println!(
        "peak RSS (VmHWM): {} kB; final RSS: {} kB",
        status_kb("VmHWM:"),
        status_kb("VmRSS:")
    );
    println!("agent CPU: {cpu:.2} s total, {:.2} s/min", cpu / mins);
    println!(
        "PostgreSQL time of /*dbtune*/ statements: {pg_total:.0} ms total, {:.0} ms/min",
        pg_total / mins
    );
    println!(
        "  per minute: {:?}",
        per_minute_pg
            .iter()
            .map(|m| m.round() as i64)
            .collect::<Vec<_>>()
    );
    println!(
        "{:<32} {:>5} {:>4} {:>14} {:>14} {:>10}",
        "collector", "runs", "err", "json B/min", "gzip B/min", "wall ms"
    );
    let mut totals = (0u64, 0u64);
    let mut by_size: BTreeMap<u64, Vec<&Slot>> = BTreeMap::new();
    for s in &slots {
        by_size.entry(u64::MAX - s.gz).or_default().push(s);
        totals.0 += s.json;
        totals.1 += s.gz;
    }
    for s in by_size.values().flatten() {
        println!(
            "{:<32} {:>5} {:>4} {:>14.0} {:>14.0} {:>10}",
            s.name,
            s.runs,
            s.errors,
            s.json as f64 / mins,
            s.gz as f64 / mins,
            s.wall.as_millis()
        );
    }
    println!(
        "{:<32} {:>5} {:>4} {:>14.0} {:>14.0}",
        "TOTAL",
        "",
        "",
        totals.0 as f64 / mins,
        totals.1 as f64 / mins
    );
    println!("RSS curve (s, kB): {curve:?}");
    println!("slowest agent statements (total ms, calls, text):");
    for r in admin
        .query(
            "SELECT total_exec_time::float8, calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements \
             WHERE query LIKE '%/*dbtune*/%' ORDER BY total_exec_time DESC LIMIT 12",
            &[],
        )
        .unwrap()
    {
        println!("  {:>9.0} {:>5}  {}", r.get::<_, f64>(0), r.get::<_, i64>(1), r.get::<_, String>(2));
    }
}
