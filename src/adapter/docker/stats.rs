//! What the Engine's one-shot container stats say: CPU counters, memory used and the limit.
//! CPU % is a real rate: the change of the container's `total_usage` over the change of the
//! host's `system_cpu_usage` between two samples, times the online CPUs (the Go agent divides
//! lifetime totals, giving the container's lifetime share of the host).

use crate::error::{Error, Result};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Container CPU time, ns.
    pub total_usage: u64,
    /// Host CPU time, ns (all CPUs).
    pub system_usage: u64,
    pub online_cpus: u32,
    pub mem_usage: u64,
    pub mem_limit: u64,
    /// Page cache that can be dropped (cgroup v1 `total_inactive_file`, v2 `inactive_file`).
    pub inactive_file: Option<u64>,
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    let mut v = v;
    for k in path {
        v = v.get(k)?;
    }
    v.as_u64()
}

impl Sample {
    pub fn parse(v: &Value) -> Result<Sample> {
        let need = |path: &[&str]| {
            u(v, path).ok_or_else(|| {
                Error::other(format!(
                    "container stats have no {} (is the container running?)",
                    path.join(".")
                ))
            })
        };
        let online = u(v, &["cpu_stats", "online_cpus"])
            .filter(|n| *n > 0)
            .or_else(|| {
                v.pointer("/cpu_stats/cpu_usage/percpu_usage")
                    .and_then(Value::as_array)
                    .map(|a| a.len() as u64)
                    .filter(|n| *n > 0)
            })
            .unwrap_or(1);
        let usage = need(&["memory_stats", "usage"])?;
        if usage == 0 {
            return Err(Error::other(
                "container stats report zero memory usage (is the container running?)",
            ));
        }
        Ok(Sample {
            total_usage: need(&["cpu_stats", "cpu_usage", "total_usage"])?,
            system_usage: need(&["cpu_stats", "system_cpu_usage"])?,
            online_cpus: online as u32,
            mem_usage: usage,
            mem_limit: u(v, &["memory_stats", "limit"]).unwrap_or(0),
            inactive_file: u(v, &["memory_stats", "stats", "total_inactive_file"])
                .or_else(|| u(v, &["memory_stats", "stats", "inactive_file"])),
        })
    }

    /// Memory in use without page cache that can be dropped (what `docker stats` shows).
    pub fn memory_used(&self) -> u64 {
        match self.inactive_file {
            Some(i) if i < self.mem_usage => self.mem_usage - i,
            _ => self.mem_usage,
        }
    }

    /// Used share of the container's limit, when it has one.
    pub fn used_percent_of_limit(&self) -> Option<f64> {
        (self.mem_limit > 0).then(|| self.memory_used() as f64 * 100.0 / self.mem_limit as f64)
    }

    /// CPU % between `prev` and `self` (100 = one CPU's worth × online CPUs is the ceiling);
    /// None when the counters did not move forward (first sample, restart, wrap).
    pub fn cpu_percent_since(&self, prev: &Sample) -> Option<f64> {
        let cpu = self.total_usage.checked_sub(prev.total_usage)?;
        let sys = self.system_usage.checked_sub(prev.system_usage)?;
        if sys == 0 {
            return None;
        }
        Some(cpu as f64 / sys as f64 * self.online_cpus as f64 * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats(total: u64, system: u64) -> Value {
        json!({"cpu_stats": {"cpu_usage": {"total_usage": total, "percpu_usage": [1, 2]}, "system_cpu_usage": system, "online_cpus": 2},
               "precpu_stats": {"cpu_usage": {"total_usage": 0}},
               "memory_stats": {"usage": 100u64 << 20, "limit": 400u64 << 20, "stats": {"total_inactive_file": 20u64 << 20, "inactive_file": 30u64 << 20}}})
    }

    #[test]
    fn cpu_is_a_rate_between_two_samples() {
        let a = Sample::parse(&stats(1_000_000_000, 100_000_000_000)).unwrap();
        // 0.5 s of container CPU while the host's 2 CPUs ran 2 s in total: one quarter of
        // the host, i.e. half a CPU = 50 % of one CPU × 2 CPUs → 50.
        let b = Sample::parse(&stats(1_500_000_000, 102_000_000_000)).unwrap();
        assert_eq!(b.cpu_percent_since(&a), Some(50.0));
        assert_eq!(a.cpu_percent_since(&b), None);
        assert_eq!(a.cpu_percent_since(&a), None);
    }

    #[test]
    fn memory_without_inactive_file_and_against_the_limit() {
        let s = Sample::parse(&stats(1, 1)).unwrap();
        // cgroup v1 total_inactive_file is preferred.
        assert_eq!(s.memory_used(), 80 << 20);
        assert_eq!(s.used_percent_of_limit(), Some(20.0));
        let mut v = stats(1, 1);
        v["memory_stats"]["stats"] = json!({"inactive_file": 30u64 << 20});
        v["cpu_stats"]
            .as_object_mut()
            .unwrap()
            .remove("online_cpus");
        let s = Sample::parse(&v).unwrap();
        assert_eq!((s.memory_used(), s.online_cpus), (70 << 20, 2));
        v["memory_stats"]["usage"] = json!(0);
        assert!(Sample::parse(&v)
            .unwrap_err()
            .to_string()
            .contains("zero memory"));
        assert!(Sample::parse(&json!({}))
            .unwrap_err()
            .to_string()
            .contains("memory_stats.usage"));
    }
}
