//! The Kubernetes client against an API-server stand-in over real TLS (test CA, optional mutual
//! TLS): in-cluster config with token rotation, kubeconfig auth kinds, list / get / merge-patch
//! / polling, Status errors, and the refusal of insecure-skip-tls-verify.

mod support;

use dbtune_agent::cloud::encoding::b64_encode;
use dbtune_agent::cloud::k8s::{Kube, KubeConfig, Quantity};
use dbtune_agent::cloud::{Env, ErrorKind};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cloud::stand_in::{Req, Resp, StandIn};
use support::cloud::test_keys::*;

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dbtune-k8s-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn status(code: u16, reason: &str, message: &str) -> Resp {
    Resp::json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code}),
    )
}

/// A small API server: pods list, a CNPG Cluster that becomes healthy after three reads, merge
/// patches applied to it, cAdvisor text.
fn api_server(valid_token: Arc<Mutex<String>>, tls_client_ca: Option<&str>) -> StandIn {
    let cluster = Arc::new(Mutex::new(
        json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "pg", "namespace": "db", "annotations": {}},
        "spec": {"instances": 3, "postgresql": {"parameters": {"work_mem": "4MB"}}},
        "status": {"phase": "Upgrading cluster", "currentPrimary": "pg-1", "targetPrimary": "pg-1", "readyInstances": 2, "instances": 3}}),
    ));
    let reads = Arc::new(Mutex::new(0));
    let handler = move |r: &Req| {
        let want = format!("Bearer {}", valid_token.lock().unwrap());
        if !valid_token.lock().unwrap().is_empty()
            && r.header("Authorization") != Some(want.as_str())
        {
            return status(401, "Unauthorized", "Unauthorized");
        }
        match (r.method.as_str(), r.path()) {
            ("GET", "/api/v1/namespaces/db/pods") => {
                assert_eq!(r.query()["labelSelector"], "cnpg.io/cluster=pg,role=primary");
                Resp::json(200, json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                    "items": [{"metadata": {"name": "pg-1", "namespace": "db"},
                               "spec": {"containers": [{"name": "postgres", "resources": {"limits": {"cpu": "1500m", "memory": "2Gi"}}}]}}]}))
            }
            ("GET", "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg") => {
                let mut n = reads.lock().unwrap();
                *n += 1;
                let mut c = cluster.lock().unwrap();
                if *n >= 3 {
                    c["status"]["phase"] = json!("Cluster in healthy state");
                    c["status"]["readyInstances"] = json!(3);
                }
                Resp::json(200, c.clone())
            }
            ("PATCH", "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg") => {
                if r.header("Content-Type") != Some("application/merge-patch+json") {
                    return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format");
                }
                let mut c = cluster.lock().unwrap();
                merge(&mut c, &r.json());
                Resp::json(200, c.clone())
            }
            ("GET", "/api/v1/nodes/node-a/proxy/metrics/cadvisor") => Resp::new(
                200,
                "text/plain; version=0.0.4",
                "# TYPE container_spec_cpu_quota gauge\ncontainer_spec_cpu_quota{container=\"postgres\",pod=\"pg-1\"} 150000\n",
            ),
            ("GET", p) if p.starts_with("/api/v1/namespaces/db/pods/") => {
                status(404, "NotFound", &format!("pods \"{}\" not found", p.rsplit('/').next().unwrap()))
            }
            _ => status(404, "NotFound", "the server could not find the requested resource"),
        }
    };
    StandIn::start_tls(SERVER_CERT_PEM, SERVER_KEY_PEM, tls_client_ca, handler)
}

/// RFC 7386 merge, as the API server applies it.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(json!({})), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

#[test]
fn in_cluster_calls_with_token_rotation_polling_and_status_errors() {
    let valid = Arc::new(Mutex::new("sa-token-1".to_string()));
    let api = api_server(valid.clone(), None);
    let sa = tmpdir("sa");
    std::fs::write(sa.join("token"), "sa-token-1\n").unwrap();
    std::fs::write(sa.join("ca.crt"), CA_PEM).unwrap();
    std::fs::write(sa.join("namespace"), "db").unwrap();
    let port = api.port.to_string();
    let env = Env::from_pairs([
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", port.as_str()),
    ]);
    let cfg = KubeConfig::in_cluster_at(&env, &sa)
        .unwrap()
        .expect("in cluster");
    assert_eq!(
        (cfg.server.as_str(), cfg.namespace.as_deref()),
        (api.https_url().as_str(), Some("db"))
    );
    let kube = Kube::new(cfg).unwrap();

    let pods = kube
        .list(
            "/api/v1/namespaces/db/pods",
            Some("cnpg.io/cluster=pg,role=primary"),
        )
        .unwrap();
    assert_eq!(pods[0]["metadata"]["name"], "pg-1");
    let limit = pods[0]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        .as_str()
        .unwrap();
    assert_eq!(Quantity::parse(limit).unwrap().milli_value(), Some(1500));

    let patched = kube
        .merge_patch(
            "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg",
            &json!({"spec": {"postgresql": {"parameters": {"work_mem": "8MB", "max_wal_size": "2GB"}}}}),
        )
        .unwrap();
    assert_eq!(
        patched["spec"]["postgresql"]["parameters"],
        json!({"work_mem": "8MB", "max_wal_size": "2GB"})
    );
    assert_eq!(
        patched["spec"]["instances"], 3,
        "a merge patch leaves other fields alone"
    );

    let phase = kube
        .poll(
            "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg",
            Duration::from_millis(20),
            Duration::from_secs(5),
            |c| {
                (c["status"]["phase"] == "Cluster in healthy state")
                    .then(|| c["status"]["readyInstances"].as_i64())
            },
        )
        .unwrap();
    assert_eq!(phase, Some(3));
    let err = kube
        .poll(
            "/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg",
            Duration::from_millis(20),
            Duration::from_millis(200),
            |c| (c["status"]["phase"] == "never").then_some(()),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);

    let err = kube.get("/api/v1/namespaces/db/pods/ghost").unwrap_err();
    assert_eq!((err.status, err.code()), (Some(404), Some("NotFound")));
    assert!(
        err.to_string().contains("pods \"ghost\" not found"),
        "{err}"
    );

    assert!(kube
        .get_text("/api/v1/nodes/node-a/proxy/metrics/cadvisor")
        .unwrap()
        .contains("container_spec_cpu_quota{"));

    // The kubelet rotates the token: the server stops accepting the old one, the file changes.
    *valid.lock().unwrap() = "sa-token-2".into();
    std::fs::write(sa.join("token"), "sa-token-2\n").unwrap();
    kube.get("/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg")
        .unwrap();
    let last = api.requests().pop().unwrap();
    assert_eq!(last.header("Authorization"), Some("Bearer sa-token-2"));

    // Not in a pod: no variables → None.
    assert!(KubeConfig::in_cluster_at(&Env::default(), &sa)
        .unwrap()
        .is_none());
    let _ = std::fs::remove_dir_all(sa);
}

fn kubeconfig(dir: &std::path::Path, cluster: &str, user: &str) -> std::path::PathBuf {
    let p = dir.join("config");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\ncontexts:\n- name: test\n  context:\n    cluster: c\n    user: u\n    namespace: db\n\
             - name: other\n  context:\n    cluster: c\nclusters:\n- name: c\n  cluster:\n{cluster}users:\n- name: u\n  user:\n{user}"
        ),
    )
    .unwrap();
    p
}

#[test]
fn kubeconfig_client_certificates_ca_checks_and_insecure_refusal() {
    let api = api_server(Arc::new(Mutex::new(String::new())), Some(CA_PEM));
    let dir = tmpdir("kc");
    let server = format!("    server: {}\n", api.https_url());
    let ca = format!(
        "    certificate-authority-data: {}\n",
        b64_encode(CA_PEM.as_bytes())
    );
    std::fs::write(dir.join("client.crt"), CLIENT_CERT_PEM).unwrap();
    let user = format!(
        "    client-certificate: client.crt\n    client-key-data: {}\n",
        b64_encode(CLIENT_KEY_PEM.as_bytes())
    );

    // Mutual TLS with the CA from the file: works.
    let cfg = KubeConfig::from_kubeconfig(
        &kubeconfig(&dir, &format!("{server}{ca}"), &user),
        None,
        false,
    )
    .unwrap();
    assert_eq!(cfg.namespace.as_deref(), Some("db"));
    let pods = Kube::new(cfg)
        .unwrap()
        .list(
            "/api/v1/namespaces/db/pods",
            Some("cnpg.io/cluster=pg,role=primary"),
        )
        .unwrap();
    assert_eq!(pods.len(), 1);

    // Without the client certificate the server ends the handshake.
    let cfg = KubeConfig::from_kubeconfig(
        &kubeconfig(&dir, &format!("{server}{ca}"), "    {}\n"),
        None,
        false,
    )
    .unwrap();
    let err = Kube::new(cfg)
        .unwrap()
        .get("/api/v1/namespaces/db/pods/x")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transport, "{err}");

    // A server certificate from another CA is not trusted.
    let other = format!(
        "    certificate-authority-data: {}\n",
        b64_encode(OTHER_CA_PEM.as_bytes())
    );
    let cfg = KubeConfig::from_kubeconfig(
        &kubeconfig(&dir, &format!("{server}{other}"), &user),
        None,
        false,
    )
    .unwrap();
    let err = Kube::new(cfg)
        .unwrap()
        .get("/api/v1/namespaces/db/pods/x")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transport, "{err}");

    // insecure-skip-tls-verify: refused unless the caller allows it explicitly.
    let insecure = format!("{server}    insecure-skip-tls-verify: true\n");
    let path = kubeconfig(&dir, &insecure, &user);
    let err = KubeConfig::from_kubeconfig(&path, None, false)
        .err()
        .expect("refused");
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.to_string().contains("insecure-skip-tls-verify"),
        "{err}"
    );
    let cfg = KubeConfig::from_kubeconfig(&path, None, true).unwrap();
    assert_eq!(
        Kube::new(cfg)
            .unwrap()
            .list(
                "/api/v1/namespaces/db/pods",
                Some("cnpg.io/cluster=pg,role=primary")
            )
            .unwrap()
            .len(),
        1
    );

    // Unknown context names are reported.
    let err = KubeConfig::from_kubeconfig(&path, Some("nope"), true)
        .err()
        .unwrap();
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn kubeconfig_exec_plugin_and_token_file() {
    let valid = Arc::new(Mutex::new("exec-token".to_string()));
    let api = api_server(valid.clone(), None);
    let dir = tmpdir("exec");
    let cluster = format!(
        "    server: {}\n    certificate-authority-data: {}\n",
        api.https_url(),
        b64_encode(CA_PEM.as_bytes())
    );
    // An exec plugin that prints an ExecCredential (and proves it got KUBERNETES_EXEC_INFO).
    let script = dir.join("plugin.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$KUBERNETES_EXEC_INFO\" in *ExecCredential*) ;; *) echo missing info >&2; exit 3;; esac\n\
         printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"%s\",\"expirationTimestamp\":\"2099-01-01T00:00:00Z\"}}' \"$TOKEN\"\n",
    )
    .unwrap();
    let user = format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: sh\n      args: [\"{}\"]\n      env:\n      - name: TOKEN\n        value: exec-token\n",
        script.display()
    );
    let kube = Kube::new(
        KubeConfig::from_kubeconfig(&kubeconfig(&dir, &cluster, &user), None, false).unwrap(),
    )
    .unwrap();
    assert_eq!(
        kube.get("/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg")
            .unwrap()["metadata"]["name"],
        "pg"
    );

    // A failing plugin is an auth error that carries its stderr.
    let user =
        "    exec:\n      command: sh\n      args: [\"-c\", \"echo token expired >&2; exit 1\"]\n";
    let kube = Kube::new(
        KubeConfig::from_kubeconfig(&kubeconfig(&dir, &cluster, user), None, false).unwrap(),
    )
    .unwrap();
    let err = kube.get("/api/v1/namespaces/db/pods/x").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(err.to_string().contains("token expired"), "{err}");

    // tokenFile, relative to the kubeconfig.
    std::fs::write(dir.join("tok"), "file-token\n").unwrap();
    *valid.lock().unwrap() = "file-token".into();
    let kube = Kube::new(
        KubeConfig::from_kubeconfig(
            &kubeconfig(&dir, &cluster, "    tokenFile: tok\n"),
            None,
            false,
        )
        .unwrap(),
    )
    .unwrap();
    kube.get("/apis/postgresql.cnpg.io/v1/namespaces/db/clusters/pg")
        .unwrap();
    // A wrong static token: the API server's 401 Status comes back as an auth error.
    let kube = Kube::new(
        KubeConfig::from_kubeconfig(
            &kubeconfig(&dir, &cluster, "    token: wrong\n"),
            None,
            false,
        )
        .unwrap(),
    )
    .unwrap();
    let err = kube.get("/api/v1/namespaces/db/pods/x").unwrap_err();
    assert_eq!(
        (err.kind, err.code()),
        (ErrorKind::Auth, Some("Unauthorized"))
    );
    let _ = std::fs::remove_dir_all(dir);
}
