//! The circuit breaker of one backend: a pure state machine over explicit `now`
//! (nanoseconds) and outcomes, so every transition is tested without sockets or sleeps.
//!
//! ```text
//!            N consecutive failures, or failure ratio >= R over the window
//!            (with at least M requests), or a failed active health check
//!   Closed ─────────────────────────────────────────────────────────────► Open
//!     ▲                                                                   │ open duration
//!     │ `close_after` trial successes                                     ▼ (doubles per trip, capped)
//!     └──────────────────────────── HalfOpen ◄────────────────────────────┘
//!                                     │ one failure
//!                                     └──────────────────────────────────► Open (longer)
//! ```

pub use crate::config::BreakerConfig;

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Refusing requests until `until` (ns).
    Open {
        until: u64,
    },
    /// Letting `half_open_trials` requests through at once.
    HalfOpen {
        in_flight: u32,
        successes: u32,
    },
}

impl State {
    pub fn phase(&self) -> Phase {
        match self {
            State::Closed => Phase::Closed,
            State::Open { .. } => Phase::Open,
            State::HalfOpen { .. } => Phase::HalfOpen,
        }
    }
}

/// A state without its data: what metrics and logs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

impl Phase {
    /// The `from` / `to` label values of `gateway_breaker_transitions_total`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        }
    }

    /// For the state gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            Phase::Closed => 0,
            Phase::Open => 1,
            Phase::HalfOpen => 2,
        }
    }
}

/// A change of state, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
}

/// What happened to one request sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Selected but never sent (e.g. the client went away first): frees a trial slot.
    Abandoned,
}

/// Number of slots the sliding window is cut into.
const SLOTS: usize = 10;

/// One backend's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    consecutive: u32,
    /// Consecutive trips without a close in between (grows the open duration).
    trips: u32,
    /// Per slot: (slot start ns, requests, failures).
    window: [(u64, u32, u32); SLOTS],
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
            consecutive: 0,
            trips: 0,
            window: [(0, 0, 0); SLOTS],
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Open -> half-open, with no trial taken yet.
    fn half_open(&mut self) -> Transition {
        self.state = State::HalfOpen {
            in_flight: 0,
            successes: 0,
        };
        Transition {
            from: Phase::Open,
            to: Phase::HalfOpen,
        }
    }

    /// Moves an expired open period to half-open. Returns the transition, if any.
    fn advance(&mut self, now: u64) -> Option<Transition> {
        match self.state {
            State::Open { until } if now >= until => Some(self.half_open()),
            _ => None,
        }
    }

    /// Whether a request may go to this backend now; in half-open, taking a trial slot.
    pub fn try_acquire(&mut self, now: u64) -> (bool, Option<Transition>) {
        let t = self.advance(now);
        let allowed = match &mut self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { in_flight, .. } => {
                if *in_flight < self.config.half_open_trials {
                    *in_flight += 1;
                    true
                } else {
                    false
                }
            }
        };
        (allowed, t)
    }

    /// Whether a request could go now, without taking a slot (for fast-fail checks).
    pub fn would_allow(&self, now: u64) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen { in_flight, .. } => in_flight < self.config.half_open_trials,
        }
    }

    /// Nanoseconds until this backend may be tried again (0 when it may now).
    pub fn wait(&self, now: u64) -> u64 {
        match self.state {
            State::Open { until } => until.saturating_sub(now),
            _ => 0,
        }
    }

    fn trip(&mut self, now: u64) -> Transition {
        let from = self.state.phase();
        let factor = 1u32 << self.trips.min(16);
        let open = (self.config.open_duration * factor).min(self.config.max_open);
        self.trips = self.trips.saturating_add(1);
        self.state = State::Open {
            until: now + open.as_nanos() as u64,
        };
        self.consecutive = 0;
        self.window = [(0, 0, 0); SLOTS];
        Transition {
            from,
            to: Phase::Open,
        }
    }

    fn slot(&mut self, now: u64) -> &mut (u64, u32, u32) {
        let width = (self.config.window.as_nanos() as u64 / SLOTS as u64).max(1);
        let start = now - now % width;
        let slot = &mut self.window[((now / width) as usize) % SLOTS];
        if slot.0 != start {
            *slot = (start, 0, 0);
        }
        slot
    }

    fn window_totals(&self, now: u64) -> (u32, u32) {
        let horizon = now.saturating_sub(self.config.window.as_nanos() as u64);
        self.window
            .iter()
            .filter(|(start, _, _)| *start > horizon || (*start == 0 && horizon == 0))
            .fold((0, 0), |(r, f), (_, rr, ff)| (r + rr, f + ff))
    }

    /// Records the outcome of a request this breaker let through.
    pub fn record(&mut self, now: u64, outcome: Outcome) -> Option<Transition> {
        let advanced = self.advance(now);
        let t = match (&mut self.state, outcome) {
            (State::HalfOpen { in_flight, .. }, Outcome::Abandoned) => {
                *in_flight = in_flight.saturating_sub(1);
                None
            }
            (_, Outcome::Abandoned) => None,
            (State::HalfOpen { .. }, Outcome::Failure) => Some(self.trip(now)),
            (
                State::HalfOpen {
                    in_flight,
                    successes,
                },
                Outcome::Success,
            ) => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= self.config.close_after {
                    self.state = State::Closed;
                    self.trips = 0;
                    self.consecutive = 0;
                    Some(Transition {
                        from: Phase::HalfOpen,
                        to: Phase::Closed,
                    })
                } else {
                    None
                }
            }
            // A late outcome of a request sent before the trip: no effect.
            (State::Open { .. }, _) => None,
            (State::Closed, outcome) => {
                let failed = outcome == Outcome::Failure;
                let slot = self.slot(now);
                slot.1 += 1;
                slot.2 += u32::from(failed);
                self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                let (requests, failures) = self.window_totals(now);
                let by_count = self.config.consecutive_failures > 0
                    && self.consecutive >= self.config.consecutive_failures;
                let by_ratio = self.config.failure_ratio > 0.0
                    && requests >= self.config.min_requests.max(1)
                    && f64::from(failures) / f64::from(requests) >= self.config.failure_ratio;
                (failed && (by_count || by_ratio)).then(|| self.trip(now))
            }
        };
        t.or(advanced)
    }

    /// An active health check's verdict: a failing backend opens at once; a passing one
    /// that is open goes half-open, so trial traffic decides.
    pub fn health(&mut self, now: u64, healthy: bool) -> Option<Transition> {
        match (self.state, healthy) {
            (State::Closed | State::HalfOpen { .. }, false) => Some(self.trip(now)),
            (State::Open { .. }, true) => Some(self.half_open()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            window: Duration::from_secs(10),
            min_requests: 10,
            open_duration: Duration::from_secs(1),
            max_open: Duration::from_secs(4),
            half_open_trials: 2,
            close_after: 2,
            count_5xx: true,
        }
    }

    fn open_until(b: &Breaker) -> u64 {
        match b.state() {
            State::Open { until } => until,
            s => panic!("not open: {s:?}"),
        }
    }

    #[test]
    fn consecutive_failures_trip() {
        let mut b = Breaker::new(cfg());
        assert_eq!(b.record(0, Outcome::Failure), None);
        assert_eq!(b.record(1, Outcome::Failure), None);
        // A success resets the run.
        assert_eq!(b.record(2, Outcome::Success), None);
        assert_eq!(b.record(3, Outcome::Failure), None);
        assert_eq!(b.record(4, Outcome::Failure), None);
        let t = b.record(5, Outcome::Failure);
        assert_eq!(
            t,
            Some(Transition {
                from: Phase::Closed,
                to: Phase::Open
            })
        );
        assert_eq!(open_until(&b), 5 + S);
        assert!(!b.try_acquire(5 + S - 1).0);
        assert!(!b.would_allow(S));
        assert_eq!(b.wait(5), S);
    }

    #[test]
    fn failure_ratio_trips_only_with_enough_requests() {
        let mut b = Breaker::new(BreakerConfig {
            consecutive_failures: 0,
            ..cfg()
        });
        // 4 failures out of 8: ratio 0.5 but under min_requests.
        for i in 0..4 {
            assert_eq!(b.record(i * MS, Outcome::Success), None);
            assert_eq!(b.record(i * MS + 1, Outcome::Failure), None);
        }
        assert_eq!(b.record(10 * MS, Outcome::Success), None);
        // 10th request, a failure: 5 of 10.
        assert_eq!(
            b.record(11 * MS, Outcome::Failure).map(|t| t.to),
            Some(Phase::Open)
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut b = Breaker::new(BreakerConfig {
            consecutive_failures: 0,
            ..cfg()
        });
        for i in 0..9 {
            b.record(i * MS, Outcome::Failure);
        }
        // 11 s later the window is empty again: 1 failure in 1 request is under min_requests.
        assert_eq!(b.record(11 * S, Outcome::Failure), None);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn half_open_trials_close_or_reopen() {
        let mut b = Breaker::new(cfg());
        b.health(0, false);
        let until = open_until(&b);
        // Open period over: half-open on the next acquire, bounded trials.
        let (ok, t) = b.try_acquire(until);
        assert!(ok);
        assert_eq!(
            t,
            Some(Transition {
                from: Phase::Open,
                to: Phase::HalfOpen
            })
        );
        assert!(b.try_acquire(until).0);
        assert!(!b.try_acquire(until).0, "only 2 trials at once");
        assert_eq!(b.record(until + 1, Outcome::Success), None);
        assert_eq!(
            b.record(until + 2, Outcome::Success),
            Some(Transition {
                from: Phase::HalfOpen,
                to: Phase::Closed
            })
        );
        assert!(b.try_acquire(until + 3).0);
    }

    #[test]
    fn a_failed_trial_reopens_for_longer_up_to_the_max() {
        let mut b = Breaker::new(cfg());
        b.health(0, false); // 1 s
        let mut now = open_until(&b);
        let mut opens = Vec::new();
        for _ in 0..4 {
            assert!(b.try_acquire(now).0);
            assert_eq!(
                b.record(now, Outcome::Failure).map(|t| t.to),
                Some(Phase::Open)
            );
            let until = open_until(&b);
            opens.push((until - now) / S);
            now = until;
        }
        assert_eq!(opens, [2, 4, 4, 4], "doubles, capped at max_open");
        // Closing resets the growth.
        assert!(b.try_acquire(now).0);
        assert!(b.try_acquire(now).0);
        b.record(now, Outcome::Success);
        b.record(now, Outcome::Success);
        assert_eq!(b.state(), State::Closed);
        for i in 0..3 {
            b.record(now + i, Outcome::Failure);
        }
        assert_eq!(open_until(&b) - (now + 2), S);
    }

    #[test]
    fn abandoned_trials_free_their_slot() {
        let mut b = Breaker::new(cfg());
        b.health(0, false);
        let until = open_until(&b);
        assert!(b.try_acquire(until).0);
        assert!(b.try_acquire(until).0);
        assert!(!b.try_acquire(until).0);
        b.record(until, Outcome::Abandoned);
        assert!(b.try_acquire(until).0);
    }

    #[test]
    fn health_checks_drive_it() {
        let mut b = Breaker::new(cfg());
        assert_eq!(b.health(0, true), None);
        assert_eq!(b.health(0, false).map(|t| t.to), Some(Phase::Open));
        assert_eq!(b.health(1, false), None, "already open");
        assert_eq!(
            b.health(2, true),
            Some(Transition {
                from: Phase::Open,
                to: Phase::HalfOpen
            })
        );
        assert_eq!(
            b.health(3, false).map(|t| (t.from, t.to)),
            Some((Phase::HalfOpen, Phase::Open))
        );
    }

    #[test]
    fn late_outcomes_while_open_are_ignored() {
        let mut b = Breaker::new(cfg());
        b.health(0, false);
        let until = open_until(&b);
        assert_eq!(b.record(1, Outcome::Failure), None);
        assert_eq!(b.record(2, Outcome::Success), None);
        assert_eq!(open_until(&b), until);
    }
}
