//! Configuration: one YAML file, parsed strictly and validated into a [`Config`], every problem with its path and line.
//!
//! Loading never touches the network. Upstream addresses that are DNS names are
//! kept as names here and resolved once when the server is built.

mod auth;
mod locate;
mod raw;

pub use auth::{
    ApiKeyConfig, ApiKeysConfig, AuthConfig, AuthMode, IssuerConfig, JwtConfig, JwtKeyConfig,
    TokenSource, ANONYMOUS,
};

use locate::LineIndex;
use serde::de::DeserializeOwned;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::{ColdStart, HealthCheckKind, OnRedisError, Selection};

/// A validated configuration: everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub server: ServerSettings,
    /// The built-in `GET /ping` endpoint, when enabled.
    pub ping: Option<PingConfig>,
    pub upstreams: Vec<PoolConfig>,
    pub routes: Vec<RouteConfig>,
    pub correlation: CorrelationConfig,
    pub access_log: AccessLogConfig,
    /// Peers whose `X-Forwarded-For` is believed when taking the client IP.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub rate_limits: RateLimitConfig,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone)]
pub struct PingConfig {
    pub path: String,
    /// Index into [`RateLimitConfig::policies`].
    pub rate_limit: Option<usize>,
}

/// What identifies a client to a rate-limit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client IP (after `trusted_proxies`).
    ClientIp,
    /// A request header's value; requests without it are keyed by client IP.
    Header(http::HeaderName),
    /// The authenticated consumer (JWT subject or API-key consumer); anonymous
    /// requests are keyed by client IP.
    Consumer,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub name: String,
    pub rate: u64,
    pub per: Duration,
    pub burst: u64,
    pub key: LimitKey,
    pub on_redis_error: OnRedisError,
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub sync_interval: Duration,
    pub lease_horizon: Duration,
    pub lease_min: u64,
    pub lease_max: u64,
    pub lease_wait: Duration,
    pub cold_start: ColdStart,
    pub cold_start_allowance: u64,
    pub idle_return: Duration,
    pub expected_instances: u32,
    pub key_prefix: String,
}

#[derive(Debug, Clone, Default)]
pub struct RateLimitConfig {
    /// `None`: every instance limits on its own state.
    pub redis: Option<RedisConfig>,
    pub policies: Vec<PolicyConfig>,
    pub max_keys: usize,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub work_stealing: bool,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upstream_keepalive_pool: usize,
    /// How long an idle upstream connection stays pooled; `None`: until the upstream closes it.
    pub upstream_idle_timeout: Option<Duration>,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// A client must send a whole request header within this time: 408, or a silent close
    /// if it sent nothing.
    pub client_header_timeout: Duration,
    /// How long a keep-alive client connection may sit idle between two requests.
    pub keepalive_timeout: Duration,
    /// Client connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The largest request header accepted (request line and headers); larger is 431.
    pub max_header_bytes: usize,
}

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

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub selection: Selection,
    pub hash_key: HashKey,
    pub backends: Vec<BackendConfig>,
    pub health_check: Option<HealthCheckConfig>,
    /// `None` when disabled.
    pub circuit_breaker: Option<crate::routing::breaker::BreakerConfig>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub pool: usize,
    pub strip_prefix: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Off by default: a timer on every upstream write cost ~10% throughput (measured).
    pub write_timeout: Option<Duration>,
    /// Extra attempts on another backend after a connect failure (idempotent methods only).
    pub retries: usize,
    /// Rate-limit policy (index into [`RateLimitConfig::policies`]) by tier index.
    pub rate_limit: Vec<Option<usize>>,
    pub auth: AuthMode,
    /// Bit `i` set: tier `i` may use the route.
    pub allowed_tiers: u64,
}

#[derive(Debug, Clone)]
pub struct CorrelationConfig {
    pub header: http::HeaderName,
    pub trust_incoming: bool,
    pub traceparent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    pub destination: Option<LogDestination>,
    pub buffer_lines: usize,
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document, e.g. `routes[1].upstream`; empty for the whole file.
    pub at: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if self.at.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {n} problem(s):\n{list}", path = path.display(), n = problems.len(), list = list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// The problems found, empty when the file could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })
}

/// Validates config text. Every problem found is returned, not just the first.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let lines = LineIndex::build(text);
    let mut v = Validator {
        lines: &lines,
        problems: Vec::new(),
    };
    let config = v.document(text);
    match config {
        Some(c) if v.problems.is_empty() => Ok(c),
        _ => {
            // In file order; problems without a line (whole-file ones) first.
            v.problems.sort_by_key(|p| p.line);
            Err(v.problems)
        }
    }
}

struct Validator<'a> {
    lines: &'a LineIndex,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        let at = at.into();
        let line = self.lines.line_of(&at);
        self.problems.push(Problem {
            at,
            line,
            message: message.into(),
        });
    }

    /// Deserializes `value` (found at `at`) into `T`, recording a problem on failure.
    fn typed<T: DeserializeOwned>(&mut self, at: &str, value: serde_yaml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let mut path = match (at.is_empty(), inner.as_str()) {
                    (_, ".") => at.to_string(),
                    (true, p) => p.to_string(),
                    (false, p) => format!("{at}.{p}"),
                };
                let message = e.into_inner().to_string();
                // Point unknown keys at their own line.
                if let Some(field) = message
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split('`').next())
                    .filter(|f| !path.ends_with(f))
                {
                    path = if path.is_empty() {
                        field.to_string()
                    } else {
                        format!("{path}.{field}")
                    };
                }
                self.problem(path, message);
                None
            }
        }
    }

    fn section<T: DeserializeOwned + Default>(
        &mut self,
        doc: &mut serde_yaml::Mapping,
        key: &str,
    ) -> T {
        match doc.remove(key) {
            None | Some(serde_yaml::Value::Null) => T::default(),
            Some(v) => self.typed(key, v).unwrap_or_default(),
        }
    }

    fn document(&mut self, text: &str) -> Option<Config> {
        let value: serde_yaml::Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                self.problems.push(Problem {
                    at: String::new(),
                    line: e.location().map(|l| l.line()),
                    message: format!("not valid YAML: {e}"),
                });
                return None;
            }
        };
        let mut doc = match value {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => {
                self.problem(
                    "",
                    "the file must be a mapping of sections (listen, upstreams, routes, ...)",
                );
                return None;
            }
        };
        for key in doc.keys() {
            match key.as_str() {
                Some(k) if raw::SECTIONS.contains(&k) => {}
                Some(k) => {
                    let k = k.to_string();
                    self.problem(
                        k.clone(),
                        format!(
                            "unknown section `{k}`, expected one of: {}",
                            raw::SECTIONS.join(", ")
                        ),
                    )
                }
                None => self.problem("", format!("section names must be strings, found {key:?}")),
            }
        }

        let listen: raw::Listen = self.section(&mut doc, "listen");
        let server: raw::Server = self.section(&mut doc, "server");
        let ping: raw::Ping = self.section(&mut doc, "ping");
        let correlation: raw::Correlation = self.section(&mut doc, "correlation");
        let access_log: raw::AccessLog = self.section(&mut doc, "access_log");
        let trusted: Vec<String> = self.section(&mut doc, "trusted_proxies");
        let rate_limits: raw::RateLimits = self.section(&mut doc, "rate_limits");
        let rate_limits = self.rate_limits(rate_limits);
        let auth: Option<raw::Auth> = self.section(&mut doc, "auth");
        let auth = self.auth(auth);
        let trusted_proxies = self.trusted_proxies(trusted);

        let listen = Listen {
            proxy: self.listen_addr("listen.proxy", &listen.proxy),
            admin: self.listen_addr("listen.admin", &listen.admin),
        };
        if listen.proxy == listen.admin && listen.proxy.port() != 0 {
            self.problem("listen.admin", "must differ from listen.proxy");
        }
        let server = self.server(server);
        let ping = self.ping(ping, &rate_limits);
        let upstreams = self.pools(doc.remove("upstreams"));
        let routes = self.routes(doc.remove("routes"), &upstreams, &rate_limits, &auth);
        let correlation = self.correlation(correlation);
        let access_log = self.access_log(access_log);
        Some(Config {
            listen,
            server,
            ping,
            upstreams,
            routes,
            correlation,
            access_log,
            trusted_proxies,
            rate_limits,
            auth,
        })
    }

    fn listen_addr(&mut self, at: &str, s: &str) -> SocketAddr {
        match s.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    at,
                    format!("\"{s}\" is not an IP address and port, e.g. \"0.0.0.0:8000\""),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        }
    }

    fn server(&mut self, s: raw::Server) -> ServerSettings {
        if s.threads == 0 || s.threads > 1024 {
            self.problem(
                "server.threads",
                format!("must be between 1 and 1024, got {}", s.threads),
            );
        }
        self.within(
            "server.client_header_timeout",
            s.client_header_timeout.0,
            Duration::from_millis(100),
            Duration::from_secs(600),
        );
        self.within(
            "server.keepalive_timeout",
            s.keepalive_timeout.0,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        if !(1..=1_000_000).contains(&s.max_connections) {
            self.problem(
                "server.max_connections",
                format!("must be between 1 and 1000000, got {}", s.max_connections),
            );
        }
        // The upper bound keeps the header buffer (plus one read) under Pingora's own 1 MiB cap.
        if !(1024..=512 * 1024).contains(&s.max_header_bytes) {
            self.problem(
                "server.max_header_bytes",
                format!(
                    "must be between 1024 and 524288, got {}",
                    s.max_header_bytes
                ),
            );
        }
        ServerSettings {
            threads: s.threads.max(1),
            work_stealing: s.work_stealing,
            grace_period: s.grace_period.0,
            graceful_shutdown_timeout: s.graceful_shutdown_timeout.0,
            upstream_keepalive_pool: s.upstream_keepalive_pool,
            upstream_idle_timeout: s.upstream_idle_timeout.map(|d| d.0),
            pid_file: s.pid_file,
            upgrade_sock: s.upgrade_sock,
            client_header_timeout: s.client_header_timeout.0,
            keepalive_timeout: s.keepalive_timeout.0,
            max_connections: s.max_connections.max(1),
            max_header_bytes: s.max_header_bytes.clamp(1024, 512 * 1024),
        }
    }

    /// Reports a duration outside `[min, max]`.
    fn within(&mut self, at: &str, d: Duration, min: Duration, max: Duration) {
        if d < min || d > max {
            self.problem(
                at,
                format!(
                    "must be between {} and {}, got {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                    humantime::format_duration(d)
                ),
            );
        }
    }

    fn ping(&mut self, p: raw::Ping, limits: &RateLimitConfig) -> Option<PingConfig> {
        if !p.path.starts_with('/') {
            self.problem(
                "ping.path",
                format!("must start with '/', got \"{}\"", p.path),
            );
        }
        let rate_limit = p
            .rate_limit
            .as_deref()
            .and_then(|name| self.policy_ref("ping.rate_limit", name, limits));
        p.enabled.then_some(PingConfig {
            path: p.path,
            rate_limit,
        })
    }

    fn policy_ref(&mut self, at: &str, name: &str, limits: &RateLimitConfig) -> Option<usize> {
        let found = limits.policies.iter().position(|p| p.name == name);
        if found.is_none() {
            let known: Vec<&str> = limits.policies.iter().map(|p| p.name.as_str()).collect();
            self.problem(
                at,
                format!(
                    "no rate-limit policy named \"{name}\" (policies: {})",
                    known.join(", ")
                ),
            );
        }
        found
    }

    fn trusted_proxies(&mut self, list: Vec<String>) -> Vec<ipnet::IpNet> {
        let mut nets = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let parsed = s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => nets.push(n.trunc()),
                Err(_) => self.problem(
                    format!("trusted_proxies[{i}]"),
                    format!("\"{s}\" is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                ),
            }
        }
        nets
    }

    fn rate_limits(&mut self, r: raw::RateLimits) -> RateLimitConfig {
        let mut policies = Vec::new();
        for (name, p) in r.policies {
            let at = format!("rate_limits.policies.{name}");
            if !valid_name(&name) {
                self.problem(
                    &at,
                    format!("policy name \"{name}\" may use only letters, digits, '-' and '_'"),
                );
            }
            if p.rate == 0 {
                self.problem(format!("{at}.rate"), "must be at least 1");
            }
            if p.per.0.is_zero() {
                self.problem(format!("{at}.per"), "must be more than zero");
            }
            let burst = p.burst.unwrap_or(p.rate);
            if burst == 0 {
                self.problem(format!("{at}.burst"), "must be at least 1");
            }
            let key = match p.key.as_str() {
                "client_ip" => LimitKey::ClientIp,
                "consumer" => LimitKey::Consumer,
                k if k.starts_with("header:") => {
                    match http::HeaderName::from_bytes(k["header:".len()..].trim().as_bytes()) {
                        Ok(h) => LimitKey::Header(h),
                        Err(_) => {
                            self.problem(
                                format!("{at}.key"),
                                format!("\"{k}\" does not name a valid header"),
                            );
                            LimitKey::ClientIp
                        }
                    }
                }
                k => {
                    self.problem(
                        format!("{at}.key"),
                        format!(
                            "unknown key \"{k}\", expected client_ip, consumer or header:<name>"
                        ),
                    );
                    LimitKey::ClientIp
                }
            };
            policies.push(PolicyConfig {
                name,
                rate: p.rate.max(1),
                per: if p.per.0.is_zero() {
                    Duration::from_secs(1)
                } else {
                    p.per.0
                },
                burst: burst.max(1),
                key,
                on_redis_error: p.on_redis_error,
            });
        }
        if r.max_keys == 0 {
            self.problem("rate_limits.max_keys", "must be at least 1");
        }
        let redis = r.redis.map(|x| {
            let at = "rate_limits.redis";
            if let Err(e) = redis::Client::open(x.url.as_str()) {
                self.problem(
                    format!("{at}.url"),
                    format!("\"{}\" is not a Redis URL: {e}", x.url),
                );
            }
            if x.lease_min == 0 || x.lease_max < x.lease_min {
                self.problem(
                    format!("{at}.lease_min"),
                    "need 1 <= lease_min <= lease_max",
                );
            }
            if x.expected_instances == 0 {
                self.problem(format!("{at}.expected_instances"), "must be at least 1");
            }
            if x.sync_interval.0 < Duration::from_millis(1) {
                self.problem(format!("{at}.sync_interval"), "must be at least 1ms");
            }
            RedisConfig {
                url: x.url,
                connect_timeout: x.connect_timeout.0,
                command_timeout: x.command_timeout.0,
                sync_interval: x.sync_interval.0.max(Duration::from_millis(1)),
                lease_horizon: x.lease_horizon.0,
                lease_min: x.lease_min.max(1),
                lease_max: x.lease_max.max(x.lease_min.max(1)),
                lease_wait: x.lease_wait.0,
                cold_start: x.cold_start,
                cold_start_allowance: x.cold_start_allowance,
                idle_return: x.idle_return.0,
                expected_instances: x.expected_instances.max(1),
                key_prefix: x.key_prefix,
            }
        });
        RateLimitConfig {
            redis,
            policies,
            max_keys: r.max_keys.max(1),
        }
    }

    fn pools(&mut self, value: Option<serde_yaml::Value>) -> Vec<PoolConfig> {
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

    fn pool(&mut self, at: &str, name: String, raw: raw::Pool) -> PoolConfig {
        if raw.backends.is_empty() {
            self.problem(format!("{at}.backends"), "at least one backend is required");
        }
        let mut backends: Vec<BackendConfig> = Vec::new();
        for (i, b) in raw.backends.iter().enumerate() {
            let bat = format!("{at}.backends[{i}]");
            if b.weight == 0 || b.weight > 1000 {
                self.problem(
                    format!("{bat}.weight"),
                    format!("must be between 1 and 1000, got {}", b.weight),
                );
            }
            match parse_backend_addr(&b.addr) {
                Ok(addr) => {
                    if backends.iter().any(|o| o.addr == addr) {
                        self.problem(
                            format!("{bat}.addr"),
                            format!("backend {} is listed twice", b.addr),
                        );
                    }
                    backends.push(BackendConfig {
                        addr,
                        weight: b.weight,
                    });
                }
                Err(msg) => self.problem(format!("{bat}.addr"), msg),
            }
        }
        let hash_key = match (&raw.selection, raw.hash_key.as_deref()) {
            (Selection::ConsistentHash, None) | (_, Some("client_ip")) => HashKey::ClientIp,
            (_, Some("path")) => HashKey::Path,
            (_, Some(k)) if k.starts_with("header:") => {
                match http::HeaderName::from_bytes(k["header:".len()..].trim().as_bytes()) {
                    Ok(h) => HashKey::Header(h),
                    Err(_) => {
                        self.problem(
                            format!("{at}.hash_key"),
                            format!("\"{k}\" does not name a valid header"),
                        );
                        HashKey::ClientIp
                    }
                }
            }
            (_, Some(k)) => {
                self.problem(
                    format!("{at}.hash_key"),
                    format!("unknown hash key \"{k}\", expected client_ip, path or header:<name>"),
                );
                HashKey::ClientIp
            }
            (_, None) => HashKey::ClientIp,
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
            None => Some(crate::routing::breaker::BreakerConfig::default()),
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

    fn circuit_breaker(
        &mut self,
        at: &str,
        cb: raw::CircuitBreaker,
    ) -> Option<crate::routing::breaker::BreakerConfig> {
        let d = crate::routing::breaker::BreakerConfig::default();
        let c = crate::routing::breaker::BreakerConfig {
            consecutive_failures: cb.consecutive_failures.unwrap_or(d.consecutive_failures),
            failure_ratio: cb.failure_ratio.unwrap_or(d.failure_ratio),
            window: cb.window.map_or(d.window, |x| x.0),
            min_requests: cb.min_requests.unwrap_or(d.min_requests),
            open_duration: cb.open_duration.map_or(d.open_duration, |x| x.0),
            max_open: cb.max_open_duration.map_or(d.max_open, |x| x.0),
            half_open_trials: cb.half_open_trials.unwrap_or(d.half_open_trials),
            close_after: cb.close_after.unwrap_or(d.close_after),
            count_5xx: cb.count_5xx.unwrap_or(d.count_5xx),
        };
        if !(0.0..=1.0).contains(&c.failure_ratio) {
            self.problem(
                format!("{at}.failure_ratio"),
                format!("must be between 0 and 1, got {}", c.failure_ratio),
            );
        }
        if c.window < Duration::from_millis(100) {
            self.problem(format!("{at}.window"), "must be at least 100ms");
        }
        if c.open_duration.is_zero() {
            self.problem(format!("{at}.open_duration"), "must be more than zero");
        }
        if c.max_open < c.open_duration {
            self.problem(
                format!("{at}.max_open_duration"),
                "must be at least open_duration",
            );
        }
        if c.half_open_trials == 0 {
            self.problem(format!("{at}.half_open_trials"), "must be at least 1");
        }
        if c.close_after == 0 {
            self.problem(format!("{at}.close_after"), "must be at least 1");
        }
        cb.enabled.then_some(c)
    }

    fn health_check(&mut self, at: &str, hc: raw::HealthCheck) -> HealthCheckConfig {
        if hc.kind == HealthCheckKind::Tcp {
            for (set, key) in [
                (hc.path.is_some(), "path"),
                (hc.host.is_some(), "host"),
                (hc.expected_status.is_some(), "expected_status"),
            ] {
                if set {
                    self.problem(format!("{at}.{key}"), "only used with type: http");
                }
            }
        }
        let path = hc.path.unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            self.problem(
                format!("{at}.path"),
                format!("must start with '/', got \"{path}\""),
            );
        }
        let expected_status = hc.expected_status.unwrap_or(200);
        if !(100..=599).contains(&expected_status) {
            self.problem(
                format!("{at}.expected_status"),
                format!("{expected_status} is not an HTTP status"),
            );
        }
        let interval = hc.interval.map_or(Duration::from_secs(5), |d| d.0);
        let timeout = hc.timeout.map_or(Duration::from_secs(1), |d| d.0);
        if interval < Duration::from_millis(10) {
            self.problem(format!("{at}.interval"), "must be at least 10ms");
        }
        if timeout.is_zero() {
            self.problem(format!("{at}.timeout"), "must be more than zero");
        }
        let healthy_threshold = hc.healthy_threshold.unwrap_or(1);
        let unhealthy_threshold = hc.unhealthy_threshold.unwrap_or(1);
        for (n, key) in [
            (healthy_threshold, "healthy_threshold"),
            (unhealthy_threshold, "unhealthy_threshold"),
        ] {
            if n == 0 || n > 100 {
                self.problem(
                    format!("{at}.{key}"),
                    format!("must be between 1 and 100, got {n}"),
                );
            }
        }
        HealthCheckConfig {
            kind: hc.kind,
            path,
            host: hc.host.unwrap_or_else(|| "localhost".into()),
            expected_status,
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
        }
    }

    fn routes(
        &mut self,
        value: Option<serde_yaml::Value>,
        pools: &[PoolConfig],
        limits: &RateLimitConfig,
        auth: &AuthConfig,
    ) -> Vec<RouteConfig> {
        let tiers = &auth.tiers;
        let items = match value {
            None | Some(serde_yaml::Value::Null) => {
                self.problem("routes", "at least one route is required");
                return Vec::new();
            }
            Some(serde_yaml::Value::Sequence(items)) => items,
            Some(_) => {
                self.problem("routes", "must be a list of routes");
                return Vec::new();
            }
        };
        if items.is_empty() {
            self.problem("routes", "at least one route is required");
        }
        let mut routes: Vec<RouteConfig> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("routes[{i}]");
            let Some(r) = self.typed::<raw::Route>(&at, item) else {
                continue;
            };
            let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
            if !valid_name(&name) {
                self.problem(
                    format!("{at}.name"),
                    format!("route name \"{name}\" may use only letters, digits, '-' and '_'"),
                );
            }
            if !r.path_prefix.starts_with('/') {
                self.problem(
                    format!("{at}.path_prefix"),
                    format!("must start with '/', got \"{}\"", r.path_prefix),
                );
            }
            let host = r.host.as_deref().map(|h| h.trim().to_ascii_lowercase());
            if let Some(h) = &host {
                if h.is_empty() || !valid_hostname(h) {
                    self.problem(
                        format!("{at}.host"),
                        format!("\"{h}\" is not a valid host name"),
                    );
                }
            }
            let pool = match pools.iter().position(|p| p.name == r.upstream) {
                Some(p) => p,
                None => {
                    let known: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                    self.problem(
                        format!("{at}.upstream"),
                        format!(
                            "no pool named \"{}\" (pools: {})",
                            r.upstream,
                            known.join(", ")
                        ),
                    );
                    0
                }
            };
            if let Some(j) = routes
                .iter()
                .position(|o| o.host == host && o.path_prefix == r.path_prefix)
            {
                self.problem(
                    format!("{at}.path_prefix"),
                    format!(
                        "duplicate route: routes[{j}] already matches host {} and prefix \"{}\"",
                        host.as_deref().unwrap_or("*"),
                        r.path_prefix
                    ),
                );
            }
            if let Some(j) = routes.iter().position(|o| o.name == name) {
                self.problem(
                    format!("{at}.name"),
                    format!("duplicate route name \"{name}\" (also routes[{j}])"),
                );
            }
            let retries = r.retries.unwrap_or(1);
            if retries > 5 {
                self.problem(format!("{at}.retries"), format!("at most 5, got {retries}"));
            }
            let mut rate_limit = vec![None; tiers.len()];
            match &r.rate_limit {
                None => {}
                Some(raw::RouteRateLimit::All(policy)) => {
                    let p = self.policy_ref(&format!("{at}.rate_limit"), policy, limits);
                    rate_limit.iter_mut().for_each(|slot| *slot = p);
                }
                Some(raw::RouteRateLimit::PerTier(map)) => {
                    for (tier, policy) in map {
                        let tat = format!("{at}.rate_limit.{tier}");
                        match tiers.iter().position(|t| t == tier) {
                            None => self.problem(
                                &tat,
                                format!("unknown tier \"{tier}\" (tiers: {})", tiers.join(", ")),
                            ),
                            Some(i) => rate_limit[i] = self.policy_ref(&tat, policy, limits),
                        }
                    }
                }
            }
            let mut allowed_tiers = u64::MAX;
            if let Some(list) = &r.tiers {
                allowed_tiers = 0;
                for (j, tier) in list.iter().enumerate() {
                    match tiers.iter().position(|t| t == tier) {
                        Some(i) => allowed_tiers |= 1 << i,
                        None => self.problem(
                            format!("{at}.tiers[{j}]"),
                            format!("unknown tier \"{tier}\" (tiers: {})", tiers.join(", ")),
                        ),
                    }
                }
            }
            let mode = r.auth.unwrap_or(auth.default_mode);
            if mode != AuthMode::None && auth.jwt.is_none() && auth.api_keys.is_none() {
                self.problem(
                    format!("{at}.auth"),
                    "needs an auth section with jwt or api_keys",
                );
            }
            routes.push(RouteConfig {
                name,
                host,
                path_prefix: r.path_prefix,
                pool,
                strip_prefix: r.strip_prefix,
                connect_timeout: r.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
                read_timeout: r.read_timeout.map_or(Duration::from_secs(30), |d| d.0),
                write_timeout: r.write_timeout.map(|d| d.0),
                retries,
                rate_limit,
                auth: mode,
                allowed_tiers,
            });
        }
        routes
    }

    fn correlation(&mut self, c: raw::Correlation) -> CorrelationConfig {
        let header = match http::HeaderName::from_bytes(c.header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                self.problem(
                    "correlation.header",
                    format!("\"{}\" is not a valid header name", c.header),
                );
                http::HeaderName::from_static("x-request-id")
            }
        };
        CorrelationConfig {
            header,
            trust_incoming: c.trust_incoming,
            traceparent: c.traceparent,
        }
    }

    fn access_log(&mut self, a: raw::AccessLog) -> AccessLogConfig {
        if a.buffer_lines == 0 {
            self.problem("access_log.buffer_lines", "must be at least 1");
        }
        let destination = match a.destination.as_str() {
            _ if !a.enabled => None,
            "stdout" | "-" => Some(LogDestination::Stdout),
            "" => {
                self.problem(
                    "access_log.destination",
                    "must be \"stdout\" or a file path",
                );
                None
            }
            p => Some(LogDestination::File(PathBuf::from(p))),
        };
        AccessLogConfig {
            destination,
            buffer_lines: a.buffer_lines.max(1),
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
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

#[cfg(test)]
mod tests;
