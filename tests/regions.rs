//! Rate limiting across regions end to end: each region has its own redis-server and its own
//! gateway; a gateway reaches its own Redis directly and every other region's Redis through
//! a [`DelayRelay`] (the inter-region link, which the tests cut and heal). One key's global
//! limit is split into per-region shares that move with demand; whatever happens, everything
//! admitted in all regions together stays within burst + rate x time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::relay::DelayRelay;
use common::{try_request, wait_for, Gateway, RedisServer, Upstream};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The global limit of every test key: 100 per second, burst 20.
const RATE: f64 = 100.0;
const BURST: f64 = 20.0;
/// A share of the whole limit, in units.
const WHOLE: u64 = 1_000_000;
const NAMES: [&str; 3] = ["a", "b", "c"];
/// One way between regions (each direction of each link).
const ONE_WAY: Duration = Duration::from_millis(25);
const REPLICATE_EVERY: Duration = Duration::from_millis(200);
const STALE_AFTER: Duration = Duration::from_secs(1);
const CLIENT: &str = "X-Client";

/// Everything admitted anywhere within `secs` may be at most this.
fn allowed(secs: f64) -> f64 {
    BURST + RATE * secs
}

/// These tests take turns, whole: on a small machine two at once would measure each other.
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|e| e.into_inner())
}

/// N regions, each with its Redis and one gateway, linked pairwise by relays.
struct Regions {
    redis: Vec<RedisServer>,
    /// `links[i][j]`: region i's way to region j's Redis (`None` for i == j).
    links: Vec<Vec<Option<DelayRelay>>>,
    gws: Vec<Gateway>,
    _up: Upstream,
}

impl Regions {
    fn start(n: usize, min_share: f64) -> Self {
        let up = Upstream::start("app");
        let redis: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
        let links: Vec<Vec<Option<DelayRelay>>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (i != j).then(|| {
                            DelayRelay::start(format!("127.0.0.1:{}", redis[j].port), ONE_WAY)
                        })
                    })
                    .collect()
            })
            .collect();
        let gws = (0..n)
            .map(|i| Gateway::start(&Self::config(&up, &redis, &links, i, min_share)))
            .collect();
        Regions {
            redis,
            links,
            gws,
            _up: up,
        }
    }

    fn config(
        up: &Upstream,
        redis: &[RedisServer],
        links: &[Vec<Option<DelayRelay>>],
        this: usize,
        min_share: f64,
    ) -> String {
        let mut members = String::new();
        for (j, link) in links[this].iter().enumerate() {
            let url = match link {
                Some(relay) => format!("redis://127.0.0.1:{}/", relay.port),
                None => redis[j].url(),
            };
            members += &format!("      - name: {}\n        redis: {url}\n", NAMES[j]);
        }
        format!(
            "upstreams:\n  app:\n    backends:\n      - addr: {addr}\n\
             routes:\n  - name: api\n    path_prefix: /\n    upstream: app\n    rate_limit: p\n\
             rate_limits:\n  redis:\n    url: {own}\n    sync_interval: 5ms\n    expected_instances: 1\n    lease_wait: 1s\n\
             \x20 regions:\n    region: {name}\n    replicate_every: {every}ms\n    stale_after: {stale}ms\n    hysteresis: 0.02\n    min_share: {min_share}\n    members:\n{members}\
             \x20 policies:\n    p:\n      rate: {RATE}\n      per: 1s\n      burst: {BURST}\n      key: header:{CLIENT}\n",
            addr = up.addr(),
            own = redis[this].url(),
            name = NAMES[this],
            every = REPLICATE_EVERY.as_millis(),
            stale = STALE_AFTER.as_millis(),
        )
    }

    fn urls(&self) -> Vec<String> {
        self.gws.iter().map(|g| g.url("/")).collect()
    }

    /// Cuts the link between regions i and j, both ways.
    fn cut(&self, i: usize, j: usize) {
        self.links[i][j].as_ref().unwrap().cut();
        self.links[j][i].as_ref().unwrap().cut();
    }

    fn heal(&self, i: usize, j: usize) {
        self.links[i][j].as_ref().unwrap().heal();
        self.links[j][i].as_ref().unwrap().heal();
    }

    /// The rights hash of `client`'s key in region `r`'s Redis (empty if none yet).
    fn rights(&self, r: usize, client: &str) -> BTreeMap<String, String> {
        let redis = &self.redis[r];
        // `gw:rl:<policy>:<key>:rights`; the key may carry a kind prefix (`h:` for a header).
        let keys = items(&redis.command(&format!("KEYS gw:rl:p:*{client}:rights")));
        let Some(key) = keys.first() else {
            return BTreeMap::new();
        };
        let fields = items(&redis.command(&format!("HGETALL {key}")));
        fields
            .chunks(2)
            .filter(|kv| kv.len() == 2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect()
    }

    /// The share region `r` enforces for `client`'s key, as its own Redis says.
    fn share(&self, r: usize, client: &str) -> Option<u64> {
        self.rights(r, client)
            .get("share")
            .and_then(|s| s.parse().ok())
    }

    /// The non-zero `g:<from>:<to>` counters of `client`'s key in region `r`'s Redis.
    fn gives(&self, r: usize, client: &str) -> BTreeMap<String, u64> {
        self.rights(r, client)
            .into_iter()
            .filter(|(k, _)| k.starts_with("g:"))
            .map(|(k, v)| (k, v.parse().unwrap_or(u64::MAX)))
            .filter(|(_, v)| *v != 0)
            .collect()
    }

    /// Region `r`'s gateway's `gateway_ratelimit_region_stale` for `peer`.
    fn stale(&self, r: usize, peer: usize) -> f64 {
        self.gws[r].metric_sum(
            "gateway_ratelimit_region_stale",
            &[&format!("region=\"{}\"", NAMES[peer])],
        )
    }

    /// The last lines of every gateway's stderr, for assertion messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, g) in self.gws.iter().enumerate() {
            let text = g.stderr();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out += &format!(
                "--- gateway {} stderr (last lines):\n{}\n",
                NAMES[i],
                tail.join("\n")
            );
        }
        out
    }
}

/// The strings of a RESP reply (bulk strings and simple lines; the length lines dropped).
fn items(reply: &str) -> Vec<String> {
    reply
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// One request as a client saw it: to which region, when sent and answered (since the start
/// of the load) and the status (0: no response).
#[derive(Clone, Copy, Debug)]
struct Sample {
    region: usize,
    sent: Duration,
    done: Duration,
    status: u16,
}

/// Which region a thread's `i`-th request goes to, `elapsed` into the load.
type Mix = Arc<dyn Fn(Duration, usize) -> usize + Send + Sync>;

/// Requests spread over the regions in these proportions (e.g. `[9, 1]`).
fn weights(w: &[usize]) -> Mix {
    let pattern: Vec<usize> = w
        .iter()
        .enumerate()
        .flat_map(|(r, n)| std::iter::repeat_n(r, *n))
        .collect();
    Arc::new(move |_, i| pattern[i % pattern.len()])
}

/// Load running in the background: `threads` clients sending blocking GETs for one key as
/// fast as they can.
struct Load {
    started: Instant,
    handles: Vec<JoinHandle<Vec<Sample>>>,
}

fn start_load(
    urls: Vec<String>,
    threads: usize,
    duration: Duration,
    client: &str,
    mix: Mix,
) -> Load {
    let started = Instant::now();
    let handles = (0..threads)
        .map(|t| {
            let (urls, mix, client) = (urls.clone(), mix.clone(), client.to_string());
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                let mut i = t;
                while started.elapsed() < duration {
                    let region = mix(started.elapsed(), i);
                    let sent = started.elapsed();
                    let status = try_request("GET", &urls[region], &[(CLIENT, &client)])
                        .map_or(0, |r| r.status);
                    samples.push(Sample {
                        region,
                        sent,
                        done: started.elapsed(),
                        status,
                    });
                    i += 1;
                }
                samples
            })
        })
        .collect();
    Load { started, handles }
}

impl Load {
    /// Time since the load started.
    fn at(&self) -> Duration {
        self.started.elapsed()
    }

    fn sleep_until(&self, t: Duration) {
        if let Some(d) = t.checked_sub(self.at()) {
            std::thread::sleep(d);
        }
    }

    fn finish(self) -> Run {
        let mut samples = Vec::new();
        for h in self.handles {
            samples.extend(h.join().unwrap());
        }
        // To the last answer (the caller may have gone on watching after the load).
        let last = samples.iter().map(|s| s.done).max().unwrap_or_default();
        Run {
            elapsed: last,
            samples,
        }
    }
}

/// What a load saw.
struct Run {
    /// From before the first request to after the last answer.
    elapsed: Duration,
    samples: Vec<Sample>,
}

impl Run {
    fn count(&self, region: Option<usize>, status: impl Fn(u16) -> bool) -> usize {
        self.samples
            .iter()
            .filter(|s| region.is_none_or(|r| s.region == r) && status(s.status))
            .count()
    }

    fn ok(&self, region: Option<usize>) -> usize {
        self.count(region, |s| s == 200)
    }

    fn limited(&self, region: Option<usize>) -> usize {
        self.count(region, |s| s == 429)
    }

    /// Anything but 200 and 429 (5xx, no response).
    fn other(&self, region: Option<usize>) -> usize {
        self.count(region, |s| s != 200 && s != 429)
    }

    /// Admissions certainly made within [from, to]: sent at or after `from`, answered by `to`.
    fn admitted_within(&self, from: Duration, to: Duration) -> usize {
        self.samples
            .iter()
            .filter(|s| s.status == 200 && s.sent >= from && s.done <= to)
            .count()
    }

    /// Admissions possibly made after `from` (answered after it).
    fn admitted_after(&self, from: Duration) -> usize {
        self.samples
            .iter()
            .filter(|s| s.status == 200 && s.done > from)
            .count()
    }

    /// admitted/allowed over the whole run.
    fn ratio(&self) -> f64 {
        self.ok(None) as f64 / allowed(self.elapsed.as_secs_f64())
    }

    fn summary(&self, n: usize) -> String {
        let mut s = format!(
            "admitted {}, limited {}, other {} in {:.2}s; allowed {:.0}; admitted/allowed = {:.3}",
            self.ok(None),
            self.limited(None),
            self.other(None),
            self.elapsed.as_secs_f64(),
            allowed(self.elapsed.as_secs_f64()),
            self.ratio()
        );
        for (r, name) in NAMES.iter().enumerate().take(n) {
            s += &format!(
                "; {name}: {} ok / {} limited / {} other",
                self.ok(Some(r)),
                self.limited(Some(r)),
                self.other(Some(r))
            );
        }
        s
    }
}

/// Two regions, every request in a: b gives its surplus to a (down to min_share), so a
/// soon admits ~0.95 of the global rate, and never more than the whole.
#[test]
fn all_traffic_in_one_of_two_regions_moves_the_rights_there() {
    let _turn = turn();
    let regions = Regions::start(2, 0.05);
    let client = "two-solo";
    let load = start_load(
        regions.urls(),
        8,
        Duration::from_secs(4),
        client,
        weights(&[1, 0]),
    );
    // a's share as its Redis holds it, watched while the load runs.
    let mut above_090 = None;
    let mut trace = Vec::new();
    while load.at() < Duration::from_secs(4) {
        let share = regions.share(0, client);
        trace.push((load.at(), share));
        if above_090.is_none() && share.is_some_and(|s| s > 900_000) {
            above_090 = Some(load.at());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = load.finish();
    let half = run.elapsed / 2;
    let second_half = run.admitted_after(half) as f64 / (run.elapsed - half).as_secs_f64();
    eprintln!("one of two regions: {}", run.summary(2));
    eprintln!(
        "second half: {second_half:.1}/s admitted = {:.3} x rate; a's share above 900000 after {above_090:?}",
        second_half / RATE
    );
    let sampled: Vec<String> = trace
        .iter()
        .step_by(4)
        .map(|(t, s)| {
            format!(
                "{:.1}s:{}",
                t.as_secs_f64(),
                s.map_or("-".into(), |s| s.to_string())
            )
        })
        .collect();
    eprintln!("a's share over time: {}", sampled.join(" "));
    // Read a, b, a: with a's share unchanged around it, no give from a was under way, so the
    // two shares may be added.
    let (a1, b, a2) = (
        regions.share(0, client),
        regions.share(1, client),
        regions.share(0, client),
    );
    let gives_to_a =
        regions.gws[1].metric_sum("gateway_ratelimit_region_gives_total", &["to=\"a\""]);
    eprintln!(
        "after the load: share a {a1:?}, b {b:?}; b's gives to a (metric) {gives_to_a}; rights a {:?}; rights b {:?}",
        regions.rights(0, client),
        regions.rights(1, client)
    );
    assert_eq!(run.other(None), 0, "no 5xx\n{}", regions.logs());
    assert!(
        run.limited(None) > run.ok(None),
        "the load must exceed the limit for this test to mean anything"
    );
    assert!(
        run.ratio() <= 1.0,
        "over-admission: admitted/allowed {:.3}\n{}",
        run.ratio(),
        regions.logs()
    );
    let above = above_090.unwrap_or_else(|| {
        panic!(
            "a's share never rose above 900000 (min_share 0.05 lets it reach 950000)\n{}",
            regions.logs()
        )
    });
    assert!(
        above <= Duration::from_secs(2),
        "a's share took {above:?} (over 10 intervals of {REPLICATE_EVERY:?}) to pass 900000"
    );
    assert!(
        second_half >= 0.9 * RATE,
        "second half admitted {second_half:.1}/s, under 0.9 x rate\n{}",
        regions.logs()
    );
    assert!(gives_to_a >= 1.0, "b's gateway counts its gives to a");
    if a1 == a2 {
        let sum = a1.unwrap_or(0) + b.unwrap_or(0);
        assert!(sum <= WHOLE, "shares add up to {sum} > {WHOLE}");
    }
}

/// Both regions over the limit at once, in two proportions: all of it together stays
/// within the global limit (regions that ignored each other would admit ~2x).
#[test]
fn two_busy_regions_together_stay_within_the_limit() {
    let _turn = turn();
    let regions = Regions::start(2, 0.05);
    for (client, mix) in [("split-55", [1, 1]), ("split-91", [9, 1])] {
        let load = start_load(
            regions.urls(),
            8,
            Duration::from_secs(4),
            client,
            weights(&mix),
        );
        let run = load.finish();
        eprintln!(
            "two regions, requests {}:{}: {}; shares a {:?} b {:?}",
            mix[0],
            mix[1],
            run.summary(2),
            regions.share(0, client),
            regions.share(1, client)
        );
        assert_eq!(run.other(None), 0, "no 5xx\n{}", regions.logs());
        for (r, name) in NAMES.iter().enumerate().take(2) {
            assert!(
                run.limited(Some(r)) > 0,
                "{client}: region {name} must be over its share for this test to mean anything"
            );
        }
        assert!(
            run.ok(None) + run.limited(None) > 2 * allowed(run.elapsed.as_secs_f64()) as usize,
            "the load must exceed the limit"
        );
        assert!(
            run.ratio() <= 1.0,
            "{client}: over-admission across regions: admitted/allowed {:.3}\n{}",
            run.ratio(),
            regions.logs()
        );
    }
}

/// The link between the regions is cut mid-run, with traffic on both sides: each region
/// keeps the share it had (no transfers with a stale peer), so the total stays within the
/// limit during the cut; after the heal the give counters converge.
#[test]
fn a_cut_link_never_doubles_the_limit_and_rights_converge_after() {
    let _turn = turn();
    let regions = Regions::start(2, 0.05);
    let client = "cut";
    let (cut_at, heal_at, end) = (
        Duration::from_secs(2),
        Duration::from_secs(5),
        Duration::from_secs(7),
    );
    // 90/10 until the cut, so that a holds most of the rights when it comes; then 50/50,
    // so that b wants more than it holds all through the cut (taking back its initial
    // half would show as ~1.4x).
    let before: Mix = weights(&[9, 1]);
    let after: Mix = weights(&[1, 1]);
    let mix: Mix = Arc::new(move |t, i| {
        if t < cut_at {
            before(t, i)
        } else {
            after(t, i)
        }
    });
    let load = start_load(regions.urls(), 8, end, client, mix);
    load.sleep_until(cut_at);
    let shares_at_cut = (regions.share(0, client), regions.share(1, client));
    let cut = load.at();
    regions.cut(0, 1);
    let stale_seen = wait_for(
        "both regions to see the other stale",
        Duration::from_secs(3),
        || (regions.stale(0, 1) == 1.0 && regions.stale(1, 0) == 1.0).then(|| load.at()),
    );
    load.sleep_until(heal_at);
    let shares_in_cut = (regions.share(0, client), regions.share(1, client));
    let errors = regions.gws[0].metric_sum(
        "gateway_ratelimit_region_reads_total",
        &["region=\"b\"", "outcome=\"error\""],
    );
    let heal = load.at();
    regions.heal(0, 1);
    // After the heal: the stale marks go, and the g:* counters in both Redises match.
    let (mut fresh_at, mut converged_at) = (None, None);
    let deadline = heal + Duration::from_secs(6);
    while load.at() < deadline && (fresh_at.is_none() || converged_at.is_none()) {
        if fresh_at.is_none() && regions.stale(0, 1) == 0.0 && regions.stale(1, 0) == 0.0 {
            fresh_at = Some(load.at() - heal);
        }
        if converged_at.is_none() {
            let (a, b) = (regions.gives(0, client), regions.gives(1, client));
            if a == b && !a.is_empty() {
                converged_at = Some(load.at() - heal);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = load.finish();
    let in_cut = run.admitted_within(cut, heal);
    let cut_allowed = allowed((heal - cut).as_secs_f64());
    let cut_ratio = in_cut as f64 / cut_allowed;
    eprintln!("cut link: {}", run.summary(2));
    eprintln!(
        "during the cut ({:.2}s): admitted {in_cut}, allowed {cut_allowed:.0}, admitted/allowed = {cut_ratio:.3}; shares (a, b) at the cut {shares_at_cut:?}, late in it {shares_in_cut:?}; stale seen {:.2}s after the cut; read errors at a {errors}",
        (heal - cut).as_secs_f64(),
        (stale_seen - cut).as_secs_f64()
    );
    eprintln!(
        "after the heal: stale back to 0 after {fresh_at:?}, g:* converged after {converged_at:?}; gives a {:?}, b {:?}; shares a {:?}, b {:?}",
        regions.gives(0, client),
        regions.gives(1, client),
        regions.share(0, client),
        regions.share(1, client)
    );
    assert_eq!(run.other(None), 0, "no 5xx\n{}", regions.logs());
    assert!(
        run.limited(Some(1)) > 0 && run.limited(Some(0)) > 0,
        "both regions over their shares"
    );
    assert!(
        cut_ratio <= 1.0,
        "over-admission during the cut: {in_cut} > {cut_allowed:.0}\n{}",
        regions.logs()
    );
    assert!(
        run.ratio() <= 1.0,
        "over-admission over the run: admitted/allowed {:.3}\n{}",
        run.ratio(),
        regions.logs()
    );
    assert!(errors >= 1.0, "a counted failed reads of b during the cut");
    assert!(
        fresh_at.is_some(),
        "a peer stayed stale after the heal\n{}",
        regions.logs()
    );
    let converged = converged_at.unwrap_or_else(|| {
        panic!(
            "g:* never converged after the heal: a {:?}, b {:?}\n{}",
            regions.gives(0, client),
            regions.gives(1, client),
            regions.logs()
        )
    });
    assert!(
        converged <= Duration::from_secs(2),
        "g:* took {converged:?} (over 10 intervals) to converge"
    );
}

/// b's Redis dies while both regions have traffic: b's gateway decides by its fallback with
/// no 5xx; a keeps limiting (no 5xx) and admits at most its own share's allowance (b's
/// rights cannot be taken from a peer that cannot be read).
#[test]
fn a_dead_redis_in_one_region_breaks_neither_region() {
    let _turn = turn();
    let mut regions = Regions::start(2, 0.05);
    let client = "dead";
    let load = start_load(
        regions.urls(),
        8,
        Duration::from_secs(6),
        client,
        weights(&[1, 1]),
    );
    let mut max_share_a = WHOLE / 2;
    let mut watch = |regions: &Regions, until: Duration| {
        while load.at() < until {
            if let Some(s) = regions.share(0, client) {
                max_share_a = max_share_a.max(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    watch(&regions, Duration::from_secs(2));
    let killed = load.at();
    regions.redis[1].kill();
    let stale_seen = wait_for("a to see b stale", Duration::from_secs(3), || {
        (regions.stale(0, 1) == 1.0).then(|| load.at())
    });
    watch(&regions, Duration::from_secs(6));
    let run = load.finish();
    let decisions = "gateway_ratelimit_decisions_total";
    let unreachable_b = regions.gws[1].metric_sum(decisions, &["reason=\"redis_unreachable\""]);
    let fallback_a = regions.gws[0].metric_sum(decisions, &["outcome=\"fallback\""]);
    let a_allowance = max_share_a as f64 / WHOLE as f64 * allowed(run.elapsed.as_secs_f64());
    eprintln!("dead Redis in b: {}", run.summary(2));
    eprintln!(
        "a admitted {} <= {a_allowance:.0} (largest share seen {max_share_a}) = {:.3}; b's decisions for an unreachable Redis {unreachable_b}; a's fallbacks {fallback_a}; b killed at {:.2}s, stale at a {:.2}s later",
        run.ok(Some(0)),
        run.ok(Some(0)) as f64 / a_allowance,
        killed.as_secs_f64(),
        (stale_seen - killed).as_secs_f64()
    );
    assert_eq!(
        run.other(Some(1)),
        0,
        "b answered without 5xx\n{}",
        regions.logs()
    );
    assert_eq!(
        run.other(Some(0)),
        0,
        "a answered without 5xx\n{}",
        regions.logs()
    );
    assert!(
        unreachable_b >= 1.0,
        "b decided by its on_redis_error policy\n{}",
        regions.logs()
    );
    assert_eq!(fallback_a, 0.0, "a's own Redis was fine throughout");
    assert!(run.limited(Some(0)) > 0, "a was over its share");
    assert!(
        run.ok(Some(0)) as f64 <= a_allowance,
        "a admitted {} > its share's allowance {a_allowance:.0}\n{}",
        run.ok(Some(0)),
        regions.logs()
    );
}

/// Three regions: with every request in one, it gets nearly all the limit (all but the two
/// floors); split three ways, the total stays within the limit.
#[test]
fn three_regions_follow_demand_within_the_limit() {
    let _turn = turn();
    // A floor of 0.02: the busy region can reach 0.96 of the rate.
    let regions = Regions::start(3, 0.02);
    let load = start_load(
        regions.urls(),
        8,
        Duration::from_secs(5),
        "tri-solo",
        weights(&[1, 0, 0]),
    );
    let solo = load.finish();
    let shares: Vec<Option<u64>> = (0..3).map(|r| regions.share(r, "tri-solo")).collect();
    eprintln!(
        "three regions, all in a: {}; shares {shares:?}",
        solo.summary(3)
    );
    let load = start_load(
        regions.urls(),
        9,
        Duration::from_secs(4),
        "tri-split",
        weights(&[1, 1, 1]),
    );
    let split = load.finish();
    let shares: Vec<Option<u64>> = (0..3).map(|r| regions.share(r, "tri-split")).collect();
    eprintln!(
        "three regions, split three ways: {}; shares {shares:?}",
        split.summary(3)
    );
    for run in [&solo, &split] {
        assert_eq!(run.other(None), 0, "no 5xx\n{}", regions.logs());
        assert!(
            run.ratio() <= 1.0,
            "over-admission across three regions: {:.3}\n{}",
            run.ratio(),
            regions.logs()
        );
    }
    assert!(
        solo.ratio() >= 0.85,
        "all traffic in a: admitted/allowed {:.3} < 0.85\n{}",
        solo.ratio(),
        regions.logs()
    );
    for (r, name) in NAMES.iter().enumerate() {
        assert!(split.limited(Some(r)) > 0, "region {name} over its share");
    }
}
