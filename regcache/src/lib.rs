//! # regcache — a memory-registration cache for RDMA
//!
//! An MPI library moving a large message over InfiniBand or RoCE must
//! register the user's buffer with the NIC (`ibv_reg_mr`: pin the pages,
//! program the NIC's translation tables), which costs 10–100 µs and more for
//! large buffers. [`Cache`] keeps registrations alive and hands them out
//! again while the memory stays mapped ("leave pinned").
//!
//! ## Quick start
//!
//! ```
//! use regcache::{AccessFlags, AddrRange, Cache, Config, PinRegistrar};
//!
//! let cache = Cache::new(PinRegistrar::new(), Config::default());
//! let buf = vec![0u8; 1 << 16];
//! let range = AddrRange::from_buffer(buf.as_ptr(), buf.len())?;
//!
//! let h = cache.get(range, AccessFlags::LOCAL_WRITE)?; // miss: registers
//! assert!(h.range().contains(&range));
//! drop(h);                                              // release
//! let h = cache.get(range, AccessFlags::LOCAL_WRITE)?; // hit
//! drop(h);
//! assert_eq!((cache.stats().hits, cache.stats().misses), (1, 1));
//!
//! // The application is about to free the buffer: invalidate first.
//! cache.invalidate(range);
//! drop(buf);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Features
//! - Interval index over page-aligned regions; a request is a hit when a
//!   cached region covers it with at least the requested [`AccessFlags`].
//! - Merging of overlapping and adjacent regions on a miss ([`Config::merge`]:
//!   `adaptive` by default, merging as UCX does except across boundaries
//!   where an unmap once killed a merged neighbour; `on`; `off`, where
//!   overlapping regions coexist).
//! - Reference-counted [`Handle`]s; exact LRU over idle regions (or
//!   cost-aware eviction, [`Config::eviction`]); finite
//!   default limits on regions and bytes ([`Config`]); eviction and retry
//!   when the registrar runs out of resources (ENOMEM/EAGAIN); a one-off
//!   uncached registration when over the limits with nothing evictable.
//! - [`Cache::invalidate`]: regions overlapping an unmapped range leave the
//!   index at once; idle ones are deregistered, in-use ones on last release.
//! - [`Stats`]: gets, hits, misses, merges, evictions, invalidations,
//!   registrations, bytes, peaks, uncached fallbacks.
//! - Registrars: [`PinRegistrar`] (`mlock`, for hosts with no RDMA device);
//!   any [`Registrar`] implementation.
//! - [`Cache::get_token`]: a cached hit as an 8-byte `Copy` [`Token`] (slot
//!   index + incarnation) instead of a [`RawHandle`], for callers that keep
//!   their own per-handle state (the C API's handle table).
//! - Cargo feature `initial-exec-tls`: keep the per-thread index
//!   ([`thread_stripe`]) in initial-exec TLS on x86-64 Linux, for builds
//!   into a shared library, where `thread_local!` calls `__tls_get_addr`.
//!
//! ## System requirements
//! Linux. The pin registrar is limited by `RLIMIT_MEMLOCK` (`ulimit -l`)
//! unless the process has `CAP_IPC_LOCK`.
//!
//! ## Thread safety
//! [`Cache`] is `Send + Sync`. Hits take no lock: one compare-and-swap on
//! the region's state word, and a per-thread statistics counter. Misses
//! register outside the index lock and re-check before inserting, so two
//! threads missing on the same range cache it once (the loser's
//! registration is dropped and counted in [`Stats::lost_races`]).
//!
//! ## Resource cleanup
//! Dropping a [`Handle`] releases it. Dropping the [`Cache`] deregisters
//! every cached region. **Invariant:** a registration with a nonzero
//! in-use count is never deregistered by the cache. Deregistration failures
//! are counted ([`Stats::deregistration_failures`]) and logged, never a
//! panic.
//!
//! ## For the detail-oriented
//! The journey of a get is told in the module docs of `src/cache/`:
//! `mod.rs` gives the overview, then the hit and deferred release
//! (`deferred.rs`), the slot state word (`slot.rs`), the miss (`miss.rs`),
//! the interval index, LRU and eviction (`index.rs`), and invalidation
//! (`invalidate.rs`). The per-thread index is in `src/thread.rs`.
//!
//! ### Hit-path costs
//! Measured with `cargo bench -p regcache-bench --bench cache` (criterion);
//! see `docs/RESULTS.md`.

// Under `cfg(loom)` the crate is only its model-checked protocols (the
// slot state word and the deferred-release tables) and their loom models:
// umn has no `Notifier` under loom, so there is no cache to build. See
// `sync.rs`.
#[cfg(loom)]
#[path = "cache"]
mod cache {
    #![allow(dead_code, unreachable_pub)]
    pub(crate) mod deferred;
    #[cfg(test)]
    mod loom_models;
    pub(crate) mod state;
}

mod sync;

/// Applies `#[cfg(not(loom))]` to each item: the whole cache, which the
/// loom build leaves out.
macro_rules! not_loom {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}

not_loom! {
    mod access;
    mod cache;
    mod config;
    mod pin;
    mod registrar;
    mod stats;
    mod sys;
    mod thread;
    mod verbs;

    pub use access::{AccessFlags, Keys, LKey, RKey};
    pub use cache::{
        COST_WINDOW, Cache, CacheError, DEFERRED, Got, Handle, InvalidationObserver, RawHandle,
        RegionInfo, Token, registration_cost_ns,
    };
    pub use config::{Config, ConfigError, Eviction, Merge, MonitorKind, Verify, parse_size};
    pub use pin::{PinRegistrar, PinnedRegion};
    pub use registrar::{
        AnyRegion, AnyRegistrar, Registrar, RegistrarError, RegistrarKind, UserRegion,
        open_registrar,
    };
    pub use stats::Stats;
    pub use thread::{STRIPES, ThisThread, this_thread, thread_stripe};
    pub use umn::{AddrRange, RangeError, page_size};
    pub use verbs::{CallerPd, MemoryRegion, ProtectionDomain, RdmaDevice, VerbsRegistrar};
}
