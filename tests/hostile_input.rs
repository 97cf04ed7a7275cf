//! Property tests of every parser that reads client input: request ids, traceparent,
//! `X-Forwarded-For` walking, JWT handling and cookie parsing. (The path normaliser's
//! properties are beside it in src/edge/path.rs; the config loader's in tests/config_errors.rs
//! and src/config.) Each property holds for every input, not just the ones we thought of.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gateway::auth::Authenticator;
use gateway::client_ip::client_ip;
use gateway::config;
use gateway::correlation::{self, IdSource};
use http::HeaderValue;
use pingora::http::RequestHeader;
use proptest::prelude::*;
use std::net::IpAddr;

const NOW: u64 = 1_800_000_000;

fn authenticator(from: &str) -> Authenticator {
    let text = format!(
        "upstreams:\n  a:\n    backends:\n      - addr: 127.0.0.1:1\nroutes:\n  - upstream: a\nauth:\n  tiers: [free]\n  jwt:\n    from: {from}\n    issuers:\n      - issuer: i\n        audience: [a]\n        default_tier: free\n        keys:\n          - algorithm: HS256\n            secret: \"0123456789abcdef0123456789abcdef\"\n"
    );
    Authenticator::new(&config::parse(&text).unwrap().auth)
}

fn request(headers: &[(&str, &[u8])]) -> Option<RequestHeader> {
    let mut r = RequestHeader::build("GET", b"/", None).ok()?;
    for (k, v) in headers {
        r.append_header(k.to_string(), HeaderValue::from_bytes(v).ok()?)
            .ok()?;
    }
    Some(r)
}

/// Bytes a header value may hold (http refuses CR, LF, NUL and other controls but tab).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            8 => 0x20u8..0x7f,
            1 => Just(b'\t'),
            1 => 0x80u8..=0xff,
        ],
        0..200,
    )
}

/// A base64url JSON segment: random JSON-ish values, some of them plausible claims.
fn json_segment() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(r#"{"alg":"HS256","typ":"JWT"}"#.to_string()),
        Just(r#"{"alg":"none"}"#.to_string()),
        Just(r#"{"alg":"RS256","kid":"x"}"#.to_string()),
        Just(r#"{"sub":"a","iss":"i","aud":"a","exp":1900000000}"#.to_string()),
        Just(r#"{"sub":1,"iss":["i"],"aud":{},"exp":"soon"}"#.to_string()),
        Just("[]".to_string()),
        Just("null".to_string()),
        "\\PC{0,40}",
    ];
    value.prop_map(|v| URL_SAFE_NO_PAD.encode(v))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Whatever a client sends as its id, the id forwarded and logged is a safe one, and
    /// a safe one is kept as sent.
    #[test]
    fn request_ids_are_kept_only_when_safe(bytes in header_bytes()) {
        let Ok(v) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let (id, source) = correlation::assign(Some(&v), true).unwrap();
        prop_assert!(correlation::is_valid_request_id(id.as_bytes()));
        if correlation::is_valid_request_id(&bytes) {
            prop_assert_eq!(source, IdSource::Kept);
            prop_assert_eq!(id.as_bytes(), &bytes[..]);
        } else {
            prop_assert_eq!(source, IdSource::Minted);
        }
        let (_, untrusted) = correlation::assign(Some(&v), false).unwrap();
        prop_assert_eq!(untrusted, IdSource::Minted);
    }

    #[test]
    fn traceparent_validation_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = correlation::is_valid_traceparent(&bytes);
    }

    /// Valid traceparents pass, and changing any one character of the fixed part to a
    /// non-hex byte (or an upper-case one) makes them fail.
    #[test]
    fn traceparents_are_checked_exactly(
        trace in "[0-9a-f]{32}", parent in "[0-9a-f]{16}", flags in "[0-9a-f]{2}",
        at in 0usize..55, bad in prop_oneof![Just(b'g'), Just(b'A'), Just(b' '), Just(b'_')],
    ) {
        let tp = format!("00-{trace}-{parent}-{flags}");
        let zero = trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0');
        prop_assert_eq!(correlation::is_valid_traceparent(tp.as_bytes()), !zero);
        let mut broken = tp.into_bytes();
        broken[at] = bad;
        prop_assert!(!correlation::is_valid_traceparent(&broken));
    }

    /// The client IP is the peer, or an address the header really names; an untrusted
    /// peer is never overridden, whatever the header says.
    #[test]
    fn forwarded_for_walking_only_believes_trusted_hops(
        bytes in header_bytes(),
        hops in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..6),
        peer_trusted in any::<bool>(),
    ) {
        let mut list: Vec<String> = hops.iter().map(|(a, b)| format!("10.{a}.{b}.1")).collect();
        list.push(String::from_utf8_lossy(&bytes).replace(['\r', '\n', '\0'], ""));
        let text = list.join(", ");
        let Ok(xff) = HeaderValue::from_str(&text) else { return Ok(()) };
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = if peer_trusted { "10.9.9.9" } else { "192.0.2.7" }.parse().unwrap();
        let ip = client_ip(peer, Some(&xff), &trusted);
        if !peer_trusted {
            prop_assert_eq!(ip, peer);
        } else {
            prop_assert!(ip == peer || text.contains(&ip.to_string()), "{} from {}", ip, text);
        }
        prop_assert_eq!(client_ip(peer, Some(&xff), &[]), peer);
    }

    /// Random and mangled tokens never authenticate and never panic, from any source.
    #[test]
    fn forged_tokens_never_authenticate(
        header in json_segment(), claims in json_segment(), sig in "[A-Za-z0-9_-]{0,60}",
        extra in prop_oneof![Just(""), Just("."), Just(".x"), Just("..")],
        raw in header_bytes(),
    ) {
        let token = format!("{header}.{claims}.{sig}{extra}");
        for (from, name, value) in [
            ("bearer", "authorization", format!("Bearer {token}").into_bytes()),
            ("bearer", "authorization", raw.clone()),
            ("header:x-token", "x-token", token.clone().into_bytes()),
            ("cookie:jwt", "cookie", format!("a=b; jwt={token}; c=d").into_bytes()),
            ("cookie:jwt", "cookie", raw.clone()),
        ] {
            let auth = authenticator(from);
            let Some(req) = request(&[(name, &value)]) else { continue };
            let accepted = auth.authenticate(&req, NOW);
            prop_assert!(!matches!(accepted, Ok(Some(_))), "forged token accepted: {:?} {}", accepted, token);
        }
    }

    /// The credential cookie never reaches the upstream; every other cookie does.
    #[test]
    fn the_credential_cookie_is_always_stripped(
        cookies in proptest::collection::vec(("[a-zA-Z_]{1,8}", "[ -:<-~]{0,12}"), 0..6),
        raw in header_bytes(),
    ) {
        let auth = authenticator("cookie:jwt");
        let mut pairs: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.insert(pairs.len() / 2, "jwt=secret.token.value".to_string());
        let header = pairs.join("; ");
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&header) {
            headers.append(http::header::COOKIE, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&raw) {
            headers.append(http::header::COOKIE, v);
        }
        let kept = auth
            .without_credential_cookie(gateway::auth::Method::Jwt, &headers)
            .unwrap();
        prop_assert!(
            !kept.split(';').any(|kv| kv.trim().split_once('=').is_some_and(|(k, _)| k == "jwt")),
            "{}", kept
        );
        for (k, v) in &cookies {
            if k != "jwt" && !v.contains(';') {
                let pair = format!("{k}={v}");
                let pair = pair.trim();
                prop_assert!(kept.contains(pair), "{} lost from {}", pair, kept);
            }
        }
    }
}
