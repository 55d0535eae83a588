//! Statistics: counters kept by the cache, and the [`Stats`] snapshot.
//!
//! The hit path must not do a contended read-modify-write (a `lock xadd`
//! costs ~10 ns on this project's reference machine, a third of the hit
//! budget). Hits are therefore counted in per-thread *stripes*: each thread
//! gets its own cache-line-padded counter, which only it writes, with a
//! plain load and store. Threads beyond [`STRIPES`] share one atomic
//! counter. Everything else is counted on slow paths with `fetch_add`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Number of per-thread hit-counter stripes.
pub const STRIPES: usize = 64;

#[repr(align(128))]
#[derive(Debug, Default)]
struct Stripe(AtomicU64);

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

// In a `cdylib` (the C API) Rust's `thread_local!` uses the
// general-dynamic TLS model: every access calls `__tls_get_addr` in the
// dynamic loader (~11 instructions, four times per C get+release). Stable
// Rust cannot ask for `initial-exec`, so on x86-64 Linux the stripe lives
// in a TLS word of our own, defined in assembly and addressed the
// initial-exec way: one GOT load plus one `%fs`-relative load. The linker
// then marks the shared library `STATIC_TLS`: when it is `dlopen`ed (not
// just linked or preloaded), glibc places its *whole* TLS block (168 bytes
// for libregcache.so, most of it std's) in the static-TLS surplus, as for
// libGL or LTTng; the default surplus (`glibc.rtld.optional_static_tls`,
// 512 bytes) holds it. Checked: dlopen + get + release works. The feature `initial-exec-tls` turns this on (regcache-ffi
// does); without it, or elsewhere, `thread_local!`.
#[cfg(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux"
))]
mod ie_tls {
    std::arch::global_asm!(
        ".pushsection .tdata.regcache_thread_stripe,\"awT\",@progbits",
        ".globl regcache_thread_stripe_word",
        ".hidden regcache_thread_stripe_word",
        ".type regcache_thread_stripe_word,@object",
        ".size regcache_thread_stripe_word,8",
        ".p2align 3",
        "regcache_thread_stripe_word:",
        ".quad -1",
        ".popsection",
    );

    /// This thread's stripe word: `usize::MAX` until assigned.
    #[inline(always)]
    pub(super) fn word() -> *mut usize {
        let p: *mut usize;
        // SAFETY: initial-exec TLS access on x86-64 (System V TLS ABI,
        // Drepper "ELF Handling For Thread-Local Storage" §4.3.6): the GOT
        // entry holds the word's offset from the thread pointer, and
        // `%fs:0` holds the thread pointer itself. Reads memory only
        // (the GOT and the TCB), which is always mapped.
        unsafe {
            std::arch::asm!(
                "mov {p}, qword ptr [rip + regcache_thread_stripe_word@GOTTPOFF]",
                "add {p}, qword ptr fs:[0]",
                p = out(reg) p,
                // `nomem`: the two words read (the GOT entry, written once
                // by the loader, and the thread pointer) never change
                // while this thread runs, so the compiler may reuse the
                // result within a function.
                options(pure, nomem, nostack),
            );
        }
        p
    }
}

#[cfg(not(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux"
)))]
mod ie_tls {
    use std::cell::Cell;
    thread_local! {
        /// This thread's stripe word: `usize::MAX` until assigned.
        static WORD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    #[inline(always)]
    pub(super) fn word() -> *mut usize {
        WORD.with(|c| c.as_ptr())
    }
}

/// This thread's index: unique per thread for the life of the process
/// (never reused, so a structure indexed by it is written only by its
/// owner thread).
#[inline(always)]
pub fn thread_stripe() -> usize {
    let w = ie_tls::word();
    // SAFETY: `w` is this thread's own TLS word; only this thread reads or
    // writes it.
    let v = unsafe { w.read() };
    if v != usize::MAX {
        return v;
    }
    assign(w)
}

/// The calling thread, as a value that cannot leave it (`!Send`, `!Sync`):
/// look the per-thread index up once with [`this_thread`] and pass it to
/// several calls ([`crate::Cache::get_token_on`],
/// [`crate::Cache::release_token_on`]) instead of one TLS access each.
#[derive(Debug, Clone, Copy)]
pub struct ThisThread {
    index: usize,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ThisThread {
    /// The thread's index ([`thread_stripe`]): unique per thread, never
    /// reused.
    #[inline(always)]
    pub fn index(self) -> usize {
        self.index
    }
}

/// The calling thread; see [`ThisThread`].
#[inline(always)]
pub fn this_thread() -> ThisThread {
    ThisThread {
        index: thread_stripe(),
        _not_send: std::marker::PhantomData,
    }
}

#[cold]
fn assign(w: *mut usize) -> usize {
    let id = NEXT_THREAD.fetch_add(1, Relaxed);
    // SAFETY: as in `thread_stripe`.
    unsafe { w.write(id) };
    id
}

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
