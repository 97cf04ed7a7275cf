//! Circuit breaking end to end: real gateway, real upstreams that die, fail, slow down
//! and come back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, wait_for, Gateway, Upstream};
use std::time::{Duration, Instant};

fn gateway(backends: &[&Upstream], breaker: &str, route_extra: &str) -> Gateway {
    let mut list = String::new();
    for b in backends {
        list += &format!("      - addr: {}\n", b.addr());
    }
    Gateway::start(&format!(
        "upstreams:\n  app:\n    backends:\n{list}    circuit_breaker:\n{breaker}routes:\n  - path_prefix: /\n    upstream: app\n{route_extra}"
    ))
}

fn state(gw: &Gateway, up: &Upstream) -> f64 {
    gw.metric(&format!(
        "gateway_breaker_state{{backend=\"{}\",pool=\"app\"}}",
        up.addr()
    ))
}

const OPEN: f64 = 1.0;

#[test]
fn a_dead_backend_is_cut_off_and_retries_hide_it() {
    let (a, mut b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = gateway(
        &[&a, &b],
        "      consecutive_failures: 3\n      open_duration: 30s\n",
        "",
    );
    b.stop();
    // A steady stream: every GET succeeds (connect failures retry on a), and the breaker trips.
    for _ in 0..20 {
        let r = get(&gw.url("/"), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(state(&gw, &b), OPEN);
    let trips = gw.metric(&format!(
        "gateway_breaker_transitions_total{{backend=\"{}\",from=\"closed\",pool=\"app\",to=\"open\"}}",
        b.addr()
    ));
    assert_eq!(trips, 1.0);
    // b is back, but its circuit is open for 30 s: it gets nothing.
    b.restart();
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/"), &[]).status, 200);
    }
    assert_eq!(
        b.requests(),
        0,
        "a request reached the backend while its circuit was open"
    );
    assert_eq!(
        b.behaviour
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[test]
fn all_open_answers_503_at_once_without_connecting() {
    let (mut a, mut b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = gateway(
        &[&a, &b],
        "      consecutive_failures: 2\n      open_duration: 30s\n",
        "",
    );
    a.stop();
    b.stop();
    let statuses: Vec<u16> = (0..6).map(|_| get(&gw.url("/"), &[]).status).collect();
    assert!(
        statuses.iter().all(|s| *s == 502 || *s == 503),
        "{statuses:?}"
    );
    assert_eq!((state(&gw, &a), state(&gw, &b)), (OPEN, OPEN));
    a.restart();
    b.restart();
    let started = Instant::now();
    for _ in 0..20 {
        let r = get(&gw.url("/"), &[("X-Request-ID", "cut-1")]);
        assert_eq!(r.status, 503);
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (25..=30).contains(&retry),
            "Retry-After {retry}: the time until the earliest half-open"
        );
        assert_eq!(r.json()["request_id"], "cut-1");
    }
    let elapsed = started.elapsed();
    let conns = a
        .behaviour
        .connections
        .load(std::sync::atomic::Ordering::SeqCst)
        + b.behaviour
            .connections
            .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(conns, 0, "the upstreams saw connection attempts");
    assert!(gw.metric("gateway_breaker_short_circuited_total{pool=\"app\"}") >= 20.0);
    eprintln!("20 short-circuited requests in {elapsed:?}");
}

#[test]
fn upstream_500s_trip_only_when_counted() {
    let up = Upstream::start("app");
    up.set_status(500);
    let counted = gateway(
        &[&up],
        "      consecutive_failures: 3\n      open_duration: 30s\n",
        "",
    );
    let not_counted = gateway(
        &[&up],
        "      consecutive_failures: 3\n      count_5xx: false\n",
        "",
    );
    for _ in 0..3 {
        assert_eq!(get(&counted.url("/"), &[]).status, 500);
        assert_eq!(get(&not_counted.url("/"), &[]).status, 500);
    }
    assert_eq!(state(&counted, &up), OPEN);
    assert_eq!(get(&counted.url("/"), &[]).status, 503);
    assert_eq!(state(&not_counted, &up), 0.0);
    for _ in 0..5 {
        assert_eq!(get(&not_counted.url("/"), &[]).status, 500);
    }
}

#[test]
fn a_restarted_backend_gets_traffic_back_through_half_open_trials() {
    let mut up = Upstream::start("app");
    let gw = gateway(
        &[&up],
        "      consecutive_failures: 2\n      open_duration: 300ms\n      half_open_trials: 1\n      close_after: 2\n",
        "",
    );
    up.stop();
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/"), &[]).status, 502);
    }
    assert_eq!(state(&gw, &up), OPEN);
    up.restart();
    // After the open period: trials pass, the circuit closes, no gateway restart.
    wait_for("traffic to return", Duration::from_secs(10), || {
        (get(&gw.url("/"), &[]).status == 200).then_some(())
    });
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/"), &[]).status, 200);
    }
    assert_eq!(state(&gw, &up), 0.0);
    let closed = gw.metric(&format!(
        "gateway_breaker_transitions_total{{backend=\"{}\",from=\"half_open\",pool=\"app\",to=\"closed\"}}",
        up.addr()
    ));
    assert_eq!(closed, 1.0);
}

#[test]
fn a_slow_backend_counts_as_failing() {
    let (fast, slow) = (Upstream::start("fast"), Upstream::start("slow"));
    slow.set_delay(Duration::from_secs(2));
    let gw = gateway(
        &[&fast, &slow],
        "      consecutive_failures: 2\n      open_duration: 30s\n",
        "    read_timeout: 200ms\n",
    );
    let mut timeouts = 0;
    for _ in 0..8 {
        match get(&gw.url("/"), &[]).status {
            504 => timeouts += 1,
            200 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(
        timeouts, 2,
        "two timeouts trip it; then only the fast backend is used"
    );
    assert_eq!(state(&gw, &slow), OPEN);
}

#[test]
fn failing_health_checks_open_the_circuit() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let mut list = String::new();
    for u in [&a, &b] {
        list += &format!("      - addr: {}\n", u.addr());
    }
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    backends:\n{list}    health_check:\n      type: http\n      path: /healthz\n      interval: 100ms\n    circuit_breaker:\n      open_duration: 200ms\nroutes:\n  - path_prefix: /\n    upstream: app\n"
    ));
    b.set_health_status(500);
    wait_for("b's circuit to open", Duration::from_secs(5), || {
        (state(&gw, &b) == OPEN).then_some(())
    });
    b.set_health_status(200);
    wait_for("b's circuit to leave open", Duration::from_secs(5), || {
        (state(&gw, &b) != OPEN).then_some(())
    });
}
