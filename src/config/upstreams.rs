//! The `upstreams` section: pools, backends, health checks and circuit breakers, with
//! their ranges.

use super::*;
pub use raw::{HealthCheckKind, Selection};

/// A backend address as configured: an IP literal, or a DNS name resolved at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Ip(a) => write!(f, "{a}"),
            BackendAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub addr: BackendAddr,
    pub weight: usize,
}

/// What consistent hashing hashes to pick a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Path,
    Header(http::HeaderName),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub path: String,
    pub host: String,
    pub expected_status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: usize,
    pub unhealthy_threshold: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub selection: Selection,
    pub hash_key: HashKey,
    pub backends: Vec<BackendConfig>,
    pub health_check: Option<HealthCheckConfig>,
    /// `None` when disabled.
    pub circuit_breaker: Option<BreakerConfig>,
}

// Ranges of the `upstreams` section.
const WEIGHT: Range<usize> = Range::new(1, 1000);
const EXPECTED_STATUS: Range<u16> = Range::new(100, 599);
const HEALTH_INTERVAL: Range<Duration> = Range::new(ms(10), HOUR);
const HEALTH_TIMEOUT: Range<Duration> = TIMEOUT;
/// `healthy_threshold` and `unhealthy_threshold`.
const HEALTH_THRESHOLD: Range<usize> = Range::new(1, 100);
/// 0 turns the rule off.
const CONSECUTIVE_FAILURES: Range<u32> = Range::new(0, 10_000);
/// 0 turns the rule off.
const FAILURE_RATIO: Range<f64> = Range::new(0.0, 1.0);
const BREAKER_WINDOW: Range<Duration> = Range::new(ms(100), HOUR);
const MIN_REQUESTS: Range<u32> = Range::new(1, 1_000_000);
/// `open_duration` and `max_open_duration` (and open_duration <= max_open_duration).
const OPEN_DURATION: Range<Duration> = Range::new(ms(1), HOUR);
const HALF_OPEN_TRIALS: Range<u32> = Range::new(1, 1000);
const CLOSE_AFTER: Range<u32> = Range::new(1, 1000);

impl Validator<'_> {
    pub(super) fn pools(&mut self, value: Option<serde_yaml::Value>) -> Vec<PoolConfig> {
        let map: raw::Pools = match value {
            None | Some(serde_yaml::Value::Null) => {
                self.problem("upstreams", "at least one upstream pool is required");
                return Vec::new();
            }
            Some(v) => match self.typed("upstreams", v) {
                Some(m) => m,
                None => return Vec::new(),
            },
        };
        if map.is_empty() {
            self.problem("upstreams", "at least one upstream pool is required");
        }
        let mut pools = Vec::new();
        for (name, value) in map {
            let at = format!("upstreams.{name}");
            if !valid_name(&name) {
                self.problem(
                    &at,
                    format!("pool name \"{name}\" may use only letters, digits, '-' and '_'"),
                );
            }
            let Some(raw) = self.typed::<raw::Pool>(&at, value) else {
                // Keep the name, so routes that use it do not also report it missing.
                pools.push(PoolConfig {
                    name,
                    selection: Selection::RoundRobin,
                    hash_key: HashKey::ClientIp,
                    backends: Vec::new(),
                    health_check: None,
                    circuit_breaker: None,
                });
                continue;
            };
            pools.push(self.pool(&at, name, raw));
        }
        pools
    }

    pub(super) fn pool(&mut self, at: &str, name: String, raw: raw::Pool) -> PoolConfig {
        let listed = self.required(at, "backends", raw.backends);
        if listed.as_ref().is_some_and(Vec::is_empty) {
            self.problem(format!("{at}.backends"), "at least one backend is required");
        }
        let mut backends: Vec<BackendConfig> = Vec::new();
        for (i, b) in listed.unwrap_or_default().into_iter().enumerate() {
            let bat = format!("{at}.backends[{i}]");
            let weight = self.int(&format!("{bat}.weight"), b.weight, WEIGHT);
            let Some(written) = self.required(&bat, "addr", b.addr) else {
                continue;
            };
            match parse_backend_addr(&written) {
                Ok(addr) => {
                    if backends.iter().any(|o| o.addr == addr) {
                        self.problem(
                            format!("{bat}.addr"),
                            format!("backend {written} is listed twice"),
                        );
                    }
                    backends.push(BackendConfig { addr, weight });
                }
                Err(msg) => self.problem(format!("{bat}.addr"), msg),
            }
        }
        let key_at = format!("{at}.hash_key");
        let hash_key = match raw
            .hash_key
            .as_deref()
            .map(|k| (k, self.source(&key_at, k)))
        {
            None | Some((_, None)) | Some((_, Some(Source::Word("client_ip")))) => {
                HashKey::ClientIp
            }
            Some((_, Some(Source::Word("path")))) => HashKey::Path,
            Some((_, Some(Source::Header(h)))) => HashKey::Header(h),
            Some((k, Some(_))) => {
                self.problem(
                    &key_at,
                    format!("unknown hash key \"{k}\", expected client_ip, path or header:<name>"),
                );
                HashKey::ClientIp
            }
        };
        if raw.hash_key.is_some() && raw.selection != Selection::ConsistentHash {
            self.problem(
                format!("{at}.hash_key"),
                "only used with selection: consistent_hash",
            );
        }
        let health_check = raw
            .health_check
            .map(|hc| self.health_check(&format!("{at}.health_check"), hc));
        let circuit_breaker = match raw.circuit_breaker {
            None => self.circuit_breaker(&format!("{at}.circuit_breaker"), Default::default()),
            Some(cb) => self.circuit_breaker(&format!("{at}.circuit_breaker"), cb),
        };
        PoolConfig {
            name,
            selection: raw.selection,
            hash_key,
            backends,
            health_check,
            circuit_breaker,
        }
    }

    pub(super) fn circuit_breaker(
        &mut self,
        at: &str,
        cb: raw::CircuitBreaker,
    ) -> Option<BreakerConfig> {
        let at = |key: &str| format!("{at}.{key}");
        // Out of range (or NaN) is a problem, and a config with problems is never used.
        let failure_ratio = cb.failure_ratio;
        self.in_range(
            &at("failure_ratio"),
            &failure_ratio,
            &FAILURE_RATIO,
            f64::to_string,
        );
        let c = BreakerConfig {
            consecutive_failures: self.int(
                &at("consecutive_failures"),
                cb.consecutive_failures,
                CONSECUTIVE_FAILURES,
            ),
            failure_ratio,
            window: self.duration(&at("window"), cb.window.0, BREAKER_WINDOW),
            min_requests: self.int(&at("min_requests"), cb.min_requests, MIN_REQUESTS),
            open_duration: self.duration(&at("open_duration"), cb.open_duration.0, OPEN_DURATION),
            max_open: self.duration(
                &at("max_open_duration"),
                cb.max_open_duration.0,
                OPEN_DURATION,
            ),
            half_open_trials: self.int(
                &at("half_open_trials"),
                cb.half_open_trials,
                HALF_OPEN_TRIALS,
            ),
            close_after: self.int(&at("close_after"), cb.close_after, CLOSE_AFTER),
            count_5xx: cb.count_5xx,
        };
        if c.max_open < c.open_duration {
            self.problem(
                at("max_open_duration"),
                format!(
                    "must be at least open_duration ({})",
                    humantime::format_duration(c.open_duration)
                ),
            );
        }
        cb.enabled.then_some(c)
    }

    pub(super) fn health_check(&mut self, hc_at: &str, hc: raw::HealthCheck) -> HealthCheckConfig {
        let at = |key: &str| format!("{hc_at}.{key}");
        let kind = self
            .required(hc_at, "type", hc.kind)
            .unwrap_or(HealthCheckKind::Http);
        if kind == HealthCheckKind::Tcp {
            for (set, key) in [
                (hc.path.is_some(), "path"),
                (hc.host.is_some(), "host"),
                (hc.expected_status.is_some(), "expected_status"),
            ] {
                if set {
                    self.problem(at(key), "only used with type: http");
                }
            }
        }
        let path = hc.path.unwrap_or_else(|| raw::HealthCheck::PATH.into());
        if !path.starts_with('/') {
            self.problem(at("path"), format!("must start with '/', got \"{path}\""));
        } else if path.parse::<http::uri::PathAndQuery>().is_err() {
            self.problem(
                at("path"),
                format!("\"{path}\" is not a valid request path"),
            );
        }
        HealthCheckConfig {
            kind,
            path,
            host: hc.host.unwrap_or_else(|| raw::HealthCheck::HOST.into()),
            expected_status: hc.expected_status.map_or(raw::HealthCheck::STATUS, |n| {
                self.int(&at("expected_status"), n, EXPECTED_STATUS)
            }),
            interval: self.duration(&at("interval"), hc.interval.0, HEALTH_INTERVAL),
            timeout: self.duration(&at("timeout"), hc.timeout.0, HEALTH_TIMEOUT),
            healthy_threshold: self.int(
                &at("healthy_threshold"),
                hc.healthy_threshold,
                HEALTH_THRESHOLD,
            ),
            unhealthy_threshold: self.int(
                &at("unhealthy_threshold"),
                hc.unhealthy_threshold,
                HEALTH_THRESHOLD,
            ),
        }
    }
}

/// Parses `host:port` without resolving anything: an IP literal (`[v6]:port` for IPv6) or a DNS name.
pub fn parse_backend_addr(s: &str) -> Result<BackendAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(format!("\"{s}\": port 0 is not a valid backend port"));
        }
        return Ok(BackendAddr::Ip(a));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "\"{s}\" is not host:port (e.g. \"127.0.0.1:3000\")"
        ));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(format!(
                "\"{s}\": \"{port}\" is not a port number (1-65535)"
            ))
        }
    };
    if host.parse::<IpAddr>().is_ok() || host.contains(':') {
        return Err(format!("\"{s}\": write IPv6 addresses as [addr]:port"));
    }
    if host == "localhost" {
        return Ok(BackendAddr::Ip(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    if !valid_hostname(&host.to_ascii_lowercase())
        || host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(format!(
            "\"{s}\": \"{host}\" is neither an IP address nor a valid host name"
        ));
    }
    Ok(BackendAddr::Name {
        host: host.to_string(),
        port,
    })
}

/// The section as written: serde structs that reject unknown keys, and the one home of
/// every default of the section (validation checks ranges and never invents a value).
pub(super) mod raw {
    use super::super::values::{HumanDuration, Int};
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
    #[serde(rename_all = "snake_case")]
    pub enum Selection {
        #[default]
        RoundRobin,
        Weighted,
        ConsistentHash,
        Random,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Pool {
        /// Required (like every `Option` below without a default): checked in validation, so
        /// that a field that could not be read is not also reported missing.
        pub backends: Option<Vec<Backend>>,
        #[serde(default)]
        pub selection: Selection,
        /// What consistent hashing hashes: `client_ip`, `path` or `header:<name>`.
        pub hash_key: Option<String>,
        pub health_check: Option<HealthCheck>,
        /// On with its defaults when absent.
        pub circuit_breaker: Option<CircuitBreaker>,
    }

    /// Envoy's and Traefik's defaults are beside these in the README.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct CircuitBreaker {
        pub enabled: bool,
        pub consecutive_failures: Int,
        pub failure_ratio: f64,
        pub window: HumanDuration,
        pub min_requests: Int,
        pub open_duration: HumanDuration,
        pub max_open_duration: HumanDuration,
        pub half_open_trials: Int,
        pub close_after: Int,
        pub count_5xx: bool,
    }

    impl Default for CircuitBreaker {
        fn default() -> Self {
            Self {
                enabled: true,
                consecutive_failures: Int(5),
                failure_ratio: 0.5,
                window: HumanDuration(Duration::from_secs(10)),
                min_requests: Int(20),
                open_duration: HumanDuration(Duration::from_secs(5)),
                max_open_duration: HumanDuration(Duration::from_secs(60)),
                half_open_trials: Int(3),
                close_after: Int(3),
                count_5xx: true,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Backend {
        pub addr: Option<String>,
        #[serde(default = "one")]
        pub weight: Int,
    }

    fn one() -> Int {
        Int(1)
    }

    #[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "snake_case")]
    pub enum HealthCheckKind {
        Http,
        Tcp,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HealthCheck {
        #[serde(rename = "type")]
        pub kind: Option<HealthCheckKind>,
        /// These three are only for `type: http`; defaults in the constants below.
        pub path: Option<String>,
        pub host: Option<String>,
        pub expected_status: Option<Int>,
        #[serde(default = "HealthCheck::interval")]
        pub interval: HumanDuration,
        #[serde(default = "HealthCheck::timeout")]
        pub timeout: HumanDuration,
        #[serde(default = "HealthCheck::threshold")]
        pub healthy_threshold: Int,
        #[serde(default = "HealthCheck::threshold")]
        pub unhealthy_threshold: Int,
    }

    impl HealthCheck {
        pub const PATH: &'static str = "/";
        pub const HOST: &'static str = "localhost";
        pub const STATUS: u16 = 200;

        fn interval() -> HumanDuration {
            HumanDuration(Duration::from_secs(5))
        }

        fn timeout() -> HumanDuration {
            HumanDuration(Duration::from_secs(1))
        }

        fn threshold() -> Int {
            Int(1)
        }
    }

    /// Upstream pools by name (a map keeps names unique).
    pub type Pools = BTreeMap<String, serde_yaml::Value>;
}
