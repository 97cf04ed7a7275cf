//! Validation of the `auth` section: tiers, JWT issuers and keys, API keys.

use super::{raw, Range, Source, Validator};
use http::HeaderName;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use raw::AuthMode;

/// The tier every unauthenticated client is in; always tier 0.
pub const ANONYMOUS: &str = "anonymous";

/// Where a JWT is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    Header(HeaderName),
    Cookie(String),
}

/// A verification key, pinned to one algorithm.
#[derive(Clone)]
pub struct JwtKeyConfig {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
    /// For an HMAC key: the same secret for signing, so `gateway token` can mint test
    /// tokens the gateway accepts. `None` for public keys.
    pub signing: Option<EncodingKey>,
}

impl std::fmt::Debug for JwtKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("JwtKeyConfig")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audience: Vec<String>,
    pub keys: Vec<JwtKeyConfig>,
    pub jwks_file: Option<PathBuf>,
    pub leeway: Duration,
    pub consumer_claim: String,
    pub tier_claim: Option<String>,
    /// Claim value -> tier index.
    pub tier_values: Vec<(String, usize)>,
    pub default_tier: usize,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub from: TokenSource,
    pub issuers: Vec<IssuerConfig>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    pub consumer: String,
    pub tier: usize,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct ApiKeysConfig {
    pub header: HeaderName,
    pub keys: Vec<ApiKeyConfig>,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Tier names; index 0 is `anonymous`.
    pub tiers: Vec<String>,
    pub jwt: Option<JwtConfig>,
    pub api_keys: Option<ApiKeysConfig>,
    pub forward_identity: bool,
    pub strip_credentials: bool,
    pub realm: String,
    pub cache_size: usize,
    pub default_mode: AuthMode,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tiers: vec![ANONYMOUS.to_string()],
            jwt: None,
            api_keys: None,
            forward_identity: true,
            strip_credentials: true,
            realm: "gateway".into(),
            cache_size: 10_000,
            default_mode: AuthMode::None,
        }
    }
}

/// Minimum HMAC secret length: RFC 7518 asks for a key as long as the hash output.
const MIN_SECRET: usize = 32;

// Ranges of the `auth` section.
/// Verified tokens remembered, a few hundred bytes each.
const CACHE_SIZE: Range<usize> = Range::new(1, 1_000_000);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY: Range<Duration> = Range::new(Duration::ZERO, Duration::from_secs(600));

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

impl Validator<'_> {
    pub(super) fn auth(&mut self, raw: Option<raw::Auth>) -> AuthConfig {
        let Some(a) = raw else {
            return AuthConfig::default();
        };
        let mut tiers = vec![ANONYMOUS.to_string()];
        for (i, t) in a.tiers.iter().enumerate() {
            if t == ANONYMOUS || tiers.contains(t) {
                self.problem(
                    format!("auth.tiers[{i}]"),
                    format!("tier \"{t}\" is listed twice (anonymous is implicit)"),
                );
            } else if !super::valid_name(t) {
                self.problem(
                    format!("auth.tiers[{i}]"),
                    format!("tier \"{t}\" may use only letters, digits, '-' and '_'"),
                );
            } else {
                tiers.push(t.clone());
            }
        }
        if tiers.len() > 64 {
            self.problem("auth.tiers", "at most 63 tiers");
            // Tier sets are bit sets of a u64.
            tiers.truncate(64);
        }
        let tier_of = |v: &mut Self, at: String, name: &str| -> usize {
            match tiers.iter().position(|t| t == name) {
                Some(i) => i,
                None => {
                    v.problem(
                        at,
                        format!("unknown tier \"{name}\" (tiers: {})", tiers.join(", ")),
                    );
                    0
                }
            }
        };
        let jwt = a.jwt.map(|j| {
            let from = match self.source("auth.jwt.from", &j.from) {
                None | Some(Source::Word("bearer")) => TokenSource::Bearer,
                Some(Source::Header(h)) => TokenSource::Header(h),
                Some(Source::Cookie(name)) => TokenSource::Cookie(name.to_string()),
                Some(Source::Word(f)) => {
                    self.problem(
                        "auth.jwt.from",
                        format!("\"{f}\": expected bearer, header:<name> or cookie:<name>"),
                    );
                    TokenSource::Bearer
                }
            };
            let listed = self.required("auth.jwt", "issuers", j.issuers);
            if listed.as_ref().is_some_and(Vec::is_empty) {
                self.problem("auth.jwt.issuers", "at least one issuer is required");
            }
            let issuers = listed
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, iss)| {
                    let at = format!("auth.jwt.issuers[{i}]");
                    let issuer = self.required(&at, "issuer", iss.issuer);
                    let audience = self.required(&at, "audience", iss.audience);
                    if audience.as_ref().is_some_and(Vec::is_empty) {
                        self.problem(
                            format!("{at}.audience"),
                            "at least one audience is required",
                        );
                    }
                    if iss.keys.is_empty() && iss.jwks_file.is_none() {
                        self.problem(format!("{at}.keys"), "give keys, a jwks_file, or both");
                    }
                    let keys = iss
                        .keys
                        .iter()
                        .enumerate()
                        .filter_map(|(k, key)| self.jwt_key(&format!("{at}.keys[{k}]"), key))
                        .collect();
                    if let Some(f) = &iss.jwks_file {
                        if let Err(e) = read_jwks(Path::new(f)) {
                            self.problem(format!("{at}.jwks_file"), e.to_string());
                        }
                    }
                    let tier_values = iss
                        .tier_values
                        .iter()
                        .map(|(value, tier)| {
                            (
                                value.clone(),
                                tier_of(self, format!("{at}.tier_values.{value}"), tier),
                            )
                        })
                        .collect();
                    let default_tier = self
                        .required(&at, "default_tier", iss.default_tier)
                        .map_or(0, |t| tier_of(self, format!("{at}.default_tier"), &t));
                    let leeway = iss.leeway.map_or(Duration::from_secs(30), |d| {
                        self.duration(&format!("{at}.leeway"), d.0, LEEWAY)
                    });
                    IssuerConfig {
                        issuer: issuer.unwrap_or_default(),
                        audience: audience.unwrap_or_default(),
                        keys,
                        jwks_file: iss.jwks_file.map(PathBuf::from),
                        leeway,
                        consumer_claim: iss.consumer_claim,
                        tier_claim: iss.tier_claim,
                        tier_values,
                        default_tier,
                    }
                })
                .collect();
            JwtConfig { from, issuers }
        });
        let api_keys = a.api_keys.map(|k| {
            let header = match HeaderName::from_bytes(k.header.as_bytes()) {
                Ok(h) => h,
                Err(_) => {
                    self.problem("auth.api_keys.header", format!("\"{}\" is not a valid header name", k.header));
                    HeaderName::from_static("x-api-key")
                }
            };
            let mut keys: Vec<ApiKeyConfig> = Vec::new();
            let listed = self.required("auth.api_keys", "keys", k.keys);
            for (i, key) in listed.unwrap_or_default().into_iter().enumerate() {
                let at = format!("auth.api_keys.keys[{i}]");
                let consumer = self.required(&at, "consumer", key.consumer);
                let tier = self
                    .required(&at, "tier", key.tier)
                    .map_or(0, |t| tier_of(self, format!("{at}.tier"), &t));
                let Some(sha256) = self.required(&at, "sha256", key.sha256) else {
                    continue;
                };
                match parse_hex32(&sha256) {
                    Some(sha256) if keys.iter().any(|o| o.sha256 == sha256) => {
                        self.problem(format!("{at}.sha256"), "the same key is listed twice");
                    }
                    Some(sha256) => keys.push(ApiKeyConfig {
                        consumer: consumer.unwrap_or_default(),
                        tier,
                        sha256,
                    }),
                    None => self.problem(
                        format!("{at}.sha256"),
                        "must be the 64-hex-digit SHA-256 of the key (see `gateway hash-key`), never the key itself",
                    ),
                }
            }
            ApiKeysConfig { header, keys }
        });
        let cache_size = self.int("auth.cache_size", a.cache_size, CACHE_SIZE);
        AuthConfig {
            tiers,
            jwt,
            api_keys,
            forward_identity: a.forward_identity,
            strip_credentials: a.strip_credentials,
            realm: a.realm,
            cache_size,
            default_mode: a.default_mode,
        }
    }

    fn jwt_key(&mut self, at: &str, k: &raw::JwtKey) -> Option<JwtKeyConfig> {
        let name = self.required(at, "algorithm", k.algorithm.as_deref())?;
        let algorithm = match Algorithm::from_str(name) {
            Ok(a) => a,
            Err(_) => {
                self.problem(
                    format!("{at}.algorithm"),
                    format!("unknown algorithm \"{name}\" (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"),
                );
                return None;
            }
        };
        let hmac = matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        );
        let sources = [
            k.secret.is_some(),
            k.secret_env.is_some(),
            k.secret_file.is_some(),
            k.public_key.is_some(),
            k.public_key_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.problem(
                at,
                "give exactly one of secret, secret_env, secret_file, public_key, public_key_file",
            );
            return None;
        }
        let material: Result<Vec<u8>, String> = if let Some(s) = &k.secret {
            Ok(s.as_bytes().to_vec())
        } else if let Some(var) = &k.secret_env {
            std::env::var(var)
                .map(String::into_bytes)
                .map_err(|_| format!("environment variable {var} is not set"))
        } else if let Some(f) = k.secret_file.as_ref().or(k.public_key_file.as_ref()) {
            std::fs::read(f).map_err(|e| format!("cannot read {f}: {e}"))
        } else {
            Ok(k.public_key.clone().unwrap_or_default().into_bytes())
        };
        let material = match material {
            Ok(m) => m,
            Err(e) => {
                self.problem(at, e);
                return None;
            }
        };
        let is_secret = k.secret.is_some() || k.secret_env.is_some() || k.secret_file.is_some();
        if hmac != is_secret {
            // Algorithm confusion is refused here: an HMAC key is only ever a secret, and a
            // public key only ever verifies its own asymmetric algorithm.
            self.problem(
                format!("{at}.algorithm"),
                if hmac {
                    "HS* keys take a secret (secret, secret_env or secret_file)"
                } else {
                    "asymmetric algorithms take a PEM public key (public_key or public_key_file)"
                },
            );
            return None;
        }
        let mut signing = None;
        let key = if hmac {
            let secret = if k.secret_file.is_some() {
                trim_newline(material)
            } else {
                material
            };
            if secret.len() < MIN_SECRET {
                self.problem(
                    at,
                    format!(
                        "HMAC secrets must be at least {MIN_SECRET} bytes, got {}",
                        secret.len()
                    ),
                );
                return None;
            }
            signing = Some(EncodingKey::from_secret(&secret));
            Ok(DecodingKey::from_secret(&secret))
        } else {
            match algorithm {
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512 => DecodingKey::from_rsa_pem(&material),
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&material),
                _ => DecodingKey::from_ed_pem(&material),
            }
        };
        match key {
            Ok(key) => Some(JwtKeyConfig {
                kid: k.kid.clone(),
                algorithm,
                key,
                signing,
            }),
            Err(e) => {
                self.problem(at, format!("not a valid {:?} public key: {e}", algorithm));
                None
            }
        }
    }
}

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    v
}

/// Reads a JWKS file. Every key must name its `alg` (keys are pinned to one algorithm)
/// and its `kid` (the file is searched by `kid`).
pub fn read_jwks(path: &Path) -> Result<Vec<JwtKeyConfig>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a JWKS: {e}", path.display()))?;
    set.keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| {
            let alg = jwk
                .common
                .key_algorithm
                .ok_or_else(|| format!("{}: keys[{i}] has no \"alg\"", path.display()))?;
            let algorithm = Algorithm::from_str(&alg.to_string()).map_err(|_| {
                format!(
                    "{}: keys[{i}]: \"{alg}\" is not a signature algorithm",
                    path.display()
                )
            })?;
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| format!("{}: keys[{i}] has no \"kid\"", path.display()))?;
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("{}: keys[{i}]: {e}", path.display()))?;
            Ok(JwtKeyConfig {
                kid: Some(kid),
                algorithm,
                key,
                signing: None,
            })
        })
        .collect()
}
