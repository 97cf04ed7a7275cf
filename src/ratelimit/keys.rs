//! Per-key limiter state in a sharded map. The hot path takes a shard's read lock for a
//! lookup (never across an await) and then works on atomics.

use super::bucket::Bucket;
use crate::config::PolicyId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

const SHARDS: usize = 32;

/// One client key of one policy.
#[derive(Debug)]
pub struct KeyState {
    pub policy: PolicyId,
    pub key: Box<[u8]>,
    /// Tokens granted by Redis (or the cold-start allowance) not yet spent here.
    /// Spent with one compare-and-swap; never goes below zero.
    pub lease: AtomicI64,
    /// Redis had no token for this key until this time (clock nanos): reject locally until then.
    pub empty_until: AtomicU64,
    /// Requests that found no lease since the last fetch (demand beyond what was spent).
    pub hits: AtomicU64,
    /// The lease right after the last grant: what was spent since is `mark - lease`.
    pub granted_mark: AtomicI64,
    pub last_used: AtomicU64,
    pub last_fetch: AtomicU64,
    /// Ask for more when the lease falls to this.
    pub low_water: AtomicI64,
    /// Already in the sync queue.
    pub queued: AtomicBool,
    /// Requests admitted without Redis (the fallback) since the last round trip for this
    /// key: charged to the Redis bucket with the next one, so an outage is not also a
    /// fresh burst afterwards.
    pub offline: AtomicU64,
    /// The key's demand outran what Redis granted at the last ask (see the sync service):
    /// a request that finds its lease dry is answered at once instead of waiting.
    pub over: AtomicBool,
    /// Whole tokens Redis still held after the last grant (for the `RateLimit` header).
    pub redis_left: AtomicU64,
    /// When the last grant arrived (clock nanos; 0: never): `redis_left` was true then.
    pub seen_at: AtomicU64,
    /// The epoch of the Redis bucket the lease came from (0: none yet); a new epoch means
    /// Redis lost the bucket and what is left of an older lease must not be spent.
    pub epoch: AtomicU64,
    /// The local bucket: the whole limit without Redis, the `local` fallback with it.
    pub local: Mutex<Bucket>,
    /// Requests seen since the replication across regions last counted them (demand).
    pub requests: AtomicU64,
    /// With regions: this region's share of the key's limit (millionths) as last seen by
    /// the replication; scales the `local` fallback, and seeds a bucket Redis lost.
    pub share: AtomicU64,
    /// `share` came from a replication reply (else it is the region's initial share).
    pub share_seen: AtomicBool,
    /// Wakes requests waiting for this key's lease.
    pub notify: Notify,
}

impl KeyState {
    pub fn new(policy: PolicyId, key: &[u8], now: u64, local: Bucket, allowance: i64) -> Self {
        Self {
            policy,
            key: key.into(),
            lease: AtomicI64::new(allowance),
            empty_until: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            granted_mark: AtomicI64::new(allowance),
            last_used: AtomicU64::new(now),
            last_fetch: AtomicU64::new(now),
            low_water: AtomicI64::new(0),
            queued: AtomicBool::new(false),
            over: AtomicBool::new(false),
            offline: AtomicU64::new(0),
            redis_left: AtomicU64::new(0),
            seen_at: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            local: Mutex::new(local),
            requests: AtomicU64::new(0),
            share: AtomicU64::new(crate::config::SHARE_UNITS),
            share_seen: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Spends one leased token if there is one; returns what is left.
    pub fn spend(&self) -> Option<i64> {
        let mut cur = self.lease.load(Ordering::Acquire);
        while cur > 0 {
            match self.lease.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(cur - 1),
                Err(actual) => cur = actual,
            }
        }
        None
    }
}

type Shard = RwLock<HashMap<Box<[u8]>, Arc<KeyState>, ahash::RandomState>>;

/// All keys of one policy. Holds at most `max_keys` (approximately: the count is
/// checked before an insert without holding every shard's lock).
pub struct KeyTable {
    shards: Box<[Shard]>,
    /// Picks the shard; each shard's map hashes with its own random keys.
    hasher: ahash::RandomState,
    len: AtomicUsize,
    max_keys: usize,
}

impl KeyTable {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(ahash::RandomState::new())))
                .collect(),
            hasher: ahash::RandomState::new(),
            len: AtomicUsize::new(0),
            max_keys,
        }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Runs `f` on an existing key under its shard's read lock (no clone, no await).
    pub fn peek<R>(&self, key: &[u8], f: impl FnOnce(&Arc<KeyState>) -> R) -> Option<R> {
        let map = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(f)
    }

    /// The state of `key`, created by `make` when absent. `None` when the table is full.
    /// The second value is true when this call created it.
    pub fn get_or_insert(
        &self,
        key: &[u8],
        make: impl FnOnce() -> KeyState,
    ) -> Option<(Arc<KeyState>, bool)> {
        let shard = self.shard(key);
        {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get(key) {
                return Some((s.clone(), false));
            }
        }
        if self.len.load(Ordering::Relaxed) >= self.max_keys {
            return None;
        }
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(key) {
            return Some((s.clone(), false));
        }
        let s = Arc::new(make());
        map.insert(key.into(), s.clone());
        self.len.fetch_add(1, Ordering::Relaxed);
        Some((s, true))
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Visits every key; `evict` returning true removes it (only if nobody else holds it).
    pub fn sweep(&self, mut visit: impl FnMut(&Arc<KeyState>) -> bool) {
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|_, s| !(visit(s) && Arc::strong_count(s) == 1));
            self.len.fetch_sub(before - map.len(), Ordering::Relaxed);
        }
    }

    /// Every key (for returning leases at shutdown).
    pub fn all(&self) -> Vec<Arc<KeyState>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(
                shard
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(lease: i64) -> KeyState {
        keyed(b"k", lease)
    }

    fn keyed(key: &[u8], lease: i64) -> KeyState {
        KeyState::new(
            PolicyId(0),
            key,
            0,
            Bucket {
                tokens: 0.0,
                updated: 0,
            },
            lease,
        )
    }

    #[test]
    fn spend_never_goes_negative() {
        let s = state(2);
        assert_eq!(s.spend(), Some(1));
        assert_eq!(s.spend(), Some(0));
        assert_eq!(s.spend(), None);
        assert_eq!(s.lease.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn concurrent_spends_take_exactly_the_lease() {
        let s = Arc::new(state(10_000));
        let spent: usize = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || (0..5000).filter(|_| s.spend().is_some()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(spent, 10_000);
    }

    #[test]
    fn table_is_bounded_and_sweepable() {
        let t = KeyTable::new(3);
        for k in [b"a", b"b", b"c"] {
            assert!(t.get_or_insert(k, || keyed(k, 0)).is_some());
        }
        assert_eq!(t.get_or_insert(b"a", || state(0)).map(|x| x.1), Some(false));
        assert!(t.get_or_insert(b"d", || state(0)).is_none(), "full");
        t.sweep(|s| s.key.as_ref() == b"a".as_slice());
        assert_eq!(t.len(), 2);
        assert!(t.get_or_insert(b"d", || state(0)).is_some());
    }
}

#[cfg(test)]
mod size {
    /// The README's memory bound rests on this: one key's state plus its map entry.
    #[test]
    fn key_state_is_small() {
        let state = std::mem::size_of::<super::KeyState>();
        println!("KeyState: {state} bytes");
        assert!(
            state <= 192,
            "KeyState grew to {state} bytes: update the README's memory bound"
        );
    }
}
