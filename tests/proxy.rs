//! End to end through the real gateway binary and real upstreams: routing, /ping, load
//! balancing, health checks, fail-fast 503, retries, timeouts, forwarding headers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, request, wait_for, Gateway, HangUp, Upstream};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

fn pool(name: &str, backends: &[&Upstream], extra: &str) -> String {
    let mut s = format!("  {name}:\n{extra}    backends:\n");
    for b in backends {
        s += &format!("      - addr: {}\n", b.addr());
    }
    s
}

const FAST_CHECK: &str = "    health_check:\n      type: http\n      path: /healthz\n      interval: 100ms\n      timeout: 200ms\n";

fn upstream_of(resp: &common::Resp) -> String {
    resp.json()["upstream"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn ping_is_answered_by_the_gateway() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n",
        pool("app", &[&up], "")
    ));
    let r = get(&gw.url("/ping"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"status": "alive", "service": "api-gateway"})
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(up.requests(), 0, "/ping never reaches the upstream");
    // Other methods on /ping are routed like any path.
    let r = request("POST", &gw.url("/ping"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(upstream_of(&r), "app");
}

#[test]
fn routes_by_host_and_longest_prefix() {
    let (api, v2, billing, web) = (
        Upstream::start("api"),
        Upstream::start("api-v2"),
        Upstream::start("billing"),
        Upstream::start("web"),
    );
    let gw = Gateway::start(&format!(
        "upstreams:\n{}{}{}{}routes:
  - name: api
    path_prefix: /api
    upstream: api
  - name: api-v2
    path_prefix: /api/v2
    upstream: api-v2
    strip_prefix: true
  - name: billing
    host: billing.example.com
    path_prefix: /
    upstream: billing
  - name: web
    path_prefix: /
    upstream: web
",
        pool("api", &[&api], ""),
        pool("api-v2", &[&v2], ""),
        pool("billing", &[&billing], ""),
        pool("web", &[&web], "")
    ));
    let cases = [
        ("/api/users", None, "api", "/api/users"),
        ("/api", None, "api", "/api"),
        ("/apiary", None, "web", "/apiary"),
        ("/api/v2/items?x=1", None, "api-v2", "/items?x=1"),
        ("/api/v2", None, "api-v2", "/"),
        ("/", None, "web", "/"),
        (
            "/anything",
            Some("billing.example.com"),
            "billing",
            "/anything",
        ),
        ("/api/x", Some("BILLING.example.com:8000"), "api", "/api/x"),
        ("/x", Some("other.example.com"), "web", "/x"),
    ];
    for (path, host, want, upstream_uri) in cases {
        let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
        let r = get(&gw.url(path), &headers);
        assert_eq!(r.status, 200, "{path} {host:?}: {}", r.body);
        assert_eq!(upstream_of(&r), want, "{path} {host:?}");
        assert_eq!(r.json()["uri"], upstream_uri, "{path} {host:?}");
    }
}

#[test]
fn no_route_is_a_json_404_and_connection_stays_open() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /api\n    upstream: app\n",
        pool("app", &[&up], "")
    ));
    let r = get(&gw.url("/nope"), &[("X-Request-ID", "id-404")]);
    assert_eq!(r.status, 404);
    let body = r.json();
    assert_eq!(body["error"], "no route for this host and path");
    assert_eq!(body["request_id"], "id-404");
    assert_eq!(r.header("x-request-id"), Some("id-404"));
    // Two requests on one connection, one after the other: the 404 did not close it.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..2 {
        conn.write_all(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
    assert_eq!(up.requests(), 0);
}

#[test]
fn round_robin_spreads_over_live_backends() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n",
        pool("app", &[&a, &b], "")
    ));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..20 {
        let r = get(&gw.url("/"), &[]);
        assert_eq!(r.status, 200);
        *seen.entry(upstream_of(&r)).or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
}

#[test]
fn weighted_and_consistent_hash_selection() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&format!(
        "upstreams:
  heavy:
    selection: weighted
    backends:
      - addr: {}
        weight: 3
      - addr: {}
        weight: 1
  sticky:
    selection: consistent_hash
    hash_key: header:X-User
    backends:
      - addr: {}
      - addr: {}
routes:
  - path_prefix: /w
    upstream: heavy
  - path_prefix: /s
    upstream: sticky
",
        a.addr(),
        b.addr(),
        a.addr(),
        b.addr()
    ));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        *seen
            .entry(upstream_of(&get(&gw.url("/w"), &[])))
            .or_default() += 1;
    }
    assert_eq!((seen["a"], seen["b"]), (30, 10), "3:1 weights");
    let mut by_user: HashMap<String, String> = HashMap::new();
    let mut distinct = std::collections::HashSet::new();
    for round in 0..3 {
        for user in 0..20 {
            let u = format!("user-{user}");
            let got = upstream_of(&get(&gw.url("/s"), &[("X-User", &u)]));
            distinct.insert(got.clone());
            if round == 0 {
                by_user.insert(u, got);
            } else {
                assert_eq!(by_user[&u], got, "{u} moved between backends");
            }
        }
    }
    assert_eq!(distinct.len(), 2, "20 users all hashed to one backend");
}

#[test]
fn dead_backend_is_skipped_after_its_health_check_fails() {
    let (a, mut b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n",
        pool("app", &[&a, &b], FAST_CHECK)
    ));
    b.stop();
    let series = format!(
        "gateway_upstream_healthy{{backend=\"{}\",pool=\"app\"}}",
        b.addr()
    );
    wait_for("b to be marked unhealthy", Duration::from_secs(5), || {
        (gw.metric(&series) == 0.0 && gw.admin("/metrics").body.contains(&series)).then_some(())
    });
    for _ in 0..10 {
        let r = get(&gw.url("/"), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(upstream_of(&r), "a");
    }
    // Restarted: it comes back by itself.
    b.restart();
    wait_for("b to be healthy again", Duration::from_secs(5), || {
        (gw.metric(&series) == 1.0).then_some(())
    });
    let seen: std::collections::HashSet<String> = (0..6)
        .map(|_| upstream_of(&get(&gw.url("/"), &[])))
        .collect();
    assert!(seen.contains("b"), "{seen:?}");
}

#[test]
fn all_backends_down_gives_fast_503_without_touching_upstream() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n",
        pool("app", &[&a, &b], FAST_CHECK)
    ));
    assert_eq!(get(&gw.url("/"), &[]).status, 200);
    // Both fail their health checks but still accept connections: any proxied request would be counted.
    a.set_health_status(500);
    b.set_health_status(500);
    wait_for(
        "readyz to report the pool down",
        Duration::from_secs(5),
        || (gw.admin("/readyz").status == 503).then_some(()),
    );
    let before = a.requests() + b.requests();
    for _ in 0..20 {
        let r = get(&gw.url("/x"), &[("X-Request-ID", "down-1")]);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.json()["error"], "no healthy upstream");
        assert_eq!(r.json()["request_id"], "down-1");
    }
    assert_eq!(
        a.requests() + b.requests(),
        before,
        "no request reached an upstream"
    );
    let ready = gw.admin("/readyz");
    assert!(
        ready.body.contains("pool app: no healthy backend"),
        "{}",
        ready.body
    );
    assert_eq!(
        gw.metric("gateway_requests_total{route=\"route0\",status=\"503\"}"),
        20.0
    );
}

#[test]
fn connect_failure_retries_idempotent_requests_on_another_backend() {
    let (a, mut b) = (Upstream::start("a"), Upstream::start("b"));
    // No health check and no breaker: only the retry can save requests to the dead backend.
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n",
        pool(
            "app",
            &[&a, &b],
            "    circuit_breaker:\n      enabled: false\n"
        )
    ));
    b.stop();
    for _ in 0..10 {
        let r = get(&gw.url("/"), &[]);
        assert_eq!(r.status, 200, "GET retried on a: {}", r.body);
        assert_eq!(upstream_of(&r), "a");
    }
    // POST is not retried: half of them hit the dead backend and get 502.
    let statuses: Vec<u16> = (0..10)
        .map(|_| request("POST", &gw.url("/"), &[]).status)
        .collect();
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let r = request("POST", &gw.url("/"), &[]);
    let r = if r.status == 502 {
        r
    } else {
        request("POST", &gw.url("/"), &[])
    };
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream connection failed");
}

#[test]
fn a_backend_hanging_up_after_the_request_is_retried_for_idempotent_methods() {
    // `bad` reads each request and closes without answering, on a fresh connection every
    // time: Pingora alone would not retry that (it retries only pooled connections).
    let (bad, ok) = (HangUp::start(), Upstream::start("ok"));
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    circuit_breaker:\n      enabled: false\n    backends:\n      - addr: {}\n      - addr: {}\nroutes:\n  - path_prefix: /\n    upstream: app\n    retries: 1\n",
        bad.addr(),
        ok.addr()
    ));
    for _ in 0..10 {
        let r = get(&gw.url("/"), &[]);
        assert_eq!(r.status, 200, "GET retried on ok: {}", r.body);
        assert_eq!(upstream_of(&r), "ok");
    }
    assert!(
        bad.requests() >= 3,
        "round robin sent GETs to the bad backend first: {}",
        bad.requests()
    );
    // A POST is never sent twice: the ones that reach the bad backend are 502.
    let (bad_before, ok_before) = (bad.requests(), ok.requests());
    let statuses: Vec<u16> = (0..6)
        .map(|_| request("POST", &gw.url("/"), &[]).status)
        .collect();
    let (failed, served) = (bad.requests() - bad_before, ok.requests() - ok_before);
    assert!(failed >= 1, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 502).count(),
        failed,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        served,
        "{statuses:?}"
    );
    assert_eq!(failed + served, 6, "no POST was retried: {statuses:?}");
}

#[test]
fn slow_upstream_gives_504() {
    let up = Upstream::start("slow");
    up.set_delay(Duration::from_millis(1500));
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n    read_timeout: 200ms\n",
        pool("app", &[&up], "")
    ));
    let r = get(&gw.url("/"), &[("X-Request-ID", "slow-1")]);
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream timed out");
    assert_eq!(r.json()["request_id"], "slow-1");
}

#[test]
fn upstream_status_is_passed_through() {
    let up = Upstream::start("app");
    up.set_status(500);
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n",
        pool("app", &[&up], "")
    ));
    let r = get(&gw.url("/"), &[]);
    assert_eq!(r.status, 500);
    assert_eq!(upstream_of(&r), "app");
}

#[test]
fn forwarding_headers_are_set() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - path_prefix: /\n    upstream: app\n",
        pool("app", &[&up], "")
    ));
    let r = get(
        &gw.url("/"),
        &[
            ("Host", "shop.example.com"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    );
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(
        h["forwarded"],
        "for=127.0.0.1;proto=http;host=shop.example.com"
    );
    assert_eq!(h["host"], "shop.example.com", "Host is passed through");
}

#[test]
fn metrics_and_access_log_record_every_request() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&format!(
        "upstreams:\n{}routes:\n  - name: main\n    path_prefix: /\n    upstream: app\n",
        pool("app", &[&up], "")
    ));
    for _ in 0..3 {
        assert_eq!(
            get(&gw.url("/a?secret=1"), &[("X-Request-ID", "log-me")]).status,
            200
        );
    }
    assert_eq!(
        gw.metric("gateway_requests_total{route=\"main\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        gw.metric("gateway_request_duration_seconds_count{route=\"main\"}"),
        3.0
    );
    let metrics = gw.admin("/metrics").body;
    assert!(metrics.contains("process_resident_memory_bytes"));
    let lines = wait_for("3 access-log lines", Duration::from_secs(5), || {
        let l = gw.access_lines();
        (l.len() >= 3).then_some(l)
    });
    let line = &lines[0];
    assert_eq!(line["request_id"], "log-me");
    assert_eq!(
        line["path"], "/a",
        "the query string (may hold secrets) is not logged"
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "main");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["upstream"], up.addr());
    assert!(line["duration_ms"].as_f64().unwrap_or(-1.0) >= 0.0);
    assert!(line["bytes_sent"].as_u64().unwrap_or(0) > 0);
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(gw.admin("/healthz").status, 200);
    assert_eq!(gw.admin("/readyz").status, 200);
    assert_eq!(gw.admin("/nope").status, 404);
}
