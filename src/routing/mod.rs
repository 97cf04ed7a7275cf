//! Route matching (host + longest path prefix) and the upstream pools routes point at.

pub mod breaker;
mod health;
mod pool;
mod resolve;
mod router;

pub use health::{BackendAttempt, BackendReport, PoolHealth};
pub use pool::Pool;
pub use resolve::{describe as describe_unresolved, resolve_backends, ResolveError};
pub use router::Router;

use crate::config::{HashKey, PolicyId, RouteConfig, TierId};
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// A route, ready to match requests: the validated config itself, with the matching
/// behaviour below (the router only orders them).
pub type Route = RouteConfig;

impl RouteConfig {
    /// The rate-limit policy for a client of `tier`, if the route has one.
    pub fn rate_limit(&self, tier: TierId) -> Option<PolicyId> {
        self.rate_limit.get(tier.0).copied().flatten()
    }

    pub fn allows_tier(&self, tier: TierId) -> bool {
        self.allowed_tiers & tier.bit() != 0
    }

    /// Whether this route takes a request to `host` and `path` (the router's reference
    /// semantics; its index answers the same, see `router.rs`).
    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(want) = &self.host {
            match host {
                Some(h) if h.eq_ignore_ascii_case(want) => {}
                _ => return false,
            }
        }
        prefix_matches(&self.path_prefix, path)
    }

    /// The path to send upstream: with the prefix removed when `strip_prefix` is set.
    /// The result is empty (meaning "/") or starts with "/". `None` when the path is unchanged.
    pub fn rewrite<'p>(&self, path: &'p str) -> Option<&'p str> {
        if !self.strip_prefix || self.path_prefix == "/" {
            return None;
        }
        let rest = path
            .get(self.path_prefix.trim_end_matches('/').len()..)
            .unwrap_or("");
        Some(rest)
    }
}

/// The bytes consistent hashing hashes. `buf` holds an IP address's octets.
pub fn hash_key<'a>(
    key: &HashKey,
    req: &'a RequestHeader,
    ip: Option<IpAddr>,
    buf: &'a mut [u8; 16],
) -> &'a [u8] {
    match key {
        HashKey::Path => req.uri.path().as_bytes(),
        HashKey::Header(h) => req.headers.get(h).map_or(&[][..], |v| v.as_bytes()),
        HashKey::ClientIp => match ip {
            Some(IpAddr::V4(v4)) => {
                buf[..4].copy_from_slice(&v4.octets());
                &buf[..4]
            }
            Some(IpAddr::V6(v6)) => {
                *buf = v6.octets();
                &buf[..]
            }
            None => &[],
        },
    }
}

/// Segment-aware prefix test: `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'
}

/// The host a request is for, from the URI authority (HTTP/2, absolute-form) or the
/// `Host` header, without port.
pub fn request_host(req: &pingora::http::RequestHeader) -> Option<&str> {
    let raw = match req.uri.host() {
        Some(h) => h,
        None => req.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolId;
    use std::time::Duration;

    /// A route to pool 0 with test timeouts (also for `router.rs`'s tests).
    pub(super) fn route(name: &str, host: Option<&str>, prefix: &str, strip: bool) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host: host.map(str::to_string),
            path_prefix: prefix.into(),
            pool: PoolId(0),
            strip_prefix: strip,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: None,
            retries: 1,
            rate_limit: Vec::new(),
            auth: crate::config::AuthMode::None,
            allowed_tiers: u64::MAX,
        }
    }

    fn name<'a>(r: &'a Router, host: Option<&str>, path: &str) -> Option<&'a str> {
        r.find(host, path).map(|(_, r)| r.name.as_str())
    }

    #[test]
    fn longest_prefix_and_host_win() {
        let r = Router::new(&[
            route("root", None, "/", false),
            route("api", None, "/api", false),
            route("api-v2", None, "/api/v2/", false),
            route("billing-host", Some("billing.example.com"), "/", false),
            route("billing-api", Some("billing.example.com"), "/api", false),
        ]);
        assert_eq!(name(&r, None, "/"), Some("root"));
        assert_eq!(name(&r, None, "/api"), Some("api"));
        assert_eq!(name(&r, None, "/api/users"), Some("api"));
        assert_eq!(
            name(&r, None, "/apix"),
            Some("root"),
            "prefixes match whole segments"
        );
        assert_eq!(name(&r, None, "/api/v2/x"), Some("api-v2"));
        assert_eq!(
            name(&r, Some("BILLING.example.com"), "/x"),
            Some("billing-host")
        );
        assert_eq!(
            name(&r, Some("billing.example.com"), "/api/x"),
            Some("billing-api")
        );
        assert_eq!(name(&r, Some("other.example.com"), "/api/x"), Some("api"));
    }

    #[test]
    fn no_route_without_catch_all() {
        let r = Router::new(&[route("api", Some("a.example"), "/api", false)]);
        assert!(r.find(Some("a.example"), "/other").is_none());
        assert!(r.find(None, "/api").is_none());
    }

    #[test]
    fn strip_prefix_rewrites() {
        let r = Router::new(&[
            route("api", None, "/api", true),
            route("s", None, "/svc/", true),
        ]);
        let api = r.find(None, "/api/users").map(|(_, r)| r.clone()).unwrap();
        assert_eq!(api.rewrite("/api/users"), Some("/users"));
        assert_eq!(api.rewrite("/api"), Some(""));
        let s = r.find(None, "/svc/a").map(|(_, r)| r.clone()).unwrap();
        assert_eq!(s.rewrite("/svc/a"), Some("/a"));
    }

    #[test]
    fn host_port_is_ignored() {
        assert_eq!(strip_port("example.com:8000"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
