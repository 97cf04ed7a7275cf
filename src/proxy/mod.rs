//! The `ProxyHttp` implementation: every client request passes through these hooks.
//!
//! ```text
//! request_filter           client_ip -> stages.rs: correlation -> edge -> /ping -> route
//!                          -> authenticate -> pool health; then the rate limit; a Reply is
//!                          written by respond.rs
//! upstream_peer            a healthy backend of the route's pool (skipping one that just
//!                          failed); holds its breaker attempt
//! fail_to_connect,         retry idempotent requests on another backend (bounded per route)
//!   error_while_proxy
//! upstream_request_filter  forward.rs: request id, identity, forwarding headers, prefix strip
//! response_filter          request id, RateLimit headers; Connection: close while draining
//! fail_to_proxy            502 / 503 / 504 as JSON via respond.rs
//! logging                  the breaker outcome, metrics, one access-log line
//! ```

mod bare;
mod ctx;
mod failure;
mod forward;
mod respond;
mod snapshot;
mod stages;

pub use bare::BareProxy;
pub use ctx::Ctx;
pub use failure::Failure;
pub use respond::Reply;
pub use snapshot::Snapshot;

use crate::config::AuthMode;
use crate::correlation;
use crate::drain::Drain;
use crate::observability::{AccessLog, AccessRecord, Metrics, RepeatedText, RouteLabel};
use crate::routing::breaker::Outcome as AttemptOutcome;
use crate::routing::{request_host, Pool};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorSource, ErrorType};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What `request_filter`'s stages decided.
///
/// Pingora's `request_filter` returns `Ok(true)` when the filter has already sent a
/// response and `Ok(false)` to continue proxying; this enum names the two cases so the
/// polarity is decided in one place ([`Gateway::request_filter`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Go on to `upstream_peer`.
    Continue,
    /// Answer the client with this reply; do not proxy.
    Respond(Reply),
}

/// The gateway's proxy logic, shared by all workers.
pub struct Gateway {
    /// Routes, pools, auth and request rules: swapped whole by a config reload. Each
    /// request reads it once (`new_ctx`) and keeps that snapshot to the end.
    pub state: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    /// How long an idle upstream connection may stay pooled; `None`: until the upstream closes it.
    pub upstream_idle_timeout: Option<Duration>,
    /// Shutting down: every response closes its client connection.
    pub drain: Arc<Drain>,
    /// The live dashboard: told of the responses the gateway makes itself.
    pub dashboard: Arc<crate::dashboard::Dashboard>,
}

/// The socket peer's IP (not the derived client: X-Forwarded-For appends this hop).
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session.client_addr()?.as_inet().map(|a| a.ip())
}

/// The upstream connection broke (closed, reset, write failed) before a response came.
/// Not a timeout, not an error of the client or of ours.
fn is_connection_failure(e: &Error) -> bool {
    e.esource() == &ErrorSource::Upstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

/// Formats `ip` into `buf` without allocating.
fn ip_text(ip: Option<IpAddr>, buf: &mut String) -> &str {
    buf.clear();
    if let Some(ip) = ip {
        let _ = write!(buf, "{ip}");
    }
    buf.as_str()
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.state.load_full())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        self.close_if_draining(session);
        ctx.client_ip = peer_ip(session).map(|peer| {
            crate::client_ip::client_ip(
                peer,
                session.req_header().headers.get("x-forwarded-for"),
                &ctx.snapshot.trusted_proxies,
            )
        });
        let mut outcome = self.admit(session.req_header_mut(), ctx);
        // The rate-limit stage: only for requests that would be served (proxied or /ping).
        if let (Some(p), Outcome::Continue | Outcome::Respond(Reply::Pong)) =
            (ctx.limit_policy, &outcome)
        {
            let limiter = &ctx.snapshot.limiter;
            if let Some(policy) = limiter.policy(p) {
                let mut buf = Vec::new();
                let key = crate::ratelimit::limit_key(
                    &policy.key,
                    session.req_header(),
                    ctx.client_ip,
                    ctx.principal.as_ref().map(|p| p.consumer.as_ref()),
                    &mut buf,
                );
                // The request path decides without awaiting; only a key with no lease waits.
                let d = match limiter.try_check(p, key) {
                    Some(d) => d,
                    None => limiter.check(p, key).await,
                };
                if let Some(state) = policy.header(&d) {
                    ctx.rate_limit = Some((policy.policy_header.clone(), state));
                }
                if !d.allowed {
                    ctx.error = Some(Failure::RateLimited);
                    outcome = Outcome::Respond(Reply::RateLimited {
                        retry_after: d.retry_after,
                    });
                }
            }
        }
        match outcome {
            Outcome::Continue => Ok(false),
            Outcome::Respond(reply) => {
                respond::respond(session, ctx, &reply).await?;
                Ok(true) // Pingora: true = "a response was already sent"
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Borrows only the snapshot field: the other fields of ctx stay writable below.
        let Some((route, pool)) = Self::route_of_in(&ctx.snapshot, ctx.route) else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer without a route");
        };
        let mut buf = [0u8; 16];
        let key = crate::routing::hash_key(
            &pool.hash_key,
            session.req_header(),
            ctx.client_ip,
            &mut buf,
        );
        // A retry (Pingora calls this hook again): never the backend that just failed, be it
        // a refused connect or a pooled connection that died. An error on a reused
        // connection says nothing certain about the backend, so its slot is only released.
        if let Some(prev) = ctx.upstream {
            ctx.failed_backend = Some(prev);
            if let Some(attempt) = ctx.attempt.take() {
                attempt.record(AttemptOutcome::Abandoned);
            }
        }
        let selected = pool
            .select(key, ctx.failed_backend.as_ref())
            // A pool of one: retrying the same backend on a fresh connection is all there is.
            .or_else(|| ctx.failed_backend.and_then(|_| pool.select(key, None)));
        let Some(addr) = selected else {
            ctx.error = Some(Failure::NoHealthyUpstream);
            return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy backend");
        };
        ctx.attempts += 1;
        ctx.upstream = Some(addr);
        ctx.attempt = pool.health.attempt(addr);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(route.connect_timeout);
        peer.options.read_timeout = Some(route.read_timeout);
        // Unset by default: Pingora times every upstream write, and that cost ~10% of
        // throughput here; a stalled upstream is still caught by the read timeout.
        peer.options.write_timeout = route.write_timeout;
        // None (the default) keeps an idle connection pooled until the upstream closes it
        // (Pingora watches every pooled socket and drops it on FIN) or the pool evicts it.
        // A timeout costs a tokio timer per request: ~10% throughput, measured (README).
        peer.options.idle_timeout = self.upstream_idle_timeout;
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let snap = Arc::clone(&ctx.snapshot);
        let retry = match Self::route_of_in(&snap, ctx.route) {
            Some((route, pool)) => {
                ctx.failed_backend = peer.address().as_inet().copied();
                if let Some(attempt) = ctx.attempt.take() {
                    attempt.record(AttemptOutcome::Failure);
                }
                // Bounded: at most `retries` extra attempts, only for idempotent methods,
                // and only when another available backend exists to try.
                ctx.attempts <= route.retries
                    && session.req_header().method.is_idempotent()
                    && pool.health.has_other(ctx.failed_backend.as_ref())
            }
            None => false,
        };
        e.set_retry(retry);
        e
    }

    /// An error after the connection was made: retry it when nothing has reached the client
    /// yet, like nginx's `proxy_next_upstream error`. Pingora alone retries only a failed
    /// read on a reused connection, so a backend dying under load (EPIPE or a reset while
    /// the request is written, a close before any response) was a 502 for the client.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // The request can be sent again only if it is idempotent, its body is still whole
        // in the retry buffer, and no response (not even its header) has reached the client.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && ctx.upstream_status.is_none()
            && session.response_written().is_none();
        if !replayable {
            e.set_retry(false);
            return e;
        }
        // Pingora's own rule: a pooled connection that failed is retried on a fresh one.
        e.retry.decide_reuse(client_reused);
        if e.retry() || !is_connection_failure(&e) {
            // A timeout is not retried: the backend may still be working on the request.
            return e;
        }
        let snap = Arc::clone(&ctx.snapshot);
        let retry = match Self::route_of_in(&snap, ctx.route) {
            Some((route, pool)) => {
                ctx.failed_backend = peer.address().as_inet().copied();
                // A fresh connection that failed is the backend's failure; a pooled one may
                // just have been closed by the backend while idle (upstream_peer releases it).
                if !client_reused {
                    if let Some(attempt) = ctx.attempt.take() {
                        attempt.record(AttemptOutcome::Failure);
                    }
                }
                // The same budget as a failed connect: `retries` extra attempts in all, on
                // another backend (a pooled connection may retry on the same one).
                ctx.attempts <= route.retries
                    && (client_reused || pool.health.has_other(ctx.failed_backend.as_ref()))
            }
            None => false,
        };
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        let snap = &ctx.snapshot;
        let auth = snap.auth.config();
        let identity = ctx
            .principal
            .as_ref()
            .filter(|_| auth.forward_identity)
            .map(|p| forward::Identity {
                consumer: p.consumer.as_ref(),
                tier: snap.auth.tier_name(p.tier),
            });
        forward::set_correlation_and_identity(
            upstream,
            &snap.correlation.header,
            ctx.request_id.as_ref(),
            ctx.traceparent.as_ref(),
            identity,
        )?;
        if auth.strip_credentials {
            snap.auth.strip_credentials(upstream);
        }
        let host = session.req_header().headers.get(http::header::HOST);
        forward::set_forwarding(
            upstream,
            forward::Hop {
                peer: peer_ip(session),
                host,
            },
        )?;
        if let Some((route, _)) = Self::route_of(ctx) {
            // The client's path is the upstream's until here (the edge stage rewrote both).
            if let Some(rest) = route.rewrite(session.req_header().uri.path()) {
                forward::set_path(upstream, rest)?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        if !ctx.snapshot.edge.preserve_header_case() {
            crate::edge::headers::forget_response_case(upstream_response);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        // Again here: draining may have started while the upstream was answering.
        self.close_if_draining(session);
        respond::gateway_headers(resp, ctx)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let retry_after =
            Self::route_of(ctx).map_or(Duration::from_secs(1), |(_, p)| p.health.retry_after());
        let reply = respond::reply_for(e, retry_after);
        let code = reply.as_ref().map_or(0, Reply::status);
        if ctx.error.is_none() {
            ctx.error = reply.as_ref().and_then(Reply::failure);
        }
        // Pingora never reuses a client connection after a failed proxy attempt (its
        // proxy loop ignores `can_reuse_downstream` there), so the reply must say
        // `Connection: close`: a client must not send its next request into a closing socket.
        session.set_keepalive(None);
        // Only answer if nothing was sent yet: a response already under way cannot be replaced.
        if let Some(reply) = reply {
            if session.response_written().is_none() {
                if ctx.request_id.is_none() {
                    ctx.request_id = correlation::mint_request_id();
                }
                if let Err(we) = respond::respond(session, ctx, &reply).await {
                    log::debug!(
                        "request_id={} cannot send error response: {we}",
                        ctx.request_id()
                    );
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.record_attempt(e, ctx);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let route = self.metrics.route(ctx.route, &ctx.snapshot.route_metrics);
        self.metrics
            .observe_request(route, status, elapsed.as_secs_f64());
        self.count_error(status, ctx);
        let Some(log) = &self.access_log else {
            return;
        };
        let req = session.req_header();
        let mut ip_buf = String::new();
        // Ours when we know why; else what Pingora says the error was.
        let error = match (ctx.error, e) {
            (Some(failure), _) => Some(failure.as_str()),
            (None, Some(e)) => Some(e.etype().as_str()),
            (None, None) => None,
        };
        RepeatedText::with(|text| {
            let (time, upstream) = text.texts(SystemTime::now(), ctx.upstream);
            log.log(&AccessRecord {
                time,
                request_id: ctx.request_id(),
                trace_id: ctx.traceparent.as_ref().map_or("", correlation::trace_id),
                client_ip: ip_text(ctx.client_ip, &mut ip_buf),
                method: req.method.as_str(),
                host: request_host(req).unwrap_or(""),
                path: req.uri.path(),
                status,
                // Microsecond resolution: no float noise (1.7533850000000002) in the log.
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                upstream,
                route: Self::route_name(ctx),
                consumer: ctx.principal.as_ref().map(|p| p.consumer.as_ref()),
                tier: ctx
                    .principal
                    .as_ref()
                    .map(|p| ctx.snapshot.auth.tier_name(p.tier)),
                bytes_sent: session.body_bytes_sent(),
                error,
            });
        });
    }

    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        format!(
            "{} {} request_id={}",
            req.method,
            req.uri.path(),
            ctx.request_id()
        )
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        // A client hanging up (the end of every load test) is not an error of ours.
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }
}

#[cfg(test)]
mod tests;
