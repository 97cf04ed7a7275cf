//! A policy ready to decide, its `RateLimit` headers, and the key it limits by.

use super::{ceil_secs, Decision, Shape};
use crate::config::{LimitKey, OnRedisError, PolicyConfig};
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// A policy, ready to decide.
#[derive(Debug)]
pub struct Policy {
    pub name: String,
    pub shape: Shape,
    /// The shape each instance enforces alone when Redis is unreachable (`local`).
    pub fallback_shape: Shape,
    pub key: LimitKey,
    pub on_redis_error: OnRedisError,
    /// `RateLimit-Policy` value: `"name";q=<burst>;w=<period seconds>`.
    pub policy_header: HeaderValue,
    quoted_name: String,
}

impl Policy {
    /// `instances`: how many gateways share the limit, for the `local` fallback's share.
    pub fn new(p: &PolicyConfig, instances: u32) -> Self {
        let shape = Shape::new(p.rate, p.per, p.burst);
        let quoted_name = format!("\"{}\"", p.name);
        let policy_header = HeaderValue::from_str(&format!(
            "{quoted_name};q={};w={}",
            p.burst,
            ceil_secs(p.per)
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("\"policy\""));
        Policy {
            name: p.name.clone(),
            shape,
            fallback_shape: shape.split(instances),
            key: p.key.clone(),
            on_redis_error: p.on_redis_error,
            policy_header,
            quoted_name,
        }
    }

    /// The `RateLimit` header value for a decision: `"name";r=<remaining>;t=<seconds>`.
    /// `t` answers "when can I go on": with tokens left, when the bucket is full again;
    /// with none left (the last allowed request, or a 429), when the next one is due, so
    /// the response that spends the last token and the 429 after it agree.
    pub fn header(&self, d: &Decision) -> Option<HeaderValue> {
        let t = match (d.allowed, d.remaining) {
            (true, 0) => self.shape.time_for(1.0),
            (true, _) => d.reset,
            (false, _) => d.retry_after,
        };
        HeaderValue::from_str(&format!(
            "{};r={};t={}",
            self.quoted_name,
            d.remaining,
            ceil_secs(t)
        ))
        .ok()
    }
}

/// The key a policy limits by. IP keys are raw octets (4 or 16 bytes); header keys are
/// prefixed with `h:` and consumer keys with `c:`, so they can never collide.
pub fn limit_key<'a>(
    key: &LimitKey,
    req: &RequestHeader,
    ip: Option<IpAddr>,
    consumer: Option<&str>,
    buf: &'a mut Vec<u8>,
) -> &'a [u8] {
    buf.clear();
    if let (LimitKey::Consumer, Some(c)) = (key, consumer) {
        buf.extend_from_slice(b"c:");
        buf.extend_from_slice(c.as_bytes());
        return buf;
    }
    match (key, ip) {
        (LimitKey::Header(h), _) if req.headers.contains_key(h) => {
            buf.extend_from_slice(b"h:");
            buf.extend_from_slice(req.headers.get(h).map_or(&[][..], |v| v.as_bytes()));
        }
        (_, Some(IpAddr::V4(v4))) => buf.extend_from_slice(&v4.octets()),
        (_, Some(IpAddr::V6(v6))) => buf.extend_from_slice(&v6.octets()),
        (_, None) => {}
    }
    buf
}
