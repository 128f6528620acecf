//! CPU and memory of the primary's PostgreSQL container (adapters.md §5.3 "Resource
//! resolution"): limits, else requests, else the cAdvisor spec series, else the node's
//! allocatable; usage from metrics-server. Quantities use the Go client's rounding (up).

use super::cadvisor::ContainerSeries;
use crate::cloud::k8s::Quantity;
use crate::error::{Error, Result};
use serde_json::Value;

/// What one pod GET gives.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    pub node: String,
    pub ready: bool,
    pub cpu_limit_m: Option<i64>,
    pub cpu_request_m: Option<i64>,
    pub mem_limit: Option<i64>,
    pub mem_request: Option<i64>,
    /// The PVC holding PGDATA (the volume CloudNativePG calls `pgdata`).
    pub pgdata_claim: Option<String>,
}

fn quantity(v: &Value, milli: bool) -> Option<i64> {
    let q = Quantity::parse(v.as_str()?).ok()?;
    let n = if milli { q.milli_value() } else { q.value() }?;
    (n > 0).then_some(n)
}

impl PodView {
    pub fn from_pod(pod: &Value, container: &str) -> Result<PodView> {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let c = pod["spec"]["containers"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == container))
            .ok_or_else(|| {
                Error::other(format!(
                    "pod {name} has no container named {container:?} (cnpg.container_name)"
                ))
            })?;
        let r = &c["resources"];
        let claim = pod["spec"]["volumes"].as_array().and_then(|vols| {
            let claim = |v: &Value| {
                v["persistentVolumeClaim"]["claimName"]
                    .as_str()
                    .map(str::to_string)
            };
            vols.iter()
                .find(|v| v["name"] == "pgdata")
                .and_then(claim)
                .or_else(|| vols.iter().find_map(claim))
        });
        let ready = pod["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True");
        Ok(PodView {
            uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            node: pod["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            ready,
            cpu_limit_m: quantity(&r["limits"]["cpu"], true),
            cpu_request_m: quantity(&r["requests"]["cpu"], true),
            mem_limit: quantity(&r["limits"]["memory"], false),
            mem_request: quantity(&r["requests"]["memory"], false),
            pgdata_claim: claim,
            name,
        })
    }
}

/// The resolved CPU (millicores) and memory (bytes) the container may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub cpu_m: i64,
    pub mem: i64,
}

/// Memory limits above 2^50 bytes are cAdvisor's "unlimited".
const UNLIMITED: f64 = (1u64 << 50) as f64;

/// Resolves the limits; `node` is read only when the pod spec and cAdvisor leave one open.
pub fn resolve(
    pod: &PodView,
    series: Option<&ContainerSeries>,
    node: impl FnOnce() -> Result<Value>,
) -> Result<Limits> {
    let from_cadvisor_cpu = series.and_then(|s| match (s.cpu_quota, s.cpu_period) {
        (Some(q), Some(p)) if q > 0.0 && p > 0.0 => Some((q / p * 1000.0).ceil() as i64),
        _ => None,
    });
    let from_cadvisor_mem = series
        .and_then(|s| s.memory_limit)
        .filter(|m| *m > 0.0 && *m < UNLIMITED)
        .map(|m| m as i64);
    let cpu = pod.cpu_limit_m.or(pod.cpu_request_m).or(from_cadvisor_cpu);
    let mem = pod.mem_limit.or(pod.mem_request).or(from_cadvisor_mem);
    if let (Some(cpu_m), Some(mem)) = (cpu, mem) {
        return Ok(Limits { cpu_m, mem });
    }
    let n = node().map_err(|e| {
        e.context(format!(
            "pod {} sets no CPU/memory limit; reading its node {}",
            pod.name, pod.node
        ))
    })?;
    let alloc = &n["status"]["allocatable"];
    let cpu_m = cpu.or_else(|| quantity(&alloc["cpu"], true));
    let mem = mem.or_else(|| quantity(&alloc["memory"], false));
    match (cpu_m, mem) {
        (Some(cpu_m), Some(mem)) => Ok(Limits { cpu_m, mem }),
        _ => Err(Error::other(format!(
            "no CPU or memory limit for pod {}: none in the pod spec, cAdvisor or node {}'s allocatable",
            pod.name, pod.node
        ))),
    }
}

/// metrics-server's usage of `container`: (millicores, bytes).
pub fn usage(metrics: &Value, pod: &str, container: &str) -> Result<(i64, i64)> {
    let c = metrics["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == container))
        .ok_or_else(|| {
            Error::other(format!(
                "metrics-server reports no usage for container {container:?} of pod {pod}"
            ))
        })?;
    let cpu = Quantity::parse(c["usage"]["cpu"].as_str().unwrap_or(""))
        .ok()
        .and_then(|q| q.milli_value());
    let mem = Quantity::parse(c["usage"]["memory"].as_str().unwrap_or(""))
        .ok()
        .and_then(|q| q.value());
    match (cpu, mem) {
        (Some(cpu), Some(mem)) if mem > 0 => Ok((cpu, mem)),
        _ => Err(Error::other(format!(
            "metrics-server usage of {pod}/{container} is missing or zero: {}",
            c["usage"]
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: Value) -> PodView {
        PodView::from_pod(
            &json!({"metadata": {"name": "pg-1", "uid": "u1"},
                "spec": {"nodeName": "n1", "containers": [{"name": "postgres", "resources": resources}],
                         "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "pgdata", "persistentVolumeClaim": {"claimName": "pg-1"}}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            "postgres",
        )
        .unwrap()
    }

    #[test]
    fn limits_then_requests_then_cadvisor_then_node() {
        let p = pod(json!({"limits": {"cpu": "1500m", "memory": "2Gi"}}));
        assert!(p.ready);
        assert_eq!(p.pgdata_claim.as_deref(), Some("pg-1"));
        let l = resolve(&p, None, || panic!("node not needed")).unwrap();
        assert_eq!(
            l,
            Limits {
                cpu_m: 1500,
                mem: 2 << 30
            }
        );
        let p = pod(json!({"requests": {"cpu": "250m", "memory": "512Mi"}}));
        assert_eq!(resolve(&p, None, || panic!()).unwrap().cpu_m, 250);
        let p = pod(json!({}));
        let s = ContainerSeries {
            cpu_quota: Some(200000.0),
            cpu_period: Some(100000.0),
            memory_limit: Some(1e9),
            ..Default::default()
        };
        assert_eq!(
            resolve(&p, Some(&s), || panic!()).unwrap(),
            Limits {
                cpu_m: 2000,
                mem: 1_000_000_000
            }
        );
        let s = ContainerSeries {
            cpu_quota: Some(-1.0),
            cpu_period: Some(100000.0),
            memory_limit: Some(9.2e18),
            ..Default::default()
        };
        let node = json!({"status": {"allocatable": {"cpu": "4", "memory": "16302124Ki"}}});
        assert_eq!(
            resolve(&p, Some(&s), || Ok(node)).unwrap(),
            Limits {
                cpu_m: 4000,
                mem: 16302124 * 1024
            }
        );
        let e = PodView::from_pod(
            &json!({"metadata": {"name": "x"}, "spec": {"containers": []}}),
            "postgres",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("no container named \"postgres\""),
            "{e}"
        );
    }

    #[test]
    fn usage_from_metrics_server() {
        let m = json!({"containers": [{"name": "postgres", "usage": {"cpu": "151998n", "memory": "40Mi"}}]});
        assert_eq!(usage(&m, "pg-1", "postgres").unwrap(), (1, 40 << 20));
        let zero =
            json!({"containers": [{"name": "postgres", "usage": {"cpu": "0", "memory": "0"}}]});
        assert!(usage(&zero, "pg-1", "postgres").is_err());
    }
}
