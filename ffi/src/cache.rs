//! `regcache_cache_*` and `regcache_handle_*`: the registration cache.

use crate::handles::{self, Held};
use crate::result::{Error, ffi_guard, regcache_result, write_out};
use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, Config, Got, MonitorKind, RegistrarKind, Stats,
};
use regcache_result::*;
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire};

const LIVE: u64 = 0x7265_6763_6163_6865; // "regcache"
const DEAD: u64 = 0xdead_0000_dead_0000;

/// Which registrar a cache registers with (`regcache_config.registrar`,
/// `REGCACHE_REGISTRAR=auto|pin|verbs`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_registrar {
    /// ibverbs when an RDMA device is present, else `pin`.
    REGCACHE_REGISTRAR_AUTO = 0,
    /// `mlock` pinning (no keys).
    REGCACHE_REGISTRAR_PIN = 1,
    /// ibverbs `ibv_reg_mr` on the closest (or `REGCACHE_RDMA_DEVICE`) device.
    REGCACHE_REGISTRAR_VERBS = 2,
}

/// Which invalidation source feeds a cache or notifier
/// (`regcache_config.monitor`, `REGCACHE_MONITOR`, `regcache_notifier_open`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_monitor {
    /// The kernel device if present, else userfaultfd.
    REGCACHE_MONITOR_AUTO = 0,
    /// `/dev/ummunotify`.
    REGCACHE_MONITOR_KERNEL = 1,
    /// userfaultfd with a monitor thread.
    REGCACHE_MONITOR_UFFD = 2,
    /// Only what the host reports with `*_notify_unmapped`.
    REGCACHE_MONITOR_EXTERNAL = 3,
    /// No invalidation source (caches only; the host must call
    /// `regcache_cache_notify_unmapped` before memory goes away).
    REGCACHE_MONITOR_NONE = 4,
}

/// Access flags for `regcache_cache_get`, with the values of `enum
/// ibv_access_flags`. Combine with `|`.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_access {
    /// `IBV_ACCESS_LOCAL_WRITE`.
    REGCACHE_ACCESS_LOCAL_WRITE = 1,
    /// `IBV_ACCESS_REMOTE_WRITE`.
    REGCACHE_ACCESS_REMOTE_WRITE = 2,
    /// `IBV_ACCESS_REMOTE_READ`.
    REGCACHE_ACCESS_REMOTE_READ = 4,
    /// `IBV_ACCESS_REMOTE_ATOMIC`.
    REGCACHE_ACCESS_REMOTE_ATOMIC = 8,
}

/// Cache configuration. Fill with `regcache_config_default` or
/// `regcache_config_from_env`, then adjust.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct regcache_config {
    /// Maximum cached regions (≥ 1). `REGCACHE_MAX_REGIONS`.
    pub max_regions: u64,
    /// Maximum bytes in cached regions (≥ 1). `REGCACHE_MAX_BYTES`.
    pub max_bytes: u64,
    /// Merge overlapping and adjacent regions (0 or 1). `REGCACHE_MERGE`.
    pub merge: u32,
    /// A `regcache_registrar` value. `REGCACHE_REGISTRAR`.
    pub registrar: u32,
    /// A `regcache_monitor` value. `REGCACHE_MONITOR`.
    pub monitor: u32,
    /// Reserved; must be 0.
    pub reserved: u32,
}

/// Cache statistics (`regcache_cache_stats`). Counts since creation;
/// `*_bytes` in bytes; `registrar_ns` in nanoseconds.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct regcache_stats {
    /// Gets that returned a handle or a registration error (hits + misses).
    pub gets: u64,
    /// Gets served by a cached region.
    pub hits: u64,
    /// Gets that found no covering region.
    pub misses: u64,
    /// Regions absorbed into a merged region.
    pub merges: u64,
    /// Merged registrations that fell back to the request alone.
    pub merge_fallbacks: u64,
    /// Idle regions evicted.
    pub evictions: u64,
    /// Regions invalidated while idle.
    pub invalidations_idle: u64,
    /// Regions invalidated while in use.
    pub invalidations_in_use: u64,
    /// Successful registrations.
    pub registrations: u64,
    /// Failed registrations.
    pub registration_failures: u64,
    /// Deregistrations.
    pub deregistrations: u64,
    /// Failed deregistrations.
    pub deregistration_failures: u64,
    /// Registration retries after eviction on ENOMEM/EAGAIN.
    pub enomem_retries: u64,
    /// Gets served by a one-off registration outside the cache.
    pub uncached: u64,
    /// Registrations dropped because another thread cached the range first.
    pub lost_races: u64,
    /// Regions cached now.
    pub regions: u64,
    /// Most regions cached at once.
    pub peak_regions: u64,
    /// Bytes registered now.
    pub bytes_registered: u64,
    /// Most bytes registered at once.
    pub peak_bytes: u64,
    /// Nanoseconds spent registering and deregistering.
    pub registrar_ns: u64,
    /// Regions invalidated by the invalidation source (events and
    /// `regcache_cache_notify_unmapped`).
    pub monitor_invalidations: u64,
    /// Gets served uncached because the source could not watch the memory
    /// (e.g. another userfaultfd owns it).
    pub unwatched: u64,
    /// Registrations retried because their memory changed while they were
    /// being registered.
    pub doomed_retries: u64,
    /// Nanoseconds spent in the invalidation source (draining events).
    pub monitor_ns: u64,
}

impl From<Stats> for regcache_stats {
    fn from(s: Stats) -> Self {
        Self {
            gets: s.gets,
            hits: s.hits,
            misses: s.misses,
            merges: s.merges,
            merge_fallbacks: s.merge_fallbacks,
            evictions: s.evictions,
            invalidations_idle: s.invalidations_idle,
            invalidations_in_use: s.invalidations_in_use,
            registrations: s.registrations,
            registration_failures: s.registration_failures,
            deregistrations: s.deregistrations,
            deregistration_failures: s.deregistration_failures,
            enomem_retries: s.enomem_retries,
            uncached: s.uncached,
            lost_races: s.lost_races,
            regions: s.regions,
            peak_regions: s.peak_regions,
            bytes_registered: s.bytes_registered,
            peak_bytes: s.peak_bytes,
            registrar_ns: s.registrar_ns,
            monitor_invalidations: s.monitor_invalidations,
            unwatched: s.unwatched,
            doomed_retries: s.doomed_retries,
            monitor_ns: s.monitor_ns,
        }
    }
}

/// A registration cache (opaque). Create with `regcache_cache_new`,
/// destroy with `regcache_cache_destroy`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct regcache_cache {
    _private: [u8; 0],
}

/// A registration obtained from `regcache_cache_get` (opaque, never
/// dereferenced: the value names an entry of the library's handle table).
/// Release with `regcache_handle_release`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct regcache_handle {
    _private: [u8; 0],
}

/// What a `regcache_cache *` points to. Never freed: after destroy it is a
/// tombstone with `magic == DEAD`, so a destroyed cache used again answers
/// `REGCACHE_ERR_DESTROYED` (16 bytes per cache ever created, reachable
/// from `TOMBSTONES`).
#[derive(Debug)]
pub(crate) struct CacheObj {
    magic: AtomicU64,
    inner: std::sync::atomic::AtomicPtr<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cache: Cache<AnyRegistrar>,
    pub(crate) kind: RegistrarKind,
}

impl Inner {
    /// Release what a handle-table entry held.
    ///
    /// # Safety
    /// `held` was produced by this cache and is released once.
    #[inline(always)]
    pub(crate) unsafe fn release(&self, me: regcache::ThisThread, held: Held) {
        match held {
            Held::Token(t) => {
                // SAFETY: contract; the entry's generation guarantees a
                // single release, so the check cannot fail (it would mean
                // the token was already released: nothing is changed).
                let ok = unsafe { self.cache.release_token_on(me, t) };
                debug_assert!(ok, "token of a live handle was stale");
            }
            // SAFETY: contract.
            Held::Raw(raw) => unsafe { self.cache.release_raw(*raw) },
        }
    }
}

static TOMBSTONES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The live cache behind `c`.
///
/// # Safety
/// `c` is NULL or a pointer returned by `regcache_cache_new`, and not
/// destroyed concurrently with this call.
#[inline(always)]
pub(crate) unsafe fn live<'a>(c: *const regcache_cache) -> Result<&'a Inner, Error> {
    if c.is_null() {
        return Err(Error::null("cache"));
    }
    // SAFETY: non-NULL pointers come from regcache_cache_new (contract);
    // the CacheObj they point to is never freed.
    let obj = unsafe { &*c.cast::<CacheObj>() };
    if obj.magic.load(Acquire) != LIVE {
        return Err(Error::new(
            REGCACHE_ERR_DESTROYED,
            "the cache was destroyed (or is not a cache)",
        ));
    }
    // SAFETY: LIVE means `inner` is the Box made by regcache_cache_new and
    // not yet freed (destroy clears LIVE first; no concurrent destroy).
    Ok(unsafe { &*obj.inner.load(Acquire) })
}

fn kind_of(v: u32) -> Option<RegistrarKind> {
    Some(match v {
        0 => RegistrarKind::Auto,
        1 => RegistrarKind::Pin,
        2 => RegistrarKind::Verbs,
        _ => return None,
    })
}

pub(crate) fn monitor_of(v: u32) -> Option<regcache_monitor> {
    use regcache_monitor::*;
    Some(match v {
        0 => REGCACHE_MONITOR_AUTO,
        1 => REGCACHE_MONITOR_KERNEL,
        2 => REGCACHE_MONITOR_UFFD,
        3 => REGCACHE_MONITOR_EXTERNAL,
        4 => REGCACHE_MONITOR_NONE,
        _ => return None,
    })
}

fn monitor_to_c(m: MonitorKind) -> regcache_monitor {
    use regcache_monitor::*;
    match m {
        MonitorKind::Auto => REGCACHE_MONITOR_AUTO,
        MonitorKind::Kernel => REGCACHE_MONITOR_KERNEL,
        MonitorKind::Uffd => REGCACHE_MONITOR_UFFD,
        MonitorKind::External => REGCACHE_MONITOR_EXTERNAL,
        _ => REGCACHE_MONITOR_NONE,
    }
}

fn monitor_from_c(m: regcache_monitor) -> MonitorKind {
    use regcache_monitor::*;
    match m {
        REGCACHE_MONITOR_AUTO => MonitorKind::Auto,
        REGCACHE_MONITOR_KERNEL => MonitorKind::Kernel,
        REGCACHE_MONITOR_UFFD => MonitorKind::Uffd,
        REGCACHE_MONITOR_EXTERNAL => MonitorKind::External,
        REGCACHE_MONITOR_NONE => MonitorKind::None,
    }
}

fn default_config() -> regcache_config {
    let c = Config::default();
    regcache_config {
        max_regions: c.max_regions as u64,
        max_bytes: c.max_bytes,
        merge: c.merge as u32,
        registrar: regcache_registrar::REGCACHE_REGISTRAR_AUTO as u32,
        monitor: monitor_to_c(c.monitor) as u32,
        reserved: 0,
    }
}

fn env_config() -> Result<regcache_config, Error> {
    let env_err = |e: String| Error::new(REGCACHE_ERR_CONFIG_ENV, e);
    let c = Config::from_env().map_err(|e| env_err(e.to_string()))?;
    let mut out = default_config();
    out.max_regions = c.max_regions as u64;
    out.max_bytes = c.max_bytes;
    out.merge = c.merge as u32;
    if let Ok(v) = std::env::var("REGCACHE_REGISTRAR") {
        out.registrar = match v.trim() {
            "auto" => 0,
            "pin" => 1,
            "verbs" => 2,
            _ => {
                return Err(env_err(format!(
                    "REGCACHE_REGISTRAR={v:?} is not valid: expected one of auto, pin, verbs"
                )));
            }
        };
    }
    out.monitor = monitor_to_c(c.monitor) as u32;
    Ok(out)
}

/// Fill `out` with the built-in defaults (no environment).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`.
///
/// # Safety
/// `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_config_default(out: *mut regcache_config) -> regcache_result {
    // SAFETY: out is NULL or writable (contract).
    ffi_guard(|| unsafe { write_out(out, "out", default_config()) })
}

/// Fill `out` with the defaults overridden by `REGCACHE_MAX_REGIONS`,
/// `REGCACHE_MAX_BYTES`, `REGCACHE_MERGE`, `REGCACHE_REGISTRAR` and
/// `REGCACHE_MONITOR` where set.
///
/// # Errors
/// `REGCACHE_ERR_CONFIG_ENV` for a malformed variable: `regcache_last_error`
/// names the variable, its value and what is accepted; `out` is untouched.
///
/// # Safety
/// `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_config_from_env(out: *mut regcache_config) -> regcache_result {
    ffi_guard(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let c = env_config()?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { write_out(out, "out", c) }
    })
}

/// Create a cache with `config`, or with `regcache_config_from_env` when
/// `config` is NULL. On success `*out` is the new cache.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`out`), `REGCACHE_ERR_INVALID_ARGUMENT`
/// (zero limit, `merge` not 0/1, unknown registrar or monitor, nonzero
/// `reserved`), `REGCACHE_ERR_CONFIG_ENV`, `REGCACHE_ERR_UNAVAILABLE` (the
/// registrar or monitor asked for is not here).
///
/// # Safety
/// `config` is NULL or valid for reads; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_new(
    config: *const regcache_config,
    out: *mut *mut regcache_cache,
) -> regcache_result {
    ffi_guard(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let c = if config.is_null() {
            env_config()?
        } else {
            // SAFETY: non-NULL config is readable (contract).
            unsafe { config.read() }
        };
        let bad = |what: String| Error::new(REGCACHE_ERR_INVALID_ARGUMENT, what);
        if c.max_regions == 0 || c.max_bytes == 0 {
            return Err(bad("max_regions and max_bytes must be at least 1".into()));
        }
        if c.merge > 1 || c.reserved != 0 {
            return Err(bad(format!(
                "merge must be 0 or 1 (is {}), reserved must be 0 (is {})",
                c.merge, c.reserved
            )));
        }
        let kind = kind_of(c.registrar)
            .ok_or_else(|| bad(format!("unknown registrar {}", c.registrar)))?;
        let monitor =
            monitor_of(c.monitor).ok_or_else(|| bad(format!("unknown monitor {}", c.monitor)))?;
        let device = std::env::var("REGCACHE_RDMA_DEVICE").ok();
        let registrar = regcache::open_registrar(kind, device.as_deref())?;
        let config = Config {
            max_regions: usize::try_from(c.max_regions).unwrap_or(usize::MAX),
            max_bytes: c.max_bytes,
            merge: c.merge == 1,
            monitor: monitor_from_c(monitor),
        };
        let cache = Cache::try_new(registrar, config)?;
        let inner = Box::new(Inner { cache, kind });
        let obj = Box::leak(Box::new(CacheObj {
            magic: AtomicU64::new(LIVE),
            inner: std::sync::atomic::AtomicPtr::new(Box::into_raw(inner)),
        }));
        TOMBSTONES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(obj as *mut CacheObj as usize);
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { write_out(out, "out", (obj as *mut CacheObj).cast::<regcache_cache>()) }
    })
}

/// Destroy a cache: every handle still out is released (and becomes stale),
/// every registration is deregistered. Using `cache` afterwards returns
/// `REGCACHE_ERR_DESTROYED`.
///
/// Must not run concurrently with any other call on the same cache or its
/// handles.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED` (destroyed twice).
///
/// # Safety
/// `cache` is NULL or a pointer returned by `regcache_cache_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_destroy(cache: *mut regcache_cache) -> regcache_result {
    ffi_guard(|| {
        if cache.is_null() {
            return Err(Error::null("cache"));
        }
        // SAFETY: from regcache_cache_new (contract); never freed.
        let obj = unsafe { &*cache.cast::<CacheObj>() };
        if obj
            .magic
            .compare_exchange(LIVE, DEAD, AcqRel, Acquire)
            .is_err()
        {
            return Err(Error::new(
                REGCACHE_ERR_DESTROYED,
                "the cache was already destroyed",
            ));
        }
        let inner = obj.inner.swap(std::ptr::null_mut(), AcqRel);
        // SAFETY: the LIVE→DEAD transition is ours, so we own the Box made
        // by regcache_cache_new; no other call runs on this cache (contract).
        let inner = unsafe { Box::from_raw(inner) };
        for held in handles::drain_cache(&*inner) {
            // SAFETY: these tokens and raw handles were produced by this
            // cache and are released once (their entries are now stale).
            unsafe { inner.release(regcache::this_thread(), held) };
        }
        drop(inner);
        Ok(())
    })
}

/// Get a registration covering `[addr, addr + len)` with at least `access`
/// (`regcache_access` bits). A hit takes no lock and makes no system call;
/// a miss registers (10–100 µs with ibverbs). On success `*out` is a handle
/// to release with `regcache_handle_release`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`cache`, `out`), `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_INVALID_RANGE` (`addr` NULL, `len` 0, overflow),
/// `REGCACHE_ERR_INVALID_ARGUMENT` (unknown access bits),
/// `REGCACHE_ERR_NOT_MAPPED`, `REGCACHE_ERR_NO_RESOURCES`,
/// `REGCACHE_ERR_ACCESS_REFUSED`, `REGCACHE_ERR_REGISTRAR`.
///
/// # Safety
/// `cache` is NULL or from `regcache_cache_new`; `out` is NULL or valid for
/// a write. The memory is not unmapped while the NIC uses the handle's keys.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_get(
    cache: *const regcache_cache,
    addr: *const c_void,
    len: usize,
    access: u32,
    out: *mut *mut regcache_handle,
) -> regcache_result {
    // SAFETY: the export's contract, passed on.
    if unsafe { get_fast(cache, addr, len, access, out) } {
        return REGCACHE_OK;
    }
    // SAFETY: as above.
    unsafe { get_slow(cache, addr, len, access, out) }
}

/// The hit path of `regcache_cache_get`, outside `catch_unwind` so that
/// the export stays a small function with few live registers. `true`
/// when it wrote `*out`; `false`, having changed nothing, for anything
/// else (errors, misses, a purge or monitor events to apply, an empty hot
/// cell), which [`get_slow`] then handles from scratch.
///
/// Why no panic can start here (the panic boundary is `get_slow`'s): every
/// step is a NULL or magic check, `AddrRange::from_buffer` and
/// `AccessFlags::from_bits` (return `Result`/`Option`, no allocation),
/// `this_thread` (an initial-exec TLS load; its cold first-use branch is a
/// `fetch_add` and a store), `handles::has_hot` / `take_hot` (slice
/// `get`, no indexing), `Cache::try_hit_token_on` (documented panic-free:
/// atomics and `Option` lookups only) and `Slot::publish` (stores). None
/// allocates, locks, indexes or unwraps.
///
/// # Safety
/// As `regcache_cache_get`.
#[inline(always)]
unsafe fn get_fast(
    cache: *const regcache_cache,
    addr: *const c_void,
    len: usize,
    access: u32,
    out: *mut *mut regcache_handle,
) -> bool {
    if cache.is_null() || out.is_null() {
        return false;
    }
    // SAFETY: non-NULL pointers come from regcache_cache_new (contract);
    // the CacheObj they point to is never freed.
    let obj = unsafe { &*cache.cast::<CacheObj>() };
    if obj.magic.load(Acquire) != LIVE {
        return false;
    }
    // SAFETY: LIVE means `inner` is the Box made by regcache_cache_new and
    // not yet freed (destroy clears LIVE first; no concurrent destroy).
    let inner = unsafe { &*obj.inner.load(Acquire) };
    let Ok(range) = AddrRange::from_buffer(addr.cast(), len) else {
        return false;
    };
    let Some(access) = AccessFlags::from_bits(access) else {
        return false;
    };
    let me = regcache::this_thread();
    if !handles::has_hot(me) {
        return false;
    }
    let Some(t) = inner.cache.try_hit_token_on(me, range, access) else {
        return false;
    };
    // `has_hot` said yes and nothing in between touched the handle table
    // (the cache knows nothing of it), so this cannot fail; if it ever
    // did, the reference just taken could not be accounted for: abort
    // (not a panic, which must not cross the C boundary).
    let Some(slot) = handles::take_hot(me) else {
        std::process::abort()
    };
    let h = slot.publish(inner, Held::Token(t));
    // SAFETY: out is non-NULL and writable (contract).
    unsafe { out.write(h as *mut regcache_handle) };
    true
}

/// Everything `get_fast` does not do, with the panic boundary.
///
/// # Safety
/// As `regcache_cache_get`.
#[cold]
#[inline(never)]
unsafe fn get_slow(
    cache: *const regcache_cache,
    addr: *const c_void,
    len: usize,
    access: u32,
    out: *mut *mut regcache_handle,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let range = AddrRange::from_buffer(addr.cast(), len)?;
        let Some(access) = AccessFlags::from_bits(access) else {
            return Err(Error::new(
                REGCACHE_ERR_INVALID_ARGUMENT,
                format!("unknown access bits {access:#x}"),
            ));
        };
        // One TLS access for the whole call (the handle table's free stack
        // and the cache's deferred table are both per thread).
        let me = regcache::this_thread();
        let Some(slot) = handles::reserve(me) else {
            return Err(Error::new(
                REGCACHE_ERR_NO_RESOURCES,
                "no free handle: the handle table is full (4 Mi handles out, fewer under an address-space limit) or could not be mapped",
            ));
        };
        match inner.cache.get_token_on(me, range, access) {
            Ok(got) => {
                let held = match got {
                    Got::Cached(t) => Held::Token(t),
                    Got::Uncached(raw) => Held::Raw(Box::new(raw)),
                };
                let h = slot.publish(inner, held);
                // SAFETY: out is non-NULL and writable (contract).
                unsafe { out.write(h as *mut regcache_handle) };
                Ok(())
            }
            Err(e) => {
                slot.abandon();
                Err(e.into())
            }
        }
    })
}

/// Release a handle. Afterwards the handle is stale: releasing it again, or
/// using it, returns `REGCACHE_ERR_STALE_HANDLE`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_STALE_HANDLE`.
///
/// # Safety
/// `handle` is NULL or a value from `regcache_cache_get`; it is not
/// released by two threads at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_handle_release(handle: *mut regcache_handle) -> regcache_result {
    // SAFETY: the export's contract, passed on.
    if unsafe { release_fast(handle) } {
        return REGCACHE_OK;
    }
    // SAFETY: as above.
    unsafe { release_slow(handle) }
}

/// The common case of `regcache_handle_release`, outside `catch_unwind`
/// (see [`get_fast`]): a live handle holding a token whose reference goes
/// straight into this thread's deferred table, the entry into its hot
/// cell or free stack. `false`, having changed nothing, otherwise (NULL,
/// stale, a one-off registration, a region no longer LIVE, a deferred
/// entry to displace, a full free stack): [`release_slow`] handles those.
///
/// Why no panic can start here: `handles::lookup_idx` (decode and slice
/// `get`s), `Entry::token`, `handles::can_free_fast`,
/// `Cache::try_release_token_fast` (documented panic-free) and
/// `Entry::take_fast` (stores, slice `get`) neither allocate, lock, index
/// nor unwrap.
///
/// # Safety
/// As `regcache_handle_release`.
#[inline(always)]
unsafe fn release_fast(handle: *mut regcache_handle) -> bool {
    let Some((e, idx)) = handles::lookup_idx(handle as usize) else {
        return false;
    };
    // SAFETY: caller holds the live handle and does not release it
    // concurrently (contract).
    let Some(t) = (unsafe { e.token() }) else {
        return false;
    };
    let me = regcache::this_thread();
    if !handles::can_free_fast(me) {
        return false;
    }
    // SAFETY: the entry is live, so its cache was not destroyed (destroy
    // drains its handles first, and is not concurrent: contract).
    let inner = unsafe { &*e.cache() };
    // SAFETY: the entry records the cache that produced the token, and the
    // generation bump below makes this the only release.
    if !unsafe { inner.cache.try_release_token_fast(me, t) } {
        return false;
    }
    // SAFETY: as for `e.token()`; `idx` is the entry's index.
    unsafe { e.take_fast(me, idx) };
    true
}

/// Everything `release_fast` does not do, with the panic boundary.
///
/// # Safety
/// As `regcache_handle_release`.
#[cold]
#[inline(never)]
unsafe fn release_slow(handle: *mut regcache_handle) -> regcache_result {
    ffi_guard(|| {
        let e = entry_of(handle)?;
        // SAFETY: the entry is live, so its cache was not destroyed (destroy
        // drains its handles first, and is not concurrent: contract).
        let inner = unsafe { &*e.cache() };
        let me = regcache::this_thread();
        // SAFETY: caller holds the handle and does not release it
        // concurrently (contract).
        let held = unsafe { e.take(me, handle as usize) };
        // SAFETY: the entry records the cache that produced `held`, and
        // the generation bump in `take` makes this the only release.
        unsafe { inner.release(me, held) };
        Ok(())
    })
}

#[inline(always)]
fn entry_of(h: *const regcache_handle) -> Result<&'static handles::Entry, Error> {
    if h.is_null() {
        return Err(Error::null("handle"));
    }
    handles::lookup(h as usize).ok_or_else(|| {
        Error::new(
            REGCACHE_ERR_STALE_HANDLE,
            format!("handle {h:p} was released, its cache destroyed, or it is not a handle"),
        )
    })
}

/// What a live C handle names: its range, keys, and whether it is cached.
struct Info {
    range: AddrRange,
    keys: Option<regcache::Keys>,
    cached: bool,
}

/// The registration behind a live C handle.
fn with_raw<T>(h: *const regcache_handle, f: impl FnOnce(&Info) -> T) -> Result<T, Error> {
    let e = entry_of(h)?;
    // SAFETY: live entry; the caller does not release it concurrently.
    let info = match unsafe { e.held() } {
        Held::Token(t) => {
            // SAFETY: the entry is live, so its cache was not destroyed
            // (destroy drains its handles first, and is not concurrent).
            let inner = unsafe { &*e.cache() };
            // SAFETY: the handle holds the token's reference.
            let (range, keys) = unsafe { inner.cache.token_info(*t) };
            Info {
                range,
                keys,
                cached: true,
            }
        }
        Held::Raw(r) => Info {
            range: r.range(),
            keys: r.keys(),
            cached: r.is_cached(),
        },
    };
    Ok(f(&info))
}

/// The registration's local key.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_STALE_HANDLE`,
/// `REGCACHE_ERR_NO_KEYS` (the pin registrar).
///
/// # Safety
/// `handle` as for `regcache_handle_release`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_handle_lkey(
    handle: *const regcache_handle,
    out: *mut u32,
) -> regcache_result {
    ffi_guard(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let keys = with_raw(handle, |r| r.keys)?;
        let k = keys.ok_or_else(|| Error::new(REGCACHE_ERR_NO_KEYS, "registrar has no keys"))?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { write_out(out, "out", k.lkey.0) }
    })
}

/// The registration's remote key.
///
/// # Errors
/// As `regcache_handle_lkey`.
///
/// # Safety
/// As `regcache_handle_lkey`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_handle_rkey(
    handle: *const regcache_handle,
    out: *mut u32,
) -> regcache_result {
    ffi_guard(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let keys = with_raw(handle, |r| r.keys)?;
        let k = keys.ok_or_else(|| Error::new(REGCACHE_ERR_NO_KEYS, "registrar has no keys"))?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { write_out(out, "out", k.rkey.0) }
    })
}

/// The registered range: `*out_start` its first byte, `*out_len` its length
/// in bytes (page-aligned, covering the request).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_STALE_HANDLE`.
///
/// # Safety
/// `handle` as for `regcache_handle_release`; outputs NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_handle_range(
    handle: *const regcache_handle,
    out_start: *mut usize,
    out_len: *mut usize,
) -> regcache_result {
    ffi_guard(|| {
        if out_start.is_null() || out_len.is_null() {
            return Err(Error::null("out_start/out_len"));
        }
        let r = with_raw(handle, |r| r.range)?;
        // SAFETY: both non-NULL and writable (contract).
        unsafe {
            out_start.write(r.start() as usize);
            out_len.write(r.len() as usize);
        }
        Ok(())
    })
}

/// Whether the registration is cached (`true`) or a one-off outside the
/// cache (over the limits with nothing evictable).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_STALE_HANDLE`.
///
/// # Safety
/// `handle` as for `regcache_handle_release`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_handle_is_cached(
    handle: *const regcache_handle,
    out: *mut bool,
) -> regcache_result {
    ffi_guard(|| {
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let c = with_raw(handle, |r| r.cached)?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { write_out(out, "out", c) }
    })
}

/// Report that `[addr, addr + len)` is unmapped or freed, or no longer
/// holds the same pages (for a host with its own memory hooks; required
/// with `REGCACHE_MONITOR_EXTERNAL` and `NONE`). Cached regions overlapping
/// it can no longer be hit.
///
/// With an invalidation source open this only records the range: it takes
/// no lock, allocates nothing and may be called from inside a memory hook;
/// the regions are invalidated by the next get on any thread. With
/// `REGCACHE_MONITOR_NONE` it invalidates at once (idle regions are
/// deregistered on the calling thread) and must not be called from a hook.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_INVALID_RANGE`, `REGCACHE_ERR_FORKED` (a fork child).
///
/// # Safety
/// `cache` as for `regcache_cache_get`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_notify_unmapped(
    cache: *const regcache_cache,
    addr: *const c_void,
    len: usize,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        let range = AddrRange::from_buffer(addr.cast(), len)?;
        inner.cache.notify_unmapped(range)?;
        Ok(())
    })
}

/// Deregister every idle cached region; `*out_evicted` receives how many.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `cache` as for `regcache_cache_get`; `out_evicted` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_flush(
    cache: *const regcache_cache,
    out_evicted: *mut usize,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        if out_evicted.is_null() {
            return Err(Error::null("out_evicted"));
        }
        inner.cache.quiesce();
        let n = inner.cache.flush();
        // SAFETY: non-NULL and writable (contract).
        unsafe { write_out(out_evicted, "out_evicted", n) }
    })
}

/// Give back the calling thread's deferred references (each thread keeps up
/// to 2 released registrations referenced so that a repeat get is a hit
/// without an atomic read-modify-write). Call when a thread stops using the
/// cache, or before `fork`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `cache` as for `regcache_cache_get`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_quiesce(cache: *const regcache_cache) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        unsafe { live(cache) }?.cache.quiesce();
        Ok(())
    })
}

/// A snapshot of the cache's statistics.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `cache` as for `regcache_cache_get`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_stats(
    cache: *const regcache_cache,
    out: *mut regcache_stats,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        if out.is_null() {
            return Err(Error::null("out"));
        }
        let s = inner.cache.stats().into();
        // SAFETY: non-NULL and writable (contract).
        unsafe { write_out(out, "out", s) }
    })
}

/// The invalidation source the cache uses (a `regcache_monitor` value;
/// never `AUTO`: what `AUTO` chose).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `cache` as for `regcache_cache_get`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_monitor(
    cache: *const regcache_cache,
    out: *mut u32,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        // SAFETY: NULL-checked by write_out; writable (contract).
        unsafe { write_out(out, "out", monitor_to_c(inner.cache.monitor()) as u32) }
    })
}

/// The registrar the cache uses (a `regcache_registrar` value; never
/// `AUTO`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `cache` as for `regcache_cache_get`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_registrar(
    cache: *const regcache_cache,
    out: *mut u32,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        let v = match inner.cache.registrar() {
            AnyRegistrar::Verbs(_) => regcache_registrar::REGCACHE_REGISTRAR_VERBS,
            _ => regcache_registrar::REGCACHE_REGISTRAR_PIN,
        };
        let _ = inner.kind;
        // SAFETY: NULL-checked by write_out; writable (contract).
        unsafe { write_out(out, "out", v as u32) }
    })
}
