//! The live dashboard: `/dashboard` (one self-contained page) and `/api/stats` (its JSON)
//! on the admin listener.
//!
//! What it shows comes from three places, none of them a cost to a proxied request:
//! - the request counters the metrics already keep, read once a second by the
//!   [`Sampler`] into five minutes of per-second rates and a minute of latencies;
//! - the responses the gateway makes itself (401, 403, 429, 502, ...), which the request
//!   path hands to [`Dashboard::record`]: the blocked clients' heavy hitters (fixed memory,
//!   see [`heavy`]) and a ring of the last 50 errors;
//! - the config in force at the moment the page asks: pools, breakers, the limiter.
//!
//! With Redis, the sampler merges every instance's blocked clients through a sorted set
//! per minute (see [`sampler`]), so the page of any instance shows the whole fleet's.

mod heavy;
mod sampler;
mod series;

pub use sampler::Sampler;

use crate::observability::{LimiterTotals, Metrics, BUILD};
use crate::ratelimit::Limiter;
use crate::routing::Pool;
use heavy::{Counted, Recent};
use serde::Serialize;
use series::{RouteLatency, RouteRates, Series};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// The page, HTML with its CSS and JavaScript inline: nothing fetched from elsewhere.
pub const PAGE: &str = include_str!("page.html");

/// Errors kept for the page.
const ERRORS_KEPT: usize = 50;
/// Minutes the blocked-clients view covers, and keys tracked per minute.
const BLOCKED_MINUTES: usize = 5;
const BLOCKED_TRACKED: usize = 64;
/// Blocked clients listed.
const BLOCKED_SHOWN: usize = 10;
/// Routes charted.
const ROUTES_SHOWN: usize = 6;
/// A cross-instance view older than this is not shown (Redis went away): the local one is.
const MERGED_FRESH: Duration = Duration::from_secs(10);

/// Who a blocked request came from.
#[derive(Debug, Clone, Copy)]
pub enum Client<'a> {
    Consumer(&'a str),
    Ip(IpAddr),
    Unknown,
}

/// One response the gateway made itself, as the page lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayError {
    pub unix_ms: u64,
    pub status: u16,
    pub route: String,
    pub request_id: String,
    pub reason: &'static str,
}

/// The dashboard's state, shared by the request path, the sampler and the admin listener.
pub struct Dashboard {
    started: Instant,
    config_path: Option<PathBuf>,
    blocked: Mutex<Recent>,
    errors: Mutex<VecDeque<GatewayError>>,
    series: Mutex<Series>,
    /// Every instance's blocked clients, merged through Redis, and when they were read.
    merged: Mutex<Option<(Instant, Vec<Counted>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data, consistent after every statement: a panic elsewhere leaves nothing half done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Blocked clients are counted per (status, client): the key text is `"429 203.0.113.9"`
/// or `"401 consumer:alice"`, the same on every instance (the merged view adds them).
fn blocked_key<'b>(status: u16, client: Client<'_>, buf: &'b mut [u8; 160]) -> Option<&'b str> {
    use std::io::Write;
    let mut w = &mut buf[..];
    // A consumer name too long for the buffer is cut (write! fills what fits): the page
    // needs no more.
    let _ = match client {
        Client::Consumer(c) => write!(w, "{status} consumer:{c}"),
        Client::Ip(ip) => write!(w, "{status} {ip}"),
        Client::Unknown => write!(w, "{status} unknown"),
    };
    let len = 160 - w.len();
    std::str::from_utf8(&buf[..len])
        .or_else(|e| std::str::from_utf8(&buf[..e.valid_up_to()]))
        .ok()
}

impl Dashboard {
    pub fn new(config_path: Option<PathBuf>) -> Self {
        Self {
            started: Instant::now(),
            config_path,
            blocked: Mutex::new(Recent::new(BLOCKED_MINUTES, BLOCKED_TRACKED)),
            errors: Mutex::new(VecDeque::with_capacity(ERRORS_KEPT)),
            series: Mutex::new(Series::default()),
            merged: Mutex::new(None),
        }
    }

    /// The request path, for a response the gateway made itself (`reason` set) or any
    /// 401/403/429: counts a blocked client, keeps the error. Never called for a request
    /// proxied successfully; a short lock, no await.
    pub fn record(
        &self,
        status: u16,
        reason: &'static str,
        route: &str,
        request_id: &str,
        client: Client<'_>,
    ) {
        let now = unix_now();
        if matches!(status, 401 | 403 | 429) {
            let mut buf = [0u8; 160];
            if let Some(key) = blocked_key(status, client, &mut buf) {
                lock(&self.blocked).add(now.as_secs() / 60, key);
            }
        }
        let error = GatewayError {
            unix_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            status,
            route: route.to_string(),
            request_id: request_id.to_string(),
            reason,
        };
        let mut errors = lock(&self.errors);
        if errors.len() == ERRORS_KEPT {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    /// Adds one second of request counters (the sampler, once a second).
    fn sample(&self, metrics: &Metrics) {
        let totals = metrics.request_totals();
        lock(&self.series).sample(unix_now().as_secs(), &totals);
    }

    /// What `/api/stats` answers, for the pools and limiter of the config in force.
    pub fn stats(&self, pools: &[Arc<Pool>], limiter: &Limiter, metrics: &Metrics) -> Stats {
        let now = unix_now();
        let series = lock(&self.series);
        let traffic = Traffic {
            start_unix: series.start(),
            by_class: series.by_class().into_iter().collect(),
            routes: series.top_routes(ROUTES_SHOWN),
        };
        let rps = series.recent_rate(5);
        let latency = series.latency();
        drop(series);
        let minute = now.as_secs() / 60;
        let merged = lock(&self.merged)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < MERGED_FRESH)
            .map(|(_, top)| top.clone());
        let (scope, top) = match merged {
            Some(top) => ("all instances", top),
            None => (
                "this instance",
                lock(&self.blocked).top(minute, BLOCKED_SHOWN),
            ),
        };
        Stats {
            version: BUILD.version,
            commit: BUILD.commit,
            config_path: self.config_path.as_ref().map(|p| p.display().to_string()),
            config_sha256: metrics.config_hash(),
            uptime_seconds: self.started.elapsed().as_secs(),
            now_unix_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            rps,
            traffic,
            latency,
            blocked: Blocked {
                scope,
                window_minutes: BLOCKED_MINUTES,
                top: top.iter().map(BlockedClient::from).collect(),
            },
            upstreams: pools
                .iter()
                .map(|p| PoolReport {
                    pool: p.health.name.clone(),
                    health_checks: p.health.has_health_check(),
                    backends: p.health.report(),
                })
                .collect(),
            limiter: LimiterReport {
                redis: match limiter.redis_reachable() {
                    None => "not configured",
                    Some(true) => "reachable",
                    Some(false) => "unreachable",
                },
                keys: limiter.keys(),
                totals: metrics.limiter_totals(),
            },
            errors: lock(&self.errors).iter().rev().cloned().collect(),
        }
    }

    fn set_merged(&self, top: Option<Vec<Counted>>) {
        *lock(&self.merged) = top.map(|t| (Instant::now(), t));
    }
}

/// The JSON of `/api/stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub version: &'static str,
    pub commit: &'static str,
    pub config_path: Option<String>,
    pub config_sha256: Option<String>,
    pub uptime_seconds: u64,
    pub now_unix_ms: u64,
    /// All requests per second, over the last 5 seconds.
    pub rps: f64,
    pub traffic: Traffic,
    pub latency: Vec<RouteLatency>,
    pub blocked: Blocked,
    pub upstreams: Vec<PoolReport>,
    pub limiter: LimiterReport,
    /// Newest first.
    pub errors: Vec<GatewayError>,
}

/// Requests per second, one value per second from `start_unix`.
#[derive(Debug, Serialize)]
pub struct Traffic {
    pub start_unix: Option<u64>,
    pub by_class: BTreeMap<&'static str, Vec<u64>>,
    pub routes: Vec<RouteRates>,
}

#[derive(Debug, Serialize)]
pub struct Blocked {
    /// "this instance", or "all instances" when merged through Redis.
    pub scope: &'static str,
    pub window_minutes: usize,
    pub top: Vec<BlockedClient>,
}

/// A client among the most refused: counts are upper bounds, `count - error` lower ones.
#[derive(Debug, Serialize)]
pub struct BlockedClient {
    pub client: String,
    pub status: u16,
    pub count: u64,
    pub error: u64,
}

impl From<&Counted> for BlockedClient {
    fn from(c: &Counted) -> Self {
        let (status, client) = c.key.split_once(' ').unwrap_or(("0", &c.key));
        Self {
            client: client.to_string(),
            status: status.parse().unwrap_or(0),
            count: c.count,
            error: c.error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PoolReport {
    pub pool: String,
    pub health_checks: bool,
    pub backends: Vec<crate::routing::BackendReport>,
}

#[derive(Debug, Serialize)]
pub struct LimiterReport {
    /// "not configured", "reachable" or "unreachable".
    pub redis: &'static str,
    /// Client keys the limiter tracks now.
    pub keys: usize,
    #[serde(flatten)]
    pub totals: LimiterTotals,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_keys_name_status_and_client() {
        let mut buf = [0u8; 160];
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            blocked_key(429, Client::Ip(ip), &mut buf),
            Some("429 2001:db8::1")
        );
        let mut buf = [0u8; 160];
        assert_eq!(
            blocked_key(401, Client::Consumer("alice"), &mut buf),
            Some("401 consumer:alice")
        );
        let long = "é".repeat(200);
        let mut buf = [0u8; 160];
        let cut = blocked_key(403, Client::Consumer(&long), &mut buf).unwrap();
        assert!(
            cut.starts_with("403 consumer:é") && cut.len() <= 160,
            "{cut}"
        );
    }

    #[test]
    fn keeps_the_last_fifty_errors_and_counts_blocked_clients() {
        let d = Dashboard::new(None);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for i in 0..60 {
            d.record(
                429,
                "rate limited",
                "api",
                &format!("id-{i}"),
                Client::Ip(ip),
            );
        }
        d.record(502, "upstream failed", "api", "last", Client::Unknown);
        let errors = lock(&d.errors);
        assert_eq!(errors.len(), ERRORS_KEPT);
        assert_eq!(errors.back().unwrap().request_id, "last");
        assert_eq!(errors.front().unwrap().request_id, "id-11");
        drop(errors);
        let top = lock(&d.blocked).top(unix_now().as_secs() / 60, 10);
        let client = BlockedClient::from(&top[0]);
        assert_eq!(
            (client.client.as_str(), client.status, client.count),
            ("203.0.113.9", 429, 60)
        );
        assert_eq!(top.len(), 1, "a 502 is not a blocked client");
    }
}
