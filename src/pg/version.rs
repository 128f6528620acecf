//! Server version from `version()`: `PostgreSQL 16.4 (...)` → 16.4. Never panics: development
//! and beta builds (`18beta1`, `17devel`, `16rc1`) give their major with minor 0.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
}

impl ServerVersion {
    /// The wire form of `pg_version` (`"16.4"`).
    pub fn wire(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// Parses the text of `SELECT version()`.
    pub fn parse(version_text: &str) -> Option<ServerVersion> {
        let mut rest = version_text;
        while let Some(i) = rest.find("PostgreSQL ") {
            let after = &rest[i + "PostgreSQL ".len()..];
            let major_len = after.bytes().take_while(u8::is_ascii_digit).count();
            if major_len > 0 {
                let major: u32 = after[..major_len].parse().ok()?;
                let tail = &after[major_len..];
                let minor = tail
                    .strip_prefix('.')
                    .map(|t| {
                        let n = t.bytes().take_while(u8::is_ascii_digit).count();
                        t[..n].parse().unwrap_or(0)
                    })
                    .unwrap_or(0);
                return Some(ServerVersion { major, minor });
            }
            rest = after;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_beta_and_devel() {
        let v = |s| ServerVersion::parse(s).map(|v| v.wire());
        assert_eq!(
            v("PostgreSQL 16.4 (Debian 16.4-1.pgdg120+1) on x86_64"),
            Some("16.4".into())
        );
        assert_eq!(
            v("PostgreSQL 18beta1 on x86_64-pc-linux-gnu"),
            Some("18.0".into())
        );
        assert_eq!(v("PostgreSQL 17devel"), Some("17.0".into()));
        assert_eq!(v("PostgreSQL 9.6.24"), Some("9.6".into()));
        assert_eq!(v("EnterpriseDB"), None);
        assert_eq!(v("PostgreSQL x PostgreSQL 15.2"), Some("15.2".into()));
    }
}
