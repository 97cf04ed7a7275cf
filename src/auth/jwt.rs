//! JWT verification: keys pinned to one algorithm each, selected by `kid` (or by
//! algorithm when the token has none), with `iss`, `aud`, `exp` and `nbf` checked.

use super::{AuthError, Method, Principal};
use crate::config::{read_jwks, IssuerConfig, JwtConfig, JwtKeyConfig};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One key with the validation rules of its issuer.
struct Key {
    issuer: usize,
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// A JWKS file and the keys last read from it.
struct Jwks {
    issuer: usize,
    path: PathBuf,
    keys: ArcSwap<Vec<Key>>,
    modified: Mutex<Option<SystemTime>>,
}

pub struct Verifier {
    issuers: Vec<IssuerConfig>,
    keys: Vec<Key>,
    jwks: Vec<Jwks>,
}

fn validation(issuer: &IssuerConfig, algorithm: Algorithm) -> Validation {
    let mut v = Validation::new(algorithm);
    v.leeway = issuer.leeway.as_secs();
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_issuer(&[&issuer.issuer]);
    v.set_audience(&issuer.audience);
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    v
}

fn key(issuers: &[IssuerConfig], issuer: usize, k: &JwtKeyConfig) -> Option<Key> {
    Some(Key {
        issuer,
        kid: k.kid.clone(),
        algorithm: k.algorithm,
        key: k.key.clone(),
        validation: validation(issuers.get(issuer)?, k.algorithm),
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Verifier {
    pub fn new(config: &JwtConfig) -> Self {
        let issuers = config.issuers.clone();
        let keys = issuers
            .iter()
            .enumerate()
            .flat_map(|(i, iss)| iss.keys.iter().map(move |k| (i, k)))
            .filter_map(|(i, k)| key(&issuers, i, k))
            .collect();
        let jwks = issuers
            .iter()
            .enumerate()
            .filter_map(|(i, iss)| {
                let path = iss.jwks_file.clone()?;
                // A file that cannot be read now (being rewritten, say, during a config
                // reload) is retried by the next poll instead of waiting for its next change.
                let (loaded, seen) = match read_jwks(&path) {
                    Ok(k) => (k, modified(&path)),
                    Err(e) => {
                        log::error!("auth: {e}; retrying every second");
                        (Vec::new(), None)
                    }
                };
                let keys = loaded.iter().filter_map(|k| key(&issuers, i, k)).collect();
                Some(Jwks {
                    issuer: i,
                    modified: Mutex::new(seen),
                    path,
                    keys: ArcSwap::from_pointee(keys),
                })
            })
            .collect();
        Self {
            issuers,
            keys,
            jwks,
        }
    }

    /// Re-reads JWKS files that changed. A file that no longer parses keeps the old keys.
    /// Returns true when some keys changed.
    pub fn reload(&self) -> bool {
        let mut changed = false;
        for j in &self.jwks {
            let now = modified(&j.path);
            let mut last = j.modified.lock().unwrap_or_else(|e| e.into_inner());
            if now == *last {
                continue;
            }
            match read_jwks(&j.path) {
                Ok(keys) => {
                    let keys: Vec<Key> = keys
                        .iter()
                        .filter_map(|k| key(&self.issuers, j.issuer, k))
                        .collect();
                    log::info!("auth: reloaded {} ({} keys)", j.path.display(), keys.len());
                    j.keys.store(Arc::new(keys));
                    *last = now;
                    changed = true;
                }
                Err(e) => log::error!("auth: keeping the previous keys: {e}"),
            }
        }
        changed
    }

    /// Verifies `token`; returns the principal and the token's expiry (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<(Principal, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let jwks: Vec<Arc<Vec<Key>>> = self.jwks.iter().map(|j| j.keys.load_full()).collect();
        let all = self.keys.iter().chain(jwks.iter().flat_map(|k| k.iter()));
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let c: Vec<&Key> = all
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if c.is_empty() {
                    return Err(AuthError::UnknownKid);
                }
                c
            }
            None => all
                .filter(|k| k.kid.is_none() || k.algorithm == header.alg)
                .collect(),
        };
        let mut error = AuthError::NoKey;
        for k in candidates {
            // Each key verifies only its own algorithm: a token that names another
            // (`none`, or HS256 against an RSA key) never reaches the crypto.
            if k.algorithm != header.alg {
                continue;
            }
            match jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &k.validation) {
                Ok(data) => return self.principal(k.issuer, &data.claims, now),
                Err(e) => {
                    error = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        // Signature checked out but the claims belong elsewhere: try the
                        // other candidates (another issuer may share the kid), else report.
                        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                        ErrorKind::InvalidAudience => AuthError::WrongAudience,
                        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
                            AuthError::BadClaims
                        }
                        _ => AuthError::Malformed,
                    }
                }
            }
        }
        Err(error)
    }

    fn principal(
        &self,
        issuer: usize,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<(Principal, u64), AuthError> {
        let iss = self.issuers.get(issuer).ok_or(AuthError::BadClaims)?;
        let consumer = match claims.get(&iss.consumer_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(AuthError::BadClaims),
        };
        let tier = iss
            .tier_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(Value::as_str)
            .and_then(|v| iss.tier_values.iter().find(|(value, _)| value == v))
            .map_or(iss.default_tier, |(_, t)| *t);
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        Ok((
            Principal {
                consumer: Arc::from(consumer.as_str()),
                tier,
                method: Method::Jwt,
            },
            exp,
        ))
    }
}

/// Re-reads JWKS files every second and drops cached verifications when keys change.
pub struct JwksReload {
    /// The authenticator in force (a config reload may replace it).
    pub current: Box<dyn Fn() -> Arc<super::Authenticator> + Send + Sync>,
}

#[async_trait]
impl BackgroundService for JwksReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let auth = (self.current)();
                    if auth.verifier().is_some_and(Verifier::reload) {
                        auth.clear_cache();
                    }
                }
            }
        }
    }
}
