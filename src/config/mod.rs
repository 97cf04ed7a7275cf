//! Configuration: one YAML file, parsed strictly and validated into a [`Config`], every problem with its path and line.
//!
//! Loading never touches the network. Upstream addresses that are DNS names are
//! kept as names here and resolved once when the server is built.

mod auth;
mod breaker;
mod edge;
mod locate;
mod observability;
mod rate_limits;
mod raw;
mod routes;
mod server;
mod tree;
mod upstreams;

pub use breaker::BreakerConfig;
pub use edge::{EdgeConfig, EscapedSlashes, PathConfig, PathParameters, UnderscoreHeaders};
pub use observability::{AccessLogConfig, CorrelationConfig, LogDestination};
pub use rate_limits::{LimitKey, PolicyConfig, RateLimitConfig, RedisConfig};
pub use routes::{PingConfig, RouteConfig};
pub use server::{Listen, ServerSettings};
pub use upstreams::{
    parse_backend_addr, BackendAddr, BackendConfig, HashKey, HealthCheckConfig, PoolConfig,
};

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

/// A value several keys write as a word, `header:<name>` or `cookie:<name>`.
enum Source<'t> {
    Word(&'t str),
    Header(http::HeaderName),
    Cookie(&'t str),
}

impl Validator<'_> {
    /// Reads `text` (at `at`) as a word, `header:<name>` or `cookie:<name>`; `None` (with
    /// a problem) for a header name that is not one.
    fn source<'t>(&mut self, at: &str, text: &'t str) -> Option<Source<'t>> {
        if let Some(name) = text.strip_prefix("header:") {
            return match http::HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(h) => Some(Source::Header(h)),
                Err(_) => {
                    self.problem(at, format!("\"{text}\" does not name a valid header"));
                    None
                }
            };
        }
        match text.strip_prefix("cookie:").map(str::trim) {
            Some(name) if !name.is_empty() => Some(Source::Cookie(name)),
            _ => Some(Source::Word(text)),
        }
    }

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

#[cfg(test)]
mod tests;
