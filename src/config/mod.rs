//! Configuration: one YAML file, parsed strictly and validated into a [`Config`], every problem with its path and line.
//!
//! Loading never touches the network. Upstream addresses that are DNS names are
//! kept as names here and resolved once when the server is built.

mod auth;
mod breaker;
mod edge;
mod locate;
mod raw;
mod tree;

pub use breaker::BreakerConfig;
pub use edge::{EdgeConfig, EscapedSlashes, PathConfig, PathParameters, UnderscoreHeaders};

pub use auth::{
    read_jwks, ApiKeyConfig, ApiKeysConfig, AuthConfig, AuthMode, IssuerConfig, JwtConfig,
    JwtKeyConfig, TokenSource, ANONYMOUS,
};

use locate::LineIndex;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;
use std::collections::{HashMap, HashSet};
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
    /// Path normalisation and header-name rules, applied before routing.
    pub edge: EdgeConfig,
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

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub name: String,
    pub rate: u64,
    pub per: Duration,
    pub burst: u64,
    pub key: LimitKey,
    pub on_redis_error: OnRedisError,
}

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitConfig {
    /// `None`: every instance limits on its own state.
    pub redis: Option<RedisConfig>,
    pub policies: Vec<PolicyConfig>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
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
    // serde_yaml reads it first: it refuses a document nested too deep for it (or broken)
    // before the line index walks it.
    let tree = match tree::parse(text) {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Problem {
                at: String::new(),
                line: e.location().map(|l| l.line()),
                message: format!("not valid YAML: {e}"),
            }])
        }
    };
    let lines = LineIndex::build(text);
    let mut v = Validator {
        lines: &lines,
        problems: Vec::new(),
        broken: HashSet::new(),
    };
    let config = v.document(tree);
    match config {
        Some(c) if v.problems.is_empty() => Ok(c),
        _ => {
            // In file order; problems without a line (whole-file ones) first.
            v.problems.sort_by_key(|p| p.line);
            Err(v.problems)
        }
    }
}

/// The inclusive range a config number or duration must fall in. Each section keeps its
/// ranges as named constants beside its validation; README's config reference lists them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range<T> {
    pub min: T,
    pub max: T,
}

impl<T> Range<T> {
    pub const fn new(min: T, max: T) -> Self {
        Self { min, max }
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// The usual range of a timeout.
const TIMEOUT: Range<Duration> = Range::new(ms(1), HOUR);

/// What replaces a value that could not be read, tried in turn until the whole deserializes:
/// absent (for optional fields), then an empty mapping (a struct of defaults), string, list.
/// A replaced value is reported once; what validation finds about its stand-in is not.
const STAND_INS: usize = 4;

fn stand_in(i: usize) -> Value {
    match i {
        0 => Value::Null,
        1 => Value::Mapping(serde_yaml::Mapping::new()),
        2 => Value::String(String::new()),
        _ => Value::Sequence(Vec::new()),
    }
}

/// `parent.key` / `parent[i]`, as problems name paths.
fn path_of(at: &str, segments: &[Segment]) -> String {
    let mut path = at.to_string();
    for s in segments {
        match s {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => path.push_str(if path.is_empty() { "?" } else { ".?" }),
        }
    }
    path
}

fn untagged_mut(v: &mut Value) -> &mut Value {
    match v {
        Value::Tagged(t) => untagged_mut(&mut t.value),
        other => other,
    }
}

/// The key of `map` that serde_path_to_error names `key`.
fn key_named(map: &serde_yaml::Mapping, key: &str) -> Option<Value> {
    map.keys()
        .find(|k| match k {
            Value::String(s) => s == key,
            Value::Bool(b) => b.to_string() == key,
            Value::Number(n) => n.to_string() == key,
            _ => false,
        })
        .cloned()
}

/// The value at `segments` below `v`.
fn node_mut<'v>(v: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    let Some((last, parents)) = segments.split_last() else {
        return Some(v);
    };
    match (last, untagged_mut(node_mut(v, parents)?)) {
        (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index),
        (Segment::Map { key }, Value::Mapping(map)) => {
            let k = key_named(map, key)?;
            map.get_mut(&k)
        }
        _ => None,
    }
}

/// Removes the mapping entry at `segments`; false when it is not one.
fn remove_entry(v: &mut Value, segments: &[Segment]) -> bool {
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    match node_mut(v, parents).map(untagged_mut) {
        Some(Value::Mapping(map)) => key_named(map, key).is_some_and(|k| map.remove(&k).is_some()),
        _ => false,
    }
}

/// How many values of one section may fail to deserialize before the rest is given up.
const MAX_ROUNDS: usize = 1000;

struct Validator<'a> {
    lines: &'a LineIndex,
    problems: Vec<Problem>,
    /// Paths whose value could not be read (reported) and was replaced or dropped.
    broken: HashSet<String>,
}

impl Validator<'_> {
    fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        let at = at.into();
        if self.is_broken(&at) {
            return;
        }
        let line = self.lines.line_of(&at);
        self.problems.push(Problem {
            at,
            line,
            message: message.into(),
        });
    }

    /// Whether the value at `at`, or one that holds it, could not be read.
    fn is_broken(&self, at: &str) -> bool {
        let mut p = at;
        loop {
            if self.broken.contains(p) {
                return true;
            }
            match p.rfind(['.', '[']) {
                Some(cut) => p = &p[..cut],
                None => return false,
            }
        }
    }

    /// A required field (`at.field`): a problem when absent, unless it was written but
    /// could not be read (reported already).
    fn required<T>(&mut self, at: &str, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.is_broken(&format!("{at}.{field}")) {
            self.problem(at, format!("missing field `{field}`"));
        }
        value
    }

    /// Whether `v` (at `at`) is within `range`; if not, a problem: "must be at least MIN,
    /// got V" or "must be at most MAX, got V" (NaN is below every minimum).
    fn in_range<T: PartialOrd>(
        &mut self,
        at: &str,
        v: &T,
        range: &Range<T>,
        show: impl Fn(&T) -> String,
    ) -> bool {
        let message = if !matches!(
            v.partial_cmp(&range.min),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ) {
            format!("must be at least {}, got {}", show(&range.min), show(v))
        } else if v > &range.max {
            format!("must be at most {}, got {}", show(&range.max), show(v))
        } else {
            return true;
        };
        self.problem(at, message);
        false
    }

    /// `n` (at `at`) if within `range`; otherwise a problem, and the nearest bound.
    fn int<T>(&mut self, at: &str, n: raw::Int, range: Range<T>) -> T
    where
        T: Copy + TryFrom<i128> + TryInto<i128>,
    {
        let wide = Range::new(
            range.min.try_into().unwrap_or(i128::MIN),
            range.max.try_into().unwrap_or(i128::MAX),
        );
        self.in_range(at, &n.0, &wide, i128::to_string);
        let clamped = n.0.clamp(wide.min, wide.max.max(wide.min));
        T::try_from(clamped).unwrap_or(range.max)
    }

    /// `d` (at `at`) if within `range`; otherwise a problem, and the nearest bound.
    fn duration(&mut self, at: &str, d: Duration, range: Range<Duration>) -> Duration {
        self.in_range(at, &d, &range, |d| {
            humantime::format_duration(*d).to_string()
        });
        d.clamp(range.min, range.max.max(range.min))
    }

    /// Deserializes `value` (found at `at`) into `T`. Every value that cannot be read is
    /// reported at its own path and replaced (see [`stand_in`]) or, for an unknown key,
    /// removed, until the rest deserializes: so one bad field hides no other. `None` when
    /// `value` as a whole could not be read.
    fn typed<T: DeserializeOwned>(&mut self, at: &str, mut value: Value) -> Option<T> {
        // Stand-ins tried so far, by path. Each round reports a new path, tries a path's
        // next stand-in or removes an entry, so the rounds end; MAX_ROUNDS is a guard.
        let mut tried: HashMap<String, usize> = HashMap::new();
        for _ in 0..MAX_ROUNDS {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(t) => return (!self.broken.contains(at)).then_some(t),
                Err(e) => e,
            };
            let mut segments: Vec<Segment> = e.path().iter().cloned().collect();
            let message = e.into_inner().to_string();
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next())
                .map(str::to_string);
            if let Some(field) = &unknown {
                // Point an unknown key at its own line.
                if !matches!(segments.last(), Some(Segment::Map { key }) if key == field) {
                    segments.push(Segment::Map { key: field.clone() });
                }
            }
            let path = path_of(at, &segments);
            if !self.is_broken(&path) {
                self.problem(path.clone(), message);
            }
            if unknown.is_some() {
                if !remove_entry(&mut value, &segments) {
                    return None;
                }
                continue;
            }
            let n = tried.entry(path.clone()).or_insert(0);
            if *n < STAND_INS {
                *node_mut(&mut value, &segments)? = stand_in(*n);
                *n += 1;
                self.broken.insert(path);
            } else if !remove_entry(&mut value, &segments) {
                return None;
            }
        }
        self.problem(at, "too many problems; fix the ones above first");
        None
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

    fn document(&mut self, tree: tree::Tree) -> Option<Config> {
        for d in self.lines.duplicates() {
            self.problems.push(Problem {
                at: d.path.clone(),
                line: Some(d.line),
                message: format!("duplicate key `{}` (first at line {})", d.key, d.first),
            });
        }
        if self.lines.duplicates().is_empty() {
            // Only when the line index could not read the file.
            for key in &tree.duplicates {
                self.problem("", format!("duplicate key `{key}`"));
            }
        }
        let mut doc = match tree.value {
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
        let edge: EdgeConfig = self.section(&mut doc, "edge");
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
            edge,
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
}

// Ranges of the `server` section.
const THREADS: Range<usize> = Range::new(1, 1024);
const GRACE_PERIOD: Range<Duration> = Range::new(Duration::ZERO, HOUR);
const GRACEFUL_SHUTDOWN_TIMEOUT: Range<Duration> = Range::new(Duration::ZERO, HOUR);
/// Idle connections kept per worker thread.
const UPSTREAM_KEEPALIVE_POOL: Range<usize> = Range::new(0, 65_536);
const UPSTREAM_IDLE_TIMEOUT: Range<Duration> = TIMEOUT;
const CLIENT_HEADER_TIMEOUT: Range<Duration> =
    Range::new(Duration::from_millis(100), Duration::from_secs(600));
const KEEPALIVE_TIMEOUT: Range<Duration> = Range::new(Duration::from_millis(100), HOUR);
const MAX_CONNECTIONS: Range<usize> = Range::new(1, 1_000_000);
/// Keeps the header buffer (plus one read) under Pingora's own 1 MiB cap.
const MAX_HEADER_BYTES: Range<usize> = Range::new(1024, 512 * 1024);

impl Validator<'_> {
    fn server(&mut self, s: raw::Server) -> ServerSettings {
        let at = |key: &str| format!("server.{key}");
        ServerSettings {
            threads: self.int(&at("threads"), s.threads, THREADS),
            work_stealing: s.work_stealing,
            grace_period: self.duration(&at("grace_period"), s.grace_period.0, GRACE_PERIOD),
            graceful_shutdown_timeout: self.duration(
                &at("graceful_shutdown_timeout"),
                s.graceful_shutdown_timeout.0,
                GRACEFUL_SHUTDOWN_TIMEOUT,
            ),
            upstream_keepalive_pool: self.int(
                &at("upstream_keepalive_pool"),
                s.upstream_keepalive_pool,
                UPSTREAM_KEEPALIVE_POOL,
            ),
            upstream_idle_timeout: s
                .upstream_idle_timeout
                .map(|d| self.duration(&at("upstream_idle_timeout"), d.0, UPSTREAM_IDLE_TIMEOUT)),
            pid_file: s.pid_file,
            upgrade_sock: s.upgrade_sock,
            client_header_timeout: self.duration(
                &at("client_header_timeout"),
                s.client_header_timeout.0,
                CLIENT_HEADER_TIMEOUT,
            ),
            keepalive_timeout: self.duration(
                &at("keepalive_timeout"),
                s.keepalive_timeout.0,
                KEEPALIVE_TIMEOUT,
            ),
            max_connections: self.int(&at("max_connections"), s.max_connections, MAX_CONNECTIONS),
            max_header_bytes: self.int(
                &at("max_header_bytes"),
                s.max_header_bytes,
                MAX_HEADER_BYTES,
            ),
        }
    }

    fn ping(&mut self, p: raw::Ping, limits: &RateLimitConfig) -> Option<PingConfig> {
        if let Err(why) = canonical_path(&p.path) {
            self.problem("ping.path", why);
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
}

// Ranges of the `rate_limits` section. The bucket arithmetic is f64 here and a Lua number
// (milli-tokens, tokens per millisecond) in Redis: these keep every quantity far below 2^53.
const RATE: Range<u64> = Range::new(1, 1_000_000_000);
const PER: Range<Duration> = Range::new(ms(1), DAY);
/// The most tokens a policy may add per second, `rate / per`.
const MAX_PER_SECOND: f64 = 1e9;
const BURST: Range<u64> = Range::new(1, 1_000_000_000);
/// Keys per policy, about 250 bytes each.
const MAX_KEYS: Range<usize> = Range::new(1, 10_000_000);
/// `redis.connect_timeout` and `redis.command_timeout`.
const REDIS_TIMEOUT: Range<Duration> = Range::new(ms(1), MINUTE);
const SYNC_INTERVAL: Range<Duration> = Range::new(ms(1), MINUTE);
const LEASE_HORIZON: Range<Duration> = Range::new(ms(1), MINUTE);
/// `redis.lease_min` and `redis.lease_max` (and lease_min <= lease_max).
const LEASE: Range<u64> = Range::new(1, 1_000_000);
const LEASE_WAIT: Range<Duration> = Range::new(ms(1), MINUTE);
const COLD_START_ALLOWANCE: Range<u64> = Range::new(1, 1_000_000);
const IDLE_RETURN: Range<Duration> = Range::new(ms(1), HOUR);
const EXPECTED_INSTANCES: Range<u32> = Range::new(1, 10_000);

impl Validator<'_> {
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
            let before = self.problems.len();
            let rate = self
                .required(&at, "rate", p.rate)
                .map(|n| self.int(&format!("{at}.rate"), n, RATE));
            let per = self
                .required(&at, "per", p.per)
                .map(|d| self.duration(&format!("{at}.per"), d.0, PER));
            if let (Some(rate), Some(per), true) = (rate, per, self.problems.len() == before) {
                let per_second = rate as f64 / per.as_secs_f64();
                if per_second > MAX_PER_SECOND {
                    self.problem(
                        format!("{at}.rate"),
                        format!(
                            "rate / per must be at most {MAX_PER_SECOND} per second, got {per_second:.0} per second ({rate} per {})",
                            humantime::format_duration(per)
                        ),
                    );
                }
            }
            let rate = rate.unwrap_or(1);
            let burst = match p.burst {
                Some(n) => self.int(&format!("{at}.burst"), n, BURST),
                None => rate.min(BURST.max),
            };
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
                rate,
                per: per.unwrap_or(Duration::from_secs(1)),
                burst,
                key,
                on_redis_error: p.on_redis_error,
            });
        }
        let max_keys = self.int("rate_limits.max_keys", r.max_keys, MAX_KEYS);
        let redis = r.redis.map(|x| {
            let at = |key: &str| format!("rate_limits.redis.{key}");
            if let Err(e) = redis::Client::open(x.url.as_str()) {
                self.problem(at("url"), format!("\"{}\" is not a Redis URL: {e}", x.url));
            }
            let lease_min = self.int(&at("lease_min"), x.lease_min, LEASE);
            let lease_max = self.int(&at("lease_max"), x.lease_max, LEASE);
            if lease_min > lease_max {
                self.problem(
                    at("lease_min"),
                    format!("must be at most lease_max ({lease_max}), got {lease_min}"),
                );
            }
            RedisConfig {
                url: x.url,
                connect_timeout: self.duration(
                    &at("connect_timeout"),
                    x.connect_timeout.0,
                    REDIS_TIMEOUT,
                ),
                command_timeout: self.duration(
                    &at("command_timeout"),
                    x.command_timeout.0,
                    REDIS_TIMEOUT,
                ),
                sync_interval: self.duration(
                    &at("sync_interval"),
                    x.sync_interval.0,
                    SYNC_INTERVAL,
                ),
                lease_horizon: self.duration(
                    &at("lease_horizon"),
                    x.lease_horizon.0,
                    LEASE_HORIZON,
                ),
                lease_min,
                lease_max: lease_max.max(lease_min),
                lease_wait: self.duration(&at("lease_wait"), x.lease_wait.0, LEASE_WAIT),
                cold_start: x.cold_start,
                cold_start_allowance: self.int(
                    &at("cold_start_allowance"),
                    x.cold_start_allowance,
                    COLD_START_ALLOWANCE,
                ),
                idle_return: self.duration(&at("idle_return"), x.idle_return.0, IDLE_RETURN),
                expected_instances: self.int(
                    &at("expected_instances"),
                    x.expected_instances,
                    EXPECTED_INSTANCES,
                ),
                key_prefix: x.key_prefix,
            }
        });
        RateLimitConfig {
            redis,
            policies,
            max_keys,
        }
    }
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
            None => Some(BreakerConfig::default()),
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

    fn circuit_breaker(&mut self, at: &str, cb: raw::CircuitBreaker) -> Option<BreakerConfig> {
        let d = BreakerConfig::default();
        let at = |key: &str| format!("{at}.{key}");
        let int = |v: &mut Self, key: &str, n: Option<raw::Int>, default: u32, range| {
            n.map_or(default, |n| v.int(&at(key), n, range))
        };
        let duration = |v: &mut Self, key: &str, d: Option<raw::HumanDuration>, default| {
            d.map_or(default, |d| v.duration(&at(key), d.0, OPEN_DURATION))
        };
        let mut failure_ratio = cb.failure_ratio.unwrap_or(d.failure_ratio);
        if !self.in_range(
            &at("failure_ratio"),
            &failure_ratio,
            &FAILURE_RATIO,
            f64::to_string,
        ) {
            failure_ratio = d.failure_ratio;
        }
        let c = BreakerConfig {
            consecutive_failures: int(
                self,
                "consecutive_failures",
                cb.consecutive_failures,
                d.consecutive_failures,
                CONSECUTIVE_FAILURES,
            ),
            failure_ratio,
            window: cb.window.map_or(d.window, |x| {
                self.duration(&at("window"), x.0, BREAKER_WINDOW)
            }),
            min_requests: int(
                self,
                "min_requests",
                cb.min_requests,
                d.min_requests,
                MIN_REQUESTS,
            ),
            open_duration: duration(self, "open_duration", cb.open_duration, d.open_duration),
            max_open: duration(self, "max_open_duration", cb.max_open_duration, d.max_open),
            half_open_trials: int(
                self,
                "half_open_trials",
                cb.half_open_trials,
                d.half_open_trials,
                HALF_OPEN_TRIALS,
            ),
            close_after: int(
                self,
                "close_after",
                cb.close_after,
                d.close_after,
                CLOSE_AFTER,
            ),
            count_5xx: cb.count_5xx.unwrap_or(d.count_5xx),
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

    fn health_check(&mut self, at: &str, hc: raw::HealthCheck) -> HealthCheckConfig {
        let kind = self
            .required(at, "type", hc.kind)
            .unwrap_or(HealthCheckKind::Http);
        if kind == HealthCheckKind::Tcp {
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
        let expected_status = hc.expected_status.map_or(200, |n| {
            self.int(&format!("{at}.expected_status"), n, EXPECTED_STATUS)
        });
        let interval = hc.interval.map_or(Duration::from_secs(5), |d| {
            self.duration(&format!("{at}.interval"), d.0, HEALTH_INTERVAL)
        });
        let timeout = hc.timeout.map_or(Duration::from_secs(1), |d| {
            self.duration(&format!("{at}.timeout"), d.0, HEALTH_TIMEOUT)
        });
        let mut threshold = |key: &str, n: Option<raw::Int>| {
            n.map_or(1, |n| self.int(&format!("{at}.{key}"), n, HEALTH_THRESHOLD))
        };
        let healthy_threshold = threshold("healthy_threshold", hc.healthy_threshold);
        let unhealthy_threshold = threshold("unhealthy_threshold", hc.unhealthy_threshold);
        HealthCheckConfig {
            kind,
            path,
            host: hc.host.unwrap_or_else(|| "localhost".into()),
            expected_status,
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
        }
    }
}

// Ranges of the `routes` section.
const CONNECT_TIMEOUT: Range<Duration> = TIMEOUT;
const READ_TIMEOUT: Range<Duration> = TIMEOUT;
const WRITE_TIMEOUT: Range<Duration> = TIMEOUT;
const RETRIES: Range<usize> = Range::new(0, 5);

impl Validator<'_> {
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
            if let Err(why) = canonical_path(&r.path_prefix) {
                self.problem(format!("{at}.path_prefix"), why);
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
            let upstream = self.required(&at, "upstream", r.upstream);
            let pool = match upstream
                .as_ref()
                .map(|u| pools.iter().position(|p| &p.name == u))
            {
                Some(Some(p)) => p,
                Some(None) => {
                    let known: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                    self.problem(
                        format!("{at}.upstream"),
                        format!(
                            "no pool named \"{}\" (pools: {})",
                            upstream.as_deref().unwrap_or_default(),
                            known.join(", ")
                        ),
                    );
                    0
                }
                None => 0,
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
            let retries = r
                .retries
                .map_or(1, |n| self.int(&format!("{at}.retries"), n, RETRIES));
            let connect_timeout = r.connect_timeout.map_or(Duration::from_secs(2), |d| {
                self.duration(&format!("{at}.connect_timeout"), d.0, CONNECT_TIMEOUT)
            });
            let read_timeout = r.read_timeout.map_or(Duration::from_secs(30), |d| {
                self.duration(&format!("{at}.read_timeout"), d.0, READ_TIMEOUT)
            });
            let write_timeout = r
                .write_timeout
                .map(|d| self.duration(&format!("{at}.write_timeout"), d.0, WRITE_TIMEOUT));
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
                connect_timeout,
                read_timeout,
                write_timeout,
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
}

// Ranges of the `access_log` section.
/// Lines waiting for the writer thread, a few hundred bytes each.
const BUFFER_LINES: Range<usize> = Range::new(1, 1_000_000);

impl Validator<'_> {
    fn access_log(&mut self, a: raw::AccessLog) -> AccessLogConfig {
        let buffer_lines = self.int("access_log.buffer_lines", a.buffer_lines, BUFFER_LINES);
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
            buffer_lines,
        }
    }
}

/// Requests are matched after path normalisation (`edge.path`), so a configured path must
/// already be in that form, or no request could ever match it.
fn canonical_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("must start with '/', got \"{p}\""));
    }
    let odd = p.contains("//")
        || p.contains('%')
        || p.contains('\\')
        || p.bytes().any(|b| b.is_ascii_control())
        || p.split('/').any(|seg| seg == "." || seg == "..");
    if odd {
        return Err(format!(
            "\"{p}\" is not a normalised path (no '//', '.' or '..' segments, '%' escapes, '\\' or control characters): requests are matched after normalisation"
        ));
    }
    Ok(())
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
