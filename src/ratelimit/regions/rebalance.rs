//! The rebalancing policy: which gives a region makes, from its own view, so that rights
//! follow demand while connected and never move toward a region it cannot hear.

use super::{RegionId, RegionSet, Regions, RegionsError, Replica, Units};

/// One give the policy decided on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The receiving region.
    pub to: RegionId,
    /// How much of the giver's share moves.
    pub amount: Units,
}

/// What a region knows when it decides: shares and demands as its replica sees them, and
/// which peers it has not heard from recently (the sync service decides staleness).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Every region's share, in region order.
    pub shares: Vec<Units>,
    /// Every region's last published demand, in region order.
    pub demands: Vec<u64>,
    /// Peers whose state is too old to act on: never given to, their demand ignored.
    pub stale: RegionSet,
}

impl View {
    /// The view of `replica`'s own region.
    pub fn of(replica: &Replica, regions: &Regions, stale: RegionSet) -> View {
        let rights = replica.rights();
        View {
            shares: rights.shares(regions),
            demands: regions.ids().map(|r| rights.demand(r).observed).collect(),
            stale,
        }
    }

    fn share(&self, region: RegionId) -> Units {
        self.shares
            .get(region.index())
            .copied()
            .unwrap_or(Units::ZERO)
    }

    fn demand(&self, region: RegionId) -> u64 {
        self.demands.get(region.index()).copied().unwrap_or(0)
    }
}

/// Each region's target share as `me` sees it: the pool held by the regions `me` can reach
/// (itself and every non-stale peer), split by their demand, and never below the floor.
///
/// `None` for a stale region, and for every region when the reachable demand is zero (then
/// there is nothing to follow and nobody should move).
pub fn targets(regions: &Regions, me: RegionId, view: &View) -> Vec<Option<Units>> {
    let reachable = |r: &RegionId| *r == me || !view.stale.contains(*r);
    let demand: u128 = regions
        .ids()
        .filter(reachable)
        .map(|r| u128::from(view.demand(r)))
        .sum();
    let pool: u128 = regions
        .ids()
        .filter(reachable)
        .map(|r| u128::from(view.share(r).0))
        .sum();
    let target = |r: RegionId| {
        // Bound: pool ≤ 64 × whole and demand < 2^64, so the product fits in u128, and the
        // quotient is at most the pool, so it fits in u64.
        let fair = pool * u128::from(view.demand(r)) / demand.max(1);
        Units(u64::try_from(fair).unwrap_or(u64::MAX)).max(regions.floor())
    };
    regions
        .ids()
        .map(|r| (demand > 0 && reachable(&r)).then(|| target(r)))
        .collect()
}

/// The gives `me` should make now, from its own view.
///
/// Only from surplus (its share above its target), and only once that surplus exceeds
/// `margin` (the hysteresis: small swings of demand move nothing, a large one moves the whole
/// surplus). Only to reachable regions below their target, in proportion to their deficits,
/// and never more than they lack together. Since its target is at least the floor, `me`
/// never goes below the floor.
///
/// When all regions decide from the same merged state, the gives to a region add up to at
/// most its deficit (up to a unit of rounding per giver), so one round settles a demand
/// split and later rounds move nothing. With other views a region may overshoot; the excess
/// flows back once it is above the margin.
pub fn plan(regions: &Regions, me: RegionId, view: &View, margin: Units) -> Vec<Transfer> {
    let targets = targets(regions, me, view);
    let target_of = |r: RegionId| targets.get(r.index()).copied().flatten();
    let Some(mine) = target_of(me) else {
        return Vec::new();
    };
    let surplus = view.share(me).saturating_sub(mine.max(regions.floor()));
    if surplus <= margin {
        return Vec::new();
    }
    let deficits: Vec<(RegionId, u64)> = regions
        .ids()
        .filter(|&r| r != me)
        .filter_map(|r| {
            let gap = target_of(r)?.saturating_sub(view.share(r)).0;
            (gap > 0).then_some((r, gap))
        })
        .collect();
    let wanted: u128 = deficits.iter().map(|(_, gap)| u128::from(*gap)).sum();
    let amount = u64::try_from(wanted.min(u128::from(surplus.0))).unwrap_or(surplus.0);
    split(amount, &deficits)
}

/// Splits `amount` (at most the sum of the deficits) in proportion to the deficits, each part
/// at most its deficit, the parts adding up to exactly `amount`.
fn split(amount: u64, deficits: &[(RegionId, u64)]) -> Vec<Transfer> {
    let wanted: u128 = deficits.iter().map(|(_, gap)| u128::from(*gap)).sum();
    let mut parts: Vec<Transfer> = deficits
        .iter()
        .map(|&(to, gap)| {
            let part = u128::from(amount) * u128::from(gap) / wanted.max(1);
            let amount = Units(u64::try_from(part).unwrap_or(gap).min(gap));
            Transfer { to, amount }
        })
        .collect();
    let given: u64 = parts.iter().map(|p| p.amount.0).sum();
    // Rounding down lost fewer units than there are parts; one more each to the first parts
    // makes the sum exact. Room: a part is below its deficit unless amount = the sum of the
    // deficits, and then nothing was lost.
    let left = usize::try_from(amount.saturating_sub(given)).unwrap_or(usize::MAX);
    for (part, (_, gap)) in parts.iter_mut().zip(deficits).take(left) {
        part.amount.0 = part.amount.0.saturating_add(1).min(*gap);
    }
    parts.retain(|p| p.amount > Units::ZERO);
    parts
}

/// Plans and makes `replica`'s gives; returns them.
///
/// Afterwards, error or not, the caller resizes its bucket to [`Replica::share`] before it
/// publishes the rights. An error means a bug or misconfiguration (the plan never asks more
/// than the share in hand).
pub fn rebalance(
    replica: &mut Replica,
    regions: &Regions,
    stale: RegionSet,
    margin: Units,
) -> Result<Vec<Transfer>, RegionsError> {
    let view = View::of(replica, regions, stale);
    let transfers = plan(regions, replica.me(), &view, margin);
    for transfer in &transfers {
        replica.give(regions, transfer.to, transfer.amount)?;
    }
    Ok(transfers)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{weighted, FLOOR};
    use super::super::Rights;
    use super::*;
    use proptest::prelude::*;

    const MARGIN: Units = Units(5_000);
    const A: RegionId = RegionId(0);
    const B: RegionId = RegionId(1);
    const C: RegionId = RegionId(2);

    fn view(shares: &[u64], demands: &[u64], stale: RegionSet) -> View {
        let shares = shares.iter().map(|s| Units(*s)).collect();
        View {
            shares,
            demands: demands.to_vec(),
            stale,
        }
    }

    #[test]
    fn nothing_moves_without_demand() {
        let regions = Regions::equal(3, FLOOR).unwrap();
        let idle = view(&[400_000, 300_000, 300_000], &[0, 0, 0], RegionSet::EMPTY);
        assert!(plan(&regions, A, &idle, MARGIN).is_empty());
    }

    #[test]
    fn a_stale_region_is_never_given_to_and_its_demand_is_ignored() {
        let regions = Regions::equal(3, FLOOR).unwrap();
        let stale = RegionSet::EMPTY.with(B);
        let seen = view(&[600_000, 200_000, 200_000], &[0, 1_000, 10], stale);
        // Pool without B: 800k, all of the reachable demand is C's.
        let to_c = Transfer {
            to: C,
            amount: Units(590_000),
        };
        assert_eq!(plan(&regions, A, &seen, MARGIN), vec![to_c]);
    }

    #[test]
    fn a_surplus_within_the_margin_moves_nothing_and_a_larger_one_moves_all() {
        let regions = Regions::equal(2, FLOOR).unwrap();
        let close = view(&[500_000, 500_000], &[503, 497], RegionSet::EMPTY);
        assert!(plan(&regions, B, &close, MARGIN).is_empty());
        let far = view(&[500_000, 500_000], &[60, 40], RegionSet::EMPTY);
        let to_a = Transfer {
            to: A,
            amount: Units(100_000),
        };
        assert_eq!(plan(&regions, B, &far, MARGIN), vec![to_a]);
    }

    #[test]
    fn a_giver_keeps_its_floor_and_deficits_share_in_proportion() {
        let regions = Regions::equal(3, FLOOR).unwrap();
        let seen = view(&[800_000, 100_000, 100_000], &[0, 3, 1], RegionSet::EMPTY);
        let gives = plan(&regions, A, &seen, MARGIN);
        // Targets: A the floor, B 750k, C 250k; A's 790k surplus splits 650:150.
        let to_b = Transfer {
            to: B,
            amount: Units(641_875),
        };
        let to_c = Transfer {
            to: C,
            amount: Units(148_125),
        };
        assert_eq!(gives, vec![to_b, to_c]);
        assert_eq!(800_000 - 641_875 - 148_125, FLOOR.0);
    }

    #[test]
    fn split_hands_out_every_unit_and_no_more_than_each_deficit() {
        let parts = split(8, &[(A, 3), (B, 3), (C, 3)]);
        let amounts: Vec<u64> = parts.iter().map(|p| p.amount.0).collect();
        assert_eq!(amounts, vec![3, 3, 2]);
    }

    fn deficits() -> impl Strategy<Value = (u64, Vec<(RegionId, u64)>)> {
        let gaps = proptest::collection::vec(0u64..2_000_000, 1..=64);
        gaps.prop_flat_map(|gaps| {
            let wanted: u64 = gaps.iter().sum();
            let deficits = (0u16..).map(RegionId).zip(gaps).collect::<Vec<_>>();
            (0..=wanted, Just(deficits))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn split_is_exact_and_within_each_deficit((amount, deficits) in deficits()) {
            let parts = split(amount, &deficits);
            prop_assert_eq!(parts.iter().map(|p| p.amount.0).sum::<u64>(), amount);
            for part in parts {
                let gap = deficits.iter().find(|(r, _)| *r == part.to).map(|(_, gap)| *gap);
                prop_assert!(Some(part.amount.0) <= gap);
            }
        }
    }

    /// Every region's replica, exchanging whole states in rounds.
    struct World {
        regions: Regions,
        replicas: Vec<Replica>,
    }

    impl World {
        fn new(regions: Regions) -> World {
            let replicas = regions
                .ids()
                .map(|r| Replica::new(&regions, r).unwrap())
                .collect();
            World { regions, replicas }
        }

        fn linked(side: u64, a: usize, b: usize) -> bool {
            (side >> a) & 1 == (side >> b) & 1
        }

        /// Every region merges every state on its side of the cut (`side` 0: no cut).
        fn exchange(&mut self, side: u64) {
            let states: Vec<Rights> = self.replicas.iter().map(|r| r.rights().clone()).collect();
            for (i, replica) in self.replicas.iter_mut().enumerate() {
                for (j, state) in states.iter().enumerate() {
                    if World::linked(side, i, j) {
                        replica.merge(state).unwrap();
                    }
                }
            }
        }

        /// Region i merges region j's state when bit `i * 5 + j` of `delivered` is set.
        fn exchange_some(&mut self, delivered: u32) {
            let states: Vec<Rights> = self.replicas.iter().map(|r| r.rights().clone()).collect();
            for (i, replica) in self.replicas.iter_mut().enumerate() {
                for (j, state) in states.iter().enumerate() {
                    if (delivered >> (i * 5 + j)) & 1 == 1 {
                        replica.merge(state).unwrap();
                    }
                }
            }
        }

        fn publish(&mut self, demands: &[u64]) {
            for (replica, demand) in self.replicas.iter_mut().zip(demands) {
                replica.publish_demand(*demand).unwrap();
            }
        }

        /// Every region rebalances from its own view, peers across the cut stale.
        fn rebalance(&mut self, side: u64, margin: Units) -> Vec<(usize, Transfer)> {
            let mut made = Vec::new();
            for (i, replica) in self.replicas.iter_mut().enumerate() {
                let stale = (0..self.regions.count())
                    .filter(|&j| !World::linked(side, i, j))
                    .fold(RegionSet::EMPTY, |set, j| set.with(RegionId(j as u16)));
                let gives = rebalance(replica, &self.regions, stale, margin).unwrap();
                made.extend(gives.into_iter().map(|t| (i, t)));
            }
            made
        }

        /// Publish, exchange, rebalance, exchange; returns the transfers made.
        fn round(&mut self, demands: &[u64], side: u64, margin: Units) -> Vec<(usize, Transfer)> {
            self.publish(demands);
            self.exchange(side);
            let made = self.rebalance(side, margin);
            self.exchange(side);
            made
        }

        fn own_shares(&self) -> Vec<u64> {
            self.replicas
                .iter()
                .map(|r| r.share(&self.regions).0)
                .collect()
        }

        /// After a full exchange every region holds the same state, so computes the same shares.
        fn assert_converged(&self) {
            let first = self.replicas[0].rights();
            assert!(self.replicas.iter().all(|r| r.rights() == first));
            assert_eq!(
                self.own_shares(),
                first
                    .shares(&self.regions)
                    .iter()
                    .map(|s| s.0)
                    .collect::<Vec<_>>()
            );
            assert_eq!(self.own_shares().iter().sum::<u64>(), Units::WHOLE.0);
        }

        /// No region holds more than its target plus the margin (and a few units of rounding).
        fn assert_near_targets(&self, demands: &[u64]) {
            let seen = View::of(&self.replicas[0], &self.regions, RegionSet::EMPTY);
            let wanted = targets(&self.regions, A, &seen);
            for (share, target) in self.own_shares().iter().zip(wanted) {
                let target = target.map_or(u64::MAX, |t| t.0);
                assert!(*share <= target.saturating_add(MARGIN.0 + demands.len() as u64));
            }
        }
    }

    fn weights() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(1u64..100, 2..=5)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn one_hot_region_gets_nearly_everything(
            weights in weights(), hot in 0usize..5, demand in 1u64..1_000_000, margin in 0u64..=1,
        ) {
            let mut world = World::new(weighted(&weights));
            let n = weights.len();
            let hot = hot % n;
            let mut demands = vec![0; n];
            demands[hot] = demand;
            let margin = Units(MARGIN.0 * margin);
            // One round: every cold region gives its surplus above the floor to the hot one.
            world.round(&demands, 0, margin);
            world.assert_converged();
            let others = (n as u64 - 1) * (FLOOR.0 + margin.0);
            prop_assert!(world.own_shares()[hot] >= Units::WHOLE.0 - others);
            prop_assert!(world.own_shares()[hot] >= Units::WHOLE.0 / 10 * 9);
            if margin == Units::ZERO {
                prop_assert_eq!(world.own_shares()[hot], Units::WHOLE.0 - (n as u64 - 1) * FLOOR.0);
            }
            prop_assert!(world.round(&demands, 0, margin).is_empty());
        }

        #[test]
        fn two_regions_follow_a_demand_split(
            weights in proptest::collection::vec(1u64..100, 2), ninety in any::<bool>(), scale in 1u64..10_000,
        ) {
            let mut world = World::new(weighted(&weights));
            let a = if ninety { 900_000 } else { 500_000 };
            let demands = [a / 1000 * scale, (Units::WHOLE.0 - a) / 1000 * scale];
            world.round(&demands, 0, MARGIN);
            world.assert_converged();
            prop_assert!(world.own_shares()[0].abs_diff(a) <= MARGIN.0);
            prop_assert!(world.round(&demands, 0, MARGIN).is_empty());
        }

        #[test]
        fn any_demand_settles_near_its_targets_and_stays(
            weights in weights(), demands in proptest::collection::vec(0u64..1_000, 5),
        ) {
            let mut world = World::new(weighted(&weights));
            let demands = &demands[..weights.len()];
            world.round(demands, 0, MARGIN);
            world.assert_converged();
            world.assert_near_targets(demands);
            // Stable: with demand unchanged, nobody moves again (no oscillation).
            prop_assert!(world.round(demands, 0, MARGIN).is_empty());
        }

        #[test]
        fn after_lossy_rounds_one_full_round_settles(
            weights in weights(), demands in proptest::collection::vec(0u64..1_000, 5),
            lossy in proptest::collection::vec((any::<u32>(), any::<u32>()), 1..6),
        ) {
            let mut world = World::new(weighted(&weights));
            let demands = &demands[..weights.len()];
            // Each lossy round delivers a random subset of the region pairs (j's state to i).
            for (before, after) in lossy {
                world.publish(demands);
                world.exchange_some(before);
                world.rebalance(0, MARGIN);
                world.exchange_some(after);
            }
            world.round(demands, 0, MARGIN);
            world.assert_converged();
            world.assert_near_targets(demands);
            prop_assert!(world.round(demands, 0, MARGIN).is_empty());
        }

        #[test]
        fn a_partition_moves_nothing_across_the_cut(
            weights in weights(), side in any::<u64>(),
            before in proptest::collection::vec(0u64..1_000, 5), during in proptest::collection::vec(0u64..1_000, 5),
        ) {
            let n = weights.len();
            // A proper, non-empty subset of the n regions.
            let side = 1 + side % ((1 << n) - 2);
            let (demands, during) = (&before[..n], &during[..n]);
            let mut world = World::new(weighted(&weights));
            // Gives made while connected, then the cut before they are delivered.
            world.publish(demands);
            world.exchange(0);
            world.rebalance(0, MARGIN);
            let at_cut: Vec<Rights> = world.replicas.iter().map(|r| r.rights().clone()).collect();
            // What each side truly holds at the cut (gives in flight included): its bound while cut.
            let mut truth = at_cut[0].clone();
            at_cut.iter().for_each(|state| truth.merge(state).unwrap());
            let true_shares: Vec<u64> = truth.shares(&world.regions).iter().map(|s| s.0).collect();
            let on = |s: u64, shares: &[u64]| (0..n).filter(|&r| (s >> r) & 1 == 1).map(|r| shares[r]).sum::<u64>();
            let (left_at_cut, right_at_cut) = (on(side, &true_shares), on(!side, &true_shares));
            // Demand shifts while cut, so each side wants what the other holds.
            for _ in 0..3 {
                let made = world.round(during, side, MARGIN);
                prop_assert!(made.iter().all(|(from, t)| World::linked(side, *from, t.to.index())));
                for (r, before) in world.replicas.iter().zip(&at_cut) {
                    for to in (0..n).filter(|&to| !World::linked(side, r.me().index(), to)) {
                        let to = RegionId(to as u16);
                        prop_assert_eq!(r.rights().given(r.me(), to), before.given(r.me(), to));
                    }
                }
                let shares = world.own_shares();
                prop_assert!(on(side, &shares) <= left_at_cut && on(!side, &shares) <= right_at_cut);
            }
            for _ in 0..2 {
                world.round(demands, 0, MARGIN);
            }
            world.assert_converged();
            world.assert_near_targets(demands);
        }
    }
}
