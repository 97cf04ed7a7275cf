//! The limiter's request-path decision, measured: a key with a live lease (one thread and
//! contended), the local bucket (no Redis), and a key with no lease.

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config;
use gateway::observability::Metrics;
use gateway::ratelimit::{Decision, Limiter};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// The one policy of the benches.
const P: config::PolicyId = config::PolicyId(0);

fn limiter(rate_limits: &str) -> Arc<Limiter> {
    limiter_with(rate_limits, |_| {})
}

/// A limiter whose Redis settings are then set beyond what a config file may say.
fn limiter_with(rate_limits: &str, beyond: impl FnOnce(&mut config::RedisConfig)) -> Arc<Limiter> {
    let text = format!(
        "upstreams:\n  a:\n    backends:\n      - addr: 127.0.0.1:1\nroutes:\n  - upstream: a\nrate_limits:\n{rate_limits}"
    );
    let mut cfg = match config::parse(&text) {
        Ok(c) => c,
        Err(p) => panic!("bench config: {p:?}"),
    };
    if let Some(redis) = cfg.rate_limits.redis.as_mut() {
        beyond(redis);
    }
    let metrics = match Metrics::new() {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("{e}"),
    };
    Arc::new(Limiter::new(&cfg.rate_limits, metrics))
}

/// Polls a future once: the fast paths complete without ever waiting.
fn ready<F: Future<Output = Decision>>(f: F) -> Decision {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(d) => d,
        Poll::Pending => panic!("the decision waited"),
    }
}

/// Makes `key` known to the limiter (its first request takes the slow path), and checks
/// that the request path then decides it without waiting.
fn known(l: &Limiter, key: &[u8]) {
    assert!(ready(l.check(P, key)).allowed);
    assert!(
        l.try_check(P, key).is_some_and(|d| d.allowed),
        "not on the request path"
    );
}

/// A distributed limiter whose keys start with a lease of a trillion tokens (the cold-start
/// allowance, set past the config's own bound below), so every check is the hot path: a
/// lookup and one CAS on the lease.
const LEASED: &str = "  redis:
    url: redis://127.0.0.1:1/
    expected_instances: 1
    cold_start: allowance
  policies:
    p:
      rate: 1000000
      per: 1s
";

fn leased() -> Arc<Limiter> {
    limiter_with(LEASED, |r| r.cold_start_allowance = 1_000_000_000_000)
}

fn benches(c: &mut Criterion) {
    let l = leased();
    let key = [10u8, 1, 2, 3];
    known(&l, &key);
    c.bench_function(
        "ratelimit/try_check (request path), live lease, 1 thread",
        |b| b.iter(|| black_box(l.try_check(P, black_box(&key)))),
    );
    c.bench_function(
        "ratelimit/check (async wrapper), live lease, 1 thread",
        |b| b.iter(|| black_box(ready(l.check(P, black_box(&key))))),
    );

    for threads in [2usize, 4] {
        let l = leased();
        known(&l, &key);
        c.bench_function(
            &format!("ratelimit/try_check, live lease, one key, {threads} threads"),
            |b| {
                b.iter_custom(|iters| {
                    let per = iters / threads as u64 + 1;
                    let started = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let l = &l;
                            s.spawn(move || {
                                for _ in 0..per {
                                    black_box(l.try_check(P, black_box(&key)));
                                }
                            });
                        }
                    });
                    // Time per decision, all threads together.
                    started.elapsed() / threads as u32
                })
            },
        );
    }

    let local = limiter("  policies:\n    p:\n      rate: 1000000000\n      per: 1s\n");
    known(&local, &key);
    c.bench_function(
        "ratelimit/try_check, local bucket (no Redis), 1 thread",
        |b| b.iter(|| black_box(local.try_check(P, black_box(&key)))),
    );

    // As the keys grow: the local bucket's decision among 1,000 and 1,000,000 tracked keys
    // (each request a different key, in a shuffled order: the table's cache misses), and
    // the memory each tracked key costs (RSS growth while filling, printed).
    for n in [1_000u32, 1_000_000] {
        let many = limiter(&format!(
            "  max_keys: {n}\n  policies:\n    p:\n      rate: 1000000000\n      per: 1s\n"
        ));
        let before = rss_bytes();
        let keys: Vec<[u8; 4]> = (0..n)
            .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes())
            .collect();
        for k in &keys {
            ready(many.check(P, k));
        }
        let grown = rss_bytes().saturating_sub(before);
        eprintln!(
            "ratelimit: {} keys tracked, RSS grew {:.1} MiB: {:.0} bytes per key (the key list itself: 4 bytes per key)",
            many.keys(),
            grown as f64 / (1 << 20) as f64,
            grown as f64 / f64::from(n)
        );
        let mut i = 0usize;
        c.bench_function(
            &format!("ratelimit/try_check, local, {n} keys tracked"),
            |b| {
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    black_box(many.try_check(P, black_box(&keys[i])))
                })
            },
        );
    }

    // A key with no lease and no answer from Redis: it waits at most lease_wait (0 here,
    // below the config's 1ms minimum), then the `local` fallback decides. Needs a runtime
    // for the timer.
    let cold = limiter_with(
        "  redis:\n    url: redis://127.0.0.1:1/\n    expected_instances: 1\n  policies:\n    p:\n      rate: 1000000000\n      per: 1s\n",
        |r| r.lease_wait = std::time::Duration::ZERO,
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    c.bench_function(
        "ratelimit/check, key with no lease (fallback), 1 thread",
        |b| b.iter(|| black_box(rt.block_on(cold.check(P, black_box(&key))))),
    );
}

/// The process's resident memory (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

criterion_group!(ratelimit, benches);
criterion_main!(ratelimit);
