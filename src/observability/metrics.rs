//! The gateway's Prometheus metrics, in a registry of its own, with per-route handles
//! resolved once so the request path does no label hashing.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Which route label a request is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    /// A configured route, by its index in the router.
    Route(usize),
    /// The built-in `/ping` endpoint.
    Ping,
    /// No route matched (404) or the request was rejected before routing.
    Unrouted,
}

/// Why the gateway closed a client connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnClose {
    /// No complete request header within `client_header_timeout` (408, or silent if nothing came).
    HeaderTimeout,
    /// A request header over `max_header_bytes` (431).
    HeaderTooLarge,
    /// A keep-alive connection idle for `keepalive_timeout`.
    IdleTimeout,
    /// An idle keep-alive connection closed because the gateway is draining.
    Drain,
}

impl ConnClose {
    const ALL: [ConnClose; 4] = [
        ConnClose::HeaderTimeout,
        ConnClose::HeaderTooLarge,
        ConnClose::IdleTimeout,
        ConnClose::Drain,
    ];

    fn label(self) -> &'static str {
        match self {
            ConnClose::HeaderTimeout => "header_timeout",
            ConnClose::HeaderTooLarge => "header_too_large",
            ConnClose::IdleTimeout => "idle_timeout",
            ConnClose::Drain => "drain",
        }
    }
}

/// The `outcome` label values of `gateway_ratelimit_decisions_total`, in counter order.
const DECISION_OUTCOMES: [&str; 3] = ["allowed", "limited", "fallback"];

/// Status 0: the client went away before any response was written.
const STATUS_MIN: u16 = 0;
const STATUS_COUNT: usize = 600; // 0..=599

/// Counters for one route label: one lazily created counter per status code. Made by
/// [`Metrics::route_metrics`] for each route of a config (again on reload).
pub struct RouteMetrics {
    name: String,
    by_status: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
}

/// All metrics of one gateway.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    ping: RouteMetrics,
    unrouted: RouteMetrics,
    upstream_healthy: IntGaugeVec,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
    /// Rate-limit decisions by policy and outcome; each limiter resolves its own handles.
    decisions: IntCounterVec,
    limit_redis_round_trips: IntCounter,
    limit_redis_errors: IntCounter,
    limit_lease_fetch: Histogram,
    limit_keys: IntGauge,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    breaker_short_circuited: IntCounterVec,
    edge_refused: IntCounterVec,
    edge_paths_rewritten: IntCounter,
    edge_headers_dropped: IntCounter,
    config_reloads: IntCounterVec,
    config_info: IntGaugeVec,
    downstream_connections: IntGauge,
    downstream_refused: IntCounter,
    /// By [`ConnClose`], in the order of `ConnClose::ALL`.
    downstream_closed: [IntCounter; 4],
}

/// Latency buckets (seconds) from 100 us to 10 s: a gateway answers in microseconds,
/// upstreams in milliseconds.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> prometheus::Result<C> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Creates the metrics of a gateway with these rate-limit policies. Route handles are
    /// made per config with [`Metrics::route_metrics`].
    /// Fails only on an invalid metric definition, which the unit tests rule out.
    pub fn new(policy_names: &[&str]) -> prometheus::Result<Self> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "gateway_requests_total",
                    "Requests answered, by route and status",
                ),
                &["route", "status"],
            )?,
        )?;
        let durations = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "gateway_request_duration_seconds",
                    "Time from request received to response logged, by route",
                )
                .buckets(BUCKETS.to_vec()),
                &["route"],
            )?,
        )?;
        let upstream_healthy = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "gateway_upstream_healthy",
                    "1 if the backend passes its health checks",
                ),
                &["pool", "backend"],
            )?,
        )?;
        let access_log_dropped = register(
            &registry,
            IntCounter::new(
                "gateway_access_log_dropped_total",
                "Access-log lines dropped because the writer fell behind",
            )?,
        )?;
        let decisions = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "gateway_ratelimit_decisions_total",
                    "Rate-limit decisions by policy and outcome (fallback: decided without Redis)",
                ),
                &["policy", "outcome"],
            )?,
        )?;
        // The series of the configured policies exist (at 0) from the start.
        for p in policy_names {
            for outcome in DECISION_OUTCOMES {
                decisions.with_label_values(&[p, outcome]);
            }
        }
        let limit_redis_round_trips = register(
            &registry,
            IntCounter::new(
                "gateway_ratelimit_redis_round_trips_total",
                "Pipelined round trips to Redis by the lease sync",
            )?,
        )?;
        let limit_redis_errors = register(
            &registry,
            IntCounter::new(
                "gateway_ratelimit_redis_errors_total",
                "Failed Redis connects, round trips and probes",
            )?,
        )?;
        let limit_lease_fetch = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "gateway_ratelimit_lease_fetch_seconds",
                    "Duration of one lease round trip to Redis",
                )
                .buckets(BUCKETS.to_vec()),
            )?,
        )?;
        let limit_keys = register(
            &registry,
            IntGauge::new(
                "gateway_ratelimit_keys",
                "Client keys tracked by the limiter",
            )?,
        )?;
        let breaker_state = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "gateway_breaker_state",
                    "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                ),
                &["pool", "backend"],
            )?,
        )?;
        let breaker_transitions = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "gateway_breaker_transitions_total",
                    "Circuit breaker state changes",
                ),
                &["pool", "backend", "from", "to"],
            )?,
        )?;
        let breaker_short_circuited = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "gateway_breaker_short_circuited_total",
                    "Requests answered 503 at once because no backend of the pool was available",
                ),
                &["pool"],
            )?,
        )?;
        let downstream_connections = register(
            &registry,
            IntGauge::new(
                "gateway_downstream_connections",
                "Client connections open on the proxy listener",
            )?,
        )?;
        let downstream_refused = register(
            &registry,
            IntCounter::new(
                "gateway_downstream_refused_total",
                "Client connections closed at once because server.max_connections were open",
            )?,
        )?;
        let closed = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "gateway_downstream_closed_total",
                    "Client connections the gateway closed: header_timeout, header_too_large, idle_timeout, drain",
                ),
                &["reason"],
            )?,
        )?;
        let edge_refused = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "gateway_edge_refused_total",
                    "Requests answered 400 by the edge rules, by reason (path or header name)",
                ),
                &["reason"],
            )?,
        )?;
        let edge_paths_rewritten = register(
            &registry,
            IntCounter::new(
                "gateway_edge_paths_normalized_total",
                "Requests whose path was rewritten to its canonical form before routing",
            )?,
        )?;
        let edge_headers_dropped = register(
            &registry,
            IntCounter::new(
                "gateway_edge_underscore_headers_dropped_total",
                "Request headers removed because their name contains '_'",
            )?,
        )?;
        let config_reloads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "gateway_config_reloads_total",
                    "Config reloads (SIGHUP) by result: applied, invalid (the file has problems), refused (a change needs a restart)",
                ),
                &["result"],
            )?,
        )?;
        let config_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "gateway_config_info",
                    "1 for the SHA-256 of the config file in force",
                ),
                &["sha256"],
            )?,
        )?;
        if let Some(races) = super::logger::pool_reuse_races() {
            registry.register(Box::new(races.clone()))?;
        }
        let downstream_closed = ConnClose::ALL.map(|c| closed.with_label_values(&[c.label()]));
        let route = |name: &str| RouteMetrics {
            name: name.to_string(),
            by_status: (0..STATUS_COUNT).map(|_| OnceLock::new()).collect(),
            duration: durations.with_label_values(&[name]),
        };
        Ok(Self {
            ping: route("ping"),
            unrouted: route("none"),
            registry,
            requests,
            durations,
            upstream_healthy,
            access_log_dropped,
            decisions,
            limit_redis_round_trips,
            limit_redis_errors,
            limit_lease_fetch,
            limit_keys,
            breaker_state,
            breaker_transitions,
            breaker_short_circuited,
            edge_refused,
            edge_paths_rewritten,
            edge_headers_dropped,
            config_reloads,
            config_info,
            downstream_connections,
            downstream_refused,
            downstream_closed,
        })
    }

    /// The open-connections gauge, +1 or -1.
    pub fn downstream_connection(&self, delta: i64) {
        self.downstream_connections.add(delta);
    }

    pub fn downstream_refused(&self) {
        self.downstream_refused.inc();
    }

    pub fn downstream_closed(&self, why: ConnClose) {
        self.downstream_closed[why as usize].inc();
    }

    /// Sets a breaker's state gauge and counts the transition (an empty `from` only sets).
    /// Sets a breaker's state gauge (0 closed, 1 open, 2 half-open).
    pub fn set_breaker_state(&self, pool: &str, backend: &str, state: i64) {
        self.breaker_state
            .with_label_values(&[pool, backend])
            .set(state);
    }

    /// Counts a breaker's change of state.
    pub fn count_breaker_transition(&self, pool: &str, backend: &str, from: &str, to: &str) {
        self.breaker_transitions
            .with_label_values(&[pool, backend, from, to])
            .inc();
    }

    pub fn breaker_short_circuit(&self, pool: &str) {
        self.breaker_short_circuited
            .with_label_values(&[pool])
            .inc();
    }

    /// Counts what the edge stage changed in a request it let through.
    pub fn observe_edge_cleaned(&self, path_rewritten: bool, headers_dropped: usize) {
        if path_rewritten {
            self.edge_paths_rewritten.inc();
        }
        if headers_dropped > 0 {
            self.edge_headers_dropped.inc_by(headers_dropped as u64);
        }
    }

    /// Counts a request the edge refused, by reason.
    pub fn observe_edge_refusal(&self, reason: &str) {
        self.edge_refused.with_label_values(&[reason]).inc();
    }

    /// Counts a reload attempt: `applied`, `invalid` or `refused`.
    pub fn observe_reload(&self, result: &str) {
        self.config_reloads.with_label_values(&[result]).inc();
    }

    /// Names the config in force by the SHA-256 (hex) of its file.
    pub fn set_config_hash(&self, sha256: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[sha256]).set(1);
    }

    /// The metrics for a gateway with these rate-limit policies.
    pub fn for_gateway(limits: &crate::config::RateLimitConfig) -> prometheus::Result<Self> {
        let policies: Vec<&str> = limits.policies.iter().map(|p| p.name.as_str()).collect();
        Self::new(&policies)
    }

    /// Handles for a route named `name`: label values resolved once, not per request.
    pub fn route_metrics(&self, name: &str) -> RouteMetrics {
        RouteMetrics {
            name: name.to_string(),
            by_status: (0..STATUS_COUNT).map(|_| OnceLock::new()).collect(),
            duration: self.durations.with_label_values(&[name]),
        }
    }

    /// Decision counters of a policy: [allowed, limited, fallback], resolved once by the
    /// limiter that uses them (a reload builds its own).
    pub fn limit_decision_counters(&self, policy: &str) -> [IntCounter; 3] {
        DECISION_OUTCOMES.map(|outcome| self.decisions.with_label_values(&[policy, outcome]))
    }

    pub fn limit_redis_round_trip(&self) {
        self.limit_redis_round_trips.inc();
    }

    pub fn limit_redis_error(&self) {
        self.limit_redis_errors.inc();
    }

    pub fn observe_lease_fetch(&self, seconds: f64) {
        self.limit_lease_fetch.observe(seconds);
    }

    pub fn set_limit_keys(&self, n: usize) {
        self.limit_keys.set(n as i64);
    }

    /// The handles of `label`; `routes` are those of the config the request ran under.
    pub fn route<'a>(&'a self, label: RouteLabel, routes: &'a [RouteMetrics]) -> &'a RouteMetrics {
        match label {
            RouteLabel::Route(i) => routes.get(i).unwrap_or(&self.unrouted),
            RouteLabel::Ping => &self.ping,
            RouteLabel::Unrouted => &self.unrouted,
        }
    }

    /// Counts one answered request. Lock-free after the first request of each (route, status).
    pub fn observe_request(&self, r: &RouteMetrics, status: u16, seconds: f64) {
        r.duration.observe(seconds);
        let status = status.clamp(STATUS_MIN, STATUS_MIN + STATUS_COUNT as u16 - 1);
        if let Some(slot) = r.by_status.get(usize::from(status - STATUS_MIN)) {
            // The label is formatted once per (route, status).
            slot.get_or_init(|| {
                self.requests
                    .with_label_values(&[&r.name, &status.to_string()])
            })
            .inc();
        }
    }

    /// Drops the per-backend series of a backend no pool has any more (after a reload),
    /// so a removed backend does not stay "down" in dashboards and alerts for good.
    pub fn forget_backend(&self, pool: &str, backend: &SocketAddr) {
        let backend = backend.to_string();
        let _ = self.upstream_healthy.remove_label_values(&[pool, &backend]);
        let _ = self.breaker_state.remove_label_values(&[pool, &backend]);
    }

    pub fn set_backend_health(&self, pool: &str, backend: &SocketAddr, healthy: bool) {
        self.upstream_healthy
            .with_label_values(&[pool, &backend.to_string()])
            .set(i64::from(healthy));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_and_status() {
        let m = Metrics::new(&["p"]).unwrap();
        let routes = [m.route_metrics("api"), m.route_metrics("web")];
        let at = |label| m.route(label, &routes);
        m.observe_request(at(RouteLabel::Route(0)), 200, 0.001);
        m.observe_request(at(RouteLabel::Route(0)), 200, 0.002);
        m.observe_request(at(RouteLabel::Route(1)), 503, 0.0001);
        m.observe_request(at(RouteLabel::Unrouted), 404, 0.0001);
        m.observe_request(at(RouteLabel::Ping), 200, 0.0001);
        m.observe_request(at(RouteLabel::Route(0)), 0, 0.0001);
        m.observe_request(at(RouteLabel::Route(7)), 200, 0.0001);
        m.set_backend_health("api", &"127.0.0.1:1".parse().unwrap(), false);
        let text = m.render();
        assert!(
            text.contains("gateway_requests_total{route=\"api\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("gateway_requests_total{route=\"web\",status=\"503\"} 1"));
        assert!(text.contains("gateway_requests_total{route=\"none\",status=\"404\"} 1"));
        assert!(
            text.contains("gateway_requests_total{route=\"none\",status=\"200\"} 1"),
            "an index past the routes counts as unrouted"
        );
        assert!(text.contains("gateway_requests_total{route=\"ping\",status=\"200\"} 1"));
        assert!(
            text.contains("gateway_requests_total{route=\"api\",status=\"0\"} 1"),
            "no response written"
        );
        assert!(text.contains("gateway_request_duration_seconds_count{route=\"api\"} 3"));
        assert!(text.contains("gateway_upstream_healthy{backend=\"127.0.0.1:1\",pool=\"api\"} 0"));
        assert!(text.contains("process_cpu_seconds_total"));
        m.downstream_closed(ConnClose::IdleTimeout);
        m.downstream_closed(ConnClose::Drain);
        m.downstream_connection(1);
        let text = m.render();
        assert!(text.contains("gateway_downstream_closed_total{reason=\"idle_timeout\"} 1"));
        assert!(text.contains("gateway_downstream_closed_total{reason=\"drain\"} 1"));
        assert!(text.contains("gateway_downstream_closed_total{reason=\"header_timeout\"} 0"));
        assert!(text.contains("gateway_downstream_connections 1"));
    }
}
