//! Rate limiting: decisions by policy, outcome and reason, and the lease sync's work with
//! Redis (round trips, their measured duration, errors, how long requests waited).

use super::{Metrics, Registrar};
use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge};
use std::sync::OnceLock;

/// One reason a limiter gives for its decisions: its label, and whether it means the
/// decision was made without Redis (`outcome="fallback"`).
#[derive(Debug, Clone, Copy)]
pub struct DecisionReason {
    pub label: &'static str,
    pub fallback: bool,
}

/// The decision counters of one policy, by reason (in the order the limiter gave) and
/// allowed or limited. Each series is made at its first decision, so that only the
/// combinations that happen are exported.
pub struct DecisionCounters {
    family: IntCounterVec,
    policy: String,
    reasons: Vec<DecisionReason>,
    /// `[allowed, limited]` per reason.
    slots: Vec<[OnceLock<IntCounter>; 2]>,
}

impl DecisionCounters {
    pub fn count(&self, reason: usize, allowed: bool) {
        if let Some(c) = self.series(reason, allowed) {
            c.inc();
        }
    }

    /// Makes a series exist (at 0) before its first decision, so that dashboards see the
    /// policy from the start.
    pub fn touch(&self, reason: usize, allowed: bool) {
        self.series(reason, allowed);
    }

    fn series(&self, reason: usize, allowed: bool) -> Option<&IntCounter> {
        let (r, slots) = (self.reasons.get(reason)?, self.slots.get(reason)?);
        Some(slots[usize::from(!allowed)].get_or_init(|| {
            let outcome = match (r.fallback, allowed) {
                (true, _) => "fallback",
                (false, true) => "allowed",
                (false, false) => "limited",
            };
            self.family
                .with_label_values(&[self.policy.as_str(), outcome, r.label])
        }))
    }
}

pub(super) struct Limits {
    /// Rate-limit decisions by policy and outcome; each limiter resolves its own handles.
    decisions: IntCounterVec,
    redis_round_trips: IntCounter,
    redis_errors: IntCounter,
    lease_fetch: Histogram,
    redis_round_trip: Gauge,
    lease_wait: Histogram,
    keys: IntGauge,
}

impl Limits {
    pub(super) fn register(r: &Registrar<'_>) -> prometheus::Result<Self> {
        let decisions = r.counter_vec(
            "gateway_ratelimit_decisions_total",
            "Rate-limit decisions by policy, outcome (fallback: decided without Redis) and reason (lease, empty, no_lease, local, redis_unreachable, untracked)",
            &["policy", "outcome", "reason"],
        )?;
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
            redis_round_trip: r.float_gauge(
                "gateway_ratelimit_redis_round_trip_seconds",
                "The lease round trip to Redis, a moving average: what lease sizes are made for",
            )?,
            lease_wait: r.histogram(
                "gateway_ratelimit_lease_wait_seconds",
                "How long requests of keys without a lease waited for one (hot keys never wait)",
            )?,
            keys: r.gauge(
                "gateway_ratelimit_keys",
                "Client keys tracked by the limiter",
            )?,
        })
    }
}

impl Metrics {
    /// The decision counters of a policy, resolved once by the limiter that uses them (a
    /// reload builds its own).
    pub fn limit_decision_counters(
        &self,
        policy: &str,
        reasons: &[DecisionReason],
    ) -> DecisionCounters {
        DecisionCounters {
            family: self.limits.decisions.clone(),
            policy: policy.to_string(),
            reasons: reasons.to_vec(),
            slots: reasons.iter().map(|_| Default::default()).collect(),
        }
    }

    pub fn set_limit_redis_round_trip(&self, seconds: f64) {
        self.limits.redis_round_trip.set(seconds);
    }

    pub fn observe_lease_wait(&self, seconds: f64) {
        self.limits.lease_wait.observe(seconds);
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

/// The limiter's work with Redis and its decisions so far, for the dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LimiterTotals {
    pub redis_round_trips: u64,
    pub redis_errors: u64,
    /// The moving average of the lease round trip, in milliseconds.
    pub redis_round_trip_ms: f64,
    pub allowed: u64,
    pub limited: u64,
    /// Decided without Redis (unreachable, or a key it never answered for).
    pub fallback: u64,
}

impl Metrics {
    pub fn limiter_totals(&self) -> LimiterTotals {
        use prometheus::core::Collector;
        let mut t = LimiterTotals {
            redis_round_trips: self.limits.redis_round_trips.get(),
            redis_errors: self.limits.redis_errors.get(),
            redis_round_trip_ms: self.limits.redis_round_trip.get() * 1e3,
            ..LimiterTotals::default()
        };
        for family in self.limits.decisions.collect() {
            for m in family.metric.iter() {
                let n = m.counter.value() as u64;
                match super::requests::label(m, "outcome") {
                    Some("allowed") => t.allowed += n,
                    Some("limited") => t.limited += n,
                    Some("fallback") => t.fallback += n,
                    _ => {}
                }
            }
        }
        t
    }
}
