//! Rights across regions, the I/O half (the CRDT and its policy are [`super::regions`]).
//!
//! Every `replicate_every`, each instance:
//! 1. counts its keys' requests since the last round (a key with requests is active);
//! 2. reads, from every peer region's Redis, the keys active there and its rights for the
//!    keys active anywhere (one pipelined round trip per peer, all peers at once); a peer
//!    not read for `stale_after` is stale: no rights move to or from it;
//! 3. merges its last view with the peers' copies, plans its region's gives
//!    ([`regions::plan`]) and sends one `rights.lua` call per key to its own region's Redis
//!    (one pipelined round trip), which merges, publishes the region's demand, gives and
//!    resizes the region's bucket atomically; the reply is the new view.
//!
//! Every instance of a region runs this; the script's `gen` check lets only one of them
//! give from a given state. The request path never waits on any of it: a region's bucket
//! is scaled by its share inside Redis (`grant.lua`), and the lease sync is unchanged.

use super::regions::{self, Demand, RegionId, RegionSet, Regions, Replica, Rights, Units, View};
use super::Limiter;
use crate::config::{PolicyId, RedisConfig, RegionsConfig, SHARE_UNITS};
use crate::observability::Metrics;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a region keeps a key's rights after its last replication anywhere. Forgetting
/// rights is safe only once every region has (see the `regions` module, Limits): all
/// regions refresh a key while it is active anywhere, so their copies expire together.
const RIGHTS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The configured regions, ready to use: this instance's region and the CRDT's settings.
#[derive(Debug)]
pub(crate) struct RegionSplit {
    pub config: RegionsConfig,
    pub crdt: Regions,
    pub me: RegionId,
    /// The members in order and their initial shares, hashed: written into every rights
    /// hash, and a hash written under another configuration is never merged (its indices
    /// would name other regions, its shares add up to something else).
    pub fingerprint: String,
}

impl RegionSplit {
    pub fn new(config: &RegionsConfig) -> Self {
        let initial = config
            .members
            .iter()
            .map(|m| Units(m.initial_share))
            .collect();
        let floor = Units(config.min_share);
        // Validation checked the same conditions (shares add up to the whole, each at least
        // the floor, 2 to 64 members); equal shares only stand in for an impossible error.
        let crdt = Regions::new(initial, floor).unwrap_or_else(|e| {
            log::error!("rate limiting: regions misconfigured ({e}); using equal shares");
            Regions::equal(
                config.members.len().clamp(1, regions::MAX_REGIONS),
                Units::ZERO,
            )
            .unwrap_or_else(|_| unreachable_regions())
        });
        let me = RegionId(u16::try_from(config.this).unwrap_or(0));
        let mut hash = Sha256::new();
        for m in &config.members {
            hash.update(format!("{}={};", m.name, m.initial_share));
        }
        let fingerprint = hash.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            config: config.clone(),
            crdt,
            me,
            fingerprint,
        }
    }

    /// This region's share before any transfer.
    pub fn initial_share(&self) -> u64 {
        self.crdt.initial(self.me).0
    }
}

/// One region holding the whole: `Regions::equal(1..=64)` cannot fail.
fn unreachable_regions() -> Regions {
    Regions::new(vec![Units::WHOLE], Units::ZERO).unwrap_or_else(|_| unreachable!())
}

/// A replicated key: its policy and client key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Name {
    policy: PolicyId,
    key: Box<[u8]>,
}

/// What this instance knows of one key's rights.
struct Known {
    rights: Rights,
    /// This region's `gen` at the last reply; `None` before one: no gives until then.
    gen: Option<u64>,
    /// This region's share at the last reply.
    share: Option<u64>,
    /// When some region last reported the key active.
    active_at: Instant,
    /// When this instance last put the key in its region's active set.
    advertised: Option<Instant>,
}

/// One region's Redis as the replication sees it.
struct Link {
    name: String,
    url: String,
    conn: Option<ConnectionManager>,
    last_ok: Option<Instant>,
}

/// What one peer's read returned: the keys active there, and its rights per asked key.
struct PeerRead {
    active: Vec<Vec<u8>>,
    rights: Vec<Option<Rights>>,
    bytes: usize,
    /// Hashes written under another regions configuration (ignored).
    foreign: usize,
}

/// The replication service of one limiter.
pub struct Replication {
    limiter: Arc<Limiter>,
    split: Arc<RegionSplit>,
    redis: RedisConfig,
    script: redis::Script,
    /// When the active set was last trimmed of keys idle for `active_for`.
    trimmed_at: std::sync::Mutex<Option<Instant>>,
    mismatch_logged: std::sync::atomic::AtomicBool,
}

impl Replication {
    pub(crate) fn new(limiter: Arc<Limiter>, split: Arc<RegionSplit>, redis: RedisConfig) -> Self {
        Self {
            limiter,
            split,
            redis,
            script: redis::Script::new(include_str!("rights.lua")),
            trimmed_at: std::sync::Mutex::new(None),
            mismatch_logged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(super) async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let cfg = &self.split.config;
        log::info!(
            "rate limiting: region {} of {} (replicating every {:?})",
            cfg.this().name,
            cfg.members.len(),
            cfg.replicate_every
        );
        let mut links: Vec<Link> = cfg
            .members
            .iter()
            .map(|m| Link {
                name: m.name.clone(),
                url: m.redis.clone(),
                conn: None,
                last_ok: None,
            })
            .collect();
        let mut known: HashMap<Name, Known> = HashMap::new();
        let mut ticker = tokio::time::interval(cfg.replicate_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = ticker.tick() => {}
            }
            self.round(&mut links, &mut known).await;
        }
    }

    async fn round(&self, links: &mut [Link], known: &mut HashMap<Name, Known>) {
        let now = Instant::now();
        let counts = self.count_requests(known, now);
        let active_for = self.split.config.active_for;
        known.retain(|_, k| now.duration_since(k.active_at) <= active_for);
        let names: Vec<Name> = known.keys().cloned().collect();
        let me = self.split.me.index();
        let reads = self.read_peers(links, &names).await;
        let metrics = self.limiter.metrics();
        let mut stale = RegionSet::EMPTY;
        let mut read_bytes = 0;
        for (i, link) in links.iter().enumerate().filter(|(i, _)| *i != me) {
            let is_stale = link
                .last_ok
                .is_none_or(|at| now.duration_since(at) > self.split.config.stale_after);
            metrics.set_region_stale(&link.name, is_stale);
            // Not read in this round: it gets nothing now (rights given to a region that
            // cannot hear of them are lost to everyone until the link heals), and its
            // share and demand stay out of the targets.
            if !reads.iter().any(|(r, _)| *r == i) {
                stale = stale.with(region_id(i));
            }
        }
        for (_, read) in &reads {
            read_bytes += read.bytes;
            // Keys active in a peer are replicated here too: this region may have to give.
            for member in &read.active {
                let Some(name) = self.name_of(member) else {
                    continue;
                };
                if let Some(k) = known.get_mut(&name) {
                    k.active_at = now;
                } else if known.len() < self.max_keys() {
                    known.insert(name, self.unknown(now));
                }
            }
        }
        let written = self
            .write_own(&mut links[me], known, &names, &reads, stale, &counts)
            .await;
        metrics.region_bytes(read_bytes, written);
        metrics.set_region_keys(names.len());
    }

    /// The most keys replicated at once: what the limiter itself may track. A flood of
    /// keys (or a peer's active set) beyond it is not replicated, never an unbounded map.
    fn max_keys(&self) -> usize {
        self.limiter
            .max_keys()
            .saturating_mul(self.limiter.policies.len().max(1))
    }

    fn unknown(&self, now: Instant) -> Known {
        Known {
            rights: Rights::new(&self.split.crdt),
            gen: None,
            share: None,
            active_at: now,
            advertised: None,
        }
    }

    /// Each local key's requests since the last round; the keys with some are active now.
    fn count_requests(&self, known: &mut HashMap<Name, Known>, now: Instant) -> Vec<(Name, u64)> {
        let mut counts = Vec::new();
        for (p, table) in self.limiter.tables().iter().enumerate() {
            for st in table.all() {
                let n = st.requests.swap(0, Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let name = Name {
                    policy: PolicyId(p),
                    key: st.key.clone(),
                };
                if let Some(k) = known.get_mut(&name) {
                    k.active_at = now;
                } else if known.len() < self.max_keys() {
                    known.insert(name.clone(), self.unknown(now));
                }
                counts.push((name, n));
            }
        }
        counts
    }

    /// Every peer read at once; the links that answered get `last_ok`.
    async fn read_peers(&self, links: &mut [Link], names: &[Name]) -> Vec<(usize, PeerRead)> {
        let me = self.split.me.index();
        let rights_keys: Arc<Vec<Vec<u8>>> =
            Arc::new(names.iter().map(|n| self.rights_key(n)).collect());
        let since = unix_ms().saturating_sub(millis(self.split.config.active_for));
        let timeout = self.timeout();
        let regions = self.split.crdt.count();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, link) in links.iter_mut().enumerate().filter(|(i, _)| *i != me) {
            let conn = link.conn.take();
            let (url, keys, connect) = (link.url.clone(), rights_keys.clone(), self.redis.clone());
            let active = self.active_key();
            let fingerprint = self.split.fingerprint.clone();
            let max_keys = self.max_keys();
            tasks.spawn(async move {
                let mut conn = conn;
                let read = read_peer(
                    &mut conn,
                    &url,
                    &connect,
                    timeout,
                    &active,
                    since,
                    &keys,
                    regions,
                    &fingerprint,
                    max_keys,
                )
                .await;
                (i, conn, read)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let Ok((i, conn, read)) = done else { continue };
            let Some(link) = links.get_mut(i) else {
                continue;
            };
            let ok = read.is_ok();
            self.limiter.metrics().region_read(&link.name, ok);
            // Sent (or tried): the active set and one HGETALL per key.
            let sent = if conn.is_some() { 1 + names.len() } else { 0 };
            self.limiter
                .metrics()
                .limit_redis_commands(&link.name, sent);
            match read {
                Ok(read) => {
                    if read.foreign > 0 {
                        self.mismatch(&link.name);
                    }
                    link.conn = conn;
                    link.last_ok = Some(Instant::now());
                    out.push((i, read));
                }
                Err(e) => {
                    // A broken connection is made again next round.
                    link.conn = None;
                    log::debug!("rate limiting: region {} not read: {e}", link.name);
                }
            }
        }
        out
    }

    /// The merge, plan and one script call per key, in one round trip to this region's Redis.
    /// Returns the payload bytes written.
    async fn write_own(
        &self,
        link: &mut Link,
        known: &mut HashMap<Name, Known>,
        names: &[Name],
        reads: &[(usize, PeerRead)],
        stale: RegionSet,
        counts: &[(Name, u64)],
    ) -> usize {
        let crdt = &self.split.crdt;
        let me = self.split.me;
        let margin = Units(self.split.config.hysteresis);
        let counted: HashMap<&Name, u64> = counts.iter().map(|(n, c)| (n, *c)).collect();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut bytes = 0;
        // Per script call, in order: the key it is for and the gives it asks.
        let mut planned: Vec<(&Name, Vec<regions::Transfer>)> = Vec::with_capacity(names.len());
        let window = millis(self.split.config.replicate_every);
        for (i, name) in names.iter().enumerate() {
            let Some(k) = known.get(name) else {
                continue;
            };
            let mut rights = k.rights.clone();
            for (peer, read) in reads {
                if let Some(Some(theirs)) = read.rights.get(i) {
                    let _ = rights.merge(&theirs.from_peer(crdt, region_id(*peer), me));
                }
            }
            // Gives only from a state this region's Redis confirmed (`gen`), and once this
            // region has published its own demand for the key: before that it would look
            // idle to itself and give away what its own traffic needs.
            let published = rights.demand(me).version > 0;
            let unheard = self.unheard(stale, reads, i, rights.demand(me).version);
            let transfers = match (k.gen, published, Replica::restore(crdt, me, rights.clone())) {
                (Some(_), true, Ok(replica)) => {
                    regions::plan(crdt, me, &View::of(&replica, crdt, unheard), margin)
                }
                _ => Vec::new(),
            };
            let Some(policy) = self.limiter.policies.get(name.policy.0) else {
                continue;
            };
            let assumed = k.share.unwrap_or_else(|| self.split.initial_share());
            let mut args: Vec<Vec<u8>> = vec![
                me.0.to_string().into_bytes(),
                crdt.count().to_string().into_bytes(),
                self.split.initial_share().to_string().into_bytes(),
                assumed.to_string().into_bytes(),
                counted
                    .get(name)
                    .copied()
                    .unwrap_or(0)
                    .to_string()
                    .into_bytes(),
                window.to_string().into_bytes(),
                match (k.gen, transfers.is_empty()) {
                    (Some(gen), false) => gen.to_string(),
                    _ => "-1".into(),
                }
                .into_bytes(),
                (policy.shape.per_second / 1000.0).to_string().into_bytes(),
                policy.shape.burst.to_string().into_bytes(),
                millis(RIGHTS_TTL).to_string().into_bytes(),
                self.split.fingerprint.clone().into_bytes(),
            ];
            let gives: Vec<_> = rights.gives().collect();
            args.push(gives.len().to_string().into_bytes());
            for (from, to, units) in gives {
                for v in [u64::from(from.0), u64::from(to.0), units.0] {
                    args.push(v.to_string().into_bytes());
                }
            }
            args.push(crdt.count().to_string().into_bytes());
            for r in crdt.ids() {
                let d = rights.demand(r);
                for v in [u64::from(r.0), d.version, d.observed] {
                    args.push(v.to_string().into_bytes());
                }
            }
            args.push(transfers.len().to_string().into_bytes());
            for t in &transfers {
                args.push(t.to.0.to_string().into_bytes());
                args.push(t.amount.0.to_string().into_bytes());
            }
            let rights_key = self.rights_key(name);
            let bucket_key = self.bucket_key(name);
            bytes += rights_key.len() + bucket_key.len() + args.iter().map(Vec::len).sum::<usize>();
            let cmd = pipe.cmd("EVALSHA").arg(self.script.get_hash()).arg(2);
            cmd.arg(rights_key).arg(bucket_key);
            for a in args {
                cmd.arg(a);
            }
            planned.push((name, transfers));
        }
        // The keys active here, so that other regions replicate them too: each written
        // again a few times per `active_for` (not every round), and the set trimmed as
        // often, so that a hot key costs its region one command per round.
        let now = Instant::now();
        let refresh = self.split.config.active_for / 4;
        let due = |at: Option<Instant>| at.is_none_or(|at| now.duration_since(at) >= refresh);
        let advertise: Vec<&Name> = counts
            .iter()
            .map(|(name, _)| name)
            .filter(|name| due(known.get(*name).and_then(|k| k.advertised)))
            .collect();
        let now_ms = unix_ms();
        if !advertise.is_empty() {
            let zadd = pipe.cmd("ZADD").arg(self.active_key());
            for name in &advertise {
                zadd.arg(now_ms).arg(self.member(name));
            }
            zadd.ignore();
        }
        let trim = {
            let mut at = self.trimmed_at.lock().unwrap_or_else(|e| e.into_inner());
            let trim = due(*at);
            if trim {
                *at = Some(now);
            }
            trim
        };
        if trim {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(self.active_key())
                .arg("-inf")
                .arg(now_ms.saturating_sub(millis(self.split.config.active_for)))
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(self.active_key())
                .arg(millis(self.split.config.active_for) * 2)
                .ignore();
        }
        let replies = self.send_own(link, &pipe).await;
        let Some(replies) = replies else {
            return bytes;
        };
        let advertised: Vec<Name> = advertise.into_iter().cloned().collect();
        for name in advertised {
            if let Some(k) = known.get_mut(&name) {
                k.advertised = Some(now);
            }
        }
        for ((name, transfers), reply) in planned.into_iter().zip(replies) {
            let Ok(fields) = reply else { continue };
            let Some(parsed) = parse_rights(crdt, &fields) else {
                continue;
            };
            if parsed.fingerprint.as_deref() != Some(self.split.fingerprint.as_str()) {
                self.mismatch(&self.split.config.this().name);
                continue;
            }
            if parsed.gave {
                for t in &transfers {
                    if let Some(to) = self.split.config.members.get(t.to.index()) {
                        self.limiter.metrics().region_give(&to.name);
                    }
                }
            }
            if let Some(k) = known.get_mut(name) {
                let _ = k.rights.merge(&parsed.rights);
                k.gen = Some(parsed.gen);
                k.share = Some(parsed.share);
            }
            if let Some(table) = self.limiter.tables().get(name.policy.0) {
                table.peek(&name.key, |st| {
                    st.share.store(parsed.share, Ordering::Relaxed);
                    st.share_seen.store(true, Ordering::Relaxed);
                });
            }
        }
        bytes
    }

    /// The regions a give of key `i` must not go to: those not read in this round, and
    /// those that do not hear this region: they never merged its demand register, or their
    /// copy (their merge of what they read here) lags it by more than `stale_after` worth
    /// of rounds, or they hold no rights for the key yet. What goes to a region that cannot read it would be
    /// lost to everyone until it can (an asymmetric cut, a region whose gateways stopped).
    fn unheard(
        &self,
        stale: RegionSet,
        reads: &[(usize, PeerRead)],
        i: usize,
        mine: u64,
    ) -> RegionSet {
        let cfg = &self.split.config;
        let rounds = cfg.stale_after.as_nanos() / cfg.replicate_every.as_nanos().max(1);
        let lag = u64::try_from(rounds).unwrap_or(u64::MAX).max(2);
        let me = self.split.me;
        let mut out = stale;
        for (peer, read) in reads {
            let heard = match read.rights.get(i) {
                Some(Some(theirs)) => {
                    let copy = theirs.demand(me).version;
                    copy > 0 && copy.saturating_add(lag) >= mine
                }
                _ => false,
            };
            if !heard {
                out = out.with(region_id(*peer));
            }
        }
        out
    }

    /// Sends the pipeline to this region's Redis; `None` when it failed (the next round
    /// sends again from the same view: merges and gives are idempotent per `gen`).
    async fn send_own(
        &self,
        link: &mut Link,
        pipe: &redis::Pipeline,
    ) -> Option<Vec<redis::RedisResult<Vec<Vec<u8>>>>> {
        let metrics: &Metrics = self.limiter.metrics();
        if link.conn.is_none() {
            link.conn = connect(&link.url, &self.redis, self.timeout()).await.ok();
        }
        let conn = link.conn.as_mut()?;
        metrics.limit_redis_commands(&link.name, pipe.len());
        let sent = tokio::time::timeout(self.timeout(), pipe.query_async(conn)).await;
        let replies: Vec<redis::RedisResult<Vec<Vec<u8>>>> = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => {
                link.conn = None;
                metrics.region_read(&link.name, false);
                return None;
            }
        };
        let no_script = redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
        if replies
            .iter()
            .any(|r| matches!(r, Err(e) if e.kind() == no_script))
        {
            // First use on this server: load it; the next round sends again.
            if self.script.load_async(conn).await.is_err() {
                link.conn = None;
            }
            return None;
        }
        metrics.region_read(&link.name, true);
        link.last_ok = Some(Instant::now());
        Some(replies)
    }

    /// A rights hash in `region`'s Redis was written under another regions configuration:
    /// logged once; such hashes are never merged.
    fn mismatch(&self, region: &str) {
        if !self.mismatch_logged.swap(true, Ordering::Relaxed) {
            log::error!(
                "rate limiting: region {region} keeps rights written under another regions configuration (members, their order or initial shares differ); they are ignored. Every region must run the same `rate_limits.regions.members`; to change them, change `rate_limits.redis.key_prefix` too (logged once)"
            );
        }
    }

    fn timeout(&self) -> Duration {
        self.redis
            .command_timeout
            .max(self.split.config.replicate_every)
    }

    /// `<policy>:<key>`: a key's name in the active sets.
    fn member(&self, name: &Name) -> Vec<u8> {
        self.limiter.key_name(name.policy, &name.key)
    }

    /// The key a member of an active set names, if its policy is configured here.
    fn name_of(&self, member: &[u8]) -> Option<Name> {
        let colon = member.iter().position(|b| *b == b':')?;
        let (policy, key) = (&member[..colon], &member[colon + 1..]);
        let p = self
            .limiter
            .policies
            .iter()
            .position(|p| p.name.as_bytes() == policy)?;
        Some(Name {
            policy: PolicyId(p),
            key: key.into(),
        })
    }

    fn bucket_key(&self, name: &Name) -> Vec<u8> {
        let mut k = self.redis.key_prefix.as_bytes().to_vec();
        k.extend_from_slice(&self.member(name));
        k
    }

    fn rights_key(&self, name: &Name) -> Vec<u8> {
        rights_key(&self.bucket_key(name))
    }

    fn active_key(&self) -> String {
        format!("{}regions:active", self.redis.key_prefix)
    }
}

/// The rights hash that goes with a bucket key (the same name, `:rights` appended).
pub(super) fn rights_key(bucket: &[u8]) -> Vec<u8> {
    let mut k = bucket.to_vec();
    k.extend_from_slice(b":rights");
    k
}

/// One peer's read: its active keys and the rights of `keys`, in one round trip.
#[allow(clippy::too_many_arguments)]
async fn read_peer(
    conn: &mut Option<ConnectionManager>,
    url: &str,
    redis_cfg: &RedisConfig,
    timeout: Duration,
    active: &str,
    since_ms: u64,
    keys: &[Vec<u8>],
    regions: usize,
    fingerprint: &str,
    max_keys: usize,
) -> Result<PeerRead, redis::RedisError> {
    if conn.is_none() {
        *conn = Some(connect(url, redis_cfg, timeout).await?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(io_error("no connection"));
    };
    let mut pipe = redis::pipe();
    pipe.cmd("ZRANGEBYSCORE")
        .arg(active)
        .arg(since_ms)
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(max_keys);
    for k in keys {
        pipe.cmd("HGETALL").arg(k);
    }
    let values: Vec<redis::Value> = tokio::time::timeout(timeout, pipe.query_async(c))
        .await
        .map_err(|_| io_error("timeout"))??;
    let mut values = values.into_iter();
    let active: Vec<Vec<u8>> = values
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or_default();
    let mut bytes = active.iter().map(Vec::len).sum();
    let mut foreign = 0;
    let rights = values
        .map(|v| {
            let fields: Vec<Vec<u8>> = redis::from_redis_value(v).ok()?;
            bytes += fields.iter().map(Vec::len).sum::<usize>();
            let parsed = parse_fields(regions, &fields)?;
            if parsed.fingerprint.as_deref() != Some(fingerprint) {
                foreign += 1;
                return None;
            }
            Some(parsed.rights)
        })
        .collect();
    Ok(PeerRead {
        active,
        rights,
        bytes,
        foreign,
    })
}

/// A region's rights hash, parsed.
struct Parsed {
    rights: Rights,
    gen: u64,
    share: u64,
    /// The script made this caller's gives.
    gave: bool,
    /// The regions' configuration the hash was written under (see [`RegionSplit`]).
    fingerprint: Option<String>,
}

fn parse_rights(crdt: &Regions, fields: &[Vec<u8>]) -> Option<Parsed> {
    parse_fields(crdt.count(), fields).map(|mut p| {
        if p.rights.region_count() != crdt.count() {
            p.rights = Rights::new(crdt);
        }
        p
    })
}

/// Parses `HGETALL` output (field, value, ...); `None` for an empty hash (no rights there).
fn parse_fields(regions: usize, fields: &[Vec<u8>]) -> Option<Parsed> {
    if fields.is_empty() {
        return None;
    }
    let shape = Regions::equal(regions, Units::ZERO).ok()?;
    let mut p = Parsed {
        rights: Rights::new(&shape),
        gen: 0,
        share: 0,
        gave: false,
        fingerprint: None,
    };
    let mut versions: HashMap<u16, Demand> = HashMap::new();
    for pair in fields.chunks_exact(2) {
        let (Ok(field), Ok(value)) = (std::str::from_utf8(&pair[0]), std::str::from_utf8(&pair[1]))
        else {
            continue;
        };
        if field == "fp" {
            p.fingerprint = Some(value.to_string());
            continue;
        }
        let number = value.parse::<u64>().ok();
        let mut parts = field.split(':');
        match (parts.next(), parts.next(), parts.next(), number) {
            (Some("g"), Some(from), Some(to), Some(n)) => {
                if let (Ok(from), Ok(to)) = (from.parse(), to.parse()) {
                    p.rights.raise_given(RegionId(from), RegionId(to), Units(n));
                }
            }
            (Some("dv"), Some(r), None, Some(n)) => {
                if let Ok(r) = r.parse() {
                    versions.entry(r).or_default().version = n;
                }
            }
            (Some("do"), Some(r), None, Some(n)) => {
                if let Ok(r) = r.parse() {
                    versions.entry(r).or_default().observed = n;
                }
            }
            (Some("share"), None, None, Some(n)) => p.share = n.min(SHARE_UNITS),
            (Some("gen"), None, None, Some(n)) => p.gen = n,
            (Some("_gave"), None, None, Some(n)) => p.gave = n == 1,
            _ => {}
        }
    }
    for (r, d) in versions {
        p.rights.raise_demand(RegionId(r), d);
    }
    Some(p)
}

pub(crate) async fn connect(
    url: &str,
    cfg: &RedisConfig,
    timeout: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mc = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(0);
    tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, mc))
        .await
        .map_err(|_| io_error("connect timeout"))?
}

pub(crate) fn io_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, what))
}

fn region_id(i: usize) -> RegionId {
    RegionId(u16::try_from(i).unwrap_or(u16::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<Vec<u8>> {
        pairs
            .iter()
            .flat_map(|(f, v)| [f.as_bytes().to_vec(), v.as_bytes().to_vec()])
            .collect()
    }

    #[test]
    fn a_rights_hash_reads_back_as_the_rights_that_wrote_it() {
        let crdt = Regions::equal(3, Units(50_000)).unwrap();
        let mut a = Replica::new(&crdt, RegionId(0)).unwrap();
        a.give(&crdt, RegionId(2), Units(120_000)).unwrap();
        a.publish_demand(42).unwrap();
        let mut b = Replica::new(&crdt, RegionId(1)).unwrap();
        b.give(&crdt, RegionId(0), Units(7)).unwrap();
        a.merge(b.rights()).unwrap();
        let mut hash = vec![
            ("share".to_string(), "213340".to_string()),
            ("gen".to_string(), "3".to_string()),
            ("seen".to_string(), "9".to_string()),
            ("_gave".to_string(), "1".to_string()),
            ("fp".to_string(), "00ff".to_string()),
        ];
        for (from, to, units) in a.rights().gives() {
            hash.push((format!("g:{}:{}", from.0, to.0), units.0.to_string()));
        }
        for r in crdt.ids() {
            let d = a.rights().demand(r);
            hash.push((format!("dv:{}", r.0), d.version.to_string()));
            hash.push((format!("do:{}", r.0), d.observed.to_string()));
        }
        let pairs: Vec<(&str, &str)> = hash.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
        let parsed = parse_rights(&crdt, &fields(&pairs)).unwrap();
        assert_eq!(&parsed.rights, a.rights());
        assert_eq!((parsed.gen, parsed.share, parsed.gave), (3, 213_340, true));
        assert_eq!(parsed.fingerprint.as_deref(), Some("00ff"));
        assert_eq!(
            parsed.rights.share(&crdt, RegionId(0)),
            Units(333_334 - 120_000 + 7)
        );
    }

    #[test]
    fn a_hostile_or_foreign_hash_cannot_grant_more_than_the_whole() {
        let crdt = Regions::equal(2, Units(50_000)).unwrap();
        // Out-of-range regions, a give to itself, garbage and a share above the whole.
        let junk = fields(&[
            ("g:0:9", "5"),
            ("g:1:1", "999"),
            ("g:x:0", "1"),
            ("g:1:0", "not a number"),
            ("share", "99999999"),
            ("dv:7", "1"),
        ]);
        let parsed = parse_rights(&crdt, &junk).unwrap();
        assert_eq!(parsed.rights, Rights::new(&crdt));
        assert_eq!(parsed.share, SHARE_UNITS);
        assert!(parse_rights(&crdt, &[]).is_none());
        // A hash written for three regions, read with two: the extra region is ignored.
        let three = fields(&[("g:2:0", "400000"), ("g:1:0", "10")]);
        let parsed = parse_rights(&crdt, &three).unwrap();
        assert_eq!(parsed.rights.share(&crdt, RegionId(0)), Units(500_010));
    }
}
