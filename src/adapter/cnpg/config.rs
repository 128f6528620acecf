//! The `cnpg:` section (adapters.md §5.1) and its `DBT_CNPG_*` variables, plus where the
//! Kubernetes credentials come from (§5.2): the in-cluster service account first, else the
//! kubeconfig (`kubeconfig_path`, then `KUBECONFIG`, then `~/.kube/config`).

use crate::cloud::k8s::KubeConfig;
use crate::config::keys::Keys;
use crate::config::Sources;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The keys read below (`config::keys`).
pub const KEYS: Keys = Keys {
    section: "cnpg",
    file: &[
        "namespace",
        "cluster_name",
        "pod_name",
        "container_name",
        "kubeconfig_path",
        "failover_stabilization_seconds",
    ],
    env: &[
        "DBT_CNPG_NAMESPACE",
        "DBT_CNPG_CLUSTER_NAME",
        "DBT_CNPG_POD_NAME",
        "DBT_CNPG_CONTAINER_NAME",
        "DBT_CNPG_KUBECONFIG_PATH",
        "DBT_CNPG_FAILOVER_STABILIZATION_SECONDS",
    ],
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CnpgConfig {
    pub namespace: String,
    pub cluster_name: String,
    /// Empty: the primary is discovered by label (and re-discovered after failovers).
    pub pod_name: String,
    pub container_name: String,
    pub kubeconfig_path: Option<PathBuf>,
    /// How long a new primary must stay healthy after a failover before the agent applies,
    /// collects or reads PostgreSQL again (the Go agent's fixed 30 s).
    pub failover_stabilization: Duration,
}

const SECTION: &str = "cnpg";

impl CnpgConfig {
    /// Reads every key, reporting every problem at once (each names its key and variable).
    pub fn from_sources(src: &Sources) -> Result<CnpgConfig> {
        let mut errs = Vec::new();
        let mut get = |key: &str, env: &str| match src.string(&[SECTION, key], Some(env)) {
            Ok(v) => v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
            Err(e) => {
                errs.push(e);
                None
            }
        };
        let namespace = get("namespace", "DBT_CNPG_NAMESPACE");
        let cluster_name = get("cluster_name", "DBT_CNPG_CLUSTER_NAME");
        let pod_name = get("pod_name", "DBT_CNPG_POD_NAME").unwrap_or_default();
        let container_name =
            get("container_name", "DBT_CNPG_CONTAINER_NAME").unwrap_or_else(|| "postgres".into());
        let kubeconfig_path = get("kubeconfig_path", "DBT_CNPG_KUBECONFIG_PATH").map(PathBuf::from);
        let stabilization = match src.int(
            &[SECTION, "failover_stabilization_seconds"],
            Some("DBT_CNPG_FAILOVER_STABILIZATION_SECONDS"),
            30,
        ) {
            Ok(n) if (1..=3600).contains(&n) => n as u64,
            Ok(n) => {
                errs.push(format!("cnpg.failover_stabilization_seconds (DBT_CNPG_FAILOVER_STABILIZATION_SECONDS): {n} is out of range (expected 1 to 3600 seconds)"));
                30
            }
            Err(e) => {
                errs.push(e);
                30
            }
        };
        if namespace.is_none() {
            errs.push("cnpg.namespace (DBT_CNPG_NAMESPACE) is required: the namespace of the CloudNativePG Cluster".into());
        }
        if cluster_name.is_none() {
            errs.push("cnpg.cluster_name (DBT_CNPG_CLUSTER_NAME) is required: the name of the CloudNativePG Cluster resource".into());
        }
        for (key, v) in [
            ("namespace", namespace.as_deref()),
            ("cluster_name", cluster_name.as_deref()),
            ("pod_name", Some(pod_name.as_str())),
            ("container_name", Some(container_name.as_str())),
        ] {
            if let Some(v) = v.filter(|v| !v.is_empty() && !is_dns_name(v)) {
                errs.push(format!(
                    "cnpg.{key}: {v:?} is not a Kubernetes object name (lower-case letters, digits, '-' and '.', at most 253 characters)"
                ));
            }
        }
        if !errs.is_empty() {
            return Err(Error::invalid(format!(
                "CloudNativePG configuration: {}",
                errs.join("; ")
            )));
        }
        Ok(CnpgConfig {
            namespace: namespace.unwrap_or_default(),
            cluster_name: cluster_name.unwrap_or_default(),
            pod_name,
            container_name,
            kubeconfig_path,
            failover_stabilization: Duration::from_secs(stabilization),
        })
    }

    /// The kubeconfig to use when not in a pod: the configured path, else the first file
    /// named by `KUBECONFIG` that exists (client-go merges them; we take the first), else
    /// None (`~/.kube/config`).
    pub fn kubeconfig(&self, env: &crate::config::Env) -> Option<PathBuf> {
        if let Some(p) = &self.kubeconfig_path {
            return Some(p.clone());
        }
        let list = env.get("KUBECONFIG")?;
        let paths: Vec<PathBuf> = list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        paths
            .iter()
            .find(|p| p.is_file())
            .or(paths.first())
            .cloned()
    }

    /// The API server config: in-cluster first (adapters.md §5.8.1), else the kubeconfig.
    pub fn kube_config(&self, env: &crate::config::Env) -> Result<KubeConfig> {
        KubeConfig::load(env, self.kubeconfig(env).as_deref(), false).map_err(|e| {
            Error::invalid(format!(
                "CloudNativePG: cannot configure access to the Kubernetes API (not in a pod, and the kubeconfig failed): {e}"
            ))
        })
    }
}

/// RFC 1123 subdomain: what Kubernetes accepts as a name.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn cfg(yaml: &str, env: &[(&str, &str)]) -> Result<CnpgConfig> {
        let src = Sources::from_yaml(yaml, Env::from_pairs(env.iter().copied())).unwrap();
        CnpgConfig::from_sources(&src)
    }

    #[test]
    fn reads_the_section_with_env_overrides_and_defaults() {
        let c = cfg(
            "cnpg:\n  namespace: db\n  cluster_name: pg\n",
            &[("DBT_CNPG_CLUSTER_NAME", "other")],
        )
        .unwrap();
        assert_eq!(c.namespace, "db");
        assert_eq!(c.cluster_name, "other");
        assert_eq!(c.container_name, "postgres");
        assert_eq!(c.pod_name, "");
        assert_eq!(c.kubeconfig_path, None);
        assert_eq!(c.failover_stabilization, Duration::from_secs(30));
    }

    #[test]
    fn every_missing_or_bad_key_is_named() {
        let e = cfg(
            "cnpg:\n  pod_name: Bad_Name\n",
            &[("DBT_CNPG_FAILOVER_STABILIZATION_SECONDS", "0")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("failover_stabilization_seconds"), "{e}");
        assert!(
            e.contains("cnpg.namespace (DBT_CNPG_NAMESPACE) is required"),
            "{e}"
        );
        assert!(
            e.contains("cnpg.cluster_name (DBT_CNPG_CLUSTER_NAME) is required"),
            "{e}"
        );
        assert!(e.contains("cnpg.pod_name: \"Bad_Name\""), "{e}");
    }

    #[test]
    fn kubeconfig_path_then_kubeconfig_variable() {
        let c = cfg("cnpg:\n  namespace: db\n  cluster_name: pg\n", &[]).unwrap();
        let env = Env::from_pairs([("KUBECONFIG", "/nonexistent/a:/nonexistent/b")]);
        assert_eq!(c.kubeconfig(&env), Some(PathBuf::from("/nonexistent/a")));
        assert_eq!(c.kubeconfig(&Env::default()), None);
        let c = CnpgConfig {
            kubeconfig_path: Some("/x/config".into()),
            ..c
        };
        assert_eq!(c.kubeconfig(&env), Some(PathBuf::from("/x/config")));
    }
}
