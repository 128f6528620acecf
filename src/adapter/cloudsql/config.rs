//! The `cloudsql:` section and its `DBT_GCP_*` variables (adapters.md §2.1), plus the API base
//! URLs for private endpoints and tests.

use crate::config::keys::Keys;
use crate::config::Sources;

pub const SQLADMIN_URL: &str = "https://sqladmin.googleapis.com";
pub const MONITORING_URL: &str = "https://monitoring.googleapis.com";

/// The keys read below (`config::keys`); the `dbt_gcp_*` spellings are the Go agent's
/// documentation sample, the misspelt variable its detection key.
pub const KEYS: Keys = Keys {
    section: "cloudsql",
    file: &[
        "project_id",
        "dbt_gcp_project_id",
        "database_name",
        "dbt_gcp_database_name",
        "sqladmin_url",
        "monitoring_url",
    ],
    env: &[
        "DBT_GCP_PROJECT_ID",
        "DBT_GCP_DATABASE_NAME",
        "DBT_GCP_DATABSE_NAME",
        "DBT_GCP_SQLADMIN_URL",
        "DBT_GCP_MONITORING_URL",
    ],
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudSqlConfig {
    pub project_id: String,
    /// The Cloud SQL instance name (the Go agent calls it `database_name`).
    pub instance: String,
    pub sqladmin_url: String,
    pub monitoring_url: String,
}

impl CloudSqlConfig {
    pub fn from_sources(src: &Sources) -> Result<CloudSqlConfig, String> {
        let mut errs = Vec::new();
        // The code's keys, else the ones the Go documentation's sample uses inside the section.
        let mut get = |keys: &[&str], env: &str| -> Option<String> {
            for (i, k) in keys.iter().enumerate() {
                match src.string(&["cloudsql", k], (i == 0).then_some(env)) {
                    Ok(Some(v)) => return Some(v),
                    Ok(None) => {}
                    Err(e) => errs.push(e),
                }
            }
            None
        };
        let project_id = get(&["project_id", "dbt_gcp_project_id"], "DBT_GCP_PROJECT_ID");
        let instance = get(
            &["database_name", "dbt_gcp_database_name"],
            "DBT_GCP_DATABASE_NAME",
        );
        let sqladmin_url = get(&["sqladmin_url"], "DBT_GCP_SQLADMIN_URL");
        let monitoring_url = get(&["monitoring_url"], "DBT_GCP_MONITORING_URL");
        if project_id.is_none() {
            errs.push("cloudsql.project_id (DBT_GCP_PROJECT_ID) is required".into());
        }
        if instance.is_none() {
            errs.push(
                "cloudsql.database_name (DBT_GCP_DATABASE_NAME) is required: the Cloud SQL instance name"
                    .into(),
            );
        }
        for (k, v) in [
            ("cloudsql.sqladmin_url", &sqladmin_url),
            ("cloudsql.monitoring_url", &monitoring_url),
        ] {
            if let Some(u) = v {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    errs.push(format!("{k}: expected an http(s) URL, got {u:?}"));
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs.join("; "));
        }
        let trim = |u: Option<String>, d: &str| {
            u.unwrap_or_else(|| d.to_string())
                .trim_end_matches('/')
                .to_string()
        };
        Ok(CloudSqlConfig {
            project_id: project_id.unwrap_or_default(),
            instance: instance.unwrap_or_default(),
            sqladmin_url: trim(sqladmin_url, SQLADMIN_URL),
            monitoring_url: trim(monitoring_url, MONITORING_URL),
        })
    }

    /// `database_id` label of the `cloudsql_database` monitored resource.
    pub fn database_id(&self) -> String {
        format!("{}:{}", self.project_id, self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn keys_env_and_doc_sample_keys() {
        let s = Sources::from_yaml(
            "cloudsql:\n  DBT_GCP_PROJECT_ID: p\n  database_name: i\n  sqladmin_url: http://127.0.0.1:9/\n",
            Env::default(),
        )
        .unwrap();
        let c = CloudSqlConfig::from_sources(&s).unwrap();
        assert_eq!((c.project_id.as_str(), c.instance.as_str()), ("p", "i"));
        assert_eq!(c.sqladmin_url, "http://127.0.0.1:9");
        assert_eq!(c.monitoring_url, MONITORING_URL);
        assert_eq!(c.database_id(), "p:i");
        let s = Sources::from_yaml(
            "cloudsql:\n  project_id: p\n",
            Env::from_pairs([("DBT_GCP_DATABASE_NAME", "env-i")]),
        )
        .unwrap();
        assert_eq!(CloudSqlConfig::from_sources(&s).unwrap().instance, "env-i");
        let e = CloudSqlConfig::from_sources(&Sources::default()).unwrap_err();
        assert!(
            e.contains("DBT_GCP_PROJECT_ID") && e.contains("DBT_GCP_DATABASE_NAME"),
            "{e}"
        );
        let s = Sources::from_yaml(
            "cloudsql:\n  project_id: p\n  database_name: i\n  monitoring_url: ftp://x\n",
            Env::default(),
        )
        .unwrap();
        assert!(CloudSqlConfig::from_sources(&s)
            .unwrap_err()
            .contains("cloudsql.monitoring_url"));
    }
}
