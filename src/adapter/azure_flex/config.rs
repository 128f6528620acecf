//! The `azure_flex:` section and its `DBT_AZURE_FLEX_*` variables (adapters.md §3.1), plus
//! the Resource Manager base URL for sovereign clouds, private endpoints and tests.

use crate::config::keys::Keys;
use crate::config::Sources;

pub const ARM_URL: &str = "https://management.azure.com";

/// The keys read below (`config::keys`).
pub const KEYS: Keys = Keys {
    section: "azure_flex",
    file: &[
        "subscription_id",
        "resource_group_name",
        "server_name",
        "auth_method",
        "arm_url",
    ],
    env: &[
        "DBT_AZURE_FLEX_SUBSCRIPTION_ID",
        "DBT_AZURE_FLEX_RESOURCE_GROUP_NAME",
        "DBT_AZURE_FLEX_SERVER_NAME",
        "DBT_AZURE_FLEX_AUTH_METHOD",
        "DBT_AZURE_FLEX_ARM_URL",
    ],
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureFlexConfig {
    pub subscription_id: String,
    pub resource_group_name: String,
    pub server_name: String,
    /// `entra`: PostgreSQL passwords are Entra tokens; anything else: the URL's password.
    pub entra: bool,
    pub arm_url: String,
}

impl AzureFlexConfig {
    pub fn from_sources(src: &Sources) -> Result<AzureFlexConfig, String> {
        let mut errs = Vec::new();
        let mut get = |k: &str, env: &str, required: bool| -> String {
            match src.string(&["azure_flex", k], Some(env)) {
                Ok(Some(v)) => v,
                Ok(None) => {
                    if required {
                        errs.push(format!("azure_flex.{k} ({env}) is required"));
                    }
                    String::new()
                }
                Err(e) => {
                    errs.push(e);
                    String::new()
                }
            }
        };
        let subscription_id = get("subscription_id", "DBT_AZURE_FLEX_SUBSCRIPTION_ID", true);
        let resource_group_name = get(
            "resource_group_name",
            "DBT_AZURE_FLEX_RESOURCE_GROUP_NAME",
            true,
        );
        let server_name = get("server_name", "DBT_AZURE_FLEX_SERVER_NAME", true);
        let auth_method = get("auth_method", "DBT_AZURE_FLEX_AUTH_METHOD", false);
        let arm_url = get("arm_url", "DBT_AZURE_FLEX_ARM_URL", false);
        let is_url = arm_url.starts_with("https://") || arm_url.starts_with("http://");
        if !(arm_url.is_empty() || is_url) {
            errs.push(format!(
                "azure_flex.arm_url (DBT_AZURE_FLEX_ARM_URL): expected an http(s) URL, got {:?}",
                crate::secret::url::mask(&arm_url)
            ));
        }
        if !errs.is_empty() {
            return Err(errs.join("; "));
        }
        Ok(AzureFlexConfig {
            subscription_id,
            resource_group_name,
            server_name,
            entra: auth_method.eq_ignore_ascii_case("entra"),
            arm_url: if arm_url.is_empty() {
                ARM_URL.into()
            } else {
                arm_url.trim_end_matches('/').to_string()
            },
        })
    }

    /// The server's ARM resource id.
    pub fn resource_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{}",
            self.subscription_id, self.resource_group_name, self.server_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    #[test]
    fn required_keys_env_and_url() {
        let e = AzureFlexConfig::from_sources(&Sources::default()).unwrap_err();
        assert!(
            e.contains("DBT_AZURE_FLEX_SUBSCRIPTION_ID")
                && e.contains("DBT_AZURE_FLEX_SERVER_NAME"),
            "{e}"
        );
        let s = Sources::from_yaml(
            "azure_flex:\n  subscription_id: s\n  resource_group_name: rg\n  auth_method: Entra\n",
            Env::from_pairs([
                ("DBT_AZURE_FLEX_SERVER_NAME", "pg1"),
                ("DBT_AZURE_FLEX_ARM_URL", "http://127.0.0.1:1/"),
            ]),
        )
        .unwrap();
        let c = AzureFlexConfig::from_sources(&s).unwrap();
        assert!(c.entra);
        assert_eq!(c.arm_url, "http://127.0.0.1:1");
        assert_eq!(
            c.resource_id(),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg1"
        );
    }
}
