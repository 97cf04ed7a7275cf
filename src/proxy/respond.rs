//! The one place the gateway writes a response of its own (errors, `/ping`): JSON, with
//! the request id, written so that the client connection stays open.

use super::ctx::Ctx;
use super::Failure;
use crate::edge::Refusal;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::time::Duration;

/// A response the gateway answers itself instead of proxying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The built-in `GET /ping`.
    Pong,
    /// No route for this host and path.
    NotFound,
    /// No credential where one is required (`invalid: false`), or a bad one (`invalid: true`).
    Unauthorized {
        challenge: http::HeaderValue,
        invalid: bool,
    },
    /// A valid credential whose tier may not use this route.
    Forbidden,
    /// The client's rate limit is spent; a token is due after `retry_after`.
    RateLimited { retry_after: Duration },
    /// No backend of the route's pool is healthy: answered at once, no upstream tried.
    Unavailable { retry_after: Duration },
    /// Connecting to or talking with the upstream failed.
    BadGateway,
    /// The upstream did not answer within the route's timeout.
    GatewayTimeout,
    /// The client's request could not be read or is malformed.
    BadRequest,
    /// The edge refuses the request as sent (a path or header it will not pass on): 400.
    Refused(Refusal),
    /// The client did not send a whole request header within `server.client_header_timeout`.
    HeaderTimeout,
    /// The request header is larger than `server.max_header_bytes`.
    HeaderTooLarge,
    /// Anything else: a bug of ours, reported as such.
    Internal,
}

impl Reply {
    pub fn status(&self) -> u16 {
        match self {
            Reply::Pong => 200,
            Reply::NotFound => 404,
            Reply::Unauthorized { .. } => 401,
            Reply::Forbidden => 403,
            Reply::RateLimited { .. } => 429,
            Reply::Unavailable { .. } => 503,
            Reply::BadGateway => 502,
            Reply::GatewayTimeout => 504,
            Reply::BadRequest | Reply::Refused(_) => 400,
            Reply::HeaderTimeout => 408,
            Reply::HeaderTooLarge => 431,
            Reply::Internal => 500,
        }
    }

    /// The failure this reply answers; `None` for `/ping`'s.
    pub fn failure(&self) -> Option<Failure> {
        Some(match self {
            Reply::Pong => return None,
            Reply::NotFound => Failure::NoRoute,
            Reply::Unauthorized { invalid: false, .. } => Failure::MissingCredential,
            Reply::Unauthorized { invalid: true, .. } => Failure::InvalidCredential,
            Reply::Forbidden => Failure::TierNotAllowed,
            Reply::RateLimited { .. } => Failure::RateLimited,
            Reply::Unavailable { .. } => Failure::NoHealthyUpstream,
            Reply::BadGateway => Failure::UpstreamFailed,
            Reply::GatewayTimeout => Failure::UpstreamTimeout,
            Reply::BadRequest => Failure::BadRequest,
            Reply::Refused(refusal) => Failure::Refused(*refusal),
            Reply::HeaderTimeout => Failure::HeaderTimeout,
            Reply::HeaderTooLarge => Failure::HeaderTooLarge,
            Reply::Internal => Failure::Internal,
        })
    }

    /// The `error` field of the JSON body: the text of its failure ("" for `/ping`).
    pub fn message(&self) -> &'static str {
        match self {
            // The access log has always said "rate limited"; clients have always read this.
            Reply::RateLimited { .. } => "rate limit exceeded",
            _ => self.failure().map_or("", |f| f.as_str()),
        }
    }

    /// The JSON body, with the request id.
    pub fn body(&self, request_id: &str) -> Bytes {
        match self {
            Reply::Pong => Bytes::from_static(br#"{"status":"alive","service":"api-gateway"}"#),
            Reply::RateLimited { retry_after } => Bytes::from(format!(
                r#"{{"error":"{}","request_id":"{}","retry_after":{}}}"#,
                self.message(),
                request_id,
                crate::ratelimit::ceil_secs(*retry_after).max(1)
            )),
            // The request id is validated to [A-Za-z0-9._:-], so it needs no JSON escaping.
            _ => Bytes::from(format!(
                r#"{{"error":"{}","request_id":"{}"}}"#,
                self.message(),
                request_id
            )),
        }
    }
}

/// Maps a proxying error to the reply the client gets.
pub fn reply_for(e: &Error, retry_after: Duration) -> Option<Reply> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(503)) => Some(Reply::Unavailable { retry_after }),
        (_, HTTPStatus(400)) => Some(Reply::BadRequest),
        (_, HTTPStatus(502)) => Some(Reply::BadGateway),
        (_, HTTPStatus(504)) => Some(Reply::GatewayTimeout),
        (_, ConnectTimedout) => Some(Reply::GatewayTimeout),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => Some(Reply::GatewayTimeout),
        (ErrorSource::Upstream, _) => Some(Reply::BadGateway),
        (
            _,
            ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
            | TLSHandshakeFailure,
        ) => Some(Reply::BadGateway),
        // The client went away: there is nobody to answer.
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, _) => Some(Reply::BadRequest),
        _ => Some(Reply::Internal),
    }
}

/// The headers every response to the client carries, proxied or the gateway's own: the
/// request id, and the RateLimit headers once the limiter decided.
pub fn gateway_headers(resp: &mut ResponseHeader, ctx: &Ctx) -> pingora::Result<()> {
    if let Some(id) = &ctx.request_id {
        resp.insert_header(ctx.snapshot.correlation.header.clone(), id.clone())?;
    }
    if let Some((policy, state)) = &ctx.rate_limit {
        resp.insert_header("ratelimit-policy", policy.clone())?;
        resp.insert_header("ratelimit", state.clone())?;
    }
    Ok(())
}

/// Writes `reply` to the client. Keeps the connection alive (unlike `respond_error`).
pub async fn respond(session: &mut Session, ctx: &Ctx, reply: &Reply) -> pingora::Result<()> {
    let body = reply.body(ctx.request_id());
    let mut resp = ResponseHeader::build(reply.status(), Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    gateway_headers(&mut resp, ctx)?;
    if let Reply::Unavailable { retry_after } | Reply::RateLimited { retry_after } = reply {
        // Round up: "Retry-After: 0" would invite an immediate retry storm.
        resp.insert_header(
            http::header::RETRY_AFTER,
            crate::ratelimit::ceil_secs(*retry_after).max(1),
        )?;
    }
    if let Reply::Unauthorized { challenge, .. } = reply {
        resp.insert_header(http::header::WWW_AUTHENTICATE, challenge.clone())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}
