//! Process signals: SIGTERM drains, SIGINT stops at once, SIGQUIT hands the sockets to a
//! new process. (SIGHUP, the config reload, is the reload service's: src/reload.rs.)
//!
//! Why not Pingora's own handling: on SIGTERM Pingora sleeps `grace_period` and then
//! shuts its runtimes down, which drops every task at once (`graceful_shutdown_timeout`
//! only waits for blocking threads), so a request needing longer than the grace period
//! was cut. Here the process waits for its in-flight requests instead:
//!
//! ```text
//! SIGTERM at t0   draining: /readyz 503, responses `Connection: close`, idle keep-alive
//!                 connections closed; the listener stays open (a load balancer may still
//!                 send) until no request is in flight or t0 + grace_period
//! then            Pingora stops the listener; the process exits 0 as soon as no request
//!                 is in flight, at the latest at t0 + grace_period + graceful_shutdown_timeout
//!                 (what is still in flight then is cut)
//! ```
//!
//! Pingora's own grace period is set longer than that deadline (see `app::server_conf`),
//! so its runtime shutdown is only a backstop.

use crate::drain::Drain;
use crate::observability::ACCESS_LOG_INTERVAL;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

/// The gateway's [`ShutdownSignalWatch`]: hand it to `Server::run`.
pub struct Signals {
    drain: Arc<Drain>,
    grace_period: Duration,
    shutdown_timeout: Duration,
}

impl Signals {
    pub fn new(drain: Arc<Drain>, grace_period: Duration, shutdown_timeout: Duration) -> Self {
        Self {
            drain,
            grace_period,
            shutdown_timeout,
        }
    }
}

/// Exits the process once the listener is closed and no request is left, or at `deadline`
/// (cutting what is left); SIGINT meanwhile exits at once. Runs on Pingora's server runtime,
/// which outlives the signal watch, while Pingora's main thread sleeps its (longer) grace
/// period.
fn exit_when_drained(drain: Arc<Drain>, deadline: Instant, mut interrupt: Option<Signal>) {
    tokio::spawn(async move {
        let left = tokio::select! {
            left = drain.finish(deadline.saturating_duration_since(Instant::now())) => left,
            _ = recv(&mut interrupt) => {
                log::info!("SIGINT received while draining, exiting");
                std::process::exit(0)
            }
        };
        if left == 0 {
            log::info!("drained: no request in flight, exiting");
        } else {
            log::warn!("shutdown timeout: {left} request(s) still in flight are cut");
        }
        // The access-log writer drains its queue every ACCESS_LOG_INTERVAL: let it write
        // the last requests' lines (process::exit does not wait for threads).
        tokio::time::sleep(2 * ACCESS_LOG_INTERVAL).await;
        std::process::exit(0)
    });
}

/// Receives `s`, or waits forever when its handler could not be installed.
async fn recv(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn install(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .map_err(|e| log::error!("cannot handle {name}: {e}"))
        .ok()
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut term = install(SignalKind::terminate(), "SIGTERM");
        let mut interrupt = install(SignalKind::interrupt(), "SIGINT");
        let mut quit = install(SignalKind::quit(), "SIGQUIT");
        tokio::select! {
            _ = recv(&mut interrupt) => return ShutdownSignal::FastShutdown,
            _ = recv(&mut quit) => {
                // Pingora sends the listening sockets to the new process, keeps accepting
                // for its fixed handover time (5 s), then stops the listener. Meanwhile
                // our responses close their connections, so clients reconnect to whichever
                // process accepts; after the listener stops, requests in flight get
                // `graceful_shutdown_timeout`.
                log::info!("SIGQUIT received: handing the sockets over, draining");
                self.drain.start();
                let drain = self.drain.clone();
                let timeout = self.shutdown_timeout;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = drain.wait_listener_closed() => {}
                        _ = recv(&mut interrupt) => std::process::exit(0),
                    }
                    exit_when_drained(drain, Instant::now() + timeout, interrupt);
                });
                return ShutdownSignal::GracefulUpgrade;
            }
            _ = recv(&mut term) => {}
        }
        let started = Instant::now();
        let deadline = started + self.grace_period + self.shutdown_timeout;
        log::info!(
            "SIGTERM received: draining {} request(s) in flight (grace {:?}, then at most {:?})",
            self.drain.in_flight(),
            self.grace_period,
            self.shutdown_timeout
        );
        self.drain.start();
        tokio::select! {
            _ = self.drain.drained() => {}
            _ = tokio::time::sleep_until(started + self.grace_period) => {}
            _ = recv(&mut interrupt) => return ShutdownSignal::FastShutdown,
        }
        // Pingora now stops the listener; we exit when the rest is done.
        exit_when_drained(self.drain.clone(), deadline, interrupt);
        ShutdownSignal::GracefulTerminate
    }
}
