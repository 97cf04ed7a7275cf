//! An upstream pool: Pingora's `LoadBalancer` with active health checks, and the health
//! state the proxy and `/readyz` read without locks.

use crate::config::{HashKey, HealthCheckConfig, HealthCheckKind, PoolConfig, Selection};
use crate::observability::Metrics;
use async_trait::async_trait;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::services::background::background_service;
use pingora::services::ServiceWithDependents;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on backends a selection visits before giving up (Pingora's `max_iterations`).
const MAX_SELECT_ITERATIONS: usize = 256;

/// Health of one pool's backends, written by the health-check task and read by requests.
#[derive(Debug)]
pub struct PoolHealth {
    pub name: String,
    backends: Vec<BackendHealth>,
    /// How many backends are currently healthy. Starts at all of them, as Pingora does.
    healthy: AtomicUsize,
    /// Whether a health check runs at all (without one, backends are always healthy).
    has_health_check: bool,
}

#[derive(Debug)]
struct BackendHealth {
    addr: SocketAddr,
    healthy: AtomicBool,
    /// Set once the first active check of this backend has finished.
    checked: AtomicBool,
}

impl PoolHealth {
    fn new(name: &str, addrs: &[SocketAddr], has_health_check: bool) -> Self {
        Self {
            name: name.to_string(),
            backends: addrs
                .iter()
                .map(|&addr| BackendHealth {
                    addr,
                    healthy: AtomicBool::new(true),
                    checked: AtomicBool::new(false),
                })
                .collect(),
            healthy: AtomicUsize::new(addrs.len()),
            has_health_check,
        }
    }

    /// At least one backend is healthy: a request can be tried.
    pub fn any_healthy(&self) -> bool {
        // Relaxed: a stale read only delays the fast-fail by one check interval.
        self.healthy.load(Ordering::Relaxed) > 0
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

    /// (backend address, healthy) for every backend.
    pub fn snapshot(&self) -> Vec<(SocketAddr, bool)> {
        self.backends
            .iter()
            .map(|b| (b.addr, b.healthy.load(Ordering::Relaxed)))
            .collect()
    }

    fn find(&self, target: &Backend) -> Option<&BackendHealth> {
        let addr = target.addr.as_inet()?;
        self.backends.iter().find(|b| b.addr == *addr)
    }
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
        log::warn!(
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

enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

/// A named pool of backends, load-balanced and health-checked.
pub struct Pool {
    balancer: Balancer,
    pub hash_key: HashKey,
    pub health: Arc<PoolHealth>,
    /// How long until the next health check could change things: the `Retry-After` of a 503.
    pub retry_after: Duration,
}

impl Pool {
    /// Builds the pool from resolved backend addresses, and the background service that
    /// runs its health checks (to be added to the server).
    pub fn build(
        config: &PoolConfig,
        addrs: &[SocketAddr],
        metrics: &Arc<Metrics>,
    ) -> (Self, Box<dyn ServiceWithDependents>) {
        let backends: BTreeSet<Backend> = config
            .backends
            .iter()
            .zip(addrs)
            .map(|(b, addr)| Backend {
                addr: PingoraAddr::Inet(*addr),
                weight: if config.selection == Selection::RoundRobin {
                    1
                } else {
                    b.weight
                },
                ext: Default::default(),
            })
            .collect();
        let health = Arc::new(PoolHealth::new(
            &config.name,
            addrs,
            config.health_check.is_some(),
        ));
        for addr in addrs {
            metrics.set_backend_health(&config.name, addr, true);
        }
        let check = config.health_check.as_ref().map(|hc| {
            Box::new(ObservedCheck {
                inner: pingora_check(hc),
                health: health.clone(),
                metrics: metrics.clone(),
            }) as Box<dyn HealthCheck + Send + Sync>
        });
        let interval = config.health_check.as_ref().map(|hc| hc.interval);
        let name = format!("health checks of pool {}", config.name);
        macro_rules! balancer {
            ($variant:ident) => {{
                let mut lb = LoadBalancer::from_backends(Backends::new(Static::new(backends)));
                if let Some(check) = check {
                    lb.set_health_check(check);
                }
                lb.health_check_frequency = interval;
                lb.parallel_health_check = true;
                let service = background_service(&name, lb);
                let lb = service.task();
                (
                    Balancer::$variant(lb),
                    Box::new(service) as Box<dyn ServiceWithDependents>,
                )
            }};
        }
        let (balancer, service) = match config.selection {
            Selection::RoundRobin | Selection::Weighted => balancer!(RoundRobin),
            Selection::Random => balancer!(Random),
            Selection::ConsistentHash => balancer!(Consistent),
        };
        let pool = Pool {
            balancer,
            hash_key: config.hash_key.clone(),
            health,
            retry_after: interval.unwrap_or(Duration::from_secs(1)),
        };
        (pool, service)
    }

    /// Picks a healthy backend, skipping `exclude` (the one a retry just failed on).
    /// `key` is only used by consistent hashing.
    pub fn select(&self, key: &[u8], exclude: Option<&SocketAddr>) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| healthy && b.addr.as_inet() != exclude;
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        backend.addr.as_inet().copied()
    }

    /// Builds the backend list once so that selection works before the background service runs.
    pub async fn prime(&self) {
        let r = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.update().await,
            Balancer::Random(lb) => lb.update().await,
            Balancer::Consistent(lb) => lb.update().await,
        };
        if let Err(e) = r {
            log::error!("pool {}: cannot build backend list: {e}", self.health.name);
        }
    }
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
