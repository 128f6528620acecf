//! Cloud access layer: hand-signed REST calls to AWS, Google Cloud, Azure, the Kubernetes API
//! and the Docker Engine, without vendor SDKs and without an async runtime.
//!
//! Layout: `http` (the shared blocking client: timeouts, retries, typed errors), `xml` (a tiny
//! DOM for query-protocol responses), `crypto` / `encoding` / `time` (primitives from `ring`),
//! then one folder per vendor. Nothing here knows about adapters: each adapter only decides
//! which calls to make and which fields to read.

pub mod aws;
pub mod azure;
pub mod crypto;
pub mod docker;
pub mod encoding;
pub mod gcp;
pub mod http;
pub mod k8s;
pub mod time;
pub mod xml;

pub use http::{CloudError, ErrorKind, Http, Request, Response};

/// Result of every call in this layer; converts into the crate's error with `?`.
pub type Result<T> = std::result::Result<T, CloudError>;

/// The environment as the layer sees it (empty variables count as unset). Passed explicitly so
/// tests never have to mutate the process environment.
pub use crate::config::sources::Env;
