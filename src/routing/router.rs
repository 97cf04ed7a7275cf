//! The router: the route of a request by host and longest segment-aware path prefix.
//!
//! A linear scan of routes sorted longest prefix first is the definition, and what runs
//! for a handful of routes. With many routes, an index answers the same in time that does
//! not grow with their number: for each distinct prefix length in the config (longest
//! first), the request path cut at that length is looked up in a hash map, if the cut
//! falls on a segment boundary; the first hit is the longest matching prefix, a route for
//! the request's host before a catch-all. The work is bounded by the number of distinct
//! prefix lengths, never by the path: a path of 10,000 segments costs what `/x` costs.

use super::Route;
use crate::config::RouteConfig;
use ahash::AHashMap;

/// Below this many routes the scan is faster than hashing the candidate prefixes
/// (`cargo bench --bench hot_path -- route`).
const SCAN_UP_TO: usize = 16;
/// The longest host name the index looks up (DNS allows 253); longer ones match no host
/// route (the edge refuses such a Host before routing anyway).
const MAX_HOST: usize = 255;

/// All routes, ordered so that the first match is the right one, and their index.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
    index: Option<Index>,
}

/// The routes of one prefix: the route for each host, and the catch-all.
#[derive(Debug, Clone, Default)]
struct Slot {
    by_host: AHashMap<Box<str>, usize>,
    any: Option<usize>,
}

#[derive(Debug, Clone, Default)]
struct Index {
    by_prefix: AHashMap<Box<str>, Slot>,
    /// The distinct prefix lengths, longest first.
    lengths: Vec<usize>,
    /// Some route names a host (else the request's host is never looked at).
    hosts: bool,
}

impl Router {
    pub fn new(configs: &[RouteConfig]) -> Self {
        let mut routes: Vec<Route> = configs.to_vec();
        // Longest prefix first; at equal length a route for a named host beats a catch-all.
        routes.sort_by(|a, b| {
            b.path_prefix
                .len()
                .cmp(&a.path_prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        let index = (routes.len() > SCAN_UP_TO).then(|| Index::new(&routes));
        Self { routes, index }
    }

    /// The route for a request to `host` (any case, no port) and `path` (no query), with
    /// its position (the index of its metrics).
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<(usize, &Route)> {
        let i = match &self.index {
            Some(index) => index.find(host, path)?,
            None => self.scan(host, path)?,
        };
        self.routes.get(i).map(|r| (i, r))
    }

    /// The definition: the first route, in order, that matches.
    fn scan(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.matches(host, path))
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

impl Index {
    fn new(routes: &[Route]) -> Self {
        let mut by_prefix: AHashMap<Box<str>, Slot> = AHashMap::new();
        for (i, r) in routes.iter().enumerate() {
            let slot = by_prefix.entry(r.path_prefix.as_str().into()).or_default();
            // The first in order wins, as in the scan (config validation refuses two
            // routes with one host and prefix anyway).
            match &r.host {
                Some(h) => {
                    slot.by_host.entry(h.as_str().into()).or_insert(i);
                }
                None => {
                    slot.any.get_or_insert(i);
                }
            }
        }
        let mut lengths: Vec<usize> = by_prefix.keys().map(|p| p.len()).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        let hosts = routes.iter().any(|r| r.host.is_some());
        Self {
            by_prefix,
            lengths,
            hosts,
        }
    }

    fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let mut buf = [0u8; MAX_HOST];
        let host = match self.hosts {
            true => host.and_then(|h| lowercase(h, &mut buf)),
            false => None,
        };
        for &len in self.lengths.iter().filter(|&&l| l <= path.len()) {
            let Some(cut) = path.get(..len) else {
                continue; // not a character boundary: no prefix ends there
            };
            // A segment boundary: the prefix ends with '/', or the path ends or goes on
            // with '/' right after it (`/api` matches `/api` and `/api/x`, not `/apix`).
            let boundary =
                cut.ends_with('/') || len == path.len() || path.as_bytes().get(len) == Some(&b'/');
            if !boundary {
                continue;
            }
            let Some(slot) = self.by_prefix.get(cut) else {
                continue;
            };
            if !slot.by_host.is_empty() {
                if let Some(&i) = host.and_then(|h| slot.by_host.get(h)) {
                    return Some(i);
                }
            }
            if let Some(i) = slot.any {
                return Some(i);
            }
        }
        None
    }
}

/// `host` in lower case, in `buf`; `None` if it does not fit.
fn lowercase<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let out = buf.get_mut(..host.len())?;
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(name: &str, host: Option<&str>, prefix: &str) -> RouteConfig {
        super::super::tests::route(name, host, prefix, false)
    }

    /// Many routes: the index answers; a scan of the same routes is the reference.
    fn indexed(routes: &[RouteConfig]) -> Router {
        let r = Router::new(routes);
        assert!(r.index.is_some() || routes.len() <= SCAN_UP_TO);
        r
    }

    #[test]
    fn ten_thousand_routes_by_path_and_by_host() {
        let mut routes: Vec<RouteConfig> = (0..5000)
            .map(|i| route(&format!("p{i}"), None, &format!("/svc{i}")))
            .collect();
        routes.extend(
            (0..5000).map(|i| route(&format!("h{i}"), Some(&format!("h{i}.example")), "/")),
        );
        routes.push(route("root", None, "/"));
        routes.push(route("deep", Some("h7.example"), "/svc42/v2/"));
        let r = indexed(&routes);
        let name = |host: Option<&str>, path: &str| r.find(host, path).map(|(_, r)| r.name.clone());
        assert_eq!(name(None, "/svc4999/x").as_deref(), Some("p4999"));
        assert_eq!(name(None, "/svc4999").as_deref(), Some("p4999"));
        assert_eq!(
            name(None, "/svc49990").as_deref(),
            Some("root"),
            "whole segments only"
        );
        assert_eq!(name(Some("H3.Example"), "/anything").as_deref(), Some("h3"));
        assert_eq!(
            name(Some("h3.example"), "/svc1/x").as_deref(),
            Some("p1"),
            "longer prefix first"
        );
        assert_eq!(
            name(Some("h7.example"), "/svc42/v2/x").as_deref(),
            Some("deep")
        );
        assert_eq!(
            name(Some("h8.example"), "/svc42/v2/x").as_deref(),
            Some("p42")
        );
        let huge = format!("/svc1{}", "/a".repeat(10_000));
        assert_eq!(name(None, &huge).as_deref(), Some("p1"));
        let long_host = "h".repeat(400);
        assert_eq!(name(Some(&long_host), "/x").as_deref(), Some("root"));
    }

    fn arb_prefix() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "ab", "é"], 0..4).prop_flat_map(|segs| {
            let base = format!("/{}", segs.join("/"));
            prop_oneof![
                Just(base.clone()),
                Just(format!("{}/", base.trim_end_matches('/')))
            ]
        })
    }

    fn arb_host() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("x.example".to_string())),
            Just(Some("y.example".to_string()))
        ]
    }

    proptest! {
        /// The index and the scan agree on every request, whatever the routes.
        #[test]
        fn index_answers_as_the_scan_does(
            routes in proptest::collection::vec((arb_host(), arb_prefix()), 1..40),
            requests in proptest::collection::vec((arb_host(), arb_prefix(), prop_oneof!["", "x", "/x", "b"]), 1..30),
            upper in any::<bool>(),
        ) {
            let configs: Vec<RouteConfig> = routes
                .iter()
                .enumerate()
                .map(|(i, (h, p))| route(&format!("r{i}"), h.as_deref(), p))
                .collect();
            let router = Router::new(&configs);
            let index = Index::new(&router.routes);
            for (host, prefix, tail) in &requests {
                let path = format!("{prefix}{tail}");
                let host = host.as_ref().map(|h| if upper { h.to_ascii_uppercase() } else { h.clone() });
                prop_assert_eq!(
                    index.find(host.as_deref(), &path),
                    router.scan(host.as_deref(), &path),
                    "{:?} {}", host, path
                );
            }
        }
    }
}
