//! The only code that talks to Redis for rate limiting: a background service that grants
//! leases to queued keys in one pipelined round trip per tick, gives idle leases back,
//! probes Redis while it is down, and evicts idle keys.

use super::{Limiter, Shared};
use crate::observability::Metrics;
use pingora::server::ShutdownWatch;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often idle keys are looked at (lease return and eviction).
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Leases, returns and eviction for one [`Limiter`].
pub struct LeaseSync {
    pub(super) limiter: Arc<Limiter>,
    pub(super) shared: Arc<Shared>,
    script: redis::Script,
    /// A key's command failed on its own (logged once, counted always).
    key_error_logged: AtomicBool,
}

/// The script's reply for one key: granted, milli-tokens left, milliseconds until the next
/// token, the bucket's epoch.
type Reply = (u64, i64, u64, u64);

/// One key's request in a round trip.
struct Ask {
    key: Arc<super::KeyState>,
    want: u64,
    back: u64,
    /// Admissions made without Redis since the last round trip, charged to the bucket.
    debit: u64,
}

impl LeaseSync {
    pub(crate) fn new(limiter: Arc<Limiter>, shared: Arc<Shared>) -> Self {
        Self {
            limiter,
            shared,
            script: redis::Script::new(include_str!("grant.lua")),
            key_error_logged: AtomicBool::new(false),
        }
    }

    fn redis_key(&self, st: &super::KeyState) -> Vec<u8> {
        let mut k = self.shared.config.key_prefix.as_bytes().to_vec();
        k.extend_from_slice(&self.limiter.key_name(st.policy, &st.key));
        k
    }

    async fn connect(&self) -> Result<ConnectionManager, redis::RedisError> {
        let cfg = &self.shared.config;
        let client = redis::Client::open(cfg.url.as_str())?;
        let mc = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.command_timeout))
            .set_number_of_retries(0);
        ConnectionManager::new_with_config(client, mc).await
    }

    /// One pipelined round trip for every ask. Applies the grants; on error nothing is
    /// applied (a grant Redis made for a round trip that timed out is lost: under-admission,
    /// never over-admission). Each key's reply is read on its own: one key's error reply
    /// (a bucket key of the wrong type, say) fails that key, not the round trip.
    async fn round_trip(
        &self,
        conn: &mut ConnectionManager,
        asks: &[Ask],
    ) -> Result<(), redis::RedisError> {
        let metrics: &Metrics = self.limiter.metrics();
        let mut pipe = self.pipeline(asks);
        pipe.ignore_errors();
        let region = self.limiter.regions.as_ref();
        let region = region.map_or("", |split| split.config.this().name.as_str());
        metrics.limit_redis_commands(region, pipe.len());
        let started = Instant::now();
        metrics.limit_redis_round_trip();
        let replies: Vec<redis::RedisResult<Reply>> =
            match tokio::time::timeout(self.shared.config.command_timeout, pipe.query_async(conn))
                .await
            {
                Ok(r) => r?,
                Err(_) => {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "command timeout",
                    )))
                }
            };
        let no_script = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
        if let Some(Err(e)) = replies
            .iter()
            .find(|r| matches!(r, Err(e) if e.kind() == no_script))
        {
            // First use on this server: nothing ran; load the script, the next tick retries.
            let e = redis::RedisError::from((no_script, "NOSCRIPT", e.to_string()));
            self.script.load_async(conn).await?;
            return Err(e);
        }
        let took = started.elapsed();
        metrics.observe_lease_fetch(took.as_secs_f64());
        self.shared.measured_round_trip(took);
        metrics.set_limit_redis_round_trip(self.shared.round_trip().as_secs_f64());
        let now = self.limiter.clock.now();
        let mut refused = None;
        for (a, reply) in asks.iter().zip(replies) {
            match reply {
                Ok(reply) => self.apply(a, reply, now),
                Err(e) if is_key_error(&e) => self.key_failed(a, &e, now),
                // Redis answers but refuses the work (READONLY after a failover, LOADING,
                // OOM, MISCONF, ...): as good as unreachable, whatever the other replies.
                Err(e) => refused = Some(e),
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// One key's command failed while the round trip succeeded: Redis is reachable, so the
    /// key's requests are refused for want of a lease (never decided locally); its debit
    /// is charged again with its next ask.
    fn key_failed(&self, a: &Ask, e: &redis::RedisError, now: u64) {
        self.limiter.metrics().limit_redis_error();
        restore_debits(std::slice::from_ref(a));
        // Refused locally for a while, so that its requests do not ask again every tick.
        let pause = u64::try_from(self.shared.config.lease_wait.as_nanos()).unwrap_or(u64::MAX);
        a.key
            .empty_until
            .store(now.saturating_add(pause), Ordering::Release);
        if !self.key_error_logged.swap(true, Ordering::Relaxed) {
            let policy = self
                .limiter
                .policies
                .get(a.key.policy.0)
                .map_or("?", |p| p.name.as_str());
            log::warn!(
                "rate limiting: Redis refused the bucket of a key of policy {policy} ({e}); its requests get 429 until it is fixed (logged once)"
            );
        }
    }

    fn pipeline(&self, asks: &[Ask]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let now = self.limiter.clock.now();
        for a in asks {
            let Some(policy) = self.limiter.policies.get(a.key.policy.0) else {
                continue;
            };
            let per_ms = policy.shape.per_second / 1000.0;
            // The bucket key lives while it could still differ from a full bucket.
            let ttl_ms =
                (policy.shape.time_for(policy.shape.burst).as_millis() as u64).max(1000) * 2;
            let bucket = self.redis_key(&a.key);
            let cmd = pipe.cmd("EVALSHA").arg(self.script.get_hash());
            if self.limiter.regions.is_some() {
                // This region's part: the script scales the bucket by the rights' share.
                let rights = super::replication::rights_key(&bucket);
                cmd.arg(2).arg(bucket).arg(rights);
            } else {
                cmd.arg(1).arg(bucket);
            }
            cmd.arg(per_ms)
                .arg(policy.shape.burst)
                .arg(a.want)
                .arg(a.back)
                .arg(ttl_ms)
                // Admitted offline since: what the refill brought was spent here.
                .arg(if a.debit > 0 {
                    0.0
                } else {
                    self.last_known_level(&a.key, now)
                })
                .arg(a.debit)
                .arg(a.key.share.load(Ordering::Relaxed));
        }
        pipe
    }

    /// Applies one key's reply: the grant, the bucket's level, and "empty until".
    fn apply(&self, a: &Ask, (granted, milli_left, wait_ms, epoch): Reply, now: u64) {
        let st = &a.key;
        let Some(policy) = self.limiter.policies.get(st.policy.0) else {
            return;
        };
        let before = st.epoch.swap(epoch, Ordering::AcqRel);
        let lease = if before != 0 && before != epoch {
            // Redis lost the bucket and made a new one: what is left of the old lease was
            // granted by a bucket that no longer counts it. Dropped, never spent twice.
            st.lease.store(granted as i64, Ordering::Release);
            granted as i64
        } else {
            st.lease.fetch_add(granted as i64, Ordering::AcqRel) + granted as i64
        };
        st.granted_mark.store(lease, Ordering::Release);
        let left = (milli_left.max(0) / 1000) as u64;
        st.redis_left.store(left, Ordering::Relaxed);
        st.seen_at.store(now, Ordering::Release);
        // Should Redis become unreachable, this instance's share of what Redis holds is
        // where the `local` fallback starts, not a full bucket.
        {
            let mut b = st.local.lock().unwrap_or_else(|e| e.into_inner());
            b.tokens = (left as f64 / f64::from(self.shared.config.expected_instances))
                .min(policy.fallback_shape.burst);
            b.updated = now;
        }
        if a.want > 0 {
            // At its limit: Redis could not grant all that was asked, or has no whole
            // token left after this grant. Cleared by a grant that leaves tokens in Redis.
            st.over
                .store(granted < a.want || left == 0, Ordering::Release);
        }
        if a.want > 0 && granted < a.want {
            // Redis gave all it had: the bucket is empty. Spend what was granted, then
            // reject locally until a whole lease has refilled, so that a key over its
            // limit costs one round trip per lease, not one per trickle of tokens.
            // Capped at half the time to fill the burst, so that no refill is lost to
            // the cap while nobody asks; at least a tick, at least until a token is due.
            let shape = self.limiter.key_shape(policy, st);
            let refill = shape.time_for((a.want - granted) as f64);
            let cap = shape.time_for(shape.burst) / 2;
            // Never longer than the burst takes to refill (a bucket that owes tokens after an
            // outage asks again then, rather than refusing for the whole debt).
            let wait = refill
                .min(cap)
                .max(Duration::from_millis(wait_ms))
                .max(self.shared.config.sync_interval)
                .min(shape.time_for(shape.burst));
            let wait_ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
            st.empty_until
                .store(now.saturating_add(wait_ns), Ordering::Release);
        }
    }

    /// Lets everyone waiting on these keys re-check (after a grant or a failure).
    fn release(&self, asks: &[Ask]) {
        for a in asks {
            a.key.queued.store(false, Ordering::Release);
            a.key.notify.notify_waiters();
        }
    }

    /// Keys idle for `idle_return` give their leases back.
    fn idle_returns(&self, now: u64) -> Vec<Ask> {
        let idle = self.shared.config.idle_return.as_nanos() as u64;
        let mut out = Vec::new();
        for t in self.limiter.tables() {
            for st in t.all() {
                let last = st.last_used.load(Ordering::Relaxed);
                if now.saturating_sub(last) > idle && !st.queued.load(Ordering::Acquire) {
                    let back = st.lease.swap(0, Ordering::AcqRel);
                    st.granted_mark.store(0, Ordering::Release);
                    let debit = st.offline.swap(0, Ordering::AcqRel);
                    if back > 0 || debit > 0 {
                        out.push(Ask {
                            key: st,
                            want: 0,
                            back: back.max(0) as u64,
                            debit,
                        });
                    }
                }
            }
        }
        out
    }

    pub(super) async fn run(&self, mut shutdown: ShutdownWatch) {
        let cfg = self.shared.config.clone();
        log::info!(
            "rate limiting: leases from Redis at {} (sync every {:?}, lease horizon {:?}, cold start {:?})",
            redacted(&cfg.url),
            cfg.sync_interval,
            cfg.lease_horizon,
            cfg.cold_start
        );
        let mut conn: Option<ConnectionManager> = None;
        let mut ticker = tokio::time::interval(cfg.sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        // Returns not yet sent. Sent first in each round trip, so that a key's own
        // returned tokens are in the bucket before its grant is computed.
        let mut returns: Vec<Ask> = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = ticker.tick() => {},
                _ = self.shared.wake.notified() => {},
            }
            let now = self.limiter.clock.now();
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                returns.extend(self.idle_returns(now));
                self.limiter
                    .evict_idle(now, cfg.idle_return.max(SWEEP_EVERY) * 2);
            }
            let mut asks = std::mem::take(&mut returns);
            asks.extend(self.grant_asks(now));
            if asks.is_empty() && self.shared.redis_ok.load(Ordering::Acquire) {
                continue;
            }
            let Some(c) = self.connection(&mut conn, &asks).await else {
                // Never sent: the returns are kept for the next round trip.
                returns = keep_returns(asks);
                continue;
            };
            if asks.is_empty() {
                self.probe(c).await;
                continue;
            }
            match self.round_trip(c, &asks).await {
                Ok(()) => {
                    self.recovered();
                    self.release(&asks);
                }
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    // Nothing was applied: the returns go again with the script loaded.
                    self.release(&asks);
                    returns = keep_returns(asks);
                }
                Err(e) => {
                    // Redis may have applied the round trip before failing (a timeout):
                    // its returns are not sent again, so they can never count twice.
                    // The tokens they held are lost: under-admission, not over. Its
                    // debits are charged again (twice at worst: under-admission too).
                    restore_debits(&asks);
                    self.failed(&asks, &e.to_string());
                }
            }
        }
        self.return_all(conn.as_mut(), returns).await;
    }

    /// The queued keys that need a lease, with their sizes.
    fn grant_asks(&self, now: u64) -> Vec<Ask> {
        let lead = self.shared.lead().as_nanos() as u64;
        let queued: Vec<Arc<super::KeyState>> =
            std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()));
        queued
            .into_iter()
            .filter(|key| {
                // Known empty until further than a grant takes to arrive: asking now
                // would get a trickle. A request near the end of the spell queues the key
                // again (see `Limiter::spend_lease`).
                let empty = key.empty_until.load(Ordering::Acquire) > now + lead;
                if empty {
                    key.queued.store(false, Ordering::Release);
                    key.notify.notify_waiters();
                }
                !empty
            })
            .map(|key| {
                let (want, low) = self.lease_size(&key, now);
                key.low_water.store(low, Ordering::Relaxed);
                let debit = key.offline.swap(0, Ordering::AcqRel);
                Ask {
                    key,
                    want,
                    back: 0,
                    debit,
                }
            })
            .collect()
    }

    /// The connection, made if there is none yet; `None` (and the asks released) when
    /// Redis cannot be reached.
    async fn connection<'c>(
        &self,
        conn: &'c mut Option<ConnectionManager>,
        asks: &[Ask],
    ) -> Option<&'c mut ConnectionManager> {
        if conn.is_none() {
            let timeout = self.shared.config.connect_timeout * 2;
            match tokio::time::timeout(timeout, self.connect()).await {
                Ok(Ok(c)) => *conn = Some(c),
                Ok(Err(e)) => self.failed(asks, &e.to_string()),
                Err(_) => self.failed(asks, "connect timeout"),
            }
        }
        conn.as_mut()
    }

    /// Down and idle: a PING, so that recovery does not wait for traffic.
    async fn probe(&self, c: &mut ConnectionManager) {
        let ping: Result<String, _> = match tokio::time::timeout(
            self.shared.config.command_timeout,
            redis::cmd("PING").query_async(c),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timeout"))),
        };
        match ping {
            Ok(_) => self.recovered(),
            Err(e) => self.failed(&[], &e.to_string()),
        }
    }

    /// Shutting down: every lease goes back so other instances can use it (one try).
    async fn return_all(&self, conn: Option<&mut ConnectionManager>, pending: Vec<Ask>) {
        let Some(c) = conn else {
            return;
        };
        let returns: Vec<Ask> = pending
            .into_iter()
            .chain(
                self.limiter
                    .tables()
                    .iter()
                    .flat_map(|t| t.all())
                    .filter_map(|st| {
                        let back = st.lease.swap(0, Ordering::AcqRel);
                        let debit = st.offline.swap(0, Ordering::AcqRel);
                        (back > 0 || debit > 0).then_some(Ask {
                            key: st,
                            want: 0,
                            back: back.max(0) as u64,
                            debit,
                        })
                    }),
            )
            .collect();
        if !returns.is_empty() {
            if let Err(e) = self.round_trip(c, &returns).await {
                log::info!("rate limiting: leases not returned at shutdown ({e})");
            }
        }
    }

    fn recovered(&self) {
        if !self.shared.redis_ok.swap(true, Ordering::AcqRel) {
            log::info!("rate limiting: Redis is reachable again, leases resume");
        }
    }

    fn failed(&self, asks: &[Ask], why: &str) {
        self.limiter.metrics().limit_redis_error();
        if self.shared.redis_ok.swap(false, Ordering::AcqRel) {
            log::error!(
                "rate limiting: Redis unreachable ({why}); policies fall back to on_redis_error"
            );
        }
        self.release(asks);
    }
}

/// An error that belongs to one key (its bucket key holds another type), not to Redis.
fn is_key_error(e: &redis::RedisError) -> bool {
    e.to_string().contains("WRONGTYPE")
}

/// Asks that were never applied: their debits go back to their keys (sent again with the
/// next ask), their returns are kept for the next round trip (the tokens are not lost).
fn keep_returns(asks: Vec<Ask>) -> Vec<Ask> {
    restore_debits(&asks);
    asks.into_iter()
        .filter(|a| a.back > 0)
        .map(|a| Ask { debit: 0, ..a })
        .collect()
}

/// A round trip that failed gives its debits back to their keys: charged again with the
/// next one. Charging twice (when Redis applied it before failing) only under-admits.
fn restore_debits(asks: &[Ask]) {
    for a in asks {
        if a.debit > 0 {
            a.key.offline.fetch_add(a.debit, Ordering::AcqRel);
        }
    }
}

/// The URL without a password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}
