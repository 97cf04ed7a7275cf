//! The gateway's Prometheus metrics, in a registry of its own, with per-route handles
//! resolved once so the request path does no label hashing.
//!
//! One file per area, each owning its metric families and the methods that update them:
//! requests (by route and status), connections (the client side), upstreams (health and
//! breakers), limits (rate limiting), regions (rate-limit rights across regions), edge (the request rules) and reloads (the config).

mod connections;
mod edge;
mod limits;
mod regions;
mod reloads;
mod requests;
mod upstreams;

pub use connections::ConnClose;
pub use limits::{DecisionCounters, DecisionReason, LimiterTotals};
pub use requests::{RequestTotals, RouteLabel, RouteMetrics, RouteTotals};

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// All metrics of one gateway.
pub struct Metrics {
    registry: Registry,
    requests: requests::Requests,
    connections: connections::Connections,
    upstreams: upstreams::Upstreams,
    limits: limits::Limits,
    regions: regions::Regions,
    edge: edge::Edge,
    reloads: reloads::Reloads,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
}

/// Latency buckets (seconds) from 100 us to 10 s: a gateway answers in microseconds,
/// upstreams in milliseconds.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Makes metric families and registers each in one registry, so an area's constructor
/// reads as a list of names and help texts.
struct Registrar<'r>(&'r Registry);

impl Registrar<'_> {
    fn register<C: Collector + Clone + 'static>(&self, c: C) -> prometheus::Result<C> {
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.register(IntCounter::new(name, help)?)
    }

    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.register(IntGauge::new(name, help)?)
    }

    fn float_gauge(&self, name: &str, help: &str) -> prometheus::Result<prometheus::Gauge> {
        self.register(prometheus::Gauge::new(name, help)?)
    }

    fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    /// A latency histogram with the gateway's [`BUCKETS`].
    fn histogram(&self, name: &str, help: &str) -> prometheus::Result<Histogram> {
        self.register(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        )?)
    }

    /// Latency histograms with the gateway's [`BUCKETS`], by `labels`.
    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<HistogramVec> {
        self.register(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
            labels,
        )?)
    }
}

impl Metrics {
    /// Creates the metrics of a gateway. Route handles are made per config with
    /// [`Metrics::route_metrics`], rate-limit handles by each limiter.
    /// Fails only on an invalid metric definition, which the unit tests rule out.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let r = Registrar(&registry);
        let build = r.gauge_vec(
            "gateway_build_info",
            "1, labelled with the version and the git commit this binary was built from",
            &["version", "commit"],
        )?;
        build
            .with_label_values(&[super::BUILD.version, super::BUILD.commit])
            .set(1);
        let metrics = Self {
            requests: requests::Requests::register(&r)?,
            upstreams: upstreams::Upstreams::register(&r)?,
            access_log_dropped: r.counter(
                "gateway_access_log_dropped_total",
                "Access-log lines dropped because the writer fell behind",
            )?,
            limits: limits::Limits::register(&r)?,
            regions: regions::Regions::register(&r)?,
            connections: connections::Connections::register(&r)?,
            edge: edge::Edge::register(&r)?,
            reloads: reloads::Reloads::register(&r)?,
            registry,
        };
        if let Some(races) = super::logger::pool_reuse_races() {
            metrics.registry.register(Box::new(races.clone()))?;
        }
        Ok(metrics)
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
        let m = Metrics::new().unwrap();
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
