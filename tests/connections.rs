//! Client connections end to end: the request-header deadline (slowloris), the keep-alive
//! idle timeout, the connection cap and the header size limit, against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, wait_for, Gateway, Upstream};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn gateway(server_extra: &str, up: &Upstream) -> Gateway {
    Gateway::start_with_server(
        server_extra,
        &format!(
            "upstreams:\n  app:\n    backends:\n      - addr: {}\nroutes:\n  - path_prefix: /\n    upstream: app\n",
            up.addr()
        ),
    )
}

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response (head and Content-Length body) off a kept-alive connection.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => out.push(byte[0]),
            other => panic!("connection ended inside a response head: {other:?}"),
        }
    }
    let head = String::from_utf8_lossy(&out).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head + &String::from_utf8_lossy(&body))
}

/// What the peer does next: `None` if it closed (EOF or reset), else the bytes it sent.
fn read_or_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(0) => None,
        Ok(n) => Some(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the gateway neither answered nor closed within the read timeout")
        }
        Err(_) => None,
    }
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn slow_headers_are_cut_at_the_deadline_while_normal_requests_flow() {
    const SLOW: usize = 500;
    let up = Upstream::start("app");
    let gw = gateway("  client_header_timeout: 1s\n", &up);
    // Slowloris: every connection sends one byte of a header every 300 ms, never its end.
    let trickle =
        b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    struct Slow {
        s: TcpStream,
        sent: usize,
        got: Vec<u8>,
        closed: bool,
    }
    let mut slow: Vec<Slow> = (0..SLOW)
        .map(|_| {
            let mut s = connect(&gw);
            s.write_all(&trickle[..1]).unwrap();
            s.set_nonblocking(true).unwrap();
            Slow {
                s,
                sent: 1,
                got: Vec::new(),
                closed: false,
            }
        })
        .collect();
    let started = Instant::now();
    let mut last_byte = Instant::now();
    let mut normal = 0;
    // The deadline is 1 s; without it they would stay open (Pingora: 60 s per read).
    while slow.iter().any(|c| !c.closed) && started.elapsed() < Duration::from_secs(10) {
        let send = last_byte.elapsed() >= Duration::from_millis(300);
        for c in slow.iter_mut().filter(|c| !c.closed) {
            let mut buf = [0u8; 1024];
            loop {
                match c.s.read(&mut buf) {
                    Ok(0) => c.closed = true,
                    Ok(n) => {
                        c.got.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => c.closed = true,
                }
                break;
            }
            if send && !c.closed && c.got.is_empty() && c.sent < trickle.len() {
                // A failed write means the gateway is closing; the read above will see it.
                if c.s.write_all(&trickle[c.sent..c.sent + 1]).is_ok() {
                    c.sent += 1;
                }
            }
        }
        if send {
            last_byte = Instant::now();
        }
        // Normal clients are served during the attack.
        let r = get(&gw.url("/normal"), &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        normal += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let open = slow.iter().filter(|c| !c.closed).count();
    assert_eq!(open, 0, "{open} slow connections still open after 10 s");
    let answered: Vec<String> = slow
        .iter()
        .map(|c| String::from_utf8_lossy(&c.got).to_string())
        .collect();
    let timeouts = answered
        .iter()
        .filter(|t| t.starts_with("HTTP/1.1 408 "))
        .count();
    assert_eq!(
        timeouts,
        SLOW,
        "every slow client sent bytes, so each gets a 408; first: {:?}",
        answered.first()
    );
    let first = &answered[0];
    assert!(first.contains("connection: close"), "{first}");
    let body = &first[first.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"], "request header timeout");
    assert!(!json["request_id"].as_str().unwrap().is_empty());
    assert!(normal > 0);
    eprintln!(
        "{SLOW} slow connections closed after {:?}; {normal} normal requests served meanwhile",
        started.elapsed()
    );
    assert_eq!(
        gw.metric("gateway_downstream_closed_total{reason=\"header_timeout\"}"),
        SLOW as f64
    );
    assert_eq!(
        gw.metric("gateway_requests_total{route=\"none\",status=\"408\"}"),
        SLOW as f64
    );
    wait_for("open connections to drop", Duration::from_secs(5), || {
        (gw.metric("gateway_downstream_connections") == 0.0).then_some(())
    });
}

#[test]
fn a_new_connection_that_sends_nothing_is_closed_without_an_answer() {
    let up = Upstream::start("app");
    let gw = gateway("  client_header_timeout: 500ms\n", &up);
    let mut s = connect(&gw);
    assert_eq!(read_or_closed(&mut s), None, "closed, nothing written");
    assert_eq!(
        gw.metric("gateway_downstream_closed_total{reason=\"header_timeout\"}"),
        1.0
    );
}

#[test]
fn a_header_sent_in_pieces_within_the_deadline_is_served() {
    let up = Upstream::start("app");
    let gw = gateway("  client_header_timeout: 5s\n", &up);
    let mut s = connect(&gw);
    for piece in [
        &b"GET /pieces HT"[..],
        b"TP/1.1\r\nHost: t\r",
        b"\n\r",
        b"\n",
    ] {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100)); // pacing the client, not synchronising
    }
    let (status, text) = read_response(&mut s);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"path\":\"/pieces\""), "{text}");
    // A body in the same packet as the header, then a second request: framing intact.
    s.write_all(b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let (status, text) = read_response(&mut s);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"method\":\"POST\""), "{text}");
    s.write_all(GET).unwrap();
    assert_eq!(read_response(&mut s).0, 200);
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let up = Upstream::start("app");
    let gw = gateway("  keepalive_timeout: 1s\n", &up);
    let mut s = connect(&gw);
    // Keep-alive works: two requests on one connection...
    for _ in 0..2 {
        s.write_all(GET).unwrap();
        assert_eq!(read_response(&mut s).0, 200);
    }
    // ...and an idle one is closed (Pingora alone kept it forever).
    assert_eq!(read_or_closed(&mut s), None);
    assert_eq!(
        gw.metric("gateway_downstream_closed_total{reason=\"idle_timeout\"}"),
        1.0
    );
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let up = Upstream::start("app");
    let gw = gateway("  max_connections: 2\n", &up);
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(&gw);
            s.write_all(GET).unwrap();
            assert_eq!(read_response(&mut s).0, 200);
            s
        })
        .collect();
    assert_eq!(gw.metric("gateway_downstream_connections"), 2.0);
    let mut third = connect(&gw);
    let _ = third.write_all(GET);
    assert_eq!(
        read_or_closed(&mut third),
        None,
        "refused without an answer"
    );
    assert_eq!(gw.metric("gateway_downstream_refused_total"), 1.0);
    // A place frees up when a connection closes.
    held.pop();
    wait_for(
        "a connection to be accepted again",
        Duration::from_secs(5),
        || {
            let mut s = connect(&gw);
            s.write_all(GET).ok()?;
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).ok()?;
            (&buf == b"HTTP/1.1 200").then_some(())
        },
    );
}

#[test]
fn an_oversized_header_is_431() {
    let up = Upstream::start("app");
    let gw = gateway("  max_header_bytes: 4096\n", &up);
    let fits = format!(
        "GET /fits HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    let mut s = connect(&gw);
    s.write_all(fits.as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let mut s = connect(&gw);
    s.write_all(big.as_bytes()).unwrap();
    let (status, text) = read_response(&mut s);
    assert_eq!(status, 431, "{text}");
    assert!(
        text.contains(r#""error":"request header too large""#),
        "{text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("x-request-id: "),
        "{text}"
    );
    assert_eq!(read_or_closed(&mut s), None, "closed after the 431");
    assert_eq!(up.requests(), 1, "the big one never reached the upstream");
}
