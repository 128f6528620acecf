//! The Kubernetes manifests in packaging/kubernetes/ (what `kubectl apply -k` installs for the
//! CloudNativePG adapter), checked offline: core objects and the Deployment's pod template
//! against the vendor's core OpenAPI (shared/testdata/vendor-api), the Role and ClusterRole
//! against exactly the permissions the adapter uses (its own PERMISSIONS list), and the
//! wiring (service account, --cnpg, --health probes, the state directory on the PVC).
mod support;

use dbtune_agent::adapter::cnpg::api::PERMISSIONS;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use support::k8s_schema;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes")
}

/// Every document of every resource listed in kustomization.yaml.
fn documents() -> Vec<Value> {
    let k: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir().join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for f in k["resources"].as_array().unwrap() {
        let p = dir().join(f.as_str().unwrap());
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        for d in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(d).unwrap();
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let v = of_kind(docs, kind);
    assert_eq!(v.len(), 1, "expected one {kind}");
    v[0]
}

fn check(v: &Value, schema: &str, core: &Value) {
    let s = json!({"$ref": format!("#/components/schemas/{schema}")});
    let errs = k8s_schema::validate(v, &s, core);
    assert!(
        errs.is_empty(),
        "{schema} {}: {errs:?}",
        v["metadata"]["name"]
    );
}

/// `(apiGroup, resource, verb)` of every rule.
fn rules(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for r in role["rules"].as_array().unwrap() {
        for g in r["apiGroups"].as_array().unwrap() {
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    out.insert((
                        g.as_str().unwrap().into(),
                        res.as_str().unwrap().into(),
                        v.as_str().unwrap().into(),
                    ));
                }
            }
        }
    }
    out
}

fn wanted(cluster_scoped: bool) -> BTreeSet<(String, String, String)> {
    PERMISSIONS
        .iter()
        .filter(|p| p.cluster_scoped == cluster_scoped)
        .map(|p| {
            let res = if p.subresource.is_empty() {
                p.resource.to_string()
            } else {
                format!("{}/{}", p.resource, p.subresource)
            };
            (p.group.to_string(), res, p.verb.to_string())
        })
        .collect()
}

#[test]
fn manifests_match_the_vendor_schemas_and_the_adapter() {
    let core = k8s_schema::core_openapi();
    let docs = documents();
    let sa = one(&docs, "ServiceAccount");
    check(sa, "io.k8s.api.core.v1.ServiceAccount", &core);
    let secret = one(&docs, "Secret");
    check(secret, "io.k8s.api.core.v1.Secret", &core);
    for k in [
        "DBT_DBTUNE_API_KEY",
        "DBT_DBTUNE_DATABASE_ID",
        "DBT_POSTGRESQL_CONNECTION_URL",
    ] {
        assert!(secret["stringData"][k].is_string(), "secret lacks {k}");
    }
    let pvc = one(&docs, "PersistentVolumeClaim");
    check(pvc, "io.k8s.api.core.v1.PersistentVolumeClaim", &core);

    // apps/v1 is not in the vendor's core document: its pod template is.
    let dep = one(&docs, "Deployment");
    assert_eq!(dep["apiVersion"], "apps/v1");
    assert_eq!(
        dep["spec"]["replicas"], 1,
        "two agents must never tune one database"
    );
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let tpl = &dep["spec"]["template"];
    check(
        &tpl["metadata"],
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        &core,
    );
    check(&tpl["spec"], "io.k8s.api.core.v1.PodSpec", &core);
    assert_eq!(
        dep["spec"]["selector"]["matchLabels"], tpl["metadata"]["labels"],
        "the selector selects the template"
    );
    let pod = &tpl["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let c = &pod["containers"][0];
    assert!(c["args"].as_array().unwrap().contains(&json!("--cnpg")));
    for probe in ["startupProbe", "livenessProbe"] {
        assert_eq!(
            c[probe]["exec"]["command"],
            json!(["/usr/bin/dbtune-agent", "--health"]),
            "{probe}"
        );
    }
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    assert_eq!(
        env("DBT_CNPG_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert!(env("DBT_CNPG_CLUSTER_NAME")["value"].is_string());
    let state_dir = env("DBT_STATE_DIR")["value"].clone();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == state_dir)
        .expect("the state directory is mounted");
    let vol = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(
        vol["persistentVolumeClaim"]["claimName"], pvc["metadata"]["name"],
        "the apply journal lives on the PVC"
    );
    assert_eq!(
        c["envFrom"][0]["secretRef"]["name"],
        secret["metadata"]["name"]
    );

    // RBAC: exactly what the adapter asks for; cluster-wide only for nodes.
    let role = one(&docs, "Role");
    assert_eq!(rules(role), wanted(false), "Role rules");
    let cr = one(&docs, "ClusterRole");
    assert_eq!(rules(cr), wanted(true), "ClusterRole rules");
    for (binding, target) in [("RoleBinding", role), ("ClusterRoleBinding", cr)] {
        let b = one(&docs, binding);
        assert_eq!(
            b["roleRef"]["name"], target["metadata"]["name"],
            "{binding}"
        );
        assert_eq!(b["roleRef"]["kind"], target["kind"], "{binding}");
        assert_eq!(b["subjects"][0]["kind"], "ServiceAccount");
        assert_eq!(
            b["subjects"][0]["name"], sa["metadata"]["name"],
            "{binding}"
        );
    }
}

#[test]
fn the_validator_rejects_what_the_api_server_would() {
    // The check above must be able to fail: unknown fields, wrong types, missing required.
    let core = k8s_schema::core_openapi();
    let s = json!({"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"});
    let bad = json!({"containers": [{"name": "a", "imagePullPolicy": 3, "livenessprobe": {}}],
                     "serviceAccount_name": "x"});
    let errs = k8s_schema::validate(&bad, &s, &core);
    let text = format!("{errs:?}");
    assert!(text.contains("imagePullPolicy: expected string"), "{text}");
    assert!(text.contains("livenessprobe: unknown field"), "{text}");
    assert!(
        text.contains("serviceAccount_name: unknown field"),
        "{text}"
    );
    let errs = k8s_schema::validate(&json!({"volumes": []}), &s, &core);
    assert!(
        format!("{errs:?}").contains(".containers: required"),
        "{errs:?}"
    );
    // The Cluster CRD the API stand-in enforces: parameters are strings, instances a number.
    let crd = k8s_schema::cluster_schema();
    let bad = json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "pg"},
        "spec": {"instances": "3", "postgresql": {"parameters": {"work_mem": 8192}}}});
    let text = format!("{:?}", k8s_schema::validate(&bad, &crd, &crd));
    assert!(text.contains(".spec.instances: expected integer"), "{text}");
    assert!(
        text.contains(".spec.postgresql.parameters.work_mem: expected string"),
        "{text}"
    );
}
