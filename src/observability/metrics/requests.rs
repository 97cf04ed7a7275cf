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
        Ok(Self {
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
