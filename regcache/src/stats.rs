//! Statistics: counters kept by the cache, and the [`Stats`] snapshot.
//!
//! The hit path must not do a contended read-modify-write (a `lock xadd`
//! costs ~10 ns on this project's reference machine, a third of the hit
//! budget). Hits are therefore counted in per-thread *stripes*: each thread
//! gets its own cache-line-padded counter, which only it writes, with a
//! plain load and store, indexed by the thread's index from
//! [`crate::thread`]. Threads beyond [`STRIPES`] share one atomic counter.
//! Everything else is counted on slow paths with `fetch_add`.

use crate::thread::STRIPES;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[repr(align(128))]
#[derive(Debug, Default)]
struct Stripe(AtomicU64);

/// A counter incremented by many threads on a hot path.
#[derive(Debug)]
pub(crate) struct StripedCounter {
    stripes: Box<[Stripe]>,
    overflow: AtomicU64,
}

impl Default for StripedCounter {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            overflow: AtomicU64::new(0),
        }
    }
}

impl StripedCounter {
    #[inline(always)]
    pub(crate) fn incr_at(&self, id: usize) {
        match self.stripes.get(id) {
            // Only the thread owning stripe `id` ever writes it (ids are
            // never reused), so load + store loses no count; readers sum
            // with Relaxed loads and may see a slightly old total.
            Some(s) => s.0.store(s.0.load(Relaxed).wrapping_add(1), Relaxed),
            None => {
                self.overflow.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn sum(&self) -> u64 {
        self.stripes.iter().map(|s| s.0.load(Relaxed)).sum::<u64>() + self.overflow.load(Relaxed)
    }
}

/// Slow-path counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: StripedCounter,
    pub(crate) misses: AtomicU64,
    pub(crate) merges: AtomicU64,
    pub(crate) merge_fallbacks: AtomicU64,
    pub(crate) monitor_invalidations: AtomicU64,
    pub(crate) unwatched: AtomicU64,
    pub(crate) doomed_retries: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) invalidations_idle: AtomicU64,
    pub(crate) invalidations_in_use: AtomicU64,
    pub(crate) registrations: AtomicU64,
    pub(crate) registration_failures: AtomicU64,
    pub(crate) deregistrations: AtomicU64,
    pub(crate) deregistration_failures: AtomicU64,
    pub(crate) enomem_retries: AtomicU64,
    pub(crate) uncached: AtomicU64,
    pub(crate) lost_races: AtomicU64,
    pub(crate) bytes_registered: AtomicU64,
    pub(crate) peak_bytes: AtomicU64,
    pub(crate) peak_regions: AtomicU64,
    pub(crate) registrar_ns: AtomicU64,
    pub(crate) monitor_ns: AtomicU64,
    pub(crate) verify_checks: AtomicU64,
    pub(crate) verify_mismatches: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// A snapshot of a cache's statistics. Counts are since the cache was
/// created; `*_bytes` are bytes; `registrar_ns` and `monitor_ns` are
/// wall-clock nanoseconds spent inside the registrar's and the invalidation
/// source's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Calls to `get` that returned a handle or an error (= hits + misses).
    pub gets: u64,
    /// Gets served by a cached region.
    pub hits: u64,
    /// Gets that found no cached region covering the request.
    pub misses: u64,
    /// Cached regions absorbed into a larger merged region.
    pub merges: u64,
    /// Misses where the merged region could not be registered or cached
    /// (too large, or the registrar refused it) and the request was
    /// registered alone, beside the regions it touches.
    pub merge_fallbacks: u64,
    /// The invalidation source in force.
    pub monitor: crate::MonitorKind,
    /// Regions invalidated by events from the source (included in the
    /// idle / in-use invalidation counts).
    pub monitor_invalidations: u64,
    /// Gets served uncached because the source could not watch the range
    /// (EBUSY: another userfaultfd owns the memory).
    pub unwatched: u64,
    /// Misses retried because an unmap hit the range while it was being
    /// registered.
    pub doomed_retries: u64,
    /// Idle regions evicted (limits reached, or the registrar out of
    /// resources).
    pub evictions: u64,
    /// Regions invalidated while idle (deregistered at once).
    pub invalidations_idle: u64,
    /// Regions invalidated while in use (deregistered on last release).
    pub invalidations_in_use: u64,
    /// Successful registrar `register` calls.
    pub registrations: u64,
    /// Failed registrar `register` calls (including ones retried after
    /// eviction).
    pub registration_failures: u64,
    /// Registrar `deregister` calls (successful or not).
    pub deregistrations: u64,
    /// Failed registrar `deregister` calls (counted and logged).
    pub deregistration_failures: u64,
    /// Retries of a registration after evicting on ENOMEM/EAGAIN.
    pub enomem_retries: u64,
    /// Gets served by a one-off registration outside the cache (over the
    /// limits with nothing evictable).
    pub uncached: u64,
    /// Registrations dropped because another thread cached the same range
    /// first.
    pub lost_races: u64,
    /// Regions in the cache now.
    pub regions: u64,
    /// Largest number of regions in the cache at once.
    pub peak_regions: u64,
    /// Bytes registered now (cached, in-use-invalidated and uncached).
    pub bytes_registered: u64,
    /// Largest `bytes_registered` seen.
    pub peak_bytes: u64,
    /// Nanoseconds spent in the registrar (register + deregister).
    pub registrar_ns: u64,
    /// Nanoseconds spent in the invalidation source's calls on slow paths
    /// (watching and unwatching ranges, draining events).
    pub monitor_ns: u64,
    /// Hits checked against the pages they registered
    /// ([`crate::Verify::Pfn`]; 0 when off).
    pub verify_checks: u64,
    /// Checked hits whose pages had changed: the region was invalidated
    /// and registered afresh (a stale registration the invalidation source
    /// missed).
    pub verify_mismatches: u64,
}

impl Stats {
    /// hits / gets, or 0 when there were no gets.
    pub fn hit_rate(&self) -> f64 {
        if self.gets == 0 {
            0.0
        } else {
            self.hits as f64 / self.gets as f64
        }
    }
}
