//! The per-request context: what the stages of one request learned, for the later hooks.

use super::{Failure, Snapshot};
use crate::observability::RouteLabel;
use http::HeaderValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// State carried from `request_filter` through `logging` for one request.
pub struct Ctx {
    pub started: Instant,
    /// The config in force when the request started; it finishes on it, whatever a
    /// reload swaps meanwhile.
    pub snapshot: Arc<Snapshot>,
    /// Set by the correlation stage, first thing in `request_filter` (`None` before, or
    /// if no id could be minted: see [`crate::correlation::MintedId::header_value`]).
    pub request_id: Option<HeaderValue>,
    /// A valid incoming or freshly minted `traceparent`; `None` when disabled (or if none
    /// could be minted: see [`crate::correlation::mint_traceparent`]).
    pub traceparent: Option<HeaderValue>,
    pub route: RouteLabel,
    /// Upstream connection attempts made so far.
    pub attempts: usize,
    /// The backend the last attempt failed on (connect or connection error): a retry skips it.
    pub failed_backend: Option<SocketAddr>,
    /// The backend chosen last, for the access log.
    pub upstream: Option<SocketAddr>,
    /// Why the request failed, for the access log: the first stage or hook to know sets it.
    pub error: Option<Failure>,
    /// The client address after `trusted_proxies`; set first thing in `request_filter`.
    pub client_ip: Option<IpAddr>,
    /// Who the client is, when it authenticated.
    pub principal: Option<crate::auth::Principal>,
    /// The rate-limit policy that applies to this request, chosen by routing.
    pub limit_policy: Option<crate::config::PolicyId>,
    /// The breaker slot held for the attempt on `upstream`, recorded exactly once.
    pub attempt: Option<crate::routing::BackendAttempt>,
    /// The upstream's response status, when one arrived.
    pub upstream_status: Option<u16>,
    /// `RateLimit-Policy` and `RateLimit` header values, once the limiter decided.
    pub rate_limit: Option<(HeaderValue, HeaderValue)>,
}

impl Ctx {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            started: Instant::now(),
            snapshot,
            request_id: None,
            traceparent: None,
            route: RouteLabel::Unrouted,
            attempts: 0,
            failed_backend: None,
            upstream: None,
            error: None,
            client_ip: None,
            principal: None,
            limit_policy: None,
            attempt: None,
            upstream_status: None,
            rate_limit: None,
        }
    }

    /// The request id as text ("" before the correlation stage ran).
    pub fn request_id(&self) -> &str {
        self.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}
