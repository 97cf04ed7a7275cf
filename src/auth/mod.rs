//! Authentication: a JWT or an API key becomes a [`Principal`] (consumer + tier), or the
//! request stays anonymous. Verification is pure and synchronous; verified tokens are
//! cached by SHA-256 until they expire.

mod api_key;
mod cache;
mod jwt;
mod mint;

pub use jwt::JwksReload;
pub use mint::{mint, TokenRequest};

use crate::config::{AuthConfig, TierId, TokenSource};
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Jwt,
    ApiKey,
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// JWT consumer claim (`sub` by default) or the API key's consumer id.
    pub consumer: Arc<str>,
    /// One of the configured tiers (never anonymous for an authenticated client).
    pub tier: TierId,
    pub method: Method,
}

/// Why a credential was refused. The reason is logged; the client only learns the
/// RFC 6750 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Malformed,
    UnknownKid,
    NoKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    BadClaims,
    UnknownApiKey,
}

/// One text per reason, for the access log and for `Display`.
impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthError {}

impl AuthError {
    /// For the access log (never any token or key material).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed token",
            AuthError::UnknownKid => "unknown key id",
            AuthError::NoKey => "no key for the token's algorithm",
            AuthError::BadSignature => "bad signature",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::WrongIssuer => "wrong issuer",
            AuthError::WrongAudience => "wrong audience",
            AuthError::BadClaims => "missing or invalid claim",
            AuthError::UnknownApiKey => "unknown api key",
        }
    }
}

/// The credentials of a request, checked against the config.
pub struct Authenticator {
    config: AuthConfig,
    jwt: Option<jwt::Verifier>,
    api_keys: Option<api_key::ApiKeys>,
    cache: cache::VerifiedCache,
    /// `WWW-Authenticate` values for a missing and for a bad credential.
    pub challenge_missing: HeaderValue,
    pub challenge_invalid: HeaderValue,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let realm = config.realm.replace('"', "");
        let challenge = |error: &str| {
            HeaderValue::from_str(&format!("Bearer realm=\"{realm}\", error=\"{error}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        Self {
            jwt: config.jwt.as_ref().map(jwt::Verifier::new),
            api_keys: config.api_keys.as_ref().map(api_key::ApiKeys::new),
            cache: cache::VerifiedCache::new(config.cache_size),
            challenge_missing: challenge("invalid_request"),
            challenge_invalid: challenge("invalid_token"),
            config: config.clone(),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn tier_name(&self, tier: TierId) -> &str {
        self.config
            .tiers
            .get(tier.0)
            .map_or("anonymous", String::as_str)
    }

    /// The token of a request, if it carries one where the config says to look.
    fn token<'a>(&self, req: &'a RequestHeader) -> Option<&'a str> {
        let jwt = self.config.jwt.as_ref()?;
        match &jwt.from {
            TokenSource::Bearer => {
                let v = req
                    .headers
                    .get(http::header::AUTHORIZATION)?
                    .to_str()
                    .ok()?;
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            }
            TokenSource::Header(h) => req.headers.get(h)?.to_str().ok().map(str::trim),
            TokenSource::Cookie(name) => cookie_pairs(&req.headers).find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then_some(v)
            }),
        }
    }

    /// `Ok(None)`: no credential at all. `now` is Unix seconds.
    pub fn authenticate(
        &self,
        req: &RequestHeader,
        now: u64,
    ) -> Result<Option<Principal>, AuthError> {
        if let (Some(verifier), Some(token)) = (&self.jwt, self.token(req)) {
            if token.is_empty() {
                return Err(AuthError::Malformed);
            }
            // Bound the work an attacker can ask for: real tokens are a few KB at most.
            if token.len() > 16 * 1024 {
                return Err(AuthError::Malformed);
            }
            let digest = cache::digest(token.as_bytes());
            if let Some(p) = self.cache.get(&digest, now) {
                return Ok(Some(p));
            }
            let (principal, exp) = verifier.verify(token, now)?;
            self.cache.insert(digest, principal.clone(), exp);
            return Ok(Some(principal));
        }
        if let Some(keys) = &self.api_keys {
            if let Some(v) = req.headers.get(keys.header()) {
                return keys.check(v.as_bytes()).map(Some);
            }
        }
        Ok(None)
    }

    /// Verifies a token without the cache (what a cache miss costs; for benchmarks).
    pub fn verify_uncached(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let verifier = self.jwt.as_ref().ok_or(AuthError::NoKey)?;
        verifier.verify(token, now).map(|(p, _)| p)
    }

    /// Forgets every verified token (after the keys changed).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    pub(crate) fn verifier(&self) -> Option<&jwt::Verifier> {
        self.jwt.as_ref()
    }

    /// Headers carrying the credential, to strip before proxying.
    pub fn credential_header(&self, method: Method) -> Option<http::HeaderName> {
        match method {
            Method::ApiKey => self.api_keys.as_ref().map(|k| k.header().clone()),
            Method::Jwt => match self.config.jwt.as_ref().map(|j| &j.from) {
                Some(TokenSource::Bearer) => Some(http::header::AUTHORIZATION),
                Some(TokenSource::Header(h)) => Some(h.clone()),
                _ => None,
            },
        }
    }
}

impl Authenticator {
    /// Removes every credential this config reads (API-key header, bearer token, JWT
    /// header or cookie) from a request about to go upstream, whether or not it was the
    /// one that authenticated, or was verified at all: an upstream never sees a
    /// credential the gateway did not vouch for. Other `Authorization` schemes (Basic,
    /// ...) and other cookies pass.
    pub fn strip_credentials(&self, req: &mut RequestHeader) {
        if let Some(keys) = &self.api_keys {
            req.remove_header(keys.header());
        }
        let Some(jwt) = self.config.jwt.as_ref() else {
            return;
        };
        match &jwt.from {
            TokenSource::Bearer => {
                let bearer = req
                    .headers
                    .get_all(http::header::AUTHORIZATION)
                    .iter()
                    .any(|v| {
                        v.as_bytes()
                            .get(..7)
                            .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
                    });
                if bearer {
                    req.remove_header(&http::header::AUTHORIZATION);
                }
            }
            TokenSource::Header(h) => {
                req.remove_header(h);
            }
            TokenSource::Cookie(_) => {
                if let Some(cookie) = self.without_credential_cookie(Method::Jwt, &req.headers) {
                    req.remove_header(&http::header::COOKIE);
                    if !cookie.is_empty() {
                        let _ = req.insert_header(http::header::COOKIE, cookie);
                    }
                }
            }
        }
    }

    /// When the JWT came from a cookie: the request's cookies without it (possibly
    /// empty), to send upstream instead. `None` when nothing needs to change.
    pub fn without_credential_cookie(
        &self,
        method: Method,
        headers: &http::HeaderMap,
    ) -> Option<String> {
        let Some(TokenSource::Cookie(name)) = self.config.jwt.as_ref().map(|j| &j.from) else {
            return None;
        };
        if method != Method::Jwt {
            return None;
        }
        let is_credential = |kv: &str| kv.split_once('=').is_some_and(|(k, _)| k == name);
        // The common case, no credential cookie at all: nothing to rebuild.
        if !cookie_pairs(headers).any(is_credential) {
            return None;
        }
        let kept: Vec<&str> = cookie_pairs(headers)
            .filter(|kv| !is_credential(kv))
            .collect();
        Some(kept.join("; "))
    }
}

/// The `name=value` pairs of a request's `Cookie` headers, trimmed, empty ones skipped.
fn cookie_pairs(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The hex SHA-256 of an API key, as the config stores it (`gateway hash-key`).
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
