//! dbtune-agent: the library behind the `dbtune-agent` binary.
//!
//! Code map (see ARCHITECTURE.md): `main` → `cli` + `config` → `runner` → `adapter` →
//! `collectors` / `metrics` / `pg` / `host` / `cloud`; everything sent goes through `platform`.

pub mod adapter;
pub mod alloc;
pub mod apply;
pub mod audit;
pub mod checks;
pub mod cli;
pub mod cloud;
pub mod collectors;
pub mod config;
pub mod error;
pub mod gojson;
pub mod host;
pub mod liveness;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pg;
pub mod platform;
pub mod resolver;
pub mod runner;
pub mod sdnotify;
pub mod secret;
pub mod status;
pub mod timefmt;
pub mod version;
