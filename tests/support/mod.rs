//! Shared test harness: real PostgreSQL clusters and a platform stand-in on loopback.
#![allow(dead_code)]

pub mod agent;
pub mod aiven;
pub mod apply;
pub mod azure;
pub mod cloud;
pub mod cloudsql;
pub mod cnpg_api;
pub mod docker;
pub mod k8s_schema;
pub mod patroni;
pub mod pgcluster;
pub mod pgversions;
pub mod platform;
pub mod rds_fault_front;
pub mod rds_mirror;
