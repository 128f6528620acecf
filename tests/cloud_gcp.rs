//! Google tokens and REST helpers against stand-ins of the OAuth token endpoint, the metadata
//! server, Cloud SQL Admin and Cloud Monitoring, following Google's documented shapes. The
//! token stand-in verifies our RS256 JWT with the test key's public half.

mod support;

use dbtune_agent::cloud::encoding::b64_decode;
use dbtune_agent::cloud::gcp::auth::{discover, Source, TokenSource, CLOUD_PLATFORM};
use dbtune_agent::cloud::gcp::monitoring::PointValue;
use dbtune_agent::cloud::gcp::Google;
use dbtune_agent::cloud::http::Http;
use dbtune_agent::cloud::time::now_unix;
use dbtune_agent::cloud::{Env, ErrorKind};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::cloud::stand_in::{Req, Resp, StandIn};
use support::cloud::test_keys::{RSA_PRIVATE_PEM, RSA_PUBLIC_PKCS1_B64};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dbtune-gcp-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Checks a jwt-bearer grant the way Google's token endpoint does; returns the claims.
fn verify_assertion(r: &Req, token_url: &str) -> Result<Value, String> {
    let f = r.form();
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return Err("unsupported_grant_type".into());
    }
    let jwt = f.get("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err("malformed JWT".into());
    }
    let header: Value = serde_json::from_slice(&b64_decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&b64_decode(parts[1]).unwrap()).unwrap();
    if header != json!({"alg": "RS256", "typ": "JWT", "kid": "key-1"}) {
        return Err(format!("bad header {header}"));
    }
    let pubkey = b64_decode(RSA_PUBLIC_PKCS1_B64).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, pubkey)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64_decode(parts[2]).unwrap(),
        )
        .map_err(|_| "invalid_grant: Invalid JWT Signature.".to_string())?;
    if claims["iss"] != "agent@proj.iam.gserviceaccount.com" || claims["aud"] != token_url {
        return Err(format!("bad claims {claims}"));
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    if exp - iat != 3600 || (iat - now_unix()).abs() > 60 {
        return Err("bad iat/exp".into());
    }
    Ok(claims)
}

/// A Google API stand-in: token endpoint, Cloud SQL Admin and Monitoring paths.
fn google_stand_in(token_lifetime: i64) -> StandIn {
    let issued = Arc::new(AtomicUsize::new(0));
    let port_cell: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    let cell = port_cell.clone();
    let s = StandIn::start(move |r| {
        let base = cell.get().cloned().unwrap_or_default();
        if r.path() == "/token" {
            return match verify_assertion(r, &format!("{base}/token")) {
                Ok(claims) => {
                    let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                    let scope = claims["scope"]
                        .as_str()
                        .unwrap()
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .to_string();
                    Resp::json(
                        200,
                        json!({"access_token": format!("ya29.{scope}.{n}"), "expires_in": token_lifetime, "token_type": "Bearer"}),
                    )
                }
                Err(e) => Resp::json(
                    400,
                    json!({"error": "invalid_grant", "error_description": e}),
                ),
            };
        }
        if !r
            .header("Authorization")
            .is_some_and(|a| a.starts_with("Bearer ya29.cloud-platform."))
        {
            return Resp::json(
                401,
                json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
            );
        }
        match (r.method.as_str(), r.path()) {
            ("GET", "/v1/projects/proj/instances/db1") => Resp::json(
                200,
                json!({
                "kind": "sql#instance", "name": "db1", "state": "RUNNABLE",
                "settings": {"tier": "db-custom-2-7680", "databaseFlags": [{"name": "work_mem", "value": "4096"}]}}),
            ),
            ("PATCH", "/v1/projects/proj/instances/db1") => {
                let flags = &r.json()["settings"]["databaseFlags"];
                if !flags.is_array() {
                    return Resp::json(
                        400,
                        json!({"error": {"code": 400, "message": "Invalid request", "status": "INVALID_ARGUMENT"}}),
                    );
                }
                Resp::json(
                    200,
                    json!({"kind": "sql#operation", "name": "op-2", "status": "PENDING", "operationType": "UPDATE"}),
                )
            }
            ("GET", "/v1/projects/proj/operations") => {
                let q = r.query();
                assert_eq!(
                    (q["instance"].as_str(), q["maxResults"].as_str()),
                    ("db1", "5")
                );
                Resp::json(
                    200,
                    json!({"kind": "sql#operationsList", "items": [
                    {"name": "op-2", "status": "RUNNING"}, {"name": "op-1", "status": "DONE"}]}),
                )
            }
            ("GET", "/v1/projects/proj/operations/op-2") => {
                Resp::json(200, json!({"name": "op-2", "status": "DONE"}))
            }
            ("GET", "/v1/projects/proj/instances/missing") => Resp::json(
                404,
                json!({"error": {"code": 404,
                "message": "The Cloud SQL instance does not exist.", "status": "NOT_FOUND",
                "errors": [{"reason": "instanceDoesNotExist"}]}}),
            ),
            ("GET", "/v3/projects/proj/timeSeries") => {
                let q = r.query();
                assert_eq!(q["view"], "FULL");
                assert!(
                    q["interval.startTime"].ends_with('Z') && q["interval.endTime"].ends_with('Z')
                );
                assert_eq!(q["filter"], "metric.type = \"cloudsql.googleapis.com/database/memory/quota\" AND resource.label.database_id = \"proj:db1\"");
                let series = |v: Value| {
                    json!({"metric": {"type": "cloudsql.googleapis.com/database/memory/quota", "labels": {}},
                    "resource": {"type": "cloudsql_database", "labels": {"database_id": "proj:db1"}}, "metricKind": "GAUGE", "valueType": "INT64",
                    "points": [{"interval": {"startTime": "2025-01-01T00:01:00Z", "endTime": "2025-01-01T00:01:00Z"}, "value": v},
                               {"interval": {"startTime": "2025-01-01T00:00:00Z", "endTime": "2025-01-01T00:00:00Z"}, "value": {"int64Value": "1"}}]})
                };
                match q.get("pageToken").map(String::as_str) {
                    None => Resp::json(
                        200,
                        json!({"timeSeries": [series(json!({"int64Value": "7933526016"}))], "nextPageToken": "p2"}),
                    ),
                    Some("p2") => Resp::json(
                        200,
                        json!({"timeSeries": [series(json!({"doubleValue": 0.5}))]}),
                    ),
                    _ => Resp::json(
                        400,
                        json!({"error": {"code": 400, "message": "bad page token", "status": "INVALID_ARGUMENT"}}),
                    ),
                }
            }
            _ => Resp::json(
                404,
                json!({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}),
            ),
        }
    });
    port_cell.set(s.url()).unwrap();
    s
}

fn key_file(dir: &std::path::Path, token_uri: &str) -> std::path::PathBuf {
    let p = dir.join("sa.json");
    std::fs::write(
        &p,
        json!({"type": "service_account", "project_id": "proj", "private_key_id": "key-1",
               "private_key": RSA_PRIVATE_PEM, "client_email": "agent@proj.iam.gserviceaccount.com",
               "client_id": "1", "token_uri": token_uri})
        .to_string(),
    )
    .unwrap();
    p
}

#[test]
fn service_account_jwt_exchange_and_rest_helpers() {
    let g = google_stand_in(3600);
    let dir = tmpdir("sa");
    let key = key_file(&dir, &format!("{}/token", g.url()));
    let env = Env::from_pairs([("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap())]);
    let mut google = Google::from_env(Http::new(), &env).unwrap();
    google.sqladmin_base = g.url();
    google.monitoring_base = g.url();
    assert!(matches!(
        google.tokens.source,
        Source::ServiceAccount { .. }
    ));

    // Tokens are cached per scope.
    assert_eq!(
        google.tokens.token(CLOUD_PLATFORM).unwrap().expose(),
        "ya29.cloud-platform.1"
    );
    assert_eq!(
        google.tokens.token(CLOUD_PLATFORM).unwrap().expose(),
        "ya29.cloud-platform.1"
    );
    assert_eq!(
        google
            .tokens
            .token("https://www.googleapis.com/auth/sqlservice.admin")
            .unwrap()
            .expose(),
        "ya29.sqlservice.admin.2"
    );

    let inst = google.sql_instance_get("proj", "db1").unwrap();
    assert_eq!(inst["settings"]["databaseFlags"][0]["name"], "work_mem");
    let op = google
        .sql_instance_patch(
            "proj",
            "db1",
            &json!({"settings": {"databaseFlags": [{"name": "work_mem", "value": "8192"}]}}),
        )
        .unwrap();
    assert_eq!(op["name"], "op-2");
    let ops = google.sql_operations_list("proj", "db1", 5).unwrap();
    assert_eq!(ops[0]["name"], "op-2", "newest first");
    assert_eq!(
        google.sql_operation_get("proj", "op-2").unwrap()["status"],
        "DONE"
    );
    let err = google.sql_instance_get("proj", "missing").unwrap_err();
    assert_eq!((err.status, err.code()), (Some(404), Some("NOT_FOUND")));
    assert!(err
        .to_string()
        .contains("The Cloud SQL instance does not exist."));

    let filter = "metric.type = \"cloudsql.googleapis.com/database/memory/quota\" AND resource.label.database_id = \"proj:db1\"";
    let now = now_unix();
    let series = google
        .time_series_list("proj", filter, now - 600, now, 5)
        .unwrap();
    assert_eq!(series.len(), 2, "both pages are read");
    assert_eq!(
        series[0].latest().unwrap().value,
        PointValue::Int64(7_933_526_016)
    );
    assert_eq!(
        series[0].points[0].end_time,
        series[0].points[1].end_time + 60,
        "newest first"
    );
    assert_eq!(series[1].latest().unwrap().value.as_f64(), Some(0.5));
    // Only one token was ever needed for the API calls.
    assert_eq!(g.count("/token"), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_rejected_jwt_is_a_clear_error_and_short_tokens_are_refreshed() {
    let g = google_stand_in(120);
    let dir = tmpdir("short");
    // Expiring in 2 minutes: inside the 5-minute margin, so each call fetches anew.
    let ts = TokenSource::from_env(
        Http::new(),
        &Env::from_pairs([(
            "GOOGLE_APPLICATION_CREDENTIALS",
            key_file(&dir, &format!("{}/token", g.url()))
                .to_str()
                .unwrap(),
        )]),
    )
    .unwrap();
    assert_eq!(
        ts.token(CLOUD_PLATFORM).unwrap().expose(),
        "ya29.cloud-platform.1"
    );
    assert_eq!(
        ts.token(CLOUD_PLATFORM).unwrap().expose(),
        "ya29.cloud-platform.2"
    );

    // The audience must be the key's token_uri: a key pointing elsewhere is refused by Google.
    let wrong = key_file(&dir, &format!("{}/token?x=1", g.url()));
    let ts = TokenSource::from_env(
        Http::new(),
        &Env::from_pairs([("GOOGLE_APPLICATION_CREDENTIALS", wrong.to_str().unwrap())]),
    )
    .unwrap();
    let err = ts.token(CLOUD_PLATFORM).unwrap_err();
    assert_eq!(err.code(), Some("invalid_grant"), "{err}");
    assert!(
        err.to_string()
            .starts_with("getting a Google access token: Google token exchange (service account)"),
        "{err}"
    );

    // Broken credential files name the problem.
    std::fs::write(dir.join("bad.json"), r#"{"type":"external_account"}"#).unwrap();
    let err = discover(&Env::from_pairs([(
        "GOOGLE_APPLICATION_CREDENTIALS",
        dir.join("bad.json").to_str().unwrap(),
    )]))
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.to_string().contains("external_account"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gcloud_user_credentials_send_the_quota_project() {
    let s = StandIn::start(|r| {
        if r.path() == "/token" {
            let f = r.form();
            if f["grant_type"] != "refresh_token"
                || f["client_id"] != "cid"
                || f["client_secret"] != "csecret"
            {
                return Resp::json(400, json!({"error": "invalid_request"}));
            }
            if f["refresh_token"] != "1//refresh" {
                return Resp::json(
                    400,
                    json!({"error": "invalid_grant", "error_description": format!("Token {} has been expired or revoked.", f["refresh_token"])}),
                );
            }
            return Resp::json(
                200,
                json!({"access_token": "ya29.user", "expires_in": 3599, "scope": CLOUD_PLATFORM, "token_type": "Bearer"}),
            );
        }
        if r.header("Authorization") == Some("Bearer ya29.user")
            && r.header("x-goog-user-project") == Some("billing-proj")
        {
            Resp::json(
                200,
                json!({"name": "db1", "settings": {"databaseFlags": []}}),
            )
        } else {
            Resp::json(
                403,
                json!({"error": {"code": 403, "message": "quota project missing", "status": "PERMISSION_DENIED"}}),
            )
        }
    });
    let home = tmpdir("home");
    let gdir = home.join(".config/gcloud");
    std::fs::create_dir_all(&gdir).unwrap();
    let write = |refresh: &str| {
        std::fs::write(
            gdir.join("application_default_credentials.json"),
            json!({"type": "authorized_user", "client_id": "cid", "client_secret": "csecret", "refresh_token": refresh,
                   "quota_project_id": "billing-proj", "token_uri": format!("{}/token", s.url())})
            .to_string(),
        )
        .unwrap()
    };
    write("1//refresh");
    let env = Env::from_pairs([("HOME", home.to_str().unwrap())]);
    let mut google = Google::from_env(Http::new(), &env).unwrap();
    google.sqladmin_base = s.url();
    assert_eq!(
        google.sql_instance_get("proj", "db1").unwrap()["name"],
        "db1"
    );

    write("1//revoked-refresh-token");
    let err = Google::from_env(Http::new(), &env)
        .unwrap()
        .tokens
        .token(CLOUD_PLATFORM)
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_grant"));
    assert!(!err.to_string().contains("revoked-refresh-token"), "{err}");
    assert!(!err.to_string().contains("csecret"));
    let _ = std::fs::remove_dir_all(home);
}

#[test]
fn metadata_server_tokens_need_the_flavor_header_and_survive_a_503() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let md = StandIn::start(move |r| {
        if r.header("Metadata-Flavor") != Some("Google") {
            return Resp::text(403, "Missing Metadata-Flavor:Google header.");
        }
        if r.path() != "/computeMetadata/v1/instance/service-accounts/default/token"
            || r.query()["scopes"] != CLOUD_PLATFORM
        {
            return Resp::text(404, "not found");
        }
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Resp::text(503, "metadata temporarily unavailable");
        }
        Resp::json(
            200,
            json!({"access_token": "ya29.md", "expires_in": 3599, "token_type": "Bearer"}),
        )
        .header("Metadata-Flavor", "Google")
    });
    let host = format!("127.0.0.1:{}", md.port);
    let env = Env::from_pairs([
        ("GCE_METADATA_HOST", host.as_str()),
        ("HOME", "/nonexistent"),
    ]);
    let ts = TokenSource::from_env(Http::new(), &env).unwrap();
    assert!(matches!(ts.source, Source::Metadata { .. }));
    assert_eq!(ts.token(CLOUD_PLATFORM).unwrap().expose(), "ya29.md");
    assert_eq!(n.load(Ordering::SeqCst), 2, "the 503 was retried once");

    // Something without the flavor header in its answer is not trusted.
    let impostor =
        StandIn::start(|_| Resp::json(200, json!({"access_token": "stolen", "expires_in": 3599})));
    let host = format!("127.0.0.1:{}", impostor.port);
    let ts = TokenSource::from_env(
        Http::new(),
        &Env::from_pairs([("GCE_METADATA_HOST", host.as_str())]),
    )
    .unwrap();
    assert_eq!(ts.token(CLOUD_PLATFORM).unwrap_err().kind, ErrorKind::Auth);
}
