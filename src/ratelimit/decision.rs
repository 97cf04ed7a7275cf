//! What the limiter decided for one request, and why.

use super::Take;
use crate::observability::DecisionReason;
use std::time::Duration;

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Why the limiter decided as it did: the `reason` label of its decisions metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A token of a lease Redis granted (or of the cold-start allowance).
    Lease,
    /// Redis had no token left: refused locally until one is due.
    Empty,
    /// No lease arrived within `lease_wait` while Redis was reachable. Refused: a slow
    /// Redis is never a reason to admit on local guesswork (that admission would be spent
    /// again when the late lease arrives).
    NoLease,
    /// The instance's own bucket: no Redis configured.
    Local,
    /// Redis is unreachable (as judged by the sync service): the policy's `on_redis_error`.
    RedisUnreachable,
    /// The key table is full: no state to decide with.
    Untracked,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Lease,
        Reason::Empty,
        Reason::NoLease,
        Reason::Local,
        Reason::RedisUnreachable,
        Reason::Untracked,
    ];

    /// The reasons as the decisions metric labels them, in [`Reason`] order.
    pub(super) fn metric_labels() -> Vec<DecisionReason> {
        Reason::ALL
            .iter()
            .map(|r| DecisionReason {
                label: r.as_str(),
                fallback: matches!(r, Reason::RedisUnreachable | Reason::Untracked),
            })
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Lease => "lease",
            Reason::Empty => "empty",
            Reason::NoLease => "no_lease",
            Reason::Local => "local",
            Reason::RedisUnreachable => "redis_unreachable",
            Reason::Untracked => "untracked",
        }
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Tokens left (a lower bound across instances).
    pub remaining: u64,
    /// When limited: until a token is due.
    pub retry_after: Duration,
    /// Until the bucket would be full again.
    pub reset: Duration,
    pub reason: Reason,
}

impl Decision {
    pub(super) fn allowed(remaining: u64, reset: Duration, reason: Reason) -> Self {
        Self {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
            reset,
            reason,
        }
    }

    pub(super) fn limited(retry_after: Duration, reason: Reason) -> Self {
        Self {
            allowed: false,
            remaining: 0,
            retry_after,
            reset: retry_after,
            reason,
        }
    }

    pub(super) fn from_take(t: Take, reset: Duration, reason: Reason) -> Self {
        match t {
            Take::Allowed { remaining } => Self::allowed(remaining, reset, reason),
            Take::Limited { retry_after } => Self::limited(retry_after, reason),
        }
    }

    /// Decided without Redis although Redis is configured (unreachable, or no state).
    pub fn fallback(&self) -> bool {
        matches!(self.reason, Reason::RedisUnreachable | Reason::Untracked)
    }
}
