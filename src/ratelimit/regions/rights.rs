//! The replicated state of one key (gives and demand of every region, merged by maximum)
//! and the one replica per region that alone writes that region's part.

use serde::{Deserialize, Serialize};

use super::{RegionId, Regions, RegionsError, Units, MAX_REGIONS};

/// A region's published demand: a register only that region writes, ordered by `version`.
///
/// Why not a grow-only counter of requests: the policy needs *current* demand, which a total
/// only yields as a difference between two readings, and two regions that merged at other
/// times would then see other rates. A versioned value is still a join semilattice (the max
/// of `(version, observed)` pairs, a total order), can fall when traffic does, and its version
/// doubles as a heartbeat for deciding when a peer is stale.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Demand {
    /// Incremented by the owner on every publication. Compared first (derived `Ord`).
    pub version: u64,
    /// Requests the owner saw in its last measuring window; any unit shared by all regions.
    pub observed: u64,
}

/// A key's replicated state: every region's gives and demand. Merge by [`Rights::merge`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// `given[from * N + to]`: units `from` ever gave `to`. Grow-only; only `from` writes its row.
    given: Vec<u64>,
    /// `demand[r]`: the latest demand `r` published that this replica has seen.
    demand: Vec<Demand>,
}

impl Rights {
    /// No gives and no demand yet: every region holds its initial share.
    pub fn new(regions: &Regions) -> Rights {
        let n = regions.count();
        Rights {
            given: vec![0; n.saturating_mul(n)],
            demand: vec![Demand::default(); n],
        }
    }

    /// N, the number of regions these rights are for.
    pub fn region_count(&self) -> usize {
        self.demand.len()
    }

    /// Units `from` gave `to`, as far as this replica knows.
    pub fn given(&self, from: RegionId, to: RegionId) -> Units {
        Units(self.cell(from.index(), to.index()))
    }

    /// The latest demand of `region` this replica has seen.
    pub fn demand(&self, region: RegionId) -> Demand {
        self.demand.get(region.index()).copied().unwrap_or_default()
    }

    /// `region`'s share as this replica sees it: initial + received − given.
    ///
    /// In `region`'s own replica this is what it enforces; elsewhere it is a lower or upper
    /// estimate (see the module docs).
    pub fn share(&self, regions: &Regions, region: RegionId) -> Units {
        let r = region.index();
        let mut plus = u128::from(regions.initial(region).0);
        let mut minus = 0u128;
        for other in (0..self.region_count()).filter(|&o| o != r) {
            plus += u128::from(self.cell(other, r));
            minus += u128::from(self.cell(r, other));
        }
        // Bound: in a replica built only by `give` and `merge`, plus ≥ minus and the result is
        // at most the whole. The clamps only matter for rights a faulty peer made up, and
        // keep even those from granting one region more than the whole.
        let share = plus.saturating_sub(minus).min(u128::from(Units::WHOLE.0));
        Units(u64::try_from(share).unwrap_or(Units::WHOLE.0))
    }

    /// Every region's share as this replica sees it, in region order.
    pub fn shares(&self, regions: &Regions) -> Vec<Units> {
        regions.ids().map(|r| self.share(regions, r)).collect()
    }

    /// Joins `other` into `self`: element-wise maximum of every counter and register.
    pub fn merge(&mut self, other: &Rights) -> Result<(), RegionsError> {
        self.check_shape()?;
        other.check_shape()?;
        if other.region_count() != self.region_count() {
            return Err(other.shape_error());
        }
        for (mine, theirs) in self.given.iter_mut().zip(&other.given) {
            *mine = (*mine).max(*theirs);
        }
        for (mine, theirs) in self.demand.iter_mut().zip(&other.demand) {
            *mine = (*mine).max(*theirs);
        }
        Ok(())
    }

    /// Joins one counter read from the wire: `given(from, to)` becomes at least `units`
    /// (a merge of a single cell, so the laws of [`Rights::merge`] hold). Ignored for
    /// regions outside `0..N`.
    pub fn raise_given(&mut self, from: RegionId, to: RegionId, units: Units) {
        let n = self.region_count();
        if from.index() < n && to.index() < n && from != to {
            if let Some(cell) = self.given.get_mut(from.index() * n + to.index()) {
                *cell = (*cell).max(units.0);
            }
        }
    }

    /// Joins one demand register read from the wire (ignored outside `0..N`).
    pub fn raise_demand(&mut self, region: RegionId, demand: Demand) {
        if let Some(slot) = self.demand.get_mut(region.index()) {
            *slot = (*slot).max(demand);
        }
    }

    /// Every non-zero give counter: `(from, to, units)`.
    pub fn gives(&self) -> impl Iterator<Item = (RegionId, RegionId, Units)> + '_ {
        let n = self.region_count().max(1);
        (0u16..)
            .zip(&self.given)
            .filter(|(_, v)| **v > 0)
            .map(move |(i, v)| {
                let (from, to) = (usize::from(i) / n, usize::from(i) % n);
                let id = |x: usize| RegionId(u16::try_from(x).unwrap_or(u16::MAX));
                (id(from), id(to), Units(*v))
            })
    }

    /// What may be believed of the rights `peer` published in its own Redis: its own row
    /// (only it writes it), its copy of `me`'s row (any copy of it is an older value, so it
    /// can only restore what `me` lost) and its demand; not its copies of third regions'
    /// rows, which a faulty or hostile peer could make up. Its own row is dropped too when
    /// it gives away more than it could ever have held by its own account.
    pub fn from_peer(&self, regions: &Regions, peer: RegionId, me: RegionId) -> Rights {
        let mut out = Rights::new(regions);
        let n = out.region_count();
        if peer.index() >= n || me.index() >= n || self.region_count() != n {
            return out;
        }
        let (p, others) = (peer.index(), (0..n).filter(|&o| o != peer.index()));
        let gave: u128 = others.clone().map(|o| u128::from(self.cell(p, o))).sum();
        let held: u128 = u128::from(regions.initial(peer).0)
            + others.map(|o| u128::from(self.cell(o, p))).sum::<u128>();
        for from in [peer, me] {
            if from == peer && gave > held {
                continue;
            }
            for to in regions.ids() {
                out.raise_given(from, to, self.given(from, to));
            }
        }
        out.raise_demand(peer, self.demand(peer));
        out
    }

    /// `Ok` when the arrays fit one N in `1..=64` (rights from the wire may not).
    fn check_shape(&self) -> Result<(), RegionsError> {
        let n = self.region_count();
        if (1..=MAX_REGIONS).contains(&n) && self.given.len() == n * n {
            Ok(())
        } else {
            Err(self.shape_error())
        }
    }

    fn shape_error(&self) -> RegionsError {
        RegionsError::ShapeMismatch {
            regions: self.region_count(),
            given: self.given.len(),
            demand: self.demand.len(),
        }
    }

    fn cell(&self, from: usize, to: usize) -> u64 {
        let n = self.region_count();
        if from >= n || to >= n {
            return 0;
        }
        self.given.get(from * n + to).copied().unwrap_or(0)
    }
}

/// One region's own copy of a key's rights: the only place where its row of gives and its
/// demand are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    me: RegionId,
    rights: Rights,
}

impl Replica {
    /// Region `me`'s replica of a key it has never seen: every region at its initial share.
    ///
    /// Only for a key with no history anywhere; a region that lost a key's state must get
    /// its own row back (from a peer or a store) before it gives again.
    pub fn new(regions: &Regions, me: RegionId) -> Result<Replica, RegionsError> {
        regions.check(me)?;
        let rights = Rights::new(regions);
        Ok(Replica { me, rights })
    }

    /// Region `me`'s replica rebuilt from rights it persisted (or got back from peers) after
    /// losing its state. Safe only when no give of `me` is newer than `rights` (see the
    /// module docs, Limits); merges from peers may follow.
    pub fn restore(
        regions: &Regions,
        me: RegionId,
        rights: Rights,
    ) -> Result<Replica, RegionsError> {
        regions.check(me)?;
        rights.check_shape()?;
        if rights.region_count() != regions.count() {
            return Err(rights.shape_error());
        }
        Ok(Replica { me, rights })
    }

    /// The region this replica belongs to.
    pub fn me(&self) -> RegionId {
        self.me
    }

    /// The state to publish to the other regions.
    pub fn rights(&self) -> &Rights {
        &self.rights
    }

    /// The share this region enforces: always at most its true share.
    pub fn share(&self, regions: &Regions) -> Units {
        self.rights.share(regions, self.me)
    }

    /// Gives `amount` of this region's share to `to`; returns the share left.
    ///
    /// Refused when `amount` exceeds the share in hand. The caller shrinks its bucket to the
    /// returned share *before* it publishes these rights.
    pub fn give(
        &mut self,
        regions: &Regions,
        to: RegionId,
        amount: Units,
    ) -> Result<Units, RegionsError> {
        regions.check(to)?;
        if to == self.me {
            return Err(RegionsError::GiveToSelf);
        }
        let have = self.share(regions);
        if amount > have {
            return Err(RegionsError::Insufficient {
                have,
                asked: amount,
            });
        }
        let index = self.me.index() * self.rights.region_count() + to.index();
        let misshapen = self.rights.shape_error();
        let cell = self.rights.given.get_mut(index).ok_or(misshapen)?;
        *cell = cell
            .checked_add(amount.0)
            .ok_or(RegionsError::CounterOverflow)?;
        Ok(self.share(regions))
    }

    /// Publishes the demand this region observed in its last window; returns the register.
    pub fn publish_demand(&mut self, observed: u64) -> Result<Demand, RegionsError> {
        let slot = self.rights.demand.get_mut(self.me.index());
        let slot = slot.ok_or(RegionsError::UnknownRegion(self.me))?;
        let version = slot
            .version
            .checked_add(1)
            .ok_or(RegionsError::CounterOverflow)?;
        *slot = Demand { version, observed };
        Ok(*slot)
    }

    /// Merges rights received from any region (any age, any number of times).
    ///
    /// Raises this region's share or leaves it (no copy of its own row is ahead of its own);
    /// the caller then grows its bucket, the added capacity empty.
    pub fn merge(&mut self, other: &Rights) -> Result<(), RegionsError> {
        self.rights.merge(other)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{weighted, FLOOR};
    use super::super::{rebalance, RegionSet};
    use super::*;
    use proptest::prelude::*;

    const MARGIN: Units = Units(5_000);
    const A: RegionId = RegionId(0);
    const B: RegionId = RegionId(1);

    fn replicas(regions: &Regions) -> Vec<Replica> {
        let all = regions.ids().map(|r| Replica::new(regions, r));
        all.collect::<Result<_, _>>().unwrap()
    }

    fn local_sum(regions: &Regions, replicas: &[Replica]) -> u64 {
        replicas.iter().map(|r| r.share(regions).0).sum()
    }

    #[test]
    fn a_peer_is_believed_for_its_own_row_and_ours_only() {
        let regions = Regions::equal(3, FLOOR).unwrap();
        let c = RegionId(2);
        let mut b = Replica::new(&regions, B).unwrap();
        b.give(&regions, A, Units(100_000)).unwrap();
        b.publish_demand(7).unwrap();
        let mut forged = b.rights().clone();
        // B's copy claims C gave A everything, and that A gave B 5 units.
        forged.raise_given(c, A, Units(333_333));
        forged.raise_given(A, B, Units(5));
        let seen = forged.from_peer(&regions, B, A);
        assert_eq!(seen.given(B, A), Units(100_000));
        assert_eq!(
            seen.given(c, A),
            Units::ZERO,
            "a third region's row is not taken"
        );
        assert_eq!(
            seen.given(A, B),
            Units(5),
            "our own row restores from any copy"
        );
        assert_eq!(seen.demand(B).observed, 7);
        assert_eq!(seen.demand(c), Demand::default());
        // A row giving more than B could ever have held is dropped whole.
        forged.raise_given(B, c, Units(300_000));
        assert_eq!(forged.from_peer(&regions, B, A).given(B, A), Units::ZERO);
    }

    #[test]
    fn a_give_above_the_share_in_hand_is_refused_and_changes_nothing() {
        let regions = Regions::equal(2, FLOOR).unwrap();
        let mut a = Replica::new(&regions, A).unwrap();
        let before = a.clone();
        let asked = Units(500_001);
        let have = Units(500_000);
        assert_eq!(
            a.give(&regions, B, asked),
            Err(RegionsError::Insufficient { have, asked })
        );
        assert_eq!(a.give(&regions, A, Units(1)), Err(RegionsError::GiveToSelf));
        assert_eq!(a, before);
        assert_eq!(a.give(&regions, B, have), Ok(Units::ZERO));
    }

    #[test]
    fn split_brain_cannot_double_the_allowance() {
        let regions = Regions::equal(2, FLOOR).unwrap();
        let mut all = replicas(&regions);
        // Link cut: each gives, the other never hears of it.
        all[0].give(&regions, B, Units(300_000)).unwrap();
        all[1].give(&regions, A, Units(500_000)).unwrap();
        assert_eq!(local_sum(&regions, &all), 200_000);
        // Healed: both end with what the other gave them, and the sum is whole again.
        let (a, b) = (all[0].rights().clone(), all[1].rights().clone());
        all[0].merge(&b).unwrap();
        all[1].merge(&a).unwrap();
        assert_eq!(all[0].share(&regions), Units(700_000));
        assert_eq!(all[1].share(&regions), Units(300_000));
        assert_eq!(all[0].rights(), all[1].rights());
    }

    #[test]
    fn an_old_or_repeated_snapshot_changes_nothing() {
        let regions = Regions::equal(2, FLOOR).unwrap();
        let mut all = replicas(&regions);
        let old = all[0].rights().clone();
        all[0].give(&regions, B, Units(100_000)).unwrap();
        all[0].publish_demand(7).unwrap();
        let new = all[0].rights().clone();
        for snapshot in [&new, &old, &new, &old] {
            all[1].merge(snapshot).unwrap();
        }
        assert_eq!(all[1].share(&regions), Units(600_000));
        assert_eq!(
            all[1].rights().demand(A),
            Demand {
                version: 1,
                observed: 7
            }
        );
    }

    #[test]
    fn a_restored_replica_continues_where_it_stopped() {
        let regions = Regions::equal(2, FLOOR).unwrap();
        let mut a = Replica::new(&regions, A).unwrap();
        a.give(&regions, B, Units(200_000)).unwrap();
        let stored = a.rights().clone();
        let restored = Replica::restore(&regions, A, stored.clone()).unwrap();
        assert_eq!(restored, a);
        let three = Regions::equal(3, FLOOR).unwrap();
        assert!(Replica::restore(&three, A, stored).is_err());
    }

    #[test]
    fn rights_of_another_shape_are_refused() {
        let two = Regions::equal(2, FLOOR).unwrap();
        let three = Regions::equal(3, FLOOR).unwrap();
        let mut a = Replica::new(&two, A).unwrap();
        assert!(a.merge(&Rights::new(&three)).is_err());
        let forged = Rights {
            given: vec![0; 3],
            demand: vec![Demand::default(); 2],
        };
        assert!(a.merge(&forged).is_err());
        assert_eq!(a.rights(), &Rights::new(&two));
    }

    fn rights(n: usize) -> impl Strategy<Value = Rights> {
        // Small values, so that equal and crossing entries are common.
        let given = proptest::collection::vec(0u64..4, n * n);
        let demand = proptest::collection::vec((0u64..3, 0u64..3), n);
        (given, demand).prop_map(|(given, demand)| Rights {
            given,
            demand: demand
                .into_iter()
                .map(|(version, observed)| Demand { version, observed })
                .collect(),
        })
    }

    fn three_rights() -> impl Strategy<Value = (Rights, Rights, Rights)> {
        (1usize..=5).prop_flat_map(|n| (rights(n), rights(n), rights(n)))
    }

    fn joined(a: &Rights, b: &Rights) -> Rights {
        let mut out = a.clone();
        out.merge(b).unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn merge_is_a_join((a, b, c) in three_rights()) {
            prop_assert_eq!(joined(&a, &b), joined(&b, &a));
            prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
            prop_assert_eq!(joined(&a, &a), a.clone());
            // Inflation: a merge never lowers anything.
            let ab = joined(&a, &b);
            prop_assert!(ab.given.iter().zip(&a.given).all(|(x, y)| x >= y));
            prop_assert!(ab.demand.iter().zip(&a.demand).all(|(x, y)| x >= y));
        }
    }

    /// One step of a schedule. Indices are reduced modulo N.
    #[derive(Clone, Debug)]
    enum Op {
        /// `from` gives `permille`‰ of its share in hand to `to`; above 1000‰ must be refused.
        Give {
            from: usize,
            to: usize,
            permille: u64,
        },
        /// `from` sends a snapshot; it may be delivered later, many times, or never.
        Send {
            from: usize,
        },
        /// Delivers any message ever sent (old, again, out of order) unless the cut is between.
        Deliver {
            message: usize,
            to: usize,
        },
        /// `to` merges `from`'s current state unless the cut is between.
        Gossip {
            from: usize,
            to: usize,
        },
        Demand {
            region: usize,
            observed: u64,
        },
        /// `region` runs the policy, with the far side of the cut and some peers stale.
        Rebalance {
            region: usize,
            stale: u64,
        },
        /// Regions whose bit is set are cut off from the others (0: healed).
        Cut {
            side: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let r = || 0usize..5;
        prop_oneof![
            3 => (r(), r(), 0u64..1200).prop_map(|(from, to, permille)| Op::Give { from, to, permille }),
            2 => r().prop_map(|from| Op::Send { from }),
            3 => (any::<usize>(), r()).prop_map(|(message, to)| Op::Deliver { message, to }),
            2 => (r(), r()).prop_map(|(from, to)| Op::Gossip { from, to }),
            2 => (r(), 0u64..1000).prop_map(|(region, observed)| Op::Demand { region, observed }),
            3 => (r(), prop_oneof![Just(0u64), 0u64..32]).prop_map(|(region, stale)| Op::Rebalance { region, stale }),
            1 => (0u64..32).prop_map(|side| Op::Cut { side }),
        ]
    }

    struct Network {
        regions: Regions,
        replicas: Vec<Replica>,
        sent: Vec<(usize, Rights)>,
        side: u64,
    }

    impl Network {
        fn linked(&self, a: usize, b: usize) -> bool {
            (self.side >> a) & 1 == (self.side >> b) & 1
        }

        fn apply(&mut self, op: Op) {
            let n = self.replicas.len();
            let regions = &self.regions;
            match op {
                Op::Give { from, to, permille } => {
                    let (from, to) = (from % n, to % n);
                    let giver = &mut self.replicas[from];
                    let (have, before) = (giver.share(regions), giver.clone());
                    let amount = Units(have.0 * permille / 1000);
                    let result = giver.give(regions, RegionId(to as u16), amount);
                    if from == to || amount > have {
                        assert!(result.is_err());
                        assert_eq!(*giver, before);
                    } else {
                        assert_eq!(result, Ok(Units(have.0 - amount.0)));
                    }
                }
                Op::Send { from } => {
                    let from = from % n;
                    self.sent.push((from, self.replicas[from].rights().clone()));
                }
                Op::Deliver { message, to } => {
                    if let Some((from, rights)) = self.sent.get(message % self.sent.len().max(1)) {
                        if self.linked(*from, to % n) {
                            self.replicas[to % n].merge(rights).unwrap();
                        }
                    }
                }
                Op::Gossip { from, to } => {
                    let (from, to) = (from % n, to % n);
                    if self.linked(from, to) {
                        let rights = self.replicas[from].rights().clone();
                        self.replicas[to].merge(&rights).unwrap();
                    }
                }
                Op::Demand { region, observed } => {
                    self.replicas[region % n].publish_demand(observed).unwrap();
                }
                Op::Rebalance { region, stale } => self.rebalance(region % n, stale),
                Op::Cut { side } => self.side = side,
            }
        }

        fn rebalance(&mut self, region: usize, stale: u64) {
            let n = self.replicas.len();
            let stale = (0..n)
                .filter(|&r| !self.linked(region, r) || (stale >> r) & 1 == 1)
                .fold(RegionSet::EMPTY, |set, r| set.with(RegionId(r as u16)));
            let replica = &mut self.replicas[region];
            let transfers = rebalance(replica, &self.regions, stale, MARGIN).unwrap();
            assert!(transfers
                .iter()
                .all(|t| !stale.contains(t.to) && t.to.index() != region));
            assert!(transfers.is_empty() || replica.share(&self.regions) >= FLOOR);
        }

        /// The invariants, checked after every step.
        fn check(&self) {
            let regions = &self.regions;
            let truth = self
                .replicas
                .iter()
                .fold(Rights::new(regions), |acc, r| joined(&acc, r.rights()));
            let true_shares = truth.shares(regions);
            assert_eq!(true_shares.iter().map(|s| s.0).sum::<u64>(), Units::WHOLE.0);
            assert!(local_sum(regions, &self.replicas) <= Units::WHOLE.0);
            for (replica, true_share) in self.replicas.iter().zip(&true_shares) {
                assert!(replica.share(regions) <= *true_share);
                // Its own row is authoritative: no other copy is ahead of it.
                for to in regions.ids() {
                    assert_eq!(
                        replica.rights().given(replica.me(), to),
                        truth.given(replica.me(), to)
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn local_shares_never_add_up_to_more_than_the_whole(
            weights in proptest::collection::vec(1u64..100, 2..=5),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let regions = weighted(&weights);
            let replicas = replicas(&regions);
            let mut network = Network { regions, replicas, sent: Vec::new(), side: 0 };
            for op in ops {
                network.apply(op);
                network.check();
            }
        }
    }
}
