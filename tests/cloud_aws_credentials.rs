//! The AWS credential chain against stand-ins that follow the documented shapes: STS
//! AssumeRoleWithWebIdentity (unsigned, token file re-read), ECS/EKS container credentials
//! (authorization token file), EC2 IMDSv2 with v1 fallback, caching and refresh before expiry,
//! and the order of the chain.

mod support;

use dbtune_agent::cloud::aws::{Aws, CredentialProvider, Service, StaticKeys};
use dbtune_agent::cloud::http::Http;
use dbtune_agent::cloud::time::{now_unix, rfc3339};
use dbtune_agent::cloud::{Env, ErrorKind};
use dbtune_agent::secret::Secret;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::cloud::stand_in::{Resp, StandIn};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dbtune-cloud-{tag}-{}-{}",
        std::process::id(),
        now_unix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sts_credentials_xml(action: &str, key: &str, expires: i64) -> String {
    format!(
        "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result><Credentials>\
         <AccessKeyId>{key}</AccessKeyId><SecretAccessKey>secret-{key}</SecretAccessKey>\
         <SessionToken>token-{key}</SessionToken><Expiration>{}</Expiration></Credentials>\
         </{action}Result><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></{action}Response>",
        rfc3339(expires)
    )
}

#[test]
fn web_identity_is_unsigned_rereads_the_token_and_refreshes_before_expiry() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let sts = StandIn::start(move |r| {
        let f = r.form();
        if r.header("Authorization").is_some()
            || f.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity")
        {
            return Resp::text(400, "unexpected request");
        }
        assert_eq!(f.get("Version").unwrap(), "2011-06-15");
        assert_eq!(f.get("RoleArn").unwrap(), "arn:aws:iam::1:role/r");
        assert_eq!(f.get("RoleSessionName").unwrap(), "sess");
        let i = n2.fetch_add(1, Ordering::SeqCst) + 1;
        // Expires in two minutes: inside the five-minute refresh margin.
        Resp::new(
            200,
            "text/xml",
            sts_credentials_xml(
                "AssumeRoleWithWebIdentity",
                &format!("ASIA{i}"),
                now_unix() + 120,
            ),
        )
    });
    let dir = tmpdir("wi");
    let token = dir.join("token");
    std::fs::write(&token, "first-jwt\n").unwrap();
    let env = Env::from_pairs([
        ("AWS_ENDPOINT_URL_STS", sts.url().as_str()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
        ("AWS_ROLE_SESSION_NAME", "sess"),
        ("HOME", dir.to_str().unwrap()),
    ]);
    let p = CredentialProvider::new(Http::new(), env, "eu-west-1", StaticKeys::default());
    let c1 = p.credentials().unwrap();
    assert_eq!(c1.access_key_id, "ASIA1");
    assert_eq!(c1.session_token.as_ref().unwrap().expose(), "token-ASIA1");
    assert_eq!(c1.source, "web identity");
    std::fs::write(&token, "second-jwt").unwrap();
    let c2 = p.credentials().unwrap();
    assert_eq!(
        c2.access_key_id, "ASIA2",
        "credentials within 5 min of expiry must be refreshed"
    );
    let tokens: Vec<String> = sts
        .requests()
        .iter()
        .map(|r| r.form()["WebIdentityToken"].clone())
        .collect();
    assert_eq!(
        tokens,
        vec!["first-jwt", "second-jwt"],
        "the token file is re-read on refresh"
    );

    // An STS error keeps its code, and the web identity token never shows in the text.
    let bad = StandIn::start(|r| {
        let tok = r.form()["WebIdentityToken"].clone();
        Resp::new(
            400,
            "text/xml",
            format!("<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Token {tok} is expired</Message></Error><RequestId>x</RequestId></ErrorResponse>"),
        )
    });
    let env = Env::from_pairs([
        ("AWS_ENDPOINT_URL", bad.url().as_str()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
    ]);
    let err = CredentialProvider::new(Http::new(), env, "eu-west-1", StaticKeys::default())
        .credentials()
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidIdentityToken"));
    let text = err.to_string();
    assert!(
        text.contains("loading AWS credentials") && text.contains("STS AssumeRoleWithWebIdentity"),
        "{text}"
    );
    assert!(!text.contains("second-jwt"), "token leaked: {text}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn container_credentials_send_the_token_file_and_reject_foreign_hosts() {
    let ecs = StandIn::start(|r| {
        if r.path() != "/v1/credentials" || r.header("Authorization") != Some("pod-identity-token")
        {
            return Resp::json(401, json!({"message": "bad token"}));
        }
        Resp::json(
            200,
            json!({"AccessKeyId": "ASIAECS", "SecretAccessKey": "s", "Token": "t", "Expiration": rfc3339(now_unix() + 3600)}),
        )
    });
    let dir = tmpdir("ecs");
    let tf = dir.join("tok");
    std::fs::write(&tf, "pod-identity-token\n").unwrap();
    let url = format!("{}/v1/credentials", ecs.url());
    let env = Env::from_pairs([
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            tf.to_str().unwrap(),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "ignored-when-the-file-is-set",
        ),
        ("HOME", dir.to_str().unwrap()),
    ]);
    let p = CredentialProvider::new(Http::new(), env, "us-east-1", StaticKeys::default());
    let c = p.credentials().unwrap();
    assert_eq!(
        (c.access_key_id.as_str(), c.session_token.unwrap().expose()),
        ("ASIAECS", "t")
    );
    assert_eq!(c.source, "container credentials");
    // Cached for an hour-long credential: a second call makes no request.
    p.credentials().unwrap();
    assert_eq!(ecs.requests().len(), 1);

    // A wrong token: the service's 401 is an auth error, and the token is not in the text.
    std::fs::write(&tf, "stale-token").unwrap();
    let env = Env::from_pairs([
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            tf.to_str().unwrap(),
        ),
        ("HOME", dir.to_str().unwrap()),
    ]);
    let err = CredentialProvider::new(Http::new(), env, "us-east-1", StaticKeys::default())
        .credentials()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(!err.to_string().contains("stale-token"));

    // Plain HTTP to anything but loopback / the ECS and EKS agent addresses is refused.
    let env = Env::from_pairs([
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://attacker.example/creds",
        ),
        ("HOME", "/nonexistent"),
    ]);
    let err = CredentialProvider::new(Http::new(), env, "us-east-1", StaticKeys::default())
        .credentials()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("attacker.example"));
    let _ = std::fs::remove_dir_all(dir);
}

/// IMDS as documented; the first credentials GET is throttled (429), as IMDS does under load.
fn imds(v2: bool) -> StandIn {
    let throttled = Arc::new(AtomicUsize::new(0));
    StandIn::start(move |r| {
        let path = r.path();
        if r.method == "PUT" && path == "/latest/api/token" {
            if !v2 {
                return Resp::text(405, "Method Not Allowed");
            }
            assert_eq!(
                r.header("X-aws-ec2-metadata-token-ttl-seconds"),
                Some("21600")
            );
            return Resp::text(200, "imds-session-token");
        }
        if v2 && r.header("X-aws-ec2-metadata-token") != Some("imds-session-token") {
            return Resp::text(401, "");
        }
        match path {
            "/latest/meta-data/iam/security-credentials/" => Resp::text(200, "db-role\n"),
            "/latest/meta-data/iam/security-credentials/db-role"
                if throttled.fetch_add(1, Ordering::SeqCst) == 0 =>
            {
                Resp::text(429, "Too Many Requests")
            }
            "/latest/meta-data/iam/security-credentials/db-role" => Resp::json(
                200,
                json!({"Code": "Success", "LastUpdated": rfc3339(now_unix()), "Type": "AWS-HMAC",
                       "AccessKeyId": if v2 {"ASIAV2"} else {"ASIAV1"}, "SecretAccessKey": "s", "Token": "t",
                       "Expiration": rfc3339(now_unix() + 6 * 3600)}),
            ),
            _ => Resp::text(404, "not found"),
        }
    })
}

#[test]
fn imds_v2_and_v1_fallback() {
    for v2 in [true, false] {
        let server = imds(v2);
        let env = Env::from_pairs([
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url().as_str()),
            ("HOME", "/nonexistent"),
        ]);
        let c = CredentialProvider::new(Http::new(), env, "us-east-1", StaticKeys::default())
            .credentials()
            .unwrap_or_else(|e| panic!("v2={v2}: {e}"));
        assert_eq!(c.access_key_id, if v2 { "ASIAV2" } else { "ASIAV1" });
        assert_eq!(c.source, "instance metadata (role db-role)");
        let reqs = server.requests();
        // PUT token, GET role, GET credentials (429), GET credentials again.
        assert_eq!(reqs.len(), 4, "{reqs:?}");
        assert_eq!(reqs[0].method, "PUT");
        assert!(reqs[1..].iter().all(|r| r.method == "GET"));
        assert_eq!(
            reqs[1..]
                .iter()
                .all(|r| r.header("X-aws-ec2-metadata-token").is_some()),
            v2
        );
    }
    // Disabled metadata with nothing else configured: a clear "no credentials" error.
    let env = Env::from_pairs([
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("HOME", "/nonexistent"),
    ]);
    let err = CredentialProvider::new(Http::new(), env, "us-east-1", StaticKeys::default())
        .credentials()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(err.to_string().contains("no credentials found"), "{err}");
}

#[test]
fn chain_order_and_static_key_sources() {
    let env = Env::from_pairs([
        ("AWS_ACCESS_KEY_ID", "AKIAENV"),
        ("AWS_SECRET_ACCESS_KEY", "env-secret"),
        ("AWS_SESSION_TOKEN", "env-token"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
    ]);
    // Plain AWS_* keys, with their session token (the Go agent dropped it).
    let c = CredentialProvider::new(Http::new(), env.clone(), "us-east-1", StaticKeys::default())
        .credentials()
        .unwrap();
    assert_eq!(c.access_key_id, "AKIAENV");
    assert_eq!(c.session_token.unwrap().expose(), "env-token");
    // DBT_AWS_* beat AWS_*; the agent's own config beats both.
    let mut env2 = env.clone();
    env2.0
        .insert("DBT_AWS_ACCESS_KEY_ID".into(), "AKIADBT".into());
    env2.0
        .insert("DBT_AWS_SECRET_ACCESS_KEY".into(), "dbt-secret".into());
    let c = CredentialProvider::new(
        Http::new(),
        env2.clone(),
        "us-east-1",
        StaticKeys::default(),
    )
    .credentials()
    .unwrap();
    assert_eq!(
        (c.access_key_id.as_str(), c.secret_access_key.expose()),
        ("AKIADBT", "dbt-secret")
    );
    let keys = StaticKeys {
        access_key_id: Some("AKIACFG".into()),
        secret_access_key: Some(Secret::new("cfg-secret")),
        session_token: None,
    };
    let c = CredentialProvider::new(Http::new(), env2, "us-east-1", keys)
        .credentials()
        .unwrap();
    assert_eq!(c.access_key_id, "AKIACFG");
    // Half a key pair is a configuration error naming what is missing.
    let env = Env::from_pairs([("AWS_ACCESS_KEY_ID", "AKIAONLY")]);
    let err = CredentialProvider::new(Http::new(), env, "us-east-1", StaticKeys::default())
        .credentials()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    // A profile named in AWS_PROFILE that does not exist is an error, not a silent fallback.
    let env = Env::from_pairs([("AWS_PROFILE", "ghost"), ("HOME", "/nonexistent")]);
    let err = CredentialProvider::new(Http::new(), env, "us-east-1", StaticKeys::default())
        .credentials()
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
}

#[test]
fn json11_calls_are_signed_for_their_service_and_keep_the_error_type() {
    let pi = StandIn::start(|r| {
        let auth = r.header("Authorization").unwrap_or("");
        let ok = r.header("Content-Type") == Some("application/x-amz-json-1.1")
            && r.header("X-Amz-Target") == Some("PerformanceInsightsv20180227.GetResourceMetrics")
            && auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAPI/")
            && auth.contains("/eu-west-1/pi/aws4_request")
            && auth.contains(
                "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
            )
            && r.header("X-Amz-Security-Token") == Some("pi-token");
        if !ok {
            return Resp::text(400, "unexpected request shape");
        }
        if r.json()["Identifier"] == "db-MISSING" {
            return Resp::json(
                400,
                json!({"__type": "InvalidArgumentException", "Message": "no such resource"}),
            );
        }
        Resp::new(
            200,
            "application/x-amz-json-1.1",
            serde_json::to_vec(
                &json!({"MetricList": [{"Key": {"Metric": "os.memory.active.avg"},
                "DataPoints": [{"Timestamp": 1.7e9, "Value": 1024.0}]}]}),
            )
            .unwrap(),
        )
    });
    let env = Env::from_pairs([("AWS_ENDPOINT_URL_PI", pi.url().as_str())]);
    let keys = StaticKeys {
        access_key_id: Some("AKIAPI".into()),
        secret_access_key: Some(Secret::new("pi-secret")),
        session_token: Some(Secret::new("pi-token")),
    };
    let aws = Aws::new(Http::new(), env, "eu-west-1", keys);
    let body = json!({"ServiceType": "RDS", "Identifier": "db-ABC", "MetricQueries": [{"Metric": "os.memory.active.avg"}]});
    let v = aws
        .json11(
            Service::Pi,
            "PerformanceInsightsv20180227.GetResourceMetrics",
            &body,
        )
        .unwrap();
    assert_eq!(v["MetricList"][0]["DataPoints"][0]["Value"], 1024.0);
    let err = aws
        .json11(
            Service::Pi,
            "PerformanceInsightsv20180227.GetResourceMetrics",
            &json!({"Identifier": "db-MISSING"}),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidArgumentException"));
    assert!(
        err.to_string()
            .contains("Performance Insights GetResourceMetrics")
            && err.to_string().contains("no such resource")
    );
}
