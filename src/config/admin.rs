//! The `admin` section: the bearer token the admin listener asks for (everything but
//! `/healthz` and `/readyz`). Required when `listen.admin` is not a loopback address.

use super::*;
use sha2::{Digest, Sha256};

/// The admin token, kept as its SHA-256 digest (the token itself is not kept).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub [u8; 32]);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    pub fn digest(token: &[u8]) -> [u8; 32] {
        Sha256::digest(token).into()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// `None`: the admin endpoints are open (only allowed on a loopback address).
    pub token: Option<AdminToken>,
}

/// A token shorter than this is guessable.
const MIN_TOKEN: usize = 16;
const MAX_TOKEN: usize = 4096;

impl Validator<'_> {
    pub(super) fn admin(&mut self, a: raw::Admin, listen: &Listen) -> AdminConfig {
        let token = match (a.token, a.token_file) {
            (Some(_), Some(_)) => {
                self.problem("admin", "set `token` or `token_file`, not both");
                None
            }
            (Some(t), None) => self.admin_token("admin.token", t.as_bytes()),
            (None, Some(path)) => match std::fs::read(&path) {
                // A trailing newline (from `echo` or an editor) is not part of the token.
                Ok(bytes) => self.admin_token("admin.token_file", bytes.trim_ascii_end()),
                Err(e) => {
                    self.problem("admin.token_file", format!("cannot read \"{path}\": {e}"));
                    None
                }
            },
            (None, None) => None,
        };
        let written = self.problems.iter().any(|p| p.at.starts_with("admin"));
        if token.is_none() && !written && !listen.admin.ip().is_loopback() {
            self.problem(
                "listen.admin",
                format!(
                    "{} is reachable from other hosts: set admin.token (or admin.token_file) so that /metrics needs it, or bind the admin listener to 127.0.0.1",
                    listen.admin
                ),
            );
        }
        AdminConfig { token }
    }

    /// The token's digest, if it is a usable token.
    fn admin_token(&mut self, at: &str, token: &[u8]) -> Option<AdminToken> {
        let visible = token.iter().all(|b| b.is_ascii_graphic());
        if !visible {
            self.problem(
                at,
                "a token is visible ASCII without spaces (it is sent in a header)",
            );
            return None;
        }
        let n = token.len();
        self.in_range(at, &n, &Range::new(MIN_TOKEN, MAX_TOKEN), |n| {
            format!("{n} characters")
        })
        .then(|| AdminToken(AdminToken::digest(token)))
    }
}

/// The section as written.
pub(super) mod raw {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Admin {
        pub token: Option<String>,
        /// A file holding the token (a trailing newline is ignored).
        pub token_file: Option<String>,
    }
}
