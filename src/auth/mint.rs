//! `gateway token`: signs a test JWT with an HMAC key of the config, so a user can try
//! authenticated routes and tiers without writing a signing script.

use crate::config::AuthConfig;
use jsonwebtoken::{encode, Header};
use serde_json::{Map, Value};
use std::time::Duration;

/// What the token says.
#[derive(Debug, Clone)]
pub struct TokenRequest<'a> {
    /// Which issuer of the config (its `issuer` value); the first one with an HMAC key
    /// when `None`.
    pub issuer: Option<&'a str>,
    pub subject: &'a str,
    /// A tier name: the issuer's `tier_claim` is set to a value that maps to it.
    pub tier: Option<&'a str>,
    /// More claims, as strings.
    pub claims: &'a [(String, String)],
    pub lifetime: Duration,
    /// Unix seconds.
    pub now: u64,
}

/// A signed token the config's verifier accepts, or why none can be made.
pub fn mint(auth: &AuthConfig, req: &TokenRequest<'_>) -> Result<String, String> {
    let jwt = auth
        .jwt
        .as_ref()
        .ok_or("the config has no auth.jwt section")?;
    let (issuer, key) = jwt
        .issuers
        .iter()
        .filter(|i| req.issuer.is_none_or(|want| i.issuer == want))
        .find_map(|i| i.keys.iter().find(|k| k.signing.is_some()).map(|k| (i, k)))
        .ok_or(match req.issuer {
            Some(want) => format!("no issuer \"{want}\" with an HMAC key (HS256/384/512) in auth.jwt"),
            None => "no issuer with an HMAC key (HS256/384/512) in auth.jwt: tokens for public keys are signed by their issuer".to_string(),
        })?;
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::from(issuer.issuer.clone()));
    let audience = issuer.audience.first().cloned().unwrap_or_default();
    claims.insert("aud".into(), Value::from(audience));
    claims.insert(issuer.consumer_claim.clone(), Value::from(req.subject));
    claims.insert("iat".into(), Value::from(req.now));
    claims.insert("nbf".into(), Value::from(req.now));
    claims.insert("exp".into(), Value::from(req.now + req.lifetime.as_secs()));
    if let Some(tier) = req.tier {
        let index = auth
            .tiers
            .iter()
            .position(|t| t == tier)
            .ok_or_else(|| format!("no tier \"{tier}\" (tiers: {})", auth.tiers.join(", ")))?;
        let claim = issuer
            .tier_claim
            .as_ref()
            .ok_or("the issuer has no tier_claim: its tokens all get default_tier")?;
        let (value, _) = issuer
            .tier_values
            .iter()
            .find(|(_, t)| t.0 == index)
            .ok_or_else(|| format!("no value of tier_claim {claim} maps to tier \"{tier}\""))?;
        claims.insert(claim.clone(), Value::from(value.clone()));
    }
    for (name, value) in req.claims {
        claims.insert(name.clone(), Value::from(value.clone()));
    }
    let mut header = Header::new(key.algorithm);
    header.kid = key.kid.clone();
    let signing = key.signing.as_ref().ok_or("the key cannot sign")?;
    encode(&header, &Value::Object(claims), signing).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use pingora::http::RequestHeader;

    const CONFIG: &str = "upstreams:\n  a:\n    backends:\n      - addr: 127.0.0.1:1\nroutes:\n  - upstream: a\nauth:\n  tiers: [free, premium]\n  jwt:\n    issuers:\n      - issuer: https://i.test\n        audience: [api]\n        tier_claim: plan\n        tier_values: {pro: premium, basic: free}\n        default_tier: free\n        keys:\n          - kid: k1\n            algorithm: HS256\n            secret: \"0123456789abcdef0123456789abcdef\"\n";

    fn request(now: u64, tier: Option<&'static str>) -> TokenRequest<'static> {
        TokenRequest {
            issuer: None,
            subject: "alice",
            tier,
            claims: &[],
            lifetime: Duration::from_secs(600),
            now,
        }
    }

    #[test]
    fn minted_tokens_are_accepted_by_the_same_config() {
        let cfg = crate::config::parse(CONFIG).unwrap();
        let auth = Authenticator::new(&cfg.auth);
        let now = crate::auth::unix_now();
        for (tier, want) in [(Some("premium"), 2), (Some("free"), 1), (None, 1)] {
            let token = mint(&cfg.auth, &request(now, tier)).unwrap();
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header("authorization", format!("Bearer {token}"))
                .unwrap();
            let p = auth.authenticate(&req, now).unwrap().unwrap();
            assert_eq!(p.consumer.as_ref(), "alice");
            assert_eq!(p.tier.0, want, "{tier:?}");
        }
    }

    #[test]
    fn what_cannot_be_minted_says_why() {
        let cfg = crate::config::parse(CONFIG).unwrap();
        let err = mint(&cfg.auth, &request(0, Some("gold"))).unwrap_err();
        assert!(err.contains("no tier \"gold\""), "{err}");
        let other = TokenRequest {
            issuer: Some("https://other.test"),
            ..request(0, None)
        };
        assert!(mint(&cfg.auth, &other).unwrap_err().contains("no issuer"));
    }
}
