//! The dashboard's background task: once a second it reads the request counters into the
//! rate series; every other second, with Redis, it adds this instance's new blocked-client
//! counts to a sorted set per minute and reads back the union of the last minutes.
//!
//! The sorted sets, `<key_prefix>{dashboard}:blocked:<unix minute>` (one hash tag: a
//! cluster keeps them on one slot for `ZUNION`), hold every instance's counts summed. Each
//! is trimmed to its [`KEEP`] largest members and expires after [`BLOCKED_TTL`]. Only
//! this task talks to Redis for the dashboard: never the request path, never the page.

use super::heavy::{sort_top, Counted};
use super::{lock, unix_now, Dashboard, BLOCKED_MINUTES, BLOCKED_SHOWN};
use crate::config::RedisConfig;
use crate::observability::Metrics;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Members kept per minute in Redis: well above what the page lists, bounded whatever
/// the number of instances.
const KEEP: isize = 256;
/// A minute's set outlives the window it is read in.
const BLOCKED_TTL: Duration = Duration::from_secs(60 * (BLOCKED_MINUTES as u64 + 2));
/// How often the merged view is written and read.
const MERGE_EVERY: u32 = 2;

/// The dashboard's background service.
pub struct Sampler {
    pub dashboard: Arc<Dashboard>,
    pub metrics: Arc<Metrics>,
    /// The Redis of the config in force, if any, to merge the blocked clients through.
    pub redis: Box<dyn Fn() -> Option<RedisConfig> + Send + Sync>,
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut merge = Merge::default();
        let mut n: u32 = 0;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            self.dashboard.sample(&self.metrics);
            n = n.wrapping_add(1);
            if !n.is_multiple_of(MERGE_EVERY) {
                continue;
            }
            match (self.redis)() {
                Some(cfg) => match merge.round(&self.dashboard, &cfg).await {
                    Ok(top) => self.dashboard.set_merged(Some(top)),
                    Err(e) => {
                        // The page falls back to this instance's view; the limiter's own
                        // Redis errors are counted and logged by the limiter.
                        log::debug!("dashboard: cannot merge blocked clients through Redis: {e}");
                        merge.conn = None;
                    }
                },
                None => self.dashboard.set_merged(None),
            }
        }
    }
}

/// The merge's connection, and what of each minute's counts Redis already has.
#[derive(Default)]
struct Merge {
    conn: Option<(String, ConnectionManager)>,
    /// `(minute, key)` -> count already added to Redis.
    flushed: HashMap<(u64, Box<str>), u64>,
}

fn minute_key(prefix: &str, minute: u64) -> String {
    format!("{prefix}{{dashboard}}:blocked:{minute}")
}

impl Merge {
    /// Adds the new counts of this minute and the last, then reads the union of the window.
    async fn round(
        &mut self,
        dashboard: &Dashboard,
        cfg: &RedisConfig,
    ) -> Result<Vec<Counted>, redis::RedisError> {
        let now = unix_now().as_secs() / 60;
        // `(minute, key, count, new since the last round)`, taken under the lock; the lock
        // is released before any await.
        let mut adds: Vec<(u64, Box<str>, u64, u64)> = Vec::new();
        {
            let blocked = lock(&dashboard.blocked);
            for minute in [now.saturating_sub(1), now] {
                let Some(sketch) = blocked.minute(minute) else {
                    continue;
                };
                for e in sketch.entries() {
                    let done = self
                        .flushed
                        .get(&(minute, e.key.clone()))
                        .copied()
                        .unwrap_or(0);
                    if e.count > done {
                        adds.push((minute, e.key.clone(), e.count, e.count - done));
                    }
                }
            }
        }
        let mut pipe = redis::pipe();
        for (minute, key, _, new) in &adds {
            pipe.cmd("ZINCRBY")
                .arg(minute_key(&cfg.key_prefix, *minute))
                .arg(*new)
                .arg(&**key)
                .ignore();
        }
        for minute in [now.saturating_sub(1), now] {
            if adds.iter().any(|(m, ..)| *m == minute) {
                let k = minute_key(&cfg.key_prefix, minute);
                pipe.cmd("ZREMRANGEBYRANK")
                    .arg(&k)
                    .arg(0)
                    .arg(-(KEEP + 1))
                    .ignore();
                pipe.cmd("EXPIRE")
                    .arg(&k)
                    .arg(BLOCKED_TTL.as_secs())
                    .ignore();
            }
        }
        let window: Vec<String> = (0..BLOCKED_MINUTES as u64)
            .map(|back| minute_key(&cfg.key_prefix, now.saturating_sub(back)))
            .collect();
        pipe.cmd("ZUNION")
            .arg(window.len())
            .arg(&window)
            .arg("WITHSCORES");
        let conn = self.connection(cfg).await?;
        let query = pipe.query_async::<(Vec<(String, f64)>,)>(conn);
        let (union,) = tokio::time::timeout(cfg.command_timeout, query)
            .await
            .map_err(|_| crate::ratelimit::io_error("dashboard merge timed out"))??;
        for (minute, key, count, _) in adds {
            self.flushed.insert((minute, key), count);
        }
        self.flushed.retain(|(m, _), _| *m + 1 >= now);
        let mut top: Vec<Counted> = union
            .into_iter()
            .map(|(key, score)| Counted {
                key: key.into(),
                count: score.max(0.0) as u64,
                error: 0,
            })
            .collect();
        sort_top(&mut top, BLOCKED_SHOWN);
        Ok(top)
    }

    async fn connection(
        &mut self,
        cfg: &RedisConfig,
    ) -> Result<&mut ConnectionManager, redis::RedisError> {
        if self.conn.as_ref().is_none_or(|(url, _)| *url != cfg.url) {
            let c = crate::ratelimit::connect(&cfg.url, cfg, cfg.command_timeout).await?;
            self.conn = Some((cfg.url.clone(), c));
        }
        match &mut self.conn {
            Some((_, c)) => Ok(c),
            None => Err(crate::ratelimit::io_error("no connection")),
        }
    }
}
