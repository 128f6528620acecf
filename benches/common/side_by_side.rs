//! Shared by the `scale` and `footprint` benchmarks: runs real agent daemons and Debian's
//! `prometheus-postgres-exporter` against one PostgreSQL cluster at the same time, each under
//! its own role, and measures each process the same way:
//!
//! - RSS: peak (VmHWM) and steady (mean of the samples taken in the second half of the run);
//! - CPU seconds per minute after the bootstrap minute (and over the whole run);
//! - PostgreSQL-side time of its statements per minute (execution + planning, from
//!   pg_stat_statements with `track_planning = on`, grouped by role — not by the statement marker);
//! - bytes per minute it moves (agent: what the platform stand-in received on the wire;
//!   exporter: the scraped /metrics text).
//!
//! Figures from a shared 2-core machine are noisy: compare the columns of one run.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::support::agent::{config_yaml, temp_dir};
use super::support::pgcluster::PgCluster;
use super::support::platform::PlatformStandIn;

pub const EXPORTER: &str = "/usr/bin/prometheus-postgres-exporter";

/// pg_stat_statements settings every benchmark cluster gets (planning time counted per role).
pub const PGSS_SETTINGS: &[&str] = &["pg_stat_statements.track_planning = on"];

pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn arg_u64(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// (RSS kB, peak RSS kB, CPU seconds) of a process.
pub fn proc_stat(pid: u32) -> (u64, u64, f64) {
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
    // SAFETY: sysconf has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (
        kb("VmRSS:"),
        kb("VmHWM:"),
        (ticks(11) + ticks(12)) as f64 / hz,
    )
}

/// Creates a login role with pg_monitor (what both the agent and the exporter need).
pub fn monitor_role(pg: &PgCluster, role: &str) -> String {
    pg.client()
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN \
             CREATE ROLE {role} LOGIN; END IF; END $$; GRANT pg_monitor TO {role}; \
             GRANT CONNECT ON DATABASE postgres TO {role}"
        ))
        .unwrap();
    format!(
        "postgres://{role}@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    )
}

/// PostgreSQL-side milliseconds (exec + plan) and calls of each role's statements.
pub fn pg_time(c: &mut postgres::Client, role: &str) -> (f64, i64) {
    let r = c
        .query_one(
            "SELECT COALESCE(sum(s.total_exec_time + s.total_plan_time), 0)::float8, COALESCE(sum(s.calls), 0)::bigint \
             FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = $1",
            &[&role],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

/// The slowest statements of `role` (total ms, calls, text).
pub fn top_statements(c: &mut postgres::Client, role: &str, n: i64) -> Vec<(f64, i64, String)> {
    c.query(
        "SELECT (s.total_exec_time + s.total_plan_time)::float8, s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 120) \
         FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = $1 \
         ORDER BY 1 DESC LIMIT $2",
        &[&role, &n],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

enum Source {
    Platform(PlatformStandIn),
    Scraped(Arc<AtomicU64>),
}

/// One measured process.
pub struct Subject {
    pub label: String,
    pub role: String,
    pub child: Child,
    /// Where the bytes it moves are counted.
    source: Source,
    samples: Vec<(f64, u64)>,
    at_bootstrap: Option<(f64, f64, u64)>,
    stop: Option<Arc<AtomicBool>>,
    dir: std::path::PathBuf,
}

impl Subject {
    /// A real agent daemon (`--local`) under `role`, sending to its own platform stand-in.
    pub fn agent(label: &str, bin: &str, pg: &PgCluster, role: &str) -> Subject {
        let url = monitor_role(pg, role);
        let platform = PlatformStandIn::start();
        let dir = temp_dir("bench");
        let cfg = dir.join("dbtune.yaml");
        std::fs::write(
            &cfg,
            format!(
                "{}\nstate_dir: \"{}\"\n",
                config_yaml(&url, &platform.url, ""),
                dir.join("state").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("--local")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        Subject {
            label: label.into(),
            role: role.into(),
            child,
            source: Source::Platform(platform),
            samples: Vec::new(),
            at_bootstrap: None,
            stop: None,
            dir,
        }
    }

    /// Debian's exporter under `role` with its default collectors, scraped every 5 s.
    pub fn exporter(pg: &PgCluster, role: &str) -> Option<Subject> {
        if !std::path::Path::new(EXPORTER).exists() {
            eprintln!("{EXPORTER} not installed (apt-get install prometheus-postgres-exporter): exporter column left out");
            return None;
        }
        let url = monitor_role(pg, role);
        let port = super::support::pgcluster::free_port();
        let dir = temp_dir("bench-exporter");
        let child = Command::new(EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .env("DATA_SOURCE_NAME", &url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("exporter.log")).unwrap())
            .spawn()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let scraped = Arc::new(AtomicU64::new(0));
        {
            let (stop, scraped) = (stop.clone(), scraped.clone());
            thread::spawn(move || {
                let mut next = Instant::now() + Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        next += Duration::from_secs(5);
                        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                            let _ =
                                s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                            let mut buf = Vec::new();
                            let _ = s.read_to_end(&mut buf);
                            scraped.fetch_add(buf.len() as u64, Ordering::Relaxed);
                        }
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            });
        }
        Some(Subject {
            label: "prometheus-postgres-exporter".into(),
            role: role.into(),
            child,
            source: Source::Scraped(scraped),
            samples: Vec::new(),
            at_bootstrap: None,
            stop: Some(stop),
            dir,
        })
    }

    fn bytes(&self) -> u64 {
        match &self.source {
            Source::Platform(p) => p.wire_bytes(),
            Source::Scraped(n) => n.load(Ordering::Relaxed),
        }
    }

    fn sample(&mut self, t: f64) {
        let (rss, _, _) = proc_stat(self.child.id());
        self.samples.push((t, rss));
    }
}

/// One row of the results table.
pub struct Figures {
    pub case: String,
    pub label: String,
    pub peak_mib: f64,
    pub steady_mib: f64,
    pub cpu_per_min: f64,
    pub cpu_per_min_all: f64,
    pub pg_ms_per_min: f64,
    pub pg_ms_per_min_all: f64,
    pub kb_per_min: f64,
    pub rss_curve: Vec<(u64, u64)>,
    pub top: Vec<(f64, i64, String)>,
}

/// Runs `subjects` for `minutes`, sampling every 5 s; the first minute is the bootstrap pass
/// (left out of the "after bootstrap" rates when the run is longer than one minute).
pub fn measure(
    case: &str,
    pg: &PgCluster,
    mut subjects: Vec<Subject>,
    minutes: u64,
) -> Vec<Figures> {
    let mut admin = pg.client();
    let t0 = Instant::now();
    let boot = if minutes > 1 { 60.0 } else { 0.0 };
    let base: Vec<(f64, f64)> = subjects
        .iter()
        .map(|s| (pg_time(&mut admin, &s.role).0, proc_stat(s.child.id()).2))
        .collect();
    if boot == 0.0 {
        for (s, b) in subjects.iter_mut().zip(&base) {
            s.at_bootstrap = Some((b.1, b.0, s.bytes()));
        }
    }
    let end = Duration::from_secs(minutes * 60);
    let mut next = Duration::from_secs(5);
    while t0.elapsed() < end {
        thread::sleep(Duration::from_millis(200));
        let t = t0.elapsed();
        if t >= next {
            next += Duration::from_secs(5);
            for s in subjects.iter_mut() {
                s.sample(t.as_secs_f64());
                if s.at_bootstrap.is_none() && t.as_secs_f64() >= boot {
                    let cpu = proc_stat(s.child.id()).2;
                    let pgms = pg_time(&mut admin, &s.role).0;
                    s.at_bootstrap = Some((cpu, pgms, s.bytes()));
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for (s, b) in subjects.iter_mut().zip(&base) {
        let (_, hwm, cpu) = proc_stat(s.child.id());
        let (pgms, _) = pg_time(&mut admin, &s.role);
        let bytes = s.bytes();
        let (cpu_b, pg_b, bytes_b) = s.at_bootstrap.unwrap_or((b.1, b.0, 0));
        let after = (secs - boot).max(1.0) / 60.0;
        let half: Vec<u64> = s
            .samples
            .iter()
            .filter(|(t, _)| *t >= secs / 2.0)
            .map(|x| x.1)
            .collect();
        let steady = half.iter().sum::<u64>() as f64 / half.len().max(1) as f64;
        out.push(Figures {
            case: case.into(),
            label: s.label.clone(),
            peak_mib: hwm as f64 / 1024.0,
            steady_mib: steady / 1024.0,
            cpu_per_min: (cpu - cpu_b) / after,
            cpu_per_min_all: cpu / (secs / 60.0),
            pg_ms_per_min: (pgms - pg_b) / after,
            pg_ms_per_min_all: (pgms - b.0) / (secs / 60.0),
            kb_per_min: (bytes - bytes_b) as f64 / 1024.0 / after,
            rss_curve: s
                .samples
                .iter()
                .step_by(2)
                .map(|(t, kb)| (*t as u64, *kb))
                .collect(),
            top: top_statements(&mut admin, &s.role, 6),
        });
        if let Some(st) = &s.stop {
            st.store(true, Ordering::Relaxed);
        }
        let _ = s.child.kill();
        let _ = s.child.wait();
        let _ = std::fs::remove_dir_all(&s.dir);
    }
    out
}

/// Prints all rows in one table, then each agent's ratio to the exporter of its case.
pub fn print_table(rows: &[Figures]) {
    println!(
        "\n{:<34} {:<30} {:>9} {:>11} {:>10} {:>10} {:>11} {:>11} {:>10}",
        "case",
        "process",
        "peak MiB",
        "steady MiB",
        "CPU s/min",
        "(all)",
        "PG ms/min",
        "(all)",
        "kB/min"
    );
    for r in rows {
        println!(
            "{:<34} {:<30} {:>9.1} {:>11.1} {:>10.3} {:>10.3} {:>11.1} {:>11.1} {:>10.1}",
            r.case,
            r.label,
            r.peak_mib,
            r.steady_mib,
            r.cpu_per_min,
            r.cpu_per_min_all,
            r.pg_ms_per_min,
            r.pg_ms_per_min_all,
            r.kb_per_min
        );
    }
    println!("(CPU and PG time per minute after the bootstrap minute; \"(all)\" = whole run, bootstrap included.)");
    for r in rows.iter().filter(|r| !r.label.contains("exporter")) {
        if let Some(e) = rows
            .iter()
            .find(|e| e.case == r.case && e.label.contains("exporter"))
        {
            let q = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            println!(
                "ratio {} / exporter [{}]: steady RSS {:.2}x, CPU {:.2}x, PG time {:.2}x",
                r.label,
                r.case,
                q(r.steady_mib, e.steady_mib),
                q(r.cpu_per_min, e.cpu_per_min),
                q(r.pg_ms_per_min, e.pg_ms_per_min)
            );
        }
    }
    for r in rows {
        println!(
            "\n[{}] {}: RSS curve (s, kB) {:?}",
            r.case, r.label, r.rss_curve
        );
        println!("  slowest statements (total ms incl. planning, calls, text):");
        for (ms, calls, q) in &r.top {
            println!("    {ms:>9.1} {calls:>6}  {q}");
        }
    }
}

/// The agent binary: `--agent PATH`, else the given build under target/.
pub fn agent_bin(default_target: &str) -> String {
    arg("--agent").unwrap_or_else(|| {
        format!(
            "{}/target/{default_target}/dbtune-agent",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}
