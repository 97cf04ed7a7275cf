//! Process lifecycle: SIGTERM drains and exits within the configured grace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, Gateway, Upstream};
use std::time::Duration;

#[test]
fn sigterm_stops_within_the_configured_grace() {
    let up = Upstream::start("app");
    let mut gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    backends:\n      - addr: {}\nroutes:\n  - path_prefix: /\n    upstream: app\n",
        up.addr()
    ));
    assert_eq!(get(&gw.url("/ping"), &[]).status, 200);
    // grace_period 1s + graceful_shutdown_timeout 1s (the harness's defaults), plus slack.
    let took = gw.signal_and_wait("TERM", Duration::from_secs(10));
    assert!(took < Duration::from_secs(6), "SIGTERM took {took:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_err(),
        "still listening"
    );
}

#[test]
fn sigint_stops_at_once() {
    let up = Upstream::start("app");
    let mut gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    backends:\n      - addr: {}\nroutes:\n  - path_prefix: /\n    upstream: app\n",
        up.addr()
    ));
    let took = gw.signal_and_wait("INT", Duration::from_secs(10));
    assert!(took < Duration::from_secs(3), "SIGINT took {took:?}");
}
