//! `--check` lines for the Kubernetes side: the API server answers, who we are to it, every
//! permission the adapter uses (one SelfSubjectAccessReview each; a missing one is named
//! with its verb and resource), the Cluster, its primary pod and metrics-server.

use super::api::PERMISSIONS;
use super::Inner;
use crate::checks::Check;

fn line(name: &'static str, r: std::result::Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
        },
    }
}

pub fn run(inner: &Inner) -> Vec<Check> {
    let api = &inner.api;
    let kc = &api.kube.config;
    let mut out = Vec::new();
    let reachable = api.kube.get("/version");
    let up = reachable.is_ok();
    out.push(line(
        "Kubernetes API",
        reachable
            .map(|v| {
                format!(
                    "{} ({}), Kubernetes {}",
                    kc.server,
                    kc.source,
                    v["gitVersion"].as_str().unwrap_or("(version not reported)")
                )
            })
            .map_err(|e| format!("{} ({}): {e}", kc.server, kc.source)),
    ));
    if !up {
        return out;
    }
    out.push(line(
        "Kubernetes identity",
        match api.whoami() {
            Ok(user) => Ok(format!("{user} (via {})", kc.source)),
            // SelfSubjectReview is Kubernetes 1.28+; older servers do not know it.
            Err(e) if e.status == Some(404) => Ok(format!(
                "{} (this API server cannot say who we are: no SelfSubjectReview)",
                kc.source
            )),
            Err(e) => Err(format!("SelfSubjectReview: {e}")),
        },
    ));
    let mut missing = Vec::new();
    let mut errors = Vec::new();
    for p in PERMISSIONS {
        match api.may(p) {
            Ok((true, _)) => {}
            Ok((false, reason)) => missing.push(if reason.is_empty() {
                format!("{p}")
            } else {
                format!("{p} ({reason})")
            }),
            Err(e) => errors.push(format!("{p}: {e}")),
        }
    }
    let scope = format!("namespace {}", inner.cfg.namespace);
    out.push(line(
        "Kubernetes RBAC",
        if missing.is_empty() && errors.is_empty() {
            Ok(format!(
                "all {} permissions granted ({scope}; nodes cluster-wide)",
                PERMISSIONS.len()
            ))
        } else {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("missing: {}", missing.join(", ")));
            }
            if !errors.is_empty() {
                parts.push(format!("could not ask: {}", errors.join("; ")));
            }
            Err(format!(
                "{} in {scope} (see packaging/kubernetes/rbac-cnpg.yaml)",
                parts.join("; ")
            ))
        },
    ));
    let cluster = api.cluster();
    let name = format!("{}/{}", inner.cfg.namespace, inner.cfg.cluster_name);
    out.push(line(
        "CNPG Cluster",
        cluster
            .as_ref()
            .map(|c| format!("{name}: {}", c.summary()))
            .map_err(|e| format!("{name}: {e}")),
    ));
    let primary = inner
        .primary_pod(cluster.as_ref().ok())
        .map_err(|e| e.to_string())
        .and_then(|p| {
            super::resources::PodView::from_pod(&p, &inner.cfg.container_name)
                .map_err(|e| e.to_string())
        });
    out.push(line(
        "CNPG primary pod",
        primary.as_ref().map_err(Clone::clone).and_then(|v| {
            if v.ready {
                Ok(format!("{} on node {} (Ready)", v.name, v.node))
            } else {
                Err(format!("{} on node {} is not Ready", v.name, v.node))
            }
        }),
    ));
    if let Ok(v) = &primary {
        out.push(line(
            "metrics-server",
            api.pod_metrics(&v.name)
                .map_err(|e| {
                    format!("{e} (the adapter needs metrics-server for CPU and memory usage)")
                })
                .and_then(|m| {
                    super::resources::usage(&m, &v.name, &inner.cfg.container_name)
                        .map(|(cpu, mem)| format!("{}: {cpu}m CPU, {mem} bytes", v.name))
                        .map_err(|e| e.to_string())
                }),
        ));
    }
    out
}
