//! Heavy hitters in fixed memory: the Space-Saving sketch (Metwally, Agrawal, El Abbadi,
//! 2005), and a ring of one-minute sketches so that "the last few minutes" forgets.
//!
//! A sketch of capacity `k` tracks at most `k` keys. A new key, when the sketch is full,
//! takes the place of the key with the smallest count and inherits that count as its
//! possible error. So for every tracked key, `count - error <= true count <= count`, and
//! every key seen more than `total / k` times is tracked. Memory stays `k` entries whatever
//! the number of distinct clients: a botnet of a million addresses costs what ten do.

use std::collections::HashMap;

/// One tracked key: an upper bound of its count, and how much of it may be inherited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub key: Box<str>,
    pub count: u64,
    pub error: u64,
}

/// The Space-Saving sketch over string keys.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    index: HashMap<Box<str>, usize>,
    entries: Vec<Counted>,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            index: HashMap::with_capacity(capacity),
            entries: Vec::with_capacity(capacity),
        }
    }

    /// Counts one occurrence of `key`. Allocates only when `key` is not tracked yet.
    pub fn add(&mut self, key: &str) {
        if let Some(&i) = self.index.get(key) {
            if let Some(e) = self.entries.get_mut(i) {
                e.count += 1;
            }
            return;
        }
        if self.entries.len() < self.capacity {
            self.index.insert(key.into(), self.entries.len());
            self.entries.push(Counted {
                key: key.into(),
                count: 1,
                error: 0,
            });
            return;
        }
        // Full: the smallest entry gives its place. A linear scan: k is small (64), and
        // this runs only for a key not already among the top k.
        let Some((i, _)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.count) else {
            return;
        };
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        let old = std::mem::replace(&mut e.key, key.into());
        e.error = e.count;
        e.count += 1;
        self.index.remove(&old);
        self.index.insert(key.into(), i);
    }

    pub fn entries(&self) -> &[Counted] {
        &self.entries
    }
}

/// The last `windows` minutes, one sketch each, keyed by the Unix minute so that every
/// instance cuts time the same way (the merged, cross-instance view relies on it).
#[derive(Debug, Clone)]
pub struct Recent {
    capacity: usize,
    /// `(unix minute, sketch)`; slot `minute % len`.
    slots: Vec<(u64, SpaceSaving)>,
}

impl Recent {
    pub fn new(windows: usize, capacity: usize) -> Self {
        Self {
            capacity,
            slots: (0..windows.max(1))
                .map(|_| (u64::MAX, SpaceSaving::new(capacity)))
                .collect(),
        }
    }

    fn slot(&self, minute: u64) -> usize {
        (minute % self.slots.len() as u64) as usize
    }

    /// Counts `key` in `minute`'s sketch (a slot left from an older minute is cleared).
    pub fn add(&mut self, minute: u64, key: &str) {
        let i = self.slot(minute);
        let capacity = self.capacity;
        if let Some((m, sketch)) = self.slots.get_mut(i) {
            if *m != minute {
                *m = minute;
                *sketch = SpaceSaving::new(capacity);
            }
            sketch.add(key);
        }
    }

    /// The sketch of `minute`, if it is still kept.
    pub fn minute(&self, minute: u64) -> Option<&SpaceSaving> {
        self.slots
            .get(self.slot(minute))
            .filter(|(m, _)| *m == minute)
            .map(|(_, s)| s)
    }

    /// The `n` largest keys over the windows ending at `now` (counts and errors summed).
    pub fn top(&self, now: u64, n: usize) -> Vec<Counted> {
        let oldest = now.saturating_sub(self.slots.len() as u64 - 1);
        let mut sums: HashMap<&str, (u64, u64)> = HashMap::new();
        for (_, sketch) in self
            .slots
            .iter()
            .filter(|(m, _)| (oldest..=now).contains(m))
        {
            for e in sketch.entries() {
                let s = sums.entry(&e.key).or_default();
                s.0 += e.count;
                s.1 += e.error;
            }
        }
        let mut top: Vec<Counted> = sums
            .into_iter()
            .map(|(key, (count, error))| Counted {
                key: key.into(),
                count,
                error,
            })
            .collect();
        sort_top(&mut top, n);
        top
    }
}

/// Largest count first (ties by key, for a stable page), cut to `n`.
pub fn sort_top(v: &mut Vec<Counted>, n: usize) {
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    v.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_exactly_while_under_capacity() {
        let mut s = SpaceSaving::new(3);
        for k in ["a", "b", "a", "c", "a", "b"] {
            s.add(k);
        }
        let mut top = s.entries().to_vec();
        sort_top(&mut top, 3);
        let got: Vec<_> = top.iter().map(|e| (&*e.key, e.count, e.error)).collect();
        assert_eq!(got, [("a", 3, 0), ("b", 2, 0), ("c", 1, 0)]);
    }

    #[test]
    fn a_new_key_replaces_the_smallest_and_inherits_its_count_as_error() {
        let mut s = SpaceSaving::new(2);
        for k in ["a", "a", "a", "b", "c"] {
            s.add(k);
        }
        let c = s.entries().iter().find(|e| &*e.key == "c").unwrap();
        assert_eq!((c.count, c.error), (2, 1), "c took b's place");
        assert!(!s.entries().iter().any(|e| &*e.key == "b"));
        s.add("b");
        assert_eq!(s.entries().len(), 2, "fixed memory");
    }

    #[test]
    fn old_minutes_are_forgotten() {
        let mut r = Recent::new(5, 8);
        r.add(100, "old");
        r.add(103, "new");
        r.add(104, "new");
        assert_eq!(r.top(104, 10).len(), 2);
        let later = r.top(105, 10);
        assert_eq!(later.len(), 1, "minute 100 is out of 101..=105: {later:?}");
        assert_eq!((&*later[0].key, later[0].count), ("new", 2));
        r.add(105, "x"); // reuses minute 100's slot
        assert!(r.minute(100).is_none());
        assert_eq!(r.minute(105).unwrap().entries().len(), 1);
    }

    proptest! {
        /// The Space-Saving guarantees, against exact counts: every tracked key's count is
        /// an upper bound and count - error a lower bound; every key more frequent than
        /// total/k is tracked; memory never exceeds k.
        #[test]
        fn space_saving_bounds_hold(keys in proptest::collection::vec(0u8..40, 0..600), k in 1usize..12) {
            let mut s = SpaceSaving::new(k);
            let mut exact: HashMap<String, u64> = HashMap::new();
            for key in &keys {
                let key = key.to_string();
                s.add(&key);
                *exact.entry(key).or_default() += 1;
            }
            prop_assert!(s.entries().len() <= k);
            for e in s.entries() {
                let truth = exact.get(&*e.key).copied().unwrap_or(0);
                prop_assert!(e.count >= truth, "{e:?} truth {truth}");
                prop_assert!(e.count - e.error <= truth, "{e:?} truth {truth}");
            }
            let total = keys.len() as u64;
            for (key, n) in &exact {
                if *n > total / k as u64 {
                    prop_assert!(s.entries().iter().any(|e| &*e.key == key), "{key} ({n} of {total}) lost");
                }
            }
        }
    }
}
