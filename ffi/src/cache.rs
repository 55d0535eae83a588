//! `regcache_cache_*` and `regcache_handle_*`: the registration cache.
//!
//! A cache is an object of the FFI object layer (`object.rs`: a
//! tombstoned pointer, checked on every call); a handle is not an object
//! at all but a generation-checked index into the handle table
//! (`handles.rs`). The two hit-path exports, `regcache_cache_get` and
//! `regcache_handle_release`, first try a fast path outside
//! `catch_unwind` (a panic there would unwind into C). That it cannot
//! panic is not left to comments: this module and `handles.rs` deny the
//! lints that flag the ways Rust code panics (indexing, `unwrap`,
//! `expect`, `panic!`), so a change that adds one does not build. Code
//! that needs one of them belongs in a cold path, under `ffi_guard`.
//!
//! The calls into `regcache::Cache` that the C API makes on a token are
//! gathered in `impl Inner` below, one call site each.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::config::{
    checked, env_config, monitor_to_c, regcache_config, regcache_registrar, regcache_stats,
};
use crate::handles::{self, Held};
use crate::object::{self, Kind, Out, ffi_guard, write_out};
use crate::result::{Error, regcache_result};
use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, CacheError, Got, Keys, ThisThread, Token,
};
use regcache_result::*;
use std::ffi::c_void;

mod caller;
mod lookup;

pub use caller::*;
pub use lookup::*;

/// The object kind of `regcache_cache *`.
const CACHE: Kind = Kind {
    live: 0x7265_6763_6163_6865, // "regcache"
    what: "cache",
};

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

/// What a live `regcache_cache *`'s tombstone points to.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) cache: Cache<AnyRegistrar>,
}

/// The C API's calls into `regcache::Cache` on tokens: one place each, so
/// that a change of the cache's token API is one change here.
impl Inner {
    /// The hit path's lookup (`Cache::try_hit_token_on`, documented
    /// panic-free: atomics and `Option` lookups only).
    #[inline(always)]
    fn try_hit(&self, me: ThisThread, range: AddrRange, access: AccessFlags) -> Option<Token> {
        self.cache.try_hit_token_on(me, range, access)
    }

    /// A full get, hit or miss (`Cache::get_token_on`): what the new
    /// handle will hold.
    fn get(
        &self,
        me: ThisThread,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Held, CacheError> {
        Ok(match self.cache.get_token_on(me, range, access)? {
            Got::Cached(t) => Held::Token(t),
            Got::Uncached(raw) => Held::Raw(Box::new(raw)),
        })
    }

    /// The release fast path (`Cache::try_release_token_fast`, documented
    /// panic-free); `false`, having changed nothing, when it cannot.
    ///
    /// # Safety
    /// `t` was produced by this cache, is held, and is released once.
    #[inline(always)]
    unsafe fn try_release_fast(&self, me: ThisThread, t: Token) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.cache.try_release_token_fast(me, t) }
    }

    /// Release what a handle-table entry held.
    ///
    /// # Safety
    /// `held` was produced by this cache and is released once.
    #[inline(always)]
    pub(crate) unsafe fn release(&self, me: ThisThread, held: Held) {
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

    /// The range and keys of a held token (`Cache::token_info`).
    ///
    /// # Safety
    /// `t` was produced by this cache and is held.
    unsafe fn info(&self, t: Token) -> (AddrRange, Option<Keys>) {
        // SAFETY: the caller's contract.
        unsafe { self.cache.token_info(t) }
    }
}

/// The live cache behind `c`.
///
/// # Safety
/// `c` is NULL or a pointer returned by `regcache_cache_new`, and not
/// destroyed concurrently with this call.
#[inline(always)]
unsafe fn live<'a>(c: *const regcache_cache) -> Result<&'a Inner, Error> {
    // SAFETY: forwarded contract.
    unsafe { object::live(c, &CACHE) }
}

/// The body of an export that asks the live cache behind `c` for one
/// value: `f`'s result is written to `out` (named `name` in a NULL error)
/// only when every check and `f` succeeded.
///
/// # Safety
/// As [`live`]; `out` is NULL or valid for one write of `T`.
unsafe fn query<T>(
    c: *const regcache_cache,
    out: *mut T,
    name: &str,
    f: impl FnOnce(&Inner) -> T,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: the caller's contract.
        let inner = unsafe { live(c) }?;
        let out = Out::new(out, name)?;
        let v = f(inner);
        // SAFETY: non-NULL (checked) and writable (the caller's contract).
        unsafe { out.write(v) }
    })
}

/// Create a cache with `config`, or with `regcache_config_from_env` when
/// `config` is NULL. On success `*out` is the new cache.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`out`), `REGCACHE_ERR_INVALID_ARGUMENT`
/// (zero limit, `merge` not 0/1/2, unknown registrar or monitor, nonzero
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
        let out = Out::new(out, "out")?;
        let c = if config.is_null() {
            env_config()?
        } else {
            // SAFETY: non-NULL config is readable (contract).
            unsafe { config.read() }
        };
        let (kind, config) = checked(&c)?;
        let device = std::env::var("REGCACHE_RDMA_DEVICE").ok();
        let registrar = regcache::open_registrar(kind, device.as_deref())?;
        let cache = Cache::try_new(registrar, config)?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { out.write(object::make(&CACHE, Inner { cache })) }
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
        // SAFETY: NULL or from regcache_cache_new (contract); no other
        // call runs on this cache.
        let inner = unsafe { object::destroy::<Inner, _>(cache, &CACHE) }?;
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
    // `peek` checks `cache` for NULL too; testing both pointers up front
    // is what keeps this path at its instruction count (without it LLVM
    // lays the lookup out with more spills: 279 instead of 272 per C
    // get+release under callgrind, `ffi/benches/hitloop.c`).
    if cache.is_null() || out.is_null() {
        return false;
    }
    // SAFETY: from regcache_cache_new, not destroyed concurrently
    // (contract).
    let Some(inner) = (unsafe { object::peek::<Inner, _>(cache, &CACHE) }) else {
        return false;
    };
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
    let Some(t) = inner.try_hit(me, range, access) else {
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
        let out = Out::new(out, "out")?;
        let range = AddrRange::from_buffer(addr.cast(), len)?;
        let access = access_of(access)?;
        // One TLS access for the whole call (the handle table's free stack
        // and the cache's deferred table are both per thread).
        let me = regcache::this_thread();
        let Some(slot) = handles::reserve(me) else {
            return Err(Error::new(
                REGCACHE_ERR_NO_RESOURCES,
                "no free handle: the handle table is full (4 Mi handles out, fewer under an address-space limit) or could not be mapped",
            ));
        };
        match inner.get(me, range, access) {
            Ok(held) => {
                let h = slot.publish(inner, held);
                // SAFETY: out is non-NULL and writable (contract).
                unsafe { out.write(h as *mut regcache_handle) }
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
    if !unsafe { inner.try_release_fast(me, t) } {
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

/// The access bits of a C call, or `REGCACHE_ERR_INVALID_ARGUMENT`.
fn access_of(access: u32) -> Result<AccessFlags, Error> {
    AccessFlags::from_bits(access).ok_or_else(|| {
        Error::new(
            REGCACHE_ERR_INVALID_ARGUMENT,
            format!("unknown access bits {access:#x}"),
        )
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

/// What a live C handle names: its range, keys, the registrar's word for
/// it, and whether it is cached.
struct Info {
    range: AddrRange,
    keys: Option<Keys>,
    user_data: usize,
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
            let (range, keys) = unsafe { inner.info(*t) };
            Info {
                range,
                keys,
                // SAFETY: as above.
                user_data: unsafe { inner.cache.token_user_data(*t) },
                cached: true,
            }
        }
        Held::Raw(r) => Info {
            range: r.range(),
            keys: r.keys(),
            // SAFETY: the entry is live, so its cache was not destroyed.
            user_data: unsafe { &*e.cache() }.cache.user_data_of(r),
            cached: r.is_cached(),
        },
    };
    Ok(f(&info))
}

/// `regcache_handle_lkey` and `_rkey`: write the key `pick` chooses.
///
/// # Safety
/// As `regcache_handle_lkey`.
unsafe fn key_out(
    h: *const regcache_handle,
    out: *mut u32,
    pick: fn(Keys) -> u32,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        let keys = with_raw(h, |r| r.keys)?
            .ok_or_else(|| Error::new(REGCACHE_ERR_NO_KEYS, "registrar has no keys"))?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { out.write(pick(keys)) }
    })
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
    // SAFETY: the export's contract.
    unsafe { key_out(handle, out, |k| k.lkey.0) }
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
    // SAFETY: the export's contract.
    unsafe { key_out(handle, out, |k| k.rkey.0) }
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
        let out_start = Out::new(out_start, "out_start/out_len")?;
        let out_len = Out::new(out_len, "out_start/out_len")?;
        let r = with_raw(handle, |r| r.range)?;
        // SAFETY: both writable (contract).
        unsafe {
            out_start.write(r.start() as usize)?;
            out_len.write(r.len() as usize)
        }
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
        let out = Out::new(out, "out")?;
        let c = with_raw(handle, |r| r.cached)?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { out.write(c) }
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
/// On the kernel device it does nothing (the device sees every change).
/// To invalidate at once whatever the source, use
/// `regcache_cache_invalidate` (not from a hook).
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
    // SAFETY: cache and out_evicted contracts as documented.
    unsafe {
        query(cache, out_evicted, "out_evicted", |inner| {
            inner.cache.quiesce();
            inner.cache.flush()
        })
    }
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
    // SAFETY: cache and out contracts as documented.
    unsafe { query(cache, out, "out", |inner| inner.cache.stats().into()) }
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
            AnyRegistrar::User(_) => regcache_registrar::REGCACHE_REGISTRAR_CALLER,
            _ => regcache_registrar::REGCACHE_REGISTRAR_PIN,
        };
        // SAFETY: NULL-checked by write_out; writable (contract).
        unsafe { write_out(out, "out", v as u32) }
    })
}
