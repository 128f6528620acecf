//! A stateful stand-in for the Aiven API (`ServiceGet`, `ServiceUpdate`, `ServiceMetricsFetch`)
//! over loopback HTTP. Every request is checked against Aiven's OpenAPI description
//! (aiven/openapi.rs: method, path, query, auth header format, body schema) and against the
//! token it issued; a bad one is answered in Aiven's error shape (`{"message", "errors":
//! [{"message", "status"}]}`) and recorded in `violations`. The description leaves
//! `user_config` free-form, so the keys the agent may send are checked against Aiven's
//! published PostgreSQL user_config schema (the ranges below). Its control plane merges an
//! accepted `user_config` (`null` removes a key) and applies it to a REAL PostgreSQL cluster:
//! ALTER SYSTEM, then reload, or — when `shared_buffers_percentage` changed — a restart of
//! that cluster while the service shows `REBUILDING`.

pub mod openapi;

use super::cloud::stand_in::{Req, Resp, StandIn};
use openapi::OpenApi;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PROJECT: &str = "dbtune-proj";
pub const SERVICE: &str = "pg-main";
/// How long a rebuild shows `REBUILDING` at least (Aiven takes minutes).
const REBUILD_FOR: Duration = Duration::from_secs(4);

/// Aiven's PostgreSQL user_config schema for the keys the agent may change: (key under
/// user_config or user_config.pg, integer?, minimum, maximum).
const UC_SERVICE: &[(&str, bool, f64, f64)] = &[
    ("shared_buffers_percentage", false, 20.0, 60.0),
    ("work_mem", true, 1.0, 1024.0),
];
const UC_PG: &[(&str, bool, f64, f64)] = &[
    ("bgwriter_delay", true, 10.0, 10000.0),
    ("bgwriter_lru_maxpages", true, 0.0, 1073741823.0),
    ("max_parallel_workers", true, 0.0, 96.0),
    ("max_parallel_workers_per_gather", true, 0.0, 96.0),
];

#[derive(Default)]
pub struct State {
    pub token: String,
    pub user_config: Value,
    pub state: String,
    /// Aiven metric name → the primary node's newest value.
    pub metrics: BTreeMap<String, f64>,
    /// The next N requests are throttled (429).
    pub throttle: u32,
    /// The next update is refused with this status and message (changes nothing).
    pub reject_update: Option<(u16, String)>,
    /// The next update is stored but the control plane applies only its first changed
    /// PostgreSQL parameter.
    pub partial_once: bool,
    pub violations: Vec<String>,
    pub updates: Vec<Value>,
    pub restarts: u32,
    /// Every state a ServiceGet answered with, in order.
    pub states_served: Vec<String>,
    pub calls: BTreeMap<String, u32>,
    /// Five times the cluster's shared_buffers at start, so Aiven's default 20 % is what
    /// PostgreSQL runs with.
    pub node_memory_mb: f64,
}

pub struct Aiven {
    pub server: StandIn,
    pub state: Arc<Mutex<State>>,
}

fn aiven_error(status: u16, message: &str) -> Resp {
    Resp::json(
        status,
        json!({"message": message, "errors": [{"message": message, "status": status,
            "more_info": "https://api.aiven.io/doc/"}]}),
    )
}

impl Aiven {
    /// Starts the stand-in over the cluster at `pg_url`; `restart` is its `pg_ctl restart`.
    pub fn start(pg_url: &str, restart: &str) -> Aiven {
        let token = format!(
            "aivenstandin{}{}",
            std::process::id(),
            dbtune_agent::cloud::crypto::random_u64()
        );
        let node_memory_mb = postgres::Client::connect(pg_url, postgres::NoTls)
            .and_then(|mut c| {
                c.query_one(
                    "SELECT (setting::bigint * 8192 / 1048576 * 5)::float8 FROM pg_settings WHERE name = 'shared_buffers'",
                    &[],
                )
            })
            .map(|r| r.get::<_, f64>(0))
            .unwrap_or(640.0);
        let state = Arc::new(Mutex::new(State {
            token,
            node_memory_mb,
            user_config: json!({"pg_version": "15", "ip_filter": ["0.0.0.0/0"], "pg": {}}),
            state: "RUNNING".into(),
            ..State::default()
        }));
        let api = Arc::new(OpenApi::load());
        let st = state.clone();
        let (pg_url, restart) = (pg_url.to_string(), restart.to_string());
        let server = StandIn::start(move |r| handle(r, &st, &api, &pg_url, &restart));
        Aiven { server, state }
    }

    pub fn token(&self) -> String {
        self.state.lock().unwrap().token.clone()
    }

    /// A typical service: CPU 25 %, 60 % memory available (40 % used), disk 12.5 %.
    pub fn typical_metrics(&self) {
        let mut s = self.state.lock().unwrap();
        for (k, v) in [
            ("cpu_usage", 25.0),
            ("disk_usage", 12.5),
            ("diskio_read", 10.0),
            ("diskio_writes", 20.0),
            ("load_average", 0.75),
            ("mem_available", 60.0),
            ("mem_usage", 40.0),
            ("net_receive", 1234.5),
            ("net_send", 6543.25),
        ] {
            s.metrics.insert(k.into(), v);
        }
    }

    pub fn user_config(&self) -> Value {
        self.state.lock().unwrap().user_config.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn calls(&self, op: &str) -> u32 {
        *self.state.lock().unwrap().calls.get(op).unwrap_or(&0)
    }

    /// Environment for the agent: token, project, service and this stand-in as the API.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DBT_AIVEN_API_TOKEN".into(), self.token()),
            ("DBT_AIVEN_PROJECT_NAME".into(), PROJECT.into()),
            ("DBT_AIVEN_SERVICE_NAME".into(), SERVICE.into()),
            ("AIVEN_WEB_URL".into(), self.server.url()),
        ]
    }
}

fn service_json(s: &State) -> Value {
    json!({
        "cloud_name": "google-europe-west1",
        "create_time": "2026-11-01T10:00:00Z",
        "update_time": "2026-12-01T10:00:00Z",
        "group_list": ["default"],
        "plan": "startup-4",
        "project_vpc_id": "2f0c3b52-6a4e-4d53-9a9e-0c6a1e3b7d10",
        "service_integrations": [],
        "service_name": SERVICE,
        "service_type": "pg",
        "service_uri": format!("postgres://avnadmin@{SERVICE}-{PROJECT}.aivencloud.com:12691/defaultdb?sslmode=require"),
        "state": s.state,
        "termination_protection": false,
        "user_config": s.user_config,
        "node_count": 1,
        "node_cpu_count": 2,
        "node_memory_mb": s.node_memory_mb,
        "disk_space_mb": 81920,
    })
}

fn handle(r: &Req, st: &Arc<Mutex<State>>, api: &OpenApi, pg_url: &str, restart: &str) -> Resp {
    let body = if r.body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&r.body) {
            Ok(v) => Some(v),
            Err(e) => return aiven_error(400, &format!("Invalid JSON: {e}")),
        }
    };
    let op = match api.check_request(
        &r.method,
        r.path(),
        &r.query(),
        r.header("authorization"),
        body.as_ref(),
    ) {
        Ok(op) => op,
        Err(e) => {
            st.lock().unwrap().violations.push(e.clone());
            return aiven_error(400, &e);
        }
    };
    {
        let mut s = st.lock().unwrap();
        *s.calls.entry(op.id.clone()).or_default() += 1;
        if r.header("authorization") != Some(&format!("aivenv1 {}", s.token)) {
            return aiven_error(403, "Invalid token");
        }
        if r.header("content-type")
            .is_some_and(|c| c != "application/json")
        {
            s.violations.push(format!(
                "{}: content-type {:?}",
                op.id,
                r.header("content-type")
            ));
        }
        if s.throttle > 0 {
            s.throttle -= 1;
            return aiven_error(429, "Too many requests, please slow down")
                .header("Retry-After", "1");
        }
    }
    let seg: Vec<&str> = r.path().trim_start_matches('/').split('/').collect();
    if seg.get(2) != Some(&PROJECT) {
        return aiven_error(403, "Not a member of project");
    }
    if seg.get(4) != Some(&SERVICE) {
        return aiven_error(
            404,
            &format!("Service '{}' does not exist", seg.get(4).unwrap_or(&"")),
        );
    }
    let resp = match op.id.as_str() {
        "ServiceGet" => {
            let mut s = st.lock().unwrap();
            let state = s.state.clone();
            s.states_served.push(state);
            Resp::json(200, json!({"service": service_json(&s)}))
        }
        "ServiceUpdate" => update(body.unwrap_or(Value::Null), st, pg_url, restart),
        "ServiceMetricsFetch" => metrics(st),
        other => aiven_error(400, &format!("{other} is not served by this stand-in")),
    };
    // Our own answers must fit the documented response schema too.
    if resp.status == 200 {
        let v: Value = serde_json::from_slice(&resp.body).unwrap();
        let errs = api.check_response(&op, &v);
        if !errs.is_empty() {
            st.lock().unwrap().violations.push(format!(
                "stand-in answer of {}: {}",
                op.id,
                errs.join("; ")
            ));
        }
    }
    resp
}

/// Problems of a user_config fragment against Aiven's PostgreSQL user_config schema.
fn check_user_config(uc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let check = |table: &[(&str, bool, f64, f64)],
                 obj: &Map<String, Value>,
                 at: &str,
                 out: &mut Vec<String>| {
        for (k, v) in obj {
            if at.is_empty() && k == "pg" {
                continue;
            }
            let Some((_, int, min, max)) = table.iter().find(|(n, ..)| n == k) else {
                out.push(format!(
                    "user_config{at}.{k}: not a key this stand-in allows the agent to change"
                ));
                continue;
            };
            if v.is_null() {
                continue;
            }
            let ok = if *int { v.is_i64() } else { v.is_number() };
            match v.as_f64() {
                Some(x) if ok && x >= *min && x <= *max => {}
                _ => out.push(format!(
                    "Invalid 'user_config{at}.{k}': {v} is not {} between {min} and {max}",
                    if *int { "an integer" } else { "a number" }
                )),
            }
        }
    };
    match uc.as_object() {
        Some(o) => {
            check(UC_SERVICE, o, "", &mut out);
            match o.get("pg") {
                None => {}
                Some(Value::Object(p)) => check(UC_PG, p, ".pg", &mut out),
                Some(v) => out.push(format!("user_config.pg: expected an object, got {v}")),
            }
        }
        None => out.push("user_config: expected an object".into()),
    }
    out
}

/// `target` with `fragment` merged in (a `null` removes the key).
fn merge(target: &mut Value, fragment: &Value) {
    let (Some(t), Some(f)) = (target.as_object_mut(), fragment.as_object()) else {
        return;
    };
    for (k, v) in f {
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) if t.get(k).is_some_and(Value::is_object) => {
                merge(t.get_mut(k).unwrap(), v)
            }
            v => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The PostgreSQL parameters a user_config means (None: PostgreSQL's default).
fn pg_parameters(uc: &Value, node_memory_mb: f64) -> BTreeMap<String, Option<String>> {
    let mut m = BTreeMap::new();
    let pct = uc["shared_buffers_percentage"].as_f64().unwrap_or(20.0);
    m.insert(
        "shared_buffers".into(),
        Some(format!(
            "{}MB",
            (pct * node_memory_mb / 100.0).floor() as i64
        )),
    );
    m.insert(
        "work_mem".into(),
        uc["work_mem"].as_i64().map(|w| format!("{w}MB")),
    );
    for (k, ..) in UC_PG {
        m.insert((*k).into(), uc["pg"][*k].as_i64().map(|v| v.to_string()));
    }
    m
}

fn update(body: Value, st: &Arc<Mutex<State>>, pg_url: &str, restart: &str) -> Resp {
    let mut s = st.lock().unwrap();
    if let Some((status, msg)) = s.reject_update.take() {
        return aiven_error(status, &msg);
    }
    if s.state != "RUNNING" {
        return aiven_error(409, "Service is being rebuilt, try again later");
    }
    if body.get("powered") != Some(&json!(true)) {
        s.violations
            .push(format!("ServiceUpdate without powered=true: {body}"));
    }
    let fragment = body.get("user_config").cloned().unwrap_or(json!({}));
    let errs = check_user_config(&fragment);
    if !errs.is_empty() {
        s.violations.extend(errs.iter().cloned());
        return aiven_error(400, &errs.join("; "));
    }
    s.updates.push(body.clone());
    let before = pg_parameters(&s.user_config, s.node_memory_mb);
    merge(&mut s.user_config, &fragment);
    let after = pg_parameters(&s.user_config, s.node_memory_mb);
    let mut changed: Vec<(String, Option<String>)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if std::mem::take(&mut s.partial_once) {
        changed.truncate(1);
    }
    let rebuild = changed.iter().any(|(k, _)| k == "shared_buffers");
    let answer = json!({"service": service_json(&s)});
    drop(s);
    // The control plane pushes the change to PostgreSQL a moment after answering.
    let (st, pg_url, restart) = (st.clone(), pg_url.to_string(), restart.to_string());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        if rebuild {
            st.lock().unwrap().state = "REBUILDING".into();
        }
        let started = std::time::Instant::now();
        match apply_to_pg(&pg_url, &restart, &changed, rebuild) {
            Ok(()) => {
                if rebuild {
                    std::thread::sleep(REBUILD_FOR.saturating_sub(started.elapsed()));
                    let mut s = st.lock().unwrap();
                    s.restarts += 1;
                    s.state = "RUNNING".into();
                }
            }
            Err(e) => {
                let mut s = st.lock().unwrap();
                s.violations.push(format!("control plane: {e}"));
                s.state = "RUNNING".into();
            }
        }
    });
    Resp::json(200, answer)
}

/// ALTER SYSTEM for each changed parameter, then a reload, or a restart when asked.
fn apply_to_pg(
    pg_url: &str,
    restart: &str,
    changed: &[(String, Option<String>)],
    restart_pg: bool,
) -> Result<(), String> {
    let mut c = postgres::Client::connect(pg_url, postgres::NoTls).map_err(|e| e.to_string())?;
    for (n, v) in changed {
        let sql = match v {
            Some(v) => format!("ALTER SYSTEM SET \"{n}\" = '{}'", v.replace('\'', "''")),
            None => format!("ALTER SYSTEM RESET \"{n}\""),
        };
        c.batch_execute(&sql).map_err(|e| format!("{n}: {e}"))?;
    }
    if restart_pg {
        drop(c);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(restart)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    } else {
        c.batch_execute("SELECT pg_reload_conf()")
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn metrics(st: &Arc<Mutex<State>>) -> Resp {
    let s = st.lock().unwrap();
    let now = dbtune_agent::cloud::time::now_unix() / 30 * 30;
    let mut m = Map::new();
    let mut series = |name: &str, v: f64| {
        m.insert(
            name.to_string(),
            json!({
                "data": {
                    "cols": [
                        {"label": "time", "type": "date"},
                        {"label": format!("{SERVICE}-1 (standby)"), "type": "number"},
                        {"label": format!("{SERVICE}-2 (master)"), "type": "number"},
                    ],
                    "rows": [
                        [dbtune_agent::cloud::time::rfc3339(now - 30), 1.0, v / 2.0],
                        [dbtune_agent::cloud::time::rfc3339(now), 2.0, v],
                    ],
                },
                "max_timestamp": now,
                "total_series": 2,
                "hints": {"title": name},
            }),
        );
    };
    for (k, v) in &s.metrics {
        series(k, *v);
    }
    // A series the agent does not know: skipped.
    series("pg_connections_used", 12.0);
    Resp::json(200, json!({"metrics": m}))
}
