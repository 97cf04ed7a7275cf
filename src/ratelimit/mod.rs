//! Rate limiting: token buckets per client key, exact across instances through Redis
//! leases, with no Redis round trip on the request path.
//!
//! ```text
//! request ──► Limiter::check ──► lease left? ──yes──► spend it (one CAS)        allowed
//!                  │                 │no
//!                  │           "empty until T"? ──yes──────────────────────────► limited
//!                  │                 │no
//!                  │           queue the key, wait ≤ lease_wait for the sync ──► spend / limited
//!                  │
//!  LeaseSync (background, every sync_interval): one pipelined round trip grants
//!  leases to every queued key (Lua, Redis's clock), returns idle leases, evicts idle keys.
//! ```
//!
//! Guarantee: an instance only admits what Redis granted it, so all instances together
//! admit at most what the bucket allows, plus the cold-start allowance when that mode is
//! chosen (`cold_start_allowance` x instances per key per idle period). Without Redis, or
//! while it is unreachable, the policy's `on_redis_error` applies.

pub mod bucket;
mod decision;
mod keys;
mod lease;
mod policy;
pub mod regions;
mod replication;
pub(crate) use replication::{connect, io_error};
mod service;
mod sync;

pub use crate::clock::Clock;
pub use bucket::{Bucket, Shape, Take};
pub use decision::{ceil_secs, Decision, Reason};
pub use keys::KeyState;
pub use policy::{limit_key, Policy};
pub use replication::Replication;
pub use service::LimiterService;
pub use sync::LeaseSync;

use crate::config::{ColdStart, OnRedisError, PolicyId, RateLimitConfig, RedisConfig, SHARE_UNITS};
use crate::observability::Metrics;
use keys::KeyTable;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const UNREACHABLE: Reason = Reason::RedisUnreachable;

/// State shared between the request path and the [`LeaseSync`] service.
pub(crate) struct Shared {
    pub config: RedisConfig,
    /// Keys that need a lease (or more of one).
    pub queue: Mutex<Vec<Arc<KeyState>>>,
    /// Wakes the sync service before its tick when a request is waiting.
    pub wake: Notify,
    /// False while Redis is unreachable: decisions use the fallback.
    pub redis_ok: AtomicBool,
    /// A moving average of the lease round trip (nanoseconds; 0 before the first).
    rtt_ns: AtomicU64,
}

impl Shared {
    /// The round trip to Redis as measured so far (zero before the first).
    pub fn round_trip(&self) -> Duration {
        Duration::from_nanos(self.rtt_ns.load(Ordering::Relaxed))
    }

    /// How long before a grant arrives once asked for: a round trip and a tick.
    pub fn lead(&self) -> Duration {
        Duration::from_nanos(self.lead_nanos())
    }

    fn lead_nanos(&self) -> u64 {
        let tick = u64::try_from(self.config.sync_interval.as_nanos()).unwrap_or(u64::MAX);
        self.rtt_ns.load(Ordering::Relaxed).saturating_add(tick)
    }

    /// Folds one measured round trip into the average (weight 1/8: a few ticks to follow a
    /// change, steady under jitter). Only the sync service writes it.
    pub fn measured_round_trip(&self, took: Duration) {
        let sample = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let old = self.rtt_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.rtt_ns.store(new, Ordering::Relaxed);
    }

    fn enqueue(&self, st: &Arc<KeyState>, urgent: bool) {
        if !st.queued.swap(true, Ordering::AcqRel) {
            self.queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(st.clone());
        }
        if urgent {
            self.wake.notify_one();
        }
    }
}

/// The rate limiter of one gateway process (of one config: a reload that changes the
/// policies builds another, see [`Limiter::reloaded`]).
pub struct Limiter {
    pub policies: Vec<Policy>,
    /// Per policy; shared with the next limiter when a reload keeps the policy.
    tables: Vec<Arc<KeyTable>>,
    /// Per policy: the one bucket every key shares while the policy's table is full, so
    /// that a flood of new keys (one per request) is limited as one client, not admitted.
    overflow: Vec<Mutex<Bucket>>,
    shared: Option<Arc<Shared>>,
    pub clock: Clock,
    metrics: Arc<Metrics>,
    /// Per policy: decision counters by [`Reason`] (index) and allowed/limited.
    decisions: Vec<crate::observability::DecisionCounters>,
    /// What it was built from.
    config: RateLimitConfig,
    /// Set when a reload replaces this limiter: its service returns its leases and stops.
    retired: tokio::sync::watch::Sender<bool>,
    /// With regions: the split of every key's limit between them (see [`replication`]).
    pub(crate) regions: Option<Arc<replication::RegionSplit>>,
}

impl Limiter {
    pub fn new(config: &RateLimitConfig, metrics: Arc<Metrics>) -> Self {
        Self::with_tables(config, metrics, |_| None)
    }

    /// The limiter of a reloaded config. Without Redis, a policy that is unchanged (same
    /// name, settings, position and `max_keys`) keeps its buckets, so a reload never hands
    /// out fresh ones. With Redis the buckets live in Redis under the policy's name, so an
    /// unchanged policy continues where it was; the old limiter's leases go back when it
    /// is retired.
    pub fn reloaded(config: &RateLimitConfig, metrics: Arc<Metrics>, old: &Limiter) -> Self {
        let local = config.redis.is_none() && old.config.redis.is_none();
        let same_capacity = config.max_keys == old.config.max_keys;
        Self::with_tables(config, metrics, |i| {
            let (new, was) = (config.policies.get(i)?, old.config.policies.get(i)?);
            (local && same_capacity && new == was)
                .then(|| old.tables.get(i).cloned())
                .flatten()
        })
    }

    fn with_tables(
        config: &RateLimitConfig,
        metrics: Arc<Metrics>,
        kept: impl Fn(usize) -> Option<Arc<KeyTable>>,
    ) -> Self {
        let instances = config.redis.as_ref().map_or(1, |r| r.expected_instances);
        let policies: Vec<Policy> = config
            .policies
            .iter()
            .map(|p| Policy::new(p, instances))
            .collect();
        let shared = config.redis.as_ref().map(|r| {
            Arc::new(Shared {
                config: r.clone(),
                queue: Mutex::new(Vec::new()),
                wake: Notify::new(),
                // Optimistic until the first round trip says otherwise; requests wait
                // at most `lease_wait` for it.
                redis_ok: AtomicBool::new(true),
                rtt_ns: AtomicU64::new(0),
            })
        });
        let overflow = policies
            .iter()
            .map(|p| {
                let shape = if config.redis.is_some() {
                    &p.fallback_shape
                } else {
                    &p.shape
                };
                Mutex::new(Bucket::full(shape, 0))
            })
            .collect();
        let reasons = Reason::metric_labels();
        let decisions = config
            .policies
            .iter()
            .map(|p| {
                let c = metrics.limit_decision_counters(&p.name, &reasons);
                let usual = if config.redis.is_some() {
                    [(Reason::Lease, true), (Reason::Empty, false)]
                } else {
                    [(Reason::Local, true), (Reason::Local, false)]
                };
                for (r, allowed) in usual {
                    c.touch(r as usize, allowed);
                }
                c
            })
            .collect();
        Self {
            tables: (0..config.policies.len())
                .map(|i| kept(i).unwrap_or_else(|| Arc::new(KeyTable::new(config.max_keys))))
                .collect(),
            decisions,
            policies,
            shared,
            clock: Clock::new(),
            metrics,
            config: config.clone(),
            overflow,
            retired: tokio::sync::watch::channel(false).0,
            regions: config
                .regions
                .as_ref()
                .filter(|_| config.redis.is_some())
                .map(|r| Arc::new(replication::RegionSplit::new(r))),
        }
    }

    /// Whether this limiter was built from exactly `config`.
    pub fn same_as(&self, config: &RateLimitConfig) -> bool {
        &self.config == config
    }

    /// A reload replaced this limiter: its service returns its leases and stops.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Fires when the limiter is retired.
    pub(crate) fn retired(&self) -> tokio::sync::watch::Receiver<bool> {
        self.retired.subscribe()
    }

    fn observe(&self, p: PolicyId, d: &Decision) {
        if let Some(c) = self.decisions.get(p.0) {
            c.count(d.reason as usize, d.allowed);
        }
    }

    /// True when limits are shared through Redis.
    pub fn is_distributed(&self) -> bool {
        self.shared.is_some()
    }

    /// With Redis: whether the lease sync reaches it now (`None` without Redis).
    pub fn redis_reachable(&self) -> Option<bool> {
        self.shared
            .as_ref()
            .map(|s| s.redis_ok.load(Ordering::Acquire))
    }

    /// The Redis this limiter shares its limits through, if any.
    pub fn redis_config(&self) -> Option<&RedisConfig> {
        self.shared.as_ref().map(|s| &s.config)
    }

    /// The background service: lease sync with Redis, or eviction alone without it.
    pub fn service(self: &Arc<Self>) -> LimiterService {
        match &self.shared {
            Some(s) => LimiterService::Leases {
                sync: LeaseSync::new(self.clone(), s.clone()),
                replication: self.regions.as_ref().map(|split| {
                    Box::new(Replication::new(
                        self.clone(),
                        split.clone(),
                        s.config.clone(),
                    ))
                }),
            },
            None => LimiterService::Local(self.clone()),
        }
    }

    pub fn policy(&self, p: PolicyId) -> Option<&Policy> {
        self.policies.get(p.0)
    }

    /// Decides one request of `key` under policy `p` if that needs no waiting: a key with
    /// a live lease or a known-empty bucket (with Redis), or any known key (without). One
    /// shard read lock, a few atomics, no allocation, no await.
    pub fn try_check(&self, p: PolicyId, key: &[u8]) -> Option<Decision> {
        let (policy, table) = (self.policies.get(p.0)?, self.tables.get(p.0)?);
        let d = table
            .peek(key, |st| match &self.shared {
                None => Some(self.local(st, &policy.shape, self.clock.now(), Reason::Local)),
                Some(shared) => {
                    // Coarse time is enough here: idle tracking works in seconds, and an
                    // "empty until" read a tick late only rejects a tick longer.
                    let now = self.clock.coarse();
                    st.last_used.store(now, Ordering::Relaxed);
                    let d = self.spend_lease(shared, st, policy, now);
                    // Counted where it is decided: a request this leaves undecided goes
                    // on to `decide`, which counts it.
                    if d.is_some() {
                        self.count_request(st);
                    }
                    d
                }
            })
            .flatten()?;
        self.observe(p, &d);
        Some(d)
    }

    /// Decides one request of `key` under policy `p`. Returns at once unless the key has
    /// no lease and no known-empty state, in which case it waits (at most `lease_wait`)
    /// for the next sync round trip. Never talks to Redis itself.
    pub async fn check(&self, p: PolicyId, key: &[u8]) -> Decision {
        if let Some(d) = self.try_check(p, key) {
            return d;
        }
        let d = self.decide(p, key).await;
        self.observe(p, &d);
        d
    }

    /// The slow path: new keys, empty leases, fallbacks.
    async fn decide(&self, p: PolicyId, key: &[u8]) -> Decision {
        let (Some(policy), Some(table)) = (self.policies.get(p.0), self.tables.get(p.0)) else {
            return Decision::allowed(0, Duration::ZERO, Reason::Untracked);
        };
        let now = self.clock.now();
        let allowance = match &self.shared {
            Some(s) if s.config.cold_start == ColdStart::Allowance => {
                s.config.cold_start_allowance as i64
            }
            _ => 0,
        };
        let made = table.get_or_insert(key, || {
            let st = KeyState::new(
                p,
                key,
                now,
                Bucket::full(self.local_shape(policy), now),
                allowance,
            );
            if let Some(split) = &self.regions {
                st.share.store(split.initial_share(), Ordering::Relaxed);
            }
            st
        });
        let Some((st, created)) = made else {
            // Table full: no state to decide with. Bounded memory wins; see README.
            return self.without_state(p, policy, now);
        };
        st.last_used.store(now, Ordering::Relaxed);
        let Some(shared) = &self.shared else {
            return self.local(&st, &policy.shape, now, Reason::Local);
        };
        st.hits.fetch_add(1, Ordering::Relaxed);
        self.count_request(&st);
        if created {
            shared.enqueue(&st, allowance == 0);
        }
        if let Some(d) = self.spend_lease(shared, &st, policy, now) {
            return d;
        }
        if !shared.redis_ok.load(Ordering::Acquire) {
            return self.fallback(&st, policy, now);
        }
        // A cold key waits for its first lease, at most `lease_wait`, however many round
        // trips that takes. A warm key whose lease ran dry waits for one round trip only:
        // if the refill it asked for does not cover it, its demand outran what Redis can
        // grant (over its limit), and more waiting would only add latency to a 429.
        let seen = st.seen_at.load(Ordering::Acquire);
        let warm = seen != 0;
        let shape = self.key_shape(policy, &st);
        // "At its limit" holds until the empty spell ends, or a token has had time to
        // accrue since the last grant: a client that honoured Retry-After waits for its
        // token instead of getting another 429.
        let limit_until = st
            .empty_until
            .load(Ordering::Acquire)
            .max(seen.saturating_add(shape.time_for(1.0).as_nanos() as u64));
        if warm && st.over.load(Ordering::Acquire) && now < limit_until {
            // At its limit (Redis had nothing left at the last grant): the refill is asked
            // for and serves the next requests. This one is answered at once, so that a
            // hot key never adds a round trip; a token is due in about `1 / rate`.
            shared.enqueue(&st, true);
            return Decision::limited(shape.time_for(1.0), Reason::NoLease);
        }
        let started = tokio::time::Instant::now();
        let d = self
            .wait_for_lease(
                shared,
                &st,
                policy,
                started,
                if warm { 1 } else { usize::MAX },
            )
            .await;
        self.metrics
            .observe_lease_wait(started.elapsed().as_secs_f64());
        d
    }

    /// No lease and no word from Redis yet: waits for the sync service, at most
    /// `lease_wait` in all (a grant may go to other waiters first; then it waits again).
    async fn wait_for_lease(
        &self,
        shared: &Shared,
        st: &Arc<KeyState>,
        policy: &Policy,
        started: tokio::time::Instant,
        mut rounds: usize,
    ) -> Decision {
        let deadline = started + shared.config.lease_wait;
        loop {
            let notified = st.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.spend_lease(shared, st, policy, self.clock.now()) {
                return d;
            }
            if !shared.redis_ok.load(Ordering::Acquire)
                || tokio::time::Instant::now() >= deadline
                || rounds == 0
            {
                break;
            }
            rounds -= 1;
            shared.enqueue(st, true);
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        if !shared.redis_ok.load(Ordering::Acquire) {
            return self.fallback(st, policy, self.clock.now());
        }
        // Redis is up but its lease did not arrive in time: refused, not guessed. The
        // lease still arrives and serves the next requests.
        Decision::limited(shared.config.lease_wait, Reason::NoLease)
    }

    /// The decision a lease or a known-empty bucket gives, if any.
    fn spend_lease(
        &self,
        shared: &Shared,
        st: &Arc<KeyState>,
        policy: &Policy,
        now: u64,
    ) -> Option<Decision> {
        if let Some(left) = st.spend() {
            if left <= st.low_water.load(Ordering::Relaxed) {
                shared.enqueue(st, false);
            }
            let remaining = left as u64 + st.redis_left.load(Ordering::Relaxed);
            let shape = self.key_shape(policy, st);
            let reset = shape.time_for(shape.burst - remaining as f64);
            return Some(Decision::allowed(remaining, reset, Reason::Lease));
        }
        let until = st.empty_until.load(Ordering::Acquire);
        if now >= until {
            return None;
        }
        // Still wanted near the end of the empty spell: ask now, so that the refill
        // arrives as the spell ends instead of a round trip after it.
        if until - now <= shared.lead_nanos() {
            shared.enqueue(st, false);
        }
        Some(Decision::limited(
            Duration::from_nanos(until - now),
            Reason::Empty,
        ))
    }

    fn local_shape<'a>(&self, policy: &'a Policy) -> &'a Shape {
        if self.shared.is_some() {
            &policy.fallback_shape
        } else {
            &policy.shape
        }
    }

    fn local(&self, st: &KeyState, shape: &Shape, now: u64, reason: Reason) -> Decision {
        let mut b = st.local.lock().unwrap_or_else(|e| e.into_inner());
        let take = b.take(shape, now);
        Decision::from_take(take, b.time_to_full(shape), reason)
    }

    /// The bucket a key's leases come from: the policy's, or with regions this region's
    /// part of it (its share, as last replicated), so that lease sizes, empty spells and
    /// `Retry-After` follow the rate this region actually has.
    pub(crate) fn key_shape(&self, policy: &Policy, st: &KeyState) -> Shape {
        match self.regions {
            None => policy.shape,
            Some(_) => {
                let share = st.share.load(Ordering::Relaxed) as f64 / SHARE_UNITS as f64;
                policy.shape.scaled(share)
            }
        }
    }

    /// `<policy>:<client key>`: a key's name in Redis (after the key prefix) and in the
    /// regions' active-key sets.
    pub(crate) fn key_name(&self, policy: PolicyId, key: &[u8]) -> Vec<u8> {
        let policy = self.policies.get(policy.0).map_or("", |p| p.name.as_str());
        let mut name = Vec::with_capacity(policy.len() + 1 + key.len());
        name.extend_from_slice(policy.as_bytes());
        name.push(b':');
        name.extend_from_slice(key);
        name
    }

    /// With regions, counts the request toward the region's demand for the key.
    fn count_request(&self, st: &KeyState) {
        if self.regions.is_some() {
            st.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fallback(&self, st: &KeyState, policy: &Policy, now: u64) -> Decision {
        let d = match policy.on_redis_error {
            OnRedisError::Local => {
                // With regions, this instance's part of the region's last known share, not
                // of the whole; of the floor for a key whose share it never heard (the
                // region may have given the rest away, never the floor).
                let shape = match &self.regions {
                    None => policy.fallback_shape,
                    Some(split) => {
                        let share = if st.share_seen.load(Ordering::Relaxed) {
                            st.share.load(Ordering::Relaxed)
                        } else {
                            split.config.min_share
                        };
                        policy
                            .fallback_shape
                            .scaled(share as f64 / SHARE_UNITS as f64)
                    }
                };
                self.local(st, &shape, now, UNREACHABLE)
            }
            OnRedisError::Open => Decision::allowed(0, Duration::ZERO, UNREACHABLE),
            OnRedisError::Closed => Decision::limited(Duration::from_secs(1), UNREACHABLE),
        };
        // What `local` admitted is charged to Redis afterwards; `open` admits by choice,
        // and charging it would lock the key out for as long as the outage lasted.
        if d.allowed && policy.on_redis_error == OnRedisError::Local {
            st.offline.fetch_add(1, Ordering::AcqRel);
        }
        d
    }

    /// A key the full table cannot track: refused by a `closed` policy, else decided by
    /// the policy's overflow bucket, which all such keys share.
    fn without_state(&self, p: PolicyId, policy: &Policy, now: u64) -> Decision {
        if policy.on_redis_error == OnRedisError::Closed {
            return Decision::limited(Duration::from_secs(1), Reason::Untracked);
        }
        let Some(overflow) = self.overflow.get(p.0) else {
            return Decision::limited(Duration::from_secs(1), Reason::Untracked);
        };
        let shape = self.local_shape(policy);
        let mut b = overflow.lock().unwrap_or_else(|e| e.into_inner());
        let take = b.take(shape, now);
        Decision::from_take(take, b.time_to_full(shape), Reason::Untracked)
    }

    /// The most keys one policy tracks.
    pub fn max_keys(&self) -> usize {
        self.config.max_keys
    }

    /// Keys tracked, over all policies.
    pub fn keys(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
    }

    /// Removes keys that can be forgotten: without Redis, those whose bucket is full
    /// again (state equal to a fresh key); with Redis, idle ones holding no lease.
    pub fn evict_idle(&self, now: u64, idle: Duration) {
        for (p, table) in self.tables.iter().enumerate() {
            let Some(policy) = self.policies.get(p) else {
                continue;
            };
            let shape = *self.local_shape(policy);
            table.sweep(|st| {
                let last = st.last_used.load(Ordering::Relaxed);
                let idle_for = Duration::from_nanos(now.saturating_sub(last));
                let mut b = *st.local.lock().unwrap_or_else(|e| e.into_inner());
                b.refill(&shape, now);
                let local_full = b.tokens >= shape.burst;
                let lease_empty =
                    st.lease.load(Ordering::Acquire) <= 0 && !st.queued.load(Ordering::Acquire);
                idle_for > idle && local_full && lease_empty
            });
        }
        self.metrics.set_limit_keys(self.keys());
    }

    pub(crate) fn tables(&self) -> &[Arc<KeyTable>] {
        &self.tables
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests;
