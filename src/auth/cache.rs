//! Verified tokens, remembered by their SHA-256 until they expire, in a bounded map.

use super::Principal;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

const SHARDS: usize = 16;

/// Token digest -> (principal, expiry in Unix seconds).
type Shard = Mutex<HashMap<[u8; 32], (Principal, u64)>>;

/// At most `capacity` entries (a full shard is emptied: simple, bounded, and a miss only
/// costs one verification). Failures are never cached, so garbage cannot fill it.
pub struct VerifiedCache {
    shards: Vec<Shard>,
    per_shard: usize,
}

pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, d: &[u8; 32]) -> &Shard {
        &self.shards[usize::from(d[0]) % SHARDS]
    }

    /// A cached principal whose token is still valid at `now` (Unix seconds).
    pub fn get(&self, d: &[u8; 32], now: u64) -> Option<Principal> {
        let map = self.shard(d).lock().unwrap_or_else(|e| e.into_inner());
        match map.get(d) {
            Some((p, exp)) if now < *exp => Some(p.clone()),
            _ => None,
        }
    }

    /// Remembers a principal until `exp` (the token's own expiry, never later).
    pub fn insert(&self, d: [u8; 32], p: Principal, exp: u64) {
        let mut map = self.shard(&d).lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.per_shard {
            map.clear();
        }
        map.insert(d, (p, exp));
    }

    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }
}
