//! Sequences of C API calls with arbitrary arguments, driven through the
//! exported `regcache_*` functions as a C caller would call them: gets of
//! arbitrary ranges (inside a mapped arena, across its unmapped holes, or
//! anywhere), releases and queries of live, released, forged and
//! destroyed-cache handles, notify/invalidate/evict/flush, munmap and
//! re-map of the arena, and destroys, including twice.
//!
//! Oracle, besides "no crash, no hang, no panic caught at the boundary":
//! a model of every handle value the run obtained. A released handle, or
//! one whose cache was destroyed, must answer `STALE_HANDLE` to every
//! call; a destroyed cache `DESTROYED`; a live handle's range covers what
//! was asked; a NULL output `NULL_ARGUMENT`.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use regcache_ffi::regcache_result::{self, *};
use regcache_ffi::*;
use regcache_fuzz::Arena;
use std::ffi::c_void;
use std::ptr::null_mut;

/// Pages in the arena the gets mostly aim at.
const PAGES: usize = 16;

#[derive(Arbitrary, Debug)]
enum Addr {
    /// `arena + off` (mod the arena's length).
    Arena(u16),
    /// Any value at all (NULL, the kernel's half, unmapped space).
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Get {
        cache: u8,
        addr: Addr,
        len: u16,
        access: u8,
    },
    GetHuge {
        cache: u8,
        addr: Addr,
        len: u64,
    },
    Find {
        cache: u8,
        addr: Addr,
        len: u16,
        access: u8,
    },
    Release {
        handle: u8,
    },
    ReleaseForged {
        value: u64,
    },
    Query {
        handle: u8,
        which: u8,
        null_out: bool,
    },
    QueryForged {
        value: u64,
        which: u8,
    },
    NotifyUnmapped {
        cache: u8,
        addr: Addr,
        len: u64,
    },
    Invalidate {
        cache: u8,
        addr: Addr,
        len: u64,
    },
    Evict {
        cache: u8,
        max: u16,
    },
    Flush {
        cache: u8,
    },
    Quiesce {
        cache: u8,
    },
    Stats {
        cache: u8,
        null_out: bool,
    },
    Unmap {
        page: u8,
        pages: u8,
    },
    Remap {
        page: u8,
        pages: u8,
    },
    Destroy {
        cache: u8,
    },
    New {
        monitor: u8,
        max_regions: u8,
        max_bytes: u32,
        merge: u8,
    },
    LastError {
        len: u8,
    },
    Strerror {
        code: i32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum HState {
    Live,
    Released,
}

struct Held {
    value: *mut regcache_handle,
    cache: usize,
    state: HState,
    /// What the get asked for: `[addr, addr + len)`.
    asked: (usize, usize),
}

struct Obj {
    ptr: *mut regcache_cache,
    destroyed: bool,
}

/// `regcache_cache_get` and `regcache_cache_find`: one shape, one arm.
type AcquireFn = unsafe extern "C" fn(
    *const regcache_cache,
    *const c_void,
    usize,
    u32,
    *mut *mut regcache_handle,
) -> regcache_result;

fn check(what: &str, got: regcache_result, want: regcache_result) {
    assert_eq!(got, want, "{what}");
}

fn not_panic(what: &str, got: regcache_result) {
    assert_ne!(
        got, REGCACHE_ERR_PANIC,
        "{what}: a panic reached the C boundary"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let arena = Arena::new(PAGES);
    let mut caches: Vec<Obj> = Vec::new();
    let mut handles: Vec<Held> = Vec::new();
    let new_cache = |monitor: u32, max_regions: u64, max_bytes: u64, merge: u32| {
        let mut cfg = std::mem::MaybeUninit::<regcache_config>::uninit();
        // SAFETY: a valid out pointer.
        check(
            "config_default",
            unsafe { regcache_config_default(cfg.as_mut_ptr()) },
            REGCACHE_OK,
        );
        // SAFETY: written on OK.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.registrar = 1; // pin: the real mlock registrar
        cfg.monitor = monitor;
        cfg.max_regions = max_regions;
        cfg.max_bytes = max_bytes;
        cfg.merge = merge;
        let mut out = null_mut();
        // SAFETY: valid pointers.
        let r = unsafe { regcache_cache_new(&cfg, &mut out) };
        not_panic("cache_new", r);
        (r == REGCACHE_OK).then_some(out)
    };
    // One cache to start with: NONE or EXTERNAL (no monitor thread per
    // input); `New` may add userfaultfd ones.
    let first = u.arbitrary::<bool>().unwrap_or(false);
    if let Some(c) = new_cache(if first { 3 } else { 4 }, 64, 1 << 20, 1) {
        caches.push(Obj {
            ptr: c,
            destroyed: false,
        });
    }
    let addr_of = |a: &Addr| -> *const c_void {
        match *a {
            Addr::Arena(off) => arena.at(off as usize % arena.len()).cast(),
            Addr::Raw(v) => v as usize as *const c_void,
        }
    };
    let mut steps = 0;
    while let Ok(op) = u.arbitrary::<Op>() {
        steps += 1;
        if steps > 64 {
            break;
        }
        let pick_cache = |i: u8| caches.get(i as usize % caches.len().max(1));
        let find = matches!(op, Op::Find { .. });
        match op {
            Op::Get {
                cache,
                addr,
                len,
                access,
            }
            | Op::Find {
                cache,
                addr,
                len,
                access,
            } => {
                let (name, call) = if find {
                    ("find", regcache_cache_find as AcquireFn)
                } else {
                    ("get", regcache_cache_get as AcquireFn)
                };
                let Some(c) = pick_cache(cache) else { continue };
                let (ci, cp, dead) = (cache as usize % caches.len(), c.ptr, c.destroyed);
                let a = addr_of(&addr);
                let mut out = null_mut();
                // SAFETY: cache from regcache_cache_new (maybe destroyed:
                // the tombstone answers); out valid.
                let r = unsafe { call(cp, a, len as usize, access as u32 & 0x1f, &mut out) };
                not_panic(name, r);
                if dead {
                    check(
                        &format!("{name} on a destroyed cache"),
                        r,
                        REGCACHE_ERR_DESTROYED,
                    );
                } else if r == REGCACHE_OK {
                    handles.push(Held {
                        value: out,
                        cache: ci,
                        state: HState::Live,
                        asked: (a as usize, len as usize),
                    });
                }
            }
            Op::GetHuge { cache, addr, len } => {
                let Some(c) = pick_cache(cache) else { continue };
                let (ci, cp) = (cache as usize % caches.len(), c.ptr);
                let a = addr_of(&addr);
                let mut out = null_mut();
                // SAFETY: as above.
                let r = unsafe { regcache_cache_get(cp, a, len as usize, 1, &mut out) };
                not_panic("get huge", r);
                if r == REGCACHE_OK {
                    handles.push(Held {
                        value: out,
                        cache: ci,
                        state: HState::Live,
                        asked: (a as usize, len as usize),
                    });
                }
                // A NULL output is refused before any work.
                // SAFETY: as above; out NULL on purpose.
                let r = unsafe { regcache_cache_get(cp, a, len as usize, 1, null_mut()) };
                check(
                    "get with NULL out",
                    r,
                    if c.destroyed {
                        REGCACHE_ERR_DESTROYED
                    } else {
                        REGCACHE_ERR_NULL_ARGUMENT
                    },
                );
            }
            Op::Release { handle } => {
                let n = handles.len();
                let Some(h) = handles.get_mut(handle as usize % n.max(1)) else {
                    continue;
                };
                let stale = h.state != HState::Live || caches[h.cache].destroyed;
                // SAFETY: a value from regcache_cache_get (maybe stale).
                let r = unsafe { regcache_handle_release(h.value) };
                check(
                    "release",
                    r,
                    if stale {
                        REGCACHE_ERR_STALE_HANDLE
                    } else {
                        REGCACHE_OK
                    },
                );
                h.state = HState::Released;
            }
            Op::ReleaseForged { value } => {
                // Only values that cannot be a handle this run still holds
                // live (releasing someone else's live handle is a caller
                // bug the table cannot tell from a real release).
                if handles.iter().any(|h| h.value as usize as u64 == value) {
                    continue;
                }
                // SAFETY: not a live value; the table checks the rest.
                let r = unsafe { regcache_handle_release(value as usize as *mut regcache_handle) };
                not_panic("forged release", r);
                if value == 0 {
                    check("release NULL", r, REGCACHE_ERR_NULL_ARGUMENT);
                } else {
                    check("forged release", r, REGCACHE_ERR_STALE_HANDLE);
                }
            }
            Op::Query {
                handle,
                which,
                null_out,
            } => {
                let Some(h) = handles.get(handle as usize % handles.len().max(1)) else {
                    continue;
                };
                let stale = h.state != HState::Live || caches[h.cache].destroyed;
                let r = query(h.value, which, null_out);
                not_panic("query", r.0);
                if null_out {
                    // Both apply: either may be checked first.
                    assert!(
                        r.0 == REGCACHE_ERR_NULL_ARGUMENT
                            || (stale && r.0 == REGCACHE_ERR_STALE_HANDLE),
                        "query with NULL out gave {:?}",
                        r.0
                    );
                } else if stale {
                    check("query of a stale handle", r.0, REGCACHE_ERR_STALE_HANDLE);
                } else if which % 5 == 2 {
                    check("range of a live handle", r.0, REGCACHE_OK);
                    let (start, len) = r.1;
                    assert!(
                        start <= h.asked.0 && h.asked.0 + h.asked.1 <= start + len,
                        "range {start:#x}+{len} does not cover {:#x}+{}",
                        h.asked.0,
                        h.asked.1
                    );
                }
            }
            Op::QueryForged { value, which } => {
                if handles.iter().any(|h| h.value as usize as u64 == value) {
                    continue;
                }
                let r = query(value as usize as *mut regcache_handle, which, false);
                not_panic("forged query", r.0);
                assert!(r.0 != REGCACHE_OK, "a forged handle {value:#x} answered OK");
            }
            Op::NotifyUnmapped { cache, addr, len } => {
                let Some(c) = pick_cache(cache) else { continue };
                // SAFETY: cache from regcache_cache_new.
                let r =
                    unsafe { regcache_cache_notify_unmapped(c.ptr, addr_of(&addr), len as usize) };
                not_panic("notify_unmapped", r);
                if c.destroyed {
                    check("notify on a destroyed cache", r, REGCACHE_ERR_DESTROYED);
                }
            }
            Op::Invalidate { cache, addr, len } => {
                let Some(c) = pick_cache(cache) else { continue };
                let mut n = 0;
                // SAFETY: as above.
                let r = unsafe {
                    regcache_cache_invalidate(c.ptr, addr_of(&addr), len as usize, &mut n)
                };
                not_panic("invalidate", r);
                if c.destroyed {
                    check("invalidate on a destroyed cache", r, REGCACHE_ERR_DESTROYED);
                }
            }
            Op::Evict { cache, max } => {
                let Some(c) = pick_cache(cache) else { continue };
                let mut n = 0;
                // SAFETY: as above.
                let r = unsafe { regcache_cache_evict(c.ptr, max as usize, &mut n) };
                check(
                    "evict",
                    r,
                    if c.destroyed {
                        REGCACHE_ERR_DESTROYED
                    } else {
                        REGCACHE_OK
                    },
                );
                assert!(n <= max as usize);
            }
            Op::Flush { cache } => {
                let Some(c) = pick_cache(cache) else { continue };
                let mut n = 0;
                // SAFETY: as above.
                let r = unsafe { regcache_cache_flush(c.ptr, &mut n) };
                check(
                    "flush",
                    r,
                    if c.destroyed {
                        REGCACHE_ERR_DESTROYED
                    } else {
                        REGCACHE_OK
                    },
                );
            }
            Op::Quiesce { cache } => {
                let Some(c) = pick_cache(cache) else { continue };
                // SAFETY: as above.
                let r = unsafe { regcache_cache_quiesce(c.ptr) };
                check(
                    "quiesce",
                    r,
                    if c.destroyed {
                        REGCACHE_ERR_DESTROYED
                    } else {
                        REGCACHE_OK
                    },
                );
            }
            Op::Stats { cache, null_out } => {
                let Some(c) = pick_cache(cache) else { continue };
                let mut s = std::mem::MaybeUninit::<regcache_stats>::uninit();
                let out = if null_out { null_mut() } else { s.as_mut_ptr() };
                // SAFETY: as above.
                let r = unsafe { regcache_cache_stats(c.ptr, out) };
                let want = if c.destroyed {
                    REGCACHE_ERR_DESTROYED
                } else if null_out {
                    REGCACHE_ERR_NULL_ARGUMENT
                } else {
                    REGCACHE_OK
                };
                check("stats", r, want);
                if r == REGCACHE_OK {
                    // SAFETY: written on OK.
                    let s = unsafe { s.assume_init() };
                    assert_eq!(s.gets, s.hits + s.misses, "gets = hits + misses");
                    assert!(
                        s.deregistrations <= s.registrations,
                        "more deregistrations than registrations"
                    );
                }
            }
            Op::Unmap { page, pages } => arena.unmap(page as usize, pages as usize),
            Op::Remap { page, pages } => arena.remap(page as usize, pages as usize),
            Op::Destroy { cache } => {
                let n = caches.len().max(1);
                let Some(c) = caches.get_mut(cache as usize % n) else {
                    continue;
                };
                // SAFETY: from regcache_cache_new (maybe destroyed).
                let r = unsafe { regcache_cache_destroy(c.ptr) };
                check(
                    "destroy",
                    r,
                    if c.destroyed {
                        REGCACHE_ERR_DESTROYED
                    } else {
                        REGCACHE_OK
                    },
                );
                c.destroyed = true;
            }
            Op::New {
                monitor,
                max_regions,
                max_bytes,
                merge,
            } => {
                if caches.len() >= 3 {
                    continue;
                }
                // AUTO, KERNEL, UFFD, EXTERNAL, NONE, PATCH or an unknown
                // value.
                let monitor = match monitor % 8 {
                    6 | 7 => monitor as u32,
                    m => m as u32,
                };
                // Off, on, adaptive, or an unknown value.
                let merge = if merge & 0x80 != 0 {
                    merge as u32
                } else {
                    merge as u32 % 3
                };
                let r = new_cache(monitor, max_regions as u64, max_bytes as u64, merge);
                if monitor > 5 || merge > 2 || max_regions == 0 || max_bytes == 0 {
                    assert!(r.is_none(), "a bad config was accepted");
                }
                if let Some(c) = r {
                    caches.push(Obj {
                        ptr: c,
                        destroyed: false,
                    });
                }
            }
            Op::LastError { len } => {
                let mut buf = vec![0x55u8; 256];
                let mut need = 0usize;
                // SAFETY: buf holds 256 >= len bytes.
                let r = unsafe {
                    regcache_last_error(buf.as_mut_ptr().cast(), len as usize, &mut need)
                };
                not_panic("last_error", r);
                assert!(
                    buf[len as usize..].iter().all(|&b| b == 0x55),
                    "last_error wrote past len"
                );
            }
            Op::Strerror { code } => {
                let p = regcache_strerror(code);
                assert!(!p.is_null());
                // SAFETY: a static NUL-terminated string.
                let _ = unsafe { std::ffi::CStr::from_ptr(p) };
            }
        }
    }
    // Tear down: destroy what is left (their handles become stale), and
    // check that the handles really are.
    for c in &mut caches {
        if !c.destroyed {
            // SAFETY: from regcache_cache_new, not destroyed.
            check(
                "final destroy",
                unsafe { regcache_cache_destroy(c.ptr) },
                REGCACHE_OK,
            );
            c.destroyed = true;
        }
    }
    for h in &handles {
        // SAFETY: values from regcache_cache_get, all stale now.
        check(
            "release after destroy",
            unsafe { regcache_handle_release(h.value) },
            REGCACHE_ERR_STALE_HANDLE,
        );
    }
});

/// One of the handle queries; `(result, (start, len))` for the range.
fn query(h: *mut regcache_handle, which: u8, null_out: bool) -> (regcache_result, (usize, usize)) {
    let (mut a, mut b) = (0usize, 0usize);
    let mut k = 0u32;
    let mut flag = false;
    let mut ud = null_mut();
    // SAFETY: h is a value from regcache_cache_get or a forged one that
    // the table rejects; outputs are valid or NULL on purpose.
    let r = unsafe {
        match which % 5 {
            0 => regcache_handle_lkey(h, if null_out { null_mut() } else { &mut k }),
            1 => regcache_handle_rkey(h, if null_out { null_mut() } else { &mut k }),
            2 => regcache_handle_range(h, if null_out { null_mut() } else { &mut a }, &mut b),
            3 => regcache_handle_is_cached(h, if null_out { null_mut() } else { &mut flag }),
            _ => regcache_handle_user_data(h, if null_out { null_mut() } else { &mut ud }),
        }
    };
    (r, (a, b))
}
