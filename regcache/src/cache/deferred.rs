//! Deferred release: a hit with no atomic read-modify-write.
//!
//! A locked read-modify-write costs 12–16 ns on the reference machine,
//! and a get+release needs two (take and drop a reference), which alone is
//! over the 25 ns hit budget. The dominant MPI
//! pattern is the same thread reusing the same buffer. So each thread keeps
//! up to [`DEFERRED`] references it released, in a per-cache table only
//! that thread writes (indexed by its thread index, like the statistics
//! stripes). A get first looks there: an entry whose slot is LIVE and
//! covers the request is handed out with plain loads and stores. A deferred
//! reference is a real counted reference, so nothing about deregistration
//! changes: a held region is never deregistered.
//!
//! The price, bounded and stated: a region whose only holder is a deferred
//! entry counts as in use. Eviction skips it; when nothing else is
//! evictable, the evicting thread purges its own table and retries.
//! Invalidation (any kill of a region with references) bumps the tables'
//! epoch, and every thread purges killed entries from its table on its next
//! get or release, so an invalidated region's deregistration waits at most
//! until its last thread's next call (or `Cache::quiesce`). A thread that
//! exits without `quiesce` leaves its entries referenced for the life of
//! the cache (at most [`DEFERRED`] regions per thread and cache; they are
//! not evictable). Reaping them needs a thread-exit hook, and one
//! registered from the stripe assignment made every get+release 10
//! instructions longer (callee-saved spills in the release path), so it
//! was backed out; see docs/RESULTS.md. Threads
//! beyond the first `STRIPES` of the process skip the table and use the
//! atomic path.
//!
//! **Ordering.** The killer clears LIVE (AcqRel CAS on the state word)
//! *then* bumps the epoch with Release; a thread loads the epoch with
//! Acquire, so once it sees the bump, its purge sees LIVE cleared. On
//! x86-64 that costs nothing: the bump is a locked RMW whatever its
//! ordering, the check a plain `mov`. The model in `cache/loom_models.rs`
//! checks this, and fails with both Relaxed.
//!
//! The table is the protocol alone (no [`crate::Cache`] in sight), so that
//! the loom build, which has no cache, can model it; the cache's hit and
//! release paths drive it from `hit.rs`.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::sync::{AtomicU32, AtomicU64, Ordering};
use std::sync::atomic::Ordering::Relaxed;
#[cfg(not(regcache_loom_break = "deferred"))]
use std::sync::atomic::Ordering::{Acquire, Release};

/// References each thread may keep deferred per cache.
pub const DEFERRED: usize = 2;

/// Ordering of the epoch bump after a kill; see the module docs.
#[cfg(not(regcache_loom_break = "deferred"))]
const BUMP: Ordering = Release;
/// Ordering of a thread's epoch check; see the module docs.
#[cfg(not(regcache_loom_break = "deferred"))]
const CHECK: Ordering = Acquire;
// Deliberately broken for the loom model's must-fail run: a purge that
// saw the bump may miss the LIVE clear it follows, keep the killed entry,
// and never check again.
#[cfg(regcache_loom_break = "deferred")]
const BUMP: Ordering = Relaxed;
#[cfg(regcache_loom_break = "deferred")]
const CHECK: Ordering = Relaxed;

/// One thread's deferred references (slot index + 1; 0 = empty), newest
/// first, and the tables' epoch it last purged at. Written only by the
/// owning thread (plain loads and stores on atomics); read by nobody else
/// except `Cache::drop`, which has exclusive access.
#[repr(align(128))]
#[derive(Debug)]
pub(super) struct Deferred {
    epoch: AtomicU64,
    slots: [AtomicU32; DEFERRED],
}

/// Every thread's [`Deferred`] table, and the epoch that tells them to
/// purge.
#[derive(Debug)]
pub(super) struct DeferredTables {
    /// Bumped when a region with references is killed.
    epoch: AtomicU64,
    tables: Box<[Deferred]>,
}

impl DeferredTables {
    pub(super) fn new(threads: usize) -> Self {
        Self {
            epoch: AtomicU64::new(0),
            tables: (0..threads)
                .map(|_| Deferred {
                    epoch: AtomicU64::new(0),
                    slots: std::array::from_fn(|_| AtomicU32::new(0)),
                })
                .collect(),
        }
    }

    /// The table of thread `me`, if it has one.
    #[inline(always)]
    pub(super) fn table(&self, me: usize) -> Option<&Deferred> {
        self.tables.get(me)
    }

    /// A region was killed while references were held: maybe only by
    /// deferred entries, so every thread purges on its next call. Called
    /// after the state word's LIVE was cleared.
    pub(super) fn killed_in_use(&self) {
        self.epoch.fetch_add(1, BUMP);
    }

    /// Every table (for `Cache::drop`).
    pub(super) fn all(&self) -> impl Iterator<Item = &Deferred> {
        self.tables.iter()
    }
}

impl Deferred {
    /// `true` when a region was killed since this table was last purged.
    #[inline(always)]
    pub(super) fn is_stale(&self, all: &DeferredTables) -> bool {
        self.epoch.load(Relaxed) != all.epoch.load(CHECK)
    }

    /// Take the first entry for which `f` gives `Some`, emptying it: the
    /// caller now holds that counted reference.
    #[inline(always)]
    pub(super) fn take<T>(&self, mut f: impl FnMut(u32) -> Option<T>) -> Option<(u32, T)> {
        for e in &self.slots {
            let v = e.load(Relaxed);
            if v != 0 {
                let idx = v.wrapping_sub(1);
                if let Some(t) = f(idx) {
                    // Only this thread writes `e`.
                    e.store(0, Relaxed);
                    return Some((idx, t));
                }
            }
        }
        None
    }

    /// The oldest entry (slot index + 1; 0 when empty): what
    /// [`Deferred::push`] displaces.
    #[inline(always)]
    pub(super) fn oldest(&self) -> u32 {
        self.slots.last().map_or(0, |e| e.load(Relaxed))
    }

    /// Keep a reference on slot `idx` as the newest entry, shifting the
    /// others and dropping the oldest off the end; the caller read that
    /// one with [`Deferred::oldest`] and now owns its reference.
    #[inline(always)]
    pub(super) fn push(&self, idx: u32) {
        // Back to front: each entry takes its newer neighbour's value.
        for (to, from) in self.slots.iter().rev().zip(self.slots.iter().rev().skip(1)) {
            to.store(from.load(Relaxed), Relaxed);
        }
        if let Some(newest) = self.slots.first() {
            newest.store(idx.wrapping_add(1), Relaxed);
        }
    }

    /// Drop entries (all with `all`, else those `dead` says left the index),
    /// handing each reference to `drop_ref`; the table is then current.
    pub(super) fn purge(
        &self,
        tables: &DeferredTables,
        all: bool,
        dead: impl Fn(u32) -> bool,
        mut drop_ref: impl FnMut(u32),
    ) {
        self.epoch.store(tables.epoch.load(CHECK), Relaxed);
        for e in &self.slots {
            let v = e.load(Relaxed);
            if v != 0 && (all || dead(v - 1)) {
                e.store(0, Relaxed);
                drop_ref(v - 1);
            }
        }
    }

    /// `true` when the table holds no reference.
    pub(super) fn is_empty(&self) -> bool {
        self.slots.iter().all(|e| e.load(Relaxed) == 0)
    }
}
