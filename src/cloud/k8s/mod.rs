//! Kubernetes API access without client-go: configuration ([`config`]), calls ([`client`]) and
//! resource quantities ([`quantity`]).

pub mod client;
pub mod config;
pub mod quantity;

pub use client::Kube;
pub use config::KubeConfig;
pub use quantity::Quantity;
