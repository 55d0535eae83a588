//! The FFI object layer: what every export does before and after its
//! real work, written once.
//!
//! A C caller can hand us anything: NULL, a pointer to an object it
//! already destroyed, an array pointer with a length that does not match,
//! an output pointer it forgot to set. And a Rust panic must never unwind
//! into C (undefined behaviour, and in practice an abort with no message).
//! So every `extern "C"` function in this crate is built from the pieces
//! here, and none re-implements them:
//!
//! - [`ffi_guard`] / [`guard_or`]: the panic barrier (`catch_unwind`) and
//!   the translation of an [`Error`] into a `regcache_result` plus the
//!   per-thread detail for `regcache_last_error`.
//! - [`Kind`], [`make`], [`live`], [`live_mut`], [`peek`], [`destroy`]: C
//!   objects behind tombstones (below).
//! - [`array()`] and [`array_out`]: a C `(pointer, count)` pair as a slice
//!   to read or to fill, checked for NULL, a bound and byte-size overflow.
//! - [`Out`] and [`write_out`]: output pointers, checked for NULL before
//!   the work and written only once it has succeeded ("outputs written only
//!   on success": on an error every `*out` is left as the caller had it).
//! - [`name_of`]: a NUL-terminated UTF-8 name.
//!
//! ## Tombstones
//!
//! A C object pointer (`regcache_cache *`, `regcache_notifier *`,
//! `regcache_dma_registry *`, `regcache_dma_receiver *`,
//! `regcache_shm_signal *`) names a 16-byte [`Tombstone`]: a magic word
//! and the pointer to the boxed Rust object. The Rust object is freed by
//! `*_destroy`; the tombstone never is. Destroy swaps the magic from the
//! kind's live value to `DEAD` (a compare-exchange, so of two destroys
//! exactly one wins), so using the object again, or destroying it twice,
//! answers `REGCACHE_ERR_DESTROYED` instead of touching freed memory, and a
//! pointer of another kind (a notifier passed as a cache) fails the magic
//! check the same way. The cost is 16 bytes per object ever created, kept
//! reachable from a static list so that leak checkers (valgrind, LSan)
//! report them as reachable, not lost. Objects are created rarely (one
//! cache per process, a few transport endpoints); the wart is accepted.
//!
//! Ordering: a new object reaches other threads through the caller's own
//! synchronisation (it hands the pointer over); the magic is loaded with
//! Acquire and destroy's compare-exchange is AcqRel, so a thread that sees
//! the live magic sees the object it guards. None of that makes a destroy
//! concurrent with another call on the same object safe: that is a caller
//! race, documented on every `*_destroy` (like `free` of memory in use).
//!
//! The hit path (`regcache_cache_get`) checks its cache with [`peek`], the
//! same check with no [`Error`] built, outside `catch_unwind`.

use crate::result::{Error, fail, regcache_result};
use regcache_result::*;
use std::ffi::{CStr, c_char};
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::Ordering::{AcqRel, Acquire};
use std::sync::atomic::{AtomicPtr, AtomicU64};

// ---------------------------------------------------------------------
// The panic barrier.

/// Run an export's body: catch panics, turn errors into codes and record
/// their detail. Every `extern "C"` function returning a `regcache_result`
/// goes through this (the two hit-path fast paths go through it on every
/// path but their hit; see `cache.rs`).
#[inline(always)]
pub(crate) fn ffi_guard(f: impl FnOnce() -> Result<(), Error>) -> regcache_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => REGCACHE_OK,
        Ok(Err(e)) => fail(e),
        Err(_) => fail(Error::new(
            REGCACHE_ERR_PANIC,
            "panic caught at the C boundary",
        )),
    }
}

/// The panic barrier for the exports that do not report through
/// `regcache_last_error` (`regcache_strerror`, `regcache_version`,
/// `regcache_last_error` itself, which must not overwrite the detail it
/// reports): `f`'s value, or `fallback` when it panicked.
#[inline(always)]
pub(crate) fn guard_or<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

// ---------------------------------------------------------------------
// Tombstoned objects.

/// The magic of a destroyed object (every kind).
const DEAD: u64 = 0xdead_0000_dead_0000;

/// A kind of C object: its live magic word and its name in error details.
#[derive(Debug)]
pub(crate) struct Kind {
    /// The magic word while the object is live (8 ASCII bytes naming it).
    pub(crate) live: u64,
    /// What the C API calls it ("cache", "receiver", ...); also the name
    /// of its argument in `REGCACHE_ERR_NULL_ARGUMENT` details.
    pub(crate) what: &'static str,
}

/// What a C object pointer points to (see the module docs). `repr(C)` so
/// that the magic word is first for every `T`: it is read before the kind
/// is known to be right.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Tombstone<T> {
    magic: AtomicU64,
    inner: AtomicPtr<T>,
}

/// Every tombstone ever made (addresses), so they stay reachable.
static TOMBSTONES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Box `v` behind a new, never-freed tombstone of `kind`; returns the C
/// pointer.
pub(crate) fn make<T, C>(kind: &Kind, v: T) -> *mut C {
    let t = Box::leak(Box::new(Tombstone {
        magic: AtomicU64::new(kind.live),
        inner: AtomicPtr::new(Box::into_raw(Box::new(v))),
    }));
    let p = t as *mut Tombstone<T>;
    TOMBSTONES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(p as usize);
    p.cast::<C>()
}

/// The live object behind `p`, or `None` (NULL, destroyed, another
/// kind), as the raw pointer from [`make`].
///
/// # Safety
/// `p` is NULL or was returned by [`make`].
#[inline(always)]
unsafe fn peek_ptr<T, C>(p: *const C, kind: &Kind) -> Option<*mut T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a tombstone from `make` (contract), never freed. Only the
    // magic word is read before it is checked, and it is first in every
    // `Tombstone<T>` (`repr(C)`).
    let t = unsafe { &*p.cast::<Tombstone<T>>() };
    if t.magic.load(Acquire) != kind.live {
        return None;
    }
    Some(t.inner.load(Acquire))
}

/// The live object behind `p`, or `None` (NULL, destroyed, another kind):
/// the check of [`live`] without building an error, for the hit path.
///
/// # Safety
/// `p` is NULL or was returned by [`make`] (as a `T` of `kind`), and is
/// not destroyed while the returned reference is used.
#[inline(always)]
pub(crate) unsafe fn peek<'a, T, C>(p: *const C, kind: &Kind) -> Option<&'a T> {
    // SAFETY: forwarded contract; live: `inner` is the Box from `make`,
    // freed only after the live→DEAD transition, which does not run
    // while the reference is used (contract).
    unsafe { peek_ptr::<T, C>(p, kind).map(|v| &*v) }
}

/// The live object behind `p`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (NULL), `REGCACHE_ERR_DESTROYED`
/// (destroyed, or not an object of this kind).
///
/// # Safety
/// As [`peek`].
#[inline(always)]
pub(crate) unsafe fn live<'a, T, C>(p: *const C, kind: &Kind) -> Result<&'a T, Error> {
    // SAFETY: forwarded contract.
    unsafe { peek(p, kind) }.ok_or_else(|| not_live(p.is_null(), kind))
}

/// As [`live`], for an object used by one thread at a time (a
/// receiver).
///
/// # Errors
/// As [`live`].
///
/// # Safety
/// As [`peek`], and no other reference to the object is used while the
/// returned one is (the object's one-thread contract).
pub(crate) unsafe fn live_mut<'a, T, C>(p: *mut C, kind: &Kind) -> Result<&'a mut T, Error> {
    // SAFETY: forwarded contract: the Box from `make`, live, and unique
    // while the reference is used.
    unsafe { peek_ptr::<T, C>(p, kind).map(|v| &mut *v) }.ok_or_else(|| not_live(p.is_null(), kind))
}

#[cold]
fn not_live(null: bool, kind: &Kind) -> Error {
    let what = kind.what;
    if null {
        Error::null(what)
    } else {
        Error::new(
            REGCACHE_ERR_DESTROYED,
            format!("the {what} was destroyed (or is not a {what})"),
        )
    }
}

/// Mark `p` destroyed and take its object back (the caller drops or
/// tears it down).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED` (already
/// destroyed, or not an object of this kind).
///
/// # Safety
/// `p` is NULL or was returned by [`make`] (as a `T` of `kind`); no other
/// call on it runs concurrently.
pub(crate) unsafe fn destroy<T, C>(p: *mut C, kind: &Kind) -> Result<Box<T>, Error> {
    let what = kind.what;
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: as in `peek`.
    let t = unsafe { &*p.cast::<Tombstone<T>>() };
    if t.magic
        .compare_exchange(kind.live, DEAD, AcqRel, Acquire)
        .is_err()
    {
        return Err(Error::new(
            REGCACHE_ERR_DESTROYED,
            format!("the {what} was already destroyed (or is not a {what})"),
        ));
    }
    let inner = t.inner.swap(std::ptr::null_mut(), AcqRel);
    // SAFETY: we won live→DEAD, so we own the Box from `make`.
    Ok(unsafe { Box::from_raw(inner) })
}

// ---------------------------------------------------------------------
// Arguments.

/// An output pointer, checked for NULL before the work and written once
/// it succeeded.
#[derive(Debug)]
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Check `p` (named `name` in the error).
    ///
    /// # Errors
    /// `REGCACHE_ERR_NULL_ARGUMENT`.
    #[inline(always)]
    pub(crate) fn new(p: *mut T, name: &str) -> Result<Self, Error> {
        if p.is_null() {
            return Err(Error::null(name));
        }
        Ok(Self(p))
    }

    /// Write the result.
    ///
    /// # Safety
    /// The pointer given to [`Out::new`] is valid for one write of `T`.
    #[inline(always)]
    pub(crate) unsafe fn write(self, v: T) -> Result<(), Error> {
        // SAFETY: non-NULL (checked in `new`), writable (contract).
        unsafe { self.0.write(v) };
        Ok(())
    }
}

/// Check `out` and write `v` through it: for outputs computed before the
/// pointer is looked at.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`.
///
/// # Safety
/// `out`, when non-NULL, is valid for one write of `T`.
#[inline(always)]
pub(crate) unsafe fn write_out<T>(out: *mut T, name: &str, v: T) -> Result<(), Error> {
    // SAFETY: forwarded contract.
    unsafe { Out::new(out, name)?.write(v) }
}

/// `n` elements at `p` as a slice, after checking `n` against `max`, the
/// byte size against `isize::MAX` and `p` for NULL (when `n > 0`; an
/// empty array may be NULL).
///
/// # Errors
/// `REGCACHE_ERR_INVALID_ARGUMENT` (too many elements),
/// `REGCACHE_ERR_NULL_ARGUMENT`.
///
/// # Safety
/// When non-NULL, `p` is valid for reads of `n` elements for `'a`.
pub(crate) unsafe fn array<'a, T>(
    p: *const T,
    n: usize,
    max: usize,
    what: &str,
) -> Result<&'a [T], Error> {
    let too_big = n
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize);
    if n > max || too_big {
        return Err(Error::new(
            REGCACHE_ERR_INVALID_ARGUMENT,
            format!("{what}: {n} elements, at most {max}"),
        ));
    }
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::null(what));
    }
    // SAFETY: non-NULL, valid for `n` reads (contract); the byte size fits
    // in `isize` (checked).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Room for `n` elements at `p`, to be written (an output array): checked
/// for NULL (always: an output array is never optional) and for a byte
/// size over `isize::MAX`. The elements are uninitialised until written.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT` (too
/// large).
///
/// # Safety
/// When non-NULL, `p` is valid for writes of `n` elements for `'a`, and
/// not read or written otherwise meanwhile.
pub(crate) unsafe fn array_out<'a, T>(
    p: *mut T,
    n: usize,
    what: &str,
) -> Result<&'a mut [MaybeUninit<T>], Error> {
    if p.is_null() {
        return Err(Error::null(what));
    }
    if n.checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Error::new(
            REGCACHE_ERR_INVALID_ARGUMENT,
            format!("{what}: {n} elements do not fit in the address space"),
        ));
    }
    // SAFETY: non-NULL, valid for `n` writes and not otherwise used
    // (contract); the byte size fits in `isize` (checked);
    // `MaybeUninit<T>` has `T`'s layout and needs no initialisation.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<MaybeUninit<T>>(), n) })
}

/// A NUL-terminated UTF-8 name.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT` (not
/// UTF-8).
///
/// # Safety
/// `name` is NULL or a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn name_of<'a>(name: *const c_char) -> Result<&'a str, Error> {
    if name.is_null() {
        return Err(Error::null("name"));
    }
    // SAFETY: NUL-terminated (contract).
    unsafe { CStr::from_ptr(name) }
        .to_str()
        .map_err(|_| Error::new(REGCACHE_ERR_INVALID_ARGUMENT, "name is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Kind = Kind {
        live: 0x6161_6161_6161_6161,
        what: "a",
    };
    const B: Kind = Kind {
        live: 0x6262_6262_6262_6262,
        what: "b",
    };

    fn code<T>(r: Result<T, Error>) -> regcache_result {
        r.err().map_or(REGCACHE_OK, |e| e.code)
    }

    #[test]
    fn a_destroyed_object_is_a_tombstone() {
        let p: *mut u8 = make(&A, 5u32);
        let null = std::ptr::null_mut::<u8>();
        // SAFETY: `p` came from `make` as a `u32` of kind A; sequential.
        unsafe {
            assert_eq!(live::<u32, u8>(p, &A).ok().copied(), Some(5));
            assert_eq!(code(live::<u32, u8>(p, &B)), REGCACHE_ERR_DESTROYED);
            assert_eq!(code(live::<u32, u8>(null, &A)), REGCACHE_ERR_NULL_ARGUMENT);
            assert_eq!(code(destroy::<u32, u8>(p, &B)), REGCACHE_ERR_DESTROYED);
            assert_eq!(destroy::<u32, u8>(p, &A).map(|b| *b).ok(), Some(5));
            assert_eq!(code(destroy::<u32, u8>(p, &A)), REGCACHE_ERR_DESTROYED);
            assert_eq!(code(live_mut::<u32, u8>(p, &A)), REGCACHE_ERR_DESTROYED);
            assert!(peek::<u32, u8>(p, &A).is_none());
            assert_eq!(
                code(destroy::<u32, u8>(null, &A)),
                REGCACHE_ERR_NULL_ARGUMENT
            );
        }
    }

    #[test]
    fn arrays_are_checked() {
        let v = [1u64, 2, 3];
        let mut w = [0u64; 3];
        // SAFETY: `v` and `w` are valid for 3 elements; NULL is checked.
        unsafe {
            assert_eq!(
                array(std::ptr::null::<u64>(), 0, 4, "x")
                    .map(<[_]>::len)
                    .ok(),
                Some(0)
            );
            assert_eq!(
                code(array(std::ptr::null::<u64>(), 1, 4, "x")),
                REGCACHE_ERR_NULL_ARGUMENT
            );
            assert_eq!(
                code(array(v.as_ptr(), 5, 4, "x")),
                REGCACHE_ERR_INVALID_ARGUMENT
            );
            assert_eq!(array(v.as_ptr(), 3, 4, "x").ok(), Some(&v[..]));
            assert_eq!(
                code(array_out(std::ptr::null_mut::<u64>(), 0, "x")),
                REGCACHE_ERR_NULL_ARGUMENT
            );
            assert_eq!(
                code(array_out(w.as_mut_ptr(), usize::MAX / 4, "x")),
                REGCACHE_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                array_out(w.as_mut_ptr(), 3, "x").map(|s| s.len()).ok(),
                Some(3)
            );
        }
    }

    #[test]
    fn outputs_are_written_only_on_success() {
        let mut x = 7u32;
        let p = &raw mut x;
        let rc = ffi_guard(|| {
            let out = Out::new(p, "out")?;
            Err::<(), _>(Error::new(REGCACHE_ERR_INVALID_ARGUMENT, "no"))?;
            // SAFETY: `p` is valid for a write.
            unsafe { out.write(1) }
        });
        assert_eq!(rc, REGCACHE_ERR_INVALID_ARGUMENT);
        assert_eq!(x, 7);
        // SAFETY: `p` is valid for a write.
        let rc = ffi_guard(|| unsafe { write_out(p, "out", 9) });
        assert_eq!((rc, x), (REGCACHE_OK, 9));
        // SAFETY: NULL is checked, never written.
        let rc = ffi_guard(|| unsafe { write_out(std::ptr::null_mut::<u32>(), "out", 9) });
        assert_eq!(rc, REGCACHE_ERR_NULL_ARGUMENT);
        assert_eq!(ffi_guard(|| panic!("boom")), REGCACHE_ERR_PANIC);
    }
}
