//! Validation of the `auth` section: tiers, JWT issuers and keys, API keys.

use super::keys::read_jwks;
use super::{Range, Source, TierId, Validator};
use http::HeaderName;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::path::{Path, PathBuf};
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
    pub tier_values: Vec<(String, TierId)>,
    pub default_tier: TierId,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub from: TokenSource,
    pub issuers: Vec<IssuerConfig>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    pub consumer: String,
    pub tier: TierId,
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
        let a = raw.unwrap_or_else(|| raw::Auth {
            // No auth section: nothing could verify a credential, so routes are open.
            default_mode: AuthMode::None,
            ..raw::Auth::default()
        });
        let tiers = self.tiers(&a.tiers);
        let jwt = a.jwt.map(|j| self.jwt(j, &tiers));
        let api_keys = a.api_keys.map(|k| self.api_keys(k, &tiers));
        AuthConfig {
            jwt,
            api_keys,
            forward_identity: a.forward_identity,
            strip_credentials: a.strip_credentials,
            realm: a.realm,
            cache_size: self.int("auth.cache_size", a.cache_size, CACHE_SIZE),
            default_mode: a.default_mode,
            tiers,
        }
    }

    /// `anonymous` first, then the tiers listed.
    fn tiers(&mut self, listed: &[String]) -> Vec<String> {
        let mut tiers = vec![ANONYMOUS.to_string()];
        for (i, t) in listed.iter().enumerate() {
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
        tiers
    }

    /// The index of tier `name`, or a problem at `at` (and anonymous).
    pub(super) fn tier_of(&mut self, tiers: &[String], at: &str, name: &str) -> TierId {
        let found = tiers.iter().position(|t| t == name);
        TierId(found.unwrap_or_else(|| {
            self.problem(
                at,
                format!("unknown tier \"{name}\" (tiers: {})", tiers.join(", ")),
            );
            0
        }))
    }

    fn jwt(&mut self, j: raw::Jwt, tiers: &[String]) -> JwtConfig {
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
            .map(|(i, iss)| self.issuer(&format!("auth.jwt.issuers[{i}]"), iss, tiers))
            .collect();
        JwtConfig { from, issuers }
    }

    fn issuer(&mut self, at: &str, iss: raw::Issuer, tiers: &[String]) -> IssuerConfig {
        let issuer = self.required(at, "issuer", iss.issuer);
        let audience = self.required(at, "audience", iss.audience);
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
                self.problem(format!("{at}.jwks_file"), e);
            }
        }
        let tier_values = iss
            .tier_values
            .iter()
            .map(|(value, tier)| {
                let tier = self.tier_of(tiers, &format!("{at}.tier_values.{value}"), tier);
                (value.clone(), tier)
            })
            .collect();
        let default_tier = self
            .required(at, "default_tier", iss.default_tier)
            .map_or(TierId::ANONYMOUS, |t| {
                self.tier_of(tiers, &format!("{at}.default_tier"), &t)
            });
        IssuerConfig {
            // Stand-ins for missing required fields: reported above, so never used.
            issuer: issuer.unwrap_or_default(),
            audience: audience.unwrap_or_default(),
            keys,
            jwks_file: iss.jwks_file.map(PathBuf::from),
            leeway: self.duration(&format!("{at}.leeway"), iss.leeway.0, LEEWAY),
            consumer_claim: iss.consumer_claim,
            tier_claim: iss.tier_claim,
            tier_values,
            default_tier,
        }
    }

    fn api_keys(&mut self, k: raw::ApiKeys, tiers: &[String]) -> ApiKeysConfig {
        let header = match HeaderName::from_bytes(k.header.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                self.problem(
                    "auth.api_keys.header",
                    format!("\"{}\" is not a valid header name", k.header),
                );
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
                .map_or(TierId::ANONYMOUS, |t| {
                    self.tier_of(tiers, &format!("{at}.tier"), &t)
                });
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
    }
}

/// The section as written: serde structs that reject unknown keys, and the one home of
/// every default of the section (validation checks ranges and never invents a value).
pub(super) mod raw {
    use super::super::values::{HumanDuration, Int};
    use serde::Deserialize;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "snake_case")]
    pub enum AuthMode {
        /// No authentication: every client is anonymous (credentials are not even read).
        None,
        /// Verify a credential if one is sent (a bad one is 401); without one, anonymous.
        Optional,
        /// A valid credential is required (401 without).
        Required,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Auth {
        /// Tier names besides `anonymous`, e.g. [free, premium].
        pub tiers: Vec<String>,
        pub jwt: Option<Jwt>,
        pub api_keys: Option<ApiKeys>,
        /// Send X-Consumer-ID and X-Consumer-Tier upstream.
        pub forward_identity: bool,
        /// Remove the credential (Authorization / API-key header) before proxying.
        pub strip_credentials: bool,
        pub realm: String,
        /// Verified tokens remembered (by SHA-256), each no longer than it is valid.
        pub cache_size: Int,
        /// Mode of routes that do not set `auth`.
        pub default_mode: AuthMode,
    }

    impl Default for Auth {
        fn default() -> Self {
            Self {
                tiers: Vec::new(),
                jwt: None,
                api_keys: None,
                forward_identity: true,
                strip_credentials: true,
                realm: "gateway".into(),
                cache_size: Int(10_000),
                default_mode: AuthMode::Optional,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Jwt {
        /// Where the token is: `bearer` (Authorization: Bearer, the default),
        /// `header:<name>` or `cookie:<name>`.
        #[serde(default = "bearer")]
        pub from: String,
        pub issuers: Option<Vec<Issuer>>,
    }

    fn bearer() -> String {
        "bearer".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Issuer {
        /// The required `iss` claim.
        pub issuer: Option<String>,
        /// Accepted `aud` values (one must match).
        pub audience: Option<Vec<String>>,
        #[serde(default)]
        pub keys: Vec<JwtKey>,
        /// A JWKS file (keys selected by `kid`), re-read when it changes.
        pub jwks_file: Option<String>,
        /// Clock skew allowed on `exp` and `nbf`.
        #[serde(default = "leeway")]
        pub leeway: HumanDuration,
        #[serde(default = "sub")]
        pub consumer_claim: String,
        /// The claim that names the tier; its values map to tiers through `tier_values`.
        pub tier_claim: Option<String>,
        #[serde(default)]
        pub tier_values: BTreeMap<String, String>,
        /// The tier of a token without a (mapped) tier claim.
        pub default_tier: Option<String>,
    }

    fn leeway() -> HumanDuration {
        HumanDuration(Duration::from_secs(30))
    }

    fn sub() -> String {
        "sub".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct JwtKey {
        pub kid: Option<String>,
        pub algorithm: Option<String>,
        pub secret: Option<String>,
        pub secret_env: Option<String>,
        pub secret_file: Option<String>,
        pub public_key: Option<String>,
        pub public_key_file: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApiKeys {
        #[serde(default = "api_key_header")]
        pub header: String,
        pub keys: Option<Vec<ApiKey>>,
    }

    fn api_key_header() -> String {
        "X-API-Key".into()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApiKey {
        pub consumer: Option<String>,
        pub tier: Option<String>,
        /// Hex SHA-256 of the key (`gateway hash-key`); the key itself is never in config.
        pub sha256: Option<String>,
    }
}
