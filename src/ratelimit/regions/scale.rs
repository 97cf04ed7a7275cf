//! A region's token bucket scaled by its share, and the transition when the share changes,
//! so that the regions' buckets never add up to more than the global one.

use super::Units;

/// A policy's global token bucket in integer tokens. Express small limits in milli-tokens so
/// that rounding down per region loses less than a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalBucket {
    /// Tokens added per period.
    pub rate: u64,
    /// Capacity.
    pub burst: u64,
}

/// One region's part of a [`GlobalBucket`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionBucket {
    /// Tokens added per period.
    pub rate: u64,
    /// Capacity.
    pub capacity: u64,
}

impl RegionBucket {
    /// The part of `global` that `share` entitles a region to, rounded down.
    ///
    /// Bound: Σ floor(x·s_r / whole) ≤ floor(x·Σ s_r / whole) ≤ x, so shares adding up to at
    /// most the whole give rates adding up to at most the global rate, capacities likewise.
    pub fn for_share(global: GlobalBucket, share: Units) -> RegionBucket {
        RegionBucket {
            rate: scale(global.rate, share),
            capacity: scale(global.burst, share),
        }
    }
}

fn scale(amount: u64, share: Units) -> u64 {
    let whole = u128::from(Units::WHOLE.0);
    let share = u128::from(share.0).min(whole);
    u64::try_from(u128::from(amount) * share / whole).unwrap_or(amount)
}

/// What to do with a region's bucket when its share changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// Apply the smaller `bucket` first, then drop `drop` tokens (those above its capacity).
    Shrink { bucket: RegionBucket, drop: u64 },
    /// Apply `bucket`; tokens stay as they are: the added capacity starts empty.
    Grow { bucket: RegionBucket },
}

impl Resize {
    /// The bucket to apply.
    pub fn bucket(&self) -> RegionBucket {
        match self {
            Resize::Shrink { bucket, .. } | Resize::Grow { bucket } => *bucket,
        }
    }
}

/// The transition of a region's bucket holding `tokens` when its share goes from `old` to `new`.
///
/// Neither branch ever adds a token, so the regions' tokens only grow by refill, at most at
/// the global rate in total.
pub fn resize(global: GlobalBucket, old: Units, new: Units, tokens: u64) -> Resize {
    let bucket = RegionBucket::for_share(global, new);
    // Tokens above the new capacity are dropped even on a grow, so a caller that passed a
    // wrong `old` still never holds more than its capacity.
    if new < old || tokens > bucket.capacity {
        let drop = tokens.saturating_sub(bucket.capacity);
        Resize::Shrink { bucket, drop }
    } else {
        Resize::Grow { bucket }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::weighted;
    use super::super::{RegionId, Regions, Replica};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_shrink_drops_tokens_above_the_new_capacity_and_a_grow_adds_none() {
        let global = GlobalBucket {
            rate: 100,
            burst: 1_000,
        };
        let shrink = resize(global, Units(500_000), Units(200_000), 400);
        let small = RegionBucket {
            rate: 20,
            capacity: 200,
        };
        assert_eq!(
            shrink,
            Resize::Shrink {
                bucket: small,
                drop: 200
            }
        );
        let grow = resize(global, Units(200_000), Units(600_000), 150);
        let large = RegionBucket {
            rate: 60,
            capacity: 600,
        };
        assert_eq!(grow, Resize::Grow { bucket: large });
    }

    #[test]
    fn five_per_minute_over_two_regions_needs_milli_tokens() {
        // The quick start's 5/min: whole tokens round 2.5 down to 2 per region, 4 of 5 overall.
        let tokens = GlobalBucket { rate: 5, burst: 5 };
        assert_eq!(RegionBucket::for_share(tokens, Units(500_000)).capacity, 2);
        let milli = GlobalBucket {
            rate: 5_000,
            burst: 5_000,
        };
        assert_eq!(
            RegionBucket::for_share(milli, Units(500_000)).capacity,
            2_500
        );
    }

    /// One step of a limited key across regions: moving rights, time, and requests.
    #[derive(Clone, Debug)]
    enum Step {
        Give {
            from: usize,
            to: usize,
            permille: u64,
        },
        Gossip {
            from: usize,
            to: usize,
        },
        Tick,
        Spend {
            region: usize,
            tokens: u64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..5, 0usize..5, 0u64..=1000).prop_map(|(from, to, permille)| Step::Give {
                from,
                to,
                permille
            }),
            (0usize..5, 0usize..5).prop_map(|(from, to)| Step::Gossip { from, to }),
            Just(Step::Tick),
            (0usize..5, 0u64..5_000).prop_map(|(region, tokens)| Step::Spend { region, tokens }),
        ]
    }

    /// Each region's bucket, resized to its own share after every step.
    struct Buckets {
        global: GlobalBucket,
        held: Vec<Units>,
        bucket: Vec<RegionBucket>,
        tokens: Vec<u64>,
        admitted: u64,
        ticks: u64,
    }

    impl Buckets {
        fn resize_all(&mut self, regions: &Regions, replicas: &[Replica]) {
            for (r, replica) in replicas.iter().enumerate() {
                let share = replica.share(regions);
                match resize(self.global, self.held[r], share, self.tokens[r]) {
                    Resize::Shrink { bucket, drop } => {
                        self.bucket[r] = bucket;
                        self.tokens[r] -= drop;
                    }
                    Resize::Grow { bucket } => self.bucket[r] = bucket,
                }
                self.held[r] = share;
            }
        }

        fn check(&self) {
            let (rates, capacities): (u64, u64) = self
                .bucket
                .iter()
                .fold((0, 0), |(r, c), b| (r + b.rate, c + b.capacity));
            assert!(rates <= self.global.rate && capacities <= self.global.burst);
            assert!(self
                .tokens
                .iter()
                .zip(&self.bucket)
                .all(|(t, b)| *t <= b.capacity));
            assert!(self.admitted <= self.global.burst + self.global.rate * self.ticks);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn region_buckets_never_add_up_to_more_than_the_global_one(
            rate in prop_oneof![0u64..1_000, any::<u64>()], burst in prop_oneof![0u64..1_000, any::<u64>()],
            mut cuts in proptest::collection::vec(0u64..=Units::WHOLE.0, 0..64), kept in any::<u64>(),
        ) {
            // Up to 64 shares adding up to exactly the whole, then some left out (in flight).
            cuts.extend([0, Units::WHOLE.0]);
            cuts.sort_unstable();
            let shares = cuts.windows(2).map(|w| Units(w[1] - w[0])).enumerate();
            let shares = shares.filter(|(i, _)| (kept >> i) & 1 == 1 || kept % 2 == 0);
            let global = GlobalBucket { rate, burst };
            let parts: Vec<RegionBucket> = shares.map(|(_, s)| RegionBucket::for_share(global, s)).collect();
            prop_assert!(parts.iter().map(|p| u128::from(p.rate)).sum::<u128>() <= u128::from(rate));
            prop_assert!(parts.iter().map(|p| u128::from(p.capacity)).sum::<u128>() <= u128::from(burst));
        }

        #[test]
        fn admitted_never_exceeds_burst_plus_rate_times_time(
            weights in proptest::collection::vec(1u64..100, 2..=5), rate in 0u64..10_000, burst in 0u64..100_000,
            steps in proptest::collection::vec(step(), 1..150),
        ) {
            let regions = weighted(&weights);
            let mut replicas: Vec<Replica> = regions.ids().map(|r| Replica::new(&regions, r).unwrap()).collect();
            let n = weights.len();
            let global = GlobalBucket { rate, burst };
            let held: Vec<Units> = replicas.iter().map(|r| r.share(&regions)).collect();
            let bucket: Vec<RegionBucket> = held.iter().map(|s| RegionBucket::for_share(global, *s)).collect();
            let tokens = bucket.iter().map(|b| b.capacity).collect();
            let mut buckets = Buckets { global, held, bucket, tokens, admitted: 0, ticks: 0 };
            for step in steps {
                match step {
                    Step::Give { from, to, permille } => {
                        let giver = &mut replicas[from % n];
                        let amount = Units(giver.share(&regions).0 * permille / 1000);
                        let _ = giver.give(&regions, RegionId((to % n) as u16), amount);
                    }
                    Step::Gossip { from, to } => {
                        let state = replicas[from % n].rights().clone();
                        replicas[to % n].merge(&state).unwrap();
                    }
                    Step::Tick => {
                        buckets.ticks += 1;
                        for (tokens, bucket) in buckets.tokens.iter_mut().zip(&buckets.bucket) {
                            *tokens = (*tokens + bucket.rate).min(bucket.capacity);
                        }
                    }
                    Step::Spend { region, tokens } => {
                        let spent = tokens.min(buckets.tokens[region % n]);
                        buckets.tokens[region % n] -= spent;
                        buckets.admitted += spent;
                    }
                }
                // The giver shrinks before anyone can merge its give (the next step at the earliest).
                buckets.resize_all(&regions, &replicas);
                buckets.check();
            }
        }
    }
}
