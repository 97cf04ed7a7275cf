//! The `routes` and `ping` sections: what is matched and where it goes, with their ranges.

use super::*;

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
pub struct PingConfig {
    pub path: String,
    /// Index into [`RateLimitConfig::policies`].
    pub rate_limit: Option<usize>,
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
