//! What the adapter knows about the database (adapters.md §1.3 FetchDBInfo): the instance, its
//! cluster (Aurora and Multi-AZ DB clusters), the instance and cluster parameter groups, and the
//! size of the class. Sizes come from EC2 DescribeInstanceTypes on the class without `db.`;
//! classes with no EC2 twin (`db.x2g.*`, Optimized-CPU `….tpc2.mem4x`) fall back to a small
//! table or to the base class scaled, and otherwise stay unknown: a missing size never fails
//! start-up or a system-info tick (pitfall 8). Serverless v2 sizes come from MaxACU.

use super::api::{Api, Cluster, Instance};
use crate::cloud::CloudError;

#[derive(Clone, Debug, Default)]
pub struct DbInfo {
    pub instance: Instance,
    pub cluster: Option<Cluster>,
    /// vCPUs and memory bytes, when known.
    pub size: Option<(u32, u64)>,
    /// The class `size` was computed for (EC2 is asked again only when the class changes).
    pub sized_class: String,
}

impl DbInfo {
    /// The instance's (first) DB parameter group.
    pub fn group(&self) -> Option<&str> {
        self.instance
            .groups
            .first()
            .map(|g| g.name.as_str())
            .filter(|g| !g.is_empty())
    }
    pub fn cluster_group(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .and_then(|c| c.parameter_group.as_deref())
    }
}

/// AWS does not allow modifying `default.*` groups (prefix rule: `my-default.x` is fine).
pub fn is_default_group(name: &str) -> bool {
    name.starts_with("default.")
}

/// Memory-optimised Graviton classes RDS sells with no EC2 instance type of the same name
/// (vCPU, GiB), from the RDS instance-class table.
const NO_EC2_TWIN: &[(&str, u32, u64)] = &[
    ("x2g.medium", 1, 16),
    ("x2g.large", 2, 32),
    ("x2g.xlarge", 4, 64),
    ("x2g.2xlarge", 8, 128),
    ("x2g.4xlarge", 16, 256),
    ("x2g.8xlarge", 32, 512),
    ("x2g.12xlarge", 48, 768),
    ("x2g.16xlarge", 64, 1024),
];

const GIB: u64 = 1024 * 1024 * 1024;

/// `r5.2xlarge.tpc2.mem4x` → (`r5.2xlarge`, threads per core 2, memory ×4).
pub fn optimized_cpu(class: &str) -> Option<(&str, u32, u64)> {
    let mut parts = class.rsplitn(3, '.');
    let mem = parts
        .next()?
        .strip_prefix("mem")?
        .strip_suffix('x')?
        .parse()
        .ok()?;
    let tpc = parts.next()?.strip_prefix("tpc")?.parse().ok()?;
    Some((parts.next()?, tpc, mem))
}

/// vCPUs and memory of an RDS class (without `db.`), or None when it cannot be known.
pub fn class_size(api: &Api, class: &str, max_acu: Option<f64>) -> Option<(u32, u64)> {
    if class == "serverless" {
        let acu = max_acu?;
        return Some((acu.ceil() as u32, (acu * 2.0 * GIB as f64) as u64));
    }
    if let Some((_, v, g)) = NO_EC2_TWIN.iter().find(|(c, _, _)| *c == class) {
        return Some((*v, g * GIB));
    }
    if let Some((base, tpc, mem)) = optimized_cpu(class) {
        // The base type has two threads per core; tpc1 halves the vCPUs, memN× multiplies memory.
        let (v, m) = lookup(api, base)?;
        return Some(((v * tpc / 2).max(1), m * mem));
    }
    lookup(api, class)
}

fn lookup(api: &Api, ty: &str) -> Option<(u32, u64)> {
    match api.instance_type(ty) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("size of instance class db.{ty} unknown (node_cpu_count and node_memory_total are left out, the memory guardrail is off): {e}");
            None
        }
    }
}

/// Describes the instance (for Aurora, the cluster's writer when `id` names the cluster) and its
/// cluster. `previous` carries the size over when the class is unchanged.
pub fn fetch(
    api: &Api,
    id: &str,
    aurora: bool,
    previous: Option<&DbInfo>,
) -> Result<DbInfo, CloudError> {
    let instance = match api.describe_instance(id) {
        Ok(i) => i,
        Err(e) if aurora && e.code() == Some("DBInstanceNotFound") => {
            super::aurora::writer_of_cluster(api, id).map_err(|c| {
                c.context(format!("{id} is neither an instance ({e}) nor a cluster"))
            })?
        }
        Err(e) => return Err(e),
    };
    let cluster = match &instance.cluster {
        Some(c) => Some(api.describe_cluster(c)?),
        None => None,
    };
    let class = instance.class.trim_start_matches("db.").to_string();
    if class == "serverless" && cluster.as_ref().and_then(|c| c.max_acu).is_none() {
        log::warn!("instance {} is Serverless v2 but its cluster has no ServerlessV2ScalingConfiguration.MaxCapacity: size unknown", instance.identifier);
    }
    let size = match previous.filter(|p| p.sized_class == class && p.size.is_some()) {
        Some(p) => p.size,
        None => class_size(api, &class, cluster.as_ref().and_then(|c| c.max_acu)),
    };
    Ok(DbInfo {
        instance,
        cluster,
        size,
        sized_class: class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_group_is_a_prefix_rule() {
        assert!(is_default_group("default.postgres15"));
        assert!(!is_default_group("my-default.postgres15"));
        assert!(!is_default_group(""));
    }

    #[test]
    fn optimized_cpu_suffixes_are_parsed() {
        assert_eq!(
            optimized_cpu("r5.2xlarge.tpc2.mem4x"),
            Some(("r5.2xlarge", 2, 4))
        );
        assert_eq!(
            optimized_cpu("r5b.large.tpc1.mem2x"),
            Some(("r5b.large", 1, 2))
        );
        assert_eq!(optimized_cpu("m5.large"), None);
    }
}
