//! The edge rules end to end: hostile spellings of paths and header names sent to the real
//! gateway, checked both on the routing decision and on what the upstream receives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{free_port, raw_request, read_response, wait_for, Gateway, Upstream};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &str = "acme-key";

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `/admin` needs a credential, `/` is public, both in front of `up`.
fn admin_config(up: &str, edge: &str) -> String {
    protected_config(up, "path_prefix: /admin", edge)
}

/// A route matching `admin` that needs a credential, in front of a public catch-all,
/// both to `up` (an API key `KEY` of consumer `acme`, tier `free`).
fn protected_config(up: &str, admin: &str, edge: &str) -> String {
    format!(
        "upstreams:
  app:
    backends:
      - addr: {up}
auth:
  tiers: [free, premium]
  api_keys:
    keys:
      - consumer: acme
        tier: free
        sha256: {digest}
routes:
  - name: admin
    {admin}
    upstream: app
    auth: required
  - name: public
    path_prefix: /
    upstream: app
    auth: none
{edge}",
        digest = sha256_hex(KEY)
    )
}

fn get_raw(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    raw_request(gw.port, req.as_bytes())
}

fn body_json(text: &str) -> serde_json::Value {
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The spellings of `/admin/secret` that nginx's `location /admin` also catches, plus
/// the encoded-dot ones it does not.
const ADMIN_SPELLINGS: &[&str] = &[
    "/admin/secret",
    "/%61dmin/secret",
    "/%61%64%6d%69%6e/secret",
    "//admin/secret",
    "///admin//secret",
    "/./admin/secret",
    "/admin/./secret",
    "/public/../admin/secret",
    "/public/%2e%2e/admin/secret",
    "/public/%2E%2E/admin/secret",
    "/public/.%2e/admin/secret",
    "/public/..//admin/secret",
    "/public/x/../../admin/secret",
];

#[test]
fn every_spelling_of_a_protected_path_is_routed_and_forwarded_as_one() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&admin_config(&up.addr(), ""));
    for path in ADMIN_SPELLINGS {
        let (status, text) = get_raw(&gw, path, &[]);
        assert_eq!(status, 401, "{path} must reach the admin route: {text}");
        let (status, text) = get_raw(&gw, path, &[("X-API-Key", KEY)]);
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(
            body_json(&text)["uri"],
            "/admin/secret",
            "{path}: upstream got"
        );
    }
    // The absolute form is routed on its path and forwarded in origin form.
    let absolute = |key: &str| {
        raw_request(
            gw.port,
            format!(
                "GET http://127.0.0.1:{0}/public/../admin/secret HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\n{key}Connection: close\r\n\r\n",
                gw.port
            )
            .as_bytes(),
        )
    };
    let (status, text) = absolute("");
    assert_eq!(status, 401, "{text}");
    let (status, text) = absolute(&format!("X-API-Key: {KEY}\r\n"));
    assert_eq!(status, 200, "{text}");
    assert_eq!(body_json(&text)["uri"], "/admin/secret");
    // The query is kept as sent; a path that needs no change is forwarded byte for byte.
    let (_, text) = get_raw(
        &gw,
        "/public/%2e%2e/admin/secret?next=%2Fx&a=..",
        &[("X-API-Key", KEY)],
    );
    assert_eq!(body_json(&text)["uri"], "/admin/secret?next=%2Fx&a=..");
    let (_, text) = get_raw(&gw, "/files/a%20b?q=1", &[]);
    assert_eq!(body_json(&text)["uri"], "/files/a%20b?q=1");
    assert!(gw.metric("gateway_edge_paths_normalized_total") >= 14.0);
    // The access log has the path that was routed.
    let lines = gw.access_lines();
    assert!(lines
        .iter()
        .any(|l| l["path"] == "/admin/secret" && l["status"] == 401));
    assert!(!lines.iter().any(|l| l["path"]
        .as_str()
        .is_some_and(|p| p.contains("..") || p.contains("%61"))));
}

#[test]
fn paths_that_cannot_be_normalised_safely_are_refused() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&admin_config(&up.addr(), ""));
    for (path, reason, why) in [
        (
            "/admin%2fsecret",
            "encoded_slash",
            "encoded slash or backslash in path",
        ),
        (
            "/public%2F..%2Fadmin/secret",
            "encoded_slash",
            "encoded slash or backslash in path",
        ),
        (
            "/public/..%5cadmin/secret",
            "encoded_slash",
            "encoded slash or backslash in path",
        ),
        (
            "/public/..%5Cadmin/secret",
            "encoded_slash",
            "encoded slash or backslash in path",
        ),
        (
            "/admin%00/secret",
            "control_byte",
            "control character in path",
        ),
        (
            "/public%0d%0aX-Injected:%201",
            "control_byte",
            "control character in path",
        ),
        ("/public/%7f", "control_byte", "control character in path"),
        ("/..", "above_root", "path climbs above the root"),
        (
            "/../admin/secret",
            "above_root",
            "path climbs above the root",
        ),
        (
            "/public/../../admin/secret",
            "above_root",
            "path climbs above the root",
        ),
        (
            "/%2e%2e/admin/secret",
            "above_root",
            "path climbs above the root",
        ),
        (
            "/public/..;/admin/secret",
            "path_parameters",
            "path parameter (';') in path",
        ),
        (
            "/admin;x/secret",
            "path_parameters",
            "path parameter (';') in path",
        ),
        (
            "/admin;/secret",
            "path_parameters",
            "path parameter (';') in path",
        ),
        (
            "/public/%zz",
            "bad_escape",
            "malformed percent-encoding in path",
        ),
        (
            "/public/%4",
            "bad_escape",
            "malformed percent-encoding in path",
        ),
    ] {
        let (status, text) = get_raw(&gw, path, &[("X-API-Key", KEY)]);
        assert_eq!(status, 400, "{path}: {text}");
        let body = body_json(&text);
        assert_eq!(body["error"], why, "{path}");
        assert!(!body["request_id"].as_str().unwrap_or("").is_empty());
        assert!(
            gw.metric(&format!(
                "gateway_edge_refused_total{{reason=\"{reason}\"}}"
            )) >= 1.0,
            "{reason}"
        );
    }
    // A raw backslash (which some servers read as '/') is refused as well, if the HTTP
    // parser lets it through at all.
    let (status, _) = get_raw(&gw, "/public\\..\\admin/secret", &[("X-API-Key", KEY)]);
    assert_eq!(status, 400);
    assert_eq!(up.requests(), 0, "nothing refused reached the upstream");
}

#[test]
fn edge_path_options_are_honoured() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&admin_config(
        &up.addr(),
        "edge:\n  path:\n    merge_slashes: false\n    escaped_slashes: keep\n",
    ));
    let (status, text) = get_raw(&gw, "/public/a%2fb", &[]);
    assert_eq!(status, 200, "{text}");
    assert_eq!(body_json(&text)["uri"], "/public/a%2Fb");
    // Not merged: `//admin` is then not the admin route, and the upstream gets `//admin`.
    let (status, text) = get_raw(&gw, "//admin/secret", &[]);
    assert_eq!(status, 200, "{text}");
    assert_eq!(body_json(&text)["uri"], "//admin/secret");
    // Dot segments are still removed.
    assert_eq!(get_raw(&gw, "/public/../admin/secret", &[]).0, 401);
}

/// A real WSGI server (Python's wsgiref) on a free port, killed on drop.
struct WsgiUpstream {
    child: Child,
    port: u16,
}

impl WsgiUpstream {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .arg(format!(
                "{}/tests/fixtures/wsgi_echo.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (installed by scripts/install-deps.sh)");
        wait_for("wsgi upstream", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Self { child, port }
    }
}

impl Drop for WsgiUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SPOOF: &[(&str, &str)] = &[
    ("X_Consumer_ID", "admin"),
    ("X_Consumer_Tier", "premium"),
    ("x-consumer_tier", "premium"),
    ("X_Forwarded_For", "10.0.0.1"),
    ("X_Custom", "1"),
];

#[test]
fn underscore_headers_cannot_spoof_identity_to_a_cgi_style_upstream() {
    let wsgi = WsgiUpstream::start();
    let gw = Gateway::start(&admin_config(&format!("127.0.0.1:{}", wsgi.port), ""));
    // With a real key: the upstream sees exactly the gateway's identity, once.
    let mut headers = SPOOF.to_vec();
    headers.push(("X-API-Key", KEY));
    let (status, text) = get_raw(&gw, "/admin/x", &headers);
    assert_eq!(status, 200, "{text}");
    let env = body_json(&text);
    assert_eq!(env["HTTP_X_CONSUMER_ID"], "acme", "{env}");
    assert_eq!(env["HTTP_X_CONSUMER_TIER"], "free", "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "{env}");
    assert!(env.get("HTTP_X_CUSTOM").is_none(), "{env}");
    // Anonymous: no identity at all.
    let (status, text) = get_raw(&gw, "/public", SPOOF);
    assert_eq!(status, 200, "{text}");
    let env = body_json(&text);
    assert!(env.get("HTTP_X_CONSUMER_ID").is_none(), "{env}");
    assert!(env.get("HTTP_X_CONSUMER_TIER").is_none(), "{env}");
    assert_eq!(
        gw.metric("gateway_edge_underscore_headers_dropped_total"),
        10.0
    );
}

#[test]
fn underscore_headers_can_be_refused_or_allowed() {
    let wsgi = WsgiUpstream::start();
    let addr = format!("127.0.0.1:{}", wsgi.port);
    let gw = Gateway::start(&admin_config(
        &addr,
        "edge:\n  headers_with_underscores: reject\n",
    ));
    let (status, text) = get_raw(&gw, "/public", &[("X_Custom", "1")]);
    assert_eq!(status, 400, "{text}");
    assert_eq!(body_json(&text)["error"], "header name with underscore");
    assert_eq!(get_raw(&gw, "/public", &[("X-Custom", "1")]).0, 200);
    assert_eq!(
        gw.metric("gateway_edge_refused_total{reason=\"underscore_header\"}"),
        1.0
    );
    drop(gw);

    let gw = Gateway::start(&admin_config(
        &addr,
        "edge:\n  headers_with_underscores: allow\n",
    ));
    let mut headers = SPOOF.to_vec();
    headers.push(("X-API-Key", KEY));
    let (status, text) = get_raw(&gw, "/admin/x", &headers);
    assert_eq!(status, 200, "{text}");
    let env = body_json(&text);
    assert_eq!(env["HTTP_X_CUSTOM"], "1", "other names pass: {env}");
    assert_eq!(env["HTTP_X_CONSUMER_ID"], "acme", "{env}");
    assert_eq!(env["HTTP_X_CONSUMER_TIER"], "free", "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "127.0.0.1", "{env}");
}

#[test]
fn a_gateway_made_502_keeps_its_connection_promise() {
    // A backend port nothing listens on: every attempt is refused, answered 502 by us.
    let dead = free_port();
    let gw = Gateway::start(&format!(
        "upstreams:
  app:
    backends:
      - addr: 127.0.0.1:{dead}
    circuit_breaker:
      enabled: false
routes:
  - path_prefix: /
    host: a
    upstream: app
    retries: 0
"
    ));
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let (complete, text) = read_response(&mut s);
    assert!(complete, "a whole 502: {text}");
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(body_json(&text)["request_id"].is_string());
    // The gateway closes the connection after a failed proxy attempt, so it must say so.
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let mut rest = [0u8; 64];
    assert!(matches!(s.read(&mut rest), Ok(0)), "closed as announced");

    // A reply made before any upstream is tried (here a 404) keeps the connection open.
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..3 {
        s.write_all(b"GET /x HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap();
        let (complete, text) = read_response(&mut s);
        assert!(
            complete,
            "request {i} on a kept-alive connection got no answer"
        );
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
}

/// A host-scoped admin route in front of a public catch-all.
fn host_config(upstream: &str, edge: &str) -> String {
    protected_config(upstream, "host: admin.example\n    path_prefix: /", edge)
}

fn send(gw: &Gateway, head: &str) -> (u16, String) {
    raw_request(
        gw.port,
        format!("{head}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn every_spelling_of_a_host_is_routed_as_one_and_odd_targets_are_refused() {
    let wsgi = WsgiUpstream::start();
    let gw = Gateway::start(&host_config(&format!("127.0.0.1:{}", wsgi.port), ""));
    for host in [
        "admin.example",
        "ADMIN.Example",
        "admin.example.",
        "admin.example:8000",
    ] {
        let (status, text) = send(&gw, &format!("GET /x HTTP/1.1\r\nHost: {host}"));
        assert_eq!(
            status, 401,
            "Host: {host} must reach the admin route: {text}"
        );
    }
    let (status, text) = send(
        &gw,
        &format!("GET /x HTTP/1.1\r\nHost: Admin.Example.\r\nX-API-Key: {KEY}"),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        body_json(&text)["HTTP_HOST"],
        "admin.example",
        "the upstream gets the canonical host"
    );
    // An absolute-form target without Host is routed on its authority.
    let (status, text) = send(&gw, "GET http://admin.example/x HTTP/1.1");
    assert_eq!(status, 401, "{text}");
    for (head, why) in [
        (
            "GET /x HTTP/1.1\r\nHost: admin.example:8o",
            "invalid port in Host",
        ),
        ("GET /x HTTP/1.1\r\nHost: a b", "invalid Host"),
        ("GET /x HTTP/1.1", "missing Host header"),
        (
            "GET ?/../admin HTTP/1.1\r\nHost: a",
            "path must start with '/'",
        ),
        (
            "GET admin/x HTTP/1.1\r\nHost: a",
            "path must start with '/'",
        ),
    ] {
        let (status, text) = send(&gw, head);
        assert_eq!(status, 400, "{head:?}: {text}");
        assert_eq!(body_json(&text)["error"], why, "{head:?}");
    }
    // Userinfo in an absolute-form target: Pingora's parser refuses it first (its own 400).
    assert_eq!(send(&gw, "GET http://user@admin.example/x HTTP/1.1").0, 400);
    // HTTP/1.0 may omit Host; it is then only the catch-all's.
    let (status, text) = send(&gw, "GET /x HTTP/1.0\r\nX-Forwarded-Host: evil.example");
    assert_eq!(status, 200, "{text}");
    assert!(
        body_json(&text).get("HTTP_X_FORWARDED_HOST").is_none(),
        "{text}"
    );
}

#[test]
fn forwarding_headers_and_credentials_reach_the_upstream_only_from_the_gateway() {
    let wsgi = WsgiUpstream::start();
    let addr = format!("127.0.0.1:{}", wsgi.port);
    let gw = Gateway::start(&host_config(&addr, ""));
    let (status, text) = send(
        &gw,
        &format!("GET /x HTTP/1.1\r\nHost: www.example\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-API-Key: {KEY}"),
    );
    assert_eq!(status, 200, "{text}");
    let env = body_json(&text);
    assert!(env.get("HTTP_X_REAL_IP").is_none(), "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_HOST"], "www.example", "{env}");
    assert!(
        env.get("HTTP_X_API_KEY").is_none(),
        "a credential never reaches the upstream, even on a public route: {env}"
    );
    // Repeated Content-Length: identical values are merged, different ones refused.
    let (status, text) = raw_request(
        gw.port,
        b"POST /x HTTP/1.1\r\nHost: www.example\r\nContent-Length: 1, 1\r\nConnection: close\r\n\r\na",
    );
    assert_eq!(status, 200, "{text}");
    let (status, text) = raw_request(
        gw.port,
        b"POST /x HTTP/1.1\r\nHost: www.example\r\nContent-Length: 1\r\nContent-Length: 1\r\nConnection: close\r\n\r\na",
    );
    assert_eq!(status, 200, "{text}");
    drop(gw);

    // With underscores allowed, the `_` spellings of credential headers still never pass.
    let gw = Gateway::start(&host_config(
        &addr,
        "edge:\n  headers_with_underscores: allow\n",
    ));
    let (status, text) = send(
        &gw,
        &format!("GET /x HTTP/1.1\r\nHost: admin.example\r\nX-API-Key: {KEY}\r\nX_API_Key: victim-key\r\nTransfer_Encoding: chunked\r\nX_Other: 1"),
    );
    assert_eq!(status, 200, "{text}");
    let env = body_json(&text);
    assert!(env.get("HTTP_X_API_KEY").is_none(), "{env}");
    assert!(env.get("HTTP_TRANSFER_ENCODING").is_none(), "{env}");
    assert_eq!(env["HTTP_X_OTHER"], "1", "{env}");
}

/// An upstream that answers every request with its header exactly as the bytes arrived,
/// with a reason phrase and a header name of its own spelling.
fn raw_echo_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 Fine\r\nX-Upstream-Header: v\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    head.len()
                );
                let _ = conn.write_all(reply.as_bytes());
                let _ = conn.write_all(&head);
            });
        }
    });
    port
}

/// The header lines (not the request line) as forwarded to the upstream, and the
/// response's status line and header lines as the client got them.
fn forwarded_lines(gw: &Gateway) -> (Vec<String>, Vec<String>) {
    let (status, text) = get_raw(
        gw,
        "/x?q=1",
        &[("X-Custom-Header", "a"), ("user-AGENT", "test")],
    );
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    (
        body.lines().skip(1).map(str::to_owned).collect(),
        head.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn header_names_pass_in_lower_case_unless_told_to_keep_their_spelling() {
    let port = raw_echo_upstream();
    let config = |edge: &str| {
        format!(
            "upstreams:\n  app:\n    backends: [{{addr: 127.0.0.1:{port}}}]\nroutes:\n  - path_prefix: /\n    upstream: app\n{edge}"
        )
    };
    // Default: the client's spelling is not kept: names in lower case (as HAProxy, Envoy
    // and HTTP/2 have them), a few framing ones such as Host Title-Cased by Pingora. The
    // same for the upstream's response; its reason phrase is kept either way.
    let gw = Gateway::start(&config(""));
    let (lines, resp) = forwarded_lines(&gw);
    let has = |lines: &[String], want: &str| lines.iter().any(|l| l == want);
    assert!(has(&lines, "x-custom-header: a"), "{lines:?}");
    assert!(has(&lines, "user-agent: test"), "{lines:?}");
    assert!(has(&lines, "Host: 127.0.0.1"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("X-Custom-Header")),
        "{lines:?}"
    );
    assert_eq!(resp[0], "HTTP/1.1 200 Fine", "{resp:?}");
    assert!(has(&resp, "x-upstream-header: v"), "{resp:?}");
    drop(gw);
    // Kept on request (as nginx): every name as the client and the upstream spelt it.
    let gw = Gateway::start(&config("edge:\n  preserve_header_case: true\n"));
    let (lines, resp) = forwarded_lines(&gw);
    assert!(has(&lines, "X-Custom-Header: a"), "{lines:?}");
    assert!(has(&lines, "user-AGENT: test"), "{lines:?}");
    assert_eq!(resp[0], "HTTP/1.1 200 Fine", "{resp:?}");
    assert!(has(&resp, "X-Upstream-Header: v"), "{resp:?}");
}
