//! [`IntervalIndex`]: address ranges ordered by start, for overlap queries.
//!
//! Three places need "every entry overlapping `[a, b)`": the event queue
//! matching a raw unmap to registered cookies, the userfaultfd source's
//! registered VMA spans, and the cache's index of registered regions. They
//! had each grown the same structure, and this is it, once.
//!
//! ## Shape
//!
//! A `BTreeMap` keyed by `(start, id)` holding `(range, value)`, plus
//! `max_len`, an upper bound on the length of every entry. Since no entry
//! is longer than `max_len`, an entry that overlaps (or touches, or
//! covers) `[a, b)` starts in `[a - max_len, b]`: every query is one
//! ordered range scan of the map, filtered. No augmented tree, no
//! rebalancing of subtree maxima; the cost is in the bound:
//!
//! - `insert`, `remove`, `get`: O(log n);
//! - `overlapping`, `touching`, `covering`: O(log n + m), where m counts
//!   the entries *starting* in the scanned window `[a - max_len, b]`, not
//!   only those that match. When entries are short and similar in length
//!   (registrations of message buffers) m is close to the number of
//!   matches.
//!
//! The wart: `max_len` only grows, until the index is empty again (then
//! it is reset to 0). One long entry inserted once — a GiB heap VMA, a
//! huge merged region — widens every later scan, even after it has been
//! removed. Keeping it exact would need a multiset of lengths or an
//! augmented tree; none of the three users has shown the need.
//!
//! ## Several entries at one start
//!
//! The `Id` parameter breaks ties between entries that start at the same
//! address. The event queue keys by [`Cookie`](crate::Cookie) (two cookies
//! may register the same range), the cache by slot number (with merging
//! off, overlapping regions coexist and may share a start). A user whose
//! entries are disjoint, like the VMA spans, takes the default `()`: then
//! the start alone is the key. Ids only need to be ordered and to have a
//! least and a greatest value ([`IntervalId`]), so that "every id at this
//! start" is a range of keys.
//!
//! ## Orderings
//!
//! `iter`, `overlapping` and `touching` yield in ascending `(start, id)`
//! order; `covering` in *descending* order, nearest start first, because
//! a cache lookup wants the tightest candidate and stops at the first one
//! it can use. Empty entries (`start == end`) may be stored: they overlap
//! nothing, but they touch their neighbours and are covered by (and cover)
//! empty queries at their address, as [`AddrRange`]'s predicates say.

use std::collections::BTreeMap;

use crate::queue::Cookie;
use crate::range::AddrRange;

/// A tie-breaker for [`IntervalIndex`] entries sharing a start: any
/// ordered `Copy` type with a least and a greatest value.
pub trait IntervalId: Ord + Copy {
    /// The least value (`0`, `()`).
    const MIN: Self;
    /// The greatest value (`u32::MAX`, `()`).
    const MAX: Self;
}

impl IntervalId for () {
    const MIN: Self = ();
    const MAX: Self = ();
}

macro_rules! unsigned_ids {
    ($($t:ty),*) => {$(
        impl IntervalId for $t {
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
        }
    )*};
}
unsigned_ids!(u8, u16, u32, u64, usize);

impl IntervalId for Cookie {
    const MIN: Self = Cookie(u64::MIN);
    const MAX: Self = Cookie(u64::MAX);
}

/// Half-open address ranges, each with an id and a value, ordered by
/// `(start, id)`; see the module docs for the shape and the costs.
///
/// `V` is what each entry carries (`()` when nothing); `Id` tells apart
/// entries at one start (`()` when starts are unique). The pair
/// `(range.start(), id)` identifies an entry: inserting at an existing
/// pair replaces it.
#[derive(Debug, Clone)]
pub struct IntervalIndex<V, Id: IntervalId = ()> {
    map: BTreeMap<(u64, Id), (AddrRange, V)>,
    /// No entry is longer than this (bytes); 0 when empty.
    max_len: u64,
}

impl<V, Id: IntervalId> Default for IntervalIndex<V, Id> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V, Id: IntervalId> IntervalIndex<V, Id> {
    /// An empty index.
    pub const fn new() -> Self {
        Self {
            map: BTreeMap::new(),
            max_len: 0,
        }
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// `true` when there is no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The scan bound: at least the length of every entry, in bytes (see
    /// the module docs for why it may be larger).
    pub fn max_len(&self) -> u64 {
        self.max_len
    }

    /// Insert `range` under `id` with `value`. Returns the entry it
    /// replaced, if one had the same start and id. O(log n).
    pub fn insert(&mut self, range: AddrRange, id: Id, value: V) -> Option<(AddrRange, V)> {
        self.max_len = self.max_len.max(range.len());
        self.map.insert((range.start(), id), (range, value))
    }

    /// Remove the entry starting at `start` under `id`, returning it.
    /// O(log n).
    pub fn remove(&mut self, start: u64, id: Id) -> Option<(AddrRange, V)> {
        let old = self.map.remove(&(start, id));
        if self.map.is_empty() {
            self.max_len = 0;
        }
        old
    }

    /// The entry starting at `start` under `id`. O(log n).
    pub fn get(&self, start: u64, id: Id) -> Option<(AddrRange, &V)> {
        self.map.get(&(start, id)).map(|(r, v)| (*r, v))
    }

    /// The entry starting at `start` under `id`, its value mutable.
    /// O(log n).
    pub fn get_mut(&mut self, start: u64, id: Id) -> Option<(AddrRange, &mut V)> {
        self.map.get_mut(&(start, id)).map(|(r, v)| (*r, v))
    }

    /// Remove every entry (and reset the scan bound).
    pub fn clear(&mut self) {
        self.map.clear();
        self.max_len = 0;
    }

    /// Every entry, in `(start, id)` order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (AddrRange, Id, &V)> + '_ {
        self.map.iter().map(|(&(_, id), (r, v))| (*r, id, v))
    }

    /// The entries starting in `[lo, hi]` (`lo <= hi`), every id included,
    /// whose range passes `keep`: every query is one of these scans.
    fn scan<'a>(
        &'a self,
        lo: u64,
        hi: u64,
        keep: impl Fn(&AddrRange) -> bool + 'a,
    ) -> impl DoubleEndedIterator<Item = (AddrRange, Id, &'a V)> + 'a {
        self.map
            .range((lo, Id::MIN)..=(hi, Id::MAX))
            .filter(move |(_, (e, _))| keep(e))
            .map(|(&(_, id), (e, v))| (*e, id, v))
    }

    /// Entries sharing at least one byte with `r`, in `(start, id)` order.
    /// An empty `r` overlaps nothing.
    pub fn overlapping(
        &self,
        r: AddrRange,
    ) -> impl DoubleEndedIterator<Item = (AddrRange, Id, &V)> + '_ {
        // Whatever overlaps `r` touches it: touching()'s scan, filtered
        // finer (it also drops entries that start at `r.end()`).
        self.touching(r).filter(move |(e, ..)| e.overlaps(&r))
    }

    /// Entries overlapping `r` or adjacent to it (ending at `r.start()` or
    /// starting at `r.end()`): those whose union with `r` is one range,
    /// what a merge absorbs. In `(start, id)` order.
    pub fn touching(
        &self,
        r: AddrRange,
    ) -> impl DoubleEndedIterator<Item = (AddrRange, Id, &V)> + '_ {
        let lo = r.start().saturating_sub(self.max_len);
        self.scan(lo, r.end(), move |e| e.touches(&r))
    }

    /// Entries containing all of `r`, nearest start first (descending
    /// `(start, id)` order). `.next()` is the tightest-starting one.
    ///
    /// An entry covering `r` starts in `[r.end() - max_len, r.start()]`;
    /// when `r` is longer than every entry the window is `[r.start(),
    /// r.start()]`, whose entries are all too short: nothing matches.
    pub fn covering(&self, r: AddrRange) -> impl Iterator<Item = (AddrRange, Id, &V)> + '_ {
        let lo = r.end().saturating_sub(self.max_len).min(r.start());
        self.scan(lo, r.start(), move |e| e.contains(&r)).rev()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: u64, e: u64) -> AddrRange {
        AddrRange::new(s, e).unwrap()
    }

    #[test]
    fn shared_starts_and_bound_reset() {
        let mut ix: IntervalIndex<&str, u32> = IntervalIndex::new();
        assert!(ix.insert(r(0x1000, 0x3000), 1, "a").is_none());
        assert!(ix.insert(r(0x1000, 0x2000), 2, "b").is_none());
        assert_eq!(
            ix.insert(r(0x1000, 0x4000), 1, "c"),
            Some((r(0x1000, 0x3000), "a"))
        );
        assert_eq!(ix.max_len(), 0x3000);
        let hits: Vec<u32> = ix.overlapping(r(0x1800, 0x1900)).map(|e| e.1).collect();
        assert_eq!(hits, [1, 2]);
        let cover: Vec<u32> = ix.covering(r(0x1800, 0x1900)).map(|e| e.1).collect();
        assert_eq!(cover, [2, 1]);
        assert_eq!(ix.touching(r(0x4000, 0x5000)).count(), 1);
        assert_eq!(ix.overlapping(r(0x4000, 0x5000)).count(), 0);
        ix.remove(0x1000, 1);
        assert_eq!(ix.max_len(), 0x3000, "the bound only grows while non-empty");
        ix.remove(0x1000, 2);
        assert_eq!((ix.len(), ix.max_len()), (0, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(AddrRange, u8, u32),
        Remove(u64, u8),
        Bump(AddrRange),
        Query(AddrRange),
    }

    fn range() -> impl Strategy<Value = AddrRange> {
        (0u64..64, 0u64..16).prop_map(|(s, l)| r(s, s + l))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (range(), 0u8..3, any::<u32>()).prop_map(|(x, id, v)| Op::Insert(x, id, v)),
            1 => (0u64..64, 0u8..3).prop_map(|(s, id)| Op::Remove(s, id)),
            1 => range().prop_map(Op::Bump),
            3 => range().prop_map(Op::Query),
        ]
    }

    type Entry = (AddrRange, u8, u32);

    /// The naive model: a Vec of entries, scanned whole for every query.
    fn select(m: &[Entry], keep: impl Fn(&AddrRange) -> bool) -> Vec<Entry> {
        let mut v: Vec<Entry> = m.iter().copied().filter(|e| keep(&e.0)).collect();
        v.sort_unstable_by_key(|e| (e.0.start(), e.1));
        v
    }

    fn owned<'a>(it: impl Iterator<Item = (AddrRange, u8, &'a u32)>) -> Vec<Entry> {
        it.map(|(x, id, v)| (x, id, *v)).collect()
    }

    proptest! {
        #[test]
        fn matches_naive_model(ops in proptest::collection::vec(op(), 1..80)) {
            let mut ix: IntervalIndex<u32, u8> = IntervalIndex::default();
            let mut m: Vec<Entry> = Vec::new();
            for o in ops {
                match o {
                    Op::Insert(x, id, v) => {
                        let at = m.iter().position(|e| (e.0.start(), e.1) == (x.start(), id));
                        let old = at.map(|i| m.remove(i)).map(|e| (e.0, e.2));
                        m.push((x, id, v));
                        prop_assert_eq!(ix.insert(x, id, v), old);
                    }
                    Op::Remove(s, id) => {
                        let at = m.iter().position(|e| (e.0.start(), e.1) == (s, id));
                        let old = at.map(|i| m.remove(i)).map(|e| (e.0, e.2));
                        prop_assert_eq!(ix.remove(s, id), old);
                        prop_assert_eq!(ix.get(s, id), None);
                    }
                    Op::Bump(q) => {
                        for e in m.iter_mut().filter(|e| e.0.overlaps(&q)) {
                            e.2 = e.2.wrapping_add(1);
                        }
                        let hit: Vec<(u64, u8)> =
                            ix.overlapping(q).map(|(x, id, _)| (x.start(), id)).collect();
                        for (s, id) in hit {
                            if let Some((_, v)) = ix.get_mut(s, id) {
                                *v = v.wrapping_add(1);
                            }
                        }
                    }
                    Op::Query(q) => {
                        prop_assert_eq!(owned(ix.overlapping(q)), select(&m, |e| e.overlaps(&q)));
                        prop_assert_eq!(owned(ix.touching(q)), select(&m, |e| e.touches(&q)));
                        let mut cover = select(&m, |e| e.contains(&q));
                        cover.reverse();
                        prop_assert_eq!(owned(ix.covering(q)), cover);
                    }
                }
                prop_assert_eq!(ix.len(), m.len());
                prop_assert!(m.iter().all(|e| e.0.len() <= ix.max_len()));
                prop_assert_eq!(owned(ix.iter()), select(&m, |_| true));
                for e in &m {
                    prop_assert_eq!(ix.get(e.0.start(), e.1), Some((e.0, &e.2)));
                }
            }
        }
    }
}
