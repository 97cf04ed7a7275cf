//! Key material of the `auth` section: a JWT key written in the config (secret or PEM
//! public key, pinned to one algorithm) and a JWKS file.

use super::auth::JwtKeyConfig;
use super::Validator;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::path::Path;
use std::str::FromStr;

/// Minimum HMAC secret length: RFC 7518 asks for a key as long as the hash output.
const MIN_SECRET: usize = 32;

impl Validator<'_> {
    pub(super) fn jwt_key(
        &mut self,
        at: &str,
        k: &super::auth::raw::JwtKey,
    ) -> Option<JwtKeyConfig> {
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
        let material = self.key_material(at, k)?;
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

    /// The bytes of the one key source given: a secret, a variable, a file or a PEM text.
    fn key_material(&mut self, at: &str, k: &super::auth::raw::JwtKey) -> Option<Vec<u8>> {
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
        material.map_err(|e| self.problem(at, e)).ok()
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
