//! The limiter's background service: the lease sync with Redis, or, without Redis, the
//! eviction of keys whose bucket is full again; stopped at shutdown or when a reload
//! retires its limiter.

use super::sync::{LeaseSync, SWEEP_EVERY};
use super::{Limiter, Replication};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;

/// The limiter's background work: lease sync with Redis, or only eviction without it.
pub enum LimiterService {
    /// No Redis: evict keys whose bucket is full again.
    Local(Arc<Limiter>),
    /// Redis: the lease sync, and with regions the replication of rights between them.
    Leases {
        sync: LeaseSync,
        replication: Option<Box<Replication>>,
    },
}

#[async_trait]
impl BackgroundService for LimiterService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Stops at server shutdown or when a reload retires the limiter, whichever first.
        let mut retired = match self {
            LimiterService::Leases { sync, .. } => sync.limiter.retired(),
            LimiterService::Local(limiter) => limiter.retired(),
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopper = async {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => {}
                _ = retired.wait_for(|r| *r) => {}
            }
            stop.send_replace(true);
        };
        let work = async {
            match self {
                LimiterService::Leases { sync, replication } => {
                    let replicate = async {
                        if let Some(r) = replication {
                            r.run(stopped.clone()).await;
                        }
                    };
                    tokio::join!(sync.run(stopped.clone()), replicate);
                }
                LimiterService::Local(limiter) => {
                    let mut stopped = stopped;
                    let mut ticker = tokio::time::interval(SWEEP_EVERY);
                    loop {
                        tokio::select! {
                            _ = stopped.changed() => break,
                            _ = ticker.tick() => limiter.evict_idle(limiter.clock.now(), SWEEP_EVERY),
                        }
                    }
                }
            }
        };
        tokio::join!(stopper, work);
    }
}
