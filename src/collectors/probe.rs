//! Capability probe: what this server offers (version now; views, functions, columns and
//! extension versions are added by the collectors work). Run at start and after reconnects.

use super::ServerInfo;
use crate::error::Result;
use crate::pg::Pg;

pub fn probe(pg: &Pg) -> Result<ServerInfo> {
    let mut c = pg.conn()?;
    let version = crate::pg::queries::server_version(&mut c)?;
    Ok(ServerInfo {
        version: Some(version),
        caps: Default::default(),
    })
}
