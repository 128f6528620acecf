//! A stateful stand-in for Microsoft Entra (client-credentials token endpoint), Azure Resource
//! Manager for one PostgreSQL Flexible Server (Servers_Get, Configurations_Get/_Put with
//! long-running operations, Servers_Restart) and Azure Monitor Metrics_List, over loopback
//! HTTP. Every ARM request is checked against Azure's own OpenAPI files (tests/support/azure/
//! swagger.rs); a bad one is answered 400 and recorded in `violations`. Accepted values are
//! applied to a REAL PostgreSQL cluster by the operation (ALTER SYSTEM + reload; restart-only
//! parameters report isConfigPendingRestart until Servers_Restart runs `pg_ctl restart`).
//! LROs follow the ARM async contract (202 + Azure-AsyncOperation + Location + Retry-After,
//! status InProgress → Succeeded | Failed with an error); errors in ARM's shape (403, 404,
//! 429 with Retry-After).

pub mod swagger;

use super::cloud::stand_in::{Req, Resp, StandIn};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swagger::Swagger;

pub const SUB: &str = "00000000-1111-2222-3333-444444444444";
pub const RG: &str = "rg-dbtune";
pub const SERVER: &str = "pg-flex-1";
pub const TENANT: &str = "tenant-1";
pub const CLIENT_ID: &str = "client-1";
pub const CLIENT_SECRET: &str = "s3cr3t-client-value-never-logged";
/// The token issued for the ossrdbms-aad scope: the PostgreSQL role's password.
pub const PG_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-pg-token.sig";

#[derive(Clone, Debug)]
pub struct Op {
    pub status: String,
    pub error: Option<(String, String)>,
    /// The configuration it changes (None: a restart).
    pub config: Option<String>,
}

#[derive(Default)]
pub struct State {
    /// Values set through the API.
    pub values: BTreeMap<String, String>,
    pub pending_restart: Vec<String>,
    pub ops: BTreeMap<String, Op>,
    pub arm_tokens: Vec<String>,
    pub token_requests: BTreeMap<String, u32>,
    pub cpu: f64,
    pub memory: f64,
    pub sku: String,
    /// The next PUT of this parameter ends Failed.
    pub fail_config: Option<String>,
    /// The next N ARM requests get 429 with Retry-After: 1.
    pub throttle: u32,
    pub restarts: u32,
    pub calls: BTreeMap<String, u32>,
    pub violations: Vec<String>,
}

pub struct Azure {
    pub server: StandIn,
    pub state: Arc<Mutex<State>>,
}

fn arm_error(status: u16, code: &str, message: &str) -> Resp {
    Resp::json(status, json!({"error": {"code": code, "message": message}}))
}

fn server_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{SERVER}")
}

impl Azure {
    pub fn start(pg_url: &str, restart: &str) -> Azure {
        let state = Arc::new(Mutex::new(State {
            cpu: 30.0,
            memory: 40.0,
            sku: "Standard_D4ds_v5".into(),
            ..State::default()
        }));
        let sw = Arc::new(Mutex::new(Swagger::load(&[
            "azure/specification/postgresql/resource-manager/Microsoft.DBforPostgreSQL/stable/2024-08-01/Configuration.json",
            "azure/specification/postgresql/resource-manager/Microsoft.DBforPostgreSQL/stable/2024-08-01/ServerStartStopRestart.json",
            "azure/specification/postgresql/resource-manager/Microsoft.DBforPostgreSQL/stable/2024-08-01/FlexibleServers.json",
            "azure/specification/monitor/resource-manager/Microsoft.Insights/stable/2024-02-01/metrics_API.json",
        ])));
        let base: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
        let (st, b2) = (state.clone(), base.clone());
        let (pg_url, restart) = (pg_url.to_string(), restart.to_string());
        let server = StandIn::start(move |r| {
            let base = b2.get().cloned().unwrap_or_default();
            handle(r, &st, &sw, &base, &pg_url, &restart)
        });
        base.set(server.url()).unwrap();
        Azure { server, state }
    }

    /// The agent's environment: client-secret credential against this authority, ARM here.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_AUTHORITY_HOST".into(), self.server.url()),
            ("AZURE_TENANT_ID".into(), TENANT.into()),
            ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
            ("AZURE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
            ("DBT_AZURE_FLEX_ARM_URL".into(), self.server.url()),
            ("DBT_AZURE_FLEX_SUBSCRIPTION_ID".into(), SUB.into()),
            ("DBT_AZURE_FLEX_RESOURCE_GROUP_NAME".into(), RG.into()),
            ("DBT_AZURE_FLEX_SERVER_NAME".into(), SERVER.into()),
        ]
    }

    pub fn calls(&self, id: &str) -> u32 {
        *self.state.lock().unwrap().calls.get(id).unwrap_or(&0)
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    pub fn value(&self, name: &str) -> Option<String> {
        self.state.lock().unwrap().values.get(name).cloned()
    }
}

fn pg_row(pg_url: &str, name: &str) -> Option<(String, String, String, String, Option<String>)> {
    let mut c = postgres::Client::connect(pg_url, postgres::NoTls).ok()?;
    c.query_opt(
        "SELECT setting, boot_val, context, vartype, unit FROM pg_settings WHERE name = $1",
        &[&name],
    )
    .ok()?
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
}

fn config_json(s: &State, pg_url: &str, name: &str) -> Option<Value> {
    let (setting, boot, context, vartype, unit) = pg_row(pg_url, name)?;
    let value = s.values.get(name).cloned().unwrap_or(setting);
    let data_type = match vartype.as_str() {
        "bool" => "Boolean",
        "integer" => "Integer",
        "real" => "Numeric",
        _ => "Enumeration",
    };
    Some(json!({
        "id": format!("{}/configurations/{name}", server_id()),
        "name": name,
        "type": "Microsoft.DBforPostgreSQL/flexibleServers/configurations",
        "properties": {
            "value": value,
            "description": format!("{name} (stand-in)"),
            "defaultValue": boot,
            "dataType": data_type,
            "allowedValues": "",
            "source": if s.values.contains_key(name) { "user-override" } else { "system-default" },
            "isDynamicConfig": context != "postmaster",
            "isReadOnly": context == "internal",
            "isConfigPendingRestart": s.pending_restart.iter().any(|n| n == name),
            "unit": unit.unwrap_or_default(),
        }
    }))
}

fn handle(
    r: &Req,
    st: &Arc<Mutex<State>>,
    sw: &Arc<Mutex<Swagger>>,
    base: &str,
    pg_url: &str,
    restart: &str,
) -> Resp {
    let path = r.path().to_string();
    if r.method == "POST" && path == format!("/{TENANT}/oauth2/v2.0/token") {
        let f = r.form();
        if f.get("grant_type").map(String::as_str) != Some("client_credentials")
            || f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || f.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        {
            return Resp::json(
                401,
                json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
            );
        }
        let scope = f.get("scope").cloned().unwrap_or_default();
        let mut s = st.lock().unwrap();
        *s.token_requests.entry(scope.clone()).or_default() += 1;
        let token = match scope.as_str() {
            "https://ossrdbms-aad.database.windows.net/.default" => PG_TOKEN.to_string(),
            "https://management.core.windows.net//.default" => {
                let t = format!(
                    "arm-token-{}-{}",
                    s.arm_tokens.len() + 1,
                    std::process::id()
                );
                s.arm_tokens.push(t.clone());
                t
            }
            other => {
                return Resp::json(
                    400,
                    json!({"error": "invalid_scope", "error_description": format!("AADSTS70011: scope {other} is not valid")}),
                )
            }
        };
        return Resp::json(
            200,
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
        );
    }
    let authed = r
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| st.lock().unwrap().arm_tokens.iter().any(|x| x == t));
    if !authed {
        return arm_error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    {
        let mut s = st.lock().unwrap();
        if s.throttle > 0 {
            s.throttle -= 1;
            return arm_error(429, "TooManyRequests", "Too many requests; retry later.")
                .header("Retry-After", "1");
        }
    }
    // Operation monitors (ARM async contract; not operations of the service description).
    if let Some(id) = path
        .split("/azureAsyncOperation/")
        .nth(1)
        .or_else(|| path.split("/operationResults/").nth(1))
    {
        let s = st.lock().unwrap();
        let Some(op) = s.ops.get(id).cloned() else {
            return arm_error(404, "ResourceNotFound", "operation not found");
        };
        if path.contains("/azureAsyncOperation/") {
            let mut v =
                json!({"name": id, "status": op.status, "startTime": "2026-12-01T00:00:00Z"});
            if let Some((c, m)) = &op.error {
                v["error"] = json!({"code": c, "message": m});
            }
            return Resp::json(200, v).header("Retry-After", "1");
        }
        if op.status == "InProgress" {
            return Resp::empty(202)
                .header("Location", &format!("{base}{}", r.target))
                .header("Retry-After", "1");
        }
        if let Some((c, m)) = &op.error {
            return arm_error(500, c, m);
        }
        return match &op.config {
            Some(n) => Resp::json(200, config_json(&s, pg_url, n).unwrap()),
            None => Resp::empty(204),
        };
    }
    let body = if r.body.is_empty() {
        None
    } else {
        serde_json::from_slice::<Value>(&r.body).ok()
    };
    let id = match sw
        .lock()
        .unwrap()
        .check(&r.method, &path, &r.query(), body.as_ref())
    {
        Ok(id) => id,
        Err(e) => {
            st.lock().unwrap().violations.push(e.clone());
            return arm_error(400, "InvalidRequestContent", &e);
        }
    };
    *st.lock().unwrap().calls.entry(id.clone()).or_default() += 1;
    if !path
        .to_ascii_lowercase()
        .starts_with(&server_id().to_ascii_lowercase())
    {
        return arm_error(
            404,
            "ResourceNotFound",
            &format!("The Resource 'Microsoft.DBforPostgreSQL/flexibleServers/{}' under resource group '{RG}' was not found.", path.split('/').nth(8).unwrap_or("?")),
        );
    }
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let monitor = |op: &str| {
        (
            format!("{base}/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/westeurope/azureAsyncOperation/{op}?api-version=2024-08-01"),
            format!("{base}/subscriptions/{SUB}/providers/Microsoft.DBforPostgreSQL/locations/westeurope/operationResults/{op}?api-version=2024-08-01"),
        )
    };
    match id.as_str() {
        "Servers_Get" => {
            let s = st.lock().unwrap();
            Resp::json(
                200,
                json!({
                    "id": server_id(), "name": SERVER, "type": "Microsoft.DBforPostgreSQL/flexibleServers",
                    "location": "westeurope",
                    "sku": {"name": s.sku, "tier": "GeneralPurpose"},
                    "properties": {"state": "Ready", "version": "16", "fullyQualifiedDomainName": format!("{SERVER}.postgres.database.azure.com")}
                }),
            )
        }
        "Configurations_Get" => {
            let s = st.lock().unwrap();
            match config_json(&s, pg_url, seg[9]) {
                Some(v) => Resp::json(200, v),
                None => arm_error(
                    404,
                    "ConfigurationNotExists",
                    &format!(
                        "The configuration '{}' does not exist for server '{SERVER}'.",
                        seg[9]
                    ),
                ),
            }
        }
        "Configurations_Put" => {
            let name = seg[9].to_string();
            let Some((_, _, context, _, _)) = pg_row(pg_url, &name) else {
                return arm_error(
                    404,
                    "ConfigurationNotExists",
                    &format!("The configuration '{name}' does not exist."),
                );
            };
            let value = body
                .as_ref()
                .and_then(|b| b["properties"]["value"].as_str())
                .unwrap_or("")
                .to_string();
            let mut s = st.lock().unwrap();
            let op = format!("op-{}-{}", s.ops.len() + 1, std::process::id());
            s.ops.insert(
                op.clone(),
                Op {
                    status: "InProgress".into(),
                    error: None,
                    config: Some(name.clone()),
                },
            );
            // One-shot: the put-back of the same parameter succeeds.
            let fail = s.fail_config.as_deref() == Some(name.as_str());
            if fail {
                s.fail_config = None;
            }
            drop(s);
            let (st2, pg_url, op2) = (st.clone(), pg_url.to_string(), op.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1200));
                let mut result: Result<(), (String, String)> = Ok(());
                if fail {
                    result = Err((
                        "InternalServerError".into(),
                        format!(
                            "An unexpected error occured while updating the configuration {name}."
                        ),
                    ));
                } else {
                    let sql = format!(
                        "ALTER SYSTEM SET \"{name}\" = '{}'",
                        value.replace('\'', "''")
                    );
                    match postgres::Client::connect(&pg_url, postgres::NoTls).and_then(|mut c| {
                        c.batch_execute(&sql)?;
                        c.batch_execute("SELECT pg_reload_conf()")
                    }) {
                        Ok(()) => {
                            let mut s = st2.lock().unwrap();
                            s.values.insert(name.clone(), value.clone());
                            if context == "postmaster" && !s.pending_restart.contains(&name) {
                                s.pending_restart.push(name.clone());
                            }
                        }
                        Err(e) => {
                            result = Err((
                                "InvalidParameterValue".into(),
                                format!("Invalid value given for parameter {name}: {e}"),
                            ))
                        }
                    }
                }
                let mut s = st2.lock().unwrap();
                let o = s.ops.get_mut(&op2).unwrap();
                match result {
                    Ok(()) => o.status = "Succeeded".into(),
                    Err(e) => {
                        o.status = "Failed".into();
                        o.error = Some(e);
                    }
                }
            });
            let (a, l) = monitor(&op);
            Resp::empty(202)
                .header("Azure-AsyncOperation", &a)
                .header("Location", &l)
                .header("Retry-After", "1")
        }
        "Servers_Restart" => {
            let mut s = st.lock().unwrap();
            let op = format!("op-{}-{}", s.ops.len() + 1, std::process::id());
            s.ops.insert(
                op.clone(),
                Op {
                    status: "InProgress".into(),
                    error: None,
                    config: None,
                },
            );
            drop(s);
            let (st2, restart, op2) = (st.clone(), restart.to_string(), op.clone());
            std::thread::spawn(move || {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&restart)
                    .output();
                let mut s = st2.lock().unwrap();
                let ok = out.as_ref().is_ok_and(|o| o.status.success());
                if ok {
                    s.restarts += 1;
                    s.pending_restart.clear();
                }
                let o = s.ops.get_mut(&op2).unwrap();
                o.status = if ok {
                    "Succeeded".into()
                } else {
                    "Failed".into()
                };
                if !ok {
                    o.error = Some(("RestartFailed".into(), format!("{out:?}")));
                }
            });
            let (_, l) = monitor(&op);
            Resp::empty(202)
                .header("Location", &l)
                .header("Retry-After", "1")
        }
        "Metrics_List" => {
            let s = st.lock().unwrap();
            let q = r.query();
            let names: Vec<String> = q
                .get("metricnames")
                .map(|n| n.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            let ts = q.get("timespan").cloned().unwrap_or_default();
            if ts.split('/').count() != 2
                || ts
                    .split('/')
                    .any(|t| dbtune_agent::cloud::time::parse_rfc3339(t).is_none())
            {
                return arm_error(400, "BadRequest", &format!("Invalid timespan {ts}"));
            }
            let value: Vec<Value> = names
                .iter()
                .map(|n| {
                    let v = if n == "cpu_percent" { s.cpu } else { s.memory };
                    json!({
                        "id": format!("{}/providers/Microsoft.Insights/metrics/{n}", server_id()),
                        "type": "Microsoft.Insights/metrics",
                        "name": {"value": n, "localizedValue": n},
                        "unit": "Percent",
                        "timeseries": [{"metadatavalues": [], "data": [
                            {"timeStamp": "2026-12-01T00:00:00Z", "average": v / 2.0},
                            {"timeStamp": "2026-12-01T00:01:00Z", "average": v},
                            // The current minute: no value yet.
                            {"timeStamp": "2026-12-01T00:02:00Z"}
                        ]}]
                    })
                })
                .collect();
            Resp::json(
                200,
                json!({"cost": 0, "timespan": ts, "interval": "PT1M", "namespace": "Microsoft.DBforPostgreSQL/flexibleServers", "resourceregion": "westeurope", "value": value}),
            )
        }
        other => arm_error(
            400,
            "UnsupportedOperation",
            &format!("{other} is not served"),
        ),
    }
}
