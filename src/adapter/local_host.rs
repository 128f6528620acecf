//! What the adapters that run on PostgreSQL's own machine (self-managed, Patroni) read from the
//! local host: system info, and the memory guardrail judged against PostgreSQL's cgroup limit
//! when it has one, else against host memory.

use crate::error::{Context, Result};
use crate::host::{cgroup, cpu, distro, memory, process};
use crate::model::{GuardrailLevel, GuardrailSignal, GuardrailType, Metric};
use crate::pg::Pg;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// System info from PostgreSQL and this host (protocol.md §8.4).
pub fn system_info(pg: &Pg) -> Result<Vec<Metric>> {
    let mut c = pg.conn()?;
    let facts = crate::pg::queries::pg_facts(&mut c)?;
    let mem = memory::host().context("reading host memory")?;
    let cpus = cpu::count().context("counting CPUs")?;
    let (platform, platform_version) = distro::detect();
    Ok(vec![
        Metric::string("pg_version", facts.version.wire()),
        Metric::bytes("node_memory_total", mem.total as i64),
        Metric::string("node_os_info", std::env::consts::OS),
        Metric::string("system_info_platform_version", platform_version),
        Metric::string("system_info_platform", platform),
        Metric::int("pg_max_connections", facts.max_connections),
        Metric::int("node_cpu_count", cpus),
        Metric::string("pg_current_database", facts.current_database),
        Metric::int("pg_database_count", facts.database_count),
    ])
}

/// The memory guardrail (every second). The postmaster's PID and the cgroup directory whose
/// limit applies to it are re-resolved at most once a minute; each check then reads only that
/// directory's three files (or /proc/meminfo when no limit applies).
#[derive(Default)]
pub struct MemoryGuardrail {
    located: Mutex<Located>,
    resolving: AtomicBool,
}

#[derive(Default)]
struct Located {
    postmaster: Option<u32>,
    limit: Option<cgroup::Limited>,
    at: Option<Instant>,
}

impl MemoryGuardrail {
    pub fn check(&self, pg: &Pg, threshold: f64) -> Result<Option<GuardrailSignal>> {
        let used = match self.limit(pg).as_ref().and_then(cgroup::read) {
            Some(cg) => cg.used_percent(),
            None => memory::host_available()
                .context("reading host memory")?
                .used_percent(),
        };
        log::debug!("Memory usage: {used:.2}%");
        Ok((used > threshold).then_some(GuardrailSignal {
            level: GuardrailLevel::Critical,
            kind: GuardrailType::Memory,
        }))
    }

    fn limit(&self, pg: &Pg) -> Option<cgroup::Limited> {
        let mut g = self.located.lock().unwrap_or_else(|p| p.into_inner());
        let stale = g.at.is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if stale && !self.resolving.swap(true, Ordering::SeqCst) {
            g.at = Some(Instant::now());
            drop(g);
            let pid = resolve_postmaster(pg);
            let mut g = self.located.lock().unwrap_or_else(|p| p.into_inner());
            if pid.is_some() {
                g.postmaster = pid;
            }
            g.limit = g.postmaster.and_then(cgroup::locate);
            self.resolving.store(false, Ordering::SeqCst);
            return g.limit.clone();
        }
        g.limit.clone()
    }
}

/// Our backend's parent is the postmaster; only trusted when it is a local postgres process.
fn resolve_postmaster(pg: &Pg) -> Option<u32> {
    let mut conn = pg.conn().ok()?;
    let backend = crate::pg::queries::backend_pid(&mut conn).ok()?;
    let backend = u32::try_from(backend).ok()?;
    let ppid = process::parent_of(backend)?;
    (process::is_postgres_process(backend) && process::is_postgres_process(ppid)).then_some(ppid)
}
