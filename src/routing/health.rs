//! The health of a pool's backends: active health checks (Pingora's, observed) and the
//! circuit breakers fed by request outcomes, read by every request without locks.

use super::breaker::{Breaker, Outcome, Phase, State, Transition};
use crate::clock::Clock;
use crate::config::{HealthCheckConfig, HealthCheckKind, PoolConfig};
use crate::observability::Metrics;
use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Health of one pool's backends: active health checks and circuit breakers, written
/// by the health-check task and by request outcomes, read by every request.
pub struct PoolHealth {
    pub name: String,
    backends: Vec<BackendHealth>,
    /// How many backends are currently healthy. Starts at all of them, as Pingora does.
    healthy: AtomicUsize,
    /// How many breakers are open: while 0, availability is one atomic load.
    open: AtomicUsize,
    /// Whether a health check runs at all (without one, backends are always healthy).
    has_health_check: bool,
    /// The pool has circuit breakers (set once from config; read on every request).
    breakers: bool,
    /// 5xx responses count as breaker failures (set once from config).
    count_5xx: bool,
    /// The health-check interval: the `Retry-After` when backends are down by health.
    check_interval: Duration,
    pub(super) clock: Clock,
    metrics: Arc<Metrics>,
}

struct BackendHealth {
    addr: SocketAddr,
    label: String,
    healthy: AtomicBool,
    /// Set once the first active check of this backend has finished.
    checked: AtomicBool,
    /// `None` when the pool's breaker is disabled. Locked briefly, never across an await.
    breaker: Option<Mutex<Breaker>>,
    /// When the breaker last changed state ([`Clock`] ns; 0: never, since the pool was built).
    breaker_changed: AtomicU64,
}

/// One backend as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackendReport {
    pub backend: String,
    /// By active health checks (always true without them).
    pub healthy: bool,
    /// Whether a first health check has finished (false without health checks).
    pub checked: bool,
    /// `closed`, `open` or `half_open`; `None` without a breaker.
    pub breaker: Option<&'static str>,
    /// Seconds since the breaker's last change of state (or since the pool was built).
    pub breaker_since_seconds: Option<f64>,
}

impl std::fmt::Debug for PoolHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolHealth")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PoolHealth {
    pub(super) fn new(config: &PoolConfig, addrs: &[SocketAddr], metrics: &Arc<Metrics>) -> Self {
        Self {
            name: config.name.clone(),
            backends: addrs
                .iter()
                .map(|&addr| BackendHealth {
                    addr,
                    label: addr.to_string(),
                    healthy: AtomicBool::new(true),
                    checked: AtomicBool::new(false),
                    breaker: config
                        .circuit_breaker
                        .as_ref()
                        .map(|c| Mutex::new(Breaker::new(c.clone()))),
                    breaker_changed: AtomicU64::new(0),
                })
                .collect(),
            healthy: AtomicUsize::new(addrs.len()),
            open: AtomicUsize::new(0),
            has_health_check: config.health_check.is_some(),
            breakers: config.circuit_breaker.is_some(),
            count_5xx: config.circuit_breaker.as_ref().is_some_and(|c| c.count_5xx),
            check_interval: config
                .health_check
                .as_ref()
                .map_or(Duration::from_secs(1), |h| h.interval),
            clock: Clock::new(),
            metrics: metrics.clone(),
        }
    }

    /// At least one backend is healthy (by active checks).
    pub fn any_healthy(&self) -> bool {
        // Relaxed: a stale read only delays the fast-fail by one check interval.
        self.healthy.load(Ordering::Relaxed) > 0
    }

    /// Some backend may take a request now: healthy, and its breaker not open.
    pub fn available(&self) -> bool {
        if !self.any_healthy() {
            return false;
        }
        if self.open.load(Ordering::Acquire) == 0 {
            return true;
        }
        let now = self.clock.now();
        self.backends.iter().any(|b| {
            b.healthy.load(Ordering::Relaxed)
                && b.breaker.as_ref().is_none_or(|m| lock(m).would_allow(now))
        })
    }

    /// When to come back while nothing is available: the earliest end of an open period
    /// among healthy backends, else the health-check interval. At least a second.
    pub fn retry_after(&self) -> Duration {
        let now = self.clock.now();
        let earliest = self
            .backends
            .iter()
            .filter(|b| b.healthy.load(Ordering::Relaxed))
            .filter_map(|b| b.breaker.as_ref().map(|m| lock(m).wait(now)))
            .min();
        let wait = earliest.map_or(self.check_interval, Duration::from_nanos);
        wait.max(Duration::from_secs(1))
    }

    fn backend(&self, addr: &SocketAddr) -> Option<&BackendHealth> {
        self.backends.iter().find(|b| b.addr == *addr)
    }

    /// Takes a breaker slot for a request to `addr`: false if its breaker refuses.
    pub(super) fn acquire(&self, addr: &SocketAddr, now: u64) -> bool {
        let Some(b) = self.backend(addr) else {
            return true;
        };
        let Some(m) = &b.breaker else { return true };
        let (ok, t) = lock(m).try_acquire(now);
        if let Some(t) = t {
            self.transition(b, t);
        }
        ok
    }

    /// Whether some backend other than `exclude` could take a request (no slot taken).
    pub fn has_other(&self, exclude: Option<&SocketAddr>) -> bool {
        let now = self.clock.now();
        self.backends.iter().any(|b| {
            Some(&b.addr) != exclude
                && b.healthy.load(Ordering::Relaxed)
                && b.breaker.as_ref().is_none_or(|m| lock(m).would_allow(now))
        })
    }

    /// Records how a request to `addr` went (connect error, timeout, status, or abandoned).
    pub fn record(&self, addr: &SocketAddr, outcome: Outcome) {
        let Some(b) = self.backend(addr) else { return };
        let Some(m) = &b.breaker else { return };
        let t = lock(m).record(self.clock.now(), outcome);
        if let Some(t) = t {
            self.transition(b, t);
        }
    }

    /// Holds `addr`'s breaker slot for one attempt (`None` when the pool has no breakers):
    /// its outcome is then recorded exactly once.
    pub fn attempt(self: &Arc<Self>, addr: SocketAddr) -> Option<BackendAttempt> {
        self.breakers.then(|| BackendAttempt {
            health: Arc::clone(self),
            addr,
            recorded: false,
        })
    }

    /// Whether 5xx responses count as failures for this pool's breakers.
    pub fn counts_5xx(&self) -> bool {
        self.count_5xx
    }

    fn transition(&self, b: &BackendHealth, t: Transition) {
        b.breaker_changed.store(self.clock.now(), Ordering::Relaxed);
        if t.to == Phase::Open && t.from != Phase::Open {
            self.open.fetch_add(1, Ordering::AcqRel);
        } else if t.from == Phase::Open && t.to != Phase::Open {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
        let state = b
            .breaker
            .as_ref()
            .map_or(State::Closed, |m| lock(m).state());
        let level = if t.to == Phase::Open {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "pool {}: circuit of {} {} -> {}",
            self.name,
            b.addr,
            t.from.name(),
            t.to.name()
        );
        self.metrics
            .set_breaker_state(&self.name, &b.label, state.phase().gauge());
        self.metrics
            .count_breaker_transition(&self.name, &b.label, t.from.name(), t.to.name());
    }

    /// The number of requests refused at once because nothing was available.
    pub fn short_circuited(&self) {
        self.metrics.breaker_short_circuit(&self.name);
    }

    /// Why this pool cannot serve yet, if it cannot: no completed first check, or no healthy backend.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.has_health_check
            && self
                .backends
                .iter()
                .any(|b| !b.checked.load(Ordering::Acquire))
        {
            return Some(format!(
                "pool {}: first health check not finished",
                self.name
            ));
        }
        (!self.any_healthy()).then(|| format!("pool {}: no healthy backend", self.name))
    }

    /// Every backend's health and breaker, for the dashboard (locks each breaker briefly).
    pub fn report(&self) -> Vec<BackendReport> {
        let now = self.clock.now();
        self.backends
            .iter()
            .map(|b| BackendReport {
                backend: b.label.clone(),
                healthy: b.healthy.load(Ordering::Relaxed),
                checked: self.has_health_check && b.checked.load(Ordering::Acquire),
                breaker: b.breaker.as_ref().map(|m| lock(m).state().phase().name()),
                breaker_since_seconds: b.breaker.as_ref().map(|_| {
                    let since = now.saturating_sub(b.breaker_changed.load(Ordering::Relaxed));
                    Duration::from_nanos(since).as_secs_f64()
                }),
            })
            .collect()
    }

    /// Whether the pool runs active health checks.
    pub fn has_health_check(&self) -> bool {
        self.has_health_check
    }

    fn find(&self, target: &Backend) -> Option<&BackendHealth> {
        self.backend(target.addr.as_inet()?)
    }
}

fn lock(m: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    // A panic while holding it cannot leave a half-updated breaker worth refusing.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wraps Pingora's HTTP or TCP check to record results in [`PoolHealth`] and the metrics.
struct ObservedCheck {
    inner: Box<dyn HealthCheck + Send + Sync>,
    health: Arc<PoolHealth>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl HealthCheck for ObservedCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let result = self.inner.check(target).await;
        if let Some(b) = self.health.find(target) {
            b.checked.store(true, Ordering::Release);
        }
        if let Err(e) = &result {
            log::debug!(
                "health check of {} in pool {} failed: {e}",
                target.addr,
                self.health.name
            );
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let Some(b) = self.health.find(target) else {
            return;
        };
        // Pingora calls this only on a flip; the swap keeps the count right even if it repeated one.
        if b.healthy.swap(healthy, Ordering::AcqRel) != healthy {
            if healthy {
                self.health.healthy.fetch_add(1, Ordering::AcqRel);
            } else {
                self.health.healthy.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // Active checks drive the breaker too: failing opens it, passing lets trials in.
        if let Some(m) = &b.breaker {
            let t = lock(m).health(self.health.clock.now(), healthy);
            if let Some(t) = t {
                self.health.transition(b, t);
            }
        }
        // Down needs a human; recovery is news.
        let level = if healthy {
            log::Level::Info
        } else {
            log::Level::Warn
        };
        log::log!(
            level,
            "pool {}: backend {} is now {}",
            self.health.name,
            target.addr,
            if healthy { "healthy" } else { "unhealthy" }
        );
        self.metrics
            .set_backend_health(&self.health.name, &b.addr, healthy);
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

/// One attempt on a backend whose breaker let it through: recorded exactly once, by
/// [`BackendAttempt::record`], or as abandoned when dropped unrecorded (a retry moved on, a
/// request went away), so a half-open trial slot is never leaked.
pub struct BackendAttempt {
    health: Arc<PoolHealth>,
    addr: SocketAddr,
    recorded: bool,
}

impl BackendAttempt {
    /// Whether a 5xx answer counts as the backend's failure in this pool.
    pub fn counts_5xx(&self) -> bool {
        self.health.count_5xx
    }

    pub fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.health.record(&self.addr, outcome);
    }
}

impl Drop for BackendAttempt {
    fn drop(&mut self) {
        if !self.recorded {
            self.health.record(&self.addr, Outcome::Abandoned);
        }
    }
}

/// The pool's active health check, with every result recorded in `health`.
pub(super) fn observed_check(
    hc: &HealthCheckConfig,
    health: Arc<PoolHealth>,
    metrics: Arc<Metrics>,
) -> Box<dyn HealthCheck + Send + Sync> {
    Box::new(ObservedCheck {
        inner: pingora_check(hc),
        health,
        metrics,
    })
}

fn pingora_check(hc: &HealthCheckConfig) -> Box<dyn HealthCheck + Send + Sync> {
    match hc.kind {
        HealthCheckKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            check
        }
        HealthCheckKind::Http => {
            let mut check = HttpHealthCheck::new(&hc.host, false);
            check.peer_template.options.connection_timeout = Some(hc.timeout);
            check.peer_template.options.read_timeout = Some(hc.timeout);
            check.peer_template.options.write_timeout = Some(hc.timeout);
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            check.reuse_connection = true;
            check.req.set_uri(hc.path.parse().unwrap_or_default());
            let expected = hc.expected_status;
            check.validator = Some(Box::new(move |resp| {
                if resp.status.as_u16() == expected {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("unexpected status", resp.status.as_u16()),
                        format!("health check expected {expected}"),
                    )
                }
            }));
            Box::new(check)
        }
    }
}
