//! Build identity. `DBTUNE_VERSION`, `DBTUNE_COMMIT` and `DBTUNE_BUILD_DATE` are read at compile
//! time (set by the release build); the crate version, `unknown` and `unknown` otherwise.

pub const VERSION: &str = match option_env!("DBTUNE_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};
pub const COMMIT: &str = match option_env!("DBTUNE_COMMIT") {
    Some(v) => v,
    None => "unknown",
};
pub const BUILD_DATE: &str = match option_env!("DBTUNE_BUILD_DATE") {
    Some(v) => v,
    None => "unknown",
};

/// The `--version` line (the Go agent prints its Go runtime version last; we print the target).
pub fn long_version() -> String {
    format!(
        "dbtune-agent {VERSION} (commit: {COMMIT}, built: {BUILD_DATE}, rust: {}-{})",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// `User-Agent` for every HTTP request.
pub fn user_agent() -> String {
    format!("dbtune-agent/{VERSION}")
}
