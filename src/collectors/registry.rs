//! The collector list, in build order (= stagger order, collectors.md §3.1).

use super::CollectorDef;

pub static REGISTRY: &[CollectorDef] = &[];
