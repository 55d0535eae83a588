//! The registration cache: slots, the interval index, LRU, limits.
//!
//! ## The journey of a `get`
//!
//! This module holds the [`Cache`] itself, its construction and the entry
//! points; each leg of the journey is a chapter of its own, in the order a
//! request meets them:
//!
//! 1. **Widening** (here): a request `[addr, addr+len)` is widened to page
//!    boundaries, because the NIC (and `mlock`) work in pages and two
//!    requests in the same pages should share a registration. A get that
//!    sees the invalidation source's generation move, or a fork, first
//!    catches up (`invalidate.rs`); with the kernel device's per-region
//!    words, only a get that misses the hit path looks at the generation.
//! 2. **The hit** (`hit.rs`): this thread's deferred-release table
//!    (`deferred.rs`), then a set-associative hint table laid out like a
//!    page table (a software TLB, `hints.rs`) name a slot; one CAS on the
//!    slot's state word takes a reference. No lock, no allocation, no
//!    system call.
//! 3. **Slots and the state word** (`slot.rs`, `state.rs`): regions live
//!    in slots that are recycled but never freed; one atomic word per slot
//!    holds the incarnation, the LIVE bit and the reference count, and
//!    every transition of the protocol is a method on it.
//! 4. **The miss** (`miss.rs`): lookup in the authoritative index under
//!    the read lock, reserve a slot and watch the range, register outside
//!    any lock (`ibv_reg_mr` takes 10–100 µs), publish under the write lock
//!    — or find that another thread won the race.
//! 5. **The index** (`index.rs`): the interval index by start address,
//!    exact LRU by release stamps re-keyed lazily, and eviction; the
//!    policies a miss applies (adaptive merging's "do not merge across"
//!    table, cost-aware eviction) are in `policy.rs`.
//! 6. **Release** (`hit.rs`, `deferred.rs`): the reference goes back into
//!    the thread's deferred table while the region is LIVE, else the count
//!    is decremented; the last release of an invalidated region
//!    deregisters it.
//! 7. **Invalidation** (`invalidate.rs`): events from the source, explicit
//!    invalidation, fork; killing a region (clearing LIVE) and retiring it
//!    (deregistering, recycling the slot) exactly once.
//!
//! The protocols of the state word and the deferred tables are
//! model-checked with loom (`loom_models.rs`; under `cfg(loom)` the crate
//! is only those two modules and the models, see `lib.rs`); see
//! `docs/ARCHITECTURE.md` for the invariants.

mod deferred;
mod handle;
mod hints;
mod hit;
mod index;
mod invalidate;
mod miss;
mod policy;
mod slot;
mod state;
mod verify;

pub use deferred::DEFERRED;
pub use handle::{Got, Handle, RawHandle, RegionInfo, Token};
pub use policy::{COST_WINDOW, registration_cost_ns};

use crate::stats::{Counters, Stats};
use crate::thread::{STRIPES, thread_stripe};
use crate::{AccessFlags, Config, MonitorKind, Registrar, RegistrarError};
use deferred::DeferredTables;
use hints::Hints;
use index::Index;
use invalidate::{FORK_EPOCH, Monitor, install_atfork};
use slot::{CHUNK, MAX_CHUNKS, Slab};
use verify::Verifier;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use umn::{AddrRange, RangeError};

/// Why [`Cache::get`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The request is NULL, empty or overflows the address space.
    #[error("invalid range: {0}")]
    Range(#[from] RangeError),
    /// The invalidation source failed (could not be opened, or refused a
    /// range).
    #[error("invalidation source: {0}")]
    Monitor(#[from] umn::Error),
    /// The registrar failed and eviction could not help (nothing idle left
    /// to evict, or the error is not a resource shortage).
    #[error(transparent)]
    Registrar(#[from] RegistrarError),
}

/// A memory-registration cache over a [`Registrar`]. `Send + Sync`: share
/// it between threads by reference or in an `Arc`.
///
/// See the [crate documentation](crate) for the contract and the module
/// source for the protocol.
pub struct Cache<R: Registrar> {
    registrar: R,
    config: Config,
    slab: Slab<R>,
    index: RwLock<Index>,
    /// First page of a request → the slot that last served it (a guess).
    hints: Hints,
    page_shift: u32,
    /// LRU logical clock, advanced on every release (racy by design).
    clock: AtomicU64,
    /// Every thread's deferred references, and their purge epoch.
    deferred: DeferredTables,
    monitor: Option<Monitor>,
    /// The source in force (what `Auto` chose, or `None`).
    source: MonitorKind,
    /// Why the configured source could not be opened, if it could not.
    monitor_error: Option<String>,
    /// Set in a fork child: nothing is cached any more.
    forked: AtomicBool,
    /// [`FORK_EPOCH`] when the cache was built.
    fork_epoch: u64,
    counters: Counters,
    /// See [`Cache::set_invalidation_observer`].
    observer: OnceLock<InvalidationObserver>,
    /// The hit check of [`crate::Verify::Pfn`]; `None` when off.
    verifier: Option<Verifier>,
    /// Why verify mode was asked for and could not be had.
    verify_error: Option<String>,
    /// Adaptive merging's "do not merge across" table (`policy.rs`).
    boundaries: policy::Boundaries,
}

/// What [`Cache::set_invalidation_observer`] installs: called with the
/// part of a cached region that was invalidated.
pub type InvalidationObserver = Box<dyn Fn(AddrRange) + Send + Sync>;

impl<R: Registrar> std::fmt::Debug for Cache<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("registrar", &self.registrar.name())
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<R: Registrar> Cache<R> {
    /// A cache over `registrar` with `config`, watching memory with the
    /// source `config.monitor` names. If that source cannot be opened the
    /// cache runs with none, logs why, and says so in
    /// [`Cache::monitor`] and [`Cache::monitor_error`]; use
    /// [`Cache::try_new`] to make that an error instead.
    pub fn new(registrar: R, config: Config) -> Self {
        match Monitor::open(config.monitor) {
            Ok((monitor, source)) => Self::build(registrar, config, monitor, source, None),
            Err(e) => {
                log::error!(
                    "regcache: cannot open invalidation source {}: {e}; running without one",
                    config.monitor.name()
                );
                Self::build(
                    registrar,
                    config,
                    None,
                    MonitorKind::None,
                    Some(e.to_string()),
                )
            }
        }
    }

    /// As [`Cache::new`], but a source that cannot be opened is an error
    /// (with `Auto`, only when neither the kernel device nor userfaultfd
    /// opens).
    ///
    /// # Errors
    /// [`CacheError::Monitor`] with the source's error.
    pub fn try_new(registrar: R, config: Config) -> Result<Self, CacheError> {
        let (monitor, source) = Monitor::open(config.monitor)?;
        Ok(Self::build(registrar, config, monitor, source, None))
    }

    fn build(
        registrar: R,
        config: Config,
        monitor: Option<Monitor>,
        source: MonitorKind,
        monitor_error: Option<String>,
    ) -> Self {
        let config = Config {
            max_regions: config
                .max_regions
                .clamp(1, (MAX_CHUNKS * CHUNK / 2).min(u32::MAX as usize / 2)),
            max_bytes: config.max_bytes.max(1),
            ..config
        };
        let (verifier, verify_error) = match config.verify {
            crate::Verify::Off => (None, None),
            crate::Verify::Pfn => match Verifier::open() {
                Ok(v) => (Some(v), None),
                Err(e) => {
                    log::error!("regcache: {e}; running without the check");
                    (None, Some(e))
                }
            },
        };
        // Two 8-byte entries per region (256 KiB for the default 16,384):
        // buckets at most half full, and windows of 128 MiB (`hints.rs`).
        let hint_len = (config.max_regions * 2)
            .next_power_of_two()
            .clamp(1 << 10, 1 << 20);
        Self {
            registrar,
            slab: Slab::new(),
            index: RwLock::new(Index::default()),
            hints: Hints::new(hint_len),
            page_shift: umn::page_size().trailing_zeros(),
            clock: AtomicU64::new(1),
            // Verify mode checks every hit on the slow path: no deferred
            // tables (and no hints, `remember`), so the fast path never
            // returns an unchecked hit and costs nothing extra.
            deferred: DeferredTables::new(if verifier.is_some() { 0 } else { STRIPES }),
            monitor,
            source,
            monitor_error,
            forked: AtomicBool::new(false),
            fork_epoch: {
                install_atfork();
                FORK_EPOCH.load(Relaxed)
            },
            counters: Counters::default(),
            observer: OnceLock::new(),
            verifier,
            verify_error,
            boundaries: policy::Boundaries::default(),
            config,
        }
    }

    /// The invalidation source in force: what `Auto` chose, or
    /// [`MonitorKind::None`] when none is open.
    pub fn monitor(&self) -> MonitorKind {
        self.source
    }

    /// Why the configured invalidation source could not be opened.
    pub fn monitor_error(&self) -> Option<&str> {
        self.monitor_error.as_deref()
    }

    /// Why verify mode ([`crate::Verify::Pfn`]) was asked for and is not in
    /// force (no privilege to read PFNs), if so.
    pub fn verify_error(&self) -> Option<&str> {
        self.verify_error.as_deref()
    }

    /// The registrar this cache registers with.
    pub fn registrar(&self) -> &R {
        &self.registrar
    }

    /// The configuration in force (limits clamped to what the cache
    /// supports).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The page number of address `addr`.
    #[inline(always)]
    fn page_of(&self, addr: u64) -> u64 {
        addr.wrapping_shr(self.page_shift)
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Get a registration covering `range` with at least `access`.
    ///
    /// The request is widened to page boundaries. A cached region that
    /// covers it with sufficient access is a hit; otherwise a region is
    /// registered (merged with overlapping and adjacent cached regions as
    /// [`Config::merge`] says) and cached, evicting least recently used
    /// idle regions to stay within the limits. Over the limits with nothing
    /// evictable, the request gets a one-off registration outside the cache
    /// (counted in [`Stats::uncached`]).
    ///
    /// # Errors
    /// [`CacheError::Range`] for an empty or overflowing range;
    /// [`CacheError::Registrar`] when registration fails and evicting every
    /// idle region did not help, or the failure is not a resource shortage
    /// (e.g. the memory is not mapped). The cache is unchanged by a failed
    /// get, except for regions evicted while retrying.
    #[inline(always)]
    pub fn get(&self, range: AddrRange, access: AccessFlags) -> Result<Handle<'_, R>, CacheError> {
        let raw = self.get_raw(range, access)?;
        Ok(Handle {
            cache: self,
            raw: std::mem::ManuallyDrop::new(raw),
        })
    }

    /// As [`Cache::get`], returning a [`RawHandle`] that must be released
    /// with [`Cache::release_raw`].
    ///
    /// # Errors
    /// As [`Cache::get`].
    #[inline(always)]
    pub fn get_raw(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<RawHandle<R>, CacheError> {
        let req = self.prologue(range)?;
        match self.hit::<true>(thread_stripe(), &req, access) {
            Some((idx, slot)) => Ok(RawHandle {
                slot: idx,
                range: slot.range(),
                keys: slot.keys(),
                uncached: None,
            }),
            None => self.get_slow(req, access),
        }
    }

    /// The request widened to pages; an error for an empty or overflowing
    /// one.
    #[inline(always)]
    fn widen(&self, range: AddrRange) -> Result<AddrRange, RangeError> {
        // `RangeError` has no drop glue: the C fast path discards it with
        // no call.
        if range.is_empty() {
            return Err(RangeError::Empty {
                start: range.start(),
            });
        }
        range.align_out(1u64.wrapping_shl(self.page_shift))
    }

    /// Checks and events common to every get: the request widened to
    /// pages, after catching up with a fork or invalidation events.
    #[inline(always)]
    fn prologue(&self, range: AddrRange) -> Result<AddrRange, CacheError> {
        let req = self.widen(range)?;
        if self.behind() {
            self.catch_up();
        }
        Ok(req)
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let hits = c.hits.sum();
        let misses = c.misses.load(Relaxed);
        Stats {
            gets: hits + misses,
            hits,
            misses,
            merges: c.merges.load(Relaxed),
            merge_fallbacks: c.merge_fallbacks.load(Relaxed),
            monitor: self.source,
            monitor_invalidations: c.monitor_invalidations.load(Relaxed),
            unwatched: c.unwatched.load(Relaxed),
            doomed_retries: c.doomed_retries.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            invalidations_idle: c.invalidations_idle.load(Relaxed),
            invalidations_in_use: c.invalidations_in_use.load(Relaxed),
            registrations: c.registrations.load(Relaxed),
            registration_failures: c.registration_failures.load(Relaxed),
            deregistrations: c.deregistrations.load(Relaxed),
            deregistration_failures: c.deregistration_failures.load(Relaxed),
            enomem_retries: c.enomem_retries.load(Relaxed),
            uncached: c.uncached.load(Relaxed),
            lost_races: c.lost_races.load(Relaxed),
            regions: self.read_index().len() as u64,
            peak_regions: c.peak_regions.load(Relaxed),
            bytes_registered: c.bytes_registered.load(Relaxed),
            peak_bytes: c.peak_bytes.load(Relaxed),
            registrar_ns: c.registrar_ns.load(Relaxed),
            monitor_ns: c.monitor_ns.load(Relaxed),
            verify_checks: c.verify_checks.load(Relaxed),
            verify_mismatches: c.verify_mismatches.load(Relaxed),
        }
    }

    /// The cached regions now, in address order (for diagnostics and
    /// tests).
    pub fn regions(&self) -> Vec<RegionInfo> {
        let all = self.read_index().all();
        all.into_iter()
            .map(|(slot, range)| {
                let s = self.slab.slot(slot);
                RegionInfo {
                    range,
                    access: s.access(),
                    refs: s.state.load(Acquire).refs() as u32,
                    keys: s.keys(),
                }
            })
            .collect()
    }
}

impl<R: Registrar> Drop for Cache<R> {
    /// Deregisters every region. Handles borrow the cache, so none is
    /// alive here; raw handles still out are leaked registrations, logged.
    fn drop(&mut self) {
        // Deferred references of every thread: we have exclusive access.
        for d in self.deferred.all() {
            self.purge_deferred(d, true);
        }
        let idx = std::mem::take(self.index.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (slot, range) in idx.all() {
            let s = self.slab.slot(slot);
            let r = s.state.load(Acquire).refs();
            if r != 0 {
                log::warn!("cache dropped with {r} raw handle(s) on {range} still out");
            }
            s.state.kill_for_drop();
            self.retire(slot);
        }
    }
}

// The slot table is shared: `Cache<R>` is Send + Sync when the registrar
// and its regions are; all shared mutation goes through atomics, the
// RwLock and per-slot Mutexes. These assertions keep that true.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache<crate::PinRegistrar>>();
};
