//! Policy on the miss path: adaptive merging and cost-aware eviction.
//!
//! Nothing here runs on the hit path; both policies act only when a miss
//! plans what to register, when an invalidation kills a region, or when a
//! limit needs room.
//!
//! ## Adaptive merging: a "do not merge across" table
//!
//! Merging pays when neighbours are reused together and costs when they
//! die apart: the unmap of a temporary buffer kills the merged
//! registration of its long-lived neighbour too (docs/RESULTS.md,
//! `collective`). The cache learns this from the one event that shows it:
//! an invalidation that kills a region of which only a part was unmapped.
//! The edges of the unmapped part that had a surviving side are
//! *boundaries*: page addresses remembered in a small table
//! ([`BOUNDARIES`] entries, oldest replaced first). With
//! [`crate::Merge::Adaptive`], a miss merges only with the regions that lie
//! within the window between the nearest boundary at or below the
//! request's start and the nearest at or above its end; a boundary inside
//! the request itself cannot be avoided and is ignored. Everything else is
//! merged as with `on`, so a workload that never unmaps part of a merged
//! region (NetPIPE `-I`, hpcc) behaves exactly as with merging on, and one
//! that does pays one lost region per boundary, once, then keeps the
//! neighbours apart (as with merging off).
//!
//! Merging costs registrar time as well as hits: each merge registers the
//! whole hull again, so a hull grown piece by piece over memory that dies
//! soon registers its bytes several times over. So the table also keeps
//! the last [`DEAD`] ranges invalidated while cached (the event's hint,
//! else the whole region): a miss on a request overlapping one of them
//! merges with nothing, and no miss merges with a region overlapping one.
//! Temporaries reallocated at the same addresses (glibc's mmap threshold
//! and free lists make that the common case) are then registered exactly
//! as with merging off.
//!
//! The hint of an event is the invalidated part when the source knows it
//! (ummunotify's `FLAG_HINT`, userfaultfd's event range, the range given to
//! [`crate::Cache::invalidate`]). An event without one (a region hit more
//! than once before the read, a lost track) cannot say which part died:
//! then every *seam* of the region (where the parts it was merged from
//! met, recorded when it was published) becomes a boundary, and the whole
//! region counts as short-lived.
//!
//! **Lock order**: the table's mutex is a leaf, taken under the index lock
//! (read in lookup, write in invalidation) and never held while taking
//! anything else.
//!
//! ## Cost-aware eviction
//!
//! A miss costs the registrar ~16 µs plus ~0.06 ns per byte
//! ([`registration_cost_ns`]), so losing a 16 MiB region costs ~60× losing
//! a 4 KiB one. With [`crate::Eviction::Cost`] the evictor looks at the
//! [`COST_WINDOW`] least recently used idle regions and evicts the one
//! with the smallest re-registration cost per unit of the limit it holds
//! (its share of `max_regions` or of `max_bytes`, whichever is larger):
//! GreedyDual-Size's ratio (P. Cao and S. Irani, "Cost-aware WWW proxy
//! caching algorithms", USITS 1997), restricted to an LRU window so that
//! recency still decides between regions far apart in time and the hit
//! path keeps its one stamp store.

use std::sync::Mutex;
use umn::AddrRange;

/// Entries in the "do not merge across" table.
pub(super) const BOUNDARIES: usize = 256;

/// How many of the least recently used idle regions cost-aware eviction
/// chooses among.
pub const COST_WINDOW: usize = 4;

/// Modelled registration cost of `len` bytes, ns: 16 µs + 0.06 ns/byte,
/// `ibv_reg_mr` on ConnectX-class NICs (the figure issue 17 quotes;
/// mlock and SoftRoCE measured here are within the same order). Used to
/// rank eviction victims and, by `regcache-bench`, to report a
/// deterministic registrar time beside the measured one.
pub fn registration_cost_ns(len: u64) -> f64 {
    16_000.0 + 0.06 * len as f64
}

/// Short-lived ranges remembered.
pub(super) const DEAD: usize = 64;

/// Seams remembered per merged region (more are dropped: a region merged
/// from that many parts is rare, and a forgotten seam only means one more
/// lost merge to learn from).
const SEAMS: usize = 16;

/// The "do not merge across" table: page addresses, oldest replaced first;
/// and the seams of the merged regions cached now, by slot.
#[derive(Debug, Default)]
pub(super) struct Boundaries {
    ring: Mutex<(Vec<u64>, usize)>,
    seams: Mutex<std::collections::HashMap<u32, Vec<u64>>>,
    /// Ranges seen invalidated while cached (short-lived memory), oldest
    /// replaced first.
    dead: Mutex<(Vec<AddrRange>, usize)>,
}

impl Boundaries {
    /// Remember `r` as memory that was unmapped while cached: what is
    /// allocated there again is likely short-lived too, and a miss on it
    /// merges with nothing (see [`Boundaries::short_lived`]).
    pub(super) fn died(&self, r: AddrRange) {
        let mut g = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        let (ring, next) = &mut *g;
        if ring.contains(&r) {
            return;
        }
        if ring.len() < DEAD {
            ring.push(r);
        } else {
            ring[*next] = r;
            *next = (*next + 1) % DEAD;
        }
    }

    /// `true` when `r` overlaps memory remembered as short-lived.
    pub(super) fn short_lived(&self, r: &AddrRange) -> bool {
        let g = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter().any(|d| d.overlaps(r))
    }

    /// `slot` now holds `target`, merged from `parts` (the request and
    /// the regions it absorbed, whose own seams are still recorded under
    /// their slots): remember where the parts met. Under the index's write
    /// lock.
    pub(super) fn merged(&self, slot: u32, target: AddrRange, parts: &[(Option<u32>, AddrRange)]) {
        let mut g = self.seams.lock().unwrap_or_else(|e| e.into_inner());
        let mut seams: Vec<u64> = Vec::new();
        for &(from, r) in parts {
            let inherited = from.and_then(|s| g.remove(&s)).unwrap_or_default();
            for a in [r.start(), r.end()].into_iter().chain(inherited) {
                if target.start() < a && a < target.end() && !seams.contains(&a) {
                    seams.push(a);
                }
            }
        }
        seams.truncate(SEAMS);
        if seams.is_empty() {
            g.remove(&slot);
        } else {
            g.insert(slot, seams);
        }
    }

    /// `slot`'s region left the cache (evicted, absorbed without a merge
    /// record, or killed): forget its seams, returning them.
    pub(super) fn forget(&self, slot: u32) -> Vec<u64> {
        self.seams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot)
            .unwrap_or_default()
    }

    /// Learn from an invalidation of `slot`'s merged region whose
    /// invalidated part is unknown (the source's hint was lost): every
    /// seam becomes a boundary, since any of its parts may be what died.
    pub(super) fn learn_seams(&self, slot: u32) -> usize {
        let seams = self.forget(slot);
        let mut g = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        seams.into_iter().filter(|&b| Self::push(&mut g, b)).count()
    }

    fn push(g: &mut (Vec<u64>, usize), b: u64) -> bool {
        let (ring, next) = g;
        if ring.contains(&b) {
            return false;
        }
        if ring.len() < BOUNDARIES {
            ring.push(b);
        } else {
            ring[*next] = b;
            *next = (*next + 1) % BOUNDARIES;
        }
        true
    }

    /// Learn from an invalidation that killed `region` because `dead` (a
    /// part of it) was unmapped: remember the edges of `dead` with a live
    /// side. Returns how many boundaries were added.
    pub(super) fn learn(&self, region: AddrRange, dead: AddrRange) -> usize {
        let Some(dead) = dead.intersection(&region) else {
            return 0;
        };
        let edges = [
            (region.start() < dead.start()).then_some(dead.start()),
            (dead.end() < region.end()).then_some(dead.end()),
        ];
        let mut g = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        edges
            .into_iter()
            .flatten()
            .filter(|&b| Self::push(&mut g, b))
            .count()
    }

    /// The window `[lo, hi)` a miss on `req` may merge within: from the
    /// nearest boundary at or below `req.start()` to the nearest at or
    /// above `req.end()` (boundaries inside `req` are ignored).
    pub(super) fn window(&self, req: &AddrRange) -> (u64, u64) {
        let g = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let (mut lo, mut hi) = (0u64, u64::MAX);
        for &b in &g.0 {
            if b <= req.start() {
                lo = lo.max(b);
            } else if b >= req.end() {
                hi = hi.min(b);
            }
        }
        (lo, hi)
    }

    /// Boundaries remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }
}

/// Index of the candidate cost-aware eviction takes among `(len)` of the
/// window, oldest first: the smallest cost per share of the binding limit
/// (the oldest among equals).
pub(super) fn cheapest(lens: &[u64], max_regions: usize, max_bytes: u64) -> usize {
    let score = |len: u64| {
        let share = (1.0 / max_regions.max(1) as f64).max(len as f64 / max_bytes.max(1) as f64);
        registration_cost_ns(len) / share
    };
    let mut best = 0;
    for (i, &l) in lens.iter().enumerate().skip(1) {
        if score(l) < score(lens[best]) {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u64, e: u64) -> AddrRange {
        AddrRange::new(s, e).unwrap()
    }

    #[test]
    fn a_partly_dead_region_teaches_the_edges_with_a_live_side() {
        let b = Boundaries::default();
        // The whole region died: nothing to learn.
        assert_eq!(b.learn(r(0x1000, 0x5000), r(0x1000, 0x5000)), 0);
        // The upper part died: its lower edge separates it from survivors.
        assert_eq!(b.learn(r(0x1000, 0x5000), r(0x3000, 0x9000)), 1);
        assert_eq!(b.window(&r(0x1000, 0x2000)), (0, 0x3000));
        assert_eq!(b.window(&r(0x3000, 0x4000)), (0x3000, u64::MAX));
        // A boundary inside the request is ignored.
        assert_eq!(b.window(&r(0x2000, 0x4000)), (0, u64::MAX));
        // Learning the same edge twice keeps one entry.
        assert_eq!(b.learn(r(0x2000, 0x4000), r(0x3000, 0x4000)), 0);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn the_table_forgets_the_oldest_when_full() {
        let b = Boundaries::default();
        for i in 0..BOUNDARIES as u64 + 1 {
            let base = 0x10_0000 + i * 0x10_000;
            assert_eq!(b.learn(r(base, base + 0x2000), r(base + 0x1000, base + 0x2000)), 1);
        }
        assert_eq!(b.len(), BOUNDARIES);
        // The first boundary (0x10_1000) was replaced by the last.
        assert_eq!(b.window(&r(0x10_0000, 0x10_1000)), (0, 0x11_1000));
    }

    #[test]
    fn cost_aware_choice_prefers_cheap_regions_per_share_of_the_limit() {
        // Region-bound (tiny regions against a huge byte limit): every
        // region holds the same share, so the cheapest (smallest) goes.
        assert_eq!(cheapest(&[1 << 20, 4096, 1 << 16], 64, 1 << 40), 1);
        // Byte-bound: cost per byte is lowest for the largest region.
        assert_eq!(cheapest(&[4096, 16 << 20, 1 << 20], 1 << 20, 32 << 20), 1);
        // Equal: the oldest.
        assert_eq!(cheapest(&[4096, 4096], 64, 1 << 40), 0);
        assert!(registration_cost_ns(16 << 20) > 60.0 * registration_cost_ns(4096) / 1.1);
    }
}
