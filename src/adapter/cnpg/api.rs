//! The Kubernetes calls the CloudNativePG adapter makes (adapters.md §5.3), typed: the
//! Cluster resource (read, merge-patch of parameters, restart annotation), pods, pod metrics
//! (metrics-server), nodes, the kubelet's cAdvisor text through the API server proxy, PVCs,
//! and the self-reviews `--check` uses. Names reach URLs percent-encoded.

use crate::cloud::encoding::uri_encode;
use crate::cloud::k8s::Kube;
use crate::cloud::Result;
use serde_json::{json, Map, Value};

/// `status.phase` of a Cluster with nothing to do.
pub const HEALTHY_PHASE: &str = "Cluster in healthy state";
/// Annotation that makes CloudNativePG roll every instance (`kubectl cnpg restart`).
pub const RESTART_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// Phases of a Cluster in transition (adapters.md §5.7, from CloudNativePG's phase texts).
const TRANSITION_PHASES: &[&str] = &[
    "failing over",
    "switchover in progress",
    "waiting for instances to become active",
    "waiting for the instances to become active",
    "upgrading cluster",
    "applying configuration",
];
/// Words of CloudNativePG's phases that need someone to act ("Cluster is in an unrecoverable
/// state, needs manual intervention", "Unable to create required cluster objects", image
/// catalog and plugin errors): waiting longer will not help.
const FAILED_WORDS: &[&str] = &[
    "unrecoverable",
    "unable",
    "cannot",
    "error",
    "failed",
    "failure",
];

/// What the adapter reads from a Cluster resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    /// `metadata.generation`: bumped by every spec change (a parameter patch).
    pub generation: i64,
    /// `status.conditions[type=Ready].observedGeneration`: the generation the operator has
    /// finished reconciling (CloudNativePG has no top-level `status.observedGeneration`).
    pub observed_generation: Option<i64>,
    /// `status.conditions[type=Ready].status == "True"`.
    pub ready_condition: Option<bool>,
    pub phase: String,
    pub phase_reason: String,
    pub instances: i64,
    pub ready_instances: i64,
    pub current_primary: String,
    pub target_primary: String,
    /// `spec.postgresql.parameters`.
    pub parameters: Map<String, Value>,
    pub restarted_at: Option<String>,
}

impl ClusterState {
    pub fn from_value(v: &Value) -> ClusterState {
        let st = &v["status"];
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        let ready = st["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Ready"));
        ClusterState {
            generation: v["metadata"]["generation"].as_i64().unwrap_or(0),
            observed_generation: ready.and_then(|c| c["observedGeneration"].as_i64()),
            ready_condition: ready
                .and_then(|c| c["status"].as_str())
                .map(|s| s == "True"),
            phase: s(&st["phase"]),
            phase_reason: s(&st["phaseReason"]),
            instances: st["instances"]
                .as_i64()
                .or_else(|| v["spec"]["instances"].as_i64())
                .unwrap_or(0),
            ready_instances: st["readyInstances"].as_i64().unwrap_or(0),
            current_primary: s(&st["currentPrimary"]),
            target_primary: s(&st["targetPrimary"]),
            parameters: v["spec"]["postgresql"]["parameters"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            restarted_at: v["metadata"]["annotations"][RESTART_ANNOTATION]
                .as_str()
                .map(str::to_string),
        }
    }

    /// Healthy as the failover machine means it (adapters.md §5.7): every instance ready, a
    /// primary, no switchover pending, no transition phase.
    pub fn healthy(&self) -> bool {
        let phase = self.phase.to_ascii_lowercase();
        self.instances > 0
            && self.ready_instances == self.instances
            && !self.current_primary.is_empty()
            && (self.target_primary.is_empty() || self.target_primary == self.current_primary)
            && !TRANSITION_PHASES.iter().any(|p| phase.contains(p))
            && self.failed().is_none()
    }

    /// Healthy and saying so in its phase.
    pub fn settled(&self) -> bool {
        self.healthy() && self.phase == HEALTHY_PHASE
    }

    /// The phase (and reason) when the Cluster reports a state that needs intervention.
    pub fn failed(&self) -> Option<String> {
        let phase = self.phase.to_ascii_lowercase();
        FAILED_WORDS.iter().any(|w| phase.contains(w)).then(|| {
            if self.phase_reason.is_empty() {
                format!("phase {:?}", self.phase)
            } else {
                format!("phase {:?} ({})", self.phase, self.phase_reason)
            }
        })
    }

    /// For wait messages.
    pub fn summary(&self) -> String {
        format!(
            "phase {:?}, {}/{} instances ready, primary {:?}, generation {} (observed {})",
            self.phase,
            self.ready_instances,
            self.instances,
            self.current_primary,
            self.generation,
            self.observed_generation
                .map(|g| g.to_string())
                .unwrap_or_else(|| "not reported".into())
        )
    }
}

/// The access-review question: may we `verb` this `resource` (of `group`, `subresource`)?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub verb: &'static str,
    /// Cluster-scoped (nodes): no namespace in the review.
    pub cluster_scoped: bool,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut r = self.resource.to_string();
        if !self.subresource.is_empty() {
            r = format!("{r}/{}", self.subresource);
        }
        if !self.group.is_empty() {
            r = format!("{r}.{}", self.group);
        }
        write!(f, "{} {r}", self.verb)
    }
}

/// Every permission the adapter uses (the Role and ClusterRole in packaging/kubernetes/).
pub const PERMISSIONS: &[Permission] = &[
    perm("", "pods", "", "get", false),
    perm("", "pods", "", "list", false),
    perm("", "persistentvolumeclaims", "", "get", false),
    perm("metrics.k8s.io", "pods", "", "get", false),
    perm("postgresql.cnpg.io", "clusters", "", "get", false),
    perm("postgresql.cnpg.io", "clusters", "", "patch", false),
    perm("", "nodes", "", "get", true),
    perm("", "nodes", "proxy", "get", true),
];

const fn perm(
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verb: &'static str,
    cluster_scoped: bool,
) -> Permission {
    Permission {
        group,
        resource,
        subresource,
        verb,
        cluster_scoped,
    }
}

pub struct Api {
    pub kube: Kube,
    pub namespace: String,
    pub cluster: String,
}

fn seg(s: &str) -> String {
    uri_encode(s, false)
}

impl Api {
    fn cluster_path(&self) -> String {
        format!(
            "/apis/postgresql.cnpg.io/v1/namespaces/{}/clusters/{}",
            seg(&self.namespace),
            seg(&self.cluster)
        )
    }

    fn pods_path(&self) -> String {
        format!("/api/v1/namespaces/{}/pods", seg(&self.namespace))
    }

    pub fn cluster(&self) -> Result<ClusterState> {
        self.kube
            .get(&self.cluster_path())
            .map(|v| ClusterState::from_value(&v))
    }

    /// Merge-patch of `spec.postgresql.parameters` (a `null` value removes the key). Returns
    /// the Cluster as the API server stored it (its new `metadata.generation`).
    pub fn patch_parameters(&self, params: &Map<String, Value>) -> Result<ClusterState> {
        let body = json!({"spec": {"postgresql": {"parameters": params}}});
        self.kube
            .merge_patch(&self.cluster_path(), &body)
            .map(|v| ClusterState::from_value(&v))
    }

    /// Sets the restart annotation to `at` (RFC 3339 UTC).
    pub fn patch_restart(&self, at: &str) -> Result<ClusterState> {
        let body = json!({"metadata": {"annotations": {RESTART_ANNOTATION: at}}});
        self.kube
            .merge_patch(&self.cluster_path(), &body)
            .map(|v| ClusterState::from_value(&v))
    }

    /// Names of the pods labelled as this Cluster's primary: `cnpg.io/instanceRole=primary`,
    /// else the legacy `role=primary` (CloudNativePG before 1.18 sets only that one).
    pub fn primary_pods(&self) -> Result<Vec<String>> {
        for role in ["cnpg.io/instanceRole", "role"] {
            let sel = format!("cnpg.io/cluster={},{role}=primary", self.cluster);
            let items = self.kube.list(&self.pods_path(), Some(&sel))?;
            let names: Vec<String> = items
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            if !names.is_empty() {
                return Ok(names);
            }
        }
        Ok(Vec::new())
    }

    pub fn pod(&self, name: &str) -> Result<Value> {
        self.kube
            .get(&format!("{}/{}", self.pods_path(), seg(name)))
    }

    pub fn pod_metrics(&self, name: &str) -> Result<Value> {
        self.kube.get(&format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods/{}",
            seg(&self.namespace),
            seg(name)
        ))
    }

    pub fn node(&self, name: &str) -> Result<Value> {
        self.kube.get(&format!("/api/v1/nodes/{}", seg(name)))
    }

    /// The kubelet's cAdvisor metrics (Prometheus text) through the API server proxy.
    pub fn cadvisor(&self, node: &str) -> Result<String> {
        self.kube.get_text(&format!(
            "/api/v1/nodes/{}/proxy/metrics/cadvisor",
            seg(node)
        ))
    }

    pub fn pvc(&self, name: &str) -> Result<Value> {
        self.kube.get(&format!(
            "/api/v1/namespaces/{}/persistentvolumeclaims/{}",
            seg(&self.namespace),
            seg(name)
        ))
    }

    /// SelfSubjectAccessReview: `(allowed, reason)`.
    pub fn may(&self, p: &Permission) -> Result<(bool, String)> {
        let mut attrs = json!({"group": p.group, "resource": p.resource, "verb": p.verb});
        if !p.subresource.is_empty() {
            attrs["subresource"] = json!(p.subresource);
        }
        if !p.cluster_scoped {
            attrs["namespace"] = json!(self.namespace);
        }
        let v = self.kube.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "spec": {"resourceAttributes": attrs}}),
        )?;
        let st = &v["status"];
        let reason = st["reason"]
            .as_str()
            .or(st["evaluationError"].as_str())
            .unwrap_or("")
            .to_string();
        Ok((st["allowed"].as_bool().unwrap_or(false), reason))
    }

    /// SelfSubjectReview (Kubernetes 1.28+): the user name the API server sees.
    pub fn whoami(&self) -> Result<String> {
        let v = self.kube.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        )?;
        Ok(v["status"]["userInfo"]["username"]
            .as_str()
            .unwrap_or("(no user name reported)")
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_generation_observed_generation_and_health() {
        let v = json!({"metadata": {"generation": 4, "annotations": {RESTART_ANNOTATION: "2026-01-01T00:00:00Z"}},
            "spec": {"instances": 3, "postgresql": {"parameters": {"work_mem": "4MB"}}},
            "status": {"phase": HEALTHY_PHASE, "instances": 3, "readyInstances": 3,
                "currentPrimary": "pg-1", "targetPrimary": "pg-1",
                "conditions": [{"type": "LastBackupSucceeded", "status": "True", "observedGeneration": 1},
                               {"type": "Ready", "status": "True", "observedGeneration": 4}]}});
        let c = ClusterState::from_value(&v);
        assert_eq!((c.generation, c.observed_generation), (4, Some(4)));
        assert!(c.settled());
        assert_eq!(c.parameters["work_mem"], "4MB");
        assert_eq!(c.restarted_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        let mut t = c.clone();
        t.target_primary = "pg-2".into();
        assert!(!t.healthy(), "switchover pending");
        let mut t = c.clone();
        t.phase = "Applying configuration".into();
        assert!(!t.healthy());
        let mut t = c.clone();
        t.phase = "Cluster is in an unrecoverable state, needs manual intervention".into();
        assert!(t.failed().is_some() && !t.healthy());
        let mut t = c;
        t.ready_instances = 2;
        assert!(!t.healthy());
    }

    #[test]
    fn permissions_read_like_kubectl_auth_can_i() {
        assert_eq!(PERMISSIONS[7].to_string(), "get nodes/proxy");
        assert_eq!(PERMISSIONS[3].to_string(), "get pods.metrics.k8s.io");
        assert_eq!(
            PERMISSIONS[5].to_string(),
            "patch clusters.postgresql.cnpg.io"
        );
    }
}
