//! Service endpoints: `https://{prefix}.{region}.amazonaws.com` (`.amazonaws.com.cn` in China
//! regions), overridable with the standard `AWS_ENDPOINT_URL_<SERVICE>` and `AWS_ENDPOINT_URL`
//! variables (ignored when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`).

use crate::cloud::Env;

/// The AWS services this layer talks to: identifiers, signing names and protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Rds,
    Ec2,
    CloudWatch,
    Sts,
    /// Performance Insights.
    Pi,
}

impl Service {
    /// The service id as used in `AWS_ENDPOINT_URL_<ID>` (upper case, spaces → `_`).
    pub fn env_id(self) -> &'static str {
        match self {
            Service::Rds => "RDS",
            Service::Ec2 => "EC2",
            Service::CloudWatch => "CLOUDWATCH",
            Service::Sts => "STS",
            Service::Pi => "PI",
        }
    }
    /// SigV4 signing name, also the host prefix.
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::Rds => "rds",
            Service::Ec2 => "ec2",
            Service::CloudWatch => "monitoring",
            Service::Sts => "sts",
            Service::Pi => "pi",
        }
    }
    /// Query-protocol API version (`None` for JSON services).
    pub fn query_version(self) -> Option<&'static str> {
        match self {
            Service::Rds => Some("2014-10-31"),
            Service::Ec2 => Some("2016-11-15"),
            Service::CloudWatch => Some("2010-08-01"),
            Service::Sts => Some("2011-06-15"),
            Service::Pi => None,
        }
    }
    pub fn display(self) -> &'static str {
        match self {
            Service::Rds => "RDS",
            Service::Ec2 => "EC2",
            Service::CloudWatch => "CloudWatch",
            Service::Sts => "STS",
            Service::Pi => "Performance Insights",
        }
    }
}

/// DNS suffix of the region's partition.
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

/// Base URL (no trailing slash) for `service` in `region`.
pub fn endpoint(env: &Env, service: Service, region: &str) -> String {
    let ignore = env
        .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !ignore {
        let specific = format!("AWS_ENDPOINT_URL_{}", service.env_id());
        if let Some(u) = env.get(&specific).or_else(|| env.get("AWS_ENDPOINT_URL")) {
            return u.trim_end_matches('/').to_string();
        }
    }
    format!(
        "https://{}.{region}.{}",
        service.signing_name(),
        dns_suffix(region)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_china_and_overridden_endpoints() {
        let env = Env::default();
        assert_eq!(
            endpoint(&env, Service::Rds, "eu-west-1"),
            "https://rds.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint(&env, Service::CloudWatch, "cn-north-1"),
            "https://monitoring.cn-north-1.amazonaws.com.cn"
        );
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"),
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:2"),
        ]);
        assert_eq!(
            endpoint(&env, Service::Ec2, "us-east-1"),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            endpoint(&env, Service::Sts, "us-east-1"),
            "http://127.0.0.1:2"
        );
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL", "http://x"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]);
        assert_eq!(
            endpoint(&env, Service::Pi, "us-east-1"),
            "https://pi.us-east-1.amazonaws.com"
        );
    }
}
