//! The request stages of `request_filter` and the breaker bookkeeping: plain values in,
//! a decision out, each a small method the hooks in `mod.rs` call in order.

use super::*;
use crate::config::TierId;
use crate::dashboard::Client;
use crate::edge::Refusal;

impl Gateway {
    /// The request stages before proxying: plain values in, a decision out.
    pub fn admit(&self, req: &mut RequestHeader, ctx: &mut Ctx) -> Outcome {
        let snap = Arc::clone(&ctx.snapshot);
        Self::correlate(&snap, req, ctx);
        if let Err(refusal) = self.clean(&snap, req) {
            ctx.error = Some(Failure::Refused(refusal));
            return Outcome::Respond(Reply::Refused(refusal));
        }
        if Self::is_ping(&snap, req) {
            ctx.route = RouteLabel::Ping;
            ctx.limit_policy = snap.ping.as_ref().and_then(|p| p.rate_limit);
            return Outcome::Respond(Reply::Pong);
        }
        match Self::route_and_authorize(&snap, req, ctx) {
            Ok(()) => Outcome::Continue,
            Err(reply) => {
                // A bad credential has already said why; anything else is what the reply says.
                if ctx.error.is_none() {
                    ctx.error = reply.failure();
                }
                Outcome::Respond(reply)
            }
        }
    }

    /// Stage 1: keep a sane request id or mint one; the same for traceparent.
    pub(super) fn correlate(snap: &Snapshot, req: &RequestHeader, ctx: &mut Ctx) {
        ctx.request_id = correlation::assign(
            req.headers.get(&snap.correlation.header),
            snap.correlation.trust_incoming,
        )
        .map(|(id, _)| id);
        if snap.correlation.traceparent {
            ctx.traceparent = match req.headers.get("traceparent") {
                Some(tp) if correlation::is_valid_traceparent(tp.as_bytes()) => Some(tp.clone()),
                _ => correlation::mint_traceparent(),
            };
        }
    }

    /// Stage 2: the path in its canonical spelling, header names without `_`: every later
    /// stage, the access log and the upstream see the request as cleaned here.
    pub(super) fn clean(&self, snap: &Snapshot, req: &mut RequestHeader) -> Result<(), Refusal> {
        match snap.edge.clean(req) {
            Ok(cleaned) => {
                self.metrics
                    .observe_edge_cleaned(cleaned.path_rewritten, cleaned.headers_dropped);
                Ok(())
            }
            Err(refusal) => {
                self.metrics.observe_edge_refusal(refusal.label());
                Err(refusal)
            }
        }
    }

    /// Stage 3: the built-in health endpoint of the gateway itself.
    pub(super) fn is_ping(snap: &Snapshot, req: &RequestHeader) -> bool {
        snap.ping
            .as_ref()
            .is_some_and(|p| req.method == http::Method::GET && req.uri.path() == p.path)
    }

    /// Stages 4 to 6: route, authenticate, check the pool. An `Err` is the reply.
    pub(super) fn route_and_authorize(
        snap: &Snapshot,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<(), Reply> {
        let (index, route) = snap
            .router
            .find(request_host(req), req.uri.path())
            .ok_or(Reply::NotFound)?;
        ctx.route = RouteLabel::Route(index);
        let tier = Self::authenticate(snap, route.auth, req, ctx)?;
        if !route.allows_tier(tier) {
            return Err(Reply::Forbidden);
        }
        ctx.limit_policy = route.rate_limit(tier);
        // Fail fast when no backend can take the request: no upstream connection is attempted.
        let pool = snap.pools.get(route.pool.0).ok_or(Reply::Internal)?;
        if !pool.health.available() {
            pool.health.short_circuited();
            return Err(Reply::Unavailable {
                retry_after: pool.health.retry_after(),
            });
        }
        Ok(())
    }

    /// Stage 5: a principal and its tier, or anonymous (tier 0).
    pub(super) fn authenticate(
        snap: &Snapshot,
        mode: AuthMode,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<TierId, Reply> {
        if mode == AuthMode::None {
            return Ok(TierId::ANONYMOUS);
        }
        let auth = &snap.auth;
        match auth.authenticate(req, crate::auth::unix_now()) {
            Ok(Some(p)) => {
                let tier = p.tier;
                ctx.principal = Some(p);
                Ok(tier)
            }
            Ok(None) if mode == AuthMode::Required => Err(Reply::Unauthorized {
                challenge: auth.challenge_missing.clone(),
                invalid: false,
            }),
            Ok(None) => Ok(TierId::ANONYMOUS),
            Err(e) => {
                // The reason goes to the access log; no token or key material does.
                ctx.error = Some(Failure::Credential(e));
                Err(Reply::Unauthorized {
                    challenge: auth.challenge_invalid.clone(),
                    invalid: true,
                })
            }
        }
    }

    /// The route and pool a request was routed to, in its snapshot.
    pub(super) fn route_of(ctx: &Ctx) -> Option<(&crate::routing::Route, &Arc<Pool>)> {
        Self::route_of_in(&ctx.snapshot, ctx.route)
    }

    pub(super) fn route_of_in(
        snap: &Snapshot,
        label: RouteLabel,
    ) -> Option<(&crate::routing::Route, &Arc<Pool>)> {
        let RouteLabel::Route(i) = label else {
            return None;
        };
        let route = snap.router.get(i)?;
        Some((route, snap.pools.get(route.pool.0)?))
    }

    /// Tells the breaker how the last upstream attempt went, once.
    pub(super) fn record_attempt(&self, e: Option<&Error>, ctx: &mut Ctx) {
        let Some(attempt) = ctx.attempt.take() else {
            return;
        };
        let outcome = match (ctx.upstream_status, e) {
            (Some(s), _) if s >= 500 && attempt.counts_5xx() => AttemptOutcome::Failure,
            (Some(_), _) => AttemptOutcome::Success,
            // No response: an upstream error or timeout is the backend's failure; a
            // client that went away first says nothing about it.
            (None, Some(e))
                if e.esource() == &ErrorSource::Upstream
                    || respond::reply_for(e, Duration::ZERO) == Some(Reply::GatewayTimeout) =>
            {
                AttemptOutcome::Failure
            }
            (None, _) => AttemptOutcome::Abandoned,
        };
        attempt.record(outcome);
    }

    /// While draining, the response says `Connection: close` and the connection ends with it.
    pub(super) fn close_if_draining(&self, session: &mut Session) {
        if self.drain.is_draining() {
            session.set_keepalive(None);
        }
    }

    /// A response the gateway made itself, or a refusal: counted by reason, and for the
    /// dashboard's blocked clients and last errors. Proxied responses (even an upstream's
    /// 429) are not its.
    pub(super) fn count_error(&self, status: u16, ctx: &Ctx) {
        let Some(failure) = ctx.error.filter(|_| status >= 400) else {
            return;
        };
        self.metrics.count_error(failure.reason_index());
        let client = match (&ctx.principal, ctx.client_ip) {
            (Some(p), _) => Client::Consumer(&p.consumer),
            (None, Some(ip)) => Client::Ip(ip),
            (None, None) => Client::Unknown,
        };
        self.dashboard.record(
            status,
            failure.as_str(),
            Self::route_name(ctx),
            ctx.request_id(),
            client,
        );
    }

    pub(super) fn route_name(ctx: &Ctx) -> &str {
        match ctx.route {
            RouteLabel::Route(i) => ctx
                .snapshot
                .router
                .get(i)
                .map_or("none", |r| r.name.as_str()),
            RouteLabel::Ping => "ping",
            RouteLabel::Unrouted => "none",
        }
    }
}
