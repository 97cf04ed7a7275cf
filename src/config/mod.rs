//! Configuration: one YAML file, parsed strictly and validated into a [`Config`], every problem with its path and line.
//!
//! Loading never touches the network. Upstream addresses that are DNS names are
//! kept as names here and resolved once when the server is built. String values may
//! name environment variables, `${NAME}` or `${NAME:-default}` (see [`env`]).

mod admin;
mod auth;
mod breaker;
mod edge;
pub mod env;
mod keys;
mod locate;
mod observability;
mod rate_limits;
mod regions;
mod routes;
mod server;
mod tree;
mod upstreams;
mod validator;
mod values;

pub use admin::{AdminConfig, AdminToken};
pub use breaker::BreakerConfig;
pub use edge::{EdgeConfig, EscapedSlashes, PathConfig, PathParameters, UnderscoreHeaders};
pub use observability::{AccessLogConfig, CorrelationConfig, LogDestination};
pub use rate_limits::{
    ColdStart, LimitKey, OnRedisError, PolicyConfig, RateLimitConfig, RedisConfig,
};
pub use regions::{RegionMember, RegionsConfig, SHARE_UNITS};
pub use routes::{PingConfig, RouteConfig};
pub use server::{Listen, ServerSettings};
pub use upstreams::{
    parse_backend_addr, BackendAddr, BackendConfig, HashKey, HealthCheckConfig, HealthCheckKind,
    PoolConfig, Selection,
};

pub use auth::{
    ApiKeyConfig, ApiKeysConfig, AuthConfig, AuthMode, IssuerConfig, JwtConfig, JwtKeyConfig,
    TokenSource, ANONYMOUS,
};
pub use keys::read_jwks;

use locate::LineIndex;
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use validator::{Source, Validator};

/// Index of a pool in [`Config::upstreams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolId(pub usize);

/// Index of a policy in [`RateLimitConfig::policies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyId(pub usize);

/// Index of a tier in [`AuthConfig::tiers`]; [`TierId::ANONYMOUS`] is every
/// unauthenticated client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TierId(pub usize);

impl TierId {
    pub const ANONYMOUS: TierId = TierId(0);

    /// This tier's bit in a route's set of allowed tiers (at most 64 tiers).
    pub fn bit(self) -> u64 {
        1u64.checked_shl(self.0 as u32).unwrap_or(0)
    }
}

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
    /// What the admin listener asks for.
    pub admin: AdminConfig,
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

/// Validates config text, its `${NAME}` read from the process environment. Every problem
/// found is returned, not just the first.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    parse_with_env(text, &|name| std::env::var(name).ok())
}

/// Like [`parse`], with the variables read by `env`.
pub fn parse_with_env(text: &str, env: env::Lookup<'_>) -> Result<Config, Vec<Problem>> {
    // serde_yaml reads it first: it refuses a document nested too deep for it (or broken)
    // before the line index walks it.
    let mut tree = match tree::parse(text) {
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
    env::interpolate(&mut tree.value, "", env, &mut v);
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

/// The top-level keys. Each section is deserialized on its own, so that one
/// broken section does not hide the problems of another.
pub const SECTIONS: &[&str] = &[
    "listen",
    "admin",
    "server",
    "ping",
    "upstreams",
    "routes",
    "correlation",
    "access_log",
    "trusted_proxies",
    "rate_limits",
    "auth",
    "edge",
];

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// The usual range of a timeout.
const TIMEOUT: Range<Duration> = Range::new(ms(1), HOUR);

impl Validator<'_> {
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
        self.known_sections(&doc);

        let listen: server::raw::Listen = self.section(&mut doc, "listen");
        let admin: admin::raw::Admin = self.section(&mut doc, "admin");
        let server: server::raw::Server = self.section(&mut doc, "server");
        let ping: routes::raw::Ping = self.section(&mut doc, "ping");
        let edge: EdgeConfig = self.section(&mut doc, "edge");
        let correlation: observability::raw::Correlation = self.section(&mut doc, "correlation");
        let access_log: observability::raw::AccessLog = self.section(&mut doc, "access_log");
        let trusted: Vec<String> = self.section(&mut doc, "trusted_proxies");
        let rate_limits: rate_limits::raw::RateLimits = self.section(&mut doc, "rate_limits");
        let rate_limits = self.rate_limits(rate_limits);
        let auth: Option<auth::raw::Auth> = self.section(&mut doc, "auth");
        let auth = self.auth(auth);
        let trusted_proxies = self.trusted_proxies(trusted);

        let listen = Listen {
            proxy: self.listen_addr("listen.proxy", &listen.proxy),
            admin: self.listen_addr("listen.admin", &listen.admin),
        };
        if listen.proxy == listen.admin && listen.proxy.port() != 0 {
            self.problem("listen.admin", "must differ from listen.proxy");
        }
        let admin = self.admin(admin, &listen);
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
            admin,
        })
    }

    /// A problem for each top-level key that is not a section.
    fn known_sections(&mut self, doc: &serde_yaml::Mapping) {
        for key in doc.keys() {
            match key.as_str() {
                Some(k) if SECTIONS.contains(&k) => {}
                Some(k) => {
                    let k = k.to_string();
                    self.problem(
                        k.clone(),
                        format!(
                            "unknown section `{k}`, expected one of: {}",
                            SECTIONS.join(", ")
                        ),
                    )
                }
                None => self.problem("", format!("section names must be strings, found {key:?}")),
            }
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

#[cfg(test)]
mod tests;
