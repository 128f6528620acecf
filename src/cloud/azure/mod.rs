//! Azure: Entra tokens ([`auth`]) and Resource Manager calls with long-running-operation
//! polling ([`arm`]).

pub mod arm;
pub mod auth;

pub use arm::{Arm, LroOutcome};
pub use auth::{Credential, TokenProvider, ARM_SCOPE, POSTGRES_SCOPE};
