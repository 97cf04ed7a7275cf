//! Request ids and trace context, end to end: kept, minted or replaced, and seen upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, raw_request, Gateway, Upstream};

fn gateway(up: &Upstream, correlation: &str) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  app:\n    backends:\n      - addr: {}\nroutes:\n  - path_prefix: /\n    upstream: app\n{correlation}",
        up.addr()
    ))
}

fn is_uuid_v7(s: &str) -> bool {
    s.len() == 36
        && s.as_bytes()[14] == b'7'
        && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[test]
fn valid_request_id_is_kept_and_propagated_both_ways() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let r = get(&gw.url("/"), &[("X-Request-ID", "client-id.1:a_b-c")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-request-id"),
        Some("client-id.1:a_b-c"),
        "upstream's own header is overridden"
    );
    assert_eq!(r.json()["headers"]["x-request-id"], "client-id.1:a_b-c");
}

#[test]
fn missing_request_id_is_minted_as_uuid_v7() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let r = get(&gw.url("/"), &[]);
    let id = r.header("x-request-id").unwrap_or_default().to_string();
    assert!(is_uuid_v7(&id), "{id}");
    assert_eq!(r.json()["headers"]["x-request-id"], id.as_str());
    let other = get(&gw.url("/"), &[])
        .header("x-request-id")
        .unwrap_or_default()
        .to_string();
    assert_ne!(id, other);
}

#[test]
fn bad_request_ids_are_replaced_never_forwarded() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let long = "a".repeat(2048);
    let at_limit = "b".repeat(128);
    for bad in [
        long.as_str(),
        "has space",
        "quote\"d",
        "%0D%0AX-Evil:%201",
        "<script>",
        "a,b",
    ] {
        let r = get(&gw.url("/"), &[("X-Request-ID", bad)]);
        assert_eq!(r.status, 200, "{bad}");
        let id = r.header("x-request-id").unwrap_or_default();
        assert!(is_uuid_v7(id), "{bad} -> {id}");
        assert_eq!(r.json()["headers"]["x-request-id"], id, "{bad} forwarded");
    }
    let r = get(&gw.url("/"), &[("X-Request-ID", &at_limit)]);
    assert_eq!(
        r.header("x-request-id"),
        Some(at_limit.as_str()),
        "128 chars is allowed"
    );

    // Bytes no client library sends: UTF-8, a bare CR, a control character.
    for raw_id in ["caf\u{e9}-\u{1F600}".as_bytes(), b"abc\rdef", b"abc\x01def"] {
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: ".to_vec();
        req.extend_from_slice(raw_id);
        req.extend_from_slice(b"\r\n\r\n");
        let (status, text) = raw_request(gw.port, &req);
        assert!(status == 200 || status == 400, "{raw_id:?}: {text}");
        if status == 200 {
            let head = text
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-request-id: "))
                .unwrap_or_default();
            assert!(is_uuid_v7(id), "{raw_id:?} -> {id}");
            let seen = up.behaviour.last_headers.lock().unwrap()["x-request-id"].clone();
            assert_eq!(seen, id);
        }
    }
    // The bad values never reach the access log either.
    let log = std::fs::read_to_string(&gw.access_log).unwrap_or_default();
    assert!(!log.contains("has space") && !log.contains(&long) && !log.contains("<script>"));
}

#[test]
fn untrusted_incoming_ids_are_always_replaced() {
    let up = Upstream::start("app");
    let gw = gateway(
        &up,
        "correlation:\n  header: X-Correlation-ID\n  trust_incoming: false\n",
    );
    let r = get(&gw.url("/"), &[("X-Correlation-ID", "client-chosen")]);
    let id = r.header("x-correlation-id").unwrap_or_default();
    assert!(is_uuid_v7(id), "{id}");
    assert_eq!(r.json()["headers"]["x-correlation-id"], id);
}

#[test]
fn traceparent_is_propagated_or_minted() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = get(
        &gw.url("/"),
        &[("traceparent", tp), ("tracestate", "vendor=1")],
    );
    assert_eq!(r.json()["headers"]["traceparent"], tp);
    assert_eq!(r.json()["headers"]["tracestate"], "vendor=1");

    let r = get(&gw.url("/"), &[]);
    let minted = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        gateway::correlation::is_valid_traceparent(minted.as_bytes()),
        "{minted}"
    );

    let r = get(&gw.url("/"), &[("traceparent", "00-zzzz-bad-01")]);
    let replaced = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        gateway::correlation::is_valid_traceparent(replaced.as_bytes()),
        "{replaced}"
    );
    assert_ne!(replaced, "00-zzzz-bad-01");
}

#[test]
fn traceparent_can_be_turned_off() {
    let up = Upstream::start("app");
    let gw = gateway(&up, "correlation:\n  traceparent: false\n");
    let r = get(&gw.url("/"), &[]);
    assert!(r.json()["headers"].get("traceparent").is_none());
}
