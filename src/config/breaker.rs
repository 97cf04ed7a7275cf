//! The circuit breaker's settings (`upstreams.<name>.circuit_breaker`), validated, with
//! their defaults in `upstreams.rs`'s raw section (Envoy's and Traefik's beside them in the README).

use std::time::Duration;

/// Breaker thresholds (validated config).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row (0 disables the rule).
    pub consecutive_failures: u32,
    /// Trip when failures / requests over `window` reach this (needs `min_requests`).
    pub failure_ratio: f64,
    pub window: Duration,
    pub min_requests: u32,
    /// First open period; doubles with each consecutive trip up to `max_open`.
    pub open_duration: Duration,
    pub max_open: Duration,
    /// Requests let through at once while half-open.
    pub half_open_trials: u32,
    /// Successful trials that close the breaker.
    pub close_after: u32,
    /// Whether upstream 5xx responses count as failures.
    pub count_5xx: bool,
}
