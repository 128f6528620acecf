//! Name resolution for every ureq agent (platform and cloud calls).
//!
//! ureq's default resolver starts a thread for each request that has a timeout (all of ours do),
//! even when the host is an IP literal or the request then reuses a pooled connection: about
//! 130 threads a minute for a daemon that talks to one host. This one answers IP literals at
//! once and keeps a name's addresses for [`TTL`]; only a miss goes to the default resolver
//! (which honours the timeout). A failed lookup is not cached.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long resolved addresses are reused (DNS changes are seen within this time).
pub const TTL: Duration = Duration::from_secs(30);

/// Entries kept at most (the agent talks to a handful of hosts).
const MAX_ENTRIES: usize = 16;

/// An agent with `config`, ureq's own connector and this resolver.
pub fn agent(config: ureq::config::Config) -> ureq::Agent {
    ureq::Agent::with_parts(
        config,
        ureq::unversioned::transport::DefaultConnector::default(),
        CachingResolver::default(),
    )
}

#[derive(Debug, Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    cache: Mutex<Vec<(String, Instant, ResolvedSocketAddrs)>>,
}

fn port_of(uri: &Uri) -> Option<u16> {
    uri.port_u16().or(match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    })
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(host), Some(port)) = (uri.host(), port_of(uri)) else {
            return self.inner.resolve(uri, config, timeout);
        };
        // `[::1]` in a URI is the literal `::1`.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            let mut v = self.empty();
            v.push(SocketAddr::new(ip, port));
            return Ok(v);
        }
        let key = format!("{host}:{port}");
        let now = Instant::now();
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.retain(|(_, at, _)| now.duration_since(*at) < TTL);
            if let Some((_, _, addrs)) = c.iter().find(|(k, _, _)| *k == key) {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= MAX_ENTRIES {
            c.remove(0);
        }
        c.push((key, now, addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(r: &CachingResolver, url: &str) -> Vec<SocketAddr> {
        let uri: Uri = url.parse().unwrap();
        let cfg = ureq::config::Config::default();
        let t = NextTimeout {
            after: Duration::from_secs(5).into(),
            reason: ureq::Timeout::Resolve,
            ..NextTimeout::default()
        };
        r.resolve(&uri, &cfg, t).unwrap().iter().copied().collect()
    }

    #[test]
    fn literals_need_no_lookup_and_names_are_cached() {
        let r = CachingResolver::default();
        assert_eq!(
            resolve(&r, "http://127.0.0.1:8080/x"),
            vec!["127.0.0.1:8080".parse().unwrap()]
        );
        assert_eq!(
            resolve(&r, "https://[::1]/x"),
            vec!["[::1]:443".parse().unwrap()]
        );
        assert!(r.cache.lock().unwrap().is_empty());
        let first = resolve(&r, "http://localhost:9/");
        assert!(!first.is_empty());
        assert_eq!(r.cache.lock().unwrap().len(), 1);
        assert_eq!(resolve(&r, "http://localhost:9/other"), first);
        assert_eq!(r.cache.lock().unwrap().len(), 1);
    }
}
