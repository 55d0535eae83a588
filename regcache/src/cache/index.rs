//! The authoritative interval index, LRU order, and eviction.
//!
//! The index maps LIVE regions by start address, under the cache's
//! `RwLock`: misses search it under the read lock and publish under the
//! write lock; invalidation, merging and eviction remove from it under the
//! write lock. It is authoritative: a region is LIVE exactly while it is
//! here (the hint table is only a guess, checked against the slot).
//!
//! **The interval search** is [`umn::IntervalIndex`], the project's one
//! interval structure (also the event queue's and the notifier's VMA
//! spans'): regions keyed by `(start, slot)` (with merging off, regions
//! may overlap and share a start), and a search is one range scan bounded
//! by the longest region indexed. The wart, documented there: that bound
//! only shrinks when the index empties, so after one huge region every
//! scan is wider than it needs to be.
//!
//! ## LRU without touching a list on hits
//!
//! Each release stamps the slot with a logical clock. The evictor keeps a
//! map ordered by the stamp it *last saw* for each region. Stamps only
//! grow, so when the oldest recorded entry still has its recorded stamp it
//! is the true least recently used; otherwise it is re-keyed with its
//! current stamp and the search continues. Each re-key pays for at least
//! one hit since the last, so eviction is amortised O(log n) per hit, and
//! exact LRU single-threaded. The clock is advanced with a plain load and
//! store, not a locked RMW: concurrent releases may share a stamp, which
//! only blurs the order between them.

use super::Cache;
use crate::Registrar;
use crate::stats::add;
use std::collections::BTreeMap;
use umn::IntervalIndex;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use umn::AddrRange;

/// The authoritative index, under the cache's RwLock.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// LIVE regions, by (start, slot).
    regions: IntervalIndex<(), u32>,
    /// (recorded last-use stamp, slot) of LIVE regions, for LRU.
    lru: BTreeMap<(u64, u32), ()>,
    /// slot → the stamp it is recorded under in `lru`.
    lru_key: BTreeMap<u32, u64>,
    live_bytes: u64,
}

impl Index {
    /// Slots of LIVE regions overlapping (or, with `touching`, adjacent to)
    /// `r`, in start order.
    pub(super) fn overlapping(&self, r: &AddrRange, touching: bool) -> Vec<(u32, AddrRange)> {
        let pick = |(region, slot, ()): (AddrRange, u32, &())| (slot, region);
        if touching {
            self.regions.touching(*r).map(pick).collect()
        } else {
            self.regions.overlapping(*r).map(pick).collect()
        }
    }

    /// Slots of LIVE regions containing `req`, nearest start first.
    pub(super) fn covering_candidates(&self, req: AddrRange) -> impl Iterator<Item = u32> + '_ {
        self.regions.covering(req).map(|(_, slot, ())| slot)
    }

    /// Every region, in address order.
    pub(super) fn all(&self) -> Vec<(u32, AddrRange)> {
        self.regions.iter().map(|(r, slot, ())| (slot, r)).collect()
    }

    /// Index `slot`'s region `r`, last used at `stamp`.
    pub(super) fn insert(&mut self, slot: u32, r: AddrRange, stamp: u64) {
        self.regions.insert(r, slot, ());
        self.lru.insert((stamp, slot), ());
        self.lru_key.insert(slot, stamp);
        self.live_bytes += r.len();
    }

    /// Remove `slot`'s region `r` (no-op when absent).
    pub(super) fn remove(&mut self, slot: u32, r: AddrRange) {
        if self.regions.remove(r.start(), slot).is_some() {
            self.live_bytes -= r.len();
        }
        if let Some(stamp) = self.lru_key.remove(&slot) {
            self.lru.remove(&(stamp, slot));
        }
    }

    fn rekey(&mut self, slot: u32, old: u64, new: u64) {
        self.lru.remove(&(old, slot));
        self.lru.insert((new, slot), ());
        self.lru_key.insert(slot, new);
    }

    /// Regions indexed.
    pub(super) fn len(&self) -> usize {
        self.regions.len()
    }

    /// `true` when one more region of `len` bytes would exceed a limit.
    pub(super) fn over(&self, len: u64, max_regions: usize, max_bytes: u64) -> bool {
        self.len() + 1 > max_regions || self.live_bytes + len > max_bytes
    }
}

impl<R: Registrar> Cache<R> {
    /// Evict up to `n` idle regions, least recently used first (with
    /// [`crate::Eviction::Cost`], the cheapest to re-register among the
    /// [`super::COST_WINDOW`] least recently used, see `policy.rs`);
    /// returns their slots for [`Cache::retire_all`] once the lock is
    /// dropped.
    pub(super) fn evict_lru(&self, idx: &mut Index, n: usize) -> Vec<u32> {
        let window = match self.config.eviction {
            crate::Eviction::Lru => 1,
            crate::Eviction::Cost => super::COST_WINDOW,
        };
        // Idle candidates with current stamps, oldest first, taken out of
        // `lru` while the window fills; the unchosen go back as recorded.
        let mut cands: Vec<(u64, u32)> = Vec::new();
        let mut victims = Vec::new();
        // Regions found in use are set aside for this pass and put back
        // under the stamp they were recorded with: their release stamps a
        // later time, so recorded ≤ actual still holds, and a region held
        // only by a deferred reference keeps its true LRU position.
        let mut in_use = Vec::new();
        let mut examined = 0;
        // (Cost-aware eviction looks at up to `window` entries per victim.)
        let limit = idx.lru.len() * 2 * window + 1;
        while victims.len() < n && (examined < limit || !cands.is_empty()) {
            let next = idx
                .lru
                .first_key_value()
                .map(|(&k, _)| k)
                .filter(|_| examined < limit);
            if !cands.is_empty() && (next.is_none() || cands.len() == window) {
                let lens: Vec<u64> = cands
                    .iter()
                    .map(|&(_, slot)| self.slab.slot(slot).range().len())
                    .collect();
                let pick = super::policy::cheapest(
                    &lens,
                    self.config.max_regions,
                    self.config.max_bytes,
                );
                let (recorded, slot) = cands.swap_remove(pick);
                for (rec, other) in cands.drain(..) {
                    idx.lru.insert((rec, other), ());
                }
                idx.lru.insert((recorded, slot), ());
                let r = self.slab.slot(slot).range();
                if self.kill(idx, slot, r, true) {
                    add(&self.counters.evictions, 1);
                    victims.push(slot);
                } else if idx.lru_key.contains_key(&slot) {
                    idx.lru.remove(&(recorded, slot));
                    in_use.push((recorded, slot));
                }
                continue;
            }
            let Some((recorded, slot)) = next else {
                break;
            };
            examined += 1;
            let s = self.slab.slot(slot);
            if s.state.load(Acquire).refs() != 0 {
                idx.lru.remove(&(recorded, slot));
                in_use.push((recorded, slot));
                continue;
            }
            let actual = s.last_use.load(Relaxed);
            if actual != recorded {
                idx.rekey(slot, recorded, actual);
                continue;
            }
            if window > 1 {
                idx.lru.remove(&(recorded, slot));
                cands.push((recorded, slot));
                continue;
            }
            let r = s.range();
            if self.kill(idx, slot, r, true) {
                add(&self.counters.evictions, 1);
                victims.push(slot);
            } else if idx.lru_key.contains_key(&slot) {
                // Taken by a hit between the checks: treat as in use.
                idx.lru.remove(&(recorded, slot));
                in_use.push((recorded, slot));
            }
        }
        for (recorded, slot) in cands.into_iter().chain(in_use) {
            idx.lru.insert((recorded, slot), ());
        }
        victims
    }
}
