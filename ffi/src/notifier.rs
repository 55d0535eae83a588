//! `regcache_notifier_*`: the ummunotify event model without the cache.
//!
//! A notifier is an object of the FFI object layer (`object.rs`): the C
//! pointer names a tombstone, so a destroyed notifier used again answers
//! `REGCACHE_ERR_DESTROYED`. Its teardown verb is `_destroy`, like every
//! object's; `regcache_notifier_close`, its first name, stays as an alias.

use crate::config::{monitor_of, regcache_monitor};
use crate::object::{self, Kind, Out, array_out, ffi_guard, write_out};
use crate::result::{Error, regcache_result};
use regcache::AddrRange;
use regcache_result::*;
use std::ffi::{c_int, c_void};
use std::os::fd::AsRawFd;
use umn::{Cookie, Event, Notifier, Source};

const NOTIFIER: Kind = Kind {
    live: 0x756d_6e6e_6f74_6966, // "umnnotif"
    what: "notifier",
};

/// An ummunotify event source (opaque): a kernel device, userfaultfd with a
/// monitor thread, or external reports. Open with `regcache_notifier_open`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct regcache_notifier {
    _private: [u8; 0],
}

/// `regcache_event.type` values (`UMMUNOTIFY_EVENT_TYPE_*`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_event_type {
    /// A registration must be dropped: `user_cookie_counter` is its cookie;
    /// with `flags & 1` (`HINT`) `[hint_start, hint_end)` is the part hit.
    REGCACHE_EVENT_INVAL = 0,
    /// The queue is drained: `user_cookie_counter` is the ummunotify counter
    /// and `generation` the value to compare `regcache_notifier_generation`
    /// with.
    REGCACHE_EVENT_LAST = 1,
}

/// One event: `struct ummunotify_event`, plus the generation on `LAST`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct regcache_event {
    /// A `regcache_event_type` value.
    pub type_: u32,
    /// `1` (`UMMUNOTIFY_EVENT_FLAG_HINT`) when the hint range is valid.
    pub flags: u32,
    /// First byte of the invalidated part (with `HINT`).
    pub hint_start: u64,
    /// One past its last byte (with `HINT`).
    pub hint_end: u64,
    /// `INVAL`: the cookie; `LAST`: the event counter.
    pub user_cookie_counter: u64,
    /// `LAST`: the generation the drain is complete up to; else 0.
    pub generation: u64,
}

/// # Safety
/// `n` is NULL or from `regcache_notifier_open`; not destroyed
/// concurrently.
unsafe fn live<'a>(n: *const regcache_notifier) -> Result<&'a Notifier, Error> {
    // SAFETY: forwarded contract.
    unsafe { object::live(n, &NOTIFIER) }
}

fn to_c(s: Source) -> regcache_monitor {
    match s {
        Source::Kernel => regcache_monitor::REGCACHE_MONITOR_KERNEL,
        Source::Uffd => regcache_monitor::REGCACHE_MONITOR_UFFD,
        Source::Patch => regcache_monitor::REGCACHE_MONITOR_PATCH,
        Source::External => regcache_monitor::REGCACHE_MONITOR_EXTERNAL,
        _ => regcache_monitor::REGCACHE_MONITOR_AUTO,
    }
}

/// Open an event source (`regcache_monitor`: `AUTO`, `KERNEL`, `PATCH`,
/// `UFFD` or `EXTERNAL`; `AUTO` picks the kernel device, else the libc
/// patch, else userfaultfd).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT` (`NONE` or
/// unknown), `REGCACHE_ERR_UNAVAILABLE`, `REGCACHE_ERR_NOTIFIER`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_open(
    source: u32,
    out: *mut *mut regcache_notifier,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        let src = match monitor_of(source) {
            Some(regcache_monitor::REGCACHE_MONITOR_AUTO) => Source::Auto,
            Some(regcache_monitor::REGCACHE_MONITOR_KERNEL) => Source::Kernel,
            Some(regcache_monitor::REGCACHE_MONITOR_UFFD) => Source::Uffd,
            Some(regcache_monitor::REGCACHE_MONITOR_PATCH) => Source::Patch,
            Some(regcache_monitor::REGCACHE_MONITOR_EXTERNAL) => Source::External,
            _ => {
                return Err(Error::new(
                    REGCACHE_ERR_INVALID_ARGUMENT,
                    format!("not a notifier source: {source}"),
                ));
            }
        };
        let n = Notifier::open(src)?;
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(object::make(&NOTIFIER, n)) }
    })
}

/// Destroy a notifier (its descriptor and monitor thread). Using it
/// afterwards returns `REGCACHE_ERR_DESTROYED`. Not concurrently with other
/// calls on it.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `notifier` is NULL or from `regcache_notifier_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_destroy(
    notifier: *mut regcache_notifier,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        drop(unsafe { object::destroy::<Notifier, _>(notifier, &NOTIFIER) }?);
        Ok(())
    })
}

/// The first name of `regcache_notifier_destroy` (the same function),
/// kept because an exported symbol is never removed.
///
/// # Errors
/// As `regcache_notifier_destroy`.
///
/// # Safety
/// As `regcache_notifier_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_close(
    notifier: *mut regcache_notifier,
) -> regcache_result {
    // SAFETY: the same contract.
    unsafe { regcache_notifier_destroy(notifier) }
}

/// The source actually opened (`KERNEL`, `UFFD` or `EXTERNAL`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `notifier` as for `regcache_notifier_destroy`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_source(
    notifier: *const regcache_notifier,
    out: *mut u32,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract as documented.
        let n = unsafe { live(notifier) }?;
        // SAFETY: NULL-checked by write_out.
        unsafe { write_out(out, "out", to_c(n.source()) as u32) }
    })
}

/// Watch `[addr, addr + len)` under `cookie` (distinct per registration).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_INVALID_RANGE`, `REGCACHE_ERR_DUPLICATE_COOKIE`,
/// `REGCACHE_ERR_NOT_MAPPED`, `REGCACHE_ERR_BUSY`, `REGCACHE_ERR_FORKED`,
/// `REGCACHE_ERR_NOTIFIER`.
///
/// # Safety
/// `notifier` as for `regcache_notifier_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_register(
    notifier: *const regcache_notifier,
    addr: *const c_void,
    len: usize,
    cookie: u64,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract as documented.
        let n = unsafe { live(notifier) }?;
        let range = AddrRange::from_buffer(addr.cast(), len)?;
        n.register(range, Cookie(cookie))?;
        Ok(())
    })
}

/// Stop watching `cookie`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_UNKNOWN_COOKIE`, `REGCACHE_ERR_FORKED`.
///
/// # Safety
/// `notifier` as for `regcache_notifier_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_unregister(
    notifier: *const regcache_notifier,
    cookie: u64,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract as documented.
        let n = unsafe { live(notifier) }?;
        n.unregister(Cookie(cookie))?;
        Ok(())
    })
}

/// Read up to `capacity` events into `events`; `*out_count` receives how
/// many. A read that drains the queue ends with a `LAST` event; with
/// nothing pending it returns just that record. Does not block.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_INVALID_ARGUMENT` (`capacity` 0), `REGCACHE_ERR_FORKED`,
/// `REGCACHE_ERR_NOTIFIER`.
///
/// # Safety
/// `events` valid for writes of `capacity` records; `out_count` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_read(
    notifier: *const regcache_notifier,
    events: *mut regcache_event,
    capacity: usize,
    out_count: *mut usize,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract as documented.
        let n = unsafe { live(notifier) }?;
        // At most this many events per call (the rest wait for the next).
        const MAX_READ: usize = 4096;
        // SAFETY: valid for `capacity` writes (contract), so for fewer.
        let events = unsafe { array_out(events, capacity.min(MAX_READ), "events/out_count") }?;
        let out_count = Out::new(out_count, "events/out_count")?;
        if capacity == 0 {
            return Err(Error::new(
                REGCACHE_ERR_INVALID_ARGUMENT,
                "capacity must be at least 1",
            ));
        }
        let mut buf = vec![Event::default(); events.len()];
        let k = n.read(&mut buf)?;
        for (slot, e) in events.iter_mut().zip(buf.iter().take(k)) {
            let c = match *e {
                Event::Inval(inv) => regcache_event {
                    type_: regcache_event_type::REGCACHE_EVENT_INVAL as u32,
                    flags: inv.range.is_some() as u32,
                    hint_start: inv.range.map_or(0, |r| r.start()),
                    hint_end: inv.range.map_or(0, |r| r.end()),
                    user_cookie_counter: inv.cookie.0,
                    generation: 0,
                },
                Event::Last {
                    counter,
                    generation,
                } => regcache_event {
                    type_: regcache_event_type::REGCACHE_EVENT_LAST as u32,
                    flags: 0,
                    hint_start: 0,
                    hint_end: 0,
                    user_cookie_counter: counter,
                    generation: generation.0,
                },
            };
            slot.write(c);
        }
        // SAFETY: writable (contract).
        unsafe { out_count.write(k) }
    })
}

/// The generation word now (one load, no system call). When it differs
/// from the `generation` of the last `LAST` event read, read again.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `notifier` as for `regcache_notifier_destroy`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_generation(
    notifier: *const regcache_notifier,
    out: *mut u64,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract as documented.
        let n = unsafe { live(notifier) }?;
        // SAFETY: NULL-checked by write_out.
        unsafe { write_out(out, "out", n.generation().0) }
    })
}

/// A descriptor that becomes readable (`poll`) when events are pending.
/// Owned by the notifier: do not close it.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `notifier` as for `regcache_notifier_destroy`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_fd(
    notifier: *const regcache_notifier,
    out: *mut c_int,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract as documented.
        let n = unsafe { live(notifier) }?;
        // SAFETY: NULL-checked by write_out.
        unsafe { write_out(out, "out", n.as_raw_fd()) }
    })
}

/// Report that `[addr, addr + len)` is being unmapped (the `EXTERNAL`
/// source; also accepted by userfaultfd for what it cannot see).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_INVALID_RANGE`, `REGCACHE_ERR_UNSUPPORTED` (kernel device).
///
/// # Safety
/// `notifier` as for `regcache_notifier_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_notifier_notify_unmapped(
    notifier: *const regcache_notifier,
    addr: *const c_void,
    len: usize,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract as documented.
        let n = unsafe { live(notifier) }?;
        let range = AddrRange::from_buffer(addr.cast(), len)?;
        n.notify_unmapped(range)?;
        Ok(())
    })
}
