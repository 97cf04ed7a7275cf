//! API keys, stored in config only as SHA-256 digests.

use super::{AuthError, Method, Principal};
use crate::config::ApiKeysConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

pub struct ApiKeys {
    header: http::HeaderName,
    by_digest: HashMap<[u8; 32], Principal>,
}

impl ApiKeys {
    pub fn new(config: &ApiKeysConfig) -> Self {
        Self {
            header: config.header.clone(),
            by_digest: config
                .keys
                .iter()
                .map(|k| {
                    (
                        k.sha256,
                        Principal {
                            consumer: Arc::from(k.consumer.as_str()),
                            tier: k.tier,
                            method: Method::ApiKey,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn header(&self) -> &http::HeaderName {
        &self.header
    }

    /// Looks a presented key up by its digest. The map is keyed by digests, so timing
    /// reveals nothing about stored keys.
    pub fn check(&self, presented: &[u8]) -> Result<Principal, AuthError> {
        let presented = presented.trim_ascii();
        if presented.is_empty() {
            return Err(AuthError::UnknownApiKey);
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or(AuthError::UnknownApiKey)
    }
}
