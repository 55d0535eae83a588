//! The calls an MPI library's registration cache makes besides get and
//! release: `regcache_cache_find` (a lookup that never registers),
//! `regcache_cache_evict` (free one or N idle registrations when the NIC
//! runs out), `regcache_cache_invalidate` (synchronous invalidation) and
//! `regcache_handle_user_data` (the caller's MR object behind a handle).
//! Open MPI's rcache interface has each of them (`rcache_find`,
//! `rcache_evict`, `rcache_invalidate_range`, the registration object).

use super::{Inner, access_of, live, with_raw};
use crate::handles::{self, Held};
use crate::object::{Out, ffi_guard};
use crate::result::{Error, regcache_result};
use regcache::{AccessFlags, AddrRange};
use regcache_result::*;
use std::ffi::c_void;

impl Inner {
    /// A handle-table entry for a cached region covering `range`, if one
    /// is cached (`Cache::find_token_on`).
    fn find(&self, range: AddrRange, access: AccessFlags) -> Result<Option<Held>, Error> {
        let me = regcache::this_thread();
        Ok(self
            .cache
            .find_token_on(me, range, access)?
            .map(Held::Token))
    }
}

/// Like `regcache_cache_get`, but never registers: a handle on a cached
/// registration covering `[addr, addr + len)` with at least `access`, or
/// `REGCACHE_ERR_NOT_CACHED` (nothing registered, `*out` untouched). A
/// found region counts as a hit. Release the handle with
/// `regcache_handle_release`.
///
/// # Errors
/// `REGCACHE_ERR_NOT_CACHED`, `REGCACHE_ERR_NULL_ARGUMENT` (`cache`,
/// `out`), `REGCACHE_ERR_DESTROYED`, `REGCACHE_ERR_INVALID_RANGE`,
/// `REGCACHE_ERR_INVALID_ARGUMENT` (unknown access bits),
/// `REGCACHE_ERR_NO_RESOURCES` (the handle table is full).
///
/// # Safety
/// `cache` as for `regcache_cache_get`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_find(
    cache: *const super::regcache_cache,
    addr: *const c_void,
    len: usize,
    access: u32,
    out: *mut *mut super::regcache_handle,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        let out = Out::new(out, "out")?;
        let range = AddrRange::from_buffer(addr.cast(), len)?;
        let access = access_of(access)?;
        let me = regcache::this_thread();
        let Some(slot) = handles::reserve(me) else {
            return Err(Error::new(
                REGCACHE_ERR_NO_RESOURCES,
                "no free handle: the handle table is full",
            ));
        };
        match inner.find(range, access) {
            Ok(Some(held)) => {
                let h = slot.publish(inner, held);
                // SAFETY: out is non-NULL and writable (contract).
                unsafe { out.write(h as *mut super::regcache_handle) }
            }
            Ok(None) => {
                slot.abandon();
                Err(Error::new(
                    REGCACHE_ERR_NOT_CACHED,
                    format!("no cached registration covers {range}"),
                ))
            }
            Err(e) => {
                slot.abandon();
                Err(e)
            }
        }
    })
}

/// Evict up to `max` idle cached regions, least recently used first, and
/// deregister them on this thread (the calling thread's deferred
/// references are given back first if they are all that holds regions).
/// `*out_evicted` (may be NULL) receives how many: 0 means nothing was
/// idle. Open MPI's `rcache_evict` is `max` = 1.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`cache`), `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `cache` as for `regcache_cache_get`; `out_evicted` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_evict(
    cache: *const super::regcache_cache,
    max: usize,
    out_evicted: *mut usize,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        let n = inner.cache.evict(max);
        if !out_evicted.is_null() {
            // SAFETY: non-NULL and writable (contract).
            unsafe { out_evicted.write(n) };
        }
        Ok(())
    })
}

/// Invalidate, now, every cached region overlapping `[addr, addr + len)`:
/// no later get or find returns them; idle ones are deregistered on this
/// thread, in-use ones at their last release. `*out_count` (may be NULL)
/// receives how many regions were invalidated. Not for memory hooks (it
/// locks and deregisters): from a hook, call
/// `regcache_cache_notify_unmapped`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`cache`), `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_INVALID_RANGE`.
///
/// # Safety
/// `cache` as for `regcache_cache_get`; `out_count` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_invalidate(
    cache: *const super::regcache_cache,
    addr: *const c_void,
    len: usize,
    out_count: *mut usize,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: cache contract as documented.
        let inner = unsafe { live(cache) }?;
        let range = AddrRange::from_buffer(addr.cast(), len)?;
        let n = inner.cache.invalidate(range);
        if !out_count.is_null() {
            // SAFETY: non-NULL and writable (contract).
            unsafe { out_count.write(n) };
        }
        Ok(())
    })
}

/// The `user_data` the registrar's `reg` callback produced for the
/// handle's registration (the same on every hit on the region; NULL for
/// the built-in registrars).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_STALE_HANDLE`.
///
/// # Safety
/// `handle` as for `regcache_handle_release`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_handle_user_data(
    handle: *const super::regcache_handle,
    out: *mut *mut c_void,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        let u = with_raw(handle, |r| r.user_data)?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { out.write(u as *mut c_void) }
    })
}
