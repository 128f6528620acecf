//! Azure tokens and ARM long-running operations against stand-ins of the Entra token endpoint,
//! the managed-identity endpoints (IMDS, App Service) and ARM, in their documented shapes.

mod support;

use dbtune_agent::cloud::azure::{Arm, Credential, TokenProvider, ARM_SCOPE, POSTGRES_SCOPE};
use dbtune_agent::cloud::http::Http;
use dbtune_agent::cloud::time::now_unix;
use dbtune_agent::cloud::{Env, ErrorKind};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cloud::stand_in::{Req, Resp, StandIn};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dbtune-az-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Entra v2 token endpoint: client secret or federated assertion, per-scope tokens.
fn entra(lifetime: i64) -> StandIn {
    let n = Arc::new(AtomicUsize::new(0));
    StandIn::start(move |r: &Req| {
        if r.method != "POST" || r.path() != "/tenant-1/oauth2/v2.0/token" {
            return Resp::json(
                404,
                json!({"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."}),
            );
        }
        let f = r.form();
        let ok = f.get("grant_type").map(String::as_str) == Some("client_credentials")
            && f.get("client_id").map(String::as_str) == Some("app-1")
            && (f.get("client_secret").map(String::as_str) == Some("s3cr3t-value")
                || (f.get("client_assertion_type").map(String::as_str)
                    == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                    && f.get("client_assertion")
                        .is_some_and(|a| a.starts_with("fed-"))));
        if !ok {
            return Resp::json(
                401,
                json!({"error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": [7000215]}),
            );
        }
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let who = f
            .get("client_assertion")
            .cloned()
            .unwrap_or_else(|| "secret".into());
        Resp::json(
            200,
            json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": format!("tok-{i}-{who}-{}", f["scope"])}),
        )
    })
}

#[test]
fn client_secret_tokens_are_cached_per_scope_and_errors_keep_the_entra_code() {
    let s = entra(3600);
    let env = Env::from_pairs([
        ("AZURE_AUTHORITY_HOST", s.url().as_str()),
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
    ]);
    let tp = TokenProvider::from_env(Http::new(), &env).unwrap();
    assert_eq!(tp.credential.name(), "client secret");
    let a = tp.token(ARM_SCOPE).unwrap();
    assert_eq!(a.expose(), format!("tok-1-secret-{ARM_SCOPE}"));
    assert_eq!(tp.token(ARM_SCOPE).unwrap().expose(), a.expose());
    assert_eq!(
        tp.token(POSTGRES_SCOPE).unwrap().expose(),
        format!("tok-2-secret-{POSTGRES_SCOPE}")
    );
    assert_eq!(s.requests().len(), 2);

    let env = Env::from_pairs([
        ("AZURE_AUTHORITY_HOST", s.url().as_str()),
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_CLIENT_SECRET", "wrong-secret-value"),
    ]);
    let err = TokenProvider::from_env(Http::new(), &env)
        .unwrap()
        .token(ARM_SCOPE)
        .unwrap_err();
    assert_eq!(
        (err.code(), err.kind),
        (Some("invalid_client"), ErrorKind::Auth)
    );
    let text = err.to_string();
    assert!(
        text.contains("AADSTS7000215") && text.contains("client secret"),
        "{text}"
    );
    assert!(!text.contains("wrong-secret-value"));

    let err = Credential::from_env(&Env::from_pairs([("AZURE_CLIENT_SECRET", "x")])).unwrap_err();
    assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
}

#[test]
fn workload_identity_rereads_the_federated_token_for_each_request() {
    // 200-second tokens are inside the refresh margin: every call asks Entra again.
    let s = entra(200);
    let dir = tmpdir("wi");
    let file = dir.join("azure-identity-token");
    std::fs::write(&file, "fed-one\n").unwrap();
    let env = Env::from_pairs([
        ("AZURE_AUTHORITY_HOST", s.url().as_str()),
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap()),
    ]);
    let tp = TokenProvider::from_env(Http::new(), &env).unwrap();
    assert_eq!(tp.credential.name(), "workload identity");
    assert!(tp.token(ARM_SCOPE).unwrap().expose().contains("fed-one"));
    std::fs::write(&file, "fed-two").unwrap();
    assert!(tp.token(ARM_SCOPE).unwrap().expose().contains("fed-two"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn managed_identity_via_imds_and_app_service() {
    let imds = StandIn::start(|r| {
        let q = r.query();
        if r.header("Metadata") != Some("true") {
            return Resp::json(
                400,
                json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
            );
        }
        if r.path() != "/metadata/identity/oauth2/token"
            || q.get("api-version").map(String::as_str) != Some("2018-02-01")
        {
            return Resp::json(
                400,
                json!({"error": "invalid_request", "error_description": "bad api-version"}),
            );
        }
        if q.get("client_id").map(String::as_str) != Some("uami-1") {
            return Resp::json(
                400,
                json!({"error": "invalid_request", "error_description": "Identity not found"}),
            );
        }
        let exp = now_unix() + 86_399;
        Resp::json(
            200,
            json!({"access_token": format!("mi-{}", q["resource"]), "client_id": "uami-1",
            "expires_in": "86399", "expires_on": exp.to_string(), "ext_expires_in": "86399",
            "not_before": now_unix().to_string(), "resource": q["resource"], "token_type": "Bearer"}),
        )
    });
    let env = Env::from_pairs([
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url().as_str()),
        ("AZURE_CLIENT_ID", "uami-1"),
    ]);
    let tp = TokenProvider::from_env(Http::new(), &env).unwrap();
    assert_eq!(tp.credential.name(), "managed identity (IMDS)");
    // The resource is the scope without "/.default".
    assert_eq!(
        tp.token(ARM_SCOPE).unwrap().expose(),
        "mi-https://management.core.windows.net/"
    );

    let app = StandIn::start(|r| {
        let q = r.query();
        if r.header("X-IDENTITY-HEADER") != Some("id-header-secret") {
            return Resp::json(
                401,
                json!({"statusCode": 401, "message": "Unauthorized request"}),
            );
        }
        assert_eq!(q["api-version"], "2019-08-01");
        Resp::json(
            200,
            json!({"access_token": "app-token", "expires_on": (now_unix() + 3600).to_string(),
            "resource": q["resource"], "token_type": "Bearer", "client_id": "sys"}),
        )
    });
    let ep = format!("{}/msi/token", app.url());
    let env = Env::from_pairs([
        ("IDENTITY_ENDPOINT", ep.as_str()),
        ("IDENTITY_HEADER", "id-header-secret"),
    ]);
    let tp = TokenProvider::from_env(Http::new(), &env).unwrap();
    assert_eq!(tp.token(POSTGRES_SCOPE).unwrap().expose(), "app-token");
    let env = Env::from_pairs([
        ("IDENTITY_ENDPOINT", ep.as_str()),
        ("IDENTITY_HEADER", "not-it"),
    ]);
    let err = TokenProvider::from_env(Http::new(), &env)
        .unwrap()
        .token(POSTGRES_SCOPE)
        .unwrap_err();
    assert_eq!((err.status, err.kind), (Some(401), ErrorKind::Auth));
    assert!(err.to_string().contains("Unauthorized request"));
}

/// ARM stand-in for a flexible server: configuration PUT via Azure-AsyncOperation, restart POST
/// via Location, a failing configuration, and one that never finishes.
fn arm() -> StandIn {
    let polls: Arc<Mutex<HashMap<String, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let value = Arc::new(Mutex::new(String::from("4096")));
    let cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    let c2 = cell.clone();
    let srv = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg1";
    let s = StandIn::start(move |r| {
        let base = c2.get().cloned().unwrap();
        if r.header("Authorization") != Some(format!("Bearer tok-1-secret-{ARM_SCOPE}").as_str()) {
            return Resp::json(
                401,
                json!({"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}}),
            );
        }
        if !r.query().contains_key("api-version") && !r.path().starts_with("/ops/") {
            return Resp::json(
                400,
                json!({"error": {"code": "MissingApiVersionParameter", "message": "The api-version query parameter (?api-version=) is required for all requests."}}),
            );
        }
        let count = |k: &str| {
            let mut p = polls.lock().unwrap();
            let e = p.entry(k.to_string()).or_insert(0);
            *e += 1;
            *e
        };
        let path = r.path().to_string();
        match (r.method.as_str(), path.strip_prefix(srv).unwrap_or(&path)) {
            ("GET", "") => Resp::json(
                200,
                json!({"sku": {"name": "Standard_D4ds_v5", "tier": "GeneralPurpose"}, "name": "pg1"}),
            ),
            ("PUT", "/configurations/work_mem") => {
                *value.lock().unwrap() = r.json()["properties"]["value"]
                    .as_str()
                    .unwrap()
                    .to_string();
                Resp::json(202, json!({}))
                    .header("Azure-AsyncOperation", &format!("{base}/ops/cfg1"))
                    .header("Retry-After", "1")
            }
            ("GET", "/configurations/work_mem") => Resp::json(
                200,
                json!({"name": "work_mem",
                "properties": {"value": *value.lock().unwrap(), "source": "user-override", "isConfigPendingRestart": false}}),
            ),
            ("PUT", "/configurations/shared_buffers") => Resp::json(201, json!({}))
                .header("Azure-AsyncOperation", &format!("{base}/ops/bad")),
            ("PUT", "/configurations/max_connections") => Resp::json(202, json!({}))
                .header("Azure-AsyncOperation", &format!("{base}/ops/forever")),
            ("POST", "/restart") => Resp::empty(202)
                .header("Location", &format!("{base}/ops/restart1"))
                .header("Retry-After", "0"),
            ("GET", "/ops/cfg1") => {
                let status = if count("cfg1") < 2 {
                    "InProgress"
                } else {
                    "Succeeded"
                };
                Resp::json(
                    200,
                    json!({"name": "cfg1", "status": status, "startTime": "2025-01-01T00:00:00Z"}),
                )
            }
            ("GET", "/ops/bad") => Resp::json(
                200,
                json!({"status": "Failed", "error": {"code": "ServerParameterValueInvalid",
                "message": "The value '9999999' for parameter 'shared_buffers' is out of range."}}),
            ),
            ("GET", "/ops/forever") => {
                Resp::json(200, json!({"status": "InProgress"})).header("Retry-After", "1")
            }
            ("GET", "/ops/restart1") => {
                if count("restart1") < 3 {
                    Resp::empty(202).header("Retry-After", "0")
                } else {
                    Resp::empty(204)
                }
            }
            _ => Resp::json(
                404,
                json!({"error": {"code": "ResourceNotFound", "message": "The Resource was not found."}}),
            ),
        }
    });
    cell.set(s.url()).unwrap();
    s
}

#[test]
fn arm_long_running_operations_poll_to_the_end() {
    let e = entra(3600);
    let a = arm();
    let env = Env::from_pairs([
        ("AZURE_AUTHORITY_HOST", e.url().as_str()),
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "app-1"),
        ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
    ]);
    let mut client = Arm::new(
        Http::new(),
        TokenProvider::from_env(Http::new(), &env).unwrap(),
    );
    client.base = a.url();
    client.poll_interval = Duration::from_millis(50);
    client.lro_deadline = Duration::from_secs(20);
    let srv = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg1";
    let api = "2024-08-01";

    assert_eq!(
        client.get(srv, api).unwrap()["sku"]["name"],
        "Standard_D4ds_v5"
    );

    // PUT → 202 + Azure-AsyncOperation (Retry-After: 1) → InProgress → Succeeded → GET resource.
    let t = Instant::now();
    let out = client
        .put_and_wait(
            &format!("{srv}/configurations/work_mem"),
            api,
            &json!({"properties": {"value": "8192", "source": "user-override"}}),
        )
        .unwrap();
    // The first poll waits the PUT's Retry-After (1 s), the second our 50 ms interval.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(out.polls, 2);
    let res = out.result.unwrap();
    assert_eq!(res["properties"]["value"], "8192");
    assert_eq!(res["properties"]["isConfigPendingRestart"], false);

    // POST restart → 202 + Location → 202, 202, 204.
    let out = client
        .post_and_wait(&format!("{srv}/restart"), api, None)
        .unwrap();
    assert_eq!((out.polls, out.result), (3, None));

    // Failed operations carry ARM's error code and message.
    let err = client
        .put_and_wait(
            &format!("{srv}/configurations/shared_buffers"),
            api,
            &json!({"properties": {"value": "9999999"}}),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some("ServerParameterValueInvalid"));
    assert!(
        err.to_string()
            .contains("operation Failed: The value '9999999'"),
        "{err}"
    );

    // An operation that never ends stops at the deadline.
    client.lro_deadline = Duration::from_millis(2500);
    let t = Instant::now();
    let err = client
        .put_and_wait(
            &format!("{srv}/configurations/max_connections"),
            api,
            &json!({"properties": {"value": "100"}}),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(t.elapsed() < Duration::from_secs(4));

    // Plain errors keep ARM's code.
    let err = client.get(&format!("{srv}/nope"), api).unwrap_err();
    assert_eq!(
        (err.status, err.code()),
        (Some(404), Some("ResourceNotFound"))
    );
}
