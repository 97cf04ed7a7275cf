//! Process lifecycle: SIGTERM drains in-flight requests (grace_period, then at most
//! graceful_shutdown_timeout) and exits 0 as soon as none is left; SIGINT stops at once;
//! SIGHUP does not stop the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, try_request, wait_for, Gateway, Upstream};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One route per upstream: `/<name>` goes to the upstream called `name`.
fn routes(ups: &[&Upstream]) -> String {
    let mut pools = String::from("upstreams:\n");
    let mut routes = String::from("routes:\n");
    for u in ups {
        pools += &format!(
            "  {0}:\n    backends:\n      - addr: {1}\n",
            u.name,
            u.addr()
        );
        routes += &format!("  - path_prefix: /{0}\n    upstream: {0}\n", u.name);
    }
    pools + &routes
}

/// An upstream answering after `delay`.
fn slow(name: &str, delay: Duration) -> Upstream {
    let up = Upstream::start(name);
    up.set_delay(delay);
    up
}

/// Starts `GET url` on a thread: its status, or `Err` when it got no response.
fn start_get(url: String) -> JoinHandle<Result<u16, String>> {
    std::thread::spawn(move || try_request("GET", &url, &[]).map(|r| r.status))
}

/// Waits until each upstream has received its request (so it is in flight at the gateway).
fn wait_in_flight(ups: &[&Upstream]) {
    wait_for(
        "the requests to reach their upstreams",
        Duration::from_secs(5),
        || ups.iter().all(|u| u.requests() == 1).then_some(()),
    );
}

#[test]
fn sigterm_with_nothing_in_flight_exits_at_once_and_closes_idle_connections() {
    let up = Upstream::start("app");
    // Long grace and timeout: an idle gateway must not wait for them.
    let mut gw = Gateway::start_with_server(
        "  grace_period: 5s\n  graceful_shutdown_timeout: 5s\n",
        &routes(&[&up]),
    );
    let mut idle = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.write_all(b"GET /app HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 12];
    idle.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let mut rest = [0u8; 4096];
    let _ = idle.read(&mut rest); // the rest of the response; now it is idle
    let (took, status) = gw.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(5),
        "exited when nothing was in flight, not after grace_period: {took:?}"
    );
    assert!(
        matches!(idle.read(&mut rest), Ok(0) | Err(_)),
        "idle closed"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", gw.port)).is_err(),
        "still listening"
    );
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_cuts_only_what_outlasts_the_timeout() {
    let (a, b, c, fast) = (
        slow("a", Duration::from_millis(1500)),
        slow("b", Duration::from_millis(2500)),
        slow("c", Duration::from_millis(4500)),
        Upstream::start("fast"),
    );
    // The defaults: grace_period 1s, graceful_shutdown_timeout 2s (3 s in all).
    let mut gw = Gateway::start_with_server(
        "  grace_period: 1s\n  graceful_shutdown_timeout: 2s\n",
        &routes(&[&a, &b, &c, &fast]),
    );
    let requests = [
        start_get(gw.url("/a")),
        start_get(gw.url("/b")),
        start_get(gw.url("/c")),
    ];
    wait_in_flight(&[&a, &b, &c]);
    let term = Instant::now();
    gw.signal("TERM");
    // During the grace period the listener still serves, each response closing its
    // connection, and /readyz tells load balancers to go away.
    let r = get(&gw.url("/fast"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"));
    let ready = gw.admin("/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("shutting down"), "{}", ready.body);
    let results: Vec<Result<u16, String>> =
        requests.into_iter().map(|t| t.join().unwrap()).collect();
    let status = gw.wait_exit(Duration::from_secs(15));
    let took = term.elapsed();
    assert_eq!(results[0], Ok(200), "1.5 s request");
    assert_eq!(results[1], Ok(200), "2.5 s request");
    assert!(
        results[2].is_err(),
        "4.5 s request outlasts 1 s + 2 s: {:?}",
        results[2]
    );
    assert!(status.success(), "{status:?}");
    eprintln!("exited {took:?} after SIGTERM");
}

#[test]
fn sigterm_exits_as_soon_as_the_last_request_is_done() {
    let (a, b) = (
        slow("a", Duration::from_millis(1500)),
        slow("b", Duration::from_millis(2500)),
    );
    let mut gw = Gateway::start_with_server(
        "  grace_period: 1s\n  graceful_shutdown_timeout: 10s\n",
        &routes(&[&a, &b]),
    );
    let requests = [start_get(gw.url("/a")), start_get(gw.url("/b"))];
    wait_in_flight(&[&a, &b]);
    let (took, status) = gw.signal_and_wait("TERM", Duration::from_secs(20));
    let results: Vec<Result<u16, String>> =
        requests.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results, [Ok(200), Ok(200)]);
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(8),
        "exited when drained, well before 1 s + 10 s: {took:?}"
    );
    eprintln!("exited {took:?} after SIGTERM");
}

#[test]
fn sigint_stops_at_once() {
    let up = Upstream::start("app");
    let mut gw = Gateway::start_with_server(
        "  grace_period: 5s\n  graceful_shutdown_timeout: 5s\n",
        &routes(&[&up]),
    );
    let (took, status) = gw.signal_and_wait("INT", Duration::from_secs(10));
    assert!(took < Duration::from_secs(3), "SIGINT took {took:?}");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sighup_does_not_stop_the_gateway() {
    let up = Upstream::start("app");
    let mut gw = Gateway::start(&routes(&[&up]));
    gw.signal("HUP");
    wait_for("the SIGHUP log line", Duration::from_secs(5), || {
        gw.stderr().contains("SIGHUP: reloading").then_some(())
    });
    assert!(gw.is_running(), "SIGHUP stopped the gateway");
    assert_eq!(get(&gw.url("/app"), &[]).status, 200);
}
