//! Requests answered, by route and status, and their durations by route.

use super::{Metrics, Registrar};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
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

impl RouteMetrics {
    /// Handles for the route label `name`; its status counters are made on first use.
    fn new(name: &str, durations: &HistogramVec) -> Self {
        Self {
            name: name.to_string(),
            by_status: (0..STATUS_COUNT).map(|_| OnceLock::new()).collect(),
            duration: durations.with_label_values(&[name]),
        }
    }
}

/// The request families, and the handles of the labels that are not configured routes.
pub(super) struct Requests {
    requests: IntCounterVec,
    errors: IntCounterVec,
    /// `errors`' series by reason index, resolved once (see [`Metrics::error_reasons`]).
    error_series: OnceLock<Vec<IntCounter>>,
    durations: HistogramVec,
    ping: RouteMetrics,
    unrouted: RouteMetrics,
}

impl Requests {
    pub(super) fn register(r: &Registrar<'_>) -> prometheus::Result<Self> {
        let requests = r.counter_vec(
            "gateway_requests_total",
            "Requests answered, by route and status",
            &["route", "status"],
        )?;
        let durations = r.histogram_vec(
            "gateway_request_duration_seconds",
            "Time from request received to response logged, by route",
            &["route"],
        )?;
        let errors = r.counter_vec(
            "gateway_errors_total",
            "Responses the gateway made itself instead of a proxied one (4xx/5xx), by reason",
            &["reason"],
        )?;
        Ok(Self {
            errors,
            error_series: OnceLock::new(),
            ping: RouteMetrics::new("ping", &durations),
            unrouted: RouteMetrics::new("none", &durations),
            requests,
            durations,
        })
    }
}

impl Metrics {
    /// Handles for a route named `name`: label values resolved once, not per request.
    pub fn route_metrics(&self, name: &str) -> RouteMetrics {
        RouteMetrics::new(name, &self.requests.durations)
    }

    /// The handles of `label`; `routes` are those of the config the request ran under.
    pub fn route<'a>(&'a self, label: RouteLabel, routes: &'a [RouteMetrics]) -> &'a RouteMetrics {
        match label {
            RouteLabel::Route(i) => routes.get(i).unwrap_or(&self.requests.unrouted),
            RouteLabel::Ping => &self.requests.ping,
            RouteLabel::Unrouted => &self.requests.unrouted,
        }
    }

    /// Names the reasons of `gateway_errors_total` (once; later calls change nothing):
    /// every series exists at 0 from the start, for dashboards and alerts, and
    /// [`Metrics::count_error`] finds its counter by index, without hashing labels.
    pub fn error_reasons(&self, reasons: &[&str]) {
        self.requests.error_series.get_or_init(|| {
            reasons
                .iter()
                .map(|r| self.requests.errors.with_label_values(&[r]))
                .collect()
        });
    }

    /// Counts one response the gateway made itself, by the index of its reason in
    /// [`Metrics::error_reasons`]. Only on a refused or failed request.
    pub fn count_error(&self, reason: usize) {
        if let Some(c) = self.requests.error_series.get().and_then(|s| s.get(reason)) {
            c.inc();
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
                    .requests
                    .with_label_values(&[&r.name, &status.to_string()])
            })
            .inc();
        }
    }
}

/// Cumulative request counts, read from the counters for the dashboard's sampler (once a
/// second, off the request path).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTotals {
    /// Requests by status, summed over routes.
    pub by_status: Vec<(u16, u64)>,
    /// Per route label: requests, and the cumulative count of each latency bucket.
    pub routes: Vec<RouteTotals>,
    /// The buckets' upper bounds in seconds (`+Inf` last), as in every `RouteTotals`.
    pub bounds: Vec<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTotals {
    pub route: String,
    pub count: u64,
    pub buckets: Vec<u64>,
}

impl Metrics {
    /// Reads every request counter and duration histogram.
    pub fn request_totals(&self) -> RequestTotals {
        use prometheus::core::Collector;
        let mut totals = RequestTotals::default();
        let mut by_status = std::collections::BTreeMap::<u16, u64>::new();
        for family in self.requests.requests.collect() {
            for m in family.metric.iter() {
                let status = label(m, "status").and_then(|s| s.parse().ok());
                if let Some(status) = status {
                    *by_status.entry(status).or_default() += m.counter.value() as u64;
                }
            }
        }
        totals.by_status = by_status.into_iter().collect();
        for family in self.requests.durations.collect() {
            for m in family.metric.iter() {
                let h = &m.histogram;
                if totals.bounds.is_empty() {
                    totals.bounds = h.bucket.iter().map(|b| b.upper_bound()).collect();
                    totals.bounds.push(f64::INFINITY);
                }
                let mut buckets: Vec<u64> = h.bucket.iter().map(|b| b.cumulative_count()).collect();
                buckets.push(h.sample_count());
                totals.routes.push(RouteTotals {
                    route: label(m, "route").unwrap_or_default().to_string(),
                    count: h.sample_count(),
                    buckets,
                });
            }
        }
        totals
    }
}

/// The value of label `name` of one series.
pub(super) fn label<'m>(m: &'m prometheus::proto::Metric, name: &str) -> Option<&'m str> {
    m.label.iter().find(|l| l.name() == name).map(|l| l.value())
}
