use super::*;
use crate::config;
use crate::config::PolicyId;

fn limiter(yaml: &str) -> Limiter {
    let text = format!(
        "upstreams:\n  a:\n    backends:\n      - addr: 127.0.0.1:1\nroutes:\n  - upstream: a\nrate_limits:\n{yaml}"
    );
    let cfg = config::parse(&text).unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    Limiter::new(&cfg.rate_limits, metrics)
}

#[tokio::test]
async fn local_mode_is_a_token_bucket_per_key() {
    let l = limiter("  policies:\n    p:\n      rate: 5\n      per: 1m\n");
    assert!(!l.is_distributed());
    for left in (0..5).rev() {
        let d = l.check(PolicyId(0), b"client-a").await;
        assert!(d.allowed);
        assert_eq!(d.remaining, left);
        assert!(!d.fallback());
    }
    let d = l.check(PolicyId(0), b"client-a").await;
    assert!(!d.allowed);
    assert_eq!(ceil_secs(d.retry_after), 12);
    // Another key has its own bucket.
    assert!(l.check(PolicyId(0), b"client-b").await.allowed);
    assert_eq!(l.keys(), 2);
}

#[tokio::test]
async fn headers_follow_the_draft() {
    let l = limiter("  policies:\n    free:\n      rate: 5\n      per: 1m\n      burst: 5\n");
    let p = l.policy(PolicyId(0)).unwrap();
    assert_eq!(p.policy_header, "\"free\";q=5;w=60");
    let d = l.check(PolicyId(0), b"k").await;
    assert_eq!(p.header(&d).unwrap(), "\"free\";r=4;t=12");
    for _ in 0..3 {
        l.check(PolicyId(0), b"k").await;
    }
    // The last token: r=0 and t is when the next one is due, as on the 429 after it.
    let d = l.check(PolicyId(0), b"k").await;
    assert!(d.allowed);
    assert_eq!(p.header(&d).unwrap(), "\"free\";r=0;t=12");
    let d = l.check(PolicyId(0), b"k").await;
    assert!(!d.allowed);
    assert_eq!(p.header(&d).unwrap(), "\"free\";r=0;t=12");
}

#[tokio::test]
async fn full_table_decides_without_state() {
    let l = limiter("  max_keys: 2\n  policies:\n    p:\n      rate: 1\n      per: 1h\n      on_redis_error: closed\n");
    assert!(l.check(PolicyId(0), b"a").await.allowed);
    assert!(l.check(PolicyId(0), b"b").await.allowed);
    let d = l.check(PolicyId(0), b"c").await;
    assert!(
        !d.allowed && d.fallback(),
        "closed policy rejects keys it cannot track"
    );
}

#[tokio::test]
async fn idle_full_buckets_are_evicted() {
    let l = limiter("  policies:\n    p:\n      rate: 10\n      per: 1s\n");
    l.check(PolicyId(0), b"a").await;
    assert_eq!(l.keys(), 1);
    // Not idle long enough.
    l.evict_idle(l.clock.now(), Duration::from_secs(60));
    assert_eq!(l.keys(), 1);
    // Idle and refilled (10/s: full again after 100 ms).
    l.evict_idle(l.clock.now() + 200_000_000_000, Duration::from_secs(60));
    assert_eq!(l.keys(), 0);
}

/// Starts the limiter's sync service; it stops when the returned sender is dropped.
fn run_sync(l: &Arc<Limiter>) -> tokio::sync::watch::Sender<bool> {
    use pingora::services::background::BackgroundService;
    let (stop, watch) = tokio::sync::watch::channel(false);
    let svc = l.service();
    tokio::spawn(async move { svc.start(watch).await });
    stop
}

#[tokio::test]
async fn redis_down_falls_back_per_policy() {
    // Nothing listens on port 1: the sync service finds Redis unreachable, and the
    // waiting request is decided by the fallback.
    let l = Arc::new(limiter(
        "  redis:\n    url: redis://127.0.0.1:1/\n    lease_wait: 5s\n    expected_instances: 2\n  policies:\n    local:\n      rate: 4\n      per: 1m\n    open:\n      rate: 1\n      per: 1h\n      on_redis_error: open\n    closed:\n      rate: 100\n      per: 1s\n      on_redis_error: closed\n",
    ));
    let _sync = run_sync(&l);
    assert!(l.is_distributed());
    let idx = |name: &str| l.policies.iter().position(|p| p.name == name).unwrap();
    // `local` with 2 instances: 2 per instance.
    let a = l.check(PolicyId(idx("local")), b"k").await;
    let b = l.check(PolicyId(idx("local")), b"k").await;
    let c = l.check(PolicyId(idx("local")), b"k").await;
    assert!(
        a.allowed && a.fallback() && b.allowed && !c.allowed && c.fallback(),
        "{a:?} {b:?} {c:?}"
    );
    for _ in 0..3 {
        let d = l.check(PolicyId(idx("open")), b"k").await;
        assert!(d.allowed && d.fallback());
    }
    let d = l.check(PolicyId(idx("closed")), b"k").await;
    assert!(!d.allowed && d.fallback());
}

#[tokio::test]
async fn a_slow_redis_is_never_a_reason_to_admit() {
    // A "Redis" that accepts connections and never answers: reachable as far as anyone
    // knows when lease_wait runs out. The answer is 429 "no lease", not a local guess,
    // whatever on_redis_error says.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let l = Arc::new(limiter(&format!(
        "  redis:\n    url: redis://127.0.0.1:{port}/\n    lease_wait: 30ms\n    expected_instances: 1\n    connect_timeout: 5s\n    command_timeout: 5s\n  policies:\n    open:\n      rate: 100\n      per: 1s\n      on_redis_error: open\n"
    )));
    let _sync = run_sync(&l);
    let started = std::time::Instant::now();
    let d = l.check(PolicyId(0), b"k").await;
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.reason, Reason::NoLease);
    assert!(!d.fallback());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited at most lease_wait"
    );
    held.abort();
}

#[tokio::test]
async fn keys_past_a_full_table_share_one_bucket() {
    // A flood of new keys (one per request) past max_keys is limited as one client, not
    // admitted wholesale.
    let l = limiter(
        "  max_keys: 2\n  policies:\n    p:\n      rate: 1\n      per: 1h\n      burst: 3\n",
    );
    assert!(l.check(PolicyId(0), b"a").await.allowed);
    assert!(l.check(PolicyId(0), b"b").await.allowed);
    let untracked: Vec<Decision> = untracked_checks(&l).await;
    let admitted = untracked.iter().filter(|d| d.allowed).count();
    assert!(untracked.iter().all(|d| d.reason == Reason::Untracked));
    assert_eq!(admitted, 3, "the overflow bucket's burst, then 429s");
}

/// Ten checks of ten keys the full table cannot hold.
async fn untracked_checks(l: &Limiter) -> Vec<Decision> {
    let mut out = Vec::new();
    for i in 0..10u8 {
        out.push(l.check(PolicyId(0), &[b'k', i]).await);
    }
    out
}
