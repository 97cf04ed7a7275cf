//! Upstream backends: health-check results and circuit breakers, by pool and backend.

use super::{Metrics, Registrar};
use prometheus::{IntCounterVec, IntGaugeVec};
use std::net::SocketAddr;

pub(super) struct Upstreams {
    healthy: IntGaugeVec,
    breaker_state: IntGaugeVec,
    breaker_transitions: IntCounterVec,
    breaker_short_circuited: IntCounterVec,
}

impl Upstreams {
    pub(super) fn register(r: &Registrar<'_>) -> prometheus::Result<Self> {
        Ok(Self {
            healthy: r.gauge_vec(
                "gateway_upstream_healthy",
                "1 if the backend passes its health checks",
                &["pool", "backend"],
            )?,
            breaker_state: r.gauge_vec(
                "gateway_breaker_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                &["pool", "backend"],
            )?,
            breaker_transitions: r.counter_vec(
                "gateway_breaker_transitions_total",
                "Circuit breaker state changes",
                &["pool", "backend", "from", "to"],
            )?,
            breaker_short_circuited: r.counter_vec(
                "gateway_breaker_short_circuited_total",
                "Requests answered 503 at once because no backend of the pool was available",
                &["pool"],
            )?,
        })
    }
}

impl Metrics {
    /// Sets a breaker's state gauge (0 closed, 1 open, 2 half-open).
    pub fn set_breaker_state(&self, pool: &str, backend: &str, state: i64) {
        self.upstreams
            .breaker_state
            .with_label_values(&[pool, backend])
            .set(state);
    }

    /// Counts a breaker's change of state.
    pub fn count_breaker_transition(&self, pool: &str, backend: &str, from: &str, to: &str) {
        self.upstreams
            .breaker_transitions
            .with_label_values(&[pool, backend, from, to])
            .inc();
    }

    pub fn breaker_short_circuit(&self, pool: &str) {
        self.upstreams
            .breaker_short_circuited
            .with_label_values(&[pool])
            .inc();
    }

    /// Drops the per-backend series of a backend no pool has any more (after a reload),
    /// so a removed backend does not stay "down" in dashboards and alerts for good.
    pub fn forget_backend(&self, pool: &str, backend: &SocketAddr) {
        let backend = backend.to_string();
        let _ = self
            .upstreams
            .healthy
            .remove_label_values(&[pool, &backend]);
        let _ = self
            .upstreams
            .breaker_state
            .remove_label_values(&[pool, &backend]);
    }

    pub fn set_backend_health(&self, pool: &str, backend: &SocketAddr, healthy: bool) {
        self.upstreams
            .healthy
            .with_label_values(&[pool, &backend.to_string()])
            .set(i64::from(healthy));
    }
}
