//! Backend addresses resolved once, at start-up and on reload (DNS names are not
//! re-resolved while a config is in force). `--check-config` reports every name that does
//! not resolve, start-up refuses them with the same messages.

use crate::config::{BackendAddr, BackendConfig, Config};
use std::net::{SocketAddr, ToSocketAddrs};

/// A backend name that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("upstreams.{pool}.backends[{index}].addr: cannot resolve {addr}: {reason}")]
pub struct ResolveError {
    pub pool: String,
    pub index: usize,
    pub addr: String,
    pub reason: String,
}

/// The errors, one per backend, joined by `sep`.
pub fn describe(errors: &[ResolveError], sep: &str) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join(sep)
}

/// Every pool's backend addresses, in config order, or every backend that did not resolve.
pub fn resolve_backends(config: &Config) -> Result<Vec<Vec<SocketAddr>>, Vec<ResolveError>> {
    let mut pools = Vec::with_capacity(config.upstreams.len());
    let mut errors = Vec::new();
    for pool in &config.upstreams {
        let mut addrs = Vec::with_capacity(pool.backends.len());
        for (index, b) in pool.backends.iter().enumerate() {
            match resolve(b) {
                Ok(a) => addrs.push(a),
                Err(reason) => errors.push(ResolveError {
                    pool: pool.name.clone(),
                    index,
                    addr: b.addr.to_string(),
                    reason,
                }),
            }
        }
        pools.push(addrs);
    }
    if errors.is_empty() {
        Ok(pools)
    } else {
        Err(errors)
    }
}

/// One backend's address: an IP literal as written, a name's first IPv4 address (else its
/// first address).
fn resolve(b: &BackendConfig) -> Result<SocketAddr, String> {
    match &b.addr {
        BackendAddr::Ip(a) => Ok(*a),
        BackendAddr::Name { host, port } => {
            let addrs: Vec<SocketAddr> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| "no address".to_string())
        }
    }
}
