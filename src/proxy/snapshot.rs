//! What a config reload replaces, as one value. A request takes the snapshot in force when
//! it starts and finishes on it, so a reload never changes a request half way.

use crate::auth::Authenticator;
use crate::config::{Config, CorrelationConfig, PingConfig};
use crate::edge::Edge;
use crate::observability::{Metrics, RouteMetrics};
use crate::ratelimit::Limiter;
use crate::routing::{Pool, Router};
use std::net::SocketAddr;
use std::sync::Arc;

/// Routes, pools, auth and request rules of one config.
pub struct Snapshot {
    pub router: Router,
    pub pools: Vec<Arc<Pool>>,
    /// Metric handles of `router`'s routes, in the same order.
    pub route_metrics: Vec<RouteMetrics>,
    pub correlation: CorrelationConfig,
    pub edge: Edge,
    /// The built-in `GET /ping`, when enabled.
    pub ping: Option<PingConfig>,
    pub auth: Arc<Authenticator>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The rate-limit policies routes point at (by index). Carried over whole when a
    /// reload leaves `rate_limits` unchanged; see [`Limiter::reloaded`] otherwise.
    pub limiter: Arc<Limiter>,
}

impl Snapshot {
    /// Builds the snapshot of `config`, whose backends resolved to `addrs` (one list per
    /// pool). A pool equal to one of `previous` (same config, same addresses) is carried
    /// over with its health and breaker state; the others are new and need
    /// [`Pool::prime`] and their health checks started.
    pub fn build(
        config: &Config,
        addrs: &[Vec<SocketAddr>],
        metrics: &Arc<Metrics>,
        previous: Option<&Snapshot>,
    ) -> Self {
        let pools = config
            .upstreams
            .iter()
            .zip(addrs)
            .map(|(pool, addrs)| {
                previous
                    .and_then(|p| p.pools.iter().find(|old| old.same_as(pool, addrs)))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Pool::build(pool, addrs, metrics)))
            })
            .collect();
        let limiter = match previous {
            Some(p) if p.limiter.same_as(&config.rate_limits) => Arc::clone(&p.limiter),
            Some(p) => Arc::new(Limiter::reloaded(
                &config.rate_limits,
                metrics.clone(),
                &p.limiter,
            )),
            None => Arc::new(Limiter::new(&config.rate_limits, metrics.clone())),
        };
        let router = Router::new(&config.routes);
        let route_metrics = router
            .routes()
            .iter()
            .map(|r| metrics.route_metrics(&r.name))
            .collect();
        Self {
            edge: Edge::new(&config.edge, &protected_headers(config)),
            router,
            pools,
            route_metrics,
            correlation: config.correlation.clone(),
            ping: config.ping.clone(),
            auth: Arc::new(Authenticator::new(&config.auth)),
            trusted_proxies: config.trusted_proxies.clone(),
            limiter,
        }
    }

    /// Pools of `self` that `other` does not hold.
    pub fn pools_not_in<'a>(&'a self, other: &'a Snapshot) -> impl Iterator<Item = &'a Arc<Pool>> {
        self.pools
            .iter()
            .filter(|p| !other.pools.iter().any(|o| Arc::ptr_eq(p, o)))
    }
}

/// Headers whose `_` spellings never pass even with `headers_with_underscores: allow`:
/// the request-id header and every header a credential is read from.
fn protected_headers(config: &Config) -> Vec<http::HeaderName> {
    let mut names = vec![config.correlation.header.clone()];
    if let Some(keys) = &config.auth.api_keys {
        names.push(keys.header.clone());
    }
    if let Some(crate::config::TokenSource::Header(h)) = config.auth.jwt.as_ref().map(|j| &j.from) {
        names.push(h.clone());
    }
    names
}
