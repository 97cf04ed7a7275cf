//! The `rate_limits` section: policies and the Redis lease settings, with their ranges.

use super::*;
pub use raw::{ColdStart, OnRedisError};

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
    /// `None`: this Redis holds the whole limit of every key.
    pub regions: Option<RegionsConfig>,
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
    pub(super) fn rate_limits(&mut self, r: raw::RateLimits) -> RateLimitConfig {
        let policies = r
            .policies
            .into_iter()
            .map(|(name, p)| self.policy(name, p))
            .collect();
        let redis = r.redis.map(|x| self.redis(x));
        let regions = r.regions.map(|x| self.regions(x, redis.as_ref()));
        RateLimitConfig {
            redis,
            policies,
            max_keys: self.int("rate_limits.max_keys", r.max_keys, MAX_KEYS),
            regions,
        }
    }

    fn policy(&mut self, name: String, p: raw::Policy) -> PolicyConfig {
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
        // A missing rate or per is reported above; a config with problems is never used.
        let rate = rate.unwrap_or(1);
        let burst = match p.burst {
            Some(n) => self.int(&format!("{at}.burst"), n, BURST),
            None => rate.min(BURST.max),
        };
        let key_at = format!("{at}.key");
        let key = match self.source(&key_at, &p.key) {
            None | Some(Source::Word("client_ip")) => LimitKey::ClientIp,
            Some(Source::Word("consumer")) => LimitKey::Consumer,
            Some(Source::Header(h)) => LimitKey::Header(h),
            Some(_) => {
                let k = &p.key;
                self.problem(
                    format!("{at}.key"),
                    format!("unknown key \"{k}\", expected client_ip, consumer or header:<name>"),
                );
                LimitKey::ClientIp
            }
        };
        PolicyConfig {
            name,
            rate,
            per: per.unwrap_or(Duration::from_secs(1)),
            burst,
            key,
            on_redis_error: p.on_redis_error,
        }
    }

    fn redis(&mut self, x: raw::Redis) -> RedisConfig {
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
            sync_interval: self.duration(&at("sync_interval"), x.sync_interval.0, SYNC_INTERVAL),
            lease_horizon: self.duration(&at("lease_horizon"), x.lease_horizon.0, LEASE_HORIZON),
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
            expected_instances: self.expected_instances(x.expected_instances),
            key_prefix: x.key_prefix,
        }
    }

    /// `rate_limits.redis.expected_instances`, which has no default.
    fn expected_instances(&mut self, written: Option<values::Int>) -> u32 {
        let at = "rate_limits.redis.expected_instances";
        match written {
            Some(n) => self.int(at, n, EXPECTED_INSTANCES),
            None if self.is_broken(at) => 1,
            None => {
                self.problem(
                    "rate_limits.redis",
                    "missing field `expected_instances`: how many gateways share this Redis \
                     (while Redis is unreachable each enforces rate / expected_instances)",
                );
                1
            }
        }
    }

    pub(super) fn policy_ref(
        &mut self,
        at: &str,
        name: &str,
        limits: &RateLimitConfig,
    ) -> Option<PolicyId> {
        let found = limits
            .policies
            .iter()
            .position(|p| p.name == name)
            .map(PolicyId);
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
        /// Required: how many gateways share this Redis. No default, because a wrong
        /// one multiplies the limit while Redis is unreachable (each of N instances
        /// enforcing the whole rate admits N times it).
        pub expected_instances: Option<Int>,
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
                expected_instances: None,
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
        pub regions: Option<super::super::regions::raw::Regions>,
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
                regions: None,
            }
        }
    }
}
