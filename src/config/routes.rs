//! The `routes` and `ping` sections: what is matched and where it goes, with their ranges.

use super::*;

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub pool: PoolId,
    pub strip_prefix: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Off by default: a timer on every upstream write cost ~10% throughput (measured).
    pub write_timeout: Option<Duration>,
    /// Extra attempts on another backend after a connect failure (idempotent methods only).
    pub retries: usize,
    /// Rate-limit policy (index into [`RateLimitConfig::policies`]) by tier index.
    pub rate_limit: Vec<Option<PolicyId>>,
    pub auth: AuthMode,
    /// Bit `i` set: tier `i` may use the route.
    pub allowed_tiers: u64,
}

#[derive(Debug, Clone)]
pub struct PingConfig {
    pub path: String,
    /// Index into [`RateLimitConfig::policies`].
    pub rate_limit: Option<PolicyId>,
}

// Ranges of the `routes` section.
const CONNECT_TIMEOUT: Range<Duration> = TIMEOUT;
const READ_TIMEOUT: Range<Duration> = TIMEOUT;
const WRITE_TIMEOUT: Range<Duration> = TIMEOUT;
const RETRIES: Range<usize> = Range::new(0, 5);

impl Validator<'_> {
    pub(super) fn routes(
        &mut self,
        value: Option<serde_yaml::Value>,
        pools: &[PoolConfig],
        limits: &RateLimitConfig,
        auth: &AuthConfig,
    ) -> Vec<RouteConfig> {
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
            let route = self.route(&at, i, r, pools, limits, auth);
            self.unique_route(&at, &route, &routes);
            routes.push(route);
        }
        routes
    }

    fn route(
        &mut self,
        at: &str,
        i: usize,
        r: raw::Route,
        pools: &[PoolConfig],
        limits: &RateLimitConfig,
        auth: &AuthConfig,
    ) -> RouteConfig {
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
        let pool = match self.required(at, "upstream", r.upstream) {
            Some(name) => self.pool_ref(&format!("{at}.upstream"), &name, pools),
            None => PoolId(0),
        };
        let mode = r.auth.unwrap_or(auth.default_mode);
        if mode != AuthMode::None && auth.jwt.is_none() && auth.api_keys.is_none() {
            self.problem(
                format!("{at}.auth"),
                "needs an auth section with jwt or api_keys",
            );
        }
        RouteConfig {
            name,
            host,
            pool,
            strip_prefix: r.strip_prefix,
            connect_timeout: self.duration(
                &format!("{at}.connect_timeout"),
                r.connect_timeout.0,
                CONNECT_TIMEOUT,
            ),
            read_timeout: self.duration(
                &format!("{at}.read_timeout"),
                r.read_timeout.0,
                READ_TIMEOUT,
            ),
            write_timeout: r
                .write_timeout
                .map(|d| self.duration(&format!("{at}.write_timeout"), d.0, WRITE_TIMEOUT)),
            retries: self.int(&format!("{at}.retries"), r.retries, RETRIES),
            rate_limit: self.route_rate_limit(at, r.rate_limit.as_ref(), &auth.tiers, limits),
            auth: mode,
            allowed_tiers: self.allowed_tiers(at, r.tiers.as_deref(), &auth.tiers),
            path_prefix: r.path_prefix,
        }
    }

    /// No two routes with one name, or with one host and prefix.
    fn unique_route(&mut self, at: &str, route: &RouteConfig, before: &[RouteConfig]) {
        if let Some(j) = before
            .iter()
            .position(|o| o.host == route.host && o.path_prefix == route.path_prefix)
        {
            self.problem(
                format!("{at}.path_prefix"),
                format!(
                    "duplicate route: routes[{j}] already matches host {} and prefix \"{}\"",
                    route.host.as_deref().unwrap_or("*"),
                    route.path_prefix
                ),
            );
        }
        if let Some(j) = before.iter().position(|o| o.name == route.name) {
            self.problem(
                format!("{at}.name"),
                format!("duplicate route name \"{}\" (also routes[{j}])", route.name),
            );
        }
    }

    /// The index of pool `name`, or a problem at `at` listing the pools.
    fn pool_ref(&mut self, at: &str, name: &str, pools: &[PoolConfig]) -> PoolId {
        let found = pools.iter().position(|p| p.name == name);
        PoolId(found.unwrap_or_else(|| {
            let known: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            self.problem(
                at,
                format!("no pool named \"{name}\" (pools: {})", known.join(", ")),
            );
            0
        }))
    }

    /// The policy of each tier: one for all, or a map of tier to policy.
    fn route_rate_limit(
        &mut self,
        at: &str,
        written: Option<&raw::RouteRateLimit>,
        tiers: &[String],
        limits: &RateLimitConfig,
    ) -> Vec<Option<PolicyId>> {
        let mut by_tier = vec![None; tiers.len()];
        match written {
            None => {}
            Some(raw::RouteRateLimit::All(policy)) => {
                let p = self.policy_ref(&format!("{at}.rate_limit"), policy, limits);
                by_tier.iter_mut().for_each(|slot| *slot = p);
            }
            Some(raw::RouteRateLimit::PerTier(map)) => {
                for (tier, policy) in map {
                    let tat = format!("{at}.rate_limit.{tier}");
                    if let Some(i) = tiers.iter().position(|t| t == tier) {
                        by_tier[i] = self.policy_ref(&tat, policy, limits);
                    } else {
                        self.tier_of(tiers, &tat, tier);
                    }
                }
            }
        }
        by_tier
    }

    /// The tiers allowed on a route as a bit set (bit `i`: tier `i`); all when not listed.
    fn allowed_tiers(&mut self, at: &str, listed: Option<&[String]>, tiers: &[String]) -> u64 {
        let Some(list) = listed else {
            return u64::MAX;
        };
        let mut allowed = 0;
        for (j, tier) in list.iter().enumerate() {
            if let Some(i) = tiers.iter().position(|t| t == tier) {
                allowed |= TierId(i).bit();
            } else {
                self.tier_of(tiers, &format!("{at}.tiers[{j}]"), tier);
            }
        }
        allowed
    }

    pub(super) fn ping(&mut self, p: raw::Ping, limits: &RateLimitConfig) -> Option<PingConfig> {
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

/// The section as written: serde structs that reject unknown keys, and the one home of
/// every default of the section (validation checks ranges and never invents a value).
pub(super) mod raw {
    use super::super::values::{HumanDuration, Int};
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::time::Duration;

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
        #[serde(default = "Route::connect_timeout")]
        pub connect_timeout: HumanDuration,
        #[serde(default = "Route::read_timeout")]
        pub read_timeout: HumanDuration,
        /// Off unless set.
        pub write_timeout: Option<HumanDuration>,
        #[serde(default = "Route::retries")]
        pub retries: Int,
        /// A policy name for every tier, or a map of tier -> policy name.
        pub rate_limit: Option<RouteRateLimit>,
        pub auth: Option<super::AuthMode>,
        /// Tiers allowed on this route (others get 403); all when absent.
        pub tiers: Option<Vec<String>>,
    }

    impl Route {
        fn connect_timeout() -> HumanDuration {
            HumanDuration(Duration::from_secs(2))
        }

        fn read_timeout() -> HumanDuration {
            HumanDuration(Duration::from_secs(30))
        }

        fn retries() -> Int {
            Int(1)
        }
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
}
