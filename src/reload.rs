//! Config reload on SIGHUP, and the pools' health checks (which a reload starts and stops).
//!
//! ```text
//! SIGHUP ─► read + validate the file ──problems──► keep serving the old config, log each one
//!                 │ ok
//!                 ▼
//!          a change that needs a restart (listen, admin, server, rate_limits.redis, access_log)?
//!                 │ yes ─► refused: keep the old config, say what changed and `-u`
//!                 ▼ no
//!          build the new snapshot: unchanged pools carried over with their health and
//!          breakers; new pools primed and their health checks started
//!                 ▼
//!          swap it in (requests in flight finish on the old one); dropped pools' checks stop
//! ```
//!
//! Rate limits: an unchanged `rate_limits` section keeps its limiter whole. Changed
//! policies get a new limiter in which every unchanged policy keeps its state (local
//! buckets are carried over; with Redis the buckets live in Redis by policy name); the
//! old limiter returns its leases and stops. `rate_limits.redis` needs a restart.

use crate::config::{self, Config};
use crate::observability::Metrics;
use crate::proxy::Snapshot;
use crate::routing::{describe_unresolved, resolve_backends};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is in force.
    Applied,
    /// The file could not be read or validated: nothing changed.
    Invalid(String),
    /// The file changes something only a restart can: nothing changed.
    Refused(Vec<String>),
}

impl ReloadOutcome {
    fn label(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied => "applied",
            ReloadOutcome::Invalid(_) => "invalid",
            ReloadOutcome::Refused(_) => "refused",
        }
    }
}

/// The hex SHA-256 of a config file's bytes (the `gateway_config_info` label).
pub fn file_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sections a reload cannot change, with why, when `next` differs from `now` in them.
pub fn restart_only_changes(now: &Config, next: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if now.listen != next.listen {
        changed.push("listen (addresses are bound at start)".to_string());
    }
    if now.admin != next.admin {
        changed.push("admin (the token is read at start)".to_string());
    }
    if now.server != next.server {
        changed.push("server (threads and process settings are fixed at start)".to_string());
    }
    if now.rate_limits.redis != next.rate_limits.redis {
        changed.push("rate_limits.redis (the Redis connection is made at start)".to_string());
    }
    if now.access_log != next.access_log {
        changed.push("access_log (the writer is opened at start)".to_string());
    }
    changed
}

/// Re-reads the config file on SIGHUP and swaps what may change; runs every pool's
/// health checks.
pub struct Reloader {
    pub path: PathBuf,
    /// The config in force.
    pub current: Mutex<Config>,
    pub state: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
}

impl Reloader {
    /// Starts the health checks of `pools` (those of a new snapshot that are not carried over).
    fn start_health_checks<'a>(
        pools: impl Iterator<Item = &'a Arc<crate::routing::Pool>>,
        shutdown: &ShutdownWatch,
    ) {
        for pool in pools {
            let pool = Arc::clone(pool);
            let shutdown = shutdown.clone();
            tokio::spawn(async move { pool.run_health_checks(shutdown).await });
        }
    }

    /// Reads, validates and applies the file. Never panics, never leaves a half-applied config.
    pub async fn reload(&self, shutdown: &ShutdownWatch) -> ReloadOutcome {
        let outcome = self.try_reload(shutdown).await;
        self.metrics.observe_reload(outcome.label());
        match &outcome {
            ReloadOutcome::Applied => {}
            ReloadOutcome::Invalid(why) => {
                log::error!("reload: the old config stays in force: {why}")
            }
            ReloadOutcome::Refused(what) => log::error!(
                "reload refused, the old config stays in force: changed {}; these take effect only on a restart or a zero-downtime upgrade (start a new gateway with -u, then send this one SIGQUIT)",
                what.join(", ")
            ),
        }
        outcome
    }

    async fn try_reload(&self, shutdown: &ShutdownWatch) -> ReloadOutcome {
        let (bytes, next) = match self.read() {
            Ok(read) => read,
            Err(why) => return ReloadOutcome::Invalid(why),
        };
        let changed = {
            let now = self.current.lock().unwrap_or_else(|e| e.into_inner());
            restart_only_changes(&now, &next)
        };
        if !changed.is_empty() {
            return ReloadOutcome::Refused(changed);
        }
        let addrs = match resolve(&next).await {
            Ok(a) => a,
            Err(why) => return ReloadOutcome::Invalid(why),
        };
        let added = self.swap_in(&next, &addrs, shutdown).await;
        self.metrics.set_config_hash(&file_hash(&bytes));
        log::info!(
            "reload: applied {}: {} route(s), {} pool(s) ({} new)",
            self.path.display(),
            next.routes.len(),
            next.upstreams.len(),
            added
        );
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = next;
        ReloadOutcome::Applied
    }

    /// The file's bytes and the config they validate to, or why not.
    fn read(&self) -> Result<(Vec<u8>, Config), String> {
        let bytes =
            std::fs::read(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        // Parsed from the bytes that are hashed, so the hash names exactly what is applied.
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| {
                vec![config::Problem {
                    at: String::new(),
                    line: None,
                    message: format!("not UTF-8: {e}"),
                }]
            })
            .and_then(config::parse);
        match parsed {
            Ok(next) => Ok((bytes, next)),
            Err(problems) => Err(config::ConfigError::Invalid {
                path: self.path.clone(),
                problems,
            }
            .to_string()),
        }
    }

    /// Builds the snapshot of `next` and swaps it in: new pools primed and their health
    /// checks started before, pools and a limiter that are gone retired after. Returns how
    /// many pools are new.
    async fn swap_in(
        &self,
        next: &Config,
        addrs: &[Vec<SocketAddr>],
        shutdown: &ShutdownWatch,
    ) -> usize {
        let old = self.state.load_full();
        let snapshot = Snapshot::build(next, addrs, &self.metrics, Some(&old));
        let added: Vec<_> = snapshot.pools_not_in(&old).cloned().collect();
        // Backend lists first, so the new pools can serve from the first request.
        for pool in &added {
            pool.prime().await;
        }
        Self::start_health_checks(added.iter(), shutdown);
        let new_limiter = !Arc::ptr_eq(&snapshot.limiter, &old.limiter);
        if new_limiter {
            let service = snapshot.limiter.service();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { service.start(shutdown).await });
        }
        let snapshot = Arc::new(snapshot);
        self.state.store(Arc::clone(&snapshot));
        if new_limiter {
            // Requests still holding the old snapshot finish on it; its leases go back.
            old.limiter.retire();
        }
        self.retire_pools(&old, &snapshot);
        added.len()
    }

    /// Stops the pools of `old` that `new` does not hold, and drops the series of their
    /// backends that no pool of `new` has.
    fn retire_pools(&self, old: &Snapshot, new: &Snapshot) {
        for pool in old.pools_not_in(new) {
            pool.retire();
            let (name, addrs) = pool.backends();
            for addr in addrs {
                let still_there = new.pools.iter().any(|p| {
                    let (n, a) = p.backends();
                    n == name && a.contains(addr)
                });
                if !still_there {
                    self.metrics.forget_backend(name, addr);
                }
            }
        }
    }
}

/// Resolves the backends of `next` off the async threads (DNS blocks), or says why not.
async fn resolve(next: &Config) -> Result<Vec<Vec<SocketAddr>>, String> {
    let next = next.clone();
    match tokio::task::spawn_blocking(move || resolve_backends(&next)).await {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(errors)) => Err(describe_unresolved(&errors, "; ")),
        Err(e) => Err(format!("backend resolution did not finish: {e}")),
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        Self::start_health_checks(self.state.load().pools.iter(), &shutdown);
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP, config reload is off: {e}");
                None
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    log::info!("SIGHUP: reloading {}", self.path.display());
                    self.reload(&shutdown).await;
                }
            }
        }
    }
}
