//! What Aurora changes in the RDS adapter: two catalog collectors whose backing functions raise
//! "not supported in Aurora" are forced off, the identifier may name the cluster (its writer is
//! used), and parameters that exist only at cluster level go to the cluster parameter group.

use super::api::{Api, Instance};
use crate::cloud::{CloudError, ErrorKind};

/// `pg_stat_wal` and `pg_stat_wal_receiver` fail on Aurora.
pub const FORCED_OFF: &[&str] = &["pg_stat_wal", "pg_stat_wal_receiver"];

/// The writer instance of cluster `id`.
pub fn writer_of_cluster(api: &Api, id: &str) -> Result<Instance, CloudError> {
    let c = api.describe_cluster(id)?;
    let writer = c
        .members
        .iter()
        .find(|(_, w, _)| *w)
        .map(|(i, _, _)| i.clone())
        .ok_or_else(|| {
            CloudError::new(
                ErrorKind::Service,
                format!("RDS DescribeDBClusters {id}"),
                "the cluster has no writer instance (DBClusterMembers without IsClusterWriter=true)",
            )
        })?;
    log::info!("{id} is an Aurora cluster; using its writer instance {writer}");
    api.describe_instance(&writer)
}
