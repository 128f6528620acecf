//! A stateful stand-in for Google's OAuth token endpoint, the Cloud SQL Admin API v1 and
//! Cloud Monitoring v3, over loopback HTTP. Every request is checked against Google's discovery
//! documents (method, path template, query parameters, body schema) and a bad one is answered
//! 400 and recorded in `violations`. Accepted flag lists are applied to a REAL PostgreSQL
//! cluster (ALTER SYSTEM, then reload, or `pg_ctl restart` when a restart-only flag changed)
//! by the operation the patch started, so the agent's pg_settings verification is real.
//! Errors in Google's documented shapes: 401/403/404, 409 operationInProgress, 429 with
//! Retry-After, an operation that ends DONE with an error.

pub mod discovery;

use super::cloud::stand_in::{Req, Resp, StandIn};
use super::cloud::test_keys::RSA_PUBLIC_PKCS1_B64;
use dbtune_agent::cloud::encoding::b64_decode;
use discovery::Discovery;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const PROJECT: &str = "dbtune-proj";
pub const INSTANCE: &str = "pg-main";
pub const CLIENT_EMAIL: &str = "agent@dbtune-proj.iam.gserviceaccount.com";

#[derive(Clone, Debug)]
pub struct Op {
    pub name: String,
    pub op_type: String,
    pub status: String,
    pub error: Option<(String, String)>,
}

/// What the test can change and read.
#[derive(Default)]
pub struct State {
    pub flags: Vec<(String, String)>,
    pub ops: Vec<Op>,
    /// Metric (`memory/components:Usage`, `cpu/utilization`, …) → value; int64 metrics
    /// are answered as `int64Value` strings.
    pub metrics: BTreeMap<String, f64>,
    /// Metrics answered with HTTP 500.
    pub broken_metrics: Vec<String>,
    /// The next N patches are refused with 409 operationInProgress.
    pub busy_patches: u32,
    /// The next N requests to the Admin API are throttled (429, Retry-After: 1).
    pub throttle: u32,
    /// An operation touching this flag ends DONE with an error and changes nothing.
    pub fail_flag: Option<String>,
    /// The next patch applies only its first changed flag to PostgreSQL but reports success.
    pub partial_once: bool,
    /// PATCH is denied (403).
    pub deny_patch: bool,
    pub tokens_issued: Vec<String>,
    pub violations: Vec<String>,
    pub patches: Vec<Value>,
    pub restarts: u32,
    pub calls: BTreeMap<String, u32>,
}

pub struct Google {
    pub server: StandIn,
    pub state: Arc<Mutex<State>>,
    pub key_file: std::path::PathBuf,
}

const INT64_METRICS: &[&str] = &[
    "memory/quota",
    "disk/read_ops_count",
    "disk/write_ops_count",
    "disk/quota",
    "network/received_bytes_count",
    "network/sent_bytes_count",
];

fn google_error(status: u16, code_name: &str, reason: &str, message: &str) -> Resp {
    Resp::json(
        status,
        json!({"error": {"code": status, "message": message, "status": code_name,
            "errors": [{"domain": "global", "reason": reason, "message": message}]}}),
    )
}

fn rfc3339(secs: i64) -> String {
    dbtune_agent::cloud::time::rfc3339(secs)
}

/// Verifies a jwt-bearer assertion signed with the test key; returns the claims.
fn verify_assertion(form: &BTreeMap<String, String>, aud: &str) -> Result<Value, String> {
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err("unsupported_grant_type".into());
    }
    let jwt = form.get("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("malformed JWT".into());
    }
    let pubkey = b64_decode(RSA_PUBLIC_PKCS1_B64).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, pubkey)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64_decode(parts[2]).ok_or("bad signature encoding")?,
        )
        .map_err(|_| "invalid_grant: Invalid JWT Signature.".to_string())?;
    let claims: Value = serde_json::from_slice(&b64_decode(parts[1]).ok_or("bad claims")?).unwrap();
    if claims["iss"] != CLIENT_EMAIL || claims["aud"] != aud {
        return Err(format!("invalid_grant: bad claims {claims}"));
    }
    Ok(claims)
}

impl Google {
    /// Starts the stand-in over the cluster at `pg_url`; `restart` is its `pg_ctl restart`.
    pub fn start(pg_url: &str, restart: &str, dir: &std::path::Path) -> Google {
        let state = Arc::new(Mutex::new(State {
            flags: vec![("cloudsql.iam_authentication".into(), "on".into())],
            ..State::default()
        }));
        let sqladmin = Arc::new(Discovery::load("google/sqladmin.v1.json"));
        let monitoring = Arc::new(Discovery::load("google/monitoring.v3.json"));
        let base: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let (st, b2) = (state.clone(), base.clone());
        let (pg_url, restart) = (pg_url.to_string(), restart.to_string());
        let server = StandIn::start(move |r| {
            let base = b2.get().cloned().unwrap_or_default();
            handle(r, &st, &sqladmin, &monitoring, &base, &pg_url, &restart)
        });
        base.set(server.url()).unwrap();
        let key_file = dir.join("sa-key.json");
        std::fs::write(
            &key_file,
            json!({
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "key-1",
                "private_key": super::cloud::test_keys::RSA_PRIVATE_PEM,
                "client_email": CLIENT_EMAIL,
                "token_uri": format!("{}/token", server.url()),
            })
            .to_string(),
        )
        .unwrap();
        Google {
            server,
            state,
            key_file,
        }
    }

    pub fn set_metric(&self, name: &str, v: f64) {
        self.state.lock().unwrap().metrics.insert(name.into(), v);
    }

    /// A typical instance: 2 vCPUs, 7.5 GiB, memory 40 % used.
    pub fn typical_metrics(&self) {
        for (k, v) in [
            ("cpu/reserved_cores", 2.0),
            ("cpu/utilization", 0.25),
            ("memory/quota", 8053063680.0),
            ("memory/components:Usage", 40.0),
            ("memory/components:Cache", 35.0),
            ("memory/components:Free", 25.0),
            ("disk/read_ops_count", 600.0),
            ("disk/write_ops_count", 1200.0),
            ("disk/quota", 107374182400.0),
            ("disk/utilization", 0.125),
            ("network/received_bytes_count", 123456.0),
            ("network/sent_bytes_count", 654321.0),
        ] {
            self.set_metric(k, v);
        }
    }

    pub fn flag(&self, name: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn calls(&self, method_id: &str) -> u32 {
        *self
            .state
            .lock()
            .unwrap()
            .calls
            .get(method_id)
            .unwrap_or(&0)
    }

    /// Environment for the agent: ADC from the key file, both API bases here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                self.key_file.display().to_string(),
            ),
            ("DBT_GCP_SQLADMIN_URL".into(), self.server.url()),
            ("DBT_GCP_MONITORING_URL".into(), self.server.url()),
            ("DBT_GCP_PROJECT_ID".into(), PROJECT.into()),
            ("DBT_GCP_DATABASE_NAME".into(), INSTANCE.into()),
        ]
    }
}

fn instance_json(s: &State) -> Value {
    json!({
        "kind": "sql#instance",
        "name": INSTANCE,
        "project": PROJECT,
        "databaseVersion": "POSTGRES_15",
        "state": "RUNNABLE",
        "instanceType": "CLOUD_SQL_INSTANCE",
        "connectionName": format!("{PROJECT}:europe-west1:{INSTANCE}"),
        "region": "europe-west1",
        "settings": {
            "kind": "sql#settings",
            "tier": "db-custom-2-7680",
            "settingsVersion": (s.patches.len() as i64 + 1).to_string(),
            "databaseFlags": s.flags.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
        },
    })
}

fn op_json(o: &Op) -> Value {
    let mut v = json!({
        "kind": "sql#operation",
        "name": o.name,
        "operationType": o.op_type,
        "status": o.status,
        "targetId": INSTANCE,
        "targetProject": PROJECT,
        "insertTime": rfc3339(dbtune_agent::cloud::time::now_unix()),
        "selfLink": format!("https://sqladmin.googleapis.com/v1/projects/{PROJECT}/operations/{}", o.name),
    });
    if let Some((code, msg)) = &o.error {
        v["error"] = json!({"kind": "sql#operationErrors",
            "errors": [{"kind": "sql#operationError", "code": code, "message": msg}]});
    }
    v
}

fn handle(
    r: &Req,
    st: &Arc<Mutex<State>>,
    sqladmin: &Discovery,
    monitoring: &Discovery,
    base: &str,
    pg_url: &str,
    restart: &str,
) -> Resp {
    if r.path() == "/token" && r.method == "POST" {
        return match verify_assertion(&r.form(), &format!("{base}/token")) {
            Ok(_) => {
                let mut s = st.lock().unwrap();
                let t = format!(
                    "ya29.standin-{}-{}",
                    s.tokens_issued.len() + 1,
                    std::process::id()
                );
                s.tokens_issued.push(t.clone());
                Resp::json(
                    200,
                    json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}),
                )
            }
            Err(e) => Resp::json(
                400,
                json!({"error": "invalid_grant", "error_description": e}),
            ),
        };
    }
    // Bearer token from our token endpoint, as Google requires.
    let authed = r
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| st.lock().unwrap().tokens_issued.iter().any(|x| x == t));
    if !authed {
        return google_error(
            401,
            "UNAUTHENTICATED",
            "authError",
            "Request had invalid authentication credentials.",
        );
    }
    let body = if r.body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&r.body) {
            Ok(v) => Some(v),
            Err(e) => return google_error(400, "INVALID_ARGUMENT", "parseError", &e.to_string()),
        }
    };
    let api = if r.path().starts_with("/v3/") {
        monitoring
    } else {
        sqladmin
    };
    let id = match api.check(&r.method, r.path(), &r.query(), body.as_ref()) {
        Ok(id) => id,
        Err(e) => {
            st.lock().unwrap().violations.push(e.clone());
            return google_error(400, "INVALID_ARGUMENT", "invalid", &e);
        }
    };
    *st.lock().unwrap().calls.entry(id.clone()).or_default() += 1;
    let resp = route(r, &id, body, st, pg_url, restart);
    // Our own answers must fit the documented response schema too.
    let schema = match id.as_str() {
        "sql.instances.get" => "DatabaseInstance",
        "sql.instances.patch" | "sql.operations.get" => "Operation",
        "sql.operations.list" => "OperationsListResponse",
        _ => "ListTimeSeriesResponse",
    };
    if resp.status == 200 {
        let v: Value = serde_json::from_slice(&resp.body).unwrap();
        if let Err(e) = api.check_response(schema, &v) {
            st.lock()
                .unwrap()
                .violations
                .push(format!("stand-in answer: {e}"));
        }
    }
    resp
}

fn route(
    r: &Req,
    id: &str,
    body: Option<Value>,
    st: &Arc<Mutex<State>>,
    pg_url: &str,
    restart: &str,
) -> Resp {
    let seg: Vec<&str> = r.path().trim_start_matches('/').split('/').collect();
    if id.starts_with("sql.") {
        let mut s = st.lock().unwrap();
        if s.throttle > 0 {
            s.throttle -= 1;
            return google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "rateLimitExceeded",
                "Quota exceeded.",
            )
            .header("Retry-After", "1");
        }
        if seg.get(2) != Some(&PROJECT) {
            return google_error(
                403,
                "PERMISSION_DENIED",
                "notAuthorized",
                "The client is not authorized to make this request.",
            );
        }
    }
    match id {
        "sql.instances.get" | "sql.instances.patch" if seg[4] != INSTANCE => google_error(
            404,
            "NOT_FOUND",
            "instanceDoesNotExist",
            "The Cloud SQL instance does not exist.",
        ),
        "sql.instances.get" => Resp::json(200, instance_json(&st.lock().unwrap())),
        "sql.instances.patch" => patch(body.unwrap(), st, pg_url, restart),
        "sql.operations.get" => {
            let s = st.lock().unwrap();
            match s.ops.iter().find(|o| o.name == seg[4]) {
                Some(o) => Resp::json(200, op_json(o)),
                None => google_error(
                    404,
                    "NOT_FOUND",
                    "operationDoesNotExist",
                    "The operation does not exist.",
                ),
            }
        }
        "sql.operations.list" => {
            let s = st.lock().unwrap();
            let items: Vec<Value> = s.ops.iter().rev().map(op_json).collect();
            Resp::json(200, json!({"kind": "sql#operationsList", "items": items}))
        }
        "monitoring.projects.timeSeries.list" => time_series(r, st),
        other => google_error(
            400,
            "INVALID_ARGUMENT",
            "invalid",
            &format!("{other} is not served"),
        ),
    }
}

fn patch(body: Value, st: &Arc<Mutex<State>>, pg_url: &str, restart: &str) -> Resp {
    let mut s = st.lock().unwrap();
    if s.deny_patch {
        return google_error(
            403,
            "PERMISSION_DENIED",
            "notAuthorized",
            "The client is not authorized to make this request (cloudsql.instances.update).",
        );
    }
    let running = s
        .ops
        .iter()
        .any(|o| o.op_type == "UPDATE" && o.status != "DONE");
    if s.busy_patches > 0 || running {
        s.busy_patches = s.busy_patches.saturating_sub(1);
        return google_error(
            409,
            "ABORTED",
            "operationInProgress",
            "Operation failed because another operation was already in progress.",
        );
    }
    let flags: Vec<(String, String)> = body["settings"]["databaseFlags"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or("").to_string(),
                f["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    s.patches.push(body.clone());
    let n = s.ops.len();
    let name = format!("op-update-{n}-{}", std::process::id());
    s.ops.push(Op {
        name: name.clone(),
        op_type: "UPDATE".into(),
        status: "PENDING".into(),
        error: None,
    });
    // A concurrent backup that started just after: `operations.list`'s newest item is not
    // the patch's operation (the Go agent would wait for this one instead).
    s.ops.push(Op {
        name: format!("op-backup-{n}-{}", std::process::id()),
        op_type: "BACKUP_VOLUME".into(),
        status: "RUNNING".into(),
        error: None,
    });
    let before = s.flags.clone();
    let fail = s.fail_flag.clone();
    let partial = std::mem::take(&mut s.partial_once);
    let answer = op_json(s.ops.iter().find(|o| o.name == name).unwrap());
    drop(s);
    let (st, pg_url, restart, op) = (st.clone(), pg_url.to_string(), restart.to_string(), name);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        set_status(&st, &op, "RUNNING", None);
        let changed = diff(&before, &flags);
        if let Some(f) = fail.filter(|f| changed.iter().any(|(n, _)| n == f)) {
            std::thread::sleep(Duration::from_millis(500));
            set_status(
                &st,
                &op,
                "DONE",
                Some((
                    "INVALID_FLAG_VALUE".into(),
                    format!("Flag {f} could not be set on this instance."),
                )),
            );
            return;
        }
        let apply: Vec<(String, Option<String>)> = if partial {
            changed.into_iter().take(1).collect()
        } else {
            changed
        };
        match apply_to_pg(&pg_url, &restart, &apply) {
            Ok(restarted) => {
                let mut s = st.lock().unwrap();
                s.flags = flags;
                if restarted {
                    s.restarts += 1;
                }
                drop(s);
                set_status(&st, &op, "DONE", None);
            }
            Err(e) => set_status(&st, &op, "DONE", Some(("INTERNAL_ERROR".into(), e))),
        }
    });
    Resp::json(200, answer)
}

fn set_status(st: &Arc<Mutex<State>>, op: &str, status: &str, error: Option<(String, String)>) {
    let mut s = st.lock().unwrap();
    if let Some(o) = s.ops.iter_mut().find(|o| o.name == op) {
        o.status = status.into();
        o.error = error;
    }
}

/// Flags whose value changes (`None`: removed, back to the default).
fn diff(before: &[(String, String)], after: &[(String, String)]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (n, v) in after {
        if before.iter().find(|(b, _)| b == n).map(|(_, x)| x) != Some(v) {
            out.push((n.clone(), Some(v.clone())));
        }
    }
    for (n, _) in before {
        if !after.iter().any(|(a, _)| a == n) {
            out.push((n.clone(), None));
        }
    }
    out
}

/// ALTER SYSTEM for each changed flag (Cloud SQL-only flags are not PostgreSQL parameters),
/// then a reload, or a restart when one of them is restart-only. Returns whether it restarted.
fn apply_to_pg(
    pg_url: &str,
    restart: &str,
    changed: &[(String, Option<String>)],
) -> Result<bool, String> {
    let mut c = postgres::Client::connect(pg_url, postgres::NoTls).map_err(|e| e.to_string())?;
    let mut needs_restart = false;
    for (n, v) in changed {
        if n.starts_with("cloudsql.") {
            continue;
        }
        let ctx: Option<String> = c
            .query_opt("SELECT context FROM pg_settings WHERE name = $1", &[n])
            .map_err(|e| e.to_string())?
            .map(|r| r.get(0));
        let Some(ctx) = ctx else {
            return Err(format!("{n} is not a supported flag"));
        };
        needs_restart |= ctx == "postmaster";
        let ident = format!("\"{}\"", n.replace('"', "\"\""));
        let sql = match v {
            Some(v) => format!("ALTER SYSTEM SET {ident} = '{}'", v.replace('\'', "''")),
            None => format!("ALTER SYSTEM RESET {ident}"),
        };
        c.batch_execute(&sql).map_err(|e| format!("{n}: {e}"))?;
    }
    if needs_restart {
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
    Ok(needs_restart)
}

/// Pulls `key = "value"` out of a Monitoring filter.
fn filter_value(filter: &str, key: &str) -> Option<String> {
    let i = filter.find(&format!("{key} = \""))? + key.len() + 4;
    let rest = &filter[i..];
    Some(rest[..rest.find('"')?].to_string())
}

fn time_series(r: &Req, st: &Arc<Mutex<State>>) -> Resp {
    let q = r.query();
    let filter = q.get("filter").cloned().unwrap_or_default();
    let (Some(start), Some(end)) = (q.get("interval.startTime"), q.get("interval.endTime")) else {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "invalid",
            "interval.endTime is required",
        );
    };
    if dbtune_agent::cloud::time::parse_rfc3339(start).is_none()
        || dbtune_agent::cloud::time::parse_rfc3339(end).is_none()
    {
        return google_error(400, "INVALID_ARGUMENT", "invalid", "bad interval");
    }
    let Some(mtype) = filter_value(&filter, "metric.type") else {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "invalid",
            "filter must name metric.type",
        );
    };
    let metric = mtype
        .strip_prefix("cloudsql.googleapis.com/database/")
        .unwrap_or(&mtype)
        .to_string();
    let key = match filter_value(&filter, "metric.labels.component") {
        Some(c) => format!("{metric}:{c}"),
        None => metric.clone(),
    };
    let s = st.lock().unwrap();
    if s.broken_metrics.contains(&key) {
        return google_error(
            500,
            "INTERNAL",
            "backendError",
            "Internal error encountered.",
        );
    }
    if filter_value(&filter, "resource.label.database_id").as_deref()
        != Some(&format!("{PROJECT}:{INSTANCE}"))
    {
        return Resp::json(200, json!({}));
    }
    let Some(v) = s.metrics.get(&key).copied() else {
        return Resp::json(200, json!({})); // no data: the field is omitted
    };
    let int = INT64_METRICS.contains(&metric.as_str());
    let now = dbtune_agent::cloud::time::now_unix() / 60 * 60;
    let value = |x: f64| {
        if int {
            json!({"int64Value": (x as i64).to_string()})
        } else {
            json!({"doubleValue": x})
        }
    };
    let mut labels = json!({});
    if let Some(c) = filter_value(&filter, "metric.labels.component") {
        labels["component"] = json!(c);
    }
    let points = vec![
        json!({"interval": {"startTime": rfc3339(now - 60), "endTime": rfc3339(now)}, "value": value(v)}),
        json!({"interval": {"startTime": rfc3339(now - 120), "endTime": rfc3339(now - 60)}, "value": value(v / 2.0)}),
    ];
    Resp::json(
        200,
        json!({"timeSeries": [{
            "metric": {"type": mtype, "labels": labels},
            "resource": {"type": "cloudsql_database", "labels": {"database_id": format!("{PROJECT}:{INSTANCE}"), "project_id": PROJECT, "region": "europe-west1"}},
            "metricKind": if metric.ends_with("_count") { "DELTA" } else { "GAUGE" },
            "valueType": if int { "INT64" } else { "DOUBLE" },
            "points": points,
        }], "unit": ""}),
    )
}
