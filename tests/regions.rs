//! Rate limiting across regions end to end: each region has its own redis-server and its own
//! gateway; a gateway reaches its own Redis directly and every other region's Redis through
//! a [`DelayRelay`] (the inter-region link, which the tests cut and heal). One key's global
//! limit is split into per-region shares that move with demand; whatever happens, everything
//! admitted in all regions together stays within burst + rate x time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::relay::DelayRelay;
use common::{try_request, wait_for, Gateway, RedisServer, Upstream};
use std::cell::Cell;
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

    /// Every region's share, each from its own Redis, read in region order and then back
    /// again; `None` unless the second reads match the first. A region that gave between
    /// its two reads would show a smaller share the second time; so when all match, no
    /// region read before another gave to it in between, and the shares may be added: the
    /// sum is at most the whole if the limiter is right. (A region without a rights hash yet
    /// enforces its initial, equal share.)
    fn snapshot(&self, client: &str) -> Option<Vec<u64>> {
        let n = self.redis.len();
        let read = |r: usize| self.share(r, client).unwrap_or(WHOLE / n as u64);
        let first: Vec<u64> = (0..n).map(read).collect();
        let again = (0..n - 1).rev().all(|r| read(r) == first[r]);
        again.then_some(first)
    }

    /// Units moved so far: the sum of the give counters in region `r`'s Redis.
    fn moved(&self, r: usize, client: &str) -> u64 {
        self.gives(r, client).values().sum()
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

/// Consistent share snapshots taken while a load runs (see [`Regions::snapshot`]).
#[derive(Default)]
struct Shares {
    samples: Vec<(Duration, Vec<u64>)>,
    /// Snapshots that did not match on the second read.
    skipped: usize,
}

impl Shares {
    /// Samples every 50 ms until `until` into the load, calling `tick` each time.
    fn watch(
        &mut self,
        regions: &Regions,
        client: &str,
        load: &Load,
        until: Duration,
        mut tick: impl FnMut(Duration),
    ) {
        while load.at() < until {
            match regions.snapshot(client) {
                Some(shares) => self.samples.push((load.at(), shares)),
                None => self.skipped += 1,
            }
            tick(load.at());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Like [`Self::watch`], but only region `r`'s share (sampled as a one-region
    /// snapshot: use `allowance(0, ..)`).
    fn watch_region(
        &mut self,
        regions: &Regions,
        r: usize,
        client: &str,
        load: &Load,
        until: Duration,
        mut tick: impl FnMut(Duration),
    ) {
        let initial = WHOLE / regions.redis.len() as u64;
        while load.at() < until {
            let share = regions.share(r, client).unwrap_or(initial);
            self.samples.push((load.at(), vec![share]));
            tick(load.at());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The largest sum of shares in one snapshot.
    fn max_sum(&self) -> u64 {
        self.samples
            .iter()
            .map(|(_, s)| s.iter().sum())
            .max()
            .unwrap_or(0)
    }

    /// When region `r`'s share was first above `units`.
    fn first_above(&self, r: usize, units: u64) -> Option<Duration> {
        self.samples
            .iter()
            .find(|(_, s)| s[r] > units)
            .map(|(t, _)| *t)
    }

    /// What region `r` may admit from the load's start to `end` by the shares seen: its
    /// largest burst plus the rate of each share over the time it held (generously, each
    /// interval between snapshots at the larger of its two ends).
    fn allowance(&self, r: usize, end: Duration) -> f64 {
        let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) else {
            return 0.0;
        };
        let frac = |units: u64| units as f64 / WHOLE as f64;
        let mut tokens = RATE * frac(first.1[r]) * first.0.as_secs_f64();
        for pair in self.samples.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            tokens += RATE * frac(a.1[r].max(b.1[r])) * (b.0 - a.0).as_secs_f64();
        }
        tokens += RATE * frac(last.1[r]) * end.saturating_sub(last.0).as_secs_f64();
        let largest = self.samples.iter().map(|(_, s)| s[r]).max().unwrap_or(0);
        tokens + BURST * frac(largest)
    }

    /// One snapshot in `every`, for the log.
    fn trace(&self, every: usize) -> String {
        let lines: Vec<String> = self
            .samples
            .iter()
            .step_by(every)
            .map(|(t, s)| format!("{:.1}s:{s:?}", t.as_secs_f64()))
            .collect();
        format!(
            "{} ({} snapshots, {} skipped, largest sum {})",
            lines.join(" "),
            self.samples.len(),
            self.skipped,
            self.max_sum()
        )
    }

    /// The shares never added up to more than the whole (and some snapshots were taken).
    fn assert_within_whole(&self, regions: &Regions) {
        assert!(
            self.samples.len() >= 10,
            "too few consistent snapshots ({}; {} skipped)",
            self.samples.len(),
            self.skipped
        );
        assert!(
            self.max_sum() <= WHOLE,
            "shares added up to {} > {WHOLE}: {}\n{}",
            self.max_sum(),
            self.trace(1),
            regions.logs()
        );
    }
}

/// Two regions, every request in a: b gives its surplus to a (down to min_share), so a
/// soon admits ~0.95 of the global rate, and never more than the whole.
#[test]
fn all_traffic_in_one_of_two_regions_moves_the_rights_there() {
    let _turn = turn();
    let regions = Regions::start(2, 0.05);
    let client = "two-solo";
    let duration = Duration::from_secs(4);
    let load = start_load(regions.urls(), 8, duration, client, weights(&[1, 0]));
    let mut shares = Shares::default();
    shares.watch(&regions, client, &load, duration, |_| {});
    let run = load.finish();
    let half = run.elapsed / 2;
    let second_half = run.admitted_after(half) as f64 / (run.elapsed - half).as_secs_f64();
    let above_090 = shares.first_above(0, 900_000);
    let a_allowance = shares.allowance(0, run.elapsed);
    let a_ratio = run.ok(Some(0)) as f64 / a_allowance;
    let gives_to_a =
        regions.gws[1].metric_sum("gateway_ratelimit_region_gives_total", &["to=\"a\""]);
    eprintln!("one of two regions: {}", run.summary(2));
    eprintln!(
        "second half: {second_half:.1}/s admitted = {:.3} x rate; a's share above 900000 after {above_090:?}; a admitted / what its shares allowed ({a_allowance:.0}) = {a_ratio:.3}; b's gives to a (metric) {gives_to_a}; units moved {}",
        second_half / RATE,
        regions.moved(0, client)
    );
    eprintln!("shares (a, b): {}", shares.trace(4));
    eprintln!(
        "rights a {:?}; rights b {:?}; keys replicated by a {}; bytes read/written by a {}/{}",
        regions.rights(0, client),
        regions.rights(1, client),
        regions.gws[0].metric("gateway_ratelimit_region_keys"),
        regions.gws[0].metric_sum(
            "gateway_ratelimit_region_bytes_total",
            &["direction=\"read\""]
        ),
        regions.gws[0].metric_sum(
            "gateway_ratelimit_region_bytes_total",
            &["direction=\"write\""]
        ),
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
    shares.assert_within_whole(&regions);
    assert!(
        a_ratio <= 1.0,
        "a admitted {} > {a_allowance:.0}, what its shares allowed: {}",
        run.ok(Some(0)),
        shares.trace(1)
    );
    let above = above_090.unwrap_or_else(|| {
        panic!(
            "a's share never rose above 900000 (min_share 0.05 lets it reach 950000): {}\n{}",
            shares.trace(1),
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
}

/// Both regions over the limit at once, in two proportions: all of it together stays
/// within the global limit (regions that ignored each other would admit ~2x), and the
/// shares never add up to more than the whole.
#[test]
fn two_busy_regions_together_stay_within_the_limit() {
    let _turn = turn();
    let regions = Regions::start(2, 0.05);
    for (client, mix) in [("split-55", [1, 1]), ("split-91", [9, 1])] {
        let duration = Duration::from_secs(4);
        let load = start_load(regions.urls(), 8, duration, client, weights(&mix));
        let mut shares = Shares::default();
        shares.watch(&regions, client, &load, duration, |_| {});
        let run = load.finish();
        eprintln!(
            "two regions, requests {}:{}: {}; units moved {}",
            mix[0],
            mix[1],
            run.summary(2),
            regions.moved(0, client)
        );
        eprintln!("shares (a, b): {}", shares.trace(4));
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
        shares.assert_within_whole(&regions);
    }
}

/// The link between the regions is cut mid-run, with traffic on both sides: each region
/// keeps at most the share it had (no transfers with a stale peer), so the total stays
/// within the limit during the cut; after the heal the give counters converge.
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
    let mut shares = Shares::default();
    shares.watch(&regions, client, &load, cut_at, |_| {});
    let shares_at_cut = regions.snapshot(client);
    let cut = load.at();
    regions.cut(0, 1);
    let mut stale_seen = None;
    shares.watch(&regions, client, &load, heal_at, |t| {
        if stale_seen.is_none() && regions.stale(0, 1) == 1.0 && regions.stale(1, 0) == 1.0 {
            stale_seen = Some(t - cut);
        }
    });
    let shares_in_cut = regions.snapshot(client);
    let errors = regions.gws[0].metric_sum(
        "gateway_ratelimit_region_reads_total",
        &["region=\"b\"", "outcome=\"error\""],
    );
    let heal = load.at();
    regions.heal(0, 1);
    // After the heal: the stale marks go, and the g:* counters in both Redises match.
    let (fresh_at, converged_at) = (Cell::new(None), Cell::new(None));
    let check = |t: Duration| {
        if fresh_at.get().is_none() && regions.stale(0, 1) == 0.0 && regions.stale(1, 0) == 0.0 {
            fresh_at.set(Some(t - heal));
        }
        if converged_at.get().is_none() {
            let (a, b) = (regions.gives(0, client), regions.gives(1, client));
            if a == b && !a.is_empty() {
                converged_at.set(Some(t - heal));
            }
        }
    };
    shares.watch(&regions, client, &load, end, check);
    let deadline = heal + Duration::from_secs(6);
    while load.at() < deadline && (fresh_at.get().is_none() || converged_at.get().is_none()) {
        check(load.at());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (fresh_at, converged_at) = (fresh_at.get(), converged_at.get());
    let run = load.finish();
    let in_cut = run.admitted_within(cut, heal);
    let cut_allowed = allowed((heal - cut).as_secs_f64());
    let cut_ratio = in_cut as f64 / cut_allowed;
    eprintln!("cut link: {}", run.summary(2));
    eprintln!(
        "during the cut ({:.2}s): admitted {in_cut}, allowed {cut_allowed:.0}, admitted/allowed = {cut_ratio:.3}; shares (a, b) at the cut {shares_at_cut:?}, late in it {shares_in_cut:?}; both stale {stale_seen:?} after the cut; read errors at a {errors}",
        (heal - cut).as_secs_f64(),
    );
    eprintln!(
        "after the heal: stale back to 0 after {fresh_at:?}, g:* converged after {converged_at:?}; gives a {:?}, b {:?}; shares {:?}",
        regions.gives(0, client),
        regions.gives(1, client),
        regions.snapshot(client)
    );
    eprintln!("shares (a, b): {}", shares.trace(4));
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
    shares.assert_within_whole(&regions);
    assert!(
        stale_seen.is_some(),
        "the peers were never both stale during the cut\n{}",
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
    // a's share over time (b's Redis cannot be read once dead: no snapshots of both).
    let mut shares_a = Shares::default();
    shares_a.watch_region(&regions, 0, client, &load, Duration::from_secs(2), |_| {});
    let killed = load.at();
    regions.redis[1].kill();
    let mut stale_seen = None;
    shares_a.watch_region(&regions, 0, client, &load, Duration::from_secs(6), |t| {
        if stale_seen.is_none() && regions.stale(0, 1) == 1.0 {
            stale_seen = Some(t - killed);
        }
    });
    let run = load.finish();
    let decisions = "gateway_ratelimit_decisions_total";
    let unreachable_b = regions.gws[1].metric_sum(decisions, &["reason=\"redis_unreachable\""]);
    let fallback_a = regions.gws[0].metric_sum(decisions, &["outcome=\"fallback\""]);
    let a_allowance = shares_a.allowance(0, run.elapsed);
    eprintln!("dead Redis in b: {}", run.summary(2));
    eprintln!(
        "a admitted {} <= {a_allowance:.0} (what its shares allowed) = {:.3}; b's decisions for an unreachable Redis {unreachable_b}; a's fallbacks {fallback_a}; b killed at {:.2}s, stale at a {stale_seen:?} later; a's share: {}",
        run.ok(Some(0)),
        run.ok(Some(0)) as f64 / a_allowance,
        killed.as_secs_f64(),
        shares_a.trace(8)
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
    assert!(stale_seen.is_some(), "a never marked b stale");
    assert!(run.limited(Some(0)) > 0, "a was over its share");
    assert!(
        run.ok(Some(0)) as f64 <= a_allowance,
        "a admitted {} > its share's allowance {a_allowance:.0}\n{}",
        run.ok(Some(0)),
        regions.logs()
    );
}

/// Three regions: with every request in one, it soon gets nearly all the limit (all but
/// the two floors); split three ways, the total stays within the limit.
#[test]
fn three_regions_follow_demand_within_the_limit() {
    let _turn = turn();
    // A floor of 0.02: the busy region can reach 0.96 of the rate.
    let regions = Regions::start(3, 0.02);
    let duration = Duration::from_secs(5);
    let load = start_load(regions.urls(), 8, duration, "tri-solo", weights(&[1, 0, 0]));
    let mut solo_shares = Shares::default();
    solo_shares.watch(&regions, "tri-solo", &load, duration, |_| {});
    let solo = load.finish();
    // Rights need a few intervals to move (demand is published once per interval, then
    // read, then given): measured from 1.5 s (7 intervals) on, a should have ~0.96.
    let ramp = Duration::from_millis(1500);
    let settled = solo.admitted_after(ramp) as f64 / (RATE * (solo.elapsed - ramp).as_secs_f64());
    let a_allowance = solo_shares.allowance(0, solo.elapsed);
    let a_ratio = solo.ok(Some(0)) as f64 / a_allowance;
    eprintln!(
        "three regions, all in a: {}; from {ramp:?} on admitted/(rate x time) = {settled:.3}; a above 900000 after {:?}; a admitted / what its shares allowed ({a_allowance:.0}) = {a_ratio:.3}",
        solo.summary(3),
        solo_shares.first_above(0, 900_000)
    );
    eprintln!("shares (a, b, c): {}", solo_shares.trace(4));
    let load = start_load(
        regions.urls(),
        9,
        Duration::from_secs(4),
        "tri-split",
        weights(&[1, 1, 1]),
    );
    let mut split_shares = Shares::default();
    split_shares.watch(&regions, "tri-split", &load, Duration::from_secs(4), |_| {});
    let split = load.finish();
    eprintln!(
        "three regions, split three ways: {}; units moved {}",
        split.summary(3),
        regions.moved(0, "tri-split")
    );
    eprintln!("shares (a, b, c): {}", split_shares.trace(4));
    for run in [&solo, &split] {
        assert_eq!(run.other(None), 0, "no 5xx\n{}", regions.logs());
        assert!(
            run.ratio() <= 1.0,
            "over-admission across three regions: {:.3}\n{}",
            run.ratio(),
            regions.logs()
        );
    }
    solo_shares.assert_within_whole(&regions);
    split_shares.assert_within_whole(&regions);
    assert!(
        a_ratio <= 1.0,
        "a admitted {} > {a_allowance:.0}, what its shares allowed: {}",
        solo.ok(Some(0)),
        solo_shares.trace(1)
    );
    assert!(
        settled >= 0.85,
        "all traffic in a, once settled: {settled:.3} of the rate < 0.85 (shares {:?})\n{}",
        regions.snapshot("tri-solo"),
        regions.logs()
    );
    assert!(
        solo.ratio() >= 0.75,
        "all traffic in a, over the whole run: admitted/allowed {:.3} < 0.75",
        solo.ratio()
    );
    for (r, name) in NAMES.iter().enumerate() {
        assert!(split.limited(Some(r)) > 0, "region {name} over its share");
    }
}

/// Both regions busy from a key's first request, half the traffic each: neither has a
/// surplus (share 0.5, demand 0.5), so neither should give most of its share away. A region
/// that plans before its own demand is published sees itself idle and gives down to the
/// floor while it has half the requests.
#[test]
fn a_region_with_half_the_traffic_keeps_about_half_the_rights() {
    let _turn = turn();
    let regions = Regions::start(2, 0.05);
    let client = "even";
    let duration = Duration::from_secs(3);
    let load = start_load(regions.urls(), 8, duration, client, weights(&[1, 1]));
    let mut shares = Shares::default();
    // Both rights hashes when a share is first seen near the floor, for the message.
    let mut at_floor = None;
    shares.watch(&regions, client, &load, duration, |t| {
        let low = (0..2).any(|r| regions.share(r, client).is_some_and(|s| s <= 100_000));
        if low && at_floor.is_none() {
            at_floor = Some(format!(
                "at {:.2}s: rights a {:?}; rights b {:?}",
                t.as_secs_f64(),
                regions.rights(0, client),
                regions.rights(1, client)
            ));
        }
    });
    let run = load.finish();
    let lowest: Vec<u64> = (0..2)
        .map(|r| shares.samples.iter().map(|(_, s)| s[r]).min().unwrap_or(0))
        .collect();
    eprintln!(
        "even split: {}; lowest shares {lowest:?}; units moved {}",
        run.summary(2),
        regions.moved(0, client)
    );
    eprintln!("shares (a, b): {}", shares.trace(2));
    eprintln!("a share near the floor {at_floor:?}");
    assert_eq!(run.other(None), 0, "no 5xx\n{}", regions.logs());
    shares.assert_within_whole(&regions);
    for (r, name) in NAMES.iter().enumerate().take(2) {
        assert!(
            lowest[r] >= 250_000,
            "region {name}, with half the requests, fell to a share of {}: {}",
            lowest[r],
            shares.trace(1)
        );
    }
}

/// A one-way cut: region a cannot read b's Redis, b can read a's. All the traffic is in a,
/// so b should give; but a would never merge what b gives (it cannot read b), and those
/// rights would be lost to both until the link heals. b gives nothing while a does not
/// hear it, and gives once it does.
#[test]
fn rights_go_only_to_a_region_that_hears_the_giver() {
    let _turn = turn();
    let regions = Regions::start(2, 0.05);
    let client = "one-way";
    regions.links[0][1].as_ref().unwrap().cut();
    let duration = Duration::from_secs(4);
    let load = start_load(regions.urls(), 4, duration, client, weights(&[1, 0]));
    std::thread::sleep(Duration::from_secs(2));
    let moved_during_cut = regions.moved(1, client);
    let a_share_during_cut = regions.share(0, client);
    regions.links[0][1].as_ref().unwrap().heal();
    let healed = Instant::now();
    let moved_after = wait_for(
        "b to give to a after the heal",
        Duration::from_secs(3),
        || {
            let moved = regions.moved(1, client);
            (moved > 0).then_some(moved)
        },
    );
    let gave_after = healed.elapsed();
    let run = load.finish();
    eprintln!(
        "one-way cut: b gave {moved_during_cut} units while a could not read it (a's share {a_share_during_cut:?}); {moved_after} units {gave_after:?} after the heal; {}",
        run.summary(2)
    );
    assert_eq!(run.other(None), 0, "no 5xx\n{}", regions.logs());
    assert_eq!(
        moved_during_cut,
        0,
        "b gave rights a could not hear of: {:?}\n{}",
        regions.gives(1, client),
        regions.logs()
    );
    assert_eq!(a_share_during_cut, Some(WHOLE / 2));
    assert!(run.ratio() <= 1.0, "admitted/allowed {:.3}", run.ratio());
}
