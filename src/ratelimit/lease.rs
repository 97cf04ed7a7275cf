//! How much to lease and when: sizes from the key's demand and the measured round trip,
//! and the level a lost bucket is seeded with.

use super::sync::LeaseSync;
use super::KeyState;
use std::sync::atomic::Ordering;

impl LeaseSync {
    /// How many tokens to ask for, and when to ask again (the low-water mark). A grant
    /// arrives a round trip (plus up to a tick) after it is asked for: `lead`. The lease
    /// covers the key's demand for twice that, or `lease_horizon` if longer, and more is
    /// asked for while what is left still covers `lead`, so a key with steady demand is
    /// refilled before it runs dry however far Redis is. Never more than the policy
    /// itself allows in that time, within [lease_min, lease_max] and the burst.
    pub(super) fn lease_size(&self, st: &KeyState, now: u64) -> (u64, i64) {
        let cfg = &self.shared.config;
        let Some(policy) = self.limiter.policies.get(st.policy.0) else {
            return (1, 0);
        };
        let since = now
            .saturating_sub(st.last_fetch.swap(now, Ordering::AcqRel))
            .max(1_000_000);
        // Demand: tokens spent since the last grant, plus requests that found none.
        let lease_now = st.lease.load(Ordering::Acquire);
        let spent = (st.granted_mark.load(Ordering::Acquire) - lease_now).max(0) as f64;
        let hits = st.hits.swap(0, Ordering::AcqRel) as f64;
        let shape = self.limiter.key_shape(policy, st);
        let demand = ((spent + hits) / (since as f64 / 1e9)).min(shape.per_second);
        let lead = self.shared.lead();
        let cover = cfg.lease_horizon.max(lead * 2).as_secs_f64();
        let target = ((demand * cover).ceil() as u64)
            .clamp(cfg.lease_min, cfg.lease_max)
            .min(shape.burst as u64)
            .max(1);
        let low = ((demand * lead.as_secs_f64()).ceil() as u64).max(target / 2);
        let have = lease_now.max(0) as u64;
        (
            target.saturating_sub(have).max(1),
            low.min(target.saturating_sub(1)) as i64,
        )
    }

    /// What this instance last knew of the key's bucket in Redis, brought forward by the
    /// refill since: the seed of a bucket Redis lost (see grant.lua). -1: nothing known.
    pub(super) fn last_known_level(&self, st: &KeyState, now: u64) -> f64 {
        let Some(policy) = self.limiter.policies.get(st.policy.0) else {
            return -1.0;
        };
        let seen = st.seen_at.load(Ordering::Acquire);
        if seen == 0 {
            return -1.0;
        }
        if st.empty_until.load(Ordering::Acquire) > now {
            return 0.0;
        }
        let shape = self.limiter.key_shape(policy, st);
        let refill = shape.per_second * (now.saturating_sub(seen) as f64 / 1e9);
        (st.redis_left.load(Ordering::Relaxed) as f64 + refill).min(shape.burst)
    }
}
