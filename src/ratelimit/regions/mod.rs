//! Rights across regions: a key's global limit split into per-region shares (bounded
//! counters, a CRDT) that never add up to more than the whole, even while regions cannot talk.
//!
//! # Model
//!
//! N regions (at most 64, the same list everywhere) each start from an initial share of the
//! whole, counted in [`Units`]: millionths of the global limit, integers so sums are exact.
//! Rights move by gives: `given[a][b]` counts everything region `a` has ever given to `b`,
//! and only `a` increments row `a`. Each region also publishes its demand (a [`Demand`]
//! register only it writes). Every region keeps a [`Replica`]; replicas exchange their
//! [`Rights`] and merge them by element-wise maximum, which is commutative, associative and
//! idempotent, so loss, duplication, reordering and old snapshots do no harm.
//!
//! # Why the shares never add up to more than the whole, in each region's own view
//!
//! Let `G` be the true counters (row `a` as region `a` holds it). Region `r`'s replica has
//! row `r` exactly (only `r` writes it; a copy elsewhere is an older value of it) and every
//! other entry at most `G` (counters only grow, a copy is an older value). So the share `r`
//! enforces is
//!
//! ```text
//! effective_r = initial_r + Σ_a view_r[a][r] − Σ_b G[r][b]
//!            ≤ initial_r + Σ_a G[a][r]      − Σ_b G[r][b] = true_r
//! ```
//!
//! and `Σ_r true_r = Σ_r initial_r = whole`, because each give is added once and subtracted
//! once. A give larger than `effective_r` is refused and a merge only raises `effective_r`,
//! so `0 ≤ effective_r`. Hence `Σ_r effective_r ≤ whole` at every instant, connected or not.
//!
//! # What the caller (the sync service) must do in order
//!
//! - Giver: [`Replica::give`], then shrink its bucket to the new share ([`resize`]: capacity
//!   first, tokens above it dropped), and only then publish its rights.
//! - Receiver: after [`Replica::merge`] raised its share, grow its bucket; the added capacity
//!   starts empty.
//! - Size a region's bucket only from its own [`Replica::share`].
//!
//! Then the regions' refill rates add up to at most the global rate and their tokens to at
//! most the global burst at every instant: everything admitted anywhere within a time `t` is
//! at most `burst + rate × t`, with or without a partition.
//!
//! # Replication cost per key
//!
//! As fixed-width integers: N·(N−1) give counters of 8 bytes (the diagonal is always zero)
//! and N demand registers of 16 bytes: 48 bytes for 2 regions, 96 for 3, 160 for 4.
//! [`Rights`] derives serde and keeps the N×N matrix (diagonal included) for simple indexing:
//! 64 and 120 bytes of integers for 2 and 3 regions as it stands.
//!
//! # Limits
//!
//! - The proof needs each region's own row never to go back. A region that loses a key's
//!   state must [`Replica::restore`] it (from a store written before each publish, or from
//!   peers when no give of its own can be newer than all their copies) before it gives again.
//! - Forgetting an idle key is not covered: a region that drops a key's rights and later
//!   starts it again at its initial share can break the bound while another region still
//!   holds rights it was given. Keep a key's rights while any give is recorded in them.
//!
//! Who gives what and when is the policy in [`plan`]; bucket scaling is [`resize`].

use std::fmt;

use serde::{Deserialize, Serialize};

mod rebalance;
mod rights;
mod scale;

pub use rights::{Demand, Replica, Rights};

pub use rebalance::{plan, rebalance, targets, Transfer, View};
pub use scale::{resize, GlobalBucket, RegionBucket, Resize};

/// The most regions a configuration may name (a [`RegionSet`] is one 64-bit mask).
pub const MAX_REGIONS: usize = 64;

/// An amount of a key's global limit, in millionths of it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Units(pub u64);

impl Units {
    /// Nothing.
    pub const ZERO: Units = Units(0);
    /// The whole global limit.
    pub const WHOLE: Units = Units(1_000_000);

    /// `self − other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Units) -> Units {
        Units(self.0.saturating_sub(other.0))
    }
}

/// A region's index among the N configured regions (`0..N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegionId(pub u16);

impl RegionId {
    /// The index into per-region arrays.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of regions, as a bit mask (N ≤ 64). Ids at 64 and above are never members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegionSet(u64);

impl RegionSet {
    /// No region.
    pub const EMPTY: RegionSet = RegionSet(0);

    /// This set plus `region` (unchanged for an id at 64 or above).
    pub fn with(self, region: RegionId) -> RegionSet {
        RegionSet(self.0 | 1u64.checked_shl(u32::from(region.0)).unwrap_or(0))
    }

    /// Whether `region` is in the set.
    pub fn contains(self, region: RegionId) -> bool {
        self.0 & 1u64.checked_shl(u32::from(region.0)).unwrap_or(0) != 0
    }
}

/// Why a configuration, a give or a merge was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionsError {
    /// The number of regions is 0 or above [`MAX_REGIONS`].
    RegionCount(usize),
    /// The initial shares must add up to exactly [`Units::WHOLE`].
    SharesNotWhole { sum: u128 },
    /// Every initial share must be at least the floor, so a region can always admit a first request.
    BelowFloor {
        region: RegionId,
        share: Units,
        floor: Units,
    },
    /// A region id outside `0..N`.
    UnknownRegion(RegionId),
    /// A region cannot give to itself.
    GiveToSelf,
    /// The giver has less than it tried to give, as its own replica sees it.
    Insufficient { have: Units, asked: Units },
    /// A counter would pass `u64::MAX`.
    CounterOverflow,
    /// Rights from a configuration with another number of regions (or malformed on the wire).
    ShapeMismatch {
        regions: usize,
        given: usize,
        demand: usize,
    },
}

impl fmt::Display for RegionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RegionCount(n) => write!(f, "{n} regions configured; need 1 to {MAX_REGIONS}"),
            Self::SharesNotWhole { sum } => {
                write!(
                    f,
                    "initial shares add up to {sum} units, not {}",
                    Units::WHOLE.0
                )
            }
            Self::BelowFloor {
                region,
                share,
                floor,
            } => write!(
                f,
                "region {} starts with {} units, below the floor of {}",
                region.0, share.0, floor.0
            ),
            Self::UnknownRegion(r) => write!(f, "unknown region {}", r.0),
            Self::GiveToSelf => write!(f, "a region cannot give to itself"),
            Self::Insufficient { have, asked } => {
                write!(f, "cannot give {} units with {} in hand", asked.0, have.0)
            }
            Self::CounterOverflow => write!(f, "counter overflow"),
            Self::ShapeMismatch {
                regions,
                given,
                demand,
            } => write!(
                f,
                "rights for {regions} regions need {} give counters and {regions} demands; \
                 got {given} and {demand}",
                regions.saturating_mul(*regions)
            ),
        }
    }
}

impl std::error::Error for RegionsError {}

/// The configured split of a key's limit: identical in every region, never replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regions {
    /// Each region's share before any give; adds up to exactly the whole.
    initial: Vec<Units>,
    /// The least a region keeps for itself when it gives, and the least it starts with.
    floor: Units,
}

impl Regions {
    /// A split with the given initial shares, each at least `floor`, adding up to the whole.
    pub fn new(initial: Vec<Units>, floor: Units) -> Result<Regions, RegionsError> {
        if initial.is_empty() || initial.len() > MAX_REGIONS {
            return Err(RegionsError::RegionCount(initial.len()));
        }
        let sum: u128 = initial.iter().map(|s| u128::from(s.0)).sum();
        if sum != u128::from(Units::WHOLE.0) {
            return Err(RegionsError::SharesNotWhole { sum });
        }
        let low = initial
            .iter()
            .zip(0u16..)
            .find(|(share, _)| **share < floor);
        if let Some((share, region)) = low {
            let (region, share) = (RegionId(region), *share);
            return Err(RegionsError::BelowFloor {
                region,
                share,
                floor,
            });
        }
        Ok(Regions { initial, floor })
    }

    /// `count` equal shares (the first regions take the remainder of the division).
    pub fn equal(count: usize, floor: Units) -> Result<Regions, RegionsError> {
        let divisor = u64::try_from(count.max(1)).unwrap_or(u64::MAX);
        let (each, left) = (Units::WHOLE.0 / divisor, Units::WHOLE.0 % divisor);
        let initial = (0..count)
            .map(|i| Units(each + u64::from(u64::try_from(i).unwrap_or(u64::MAX) < left)))
            .collect();
        Regions::new(initial, floor)
    }

    /// N, the number of regions.
    pub fn count(&self) -> usize {
        self.initial.len()
    }

    /// The least share a region keeps when it gives.
    pub fn floor(&self) -> Units {
        self.floor
    }

    /// `region`'s share before any give (zero for an unknown id).
    pub fn initial(&self, region: RegionId) -> Units {
        self.initial
            .get(region.index())
            .copied()
            .unwrap_or(Units::ZERO)
    }

    /// Every configured region, in order.
    pub fn ids(&self) -> impl Iterator<Item = RegionId> {
        (0u16..).take(self.count()).map(RegionId)
    }

    /// `Ok` when `region` is one of the N.
    pub fn check(&self, region: RegionId) -> Result<(), RegionsError> {
        if region.index() < self.count() {
            Ok(())
        } else {
            Err(RegionsError::UnknownRegion(region))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor the tests use: 1% of the whole.
    pub(super) const FLOOR: Units = Units(10_000);
    const A: RegionId = RegionId(0);
    const B: RegionId = RegionId(1);

    #[test]
    fn configuration_is_checked() {
        let bad_sum = Regions::new(vec![Units(500_000), Units(400_000)], FLOOR);
        assert!(matches!(bad_sum, Err(RegionsError::SharesNotWhole { .. })));
        let low = Regions::new(vec![Units(995_000), Units(5_000)], FLOOR);
        assert!(matches!(
            low,
            Err(RegionsError::BelowFloor { region: B, .. })
        ));
        assert_eq!(Regions::equal(0, FLOOR), Err(RegionsError::RegionCount(0)));
        assert_eq!(
            Regions::equal(65, Units::ZERO),
            Err(RegionsError::RegionCount(65))
        );
        let three = Regions::equal(3, FLOOR).unwrap();
        assert_eq!(three.initial(A), Units(333_334));
        assert_eq!(
            three.check(RegionId(3)),
            Err(RegionsError::UnknownRegion(RegionId(3)))
        );
    }

    #[test]
    fn a_region_set_holds_ids_below_64_only() {
        let set = RegionSet::EMPTY
            .with(A)
            .with(RegionId(63))
            .with(RegionId(64));
        assert!(set.contains(A) && set.contains(RegionId(63)));
        assert!(!set.contains(B) && !set.contains(RegionId(64)));
    }

    /// Regions with initial shares in proportion to `weights`, each at least [`FLOOR`].
    pub(super) fn weighted(weights: &[u64]) -> Regions {
        let n = weights.len() as u64;
        let spare = Units::WHOLE.0 - n * FLOOR.0;
        let total: u64 = weights.iter().sum();
        let mut initial: Vec<Units> = weights
            .iter()
            .map(|w| Units(FLOOR.0 + spare * w / total))
            .collect();
        initial[0].0 += Units::WHOLE.0 - initial.iter().map(|s| s.0).sum::<u64>();
        Regions::new(initial, FLOOR).unwrap()
    }
}
