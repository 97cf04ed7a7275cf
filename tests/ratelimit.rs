//! Rate limiting end to end: real gateway processes, a real upstream, real redis-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::relay::DelayRelay;
use common::{get, wait_for, Gateway, RedisServer, Upstream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(up: &Upstream, policies: &str, redis: Option<&str>, extra: &str) -> String {
    let redis = redis.map_or(String::new(), |r| format!("  redis:\n{r}"));
    format!(
        "upstreams:\n  app:\n    backends:\n      - addr: {}\nroutes:\n  - name: api\n    path_prefix: /\n    upstream: app\n    rate_limit: p\nping:\n  rate_limit: p\nrate_limits:\n{redis}  policies:\n{policies}{extra}",
        up.addr()
    )
}

/// A `redis:` section on `r`; one instance unless `extra` says otherwise.
fn redis_section(r: &RedisServer, extra: &str) -> String {
    let instances = if extra.contains("expected_instances") {
        ""
    } else {
        "    expected_instances: 1\n"
    };
    format!(
        "    url: {}\n    sync_interval: 5ms\n{instances}{extra}",
        r.url()
    )
}

/// The original gateway's quick start: 5 quick requests pass, the 6th gets 429 with the
/// draft-11 headers; once a token accrues the client is allowed again.
fn quick_start(gw: &Gateway) {
    for left in (0..5).rev() {
        let r = get(&gw.url("/ping"), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("ratelimit-policy"), Some("\"p\";q=5;w=2"));
        let rl = r.header("ratelimit").unwrap_or_default().to_string();
        assert!(rl.starts_with(&format!("\"p\";r={left};t=")), "{rl}");
    }
    let r = get(&gw.url("/ping"), &[("X-Request-ID", "limited-1")]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        r.header("retry-after"),
        Some("1"),
        "5 per 2 s: a token every 400 ms"
    );
    assert_eq!(r.header("ratelimit"), Some("\"p\";r=0;t=1"));
    assert_eq!(r.header("ratelimit-policy"), Some("\"p\";q=5;w=2"));
    let body = r.json();
    assert_eq!(body["error"], "rate limit exceeded");
    assert_eq!(body["request_id"], "limited-1");
    assert_eq!(body["retry_after"], 1);
    wait_for("a token to accrue", Duration::from_secs(5), || {
        (get(&gw.url("/ping"), &[]).status == 200).then_some(())
    });
}

const QUICK: &str = "    p:\n      rate: 5\n      per: 2s\n      burst: 5\n";

#[test]
fn quick_start_without_redis() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, QUICK, None, ""));
    quick_start(&gw);
    assert!(
        gw.stderr()
            .contains("limits are enforced by this instance alone"),
        "{}",
        gw.stderr()
    );
    assert!(
        gw.metric_sum(
            "gateway_ratelimit_decisions_total",
            &["outcome=\"limited\"", "policy=\"p\""]
        ) >= 1.0
    );
}

#[test]
fn quick_start_through_redis() {
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let gw = Gateway::start(&config(&up, QUICK, Some(&redis_section(&redis, "")), ""));
    quick_start(&gw);
    assert_eq!(
        gw.metric_sum(
            "gateway_ratelimit_decisions_total",
            &["outcome=\"fallback\"", "policy=\"p\""]
        ),
        0.0
    );
    assert!(redis.calls("evalsha") >= 1);
}

#[test]
fn the_shipped_default_config_limits_ping_at_five_per_minute() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/gateway.yaml")).unwrap();
    let gw = Gateway::start_with(|port, admin| {
        text.replace("0.0.0.0:8000", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:9100", &format!("127.0.0.1:{admin}"))
            .replace("destination: stdout", "destination: /dev/null")
    });
    let url = gw.url("/ping");
    let statuses: Vec<u16> = (0..6).map(|_| get(&url, &[]).status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    let r = get(&url, &[]);
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"quickstart\";q=5;w=60")
    );
    assert_eq!(r.header("retry-after"), Some("12"));
}

#[test]
fn x_forwarded_for_counts_only_from_trusted_proxies() {
    let up = Upstream::start("app");
    let policy = "    p:\n      rate: 1\n      per: 1h\n";
    // The test client (127.0.0.1) is not trusted: the header is ignored, one bucket for all.
    let gw = Gateway::start(&config(
        &up,
        policy,
        None,
        "trusted_proxies: [10.0.0.0/8]\n",
    ));
    assert_eq!(
        get(&gw.url("/"), &[("X-Forwarded-For", "1.1.1.1")]).status,
        200
    );
    assert_eq!(
        get(&gw.url("/"), &[("X-Forwarded-For", "2.2.2.2")]).status,
        429,
        "spoofed header changed the key"
    );
    // Trusted: each forwarded client has its own bucket; the left-most (client-written) hop is ignored.
    let gw = Gateway::start(&config(
        &up,
        policy,
        None,
        "trusted_proxies: [127.0.0.1/32]\n",
    ));
    assert_eq!(
        get(&gw.url("/"), &[("X-Forwarded-For", "1.1.1.1")]).status,
        200
    );
    assert_eq!(
        get(&gw.url("/"), &[("X-Forwarded-For", "2.2.2.2")]).status,
        200
    );
    assert_eq!(
        get(&gw.url("/"), &[("X-Forwarded-For", "9.9.9.9, 1.1.1.1")]).status,
        429
    );
    let lines = wait_for("access log", Duration::from_secs(5), || {
        let l = gw.access_lines();
        (l.len() >= 3).then_some(l)
    });
    assert_eq!(lines[1]["client_ip"], "2.2.2.2");
}

#[test]
fn flood_on_an_exhausted_key_costs_redis_almost_nothing() {
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let policy = "    p:\n      rate: 1\n      per: 1h\n      key: header:X-Client\n";
    let gw = Gateway::start(&config(&up, policy, Some(&redis_section(&redis, "")), ""));
    assert_eq!(get(&gw.url("/"), &[("X-Client", "flooder")]).status, 200);
    let before = redis.calls("evalsha");
    let started = Instant::now();
    let mut limited = 0;
    for _ in 0..300 {
        if get(&gw.url("/"), &[("X-Client", "flooder")]).status == 429 {
            limited += 1;
        }
    }
    let elapsed = started.elapsed();
    let spent = redis.calls("evalsha") - before;
    assert_eq!(limited, 300);
    // "Empty until T" (here an hour away) is remembered locally: no round trip per request.
    assert!(
        spent <= 2,
        "{spent} EVALSHA calls for 300 rejected requests in {elapsed:?}"
    );
}

/// What a [`hammer`] run saw.
struct Load {
    ok: usize,
    limited: usize,
    other: usize,
    elapsed: Duration,
    /// Every request's latency, sorted.
    latencies: Vec<Duration>,
}

impl Load {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

/// Load tests take turns: on a small machine two at once would measure each other.
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Requests spread over several gateways as fast as `threads` clients can send them.
fn hammer(urls: &[String], threads: usize, duration: Duration, header: (&str, &str)) -> Load {
    let _turn = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let urls = urls.to_vec();
            let (k, v) = (header.0.to_string(), header.1.to_string());
            std::thread::spawn(move || {
                let (mut counts, mut latencies) = ([0usize; 3], Vec::new());
                let mut i = t;
                while started.elapsed() < duration {
                    let sent = Instant::now();
                    let r = get(&urls[i % urls.len()], &[(&k, &v)]);
                    latencies.push(sent.elapsed());
                    counts[match r.status {
                        200 => 0,
                        429 => 1,
                        _ => 2,
                    }] += 1;
                    i += 1;
                }
                (counts, latencies)
            })
        })
        .collect();
    let mut load = Load {
        ok: 0,
        limited: 0,
        other: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for h in handles {
        let (c, l) = h.join().unwrap();
        (load.ok, load.limited, load.other) =
            (load.ok + c[0], load.limited + c[1], load.other + c[2]);
        load.latencies.extend(l);
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    load
}

#[test]
fn four_instances_share_one_bucket_exactly() {
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    // 100 per second, burst 20: over ~4 s about 420 may pass, whatever the instance count.
    let policy =
        "    p:\n      rate: 100\n      per: 1s\n      burst: 20\n      key: header:X-Client\n";
    // A generous lease_wait: on a loaded 2-core CI machine a debug build's round trip can
    // take over the default 100 ms, and this test is about exactness, not the fallback.
    let section = redis_section(&redis, "    expected_instances: 4\n    lease_wait: 2s\n");
    let gws: Vec<Gateway> = (0..4)
        .map(|_| Gateway::start(&config(&up, policy, Some(&section), "")))
        .collect();
    let urls: Vec<String> = gws.iter().map(|g| g.url("/")).collect();
    let Load {
        ok,
        limited,
        other,
        elapsed,
        ..
    } = hammer(&urls, 8, Duration::from_secs(4), ("X-Client", "hot"));
    let allowed = 20.0 + 100.0 * elapsed.as_secs_f64();
    let ratio = ok as f64 / allowed;
    eprintln!("four instances: admitted {ok}, limited {limited}, other {other}, in {elapsed:?}; allowed {allowed:.0}; admitted/allowed {ratio:.3}");
    assert_eq!(other, 0);
    assert!(
        limited > ok,
        "the load must exceed the limit for this test to mean anything"
    );
    assert!(ratio <= 1.0, "over-admission: {ok} > {allowed:.0}");
    assert!(ratio >= 0.95, "under-admission: {ratio:.3}");
    for g in &gws {
        assert!(
            g.metric_sum(
                "gateway_ratelimit_decisions_total",
                &["outcome=\"allowed\"", "policy=\"p\""]
            ) > 0.0,
            "every instance admitted some"
        );
        assert_eq!(
            g.metric_sum(
                "gateway_ratelimit_decisions_total",
                &["outcome=\"fallback\"", "policy=\"p\""]
            ),
            0.0
        );
    }
}

#[test]
fn redis_dying_mid_load_causes_no_5xx_and_recovers_by_itself() {
    let up = Upstream::start("app");
    let mut redis = RedisServer::start();
    let policy = "    p:\n      rate: 1000\n      per: 1s\n      key: header:X-Client\n";
    let gw = Gateway::start(&config(
        &up,
        policy,
        Some(&redis_section(&redis, "    lease_wait: 50ms\n")),
        "",
    ));
    let url = gw.url("/");
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, counts, url) = (stop.clone(), counts.clone(), url.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = get(&url, &[("X-Client", "steady")]).status;
                    let i = match s {
                        200 => 0,
                        429 => 1,
                        _ => 2,
                    };
                    counts[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let decisions = "gateway_ratelimit_decisions_total";
    let allowed: &[&str] = &["outcome=\"allowed\"", "policy=\"p\""];
    let fallback: &[&str] = &["outcome=\"fallback\"", "policy=\"p\""];
    wait_for("leased decisions", Duration::from_secs(10), || {
        (gw.metric_sum(decisions, allowed) > 50.0).then_some(())
    });
    redis.kill();
    wait_for("fallback decisions", Duration::from_secs(10), || {
        (gw.metric_sum(decisions, fallback) > 50.0).then_some(())
    });
    assert!(gw.metric("gateway_ratelimit_redis_errors_total") >= 1.0);
    redis.restart();
    let before = gw.metric_sum(decisions, allowed);
    wait_for("leases to resume", Duration::from_secs(10), || {
        (gw.metric_sum(decisions, allowed) > before + 50.0).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    assert_eq!(
        counts[2].load(Ordering::Relaxed),
        0,
        "a 5xx (or other error) reached a client"
    );
    assert!(redis.calls("evalsha") >= 1, "the new server is used");
    assert!(
        gw.stderr().contains("Redis is reachable again"),
        "{}",
        gw.stderr()
    );
}

/// Two gateways share one key through a Redis `one_way` away (a relay that delays every
/// byte). Only what Redis granted is ever spent, so admitted/allowed stays at most 1 at any
/// distance; leases sized from the measured round trip keep the key fed.
fn exact_at_a_distance(one_way: Duration) {
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let relay = DelayRelay::start(format!("127.0.0.1:{}", redis.port), one_way);
    let policy =
        "    p:\n      rate: 100\n      per: 1s\n      burst: 20\n      key: header:X-Client\n";
    let section = format!(
        "    url: redis://127.0.0.1:{}/\n    sync_interval: 5ms\n    expected_instances: 2\n    lease_wait: 1s\n    command_timeout: 2s\n    connect_timeout: 2s\n",
        relay.port
    );
    let gws: Vec<Gateway> = (0..2)
        .map(|_| Gateway::start(&config(&up, policy, Some(&section), "")))
        .collect();
    let urls: Vec<String> = gws.iter().map(|g| g.url("/")).collect();
    let load = hammer(&urls, 16, Duration::from_secs(4), ("X-Client", "far"));
    let allowed = 20.0 + 100.0 * load.elapsed.as_secs_f64();
    let ratio = load.ok as f64 / allowed;
    let decisions = "gateway_ratelimit_decisions_total";
    let fallbacks: f64 = gws
        .iter()
        .map(|g| g.metric_sum(decisions, &["outcome=\"fallback\""]))
        .sum();
    let by_reason = |r: &str| -> f64 {
        gws.iter()
            .map(|g| g.metric_sum(decisions, &[&format!("reason=\"{r}\"")]))
            .sum()
    };
    let (lease, empty, no_lease) = (
        by_reason("lease"),
        by_reason("empty"),
        by_reason("no_lease"),
    );
    eprintln!(
        "{one_way:?} one way: admitted {}, limited {}, other {}, in {:?}; allowed {allowed:.0}; admitted/allowed {ratio:.3}; fallback {fallbacks}, lease {lease}, empty {empty}, no_lease {no_lease}; latency p50 {:?} p99 {:?}",
        load.ok, load.limited, load.other, load.elapsed, load.percentile(0.5), load.percentile(0.99)
    );
    assert_eq!(load.other, 0, "no 5xx");
    assert!(
        (load.ok + load.limited) as f64 > 1.5 * allowed,
        "the load must exceed the limit"
    );
    assert!(ratio <= 1.0, "over-admission at {one_way:?}: {ratio:.3}");
    assert_eq!(fallbacks, 0.0, "Redis was reachable throughout");
}

#[test]
fn exact_with_redis_nearby() {
    exact_at_a_distance(Duration::ZERO);
}

#[test]
fn exact_with_redis_25ms_away() {
    exact_at_a_distance(Duration::from_millis(25));
}

#[test]
fn exact_with_redis_50ms_away() {
    exact_at_a_distance(Duration::from_millis(50));
}

#[test]
fn a_redis_that_lost_its_data_hands_out_no_fresh_burst() {
    // Redis restarted without persistence, was flushed, or failed over to a replica that
    // had not seen the bucket: the key is missing. It is recreated from what this gateway
    // last saw of it, not full.
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let policy =
        "    p:\n      rate: 1\n      per: 1m\n      burst: 5\n      key: header:X-Client\n";
    let gw = Gateway::start(&config(
        &up,
        policy,
        Some(&redis_section(&redis, "    lease_wait: 2s\n")),
        "",
    ));
    let url = gw.url("/");
    let send = |n: usize| -> Vec<u16> {
        (0..n)
            .map(|_| get(&url, &[("X-Client", "spent")]).status)
            .collect()
    };
    assert_eq!(send(3), [200, 200, 200]);
    assert!(redis.command("FLUSHALL").contains("OK"));
    let after = send(5);
    let admitted = after.iter().filter(|s| **s == 200).count();
    assert!(after.iter().all(|s| *s == 200 || *s == 429), "{after:?}");
    assert_eq!(
        admitted, 2,
        "5 in the burst, 3 spent before the loss: 2 left, not a fresh 5 ({after:?})"
    );
}

#[test]
fn what_was_admitted_during_an_outage_is_charged_to_redis_afterwards() {
    // The link to Redis is cut for a while: the local fallback admits at the policy's rate
    // meanwhile, and Redis's bucket (which kept its data) refills all the same. Without the
    // charge, both would be spent: burst + 2 x rate x outage. With it, over the whole run
    // admitted <= burst + rate x elapsed.
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let relay = DelayRelay::start(format!("127.0.0.1:{}", redis.port), Duration::ZERO);
    let policy =
        "    p:\n      rate: 20\n      per: 1s\n      burst: 10\n      key: header:X-Client\n";
    let section = format!(
        "    url: redis://127.0.0.1:{}/\n    sync_interval: 5ms\n    expected_instances: 1\n    lease_wait: 1s\n    command_timeout: 200ms\n    connect_timeout: 200ms\n",
        relay.port
    );
    let gw = Gateway::start(&config(&up, policy, Some(&section), ""));
    let url = gw.url("/");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let admitted = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, admitted, other, url) =
                (stop.clone(), admitted.clone(), other.clone(), url.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(&url, &[("X-Client", "steady")]).status {
                        200 => admitted.fetch_add(1, Ordering::Relaxed),
                        429 => 0,
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    relay.cut();
    let decisions = "gateway_ratelimit_decisions_total";
    wait_for("fallback decisions", Duration::from_secs(10), || {
        (gw.metric_sum(decisions, &["outcome=\"fallback\""]) > 0.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    relay.heal();
    wait_for("leases to resume", Duration::from_secs(10), || {
        gw.stderr()
            .contains("Redis is reachable again")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for h in load {
        h.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 10.0 + 20.0 * elapsed;
    let ok = admitted.load(Ordering::Relaxed) as f64;
    eprintln!(
        "outage: admitted {ok} in {elapsed:.2}s, allowed {allowed:.0}, admitted/allowed {:.3}",
        ok / allowed
    );
    assert_eq!(other.load(Ordering::Relaxed), 0, "no 5xx");
    assert!(
        gw.metric_sum(decisions, &["outcome=\"fallback\""]) > 0.0,
        "the outage was decided by the fallback"
    );
    assert!(
        ok <= allowed,
        "over-admission across the outage: {ok} > {allowed:.0}"
    );
}

#[test]
fn one_broken_bucket_key_does_not_take_the_others_down() {
    // A bucket key someone overwrote with a string: Redis refuses the script for that key
    // (WRONGTYPE). The other keys in the same round trips keep their leases; nothing falls
    // back, since Redis answers.
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let policy = "    p:\n      rate: 1000\n      per: 1s\n      key: header:X-Client\n";
    let gw = Gateway::start(&config(
        &up,
        policy,
        Some(&redis_section(&redis, "    lease_wait: 200ms\n")),
        "",
    ));
    assert!(redis.command("SET gw:rl:p:h:broken oops").contains("OK"));
    let url = gw.url("/");
    let broken = {
        let url = url.clone();
        std::thread::spawn(move || {
            (0..20)
                .map(|_| get(&url, &[("X-Client", "broken")]).status)
                .collect::<Vec<u16>>()
        })
    };
    let good: Vec<u16> = (0..200)
        .map(|_| get(&url, &[("X-Client", "good")]).status)
        .collect();
    let broken = broken.join().unwrap();
    assert!(good.iter().all(|s| *s == 200), "{good:?}");
    assert!(broken.iter().all(|s| *s == 429), "{broken:?}");
    let decisions = "gateway_ratelimit_decisions_total";
    assert_eq!(gw.metric_sum(decisions, &["outcome=\"fallback\""]), 0.0);
    assert!(gw.metric_sum(decisions, &["outcome=\"limited\""]) >= 20.0);
    assert!(
        gw.stderr().contains("Redis refused the bucket"),
        "{}",
        gw.stderr()
    );
}

#[test]
fn a_client_that_honours_retry_after_gets_its_token() {
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let gw = Gateway::start(&config(&up, QUICK, Some(&redis_section(&redis, "")), ""));
    let url = gw.url("/ping");
    let first: Vec<u16> = (0..6).map(|_| get(&url, &[]).status).collect();
    assert_eq!(first, [200, 200, 200, 200, 200, 429]);
    let r = get(&url, &[]);
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(50));
    let r = get(&url, &[]);
    assert_eq!(
        r.status, 200,
        "refused after waiting Retry-After: {}",
        r.body
    );
}

#[test]
fn a_redis_that_refuses_writes_counts_as_unreachable() {
    // A primary demoted to a replica answers every script with READONLY: that is Redis
    // refusing the work, so the policy's on_redis_error decides (not 429 for everyone).
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let policy = "    p:\n      rate: 1000\n      per: 1s\n      key: header:X-Client\n";
    let gw = Gateway::start(&config(&up, policy, Some(&redis_section(&redis, "")), ""));
    let url = gw.url("/");
    assert_eq!(get(&url, &[("X-Client", "a")]).status, 200);
    assert!(redis.command("REPLICAOF 127.0.0.1 1").contains("OK"));
    let statuses: Vec<u16> = (0..20)
        .map(|i| get(&url, &[("X-Client", &format!("k{i}"))]).status)
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let decisions = "gateway_ratelimit_decisions_total";
    assert!(gw.metric_sum(decisions, &["reason=\"redis_unreachable\""]) >= 1.0);
    assert!(
        redis.calls("evalsha") < 200,
        "no spinning: {} EVALSHA",
        redis.calls("evalsha")
    );
}

#[test]
fn an_open_policy_is_not_locked_out_after_an_outage() {
    // `open` admits everything while Redis is away; that is not charged afterwards, so the
    // key is back at its rate soon after the link heals.
    let up = Upstream::start("app");
    let redis = RedisServer::start();
    let relay = DelayRelay::start(format!("127.0.0.1:{}", redis.port), Duration::ZERO);
    let policy = "    p:\n      rate: 4\n      per: 1s\n      burst: 8\n      key: header:X-Client\n      on_redis_error: open\n";
    let section = format!(
        "    url: redis://127.0.0.1:{}/\n    sync_interval: 5ms\n    expected_instances: 1\n    lease_wait: 1s\n    command_timeout: 200ms\n    connect_timeout: 200ms\n",
        relay.port
    );
    let gw = Gateway::start(&config(&up, policy, Some(&section), ""));
    let url = gw.url("/");
    let send = |until: Duration| -> usize {
        let t = Instant::now();
        let mut ok = 0;
        while t.elapsed() < until {
            ok += usize::from(get(&url, &[("X-Client", "steady")]).status == 200);
            std::thread::sleep(Duration::from_millis(20));
        }
        ok
    };
    send(Duration::from_secs(1));
    relay.cut();
    send(Duration::from_secs(3));
    relay.heal();
    wait_for("leases to resume", Duration::from_secs(10), || {
        gw.stderr()
            .contains("Redis is reachable again")
            .then_some(())
    });
    send(Duration::from_secs(1));
    let admitted = send(Duration::from_secs(4));
    assert!(
        admitted >= 8,
        "4/s for 4 s after the outage, got {admitted}"
    );
}
