//! Which pod is the primary: the configured `pod_name`, else the pod labelled
//! `cnpg.io/instanceRole=primary` (legacy `role=primary`) for this Cluster. The name is kept
//! between calls but never trusted blindly (adapters.md §5.8.4): it is dropped after every
//! failover and restart, and whenever the Cluster's `currentPrimary` or the pod's own role
//! label says otherwise.

use super::api::ClusterState;
use super::Inner;
use crate::error::{Error, Result};
use serde_json::Value;

impl Inner {
    /// The primary's pod name; `cluster`, when at hand, cross-checks the cached name.
    pub fn primary(&self, cluster: Option<&ClusterState>) -> Result<String> {
        if !self.cfg.pod_name.is_empty() {
            return Ok(self.cfg.pod_name.clone());
        }
        let current = cluster
            .map(|c| c.current_primary.clone())
            .filter(|p| !p.is_empty());
        {
            let cached = self.primary.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(name) = cached.as_ref() {
                if current.as_ref().is_none_or(|c| c == name) {
                    return Ok(name.clone());
                }
            }
        }
        self.discover(current.as_deref())
    }

    /// Lists the labelled primary pods; with several (a switchover under way), the one the
    /// Cluster names as current wins.
    pub fn discover(&self, current: Option<&str>) -> Result<String> {
        let names = self.api.primary_pods().map_err(|e| {
            Error::other(format!(
                "finding the primary pod of Cluster {}/{}: {e}",
                self.cfg.namespace, self.cfg.cluster_name
            ))
        })?;
        let name = current
            .and_then(|c| names.iter().find(|n| n.as_str() == c))
            .or(names.first())
            .cloned()
            .ok_or_else(|| {
                Error::other(format!(
                    "no primary pod found for Cluster {}/{} (no pod labelled cnpg.io/cluster={} with cnpg.io/instanceRole=primary or role=primary)",
                    self.cfg.namespace, self.cfg.cluster_name, self.cfg.cluster_name
                ))
            })?;
        let mut cached = self.primary.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_deref() != Some(name.as_str()) {
            log::info!("primary pod of Cluster {}: {name}", self.cfg.cluster_name);
        }
        *cached = Some(name.clone());
        Ok(name)
    }

    /// Drops the cached name (after a failover or a restart).
    pub fn forget_primary(&self) {
        *self.primary.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// GETs the primary pod, re-discovering once when the pod is gone or no longer labelled
    /// primary. Returns the pod.
    pub fn primary_pod(&self, cluster: Option<&ClusterState>) -> Result<Value> {
        let name = self.primary(cluster)?;
        match self.api.pod(&name) {
            Ok(p) if !self.cfg.pod_name.is_empty() || is_primary(&p) => return Ok(p),
            Ok(_) => log::info!("pod {name} is no longer labelled primary; re-discovering"),
            Err(e) if e.status == Some(404) => log::info!("pod {name} is gone; re-discovering"),
            Err(e) => return Err(Error::other(format!("reading pod {name}: {e}"))),
        }
        self.forget_primary();
        let name = self.discover(cluster.map(|c| c.current_primary.as_str()))?;
        self.api
            .pod(&name)
            .map_err(|e| Error::other(format!("reading pod {name}: {e}")))
    }
}

/// The pod carries a primary role label (either spelling).
pub fn is_primary(pod: &Value) -> bool {
    let l = &pod["metadata"]["labels"];
    l["cnpg.io/instanceRole"] == "primary" || l["role"] == "primary"
}
