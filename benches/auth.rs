//! What verifying a credential costs: JWT HS256, RS256 and ES256 with and without the
//! verified-token cache, and an API key.

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::auth::{unix_now, Authenticator};
use gateway::config;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pingora::http::RequestHeader;
use std::hint::black_box;

const SECRET: &str = "0123456789abcdef0123456789abcdef-bench";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> Vec<u8> {
    match std::fs::read(fixture(name)) {
        Ok(b) => b,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let claims = serde_json::json!({"sub": "bench-user", "iss": "i", "aud": "a", "exp": unix_now() + 3600, "plan": "pro"});
    match encode(&h, &claims, key) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

fn benches(c: &mut Criterion) {
    let text = format!(
        "upstreams:\n  a:\n    backends:\n      - addr: 127.0.0.1:1\nroutes:\n  - upstream: a\nauth:\n  tiers: [free, premium]\n  jwt:\n    issuers:\n      - issuer: i\n        audience: [a]\n        tier_claim: plan\n        tier_values: {{pro: premium}}\n        default_tier: free\n        keys:\n          - {{kid: hs, algorithm: HS256, secret: \"{SECRET}\"}}\n          - {{kid: rs, algorithm: RS256, public_key_file: {}}}\n          - {{kid: es, algorithm: ES256, public_key_file: {}}}\n  api_keys:\n    keys:\n      - {{consumer: acme, tier: premium, sha256: {}}}\n",
        fixture("rsa-public.pem"),
        fixture("ec-public.pem"),
        gateway::auth::hash_key("bench-key")
    );
    let cfg = match config::parse(&text) {
        Ok(c) => c,
        Err(p) => panic!("{p:?}"),
    };
    let auth = Authenticator::new(&cfg.auth);
    let rsa = EncodingKey::from_rsa_pem(&read("rsa-private.pem")).unwrap_or_else(|e| panic!("{e}"));
    let ec = EncodingKey::from_ec_pem(&read("ec-private.pem")).unwrap_or_else(|e| panic!("{e}"));
    let tokens = [
        (
            "HS256",
            token(
                Algorithm::HS256,
                "hs",
                &EncodingKey::from_secret(SECRET.as_bytes()),
            ),
        ),
        ("RS256", token(Algorithm::RS256, "rs", &rsa)),
        ("ES256", token(Algorithm::ES256, "es", &ec)),
    ];
    let now = unix_now();
    for (alg, t) in &tokens {
        assert!(auth.verify_uncached(t, now).is_ok(), "{alg}");
        c.bench_function(&format!("auth/jwt {alg} verify, uncached"), |b| {
            b.iter(|| black_box(auth.verify_uncached(black_box(t), now)))
        });
        let mut req = match RequestHeader::build("GET", b"/", None) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let _ = req.insert_header("authorization", format!("Bearer {t}"));
        assert!(matches!(auth.authenticate(&req, now), Ok(Some(_))));
        c.bench_function(&format!("auth/jwt {alg} authenticate, cached"), |b| {
            b.iter(|| black_box(auth.authenticate(black_box(&req), now)))
        });
    }
    let mut req = match RequestHeader::build("GET", b"/", None) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let _ = req.insert_header("x-api-key", "bench-key");
    assert!(matches!(auth.authenticate(&req, now), Ok(Some(_))));
    c.bench_function("auth/api key authenticate", |b| {
        b.iter(|| black_box(auth.authenticate(black_box(&req), now)))
    });
}

criterion_group!(auth, benches);
criterion_main!(auth);
