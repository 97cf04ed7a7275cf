//! The token bucket itself: pure arithmetic over an explicit `now`, shared by the local
//! limiter and mirrored by the Redis script, so it is tested without clocks or sockets.

use std::time::Duration;

/// A policy's bucket shape: `rate` tokens per `period`, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Tokens added per second.
    pub per_second: f64,
    /// Capacity: the most tokens that can be spent at once.
    pub burst: f64,
}

impl Shape {
    pub fn new(rate: u64, period: Duration, burst: u64) -> Self {
        Self {
            per_second: rate as f64 / period.as_secs_f64().max(1e-9),
            burst: burst as f64,
        }
    }

    /// The same shape divided over `n` instances (the `local` fallback): each gets
    /// `rate / n` and `burst / n` rounded up, so `n` instances together admit at most
    /// `n - 1` more than the whole burst.
    pub fn split(&self, n: u32) -> Self {
        let n = f64::from(n.max(1));
        Self {
            per_second: self.per_second / n,
            burst: (self.burst / n).ceil().max(1.0),
        }
    }

    /// The part `fraction` (0 to 1) of this shape: a region's share of a fallback shape.
    /// At least one token of burst, like [`Shape::split`], so that a small share still
    /// admits.
    pub fn scaled(&self, fraction: f64) -> Self {
        let f = fraction.clamp(0.0, 1.0);
        Self {
            per_second: self.per_second * f,
            burst: (self.burst * f).max(1.0),
        }
    }

    /// Time for `tokens` tokens to accrue (saturating at about 584 years).
    pub fn time_for(&self, tokens: f64) -> Duration {
        if tokens <= 0.0 {
            return Duration::ZERO;
        }
        // from_nanos on a float-to-int cast: cheaper than from_secs_f64, and it saturates.
        Duration::from_nanos((tokens * 1e9 / self.per_second.max(1e-12)).ceil() as u64)
    }
}

/// One key's bucket. `updated` is nanoseconds on the caller's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub updated: u64,
}

/// Outcome of taking one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Admitted; `remaining` whole tokens are left.
    Allowed { remaining: u64 },
    /// Refused; a token accrues after `retry_after`.
    Limited { retry_after: Duration },
}

impl Bucket {
    /// A bucket that starts full at `now`.
    pub fn full(shape: &Shape, now: u64) -> Self {
        Self {
            tokens: shape.burst,
            updated: now,
        }
    }

    /// Adds the tokens accrued since the last update, capped at the burst.
    /// Time going backwards (a clock the caller got wrong) adds nothing.
    pub fn refill(&mut self, shape: &Shape, now: u64) {
        if now > self.updated {
            let elapsed = (now - self.updated) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * shape.per_second).min(shape.burst);
            self.updated = now;
        }
    }

    /// Refills, then takes one token if there is one.
    pub fn take(&mut self, shape: &Shape, now: u64) -> Take {
        self.refill(shape, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Take::Allowed {
                remaining: self.tokens.floor() as u64,
            }
        } else {
            Take::Limited {
                retry_after: shape.time_for(1.0 - self.tokens),
            }
        }
    }

    /// Time until the bucket is full again (the `t` of the `RateLimit` header).
    pub fn time_to_full(&self, shape: &Shape) -> Duration {
        shape.time_for(shape.burst - self.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_refill() {
        let shape = Shape::new(5, Duration::from_secs(60), 5);
        let mut b = Bucket::full(&shape, 0);
        for left in (0..5).rev() {
            assert_eq!(b.take(&shape, 0), Take::Allowed { remaining: left });
        }
        match b.take(&shape, 0) {
            Take::Limited { retry_after } => assert_eq!(retry_after, Duration::from_secs(12)),
            other => panic!("{other:?}"),
        }
        // 11.9 s later: still nothing; 12 s: one token.
        assert!(matches!(
            b.take(&shape, 11_900_000_000),
            Take::Limited { .. }
        ));
        assert_eq!(b.take(&shape, 12 * S), Take::Allowed { remaining: 0 });
        // A long pause fills it only up to the burst.
        b.refill(&shape, 3600 * S);
        assert_eq!(b.tokens, 5.0);
    }

    #[test]
    fn fractional_rates_accumulate() {
        // 1 token per 3 s.
        let shape = Shape::new(1, Duration::from_secs(3), 1);
        let mut b = Bucket::full(&shape, 0);
        assert!(matches!(b.take(&shape, 0), Take::Allowed { .. }));
        assert!(matches!(b.take(&shape, S), Take::Limited { .. }));
        assert!(matches!(b.take(&shape, 2 * S), Take::Limited { .. }));
        assert!(matches!(b.take(&shape, 3 * S), Take::Allowed { .. }));
        // 2.5 tokens per second: 10 tokens in 4 s.
        let shape = Shape::new(5, Duration::from_secs(2), 100);
        let mut b = Bucket {
            tokens: 0.0,
            updated: 0,
        };
        b.refill(&shape, 4 * S);
        assert!((b.tokens - 10.0).abs() < 1e-9);
    }

    #[test]
    fn time_never_goes_backwards() {
        let shape = Shape::new(10, Duration::from_secs(1), 10);
        let mut b = Bucket {
            tokens: 0.0,
            updated: 10 * S,
        };
        b.refill(&shape, 5 * S);
        assert_eq!(b.tokens, 0.0);
        assert_eq!(b.updated, 10 * S);
    }

    #[test]
    fn split_over_instances() {
        let shape = Shape::new(100, Duration::from_secs(1), 10).split(4);
        assert_eq!(shape.per_second, 25.0);
        assert_eq!(shape.burst, 3.0);
        assert_eq!(
            Shape::new(5, Duration::from_secs(60), 5).split(10).burst,
            1.0
        );
    }

    #[test]
    fn time_to_full() {
        let shape = Shape::new(5, Duration::from_secs(60), 5);
        let b = Bucket {
            tokens: 3.0,
            updated: 0,
        };
        assert_eq!(b.time_to_full(&shape), Duration::from_secs(24));
    }
}
