//! `ddl` (collectors.md §3.5): schema dump. (Being written.)

use super::{CatalogCollector, CollectCtx};
use crate::error::{Error, Result};
use serde_json::Value;

#[derive(Default)]
pub struct Ddl {}

impl CatalogCollector for Ddl {
    fn collect(&mut self, _ctx: &CollectCtx<'_>) -> Result<Option<Value>> {
        Err(Error::other("ddl collector not implemented yet"))
    }
}
