//! Our AWS client against moto, a real AWS-compatible server that verifies SigV4 signatures
//! after its first six (setup) requests: every RDS / EC2 / CloudWatch / STS call the adapters
//! need, the credential chain's STS paths, and a wrong secret surfacing as
//! `SignatureDoesNotMatch`.

mod support;

use dbtune_agent::cloud::aws::sigv4::{sign_request, SigningParams};
use dbtune_agent::cloud::aws::{query::list_params, Aws, Credentials, Service, StaticKeys};
use dbtune_agent::cloud::http::{Http, Request};
use dbtune_agent::cloud::time::{now_unix, rfc3339};
use dbtune_agent::cloud::{Env, ErrorKind};
use dbtune_agent::secret::Secret;
use support::cloud::moto::{moto_binary, Moto};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

/// An IAM call during moto's unauthenticated window (signed with a throwaway key: moto does not
/// check it yet).
fn iam(
    http: &Http,
    moto: &Moto,
    action: &str,
    params: &[(&str, &str)],
) -> dbtune_agent::cloud::xml::Element {
    let mut pairs = vec![("Action", action), ("Version", "2010-05-08")];
    pairs.extend_from_slice(params);
    let mut req = Request::post(format!("{}/", moto.url())).form(&pairs);
    let dummy = Credentials::new("AKIDSETUP", "setup-secret", None);
    sign_request(
        &mut req,
        &SigningParams::new(&dummy, REGION, "iam", now_unix()),
    );
    http.send(&req)
        .unwrap_or_else(|e| panic!("IAM {action}: {e}\n{}", moto.log_text()))
        .xml()
        .unwrap()
}

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

fn client(moto: &Moto, id: &str, secret: &str, token: Option<&str>) -> Aws {
    let env = Env::from_pairs([
        ("AWS_ENDPOINT_URL", moto.url().as_str()),
        ("HOME", "/nonexistent"),
    ]);
    Aws::new(
        Http::new(),
        env,
        REGION,
        StaticKeys {
            access_key_id: Some(id.to_string()),
            secret_access_key: Some(Secret::new(secret)),
            session_token: token.map(Secret::new),
        },
    )
}

#[test]
fn moto_accepts_our_signatures_for_every_call_the_adapters_make() {
    let Some(bin) = moto_binary() else { return };
    let moto = Moto::start(&bin, 6);
    let http = Http::new();

    // --- the six unauthenticated setup calls: a user and a role, both allowed everything ---
    let allow_all =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}"#;
    iam(&http, &moto, "CreateUser", &[("UserName", "dbtune")]);
    iam(
        &http,
        &moto,
        "CreatePolicy",
        &[("PolicyName", "all"), ("PolicyDocument", allow_all)],
    );
    let policy_arn = format!("arn:aws:iam::{ACCOUNT}:policy/all");
    iam(
        &http,
        &moto,
        "AttachUserPolicy",
        &[("UserName", "dbtune"), ("PolicyArn", &policy_arn)],
    );
    let key = iam(&http, &moto, "CreateAccessKey", &[("UserName", "dbtune")]);
    let id = key.find("AccessKeyId").unwrap().text.clone();
    let secret = key.find("SecretAccessKey").unwrap().text.clone();
    iam(
        &http,
        &moto,
        "CreateRole",
        &[
            ("RoleName", "dbtune-role"),
            ("AssumeRolePolicyDocument", trust),
        ],
    );
    iam(
        &http,
        &moto,
        "AttachRolePolicy",
        &[("RoleName", "dbtune-role"), ("PolicyArn", &policy_arn)],
    );

    // --- from here on moto verifies every signature ---
    let aws = client(&moto, &id, &secret, None);

    // A wrong secret is rejected, with the service's code, and the secret is nowhere in the text.
    let bad = client(&moto, &id, "not-the-secret-at-all", None);
    let err = bad
        .query(Service::Rds, "DescribeDBInstances", &[])
        .expect_err("a wrong secret must be rejected");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err}");
    assert_eq!(err.status, Some(403));
    assert_eq!(err.kind, ErrorKind::Auth);
    let text = err.to_string();
    assert!(
        text.contains("RDS DescribeDBInstances") && text.contains("SignatureDoesNotMatch"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-secret-at-all"),
        "the secret leaked: {text}"
    );
    // An unknown key id is rejected too.
    let err = client(&moto, "AKIANOSUCHKEY0000000", &secret, None)
        .query(Service::Sts, "GetCallerIdentity", &[])
        .expect_err("an unknown key must be rejected");
    assert_eq!(err.code(), Some("InvalidClientTokenId"), "{err}");

    // STS GetCallerIdentity
    let me = aws.query(Service::Sts, "GetCallerIdentity", &[]).unwrap();
    assert_eq!(
        me.result().text_at(&["Arn"]),
        Some(format!("arn:aws:iam::{ACCOUNT}:user/dbtune").as_str())
    );
    assert_eq!(me.result().text_at(&["Account"]), Some(ACCOUNT));

    // RDS: a parameter group, an instance using it, an Aurora cluster.
    aws.query(
        Service::Rds,
        "CreateDBParameterGroup",
        &[
            p("DBParameterGroupName", "dbtune-pg"),
            p("DBParameterGroupFamily", "postgres16"),
            p("Description", "dbtune test"),
        ],
    )
    .unwrap();
    aws.query(
        Service::Rds,
        "CreateDBInstance",
        &[
            p("DBInstanceIdentifier", "dbtune-db"),
            p("DBInstanceClass", "db.m5.large"),
            p("Engine", "postgres"),
            p("AllocatedStorage", "20"),
            p("MasterUsername", "pgadmin"),
            p("MasterUserPassword", "pgpassword123"),
            p("DBParameterGroupName", "dbtune-pg"),
        ],
    )
    .unwrap();
    aws.query(
        Service::Rds,
        "CreateDBCluster",
        &[
            p("DBClusterIdentifier", "dbtune-cluster"),
            p("Engine", "aurora-postgresql"),
            p("MasterUsername", "pgadmin"),
            p("MasterUserPassword", "pgpassword123"),
        ],
    )
    .unwrap();

    // RDS DescribeDBInstances
    let r = aws
        .query(
            Service::Rds,
            "DescribeDBInstances",
            &[p("DBInstanceIdentifier", "dbtune-db")],
        )
        .unwrap();
    let inst = r
        .result()
        .path(&["DBInstances", "DBInstance"])
        .expect("one DBInstance");
    assert_eq!(inst.text_at(&["DBInstanceIdentifier"]), Some("dbtune-db"));
    assert_eq!(inst.text_at(&["DBInstanceClass"]), Some("db.m5.large"));
    assert_eq!(
        inst.text_at(&[
            "DBParameterGroups",
            "DBParameterGroup",
            "DBParameterGroupName"
        ]),
        Some("dbtune-pg")
    );
    assert!(r.request_id().is_some());
    // ... and a missing instance is the service's DBInstanceNotFound, not a decode error.
    let err = aws
        .query(
            Service::Rds,
            "DescribeDBInstances",
            &[p("DBInstanceIdentifier", "nope")],
        )
        .unwrap_err();
    assert_eq!(err.code(), Some("DBInstanceNotFound"), "{err}");
    assert_eq!(err.status, Some(404));

    // RDS DescribeDBClusters
    let r = aws
        .query(
            Service::Rds,
            "DescribeDBClusters",
            &[p("DBClusterIdentifier", "dbtune-cluster")],
        )
        .unwrap();
    let cl = r
        .result()
        .path(&["DBClusters", "DBCluster"])
        .expect("one DBCluster");
    assert_eq!(cl.text_at(&["DBClusterIdentifier"]), Some("dbtune-cluster"));
    assert_eq!(cl.text_at(&["Engine"]), Some("aurora-postgresql"));
    assert!(cl
        .text_at(&["DBClusterParameterGroup"])
        .is_some_and(|g| !g.is_empty()));

    // RDS ModifyDBParameterGroup (both apply methods in one call) then DescribeDBParameters.
    let mut params = vec![p("DBParameterGroupName", "dbtune-pg")];
    params.extend(list_params(
        "Parameters.Parameter",
        &[
            vec![
                ("ParameterName", "work_mem".into()),
                ("ParameterValue", "8192".into()),
                ("ApplyMethod", "immediate".into()),
            ],
            vec![
                ("ParameterName", "shared_buffers".into()),
                ("ParameterValue", "16384".into()),
                ("ApplyMethod", "pending-reboot".into()),
            ],
        ],
    ));
    let r = aws
        .query(Service::Rds, "ModifyDBParameterGroup", &params)
        .unwrap();
    assert_eq!(
        r.result().text_at(&["DBParameterGroupName"]),
        Some("dbtune-pg")
    );
    let r = aws
        .query(
            Service::Rds,
            "DescribeDBParameters",
            &[p("DBParameterGroupName", "dbtune-pg"), p("Source", "user")],
        )
        .unwrap();
    let got: Vec<(String, String)> = r
        .result()
        .path(&["Parameters"])
        .unwrap()
        .children_named("Parameter")
        .map(|e| {
            (
                e.text_at(&["ParameterName"]).unwrap().to_string(),
                e.text_at(&["ParameterValue"]).unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(got.contains(&("work_mem".into(), "8192".into())), "{got:?}");
    assert!(
        got.contains(&("shared_buffers".into(), "16384".into())),
        "{got:?}"
    );

    // RDS RebootDBInstance
    let r = aws
        .query(
            Service::Rds,
            "RebootDBInstance",
            &[p("DBInstanceIdentifier", "dbtune-db")],
        )
        .unwrap();
    assert_eq!(
        r.result().text_at(&["DBInstance", "DBInstanceIdentifier"]),
        Some("dbtune-db")
    );

    // EC2 DescribeInstanceTypes (EC2 answers without a Result wrapper)
    let r = aws
        .query(
            Service::Ec2,
            "DescribeInstanceTypes",
            &[p("InstanceType.1", "m5.large")],
        )
        .unwrap();
    let item = r
        .result()
        .path(&["instanceTypeSet", "item"])
        .expect("one instance type");
    assert_eq!(item.text_at(&["instanceType"]), Some("m5.large"));
    assert_eq!(item.text_at(&["vCpuInfo", "defaultVCpus"]), Some("2"));
    assert_eq!(item.text_at(&["memoryInfo", "sizeInMiB"]), Some("8192"));

    // CloudWatch PutMetricData then GetMetricStatistics
    let now = now_unix();
    let dim = |prefix: &str| {
        vec![
            p(
                &format!("{prefix}Dimensions.member.1.Name"),
                "DBInstanceIdentifier",
            ),
            p(&format!("{prefix}Dimensions.member.1.Value"), "dbtune-db"),
        ]
    };
    let mut put = vec![
        p("Namespace", "AWS/RDS"),
        p("MetricData.member.1.MetricName", "CPUUtilization"),
        p("MetricData.member.1.Value", "42.5"),
        p("MetricData.member.1.Unit", "Percent"),
        p("MetricData.member.1.Timestamp", &rfc3339(now - 30)),
    ];
    put.extend(dim("MetricData.member.1."));
    aws.query(Service::CloudWatch, "PutMetricData", &put)
        .unwrap();
    let mut get = vec![
        p("Namespace", "AWS/RDS"),
        p("MetricName", "CPUUtilization"),
        p("StartTime", &rfc3339(now - 300)),
        p("EndTime", &rfc3339(now + 60)),
        p("Period", "300"),
        p("Statistics.member.1", "Average"),
    ];
    get.extend(dim(""));
    let r = aws
        .query(Service::CloudWatch, "GetMetricStatistics", &get)
        .unwrap();
    let points: Vec<f64> = r
        .result()
        .path(&["Datapoints"])
        .unwrap()
        .children_named("member")
        .map(|m| m.text_at(&["Average"]).unwrap().parse().unwrap())
        .collect();
    assert_eq!(points, vec![42.5]);

    // STS AssumeRole, then a call signed with the temporary credentials (session token).
    let assumed = dbtune_agent::cloud::aws::credentials::assume_role_call(
        &aws.http,
        &aws.env,
        REGION,
        &aws.credentials.credentials().unwrap(),
        &[
            p(
                "RoleArn",
                &format!("arn:aws:iam::{ACCOUNT}:role/dbtune-role"),
            ),
            p("RoleSessionName", "dbtune-test"),
        ],
    )
    .unwrap();
    assert!(assumed.session_token.is_some() && assumed.expires_at.unwrap() > now);
    let temp = client(
        &moto,
        &assumed.access_key_id,
        assumed.secret_access_key.expose(),
        assumed.session_token.as_ref().map(|t| t.expose()),
    );
    let me = temp.query(Service::Sts, "GetCallerIdentity", &[]).unwrap();
    assert_eq!(
        me.result().text_at(&["Arn"]),
        Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/dbtune-role/dbtune-test").as_str())
    );
    // The same temporary key without its session token is refused.
    let err = client(
        &moto,
        &assumed.access_key_id,
        assumed.secret_access_key.expose(),
        None,
    )
    .query(Service::Sts, "GetCallerIdentity", &[])
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");

    // The credential chain: a profile with source_profile + role_arn assumes the role through STS.
    let dir = std::env::temp_dir().join(format!("dbtune-aws-profile-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("credentials"),
        format!("[base]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config"),
        format!("[profile tuned]\nrole_arn = arn:aws:iam::{ACCOUNT}:role/dbtune-role\nsource_profile = base\nrole_session_name = chain\n"),
    )
    .unwrap();
    let env = Env::from_pairs([
        ("AWS_ENDPOINT_URL", moto.url().as_str()),
        ("AWS_PROFILE", "tuned"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("credentials").to_str().unwrap(),
        ),
        ("AWS_CONFIG_FILE", dir.join("config").to_str().unwrap()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    let chained = Aws::new(Http::new(), env, REGION, StaticKeys::default());
    let me = chained
        .query(Service::Sts, "GetCallerIdentity", &[])
        .unwrap();
    assert_eq!(
        me.result().text_at(&["Arn"]),
        Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/dbtune-role/chain").as_str())
    );
    let c = chained.credentials.credentials().unwrap();
    assert_eq!(c.source, "profile tuned (assumed role)");
    // Cached: a second call returns the same temporary key.
    assert_eq!(
        chained.credentials.credentials().unwrap().access_key_id,
        c.access_key_id
    );

    // (Web identity is tested against a stand-in STS in cloud_aws_credentials.rs: moto
    // requires a signature even on AssumeRoleWithWebIdentity, which real STS does not.)
    let _ = std::fs::remove_dir_all(&dir);
}
