//! The `docker:` section (adapters.md §7.1): which container runs PostgreSQL.

use crate::config::keys::Keys;
use crate::config::Sources;

/// The keys read below (`config::keys`).
pub const KEYS: Keys = Keys {
    section: "docker",
    file: &["container_name", "stop_timeout"],
    env: &["DBT_DOCKER_CONTAINER_NAME", "DBT_DOCKER_STOP_TIMEOUT"],
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerConfig {
    /// Container name or ID.
    pub container_name: String,
    /// Seconds the daemon waits for PostgreSQL to stop on a restart before it kills it.
    pub stop_timeout: u64,
}

impl DockerConfig {
    pub fn from_sources(src: &Sources) -> Result<DockerConfig, String> {
        let container_name = src
            .string(
                &["docker", "container_name"],
                Some("DBT_DOCKER_CONTAINER_NAME"),
            )?
            .ok_or_else(|| {
                "docker.container_name (DBT_DOCKER_CONTAINER_NAME) is required: the name or ID of the container running PostgreSQL".to_string()
            })?;
        let stop_timeout = src.int(
            &["docker", "stop_timeout"],
            Some("DBT_DOCKER_STOP_TIMEOUT"),
            30,
        )?;
        if !(1..=600).contains(&stop_timeout) {
            return Err(format!(
                "docker.stop_timeout (DBT_DOCKER_STOP_TIMEOUT): {stop_timeout} is out of range (expected 1 to 600 seconds)"
            ));
        }
        Ok(DockerConfig {
            container_name,
            stop_timeout: stop_timeout as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn env_wins_and_the_name_is_required() {
        let s = Sources::from_yaml("docker:\n  container_name: pg\n", Env::default()).unwrap();
        assert_eq!(DockerConfig::from_sources(&s).unwrap().container_name, "pg");
        assert_eq!(DockerConfig::from_sources(&s).unwrap().stop_timeout, 30);
        let s = Sources::from_yaml(
            "docker:\n  container_name: pg\n",
            Env::from_pairs([
                ("DBT_DOCKER_CONTAINER_NAME", "other"),
                ("DBT_DOCKER_STOP_TIMEOUT", "5"),
            ]),
        )
        .unwrap();
        let c = DockerConfig::from_sources(&s).unwrap();
        assert_eq!((c.container_name.as_str(), c.stop_timeout), ("other", 5));
        let s = Sources::from_yaml("docker: {}\n", Env::default()).unwrap();
        let e = DockerConfig::from_sources(&s).unwrap_err();
        assert!(e.contains("DBT_DOCKER_CONTAINER_NAME) is required"), "{e}");
        let s = Sources::from_yaml(
            "docker:\n  container_name: pg\n  stop_timeout: 0\n",
            Env::default(),
        )
        .unwrap();
        assert!(DockerConfig::from_sources(&s)
            .unwrap_err()
            .contains("out of range"));
    }
}
