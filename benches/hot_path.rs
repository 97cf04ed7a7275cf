//! Criterion benchmarks of the per-request work the gateway adds on top of Pingora:
//! correlation ids, the edge rules (path normalisation, header names), routing, metrics
//! and the access-log line.

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config;
use gateway::correlation;
use gateway::edge::{path, Edge};
use gateway::observability::{AccessRecord, Metrics, RouteLabel};
use gateway::routing::Router;
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::hint::black_box;

const CONFIG: &str = "
upstreams:
  api:
    backends:
      - addr: 127.0.0.1:3000
routes:
  - {name: r1, path_prefix: /api/v1/users, upstream: api}
  - {name: r2, path_prefix: /api/v1/orders, upstream: api}
  - {name: r3, path_prefix: /api/v2, upstream: api}
  - {name: r4, path_prefix: /static, upstream: api}
  - {name: r5, host: billing.example.com, path_prefix: /, upstream: api}
  - {name: r6, host: admin.example.com, path_prefix: /, upstream: api}
  - {name: r7, path_prefix: /graphql, upstream: api}
  - {name: r8, path_prefix: /auth, upstream: api}
  - {name: r9, path_prefix: /health, upstream: api}
  - {name: r10, path_prefix: /, upstream: api}
";

/// A config of `n` routes: half path prefixes, half hosts, and a catch-all.
fn many_routes(n: usize) -> config::Config {
    let mut yaml =
        String::from("upstreams:\n  api:\n    backends:\n      - addr: 127.0.0.1:3000\nroutes:\n");
    for i in 0..n.saturating_sub(1) {
        if i % 2 == 0 {
            yaml += &format!(
                "  - {{name: p{i}, path_prefix: /svc{}/v1, upstream: api}}\n",
                i / 2
            );
        } else {
            yaml +=
                &format!("  - {{name: h{i}, host: h{i}.example, path_prefix: /, upstream: api}}\n");
        }
    }
    yaml += "  - {name: root, path_prefix: /, upstream: api}\n";
    match config::parse(&yaml) {
        Ok(c) => c,
        Err(p) => panic!("bench config of {n} routes: {:?}", p.first()),
    }
}

/// A pool of `n` backends with circuit breakers, by `selection`.
fn pool(n: u16, selection: &str) -> gateway::routing::Pool {
    let mut yaml = format!("upstreams:\n  app:\n    selection: {selection}\n    circuit_breaker: {{}}\n    backends:\n");
    for i in 0..n {
        yaml += &format!("      - addr: 127.0.0.1:{}\n", 20000 + i);
    }
    yaml += "routes:\n  - {path_prefix: /, upstream: app}\n";
    let cfg = match config::parse(&yaml) {
        Ok(c) => c,
        Err(p) => panic!("pool config: {:?}", p.first()),
    };
    let addrs = match gateway::routing::resolve_backends(&cfg) {
        Ok(a) => a,
        Err(e) => panic!("{e:?}"),
    };
    let metrics = match Metrics::new() {
        Ok(m) => std::sync::Arc::new(m),
        Err(e) => panic!("{e}"),
    };
    gateway::routing::Pool::build(&cfg.upstreams[0], &addrs[0], &metrics)
}

fn benches(c: &mut Criterion) {
    let cfg = match config::parse(CONFIG) {
        Ok(c) => c,
        Err(p) => panic!("bench config: {p:?}"),
    };
    let router = Router::new(&cfg.routes);
    c.bench_function("routing/find 10 routes, catch-all hit", |b| {
        b.iter(|| black_box(router.find(Some("www.example.com"), black_box("/products/42"))))
    });
    c.bench_function("routing/find 10 routes, host hit", |b| {
        b.iter(|| black_box(router.find(Some("billing.example.com"), black_box("/invoices"))))
    });
    // As the routes grow: half by path (`/svcN/v1`), half by host (`hN.example`), and a
    // catch-all; a request to a path route under a host with no route of its own. 16
    // routes are scanned, 17 and more indexed (routing/router.rs, SCAN_UP_TO).
    for n in [10, 16, 17, 100, 1_000, 10_000] {
        let router = Router::new(&many_routes(n).routes);
        let path = format!("/svc{}/v1/items/42", n / 4);
        c.bench_function(&format!("routing/find {n} routes"), |b| {
            b.iter(|| black_box(router.find(Some("www.example.com"), black_box(&path))))
        });
    }

    // One pool of 1, 10 and 100 backends, circuit breakers on: a backend per request.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    for n in [1u16, 10, 100] {
        for selection in ["round_robin", "consistent_hash"] {
            let pool = pool(n, selection);
            rt.block_on(pool.prime());
            let mut i = 0u32;
            c.bench_function(&format!("pool/select {selection}, {n} backends"), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    black_box(pool.select(black_box(&i.to_be_bytes()), None))
                })
            });
        }
    }

    // The edge stage: the common case is a canonical path and no `_` in header names.
    let paths = config::PathConfig::default();
    c.bench_function("edge/normalize canonical path", |b| {
        b.iter(|| black_box(path::normalize(black_box("/api/v1/users/42/orders"), &paths).is_ok()))
    });
    c.bench_function("edge/normalize hostile path", |b| {
        b.iter(|| {
            black_box(
                path::normalize(black_box("/public/%2e%2e//%61pi/./v1/users/42"), &paths).is_ok(),
            )
        })
    });
    let edge = Edge::new(&cfg.edge, std::slice::from_ref(&cfg.correlation.header));
    let mut wrk_like = match RequestHeader::build("GET", b"/api/v1/users/42", None) {
        Ok(r) => r,
        Err(e) => panic!("request: {e}"),
    };
    for (k, v) in [
        ("host", "api.example.com"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
        ("x-request-id", "0b5e2c6a-5b7e-4f7e-9a43-6f0f0f1c2d3e"),
        ("authorization", "Bearer abc.def.ghi"),
    ] {
        let _ = wrk_like.insert_header(k, v);
    }
    c.bench_function("edge/clean request (path + 5 header names)", |b| {
        b.iter(|| black_box(edge.clean(black_box(&mut wrk_like)).is_ok()))
    });

    let incoming = HeaderValue::from_static("0b5e2c6a-5b7e-4f7e-9a43-6f0f0f1c2d3e");
    c.bench_function("correlation/keep valid incoming id", |b| {
        b.iter(|| black_box(correlation::assign(Some(black_box(&incoming)), true)))
    });
    c.bench_function("correlation/mint uuidv7 id", |b| {
        b.iter(|| black_box(correlation::mint_request_id()))
    });
    let tp = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    c.bench_function("correlation/validate traceparent", |b| {
        b.iter(|| black_box(correlation::is_valid_traceparent(black_box(tp.as_bytes()))))
    });
    c.bench_function("correlation/mint traceparent", |b| {
        b.iter(|| black_box(correlation::mint_traceparent()))
    });

    let metrics = match Metrics::new() {
        Ok(m) => m,
        Err(e) => panic!("metrics: {e}"),
    };
    let routes = [metrics.route_metrics("r1"), metrics.route_metrics("r2")];
    c.bench_function("metrics/observe request", |b| {
        b.iter(|| {
            let r = metrics.route(RouteLabel::Route(1), &routes);
            metrics.observe_request(r, black_box(200), black_box(0.0012))
        })
    });

    c.bench_function("access_log/format one line", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            let rec = AccessRecord {
                time: "2026-11-27T18:46:49.883Z",
                request_id: "01a21e54-e51a-7032-bec9-7ff8ee73036d",
                trace_id: "f5627fa3f6cd4fb188fb62d11b7c3519",
                client_ip: "127.0.0.1",
                method: "GET",
                host: "api.example.com",
                path: "/api/v1/users/42",
                status: 200,
                duration_ms: 1.234,
                upstream: Some("127.0.0.1:3000"),
                route: "r1",
                consumer: Some("acme"),
                tier: Some("premium"),
                bytes_sent: 1234,
                error: None,
            };
            let _ = serde_json::to_writer(&mut buf, black_box(&rec));
            black_box(buf.len())
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
