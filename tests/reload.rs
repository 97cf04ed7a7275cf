//! Config reload on SIGHUP, end to end: under steady load no request is lost, a broken file
//! changes nothing, a change that needs a restart is refused, unchanged pools keep their state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, wait_for, Gateway, RedisServer, Upstream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn routes(a: &Upstream, b: Option<&Upstream>) -> String {
    let mut yaml = format!(
        "upstreams:
  a:
    backends:
      - addr: {}
",
        a.addr()
    );
    if let Some(b) = b {
        yaml += &format!("  b:\n    backends:\n      - addr: {}\n", b.addr());
    }
    yaml += "routes:\n  - name: a\n    path_prefix: /a\n    upstream: a\n";
    if b.is_some() {
        yaml += "  - name: b\n    path_prefix: /b\n    upstream: b\n";
    }
    yaml
}

/// Requests on `/a` from `threads` keep-alive clients until stopped: (statuses seen, errors).
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<u16>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, done, seen, url) =
                    (stop.clone(), done.clone(), seen.clone(), url.clone());
                std::thread::spawn(move || {
                    let agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .new_agent();
                    while !stop.load(Ordering::Relaxed) {
                        // 0: the request failed without a response.
                        let status = agent.get(&url).call().map_or(0, |r| r.status().as_u16());
                        seen.lock().unwrap().push(status);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            done,
            seen,
            threads,
        }
    }

    /// Waits until `n` more requests have completed.
    fn run_for(&self, n: usize) {
        let target = self.done.load(Ordering::Relaxed) + n;
        wait_for("load to make progress", Duration::from_secs(30), || {
            (self.done.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let seen = self.seen.lock().unwrap();
        seen.clone()
    }
}

#[test]
fn a_reload_under_load_loses_no_request() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let mut gw = Gateway::start(&routes(&a, None));
    let hash_before = gw.admin("/metrics").body;
    assert_eq!(get(&gw.url("/b"), &[]).status, 404);
    let load = Load::start(gw.url("/a"), 2);
    load.run_for(100);

    // Add a pool and a route.
    gw.reload(&routes(&a, Some(&b)));
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"applied\"}"),
        1.0
    );
    let r = get(&gw.url("/b/x"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["upstream"], "b");
    load.run_for(100);

    // And drop them again.
    gw.reload(&routes(&a, None));
    assert_eq!(get(&gw.url("/b/x"), &[]).status, 404);
    load.run_for(100);

    let seen = load.finish();
    let bad: Vec<_> = seen.iter().filter(|s| **s != 200).collect();
    assert!(
        bad.is_empty(),
        "{} of {} requests failed: {bad:?}",
        bad.len(),
        seen.len()
    );
    assert!(gw.is_running(), "SIGHUP must not stop the gateway");
    // The config hash follows the file.
    let info = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("gateway_config_info{"))
            .map(str::to_string)
    };
    let (before, after) = (info(&hash_before), info(&gw.admin("/metrics").body));
    assert!(before.is_some() && after.is_some());
    assert_eq!(before, after, "the same file again: the same hash");
    gw.reload(&routes(&a, Some(&b)));
    assert_ne!(info(&gw.admin("/metrics").body), before);
    // Route metrics follow the config too.
    get(&gw.url("/b"), &[]);
    assert!(gw.metric("gateway_requests_total{route=\"b\",status=\"200\"}") >= 1.0);
}

#[test]
fn a_broken_file_changes_nothing() {
    let a = Upstream::start("a");
    let mut gw = Gateway::start(&routes(&a, None));
    gw.reload("upstreams:\n  a:\n    backends: []\nroutes:\n  - path_prefix: /a\n    upstream: nope\n    retries: 99\n");
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"invalid\"}"),
        1.0
    );
    assert!(gw.is_running());
    assert_eq!(get(&gw.url("/a"), &[]).status, 200, "the old config serves");
    let err = gw.stderr();
    for problem in [
        "upstreams.a.backends: at least one backend is required",
        "routes[0].upstream: no pool named \"nope\"",
        "routes[0].retries: must be at most 5",
    ] {
        assert!(err.contains(problem), "missing {problem:?} in:\n{err}");
    }
    assert!(err.contains("the old config stays in force"), "{err}");

    // Not YAML at all.
    gw.reload("routes: [\n");
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"invalid\"}"),
        2.0
    );
    assert_eq!(get(&gw.url("/a"), &[]).status, 200);
}

#[test]
fn a_change_that_needs_a_restart_is_refused() {
    let a = Upstream::start("a");
    let gw = Gateway::start(&routes(&a, None));
    // A Redis section and a changed route in one file: all or nothing.
    let yaml = format!(
        "{}rate_limits:\n  redis:\n    url: redis://127.0.0.1:1/\n    expected_instances: 2\n  policies:\n    p:\n      rate: 1\n      per: 1m\n",
        routes(&a, None).replace("upstream: a\n", "upstream: a\n    rate_limit: p\n")
    );
    gw.reload(&yaml);
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"refused\"}"),
        1.0
    );
    let err = gw.stderr();
    assert!(err.contains("rate_limits.redis"), "{err}");
    assert!(err.contains("-u"), "names the upgrade path: {err}");
    for _ in 0..3 {
        assert_eq!(
            get(&gw.url("/a"), &[]).status,
            200,
            "the limit was not applied"
        );
    }
}

#[test]
fn policies_change_on_reload_and_unchanged_ones_keep_their_buckets() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let limits = |extra: &str| {
        format!("rate_limits:\n  policies:\n    keep:\n      rate: 3\n      per: 1h\n{extra}")
    };
    let with_policy = |yaml: String, route: &str, policy: &str| {
        yaml.replace(
            &format!("path_prefix: /{route}\n    upstream: {route}\n"),
            &format!("path_prefix: /{route}\n    upstream: {route}\n    rate_limit: {policy}\n"),
        )
    };
    let first = format!(
        "{}{}",
        with_policy(routes(&a, Some(&b)), "a", "keep"),
        limits("")
    );
    let gw = Gateway::start(&first);
    let statuses = |path: &str, n: usize| -> Vec<u16> {
        (0..n).map(|_| get(&gw.url(path), &[]).status).collect()
    };
    assert_eq!(statuses("/a", 2), vec![200, 200], "2 of the 3 tokens spent");
    assert_eq!(statuses("/b", 3), vec![200, 200, 200], "no limit on /b yet");

    // A new policy on /b; `keep` unchanged (its bucket must not be refilled by the reload).
    let second = format!(
        "{}{}",
        with_policy(with_policy(routes(&a, Some(&b)), "a", "keep"), "b", "new"),
        limits("    new:\n      rate: 1\n      per: 1h\n")
    );
    gw.reload(&second);
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"applied\"}"),
        1.0
    );
    assert_eq!(statuses("/a", 2), vec![200, 429], "one token was left of 3");
    assert_eq!(statuses("/b", 2), vec![200, 429], "the new policy applies");
    assert!(
        gw.metric_sum(
            "gateway_ratelimit_decisions_total",
            &["outcome=\"limited\"", "policy=\"new\""]
        ) >= 1.0
    );

    // Changing `keep` gives it a fresh bucket of the new size.
    let third = second.replace("rate: 3\n", "rate: 5\n");
    gw.reload(&third);
    assert_eq!(statuses("/a", 6), vec![200, 200, 200, 200, 200, 429]);
}

#[test]
fn an_unchanged_pool_keeps_its_breakers_and_a_new_one_gets_health_checks() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let yaml = |with_b: bool| {
        let mut y = format!(
            "upstreams:
  a:
    backends:
      - addr: {}
    circuit_breaker:
      consecutive_failures: 2
      open_duration: 30s
      max_open_duration: 60s
",
            a.addr()
        );
        if with_b {
            y += &format!(
                "  b:
    backends:
      - addr: {}
    health_check:
      type: http
      path: /healthz
      interval: 200ms
",
                b.addr()
            );
        }
        y += "routes:\n  - name: a\n    path_prefix: /a\n    upstream: a\n    retries: 0\n";
        if with_b {
            y += "  - name: b\n    path_prefix: /b\n    upstream: b\n";
        }
        y
    };
    let gw = Gateway::start(&yaml(false));
    a.set_status(500);
    wait_for("a's breaker to open", Duration::from_secs(10), || {
        (get(&gw.url("/a"), &[]).status == 503).then_some(())
    });
    let proxied = a.requests();
    gw.reload(&yaml(true));
    // A rebuilt pool would have a closed breaker and proxy the next request (a 500).
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/a"), &[]).status, 503);
    }
    assert_eq!(a.requests(), proxied, "the open breaker still holds");
    // The pool added by the reload is health-checked.
    assert_eq!(get(&gw.url("/b"), &[]).status, 200);
    b.set_health_status(500);
    wait_for("pool b to be marked down", Duration::from_secs(10), || {
        (get(&gw.url("/b"), &[]).status == 503).then_some(())
    });
}

#[test]
fn with_redis_an_unchanged_policy_continues_across_a_reload() {
    let redis = RedisServer::start();
    let a = Upstream::start("a");
    let limits = |extra: &str| {
        format!(
            "rate_limits:\n  redis:\n    url: {}\n    expected_instances: 1\n  policies:\n    keep:\n      rate: 3\n      per: 1h\n{extra}",
            redis.url()
        )
    };
    let yaml = routes(&a, None).replace("upstream: a\n", "upstream: a\n    rate_limit: keep\n");
    let gw = Gateway::start(&format!("{yaml}{}", limits("")));
    let statuses =
        |n: usize| -> Vec<u16> { (0..n).map(|_| get(&gw.url("/a"), &[]).status).collect() };
    assert_eq!(statuses(2), vec![200, 200]);
    gw.reload(&format!(
        "{yaml}{}",
        limits("    other:\n      rate: 9\n      per: 1m\n")
    ));
    assert_eq!(
        gw.metric("gateway_config_reloads_total{result=\"applied\"}"),
        1.0
    );
    // The bucket is Redis's: the new limiter asks it again and finds at most the one
    // token left (0 while the old limiter's returned lease is still on its way back).
    let after = statuses(2);
    assert!(
        after.iter().filter(|s| **s == 200).count() <= 1,
        "{after:?}"
    );
    assert_eq!(after[1], 429, "{after:?}");
}
