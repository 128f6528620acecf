//! Which adapter to run: an explicit flag (fixed precedence), else environment detection, else
//! config-file sections, else the self-managed adapter (protocol.md §1.2–§1.3).

use crate::config::{Env, Sources};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Docker,
    Rds,
    Aurora,
    Aiven,
    CloudSql,
    Local,
    Cnpg,
    Patroni,
    AzureFlex,
}

impl Provider {
    pub fn flag(self) -> &'static str {
        match self {
            Provider::Docker => "--docker",
            Provider::Rds => "--rds",
            Provider::Aurora => "--aurora",
            Provider::Aiven => "--aiven",
            Provider::CloudSql => "--cloudsql",
            Provider::Local => "--local",
            Provider::Cnpg => "--cnpg",
            Provider::Patroni => "--patroni",
            Provider::AzureFlex => "--azure-flex",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Provider::Docker => "Docker",
            Provider::Rds => "AWS RDS",
            Provider::Aurora => "AWS Aurora",
            Provider::Aiven => "Aiven",
            Provider::CloudSql => "Google Cloud SQL",
            Provider::Local => "self-managed PostgreSQL",
            Provider::Cnpg => "CloudNativePG",
            Provider::Patroni => "Patroni",
            Provider::AzureFlex => "Azure Flexible Server",
        }
    }
}

/// Precedence when several flags are given.
pub const PRECEDENCE: [Provider; 9] = [
    Provider::Docker,
    Provider::Rds,
    Provider::Aurora,
    Provider::Aiven,
    Provider::CloudSql,
    Provider::Local,
    Provider::Cnpg,
    Provider::Patroni,
    Provider::AzureFlex,
];

pub fn from_flags(flags: &[Provider]) -> Option<Provider> {
    PRECEDENCE.iter().copied().find(|p| flags.contains(p))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Detected {
    Provider(Provider),
    /// AWS variables without `--rds`/`--aurora`: fatal.
    AmbiguousAws,
}

/// Auto-detection: environment first, then config sections, else local.
pub fn detect(env: &Env, src: &Sources) -> Detected {
    let any = |vars: &[&str]| vars.iter().any(|v| env.get(v).is_some());
    if any(&[
        "DBT_AIVEN_API_TOKEN",
        "DBT_AIVEN_PROJECT_NAME",
        "DBT_AIVEN_SERVICE_NAME",
    ]) {
        return Detected::Provider(Provider::Aiven);
    }
    if any(&[
        "DBT_AZURE_FLEX_SUBSCRIPTION_ID",
        "DBT_AZURE_FLEX_RESOURCE_GROUP_NAME",
        "DBT_AZURE_FLEX_SERVER_NAME",
    ]) {
        return Detected::Provider(Provider::AzureFlex);
    }
    if any(&["DBT_DOCKER_CONTAINER_NAME"]) {
        return Detected::Provider(Provider::Docker);
    }
    if any(&[
        "DBT_RDS_DATABASE_IDENTIFIER",
        "DBT_AWS_ACCESS_KEY_ID",
        "DBT_AWS_SECRET_ACCESS_KEY",
        "DBT_AWS_REGION",
    ]) {
        return Detected::AmbiguousAws;
    }
    // The Go agent checks the misspelled DBT_GCP_DATABSE_NAME; the real name counts here (the
    // misspelling is still accepted so existing deployments keep detecting).
    if any(&[
        "DBT_GCP_PROJECT_ID",
        "DBT_GCP_DATABASE_NAME",
        "DBT_GCP_DATABSE_NAME",
    ]) {
        return Detected::Provider(Provider::CloudSql);
    }
    if any(&[
        "DBT_CNPG_KUBECONFIG_PATH",
        "DBT_CNPG_NAMESPACE",
        "DBT_CNPG_POD_NAME",
        "DBT_CNPG_CONTAINER_NAME",
    ]) {
        return Detected::Provider(Provider::Cnpg);
    }
    if any(&[
        "DBT_PATRONI_NODE_NAME",
        "DBT_PATRONI_API_URL",
        "DBT_PATRONI_NODE_HOST",
    ]) {
        return Detected::Provider(Provider::Patroni);
    }
    for (section, p) in [
        ("aiven", Provider::Aiven),
        ("azure_flex", Provider::AzureFlex),
        ("docker", Provider::Docker),
        ("rds", Provider::Rds),
        ("rds-aurora", Provider::Aurora),
        ("cloudsql", Provider::CloudSql),
        ("cnpg", Provider::Cnpg),
        ("patroni", Provider::Patroni),
    ] {
        if src.is_map(&[section]) {
            return Detected::Provider(p);
        }
    }
    Detected::Provider(Provider::Local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_detection() {
        assert_eq!(
            from_flags(&[Provider::Local, Provider::Docker]),
            Some(Provider::Docker)
        );
        assert_eq!(
            from_flags(&[Provider::Patroni, Provider::Local]),
            Some(Provider::Local)
        );
        let env = Env::from_pairs([("DBT_AWS_REGION", "eu-west-1")]);
        assert_eq!(detect(&env, &Sources::default()), Detected::AmbiguousAws);
        let src = Sources::from_yaml("docker:\n  container_name: pg\n", Env::default()).unwrap();
        assert_eq!(
            detect(&Env::default(), &src),
            Detected::Provider(Provider::Docker)
        );
        let src = Sources::from_yaml("docker: ''\n", Env::default()).unwrap();
        assert_eq!(
            detect(&Env::default(), &src),
            Detected::Provider(Provider::Local)
        );
        // The correctly spelled Cloud SQL variable detects (the Go agent's typo did not).
        let env = Env::from_pairs([("DBT_GCP_DATABASE_NAME", "pg-main")]);
        assert_eq!(
            detect(&env, &Sources::default()),
            Detected::Provider(Provider::CloudSql)
        );
        let env = Env::from_pairs([("DBT_DOCKER_CONTAINER_NAME", "")]);
        assert_eq!(
            detect(&env, &Sources::default()),
            Detected::Provider(Provider::Local)
        );
    }
}
