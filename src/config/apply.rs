//! The `apply:` section: local policy for configuration changes (allow/deny lists, freeze,
//! restart budget, maintenance window). Built out by the "Safe configuration changes" issue.

use super::Sources;

#[derive(Clone, Debug, Default)]
pub struct ApplyConfig {
    /// Parameters the operator explicitly allows although the default policy refuses them.
    pub allow: Vec<String>,
    /// Parameters never applied.
    pub deny: Vec<String>,
    /// Nothing is applied while frozen.
    pub frozen: bool,
}

impl ApplyConfig {
    pub fn from_sources(src: &Sources) -> Result<ApplyConfig, String> {
        Ok(ApplyConfig {
            allow: src.string_list(&["apply", "allow"], Some("DBT_APPLY_ALLOW"))?,
            deny: src.string_list(&["apply", "deny"], Some("DBT_APPLY_DENY"))?,
            frozen: src.bool(&["apply", "frozen"], Some("DBT_APPLY_FROZEN"), false)?,
        })
    }
}
