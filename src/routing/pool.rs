//! An upstream pool: Pingora's `LoadBalancer` with active health checks, and the health
//! state the proxy and `/readyz` read without locks.

use super::breaker::Phase;
use super::health::{observed_check, PoolHealth};
use crate::config::{HashKey, PoolConfig, Selection};
use crate::observability::Metrics;
use pingora::lb::discovery::Static;
use pingora::lb::selection::{Consistent, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// Upper bound on backends a selection visits before giving up (Pingora's `max_iterations`).
const MAX_SELECT_ITERATIONS: usize = 256;

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
    /// What it was built from: a reload keeps the pool (its health and breaker state)
    /// when both are unchanged.
    config: PoolConfig,
    addrs: Vec<SocketAddr>,
    /// Set when a reload drops the pool: its health checks stop.
    retired: tokio::sync::watch::Sender<bool>,
}

impl Pool {
    /// Builds the pool from resolved backend addresses. Its health checks run once
    /// [`Pool::run_health_checks`] is spawned.
    pub fn build(config: &PoolConfig, addrs: &[SocketAddr], metrics: &Arc<Metrics>) -> Self {
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
        let health = Arc::new(PoolHealth::new(config, addrs, metrics));
        for addr in addrs {
            metrics.set_backend_health(&config.name, addr, true);
            if config.circuit_breaker.is_some() {
                metrics.set_breaker_state(&config.name, &addr.to_string(), Phase::Closed.gauge());
            }
        }
        let check = config
            .health_check
            .as_ref()
            .map(|hc| observed_check(hc, health.clone(), metrics.clone()));
        let interval = config.health_check.as_ref().map(|hc| hc.interval);
        macro_rules! balancer {
            ($variant:ident) => {{
                let mut lb = LoadBalancer::from_backends(Backends::new(Static::new(backends)));
                if let Some(check) = check {
                    lb.set_health_check(check);
                }
                lb.health_check_frequency = interval;
                lb.parallel_health_check = true;
                Balancer::$variant(Arc::new(lb))
            }};
        }
        let balancer = match config.selection {
            Selection::RoundRobin | Selection::Weighted => balancer!(RoundRobin),
            Selection::Random => balancer!(Random),
            Selection::ConsistentHash => balancer!(Consistent),
        };
        Pool {
            balancer,
            hash_key: config.hash_key.clone(),
            health,
            config: config.clone(),
            addrs: addrs.to_vec(),
            retired: tokio::sync::watch::channel(false).0,
        }
    }

    /// The pool's name and backend addresses.
    pub fn backends(&self) -> (&str, &[SocketAddr]) {
        (&self.config.name, &self.addrs)
    }

    /// Whether this pool was built from exactly `config` and `addrs`.
    pub fn same_as(&self, config: &PoolConfig, addrs: &[SocketAddr]) -> bool {
        &self.config == config && self.addrs == addrs
    }

    /// Stops the pool's health checks (a reload dropped it; requests still holding it
    /// finish on its last known health).
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Runs the pool's health checks (Pingora's load-balancer service) until the server
    /// shuts down or the pool is retired.
    pub async fn run_health_checks(&self, mut shutdown: ShutdownWatch) {
        let (stop, watch) = tokio::sync::watch::channel(false);
        let mut retired = self.retired.subscribe();
        let checks = async {
            match &self.balancer {
                Balancer::RoundRobin(lb) => lb.start(watch).await,
                Balancer::Random(lb) => lb.start(watch).await,
                Balancer::Consistent(lb) => lb.start(watch).await,
            }
        };
        let stopper = async {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                _ = retired.wait_for(|r| *r) => {}
            }
            stop.send_replace(true);
        };
        tokio::join!(checks, stopper);
    }

    /// Picks a healthy backend whose breaker lets the request through (taking a half-open
    /// trial slot if it is one), skipping `exclude` (the one a retry just failed on).
    /// `key` is only used by consistent hashing.
    pub fn select(&self, key: &[u8], exclude: Option<&SocketAddr>) -> Option<SocketAddr> {
        let now = self.health.clock.now();
        let accept = |b: &Backend, healthy: bool| {
            let Some(addr) = b.addr.as_inet() else {
                return false;
            };
            // Checked last: only the backend finally accepted takes a breaker slot.
            healthy && Some(addr) != exclude && self.health.acquire(addr, now)
        };
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
