use super::*;
use crate::config;

fn auth(extra: &str) -> Authenticator {
    let text = format!(
        "upstreams:\n  a:\n    backends:\n      - addr: 127.0.0.1:1\nroutes:\n  - upstream: a\nauth:\n  tiers: [free]\n{extra}"
    );
    let cfg = config::parse(&text).unwrap();
    Authenticator::new(&cfg.auth)
}

fn req(headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/", None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

const JWT: &str = "  jwt:\n    from: FROM\n    issuers:\n      - issuer: i\n        audience: [a]\n        default_tier: free\n        keys:\n          - algorithm: HS256\n            secret: \"0123456789abcdef0123456789abcdef\"\n";

#[test]
fn token_sources() {
    let bearer = auth(&JWT.replace("FROM", "bearer"));
    assert_eq!(
        bearer.token(&req(&[("authorization", "Bearer abc")])),
        Some("abc")
    );
    assert_eq!(
        bearer.token(&req(&[("authorization", "bearer  abc ")])),
        Some("abc")
    );
    assert_eq!(bearer.token(&req(&[("authorization", "Basic abc")])), None);
    let cookie = auth(&JWT.replace("FROM", "cookie:session"));
    assert_eq!(
        cookie.token(&req(&[("cookie", "a=1; session=tok; b=2")])),
        Some("tok")
    );
    assert_eq!(cookie.token(&req(&[("cookie", "sessionx=tok")])), None);
    let header = auth(&JWT.replace("FROM", "header:X-Token"));
    assert_eq!(header.token(&req(&[("x-token", "tok")])), Some("tok"));
}

#[test]
fn no_credential_is_not_an_error_and_garbage_is() {
    let a = auth(&JWT.replace("FROM", "bearer"));
    assert_eq!(a.authenticate(&req(&[]), 0), Ok(None));
    assert_eq!(
        a.authenticate(&req(&[("authorization", "Bearer x")]), 0),
        Err(AuthError::Malformed)
    );
    let long = format!("Bearer {}", "a".repeat(20_000));
    assert_eq!(
        a.authenticate(&req(&[("authorization", &long)]), 0),
        Err(AuthError::Malformed)
    );
}

#[test]
fn cache_entries_expire_with_the_token() {
    let c = cache::VerifiedCache::new(4);
    let p = Principal {
        consumer: "c".into(),
        tier: crate::config::TierId(1),
        method: Method::Jwt,
    };
    let d = cache::digest(b"t");
    c.insert(d, p.clone(), 100);
    assert_eq!(c.get(&d, 99), Some(p));
    assert_eq!(c.get(&d, 100), None);
    c.clear();
    assert_eq!(c.get(&d, 0), None);
}

#[test]
fn hash_key_is_sha256_hex() {
    assert_eq!(
        hash_key("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hash_key("abc\n"),
        hash_key("abc"),
        "a trailing newline from stdin is ignored"
    );
}

#[test]
fn config_refuses_weak_or_confused_keys() {
    let text = |key: &str| {
        format!("upstreams:\n  a:\n    backends:\n      - addr: 127.0.0.1:1\nroutes:\n  - upstream: a\nauth:\n  jwt:\n    issuers:\n      - issuer: i\n        audience: [a]\n        default_tier: anonymous\n        keys:\n          - {key}\n")
    };
    let problems = |key: &str| config::parse(&text(key)).err().unwrap_or_default();
    let p = problems("{algorithm: HS256, secret: short}");
    assert!(
        p.iter().any(|x| x.message.contains("at least 32 bytes")),
        "{p:?}"
    );
    let p = problems("{algorithm: RS256, secret: \"0123456789abcdef0123456789abcdef\"}");
    assert!(
        p.iter().any(|x| x.message.contains("PEM public key")),
        "{p:?}"
    );
    let p = problems("{algorithm: HS256, public_key: \"-----BEGIN PUBLIC KEY-----\"}");
    assert!(
        p.iter().any(|x| x.message.contains("take a secret")),
        "{p:?}"
    );
    let p = problems("{algorithm: none, secret: x}");
    assert!(
        p.iter().any(|x| x.message.contains("unknown algorithm")),
        "{p:?}"
    );
    let p = problems("{algorithm: RS256, public_key: \"not a pem\"}");
    assert!(p.iter().any(|x| x.message.contains("not a valid")), "{p:?}");
}

#[test]
fn the_credential_cookie_is_removed_and_the_others_kept() {
    let a = auth(&JWT.replace("FROM", "cookie:session"));
    let mut h = http::HeaderMap::new();
    h.append("cookie", "a=1; session=tok".parse().unwrap());
    h.append("cookie", "b=2".parse().unwrap());
    assert_eq!(
        a.without_credential_cookie(Method::Jwt, &h).as_deref(),
        Some("a=1; b=2")
    );
    assert_eq!(a.without_credential_cookie(Method::ApiKey, &h), None);
    let bearer = auth(&JWT.replace("FROM", "bearer"));
    assert_eq!(bearer.without_credential_cookie(Method::Jwt, &h), None);
    let mut only = http::HeaderMap::new();
    only.append("cookie", "session=tok".parse().unwrap());
    assert_eq!(
        a.without_credential_cookie(Method::Jwt, &only).as_deref(),
        Some("")
    );
}
