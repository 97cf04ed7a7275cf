//! The YAML file as written: serde structs that reject unknown keys. Validation turns them into [`super::Config`].

use serde::de::{self, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A duration written the human way: "250ms", "5s", "1m 30s".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A bare number has no unit: say how to write it rather than "expected a string".
        let s = match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => {
                return Err(serde::de::Error::custom(format!(
                    "{n} has no unit: write a duration like \"{n}ms\" or \"{n}s\""
                )))
            }
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a duration like \"250ms\", \"5s\" or \"1m\", found {}",
                    match other {
                        serde_yaml::Value::Null => "nothing",
                        serde_yaml::Value::Bool(_) => "a boolean",
                        serde_yaml::Value::Sequence(_) => "a list",
                        serde_yaml::Value::Mapping(_) => "a mapping",
                        _ => "another value",
                    }
                )))
            }
        };
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration \"{s}\": {e} (write it like \"250ms\", \"5s\" or \"1m\")"
                ))
            })
    }
}

/// A whole number as written, however large or negative: its range is checked in
/// validation, so that `-2` or `99999999999999999999999` is reported like any other value
/// out of range, at its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Int(pub i128);

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Int, E> {
                Ok(Int(n.into()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Int, E> {
                Ok(Int(n.into()))
            }
            fn visit_i128<E: de::Error>(self, n: i128) -> Result<Int, E> {
                Ok(Int(n))
            }
            fn visit_u128<E: de::Error>(self, n: u128) -> Result<Int, E> {
                Ok(Int(i128::try_from(n).unwrap_or(i128::MAX)))
            }
            /// Integers beyond 64 bits, as [`super::tree`] keeps them.
            fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Int, A::Error> {
                let (tag, contents): (String, _) = data.variant()?;
                let digits: String = contents.newtype_variant()?;
                if tag.trim_start_matches('!') != super::tree::BIG_INT_TAG.trim_start_matches('!') {
                    return Err(de::Error::invalid_type(
                        de::Unexpected::Other(&format!("a value tagged !{tag}")),
                        &self,
                    ));
                }
                Ok(Int(match digits.parse::<i128>() {
                    Ok(n) => n,
                    Err(_) if digits.starts_with('-') => i128::MIN,
                    Err(_) => i128::MAX,
                }))
            }
        }
        d.deserialize_any(V)
    }
}

/// The top-level keys. Each section is deserialized on its own, so that one
/// broken section does not hide the problems of another.
pub const SECTIONS: &[&str] = &[
    "listen",
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub proxy: String,
    pub admin: String,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            proxy: "0.0.0.0:8000".into(),
            admin: "127.0.0.1:9100".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub threads: Int,
    pub work_stealing: bool,
    pub grace_period: HumanDuration,
    pub graceful_shutdown_timeout: HumanDuration,
    pub upstream_keepalive_pool: Int,
    pub upstream_idle_timeout: Option<HumanDuration>,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub client_header_timeout: HumanDuration,
    pub keepalive_timeout: HumanDuration,
    pub max_connections: Int,
    pub max_header_bytes: Int,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            threads: Int(2),
            work_stealing: false,
            grace_period: HumanDuration(Duration::from_secs(1)),
            graceful_shutdown_timeout: HumanDuration(Duration::from_secs(2)),
            upstream_keepalive_pool: Int(256),
            upstream_idle_timeout: None,
            pid_file: "/tmp/gateway.pid".into(),
            upgrade_sock: "/tmp/gateway_upgrade.sock".into(),
            client_header_timeout: HumanDuration(Duration::from_secs(10)),
            keepalive_timeout: HumanDuration(Duration::from_secs(60)),
            max_connections: Int(10_000),
            max_header_bytes: Int(64 * 1024),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ping {
    pub enabled: bool,
    pub path: String,
    /// A rate-limit policy for `/ping` (the original gateway's quick start).
    pub rate_limit: Option<String>,
}

impl Default for Ping {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/ping".into(),
            rate_limit: None,
        }
    }
}

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
    pub circuit_breaker: Option<CircuitBreaker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub consecutive_failures: Option<Int>,
    pub failure_ratio: Option<f64>,
    pub window: Option<HumanDuration>,
    pub min_requests: Option<Int>,
    pub open_duration: Option<HumanDuration>,
    pub max_open_duration: Option<HumanDuration>,
    pub half_open_trials: Option<Int>,
    pub close_after: Option<Int>,
    pub count_5xx: Option<bool>,
}

fn yes() -> bool {
    true
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
    pub path: Option<String>,
    pub host: Option<String>,
    pub expected_status: Option<Int>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_threshold: Option<Int>,
    pub unhealthy_threshold: Option<Int>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: Option<String>,
    pub host: Option<String>,
    #[serde(default = "slash")]
    pub path_prefix: String,
    pub upstream: Option<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub connect_timeout: Option<HumanDuration>,
    pub read_timeout: Option<HumanDuration>,
    pub write_timeout: Option<HumanDuration>,
    pub retries: Option<Int>,
    /// A policy name for every tier, or a map of tier -> policy name.
    pub rate_limit: Option<RouteRateLimit>,
    pub auth: Option<AuthMode>,
    /// Tiers allowed on this route (others get 403); all when absent.
    pub tiers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No authentication: every client is anonymous (credentials are not even read).
    None,
    /// Verify a credential if one is sent (a bad one is 401); without one, anonymous.
    Optional,
    /// A valid credential is required (401 without).
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RouteRateLimit {
    All(String),
    PerTier(BTreeMap<String, String>),
}

fn slash() -> String {
    "/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Correlation {
    pub header: String,
    pub trust_incoming: bool,
    pub traceparent: bool,
}

impl Default for Correlation {
    fn default() -> Self {
        Self {
            header: "X-Request-ID".into(),
            trust_incoming: true,
            traceparent: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    pub enabled: bool,
    /// `stdout`, or a file path.
    pub destination: String,
    pub buffer_lines: Int,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            enabled: true,
            destination: "stdout".into(),
            buffer_lines: Int(65_536),
        }
    }
}

/// Upstream pools by name (a map keeps names unique).
pub type Pools = BTreeMap<String, serde_yaml::Value>;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    #[default]
    Local,
    Open,
    Closed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub rate: Option<Int>,
    pub per: Option<HumanDuration>,
    pub burst: Option<Int>,
    /// `client_ip`, `consumer` or `header:<name>`.
    #[serde(default = "client_ip")]
    pub key: String,
    #[serde(default)]
    pub on_redis_error: OnRedisError,
}

fn client_ip() -> String {
    "client_ip".into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ColdStart {
    /// Wait (up to `lease_wait`) for the first lease: exact.
    #[default]
    Wait,
    /// Admit `cold_start_allowance` requests at once, before the first lease.
    Allowance,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    pub url: String,
    pub connect_timeout: HumanDuration,
    pub command_timeout: HumanDuration,
    pub sync_interval: HumanDuration,
    pub lease_horizon: HumanDuration,
    pub lease_min: Int,
    pub lease_max: Int,
    pub lease_wait: HumanDuration,
    pub cold_start: ColdStart,
    pub cold_start_allowance: Int,
    pub idle_return: HumanDuration,
    pub expected_instances: Int,
    pub key_prefix: String,
}

impl Default for Redis {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/".into(),
            connect_timeout: HumanDuration(Duration::from_millis(250)),
            command_timeout: HumanDuration(Duration::from_millis(250)),
            sync_interval: HumanDuration(Duration::from_millis(10)),
            lease_horizon: HumanDuration(Duration::from_millis(50)),
            lease_min: Int(1),
            lease_max: Int(1000),
            lease_wait: HumanDuration(Duration::from_millis(100)),
            cold_start: ColdStart::Wait,
            cold_start_allowance: Int(1),
            idle_return: HumanDuration(Duration::from_secs(1)),
            expected_instances: Int(1),
            key_prefix: "gw:rl:".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub redis: Option<Redis>,
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    #[serde(default = "max_keys")]
    pub max_keys: Int,
}

fn max_keys() -> Int {
    Int(100_000)
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            redis: None,
            policies: BTreeMap::new(),
            max_keys: max_keys(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Tier names besides `anonymous`, e.g. [free, premium].
    #[serde(default)]
    pub tiers: Vec<String>,
    pub jwt: Option<Jwt>,
    pub api_keys: Option<ApiKeys>,
    /// Send X-Consumer-ID and X-Consumer-Tier upstream.
    #[serde(default = "yes")]
    pub forward_identity: bool,
    /// Remove the credential (Authorization / API-key header) before proxying.
    #[serde(default = "yes")]
    pub strip_credentials: bool,
    #[serde(default = "realm")]
    pub realm: String,
    /// Verified tokens remembered (by SHA-256), each no longer than it is valid.
    #[serde(default = "cache_size")]
    pub cache_size: Int,
    /// Mode of routes that do not set `auth`.
    #[serde(default = "optional")]
    pub default_mode: AuthMode,
}

fn realm() -> String {
    "gateway".into()
}

fn cache_size() -> Int {
    Int(10_000)
}

fn optional() -> AuthMode {
    AuthMode::Optional
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Where the token is: `bearer` (Authorization: Bearer, the default),
    /// `header:<name>` or `cookie:<name>`.
    #[serde(default = "bearer")]
    pub from: String,
    pub issuers: Option<Vec<Issuer>>,
}

fn bearer() -> String {
    "bearer".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// The required `iss` claim.
    pub issuer: Option<String>,
    /// Accepted `aud` values (one must match).
    pub audience: Option<Vec<String>>,
    #[serde(default)]
    pub keys: Vec<JwtKey>,
    /// A JWKS file (keys selected by `kid`), re-read when it changes.
    pub jwks_file: Option<String>,
    pub leeway: Option<HumanDuration>,
    #[serde(default = "sub")]
    pub consumer_claim: String,
    /// The claim that names the tier; its values map to tiers through `tier_values`.
    pub tier_claim: Option<String>,
    #[serde(default)]
    pub tier_values: BTreeMap<String, String>,
    /// The tier of a token without a (mapped) tier claim.
    pub default_tier: Option<String>,
}

fn sub() -> String {
    "sub".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    pub kid: Option<String>,
    pub algorithm: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub public_key: Option<String>,
    pub public_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    #[serde(default = "api_key_header")]
    pub header: String,
    pub keys: Option<Vec<ApiKey>>,
}

fn api_key_header() -> String {
    "X-API-Key".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub consumer: Option<String>,
    pub tier: Option<String>,
    /// Hex SHA-256 of the key (`gateway hash-key`); the key itself is never in config.
    pub sha256: Option<String>,
}
