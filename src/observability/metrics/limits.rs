//! Rate limiting: decisions by policy and outcome, and the lease sync's work with Redis.

use super::{Metrics, Registrar};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

/// The `outcome` label values of `gateway_ratelimit_decisions_total`, in counter order.
const DECISION_OUTCOMES: [&str; 3] = ["allowed", "limited", "fallback"];

pub(super) struct Limits {
    /// Rate-limit decisions by policy and outcome; each limiter resolves its own handles.
    decisions: IntCounterVec,
    redis_round_trips: IntCounter,
    redis_errors: IntCounter,
    lease_fetch: Histogram,
    keys: IntGauge,
}

impl Limits {
    pub(super) fn register(r: &Registrar<'_>, policy_names: &[&str]) -> prometheus::Result<Self> {
        let decisions = r.counter_vec(
            "gateway_ratelimit_decisions_total",
            "Rate-limit decisions by policy and outcome (fallback: decided without Redis)",
            &["policy", "outcome"],
        )?;
        // The series of the configured policies exist (at 0) from the start.
        for p in policy_names {
            for outcome in DECISION_OUTCOMES {
                decisions.with_label_values(&[p, outcome]);
            }
        }
        Ok(Self {
            decisions,
            redis_round_trips: r.counter(
                "gateway_ratelimit_redis_round_trips_total",
                "Pipelined round trips to Redis by the lease sync",
            )?,
            redis_errors: r.counter(
                "gateway_ratelimit_redis_errors_total",
                "Failed Redis connects, round trips and probes",
            )?,
            lease_fetch: r.histogram(
                "gateway_ratelimit_lease_fetch_seconds",
                "Duration of one lease round trip to Redis",
            )?,
            keys: r.gauge(
                "gateway_ratelimit_keys",
                "Client keys tracked by the limiter",
            )?,
        })
    }
}

impl Metrics {
    /// Decision counters of a policy: [allowed, limited, fallback], resolved once by the
    /// limiter that uses them (a reload builds its own).
    pub fn limit_decision_counters(&self, policy: &str) -> [IntCounter; 3] {
        DECISION_OUTCOMES.map(|outcome| self.limits.decisions.with_label_values(&[policy, outcome]))
    }

    pub fn limit_redis_round_trip(&self) {
        self.limits.redis_round_trips.inc();
    }

    pub fn limit_redis_error(&self) {
        self.limits.redis_errors.inc();
    }

    pub fn observe_lease_fetch(&self, seconds: f64) {
        self.limits.lease_fetch.observe(seconds);
    }

    pub fn set_limit_keys(&self, n: usize) {
        self.limits.keys.set(n as i64);
    }
}
