//! A proxy in front of moto that makes a parameter-group change visible in a real local
//! PostgreSQL, the way RDS does on a real instance: moto stores the group and verifies every
//! signature; the proxy mirrors what AWS would then do to the server.
//! - `Modify{DB,DBCluster}ParameterGroup` (forwarded to moto): `immediate` values are applied
//!   with ALTER SYSTEM + reload after ~1.5 s, during which `ParameterApplyStatus` reads
//!   `applying`; `pending-reboot` values wait for a reboot (status `pending-reboot`).
//! - `RebootDBInstance` (forwarded): `DBInstanceStatus` reads `rebooting` while the pending
//!   values are written and the local cluster is restarted with `pg_ctl restart`.
//! - What moto lacks, answered here with the AWS API reference shapes and the signature checked
//!   by recomputing it with the test user's secret: `Reset{DB,DBCluster}ParameterGroup`, and
//!   the `ApplyType` / `Source` / `Marker` pagination of `Describe{DB,DBCluster}Parameters`
//!   (moto's user values, plus engine defaults built from the local `pg_settings`).
//! - `fail_modify = Some(n)`: the n-th Modify call answers an `InvalidParameterValue` error.
//!
//! Also a Performance Insights stand-in (JSON 1.1 `GetResourceMetrics`), signature checked the
//! same way.

use super::cloud::stand_in::{Req, Resp, StandIn};
use dbtune_agent::cloud::aws::sigv4::{sign_request, SigningParams};
use dbtune_agent::cloud::aws::Credentials;
use dbtune_agent::cloud::http::Request;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct MirrorConfig {
    pub moto_port: u16,
    /// Superuser URL of the local cluster.
    pub pg_url: String,
    /// Shell command restarting the local cluster.
    pub restart_cmd: String,
    pub key_id: String,
    pub secret: String,
    pub region: String,
    /// Parameters that exist only in cluster parameter groups (Aurora).
    pub cluster_only: Vec<String>,
    /// moto has no Performance Insights: the mirror reports it enabled when set.
    pub pi_enabled: bool,
}

#[derive(Default)]
pub struct MirrorState {
    /// (Action, form) of every request, in order.
    pub calls: Vec<(String, BTreeMap<String, String>)>,
    pub fail_modify: Option<usize>,
    modify_count: usize,
    applying_until: Option<Instant>,
    pending: Vec<(String, Option<String>)>,
    rebooting: bool,
    /// (group, parameter) reset since their last Modify.
    reset: HashSet<(String, String)>,
    /// Time spent mirroring (the "AWS side" of an apply).
    pub reboots: usize,
}

pub struct RdsMirror {
    pub server: StandIn,
    pub state: Arc<Mutex<MirrorState>>,
}

/// Verifies a SigV4 header signature by signing the same request again with the known secret.
pub fn signature_ok(req: &Req, key_id: &str, secret: &str, region: &str, service: &str) -> bool {
    let Some(auth) = req.header("authorization") else {
        return false;
    };
    let Some(date) = req.header("x-amz-date") else {
        return false;
    };
    if !auth.contains(&format!("Credential={key_id}/")) {
        return false;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &date[0..4],
        &date[4..6],
        &date[6..8],
        &date[9..11],
        &date[11..13],
        &date[13..15]
    );
    let Some(t) = dbtune_agent::cloud::time::parse_rfc3339(&iso) else {
        return false;
    };
    let host = req.header("host").unwrap_or("");
    let creds = Credentials::new(key_id, secret, req.header("x-amz-security-token"));
    let mut r = Request::post(format!("http://{host}{}", req.target)).body(req.body.clone());
    for h in ["content-type", "x-amz-target"] {
        if let Some(v) = req.header(h) {
            r = r.header(h, v);
        }
    }
    sign_request(&mut r, &SigningParams::new(&creds, region, service, t));
    r.header_value("authorization") == Some(auth)
}

fn rds_xml(action: &str, inner: &str) -> Resp {
    Resp::new(
        200,
        "text/xml",
        format!(
            "<{action}Response xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\"><{action}Result>{inner}</{action}Result><ResponseMetadata><RequestId>mirror-1</RequestId></ResponseMetadata></{action}Response>"
        ),
    )
}

fn rds_error(status: u16, code: &str, msg: &str) -> Resp {
    Resp::new(
        status,
        "text/xml",
        format!("<ErrorResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{msg}</Message></Error><RequestId>mirror-err</RequestId></ErrorResponse>"),
    )
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Sends `req` to moto byte for byte (Host and signature unchanged) and returns its answer.
pub fn forward(port: u16, req: &Req) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to moto");
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (n, v) in &req.headers {
        if n.eq_ignore_ascii_case("connection") || n.eq_ignore_ascii_case("content-length") {
            continue;
        }
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&req.body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("moto answered HTTP");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut ctype = "text/xml".to_string();
    let mut chunked = false;
    for l in head.lines().skip(1) {
        if let Some((n, v)) = l.split_once(':') {
            if n.eq_ignore_ascii_case("content-type") {
                ctype = v.trim().to_string();
            }
            if n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
                chunked = true;
            }
        }
    }
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    Resp::new(status, &ctype, body)
}

/// Runs SQL on the local server (the mirror is the "AWS side": it may).
fn sql(url: &str, stmts: &[String]) {
    let mut c =
        postgres::Client::connect(url, postgres::NoTls).expect("mirror connecting to PostgreSQL");
    for s in stmts {
        c.batch_execute(s)
            .unwrap_or_else(|e| panic!("mirror: {s}: {e}"));
    }
}

fn set_stmt(name: &str, value: &Option<String>) -> String {
    match value {
        Some(v) => format!("ALTER SYSTEM SET {name} = '{}'", v.replace('\'', "''")),
        None => format!("ALTER SYSTEM RESET {name}"),
    }
}

/// `Parameters.Parameter.N.{ParameterName,ParameterValue,ApplyMethod}` of a form.
fn form_params(form: &BTreeMap<String, String>) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    for n in 1.. {
        let k = |f: &str| form.get(&format!("Parameters.Parameter.{n}.{f}")).cloned();
        let Some(name) = k("ParameterName") else {
            break;
        };
        out.push((
            name,
            k("ParameterValue"),
            k("ApplyMethod").unwrap_or_default(),
        ));
    }
    out
}

impl RdsMirror {
    pub fn start(cfg: MirrorConfig) -> RdsMirror {
        let state = Arc::new(Mutex::new(MirrorState::default()));
        // name → context of the local server, for ApplyType and engine defaults.
        let mut c = postgres::Client::connect(&cfg.pg_url, postgres::NoTls).unwrap();
        let defs: Vec<(String, String, String)> = c
            .query("SELECT name, context, boot_val FROM pg_settings WHERE context <> 'internal' ORDER BY name", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, Option<String>>(2).unwrap_or_default()))
            .collect();
        let st = state.clone();
        let server = StandIn::start(move |req| handle(&cfg, &st, &defs, req));
        RdsMirror { server, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    pub fn actions(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub fn calls_of(&self, action: &str) -> Vec<BTreeMap<String, String>> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(a, _)| a == action)
            .map(|(_, f)| f.clone())
            .collect()
    }

    pub fn fail_modify(&self, n: Option<usize>) {
        self.state.lock().unwrap().fail_modify = n;
    }
}

fn handle(
    cfg: &MirrorConfig,
    st: &Arc<Mutex<MirrorState>>,
    defs: &[(String, String, String)],
    req: &Req,
) -> Resp {
    let form = req.form();
    let action = form.get("Action").cloned().unwrap_or_default();
    st.lock()
        .unwrap()
        .calls
        .push((action.clone(), form.clone()));
    match action.as_str() {
        "ModifyDBParameterGroup" | "ModifyDBClusterParameterGroup" => {
            {
                let mut s = st.lock().unwrap();
                s.modify_count += 1;
                if s.fail_modify == Some(s.modify_count) {
                    return rds_error(
                        400,
                        "InvalidParameterValue",
                        "mirror: this batch is refused (test fault injection)",
                    );
                }
            }
            let resp = forward(cfg.moto_port, req);
            if resp.status != 200 {
                return resp;
            }
            let group = form
                .get("DBParameterGroupName")
                .or_else(|| form.get("DBClusterParameterGroupName"))
                .cloned()
                .unwrap_or_default();
            let mut now: Vec<String> = Vec::new();
            let mut s = st.lock().unwrap();
            for (name, value, method) in form_params(&form) {
                s.reset.remove(&(group.clone(), name.clone()));
                if method == "pending-reboot" {
                    s.pending.push((name, value));
                } else {
                    now.push(set_stmt(&name, &value));
                }
            }
            if !now.is_empty() {
                // Written now, in request order; in effect a moment later (the reload).
                sql(&cfg.pg_url, &now);
                s.applying_until = Some(Instant::now() + Duration::from_millis(1500));
                let url = cfg.pg_url.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(1200));
                    sql(&url, &["SELECT pg_reload_conf()".to_string()]);
                });
            }
            resp
        }
        "ResetDBParameterGroup" | "ResetDBClusterParameterGroup" => {
            if !signature_ok(req, &cfg.key_id, &cfg.secret, &cfg.region, "rds") {
                return rds_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.");
            }
            let (gk, inner) = if action == "ResetDBParameterGroup" {
                ("DBParameterGroupName", "DBParameterGroupName")
            } else {
                ("DBClusterParameterGroupName", "DBClusterParameterGroupName")
            };
            let Some(group) = form.get(gk).cloned() else {
                return rds_error(400, "MissingParameter", &format!("{gk} is required"));
            };
            let params = form_params(&form);
            if params.is_empty() || params.len() > 20 {
                return rds_error(
                    400,
                    "InvalidParameterCombination",
                    "between 1 and 20 parameters are required unless ResetAllParameters is true",
                );
            }
            let mut now: Vec<String> = Vec::new();
            let mut s = st.lock().unwrap();
            for (name, _, method) in params {
                s.reset.insert((group.clone(), name.clone()));
                if method == "pending-reboot" {
                    s.pending.push((name, None));
                } else {
                    now.push(set_stmt(&name, &None));
                }
            }
            if !now.is_empty() {
                // Written now, in request order; in effect a moment later (the reload).
                sql(&cfg.pg_url, &now);
                s.applying_until = Some(Instant::now() + Duration::from_millis(1500));
                let url = cfg.pg_url.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(1200));
                    sql(&url, &["SELECT pg_reload_conf()".to_string()]);
                });
            }
            rds_xml(&action, &format!("<{inner}>{}</{inner}>", esc(&group)))
        }
        "DescribeDBParameters" | "DescribeDBClusterParameters" => {
            let cluster = action == "DescribeDBClusterParameters";
            // Moto checks the signature and holds the user values.
            let resp = forward(cfg.moto_port, req);
            if resp.status != 200 {
                return resp;
            }
            let group = form
                .get(if cluster {
                    "DBClusterParameterGroupName"
                } else {
                    "DBParameterGroupName"
                })
                .cloned()
                .unwrap_or_default();
            let root =
                dbtune_agent::cloud::xml::parse(&String::from_utf8_lossy(&resp.body)).unwrap();
            let reset = st.lock().unwrap().reset.clone();
            let mut user: BTreeMap<String, String> = BTreeMap::new();
            if let Some(list) = root.find("Parameters") {
                for p in list.children_named("Parameter") {
                    let n = p.text_at(&["ParameterName"]).unwrap_or("").to_string();
                    if !reset.contains(&(group.clone(), n.clone())) {
                        user.insert(n, p.text_at(&["ParameterValue"]).unwrap_or("").to_string());
                    }
                }
            }
            let apply_type = |n: &str| {
                defs.iter()
                    .find(|d| d.0 == n)
                    .map(|d| {
                        if d.1 == "postmaster" {
                            "static"
                        } else {
                            "dynamic"
                        }
                    })
                    .unwrap_or("dynamic")
            };
            let in_group = |n: &str| cfg.cluster_only.iter().any(|c| c == n) == cluster;
            let source = form.get("Source").map(String::as_str);
            let mut rows: Vec<(String, String, &str)> = Vec::new();
            for (n, _, boot) in defs.iter().filter(|d| in_group(&d.0)) {
                match user.get(n) {
                    Some(v) => rows.push((n.clone(), v.clone(), "user")),
                    None => rows.push((n.clone(), boot.clone(), "engine-default")),
                }
            }
            rows.retain(|r| source.is_none_or(|s| s == r.2));
            let max: usize = form
                .get("MaxRecords")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100);
            if !(20..=100).contains(&max) {
                return rds_error(
                    400,
                    "InvalidParameterValue",
                    "MaxRecords must be between 20 and 100",
                );
            }
            let start: usize = form.get("Marker").and_then(|m| m.parse().ok()).unwrap_or(0);
            let page: String = rows
                .iter()
                .skip(start)
                .take(max)
                .map(|(n, v, src)| {
                    format!(
                        "<Parameter><ParameterName>{}</ParameterName><ParameterValue>{}</ParameterValue><Source>{src}</Source><ApplyType>{}</ApplyType><IsModifiable>true</IsModifiable></Parameter>",
                        esc(n), esc(v), apply_type(n)
                    )
                })
                .collect();
            let marker = if start + max < rows.len() {
                format!("<Marker>{}</Marker>", start + max)
            } else {
                String::new()
            };
            rds_xml(&action, &format!("<Parameters>{page}</Parameters>{marker}"))
        }
        "DescribeDBInstances" => {
            let resp = forward(cfg.moto_port, req);
            if resp.status != 200 {
                return resp;
            }
            let mut body = String::from_utf8_lossy(&resp.body).to_string();
            let s = st.lock().unwrap();
            let status = if s.applying_until.is_some_and(|t| Instant::now() < t) {
                Some("applying")
            } else if !s.pending.is_empty() {
                Some("pending-reboot")
            } else {
                None
            };
            if let Some(a) = status {
                body = body.replace(
                    "<ParameterApplyStatus>in-sync</ParameterApplyStatus>",
                    &format!("<ParameterApplyStatus>{a}</ParameterApplyStatus>"),
                );
            }
            if cfg.pi_enabled {
                body = if body
                    .contains("<PerformanceInsightsEnabled>false</PerformanceInsightsEnabled>")
                {
                    body.replace(
                        "<PerformanceInsightsEnabled>false</PerformanceInsightsEnabled>",
                        "<PerformanceInsightsEnabled>true</PerformanceInsightsEnabled>",
                    )
                } else {
                    body.replace("</DBInstance>", "<PerformanceInsightsEnabled>true</PerformanceInsightsEnabled></DBInstance>")
                };
            }
            if s.rebooting {
                body = body.replace(
                    "<DBInstanceStatus>available</DBInstanceStatus>",
                    "<DBInstanceStatus>rebooting</DBInstanceStatus>",
                );
            }
            Resp::new(200, "text/xml", body)
        }
        "RebootDBInstance" => {
            let resp = forward(cfg.moto_port, req);
            if resp.status != 200 {
                return resp;
            }
            let mut s = st.lock().unwrap();
            s.rebooting = true;
            s.reboots += 1;
            let pending: Vec<String> = s.pending.iter().map(|(n, v)| set_stmt(n, v)).collect();
            let (url, cmd, st2) = (cfg.pg_url.clone(), cfg.restart_cmd.clone(), st.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(500));
                if !pending.is_empty() {
                    sql(&url, &pending);
                }
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&cmd)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "mirror restart: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(1000));
                let mut s = st2.lock().unwrap();
                s.pending.clear();
                s.rebooting = false;
            });
            resp
        }
        _ => forward(cfg.moto_port, req),
    }
}

/// Performance Insights `GetResourceMetrics` stand-in: one resource, `os.memory.active.avg`
/// datapoints (epoch seconds, KB), the newest without a value as PI often answers.
pub fn start_pi(
    key_id: String,
    secret: String,
    region: String,
    resource_id: String,
    active_kb: f64,
) -> (StandIn, Arc<Mutex<usize>>) {
    let calls = Arc::new(Mutex::new(0usize));
    let c2 = calls.clone();
    let s = StandIn::start(move |req| {
        *c2.lock().unwrap() += 1;
        let err = |status: u16, ty: &str, msg: &str| {
            Resp::new(
                status,
                "application/x-amz-json-1.1",
                serde_json::json!({"__type": ty, "message": msg}).to_string(),
            )
        };
        if !signature_ok(req, &key_id, &secret, &region, "pi") {
            return err(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
        if req.header("x-amz-target") != Some("PerformanceInsightsv20180227.GetResourceMetrics")
            || req.header("content-type") != Some("application/x-amz-json-1.1")
        {
            return err(400, "UnknownOperationException", "unknown operation");
        }
        let b = req.json();
        let (Some(start), Some(end)) = (b["StartTime"].as_f64(), b["EndTime"].as_f64()) else {
            return err(
                400,
                "InvalidArgumentException",
                "StartTime and EndTime (epoch seconds) are required",
            );
        };
        if b["ServiceType"] != "RDS" || b["Identifier"] != resource_id.as_str() {
            return err(
                400,
                "InvalidArgumentException",
                "unknown ServiceType/Identifier",
            );
        }
        if b["MetricQueries"][0]["Metric"] != "os.memory.active.avg" {
            return err(400, "InvalidArgumentException", "unsupported metric");
        }
        let t = (end as i64 / 60) * 60;
        Resp::new(
            200,
            "application/x-amz-json-1.1",
            serde_json::json!({
                "AlignedStartTime": start as i64,
                "AlignedEndTime": end as i64,
                "Identifier": resource_id,
                "MetricList": [{
                    "Key": {"Metric": "os.memory.active.avg"},
                    "DataPoints": [
                        {"Timestamp": t - 120, "Value": active_kb / 2.0},
                        {"Timestamp": t - 60, "Value": active_kb},
                        {"Timestamp": t}
                    ]
                }]
            })
            .to_string(),
        )
    });
    (s, calls)
}
