//! `rate_limits.regions`: the regions that share every policy's limit, this instance's
//! region, and how rights move between them. Without it, one Redis holds the whole limit.

use super::*;

/// Shares of a key's global limit are counted in millionths of it (integers: sums are exact).
pub const SHARE_UNITS: u64 = 1_000_000;

/// One region: its name and the Redis that holds its share.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionMember {
    pub name: String,
    /// Redis URL of that region (this region's is `rate_limits.redis.url`).
    pub redis: String,
    /// Its share before any transfer, in millionths of the limit.
    pub initial_share: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegionsConfig {
    /// This instance's region: an index into `members`.
    pub this: usize,
    pub members: Vec<RegionMember>,
    pub replicate_every: Duration,
    /// A peer not read successfully for this long is stale: no transfers to or from it.
    pub stale_after: Duration,
    /// A surplus at most this (millionths) moves nothing, so small swings of demand do not
    /// move rights back and forth.
    pub hysteresis: u64,
    /// Every region keeps at least this (millionths), so a first request is not refused.
    pub min_share: u64,
    /// A key is replicated while some region saw a request for it this recently.
    pub active_for: Duration,
}

impl RegionsConfig {
    /// This instance's region.
    pub fn this(&self) -> &RegionMember {
        &self.members[self.this]
    }
}

const MEMBERS: Range<usize> = Range::new(2, 64);
const REPLICATE_EVERY: Range<Duration> = Range::new(ms(10), MINUTE);
const STALE_AFTER: Range<Duration> = Range::new(ms(20), HOUR);
const ACTIVE_FOR: Range<Duration> = Range::new(Duration::from_secs(1), DAY);
/// `hysteresis`, as a fraction of the limit.
const HYSTERESIS: Range<f64> = Range::new(0.0, 0.5);

impl Validator<'_> {
    pub(super) fn regions(
        &mut self,
        r: raw::Regions,
        redis: Option<&RedisConfig>,
    ) -> RegionsConfig {
        let at = |key: &str| format!("rate_limits.regions.{key}");
        if redis.is_none() {
            self.problem(
                "rate_limits.regions",
                "needs rate_limits.redis: this region's Redis holds its share",
            );
        }
        let count = r.members.len();
        self.in_range(&at("members"), &count, &MEMBERS, usize::to_string);
        let this = self.this_region(&r, redis);
        let replicate_every =
            self.duration(&at("replicate_every"), r.replicate_every.0, REPLICATE_EVERY);
        let stale_after = match r.stale_after {
            Some(d) => {
                let d = self.duration(&at("stale_after"), d.0, STALE_AFTER);
                if d < replicate_every * 2 {
                    self.problem(
                        at("stale_after"),
                        format!(
                            "must be at least twice replicate_every ({}), got {}",
                            humantime::format_duration(replicate_every * 2),
                            humantime::format_duration(d)
                        ),
                    );
                }
                d
            }
            None => replicate_every * 4,
        };
        let floor = Range::new(0.0, 1.0 / count.max(1) as f64);
        let min_share = self.fraction(&at("min_share"), r.min_share, floor);
        let hysteresis = self.fraction(&at("hysteresis"), r.hysteresis, HYSTERESIS);
        let members = self.members(r.members, redis, min_share);
        RegionsConfig {
            this,
            members,
            replicate_every,
            stale_after,
            hysteresis,
            min_share,
            active_for: self.duration(&at("active_for"), r.active_for.0, ACTIVE_FOR),
        }
    }

    /// The index of `region` among the members (reported when missing).
    fn this_region(&mut self, r: &raw::Regions, redis: Option<&RedisConfig>) -> usize {
        let found = r.members.iter().position(|m| m.name == r.region);
        let Some(i) = found else {
            let names: Vec<&str> = r.members.iter().map(|m| m.name.as_str()).collect();
            self.problem(
                "rate_limits.regions.region",
                format!(
                    "\"{}\" is not one of the members ({})",
                    r.region,
                    names.join(", ")
                ),
            );
            return 0;
        };
        let own = r.members[i].redis.as_deref();
        if let (Some(own), Some(redis)) = (own, redis) {
            if own != redis.url {
                self.problem(
                    format!("rate_limits.regions.members[{i}].redis"),
                    format!(
                        "this region's Redis is rate_limits.redis.url (\"{}\"); omit it here or write the same URL, got \"{own}\"",
                        redis.url
                    ),
                );
            }
        }
        i
    }

    fn members(
        &mut self,
        members: Vec<raw::Member>,
        redis: Option<&RedisConfig>,
        min_share: u64,
    ) -> Vec<RegionMember> {
        let written = members.iter().filter(|m| m.share.is_some()).count();
        if written != 0 && written != members.len() {
            self.problem(
                "rate_limits.regions.members",
                "give every member a `share` or none (then the shares are equal)",
            );
        }
        let mut seen = HashSet::new();
        let count = members.len().max(1) as u64;
        let mut out: Vec<RegionMember> = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let at = format!("rate_limits.regions.members[{i}]");
                if !valid_name(&m.name) {
                    self.problem(
                        format!("{at}.name"),
                        format!(
                            "region name \"{}\" may use only letters, digits, '-' and '_'",
                            m.name
                        ),
                    );
                }
                if !seen.insert(m.name.clone()) {
                    self.problem(
                        format!("{at}.name"),
                        format!("region \"{}\" is listed twice", m.name),
                    );
                }
                let url = m
                    .redis
                    .clone()
                    .or_else(|| redis.map(|r| r.url.clone()))
                    .unwrap_or_default();
                if let Err(e) = redis::Client::open(url.as_str()) {
                    self.problem(
                        format!("{at}.redis"),
                        format!("\"{url}\" is not a Redis URL: {e}"),
                    );
                }
                let share = match m.share {
                    Some(s) => self.fraction(&format!("{at}.share"), s, Range::new(0.0, 1.0)),
                    None => SHARE_UNITS / count + u64::from((i as u64) < SHARE_UNITS % count),
                };
                if share < min_share {
                    self.problem(
                        format!("{at}.share"),
                        format!(
                            "must be at least min_share ({}), got {}",
                            min_share as f64 / SHARE_UNITS as f64,
                            share as f64 / SHARE_UNITS as f64
                        ),
                    );
                }
                RegionMember {
                    name: m.name,
                    redis: url,
                    initial_share: share,
                }
            })
            .collect();
        let sum: u64 = out.iter().map(|m| m.initial_share).sum();
        // Written shares round to millionths; a rounding difference goes to the first one.
        if written == out.len() && !out.is_empty() {
            if sum.abs_diff(SHARE_UNITS) > out.len() as u64 {
                self.problem(
                    "rate_limits.regions.members",
                    format!(
                        "the shares must add up to 1, got {}",
                        sum as f64 / SHARE_UNITS as f64
                    ),
                );
            } else {
                let first = &mut out[0].initial_share;
                *first = (*first + SHARE_UNITS).saturating_sub(sum);
            }
        }
        out
    }

    /// A fraction of the limit (at `at`) within `range`, in millionths.
    fn fraction(&mut self, at: &str, f: f64, range: Range<f64>) -> u64 {
        self.in_range(at, &f, &range, f64::to_string);
        (f.clamp(range.min, range.max.max(range.min)) * SHARE_UNITS as f64).round() as u64
    }
}

/// The subsection as written, and the home of its defaults.
pub(super) mod raw {
    use super::super::values::HumanDuration;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Member {
        pub name: String,
        /// Optional for this instance's own region (it is `rate_limits.redis.url`).
        pub redis: Option<String>,
        pub share: Option<f64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Regions {
        pub region: String,
        pub members: Vec<Member>,
        #[serde(default = "replicate_every")]
        pub replicate_every: HumanDuration,
        /// Default: four intervals.
        pub stale_after: Option<HumanDuration>,
        #[serde(default = "hysteresis")]
        pub hysteresis: f64,
        #[serde(default = "min_share")]
        pub min_share: f64,
        #[serde(default = "active_for")]
        pub active_for: HumanDuration,
    }

    fn replicate_every() -> HumanDuration {
        HumanDuration(Duration::from_millis(500))
    }

    fn hysteresis() -> f64 {
        0.05
    }

    fn min_share() -> f64 {
        0.05
    }

    fn active_for() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }
}
