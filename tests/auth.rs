//! Authentication end to end: the real gateway verifying real JWTs (HS256, RS256, ES256)
//! and API keys, the attacks a gateway must refuse, and tiers choosing rate limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{get, raw_request, Gateway, Upstream};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";
const ISS: &str = "https://issuer.test";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, plan: &str) -> Value {
    json!({"sub": sub, "iss": ISS, "aud": "api", "exp": now() + 600, "plan": plan})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        Some("hs"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn rs(claims: &Value) -> String {
    let pem = std::fs::read(fixture("rsa-private.pem")).unwrap();
    sign(
        Algorithm::RS256,
        Some("rs"),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
        claims,
    )
}

fn es(claims: &Value) -> String {
    let pem = std::fs::read(fixture("ec-private.pem")).unwrap();
    sign(
        Algorithm::ES256,
        Some("es"),
        &EncodingKey::from_ec_pem(&pem).unwrap(),
        claims,
    )
}

fn ed(claims: &Value) -> String {
    let pem = std::fs::read(fixture("ed-private.pem")).unwrap();
    sign(
        Algorithm::EdDSA,
        Some("ed"),
        &EncodingKey::from_ed_pem(&pem).unwrap(),
        claims,
    )
}

fn config(up: &Upstream, extra: &str) -> String {
    format!(
        "upstreams:
  app:
    backends:
      - addr: {up}
auth:
  tiers: [free, premium]
  jwt:
    issuers:
      - issuer: {ISS}
        audience: [api]
        leeway: 5s
        tier_claim: plan
        tier_values: {{pro: premium, basic: free}}
        default_tier: free
        keys:
          - kid: hs
            algorithm: HS256
            secret: \"{SECRET}\"
          - kid: rs
            algorithm: RS256
            public_key_file: {rsa}
          - kid: es
            algorithm: ES256
            public_key_file: {ec}
          - kid: ed
            algorithm: EdDSA
            public_key_file: {ed}
  api_keys:
    keys:
      - consumer: acme
        tier: premium
        sha256: {acme}
routes:
  - name: premium-only
    path_prefix: /premium
    upstream: app
    auth: required
    tiers: [premium]
  - name: private
    path_prefix: /private
    upstream: app
    auth: required
  - name: public
    path_prefix: /
    upstream: app
    auth: optional
{extra}",
        up = up.addr(),
        rsa = fixture("rsa-public.pem"),
        ec = fixture("ec-public.pem"),
        ed = fixture("ed-public.pem"),
        acme = gateway::auth::hash_key("acme-key"),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn assert_invalid_token(gw: &Gateway, token: &str, what: &str) {
    let r = get(
        &gw.url("/private"),
        &[
            ("Authorization", &bearer(token)),
            ("X-Request-ID", "auth-1"),
        ],
    );
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"gateway\", error=\"invalid_token\""),
        "{what}"
    );
    assert_eq!(r.json()["request_id"], "auth-1");
    assert_eq!(r.json()["error"], "invalid credential");
}

#[test]
fn valid_tokens_of_each_algorithm_pass_and_identify_the_consumer() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, ""));
    for (alg, token) in [
        ("HS256", hs(&claims("u-hs", "basic"))),
        ("RS256", rs(&claims("u-rs", "pro"))),
        ("ES256", es(&claims("u-es", ""))),
        ("EdDSA", ed(&claims("u-ed", ""))),
    ] {
        let r = get(&gw.url("/private"), &[("Authorization", &bearer(&token))]);
        assert_eq!(r.status, 200, "{alg}: {}", r.body);
        let h = &r.json()["headers"];
        assert!(
            h.get("authorization").is_none(),
            "{alg}: the credential is stripped"
        );
        assert_eq!(
            h["x-consumer-id"],
            format!("u-{}", alg[..2].to_ascii_lowercase())
        );
    }
    let r = get(
        &gw.url("/private"),
        &[("Authorization", &bearer(&rs(&claims("u1", "pro"))))],
    );
    assert_eq!(r.json()["headers"]["x-consumer-tier"], "premium");
    let r = get(
        &gw.url("/private"),
        &[("Authorization", &bearer(&hs(&claims("u1", "unknown-plan"))))],
    );
    assert_eq!(
        r.json()["headers"]["x-consumer-tier"],
        "free",
        "unmapped plan -> default tier"
    );
    let line = common::wait_for("access log", std::time::Duration::from_secs(5), || {
        gw.access_lines()
            .into_iter()
            .find(|l| l["consumer"] == "u-rs")
    });
    assert_eq!(line["tier"], "premium");
    let log = std::fs::read_to_string(&gw.access_log).unwrap() + &gw.stderr();
    assert!(!log.contains("eyJ"), "token material in the logs");
}

#[test]
fn missing_credentials_and_tiers() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, ""));
    let r = get(&gw.url("/private"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"gateway\", error=\"invalid_request\"")
    );
    assert_eq!(r.json()["error"], "missing credential");
    // Optional route: anonymous passes, a bad credential does not.
    assert_eq!(get(&gw.url("/"), &[]).status, 200);
    assert_eq!(
        get(&gw.url("/"), &[("Authorization", "Bearer nope")]).status,
        401
    );
    // A valid free-tier token on a premium-only route: 403.
    let r = get(
        &gw.url("/premium"),
        &[("Authorization", &bearer(&hs(&claims("u1", "basic"))))],
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "tier not allowed on this route");
    let r = get(
        &gw.url("/premium"),
        &[("Authorization", &bearer(&hs(&claims("u1", "pro"))))],
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.requests(), 2);
}

#[test]
fn forged_and_broken_tokens_are_refused() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, ""));
    let good = hs(&claims("u1", "pro"));

    // alg: none, with and without a kid.
    let body = base64url(&claims("u1", "pro").to_string());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"none","kid":"hs"}"#,
    ] {
        assert_invalid_token(&gw, &format!("{}.{body}.", base64url(header)), "alg none");
    }
    // Algorithm confusion: the RSA public key used as an HS256 secret.
    let public = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let confused = EncodingKey::from_secret(&public);
    assert_invalid_token(
        &gw,
        &sign(
            Algorithm::HS256,
            Some("rs"),
            &confused,
            &claims("u1", "pro"),
        ),
        "HS256 with kid rs",
    );
    assert_invalid_token(
        &gw,
        &sign(Algorithm::HS256, None, &confused, &claims("u1", "pro")),
        "HS256, no kid",
    );
    // Time: expired, not yet valid; within the 5 s leeway passes.
    let mut c = claims("u1", "pro");
    c["exp"] = json!(now() - 60);
    assert_invalid_token(&gw, &hs(&c), "expired");
    c["exp"] = json!(now() - 2);
    assert_eq!(
        get(&gw.url("/private"), &[("Authorization", &bearer(&hs(&c)))]).status,
        200,
        "within leeway"
    );
    let mut c = claims("u1", "pro");
    c["nbf"] = json!(now() + 600);
    assert_invalid_token(&gw, &hs(&c), "not yet valid");
    // Wrong issuer, wrong audience, no exp.
    let mut c = claims("u1", "pro");
    c["iss"] = json!("https://evil.test");
    assert_invalid_token(&gw, &hs(&c), "wrong iss");
    let mut c = claims("u1", "pro");
    c["aud"] = json!("other");
    assert_invalid_token(&gw, &rs(&c), "wrong aud");
    let mut c = claims("u1", "pro");
    c.as_object_mut().unwrap().remove("exp");
    assert_invalid_token(&gw, &hs(&c), "no exp");
    // Tampered payload: the signature of another body.
    let parts: Vec<&str> = good.split('.').collect();
    let forged = base64url(&claims("admin", "pro").to_string());
    assert_invalid_token(
        &gw,
        &format!("{}.{forged}.{}", parts[0], parts[2]),
        "tampered",
    );
    // Unknown kid; a forged tier from an issuer we do not trust (another RSA key, same kid).
    assert_invalid_token(
        &gw,
        &sign(
            Algorithm::HS256,
            Some("nope"),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims("u1", "pro"),
        ),
        "unknown kid",
    );
    let untrusted =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa2-private.pem")).unwrap()).unwrap();
    assert_invalid_token(
        &gw,
        &sign(
            Algorithm::RS256,
            Some("rs"),
            &untrusted,
            &claims("u1", "pro"),
        ),
        "untrusted key",
    );
    // Malformed: truncated, not base64, garbage.
    assert_invalid_token(&gw, &good[..good.len() / 2], "truncated");
    assert_invalid_token(&gw, "!!!.@@@.###", "not base64");
    assert_invalid_token(&gw, "a.b", "two parts");
    // 64 KB: refused with a 4xx by the gateway or the HTTP parser, never a 5xx.
    let huge = format!(
        "GET /private HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
        "A".repeat(64 * 1024)
    );
    let (status, text) = raw_request(gw.port, huge.as_bytes());
    assert!(
        (400..500).contains(&status) || status == 0,
        "64 KB token: {}",
        &text[..text.len().min(200)]
    );
    assert_eq!(
        up.requests(),
        1,
        "only the within-leeway token reached the upstream"
    );
    assert!(!gw.stderr().contains("panicked"));
}

#[test]
fn api_keys_are_checked_by_digest() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, ""));
    let r = get(&gw.url("/premium"), &[("X-API-Key", "acme-key")]);
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer-id"], "acme");
    assert_eq!(h["x-consumer-tier"], "premium");
    assert!(h.get("x-api-key").is_none(), "the key is stripped");
    let digest = gateway::auth::hash_key("acme-key");
    for bad in ["wrong-key", "", " ", digest.as_str()] {
        let r = get(&gw.url("/private"), &[("X-API-Key", bad)]);
        assert_eq!(r.status, 401, "{bad:?}");
    }
}

#[test]
fn clients_cannot_claim_an_identity() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, ""));
    let r = get(
        &gw.url("/"),
        &[("X-Consumer-Tier", "premium"), ("X-Consumer-ID", "admin")],
    );
    assert_eq!(r.status, 200);
    let h = &r.json()["headers"];
    assert!(
        h.get("x-consumer-tier").is_none() && h.get("x-consumer-id").is_none(),
        "{h}"
    );
    let r = get(
        &gw.url("/"),
        &[
            ("X-Consumer-Tier", "premium"),
            ("Authorization", &bearer(&hs(&claims("u1", "basic")))),
        ],
    );
    assert_eq!(r.json()["headers"]["x-consumer-tier"], "free");
    // And a premium-only route stays closed to them.
    assert_eq!(
        get(&gw.url("/premium"), &[("X-Consumer-Tier", "premium")]).status,
        401
    );
}

#[test]
fn tiers_choose_the_rate_limit() {
    let up = Upstream::start("app");
    let extra = "rate_limits:
  policies:
    free:
      rate: 5
      per: 1m
      key: consumer
    premium:
      rate: 100
      per: 1m
      key: consumer
";
    let text = config(&up, extra).replace(
        "  - name: premium-only",
        "  - name: metered\n    path_prefix: /metered\n    upstream: app\n    auth: required\n    rate_limit: {free: free, premium: premium}\n  - name: premium-only",
    );
    let gw = Gateway::start(&text);
    let free = bearer(&hs(&claims("free-user", "basic")));
    let premium = bearer(&rs(&claims("premium-user", "pro")));
    let (mut free_ok, mut premium_ok) = (0, 0);
    for _ in 0..30 {
        let r = get(&gw.url("/metered"), &[("Authorization", &free)]);
        if r.status == 200 {
            free_ok += 1;
        } else {
            assert_eq!(r.status, 429);
            assert_eq!(r.header("ratelimit-policy"), Some("\"free\";q=5;w=60"));
        }
        let r = get(&gw.url("/metered"), &[("Authorization", &premium)]);
        assert_eq!(r.status, 200, "premium limited: {}", r.body);
        assert_eq!(r.header("ratelimit-policy"), Some("\"premium\";q=100;w=60"));
        premium_ok += 1;
    }
    assert_eq!((free_ok, premium_ok), (5, 30));
    // Another free consumer has its own bucket.
    let other = bearer(&hs(&claims("other-free-user", "basic")));
    assert_eq!(
        get(&gw.url("/metered"), &[("Authorization", &other)]).status,
        200
    );
}

fn base64url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn jwks_keys_are_selected_by_kid_and_reloaded_when_the_file_changes() {
    let up = Upstream::start("app");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::copy(fixture("jwks-rsa.json"), &jwks).unwrap();
    let gw = Gateway::start(&format!(
        "upstreams:
  app:
    backends:
      - addr: {}
auth:
  tiers: [free]
  jwt:
    issuers:
      - issuer: {ISS}
        audience: [api]
        default_tier: free
        jwks_file: {}
routes:
  - path_prefix: /
    upstream: app
    auth: required
",
        up.addr(),
        jwks.display()
    ));
    let key = |f: &str| EncodingKey::from_rsa_pem(&std::fs::read(fixture(f)).unwrap()).unwrap();
    let first = sign(
        Algorithm::RS256,
        Some("rs-jwks"),
        &key("rsa-private.pem"),
        &claims("u1", ""),
    );
    let second = sign(
        Algorithm::RS256,
        Some("rs-jwks"),
        &key("rsa2-private.pem"),
        &claims("u2", ""),
    );
    assert_eq!(
        get(&gw.url("/"), &[("Authorization", &bearer(&first))]).status,
        200
    );
    assert_eq!(
        get(&gw.url("/"), &[("Authorization", &bearer(&second))]).status,
        401
    );
    // Rotate: the same kid now names the second key. The first token, though cached, stops working.
    let tmp = dir.path().join("jwks.json.new");
    std::fs::copy(fixture("jwks-rsa2.json"), &tmp).unwrap();
    std::fs::rename(&tmp, &jwks).unwrap();
    common::wait_for(
        "the new JWKS to be loaded",
        std::time::Duration::from_secs(10),
        || (get(&gw.url("/"), &[("Authorization", &bearer(&second))]).status == 200).then_some(()),
    );
    assert_eq!(
        get(&gw.url("/"), &[("Authorization", &bearer(&first))]).status,
        401
    );
    // A broken file keeps the keys that work.
    std::fs::write(&jwks, "{ not json").unwrap();
    common::wait_for(
        "the broken JWKS to be seen",
        std::time::Duration::from_secs(10),
        || {
            gw.stderr()
                .contains("keeping the previous keys")
                .then_some(())
        },
    );
    assert_eq!(
        get(&gw.url("/"), &[("Authorization", &bearer(&second))]).status,
        200
    );
}

#[test]
fn gateway_token_mints_what_the_gateway_accepts() {
    let up = Upstream::start("app");
    let gw = Gateway::start(&config(&up, ""));
    let mint = |args: &[&str]| {
        let out = std::process::Command::new(common::gateway_bin())
            .arg("-c")
            .arg(&gw.config_path)
            .arg("token")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let token = mint(&["--sub", "alice", "--tier", "premium"]);
    let r = get(
        &gw.url("/premium"),
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-consumer-id"], "alice");
    assert_eq!(r.json()["headers"]["x-consumer-tier"], "premium");
    // A free-tier token is refused by the premium-only route.
    let token = mint(&["--sub", "bob", "--tier", "free"]);
    let r = get(
        &gw.url("/premium"),
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(r.status, 403, "{}", r.body);
}
