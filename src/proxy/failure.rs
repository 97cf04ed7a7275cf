//! Why a request failed, as the access log says it: one value per request, set by the
//! stage or hook that decided it.

use crate::auth::AuthError;
use crate::edge::Refusal;

/// Why a request failed. The text of each is the access log's `error` field, and (but
/// for a rate limit) the `error` text of the gateway's own reply too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The edge refused the request as sent.
    Refused(Refusal),
    /// No route for this host and path.
    NoRoute,
    /// No credential where the route requires one.
    MissingCredential,
    /// A credential that did not verify, with why (never any token or key material).
    Credential(AuthError),
    /// A credential that did not verify, why unknown: what a 401 tells the client.
    InvalidCredential,
    /// The client's tier may not use the route.
    TierNotAllowed,
    /// The client's rate limit is spent.
    RateLimited,
    /// No backend of the route's pool could take the request.
    NoHealthyUpstream,
    /// Connecting to or talking with the upstream failed.
    UpstreamFailed,
    /// The upstream did not answer within the route's timeout.
    UpstreamTimeout,
    /// The client's request could not be read or is malformed.
    BadRequest,
    /// No whole request header within `server.client_header_timeout`.
    HeaderTimeout,
    /// A request header larger than `server.max_header_bytes`.
    HeaderTooLarge,
    /// A bug of ours.
    Internal,
}

impl Failure {
    /// Every value of [`Failure::label`], in [`Failure::reason_index`] order: the series
    /// of `gateway_errors_total` made at start.
    pub const LABELS: [&'static str; 13] = [
        "refused",
        "no_route",
        "missing_credential",
        "invalid_credential",
        "tier_not_allowed",
        "rate_limited",
        "no_healthy_upstream",
        "upstream_failed",
        "upstream_timeout",
        "bad_request",
        "header_timeout",
        "header_too_large",
        "internal",
    ];

    /// The position of this failure's `reason` in [`Failure::LABELS`]: a reason's text
    /// (an edge refusal, a credential error) never multiplies series.
    pub fn reason_index(&self) -> usize {
        match self {
            Failure::Refused(_) => 0,
            Failure::NoRoute => 1,
            Failure::MissingCredential => 2,
            Failure::Credential(_) | Failure::InvalidCredential => 3,
            Failure::TierNotAllowed => 4,
            Failure::RateLimited => 5,
            Failure::NoHealthyUpstream => 6,
            Failure::UpstreamFailed => 7,
            Failure::UpstreamTimeout => 8,
            Failure::BadRequest => 9,
            Failure::HeaderTimeout => 10,
            Failure::HeaderTooLarge => 11,
            Failure::Internal => 12,
        }
    }

    /// The `reason` label of `gateway_errors_total`.
    pub fn label(&self) -> &'static str {
        Self::LABELS
            .get(self.reason_index())
            .copied()
            .unwrap_or("internal")
    }

    /// The access log's `error` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::Refused(r) => r.message(),
            Failure::NoRoute => "no route for this host and path",
            Failure::MissingCredential => "missing credential",
            Failure::Credential(e) => e.reason(),
            Failure::InvalidCredential => "invalid credential",
            Failure::TierNotAllowed => "tier not allowed on this route",
            Failure::RateLimited => "rate limited",
            Failure::NoHealthyUpstream => "no healthy upstream",
            Failure::UpstreamFailed => "upstream connection failed",
            Failure::UpstreamTimeout => "upstream timed out",
            Failure::BadRequest => "bad request",
            Failure::HeaderTimeout => "request header timeout",
            Failure::HeaderTooLarge => "request header too large",
            Failure::Internal => "internal error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{HostError, PathError};
    use crate::proxy::Reply;
    use std::time::Duration;

    #[test]
    fn every_label_is_listed() {
        use crate::auth::AuthError;
        let all = [
            Failure::Refused(Refusal::MissingHost),
            Failure::NoRoute,
            Failure::MissingCredential,
            Failure::Credential(AuthError::Expired),
            Failure::InvalidCredential,
            Failure::TierNotAllowed,
            Failure::RateLimited,
            Failure::NoHealthyUpstream,
            Failure::UpstreamFailed,
            Failure::UpstreamTimeout,
            Failure::BadRequest,
            Failure::HeaderTimeout,
            Failure::HeaderTooLarge,
            Failure::Internal,
        ];
        let labels: Vec<&str> = all.iter().map(Failure::label).collect();
        assert_eq!(
            labels,
            [
                "refused",
                "no_route",
                "missing_credential",
                "invalid_credential",
                "invalid_credential",
                "tier_not_allowed",
                "rate_limited",
                "no_healthy_upstream",
                "upstream_failed",
                "upstream_timeout",
                "bad_request",
                "header_timeout",
                "header_too_large",
                "internal",
            ],
            "each failure's reason, by its index"
        );
    }

    /// The access log's words, as they were when the reason was a plain string.
    #[test]
    fn log_texts_are_unchanged() {
        let cases = [
            (
                Failure::Refused(Refusal::MissingHost),
                "missing Host header",
            ),
            (
                Failure::Refused(Refusal::Host(HostError::BadPort)),
                "invalid port in Host",
            ),
            (
                Failure::Refused(Refusal::Path(PathError::AboveRoot)),
                "path climbs above the root",
            ),
            (Failure::NoRoute, "no route for this host and path"),
            (Failure::MissingCredential, "missing credential"),
            (Failure::Credential(AuthError::Expired), "token expired"),
            (Failure::InvalidCredential, "invalid credential"),
            (Failure::TierNotAllowed, "tier not allowed on this route"),
            (Failure::RateLimited, "rate limited"),
            (Failure::NoHealthyUpstream, "no healthy upstream"),
            (Failure::UpstreamFailed, "upstream connection failed"),
            (Failure::UpstreamTimeout, "upstream timed out"),
            (Failure::BadRequest, "bad request"),
            (Failure::HeaderTimeout, "request header timeout"),
            (Failure::HeaderTooLarge, "request header too large"),
            (Failure::Internal, "internal error"),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.as_str(), text, "{failure:?}");
        }
    }

    /// The `error` text of each reply of the gateway's, as clients have always read it,
    /// and the failure it stands for in the log.
    #[test]
    fn reply_texts_are_unchanged() {
        let challenge = http::HeaderValue::from_static("Bearer");
        let unauthorized = |invalid| Reply::Unauthorized {
            challenge: challenge.clone(),
            invalid,
        };
        let wait = Duration::from_secs(1);
        let cases = [
            (Reply::Pong, "", None),
            (
                Reply::NotFound,
                "no route for this host and path",
                Some(Failure::NoRoute),
            ),
            (
                unauthorized(false),
                "missing credential",
                Some(Failure::MissingCredential),
            ),
            (
                unauthorized(true),
                "invalid credential",
                Some(Failure::InvalidCredential),
            ),
            (
                Reply::Forbidden,
                "tier not allowed on this route",
                Some(Failure::TierNotAllowed),
            ),
            (
                Reply::RateLimited { retry_after: wait },
                "rate limit exceeded",
                Some(Failure::RateLimited),
            ),
            (
                Reply::Unavailable { retry_after: wait },
                "no healthy upstream",
                Some(Failure::NoHealthyUpstream),
            ),
            (
                Reply::BadGateway,
                "upstream connection failed",
                Some(Failure::UpstreamFailed),
            ),
            (
                Reply::GatewayTimeout,
                "upstream timed out",
                Some(Failure::UpstreamTimeout),
            ),
            (Reply::BadRequest, "bad request", Some(Failure::BadRequest)),
            (
                Reply::Refused(Refusal::UnderscoreHeader),
                "header name with underscore",
                Some(Failure::Refused(Refusal::UnderscoreHeader)),
            ),
            (
                Reply::HeaderTimeout,
                "request header timeout",
                Some(Failure::HeaderTimeout),
            ),
            (
                Reply::HeaderTooLarge,
                "request header too large",
                Some(Failure::HeaderTooLarge),
            ),
            (Reply::Internal, "internal error", Some(Failure::Internal)),
        ];
        for (reply, text, failure) in cases {
            assert_eq!(reply.message(), text, "{reply:?}");
            assert_eq!(reply.failure(), failure, "{reply:?}");
        }
    }
}
