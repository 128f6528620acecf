//! The `rds` / `rds-aurora` configuration section (adapters.md §1.1): region and instance
//! identifier required, static keys optional (`DBT_AWS_*`, then plain `AWS_*`; the session token
//! is honoured, unlike the Go agent), `rds.iam_auth` for password-less PostgreSQL logins. The
//! deprecated `RDS_PARAMETER_GROUP_NAME` is warned about and ignored: the group is discovered.

use crate::cloud::aws::StaticKeys;
use crate::config::keys::Keys;
use crate::config::Sources;
use crate::secret::Secret;

/// The keys read below, for `rds:` and `rds-aurora:` (`config::keys`).
pub const KEYS: Keys = Keys {
    section: "rds",
    file: &[
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region",
        "rds_database_identifier",
        "rds_parameter_group_name",
        "iam_auth",
    ],
    env: &[
        "DBT_AWS_ACCESS_KEY_ID",
        "DBT_AWS_SECRET_ACCESS_KEY",
        "DBT_AWS_SESSION_TOKEN",
        "DBT_AWS_REGION",
        "DBT_RDS_DATABASE_IDENTIFIER",
        "DBT_RDS_PARAMETER_GROUP_NAME",
        "DBT_RDS_IAM_AUTH",
    ],
};

pub const KEYS_AURORA: Keys = Keys {
    section: "rds-aurora",
    ..KEYS
};

#[derive(Clone, Debug)]
pub struct RdsConfig {
    /// `rds` or `rds-aurora`: named in error messages.
    pub section: &'static str,
    pub region: String,
    /// The DB instance identifier (Aurora: the writer instance or the cluster).
    pub database_identifier: String,
    pub keys: StaticKeys,
    /// Every new PostgreSQL connection logs in with an RDS IAM auth token.
    pub iam_auth: bool,
    /// Set when the deprecated parameter-group key was given (it is ignored).
    pub deprecated_group: Option<String>,
}

/// First non-empty of: the section's key, then each variable in order.
fn string(
    src: &Sources,
    section: Option<&str>,
    key: &str,
    vars: &[&str],
) -> Result<Option<String>, String> {
    for v in vars {
        if let Some(x) = src.env.get(v).map(str::trim).filter(|x| !x.is_empty()) {
            return Ok(Some(x.to_string()));
        }
    }
    match section {
        Some(s) => src.string(&[s, key], None),
        None => Ok(None),
    }
}

impl RdsConfig {
    /// `aurora` selects the `rds-aurora` section. With `--aurora` the `rds:` section is not read
    /// (and vice versa): only the adapter's own section and the environment count.
    pub fn from_sources(src: &Sources, aurora: bool) -> Result<RdsConfig, String> {
        let name = if aurora { "rds-aurora" } else { "rds" };
        // A present but empty section counts as absent (viper's Sub).
        let section = src.is_map(&[name]).then_some(name);
        let mut errs = Vec::new();
        let mut get = |key: &str, vars: &[&str]| match string(src, section, key, vars) {
            Ok(v) => v,
            Err(e) => {
                errs.push(e);
                None
            }
        };
        // Environment first (viper: a bound variable overrides the file), as the Go agent.
        let access_key_id = get(
            "aws_access_key_id",
            &["DBT_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"],
        );
        let secret = get(
            "aws_secret_access_key",
            &["DBT_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"],
        );
        let token = get(
            "aws_session_token",
            &["DBT_AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"],
        );
        let region = get("aws_region", &["DBT_AWS_REGION", "AWS_REGION"]);
        let id = get("rds_database_identifier", &["DBT_RDS_DATABASE_IDENTIFIER"]);
        let deprecated_group = get(
            "rds_parameter_group_name",
            &["DBT_RDS_PARAMETER_GROUP_NAME"],
        );
        let iam_auth = match src.bool(&[name, "iam_auth"], Some("DBT_RDS_IAM_AUTH"), false) {
            Ok(b) => b,
            Err(e) => {
                errs.push(e);
                false
            }
        };
        if region.is_none() {
            errs.push(format!(
                "{name}.AWS_REGION (DBT_AWS_REGION or AWS_REGION) is required: the AWS region of the database, e.g. us-east-1"
            ));
        }
        if id.is_none() {
            errs.push(format!(
                "{name}.RDS_DATABASE_IDENTIFIER (DBT_RDS_DATABASE_IDENTIFIER) is required: the DB instance identifier{}",
                if aurora { " (the writer instance, or the cluster identifier)" } else { "" }
            ));
        }
        if !errs.is_empty() {
            return Err(errs.join("; "));
        }
        // Only one of key / secret: the credential chain reports which one is missing.
        Ok(RdsConfig {
            section: name,
            region: region.unwrap_or_default(),
            database_identifier: id.unwrap_or_default(),
            keys: StaticKeys {
                access_key_id,
                secret_access_key: secret.map(Secret::new),
                session_token: token.map(Secret::new),
            },
            iam_auth,
            deprecated_group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn src(yaml: &str, env: &[(&str, &str)]) -> Sources {
        Sources::from_yaml(yaml, Env::from_pairs(env.iter().copied())).unwrap()
    }

    #[test]
    fn section_keys_env_overrides_and_plain_aws_fallbacks() {
        let s = src(
            "rds:\n  AWS_REGION: eu-west-1\n  RDS_DATABASE_IDENTIFIER: db1\n  AWS_ACCESS_KEY_ID: AKIDFILE\n  AWS_SECRET_ACCESS_KEY: file-secret\n",
            &[("DBT_AWS_REGION", "us-east-2"), ("AWS_SESSION_TOKEN", "tok")],
        );
        let c = RdsConfig::from_sources(&s, false).unwrap();
        assert_eq!(c.region, "us-east-2");
        assert_eq!(c.database_identifier, "db1");
        assert_eq!(c.keys.access_key_id.as_deref(), Some("AKIDFILE"));
        assert_eq!(c.keys.session_token.as_ref().unwrap().expose(), "tok");
        assert!(!c.iam_auth);
        let s = src(
            "",
            &[
                ("AWS_REGION", "us-east-1"),
                ("DBT_RDS_DATABASE_IDENTIFIER", "db2"),
                ("AWS_ACCESS_KEY_ID", "AKIDPLAIN"),
                ("DBT_RDS_PARAMETER_GROUP_NAME", "old"),
                ("DBT_RDS_IAM_AUTH", "true"),
            ],
        );
        let c = RdsConfig::from_sources(&s, false).unwrap();
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.keys.access_key_id.as_deref(), Some("AKIDPLAIN"));
        assert_eq!(c.deprecated_group.as_deref(), Some("old"));
        assert!(c.iam_auth);
    }

    #[test]
    fn aurora_reads_its_own_section_only_and_names_missing_fields() {
        let s = src(
            "rds:\n  AWS_REGION: eu-west-1\n  RDS_DATABASE_IDENTIFIER: db1\n",
            &[],
        );
        let e = RdsConfig::from_sources(&s, true).unwrap_err();
        assert!(e.contains("rds-aurora.AWS_REGION"), "{e}");
        assert!(e.contains("rds-aurora.RDS_DATABASE_IDENTIFIER"), "{e}");
        let s = src(
            "rds-aurora:\n  aws_region: eu-west-1\n  rds_database_identifier: cl1\n  iam_auth: yes-please\n",
            &[],
        );
        let e = RdsConfig::from_sources(&s, true).unwrap_err();
        assert!(e.contains("iam_auth"), "{e}");
    }
}
