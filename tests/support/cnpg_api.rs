//! A stateful Kubernetes API server stand-in for the CloudNativePG adapter: HTTPS on loopback
//! (the test CA), bearer-token auth, one CNPG `Cluster` validated against the vendor's CRD
//! schema on every patch, its instance pods (role labels), a node, PVCs, metrics.k8s.io pod
//! metrics, the kubelet's cAdvisor text, access and identity reviews, and a simulated CNPG
//! controller. The controller applies `spec.postgresql.parameters` to a REAL PostgreSQL
//! (ALTER SYSTEM + reload, and a restart through pg_ctl when it rolls the instances), so the
//! agent's verification in `pg_settings` is real. Every core-API path is checked against the
//! vendor's OpenAPI document; the canned pod, node and PVC objects are validated against its
//! schemas at start.

use super::cloud::stand_in::{Req, Resp, StandIn};
use super::cloud::test_keys::{CA_PEM, SERVER_CERT_PEM, SERVER_KEY_PEM};
use super::k8s_schema;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const NS: &str = "db";
pub const CLUSTER: &str = "pg";
pub const TOKEN: &str = "test-sa-token-7f3c";
pub const HEALTHY: &str = "Cluster in healthy state";
pub const FAILED: &str = "Cluster is in an unrecoverable state, needs manual intervention";

/// How the simulated operator behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Roll the instances itself when a restart-only parameter changed (CNPG's default).
    pub auto_restart: bool,
    /// Time per controller step (0: the whole reconcile happens before the PATCH answers).
    pub step: Duration,
    /// The next parameter patch puts the Cluster in a failed phase (not applied).
    pub fail_next_patch: bool,
    /// Permissions the access review denies ("patch clusters.postgresql.cnpg.io").
    pub denied: Vec<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            auto_restart: true,
            step: Duration::from_millis(700),
            fail_next_patch: false,
            denied: Vec::new(),
        }
    }
}

#[derive(Default)]
pub struct Counts {
    pub param_patches: u32,
    pub restart_patches: u32,
    pub pg_restarts: u32,
    pub reloads: u32,
}

struct State {
    cluster: Value,
    primary: String,
    /// Parameters the controller last wrote to PostgreSQL.
    applied: Map<String, Value>,
    behaviour: Behaviour,
    counts: Counts,
    /// Requests that did not match the vendor's descriptions.
    violations: Vec<String>,
    started: Instant,
    jobs: Vec<Job>,
}

enum Job {
    Reconcile(i64),
    Restart,
    Failover(String),
}

pub struct CnpgApi {
    pub server: StandIn,
    state: Arc<(Mutex<State>, Condvar)>,
    pub pg_url: String,
}

const INSTANCES: [&str; 3] = ["pg-1", "pg-2", "pg-3"];

fn status(code: u16, reason: &str, message: &str) -> Resp {
    Resp::json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn merge(target: &mut Value, patch: &Value) {
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

fn pod(name: &str, primary: bool) -> Value {
    let role = if primary { "primary" } else { "replica" };
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
            "labels": {"cnpg.io/cluster": CLUSTER, "cnpg.io/instanceName": name,
                       "cnpg.io/instanceRole": role, "role": role}},
        "spec": {"nodeName": "node-a",
            "containers": [
                {"name": "postgres", "image": "ghcr.io/cloudnative-pg/postgresql:16",
                 "resources": {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}},
                 "volumeMounts": [{"name": "pgdata", "mountPath": "/var/lib/postgresql/data"}]}],
            "volumes": [{"name": "pgdata", "persistentVolumeClaim": {"claimName": name}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi"}, "capacity": {"cpu": "8", "memory": "32Gi"},
            "nodeInfo": {"architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://1.7.2",
                "kernelVersion": "6.1.0-18-amd64", "kubeProxyVersion": "v1.30.1", "kubeletVersion": "v1.30.1",
                "machineID": "m", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": "s"}}})
}

fn pvc(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NS},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                 "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}})
}

fn initial_cluster() -> Value {
    json!({"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": CLUSTER, "namespace": NS, "generation": 1, "uid": "cluster-uid", "annotations": {}},
        "spec": {"instances": 3, "storage": {"size": "10Gi"},
                 "postgresql": {"parameters": {"max_connections": "100"}}},
        "status": {"phase": HEALTHY, "instances": 3, "readyInstances": 3,
            "currentPrimary": "pg-1", "targetPrimary": "pg-1",
            "instanceNames": INSTANCES,
            "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                            "message": "Cluster is Ready", "lastTransitionTime": "2026-01-01T00:00:00Z",
                            "observedGeneration": 1}]}})
}

impl State {
    fn set_phase(&mut self, phase: &str, ready: i64) {
        let st = &mut self.cluster["status"];
        st["phase"] = json!(phase);
        st["readyInstances"] = json!(ready);
        st["conditions"][0]["status"] = json!(if phase == HEALTHY { "True" } else { "False" });
    }
    fn observe(&mut self, generation: i64) {
        self.cluster["status"]["conditions"][0]["observedGeneration"] = json!(generation);
    }
}

impl CnpgApi {
    /// `pg_url`: the real PostgreSQL the instances "run"; `restart`: a shell command that
    /// restarts it (pg_ctl restart).
    pub fn start(pg_url: &str, restart: &str, behaviour: Behaviour) -> CnpgApi {
        let crd = Arc::new(k8s_schema::cluster_schema());
        let core = Arc::new(k8s_schema::core_openapi());
        // The canned objects are what the real API server would serve.
        for (v, s) in [
            (pod("pg-1", true), "io.k8s.api.core.v1.Pod"),
            (node(), "io.k8s.api.core.v1.Node"),
            (pvc("pg-1"), "io.k8s.api.core.v1.PersistentVolumeClaim"),
        ] {
            let schema = json!({"$ref": format!("#/components/schemas/{s}")});
            let errs = k8s_schema::validate(&v, &schema, &core);
            assert!(
                errs.is_empty(),
                "canned {s} does not match the vendor schema: {errs:?}"
            );
        }
        let cluster = initial_cluster();
        let errs = k8s_schema::validate(&cluster, &crd, &crd);
        assert!(errs.is_empty(), "initial Cluster invalid: {errs:?}");
        let state = Arc::new((
            Mutex::new(State {
                cluster,
                primary: "pg-1".into(),
                applied: Map::new(),
                behaviour,
                counts: Counts::default(),
                violations: Vec::new(),
                started: Instant::now(),
                jobs: Vec::new(),
            }),
            Condvar::new(),
        ));
        {
            let mut st = state.0.lock().unwrap();
            st.applied = st.cluster["spec"]["postgresql"]["parameters"]
                .as_object()
                .cloned()
                .unwrap();
        }
        let ctl = Controller {
            state: state.clone(),
            pg_url: pg_url.to_string(),
            restart: restart.to_string(),
        };
        let ctl = Arc::new(ctl);
        let c2 = ctl.clone();
        std::thread::spawn(move || c2.run());
        let st = state.clone();
        let server = StandIn::start_tls(SERVER_CERT_PEM, SERVER_KEY_PEM, None, move |r| {
            handle(r, &st, &crd, &core, &ctl)
        });
        CnpgApi {
            server,
            state,
            pg_url: pg_url.to_string(),
        }
    }

    /// A kubeconfig for the agent (token user, the test CA).
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("kubeconfig");
        let ca = dbtune_agent::cloud::encoding::b64_encode(CA_PEM.as_bytes());
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: agent\n    namespace: {NS}\nusers:\n- name: agent\n  user:\n    token: {TOKEN}\n",
                self.server.https_url()
            ),
        )
        .unwrap();
        p
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&mut Behaviour, &Value, &Counts) -> T) -> T {
        let mut st = self.state.0.lock().unwrap();
        let State {
            behaviour,
            cluster,
            counts,
            ..
        } = &mut *st;
        f(behaviour, cluster, counts)
    }

    pub fn cluster(&self) -> Value {
        self.state.0.lock().unwrap().cluster.clone()
    }

    pub fn counts(&self) -> (u32, u32, u32, u32) {
        let st = self.state.0.lock().unwrap();
        let c = &st.counts;
        (c.param_patches, c.restart_patches, c.pg_restarts, c.reloads)
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.0.lock().unwrap().violations.clone()
    }

    /// Starts a failover to `to`: "Failing over" with a pending target, then the new primary.
    pub fn failover(&self, to: &str) {
        let (m, cv) = &*self.state;
        let mut st = m.lock().unwrap();
        st.cluster["status"]["targetPrimary"] = json!(to);
        st.set_phase("Failing over", 2);
        st.jobs.push(Job::Failover(to.to_string()));
        cv.notify_all();
    }

    /// Requests (method and path) received so far.
    pub fn requests(&self) -> Vec<Req> {
        self.server.requests()
    }

    pub fn elapsed(&self) -> Duration {
        self.state.0.lock().unwrap().started.elapsed()
    }
}

struct Controller {
    state: Arc<(Mutex<State>, Condvar)>,
    pg_url: String,
    restart: String,
}

impl Controller {
    fn step(&self) -> Duration {
        self.state.0.lock().unwrap().behaviour.step
    }

    fn pg(&self) -> postgres::Client {
        let mut last = None;
        for _ in 0..100 {
            match postgres::Client::connect(&self.pg_url, postgres::NoTls) {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("stand-in controller cannot reach PostgreSQL: {last:?}");
    }

    fn restart_pg(&self) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&self.restart)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stand-in restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.state.0.lock().unwrap().counts.pg_restarts += 1;
    }

    fn run(&self) {
        loop {
            let job = {
                let (m, cv) = &*self.state;
                let mut st = m.lock().unwrap();
                while st.jobs.is_empty() {
                    st = cv.wait(st).unwrap();
                }
                st.jobs.remove(0)
            };
            self.run_job(job);
        }
    }

    fn pause(&self) {
        std::thread::sleep(self.step());
    }

    fn run_job(&self, job: Job) {
        match job {
            Job::Reconcile(generation) => self.reconcile(generation),
            Job::Restart => {
                self.state
                    .0
                    .lock()
                    .unwrap()
                    .set_phase("Upgrading cluster", 2);
                self.pause();
                self.restart_pg();
                let mut st = self.state.0.lock().unwrap();
                st.set_phase(HEALTHY, 3);
            }
            Job::Failover(to) => {
                self.pause();
                let mut st = self.state.0.lock().unwrap();
                st.cluster["status"]["currentPrimary"] = json!(to);
                st.primary = to.clone();
                st.set_phase("Waiting for the instances to become active", 2);
                drop(st);
                self.pause();
                self.state.0.lock().unwrap().set_phase(HEALTHY, 3);
            }
        }
    }

    /// What CNPG does for a spec change: the instances get the new parameters (reload),
    /// and a rolling restart when one needs it (if `auto_restart`).
    fn reconcile(&self, generation: i64) {
        let (fail, wanted, applied, auto) = {
            let mut st = self.state.0.lock().unwrap();
            let fail = std::mem::take(&mut st.behaviour.fail_next_patch);
            let wanted = st.cluster["spec"]["postgresql"]["parameters"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            (fail, wanted, st.applied.clone(), st.behaviour.auto_restart)
        };
        self.pause();
        if fail {
            self.state.0.lock().unwrap().set_phase(FAILED, 2);
            return;
        }
        let mut c = self.pg();
        for (k, v) in &wanted {
            if applied.get(k) != Some(v) {
                let v = v.as_str().unwrap().replace('\'', "''");
                c.batch_execute(&format!("ALTER SYSTEM SET \"{k}\" = '{v}'"))
                    .unwrap_or_else(|e| panic!("stand-in ALTER SYSTEM {k}: {e}"));
            }
        }
        for k in applied.keys().filter(|k| !wanted.contains_key(*k)) {
            c.batch_execute(&format!("ALTER SYSTEM RESET \"{k}\""))
                .unwrap();
        }
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let pending: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_settings WHERE pending_restart",
                &[],
            )
            .unwrap()
            .get(0);
        drop(c);
        {
            let mut st = self.state.0.lock().unwrap();
            st.counts.reloads += 1;
            st.applied = wanted;
        }
        if pending > 0 && auto {
            self.state
                .0
                .lock()
                .unwrap()
                .set_phase("Upgrading cluster", 2);
            self.pause();
            self.restart_pg();
        }
        let mut st = self.state.0.lock().unwrap();
        st.observe(generation);
        st.set_phase(HEALTHY, 3);
    }
}

fn cadvisor(st: &State) -> String {
    let t = st.started.elapsed().as_millis() as i64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let reads = 1000 + t / 100;
    let writes = 500 + t / 200;
    let mut s = String::from("# HELP container_fs_reads_total Cumulative count of reads completed\n# TYPE container_fs_reads_total counter\n");
    for pod in INSTANCES {
        let lbl = format!("container=\"postgres\",device=\"/dev/sda\",id=\"/kubepods/{pod}\",image=\"ghcr.io/cloudnative-pg/postgresql:16 (bookworm)\",name=\"{pod} postgres\",namespace=\"{NS}\",pod=\"{pod}\"");
        s += &format!("container_fs_reads_total{{{lbl}}} {reads} {now_ms}\n");
        s += &format!("container_fs_writes_total{{{lbl}}} {writes} {now_ms}\n");
        s += &format!("container_fs_usage_bytes{{{lbl}}} 2147483648 {now_ms}\n");
        s += &format!("container_fs_limit_bytes{{{lbl}}} 10737418240 {now_ms}\n");
        s += &format!("container_spec_cpu_quota{{{lbl}}} 200000 {now_ms}\n");
        s += &format!("container_spec_cpu_period{{{lbl}}} 100000 {now_ms}\n");
        s += &format!("container_network_receive_bytes_total{{container=\"\",interface=\"eth0\",namespace=\"{NS}\",pod=\"{pod}\"}} {} {now_ms}\n", 10_000 + t);
        s += &format!("container_network_transmit_bytes_total{{container=\"\",interface=\"eth0\",namespace=\"{NS}\",pod=\"{pod}\"}} {} {now_ms}\n", 20_000 + 2 * t);
    }
    s
}

fn handle(
    r: &Req,
    state: &Arc<(Mutex<State>, Condvar)>,
    crd: &Value,
    core: &Value,
    _ctl: &Controller,
) -> Resp {
    let (m, cv) = &**state;
    if r.header("Authorization") != Some(&format!("Bearer {TOKEN}")) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let path = r.path().to_string();
    let mut st = m.lock().unwrap();
    if path.starts_with("/api/v1/") && !k8s_schema::path_known(core, &path) {
        st.violations
            .push(format!("{} {path}: not in the core OpenAPI", r.method));
    }
    let cluster_path = format!("/apis/postgresql.cnpg.io/v1/namespaces/{NS}/clusters/{CLUSTER}");
    let pods_path = format!("/api/v1/namespaces/{NS}/pods");
    match (r.method.as_str(), path.as_str()) {
        ("GET", "/version") => Resp::json(
            200,
            json!({"major": "1", "minor": "30", "gitVersion": "v1.30.1"}),
        ),
        ("GET", p) if p == cluster_path => Resp::json(200, st.cluster.clone()),
        ("PATCH", p) if p == cluster_path => {
            if r.header("Content-Type") != Some("application/merge-patch+json") {
                st.violations
                    .push(format!("PATCH with {:?}", r.header("Content-Type")));
                return status(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format",
                );
            }
            let patch = r.json();
            let mut next = st.cluster.clone();
            merge(&mut next, &patch);
            let errs = k8s_schema::validate(&next, crd, crd);
            if !errs.is_empty() {
                st.violations
                    .push(format!("invalid Cluster patch: {errs:?}"));
                return status(
                    422,
                    "Invalid",
                    &format!(
                        "Cluster.postgresql.cnpg.io \"{CLUSTER}\" is invalid: {}",
                        errs.join(", ")
                    ),
                );
            }
            let spec_changed = next["spec"] != st.cluster["spec"];
            let restart_changed = next["metadata"]["annotations"]
                ["kubectl.kubernetes.io/restartedAt"]
                != st.cluster["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
            if spec_changed {
                // Only spec changes bump the generation (metadata does not).
                let g = next["metadata"]["generation"].as_i64().unwrap() + 1;
                next["metadata"]["generation"] = json!(g);
                st.counts.param_patches += 1;
            }
            st.cluster = next;
            if spec_changed {
                let g = st.cluster["metadata"]["generation"].as_i64().unwrap();
                st.set_phase("Applying configuration", 3);
                st.jobs.push(Job::Reconcile(g));
            }
            if restart_changed {
                st.counts.restart_patches += 1;
                st.jobs.push(Job::Restart);
            }
            cv.notify_all();
            if st.behaviour.step.is_zero() && (spec_changed || restart_changed) {
                // The whole rollout happens before the answer: the agent's first poll only
                // ever sees the finished state.
                drop(st);
                loop {
                    std::thread::sleep(Duration::from_millis(20));
                    let s = m.lock().unwrap();
                    if s.jobs.is_empty() && s.cluster["status"]["phase"] == HEALTHY {
                        return Resp::json(200, s.cluster.clone());
                    }
                }
            }
            Resp::json(200, st.cluster.clone())
        }
        ("GET", p) if p == pods_path => {
            let sel = r.query().get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = INSTANCES
                .iter()
                .map(|n| pod(n, *n == st.primary))
                .filter(|p| {
                    sel.split(',').filter(|s| !s.is_empty()).all(|term| {
                        let (k, v) = term.split_once('=').unwrap_or((term, ""));
                        p["metadata"]["labels"][k] == v
                    })
                })
                .collect();
            Resp::json(
                200,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        ("GET", p) if p.starts_with(&format!("{pods_path}/")) => {
            let name = &p[pods_path.len() + 1..];
            if INSTANCES.contains(&name) {
                Resp::json(200, pod(name, name == st.primary))
            } else {
                status(404, "NotFound", &format!("pods \"{name}\" not found"))
            }
        }
        ("GET", p)
            if p.starts_with(&format!(
                "/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods/"
            )) =>
        {
            let name = p.rsplit('/').next().unwrap();
            Resp::json(
                200,
                json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": name, "namespace": NS}, "timestamp": "2026-01-01T00:00:00Z", "window": "15s",
                "containers": [{"name": "postgres", "usage": {"cpu": "250m", "memory": "1Gi"}}]}),
            )
        }
        ("GET", "/api/v1/nodes/node-a") => Resp::json(200, node()),
        ("GET", "/api/v1/nodes/node-a/proxy/metrics/cadvisor") => {
            Resp::new(200, "text/plain; version=0.0.4", cadvisor(&st))
        }
        ("GET", p)
            if p.starts_with(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/")) =>
        {
            Resp::json(200, pvc(p.rsplit('/').next().unwrap()))
        }
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") => {
            let body = r.json();
            let a = &body["spec"]["resourceAttributes"];
            let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
            let mut res = s("resource");
            if !s("subresource").is_empty() {
                res = format!("{res}/{}", s("subresource"));
            }
            if !s("group").is_empty() {
                res = format!("{res}.{}", s("group"));
            }
            let what = format!("{} {res}", s("verb"));
            let namespaced = s("resource") != "nodes";
            if namespaced && s("namespace") != NS {
                st.violations
                    .push(format!("access review for {what} without namespace {NS}"));
            }
            let allowed = !st.behaviour.denied.contains(&what);
            let mut out = body.clone();
            out["status"] = if allowed {
                json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"dbtune-agent-cnpg\""})
            } else {
                json!({"allowed": false})
            };
            Resp::json(201, out)
        }
        ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews") => Resp::json(
            201,
            json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {},
            "status": {"userInfo": {"username": format!("system:serviceaccount:{NS}:dbtune-agent"),
                "groups": ["system:serviceaccounts", "system:authenticated"]}}}),
        ),
        (m, p) => {
            st.violations.push(format!("{m} {p}: not served"));
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }
}
