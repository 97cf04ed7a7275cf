//! Draining: whether the gateway is shutting down, and how many requests are in flight.
//!
//! One `Drain` is shared by the connection loop (counts requests, closes idle
//! connections), the proxy hooks (answer with `Connection: close`), the admin listener
//! (`/readyz` is 503) and the signal handler (waits for the count to reach zero).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The shutdown state shared by every part of the process that serves clients.
pub struct Drain {
    /// Set once, by [`Drain::start`]; never cleared.
    draining: AtomicBool,
    /// The same flag for tasks that wait: idle keep-alive connections watch it.
    started: watch::Sender<bool>,
    /// Requests between their first byte and the end of their response.
    in_flight: AtomicUsize,
    /// Woken when `in_flight` drops to zero while draining.
    idle: Notify,
    /// Set when the proxy listener has stopped accepting (Pingora's shutdown reached it).
    listener_closed: AtomicBool,
    listener_closed_notify: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            started: watch::Sender::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            listener_closed: AtomicBool::new(false),
            listener_closed_notify: Notify::new(),
        }
    }
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining: from now on responses close their connection, idle connections
    /// close, and `/readyz` answers 503. Idempotent.
    pub fn start(&self) {
        // SeqCst pairs with the load in `InFlight::drop`: either the last request out sees
        // `draining` and wakes `drained()`, or `drained()` sees its decrement.
        self.draining.store(true, Ordering::SeqCst);
        self.started.send_replace(true);
    }

    /// One atomic load: cheap enough for every request.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A receiver that changes to `true` when draining starts (check [`Self::is_draining`]
    /// first: a receiver made after the start sees no change).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.started.subscribe()
    }

    /// Counts one request as in flight until the guard is dropped.
    pub fn request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight. Only meaningful while draining (a request
    /// that ends before the drain started wakes nobody).
    pub async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Register before checking, so a decrement between the check and the await
            // cannot be missed.
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Called by the connection loop once the proxy listener no longer accepts.
    pub fn listener_closed(&self) {
        self.listener_closed.store(true, Ordering::SeqCst);
        self.listener_closed_notify.notify_waiters();
    }

    /// Resolves once [`Self::listener_closed`] was called.
    pub async fn wait_listener_closed(&self) {
        loop {
            let closed = self.listener_closed_notify.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.listener_closed.load(Ordering::SeqCst) {
                return;
            }
            closed.await;
        }
    }

    /// Waits until the listener is closed and no request is left, or `limit` passed.
    /// Returns how many requests were still in flight (0: fully drained).
    pub async fn finish(&self, limit: Duration) -> usize {
        let done = async {
            self.wait_listener_closed().await;
            self.drained().await;
        };
        let _ = tokio::time::timeout(limit, done).await;
        self.in_flight()
    }
}

/// A request in flight; dropping it ends the request.
pub struct InFlight<'a>(&'a Drain);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.draining.load(Ordering::SeqCst)
        {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_the_last_request() {
        let drain = std::sync::Arc::new(Drain::new());
        let a = drain.request();
        let b = drain.request();
        drain.start();
        assert!(drain.is_draining());
        assert_eq!(drain.in_flight(), 2);
        drop(a);
        let waiter = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(drain.in_flight(), 0);
    }

    #[tokio::test]
    async fn finish_gives_up_after_the_limit() {
        let drain = Drain::new();
        let _stuck = drain.request();
        drain.start();
        drain.listener_closed();
        assert_eq!(drain.finish(Duration::from_millis(10)).await, 1);
    }

    #[tokio::test]
    async fn a_watch_sees_the_start() {
        let drain = Drain::new();
        let mut rx = drain.watch();
        drain.start();
        rx.changed().await.unwrap();
        assert!(*rx.borrow());
    }
}
