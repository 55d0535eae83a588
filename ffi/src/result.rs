//! `regcache_result`, `regcache_strerror`, the per-thread error detail, and
//! the panic barrier every export goes through.

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The result of every fallible `regcache_*` function.
///
/// `REGCACHE_OK` is 0; errors live in their own range, 4701 and up, so they
/// never look like an errno or another library's code. **Codes are never
/// renumbered**: a retired code stays here as a comment and its number is
/// not reused. `regcache_strerror` gives the text; `regcache_last_error`
/// the detail of the last failure on the calling thread.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_result {
    /// Success.
    REGCACHE_OK = 0,
    /// A required pointer argument was NULL.
    REGCACHE_ERR_NULL_ARGUMENT = 4701,
    /// An address range was empty, started at NULL or overflowed the
    /// address space.
    REGCACHE_ERR_INVALID_RANGE = 4702,
    /// An argument had a value outside its domain (unknown access bits, a
    /// zero limit, an unknown registrar or monitor).
    REGCACHE_ERR_INVALID_ARGUMENT = 4703,
    /// A `REGCACHE_*` environment variable is malformed; the detail names it.
    REGCACHE_ERR_CONFIG_ENV = 4704,
    /// Part of the range is not mapped.
    REGCACHE_ERR_NOT_MAPPED = 4705,
    /// Out of registration resources (ENOMEM/EAGAIN, RLIMIT_MEMLOCK) and
    /// evicting every idle region did not help.
    REGCACHE_ERR_NO_RESOURCES = 4706,
    /// The device refused the access flags for this memory.
    REGCACHE_ERR_ACCESS_REFUSED = 4707,
    /// The requested registrar or event source is not available here (no
    /// RDMA device, no /dev/ummunotify, no userfaultfd).
    REGCACHE_ERR_UNAVAILABLE = 4708,
    /// A registration call failed otherwise (see the detail).
    REGCACHE_ERR_REGISTRAR = 4709,
    /// The handle was already released (or its cache destroyed), or is not
    /// a handle this library made.
    REGCACHE_ERR_STALE_HANDLE = 4710,
    /// The cache or notifier was already destroyed.
    REGCACHE_ERR_DESTROYED = 4711,
    /// The registrar has no keys (the `pin` registrar).
    REGCACHE_ERR_NO_KEYS = 4712,
    /// A Rust panic was caught at the boundary (a bug: please report).
    REGCACHE_ERR_PANIC = 4713,
    /// Another userfaultfd owns the memory (EBUSY).
    REGCACHE_ERR_BUSY = 4714,
    /// The cookie is already registered.
    REGCACHE_ERR_DUPLICATE_COOKIE = 4715,
    /// The cookie is not registered.
    REGCACHE_ERR_UNKNOWN_COOKIE = 4716,
    /// The notifier was inherited across fork; open a new one.
    REGCACHE_ERR_FORKED = 4717,
    /// The operation is not supported by this event source.
    REGCACHE_ERR_UNSUPPORTED = 4718,
    /// An event source's own system call failed (see the detail).
    REGCACHE_ERR_NOTIFIER = 4719,
    /// The output buffer is too small; the required size was written.
    REGCACHE_ERR_BUFFER_TOO_SMALL = 4720,
    /// Nothing arrived before the timeout (or, with a zero timeout, nothing
    /// was ready): `regcache_dma_receiver_recv`, `regcache_shm_signal_wait`.
    REGCACHE_ERR_TIMED_OUT = 4721,
    /// The shared segment or registry already exists (`EEXIST`).
    REGCACHE_ERR_EXISTS = 4722,
    /// The shared segment or registry does not exist (`ENOENT`).
    REGCACHE_ERR_NOT_FOUND = 4723,
    /// A shared-segment system call (`open`, `ftruncate`, `fstat`, `mmap`,
    /// `unlink`, `dup`) failed otherwise (see the detail).
    REGCACHE_ERR_SHM = 4724,
    /// A shared record does not fit in the segment or is misaligned.
    REGCACHE_ERR_SEGMENT_TOO_SMALL = 4725,
    /// A shm_signal descriptor or DMA registry has the wrong magic, version
    /// or geometry (another build, or not initialised).
    REGCACHE_ERR_BAD_SHARED_LAYOUT = 4726,
    /// Computing a DMA key failed (`fstat`, `/proc/self/maps`).
    REGCACHE_ERR_KEY = 4727,
    /// The address is not in a shared, file-backed mapping.
    REGCACHE_ERR_NOT_SHARED = 4728,
    /// Another live process already bound this DMA key.
    REGCACHE_ERR_KEY_IN_USE = 4729,
    /// Every binding slot of the DMA registry is taken.
    REGCACHE_ERR_REGISTRY_FULL = 4730,
    /// No other process has this DMA key bound.
    REGCACHE_ERR_NO_RECEIVER = 4731,
    /// The receiver had no free descriptor, even after a restock request and
    /// one retry.
    REGCACHE_ERR_NO_FREE_DESCRIPTOR = 4732,
    /// A DMA descriptor in shared memory failed validation (sender: the
    /// binding is cut off; receiver: it was repaired and freed).
    REGCACHE_ERR_CORRUPT_DESCRIPTOR = 4733,
    /// The DMA binding was cut off after corruption: unbind and bind again.
    REGCACHE_ERR_CUT_OFF = 4734,
    /// `process_vm_writev` failed with something other than `EPERM` (the
    /// receiver died or unmapped its buffer).
    REGCACHE_ERR_COPY_FAILED = 4735,
    /// Unbind timed out waiting for in-flight sends: the buffers must stay
    /// valid (the receiver handle is closed all the same).
    REGCACHE_ERR_UNBIND_BUSY = 4736,
    /// Another transport failure (see the detail).
    REGCACHE_ERR_TRANSPORT = 4737,
}

use regcache_result::*;

/// Every code, for `regcache_strerror`.
const ALL: [regcache_result; 38] = [
    REGCACHE_OK,
    REGCACHE_ERR_NULL_ARGUMENT,
    REGCACHE_ERR_INVALID_RANGE,
    REGCACHE_ERR_INVALID_ARGUMENT,
    REGCACHE_ERR_CONFIG_ENV,
    REGCACHE_ERR_NOT_MAPPED,
    REGCACHE_ERR_NO_RESOURCES,
    REGCACHE_ERR_ACCESS_REFUSED,
    REGCACHE_ERR_UNAVAILABLE,
    REGCACHE_ERR_REGISTRAR,
    REGCACHE_ERR_STALE_HANDLE,
    REGCACHE_ERR_DESTROYED,
    REGCACHE_ERR_NO_KEYS,
    REGCACHE_ERR_PANIC,
    REGCACHE_ERR_BUSY,
    REGCACHE_ERR_DUPLICATE_COOKIE,
    REGCACHE_ERR_UNKNOWN_COOKIE,
    REGCACHE_ERR_FORKED,
    REGCACHE_ERR_UNSUPPORTED,
    REGCACHE_ERR_NOTIFIER,
    REGCACHE_ERR_BUFFER_TOO_SMALL,
    REGCACHE_ERR_TIMED_OUT,
    REGCACHE_ERR_EXISTS,
    REGCACHE_ERR_NOT_FOUND,
    REGCACHE_ERR_SHM,
    REGCACHE_ERR_SEGMENT_TOO_SMALL,
    REGCACHE_ERR_BAD_SHARED_LAYOUT,
    REGCACHE_ERR_KEY,
    REGCACHE_ERR_NOT_SHARED,
    REGCACHE_ERR_KEY_IN_USE,
    REGCACHE_ERR_REGISTRY_FULL,
    REGCACHE_ERR_NO_RECEIVER,
    REGCACHE_ERR_NO_FREE_DESCRIPTOR,
    REGCACHE_ERR_CORRUPT_DESCRIPTOR,
    REGCACHE_ERR_CUT_OFF,
    REGCACHE_ERR_COPY_FAILED,
    REGCACHE_ERR_UNBIND_BUSY,
    REGCACHE_ERR_TRANSPORT,
];

impl regcache_result {
    fn text(self) -> &'static CStr {
        match self {
            REGCACHE_OK => c"success",
            REGCACHE_ERR_NULL_ARGUMENT => c"a required pointer argument was NULL",
            REGCACHE_ERR_INVALID_RANGE => {
                c"invalid address range (empty, NULL start, or overflowing)"
            }
            REGCACHE_ERR_INVALID_ARGUMENT => c"an argument is outside its domain",
            REGCACHE_ERR_CONFIG_ENV => c"a REGCACHE_* environment variable is malformed",
            REGCACHE_ERR_NOT_MAPPED => c"the memory range is not (entirely) mapped",
            REGCACHE_ERR_NO_RESOURCES => {
                c"out of registration resources (ENOMEM, EAGAIN or RLIMIT_MEMLOCK)"
            }
            REGCACHE_ERR_ACCESS_REFUSED => c"access flags refused for this memory",
            REGCACHE_ERR_UNAVAILABLE => c"registrar or event source not available",
            REGCACHE_ERR_REGISTRAR => c"registration call failed",
            REGCACHE_ERR_STALE_HANDLE => c"handle already released or not valid",
            REGCACHE_ERR_DESTROYED => c"cache or notifier already destroyed",
            REGCACHE_ERR_NO_KEYS => c"this registrar has no lkey/rkey",
            REGCACHE_ERR_PANIC => c"internal error (panic caught at the C boundary)",
            REGCACHE_ERR_BUSY => c"another userfaultfd owns the memory (EBUSY)",
            REGCACHE_ERR_DUPLICATE_COOKIE => c"cookie already registered",
            REGCACHE_ERR_UNKNOWN_COOKIE => c"cookie not registered",
            REGCACHE_ERR_FORKED => c"notifier inherited across fork; open a new one",
            REGCACHE_ERR_UNSUPPORTED => c"operation not supported by this event source",
            REGCACHE_ERR_NOTIFIER => c"event source system call failed",
            REGCACHE_ERR_BUFFER_TOO_SMALL => c"output buffer too small",
            REGCACHE_ERR_TIMED_OUT => c"timed out: nothing arrived (or nothing ready)",
            REGCACHE_ERR_EXISTS => c"shared segment already exists",
            REGCACHE_ERR_NOT_FOUND => c"shared segment does not exist",
            REGCACHE_ERR_SHM => c"shared segment system call failed",
            REGCACHE_ERR_SEGMENT_TOO_SMALL => c"shared segment too small or record misaligned",
            REGCACHE_ERR_BAD_SHARED_LAYOUT => {
                c"shared descriptor or registry has the wrong magic, version or layout"
            }
            REGCACHE_ERR_KEY => c"computing a DMA key failed",
            REGCACHE_ERR_NOT_SHARED => c"address is not in a shared file mapping",
            REGCACHE_ERR_KEY_IN_USE => c"DMA key already bound by another process",
            REGCACHE_ERR_REGISTRY_FULL => c"DMA registry is full",
            REGCACHE_ERR_NO_RECEIVER => c"no receiver bound to the DMA key",
            REGCACHE_ERR_NO_FREE_DESCRIPTOR => c"receiver has no free descriptor",
            REGCACHE_ERR_CORRUPT_DESCRIPTOR => c"corrupt DMA descriptor",
            REGCACHE_ERR_CUT_OFF => c"DMA binding cut off after corruption",
            REGCACHE_ERR_COPY_FAILED => c"cross-process copy (process_vm_writev) failed",
            REGCACHE_ERR_UNBIND_BUSY => c"unbind timed out waiting for in-flight sends",
            REGCACHE_ERR_TRANSPORT => c"transport operation failed",
        }
    }
}

/// An error inside the library: the code and the detail for
/// `regcache_last_error`.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) code: regcache_result,
    pub(crate) detail: String,
}

impl Error {
    pub(crate) fn new(code: regcache_result, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
    pub(crate) fn null(arg: &str) -> Self {
        Self::new(
            REGCACHE_ERR_NULL_ARGUMENT,
            format!("argument `{arg}` is NULL"),
        )
    }
}

impl From<regcache::RangeError> for Error {
    fn from(e: regcache::RangeError) -> Self {
        Error::new(REGCACHE_ERR_INVALID_RANGE, e.to_string())
    }
}

impl From<regcache::RegistrarError> for Error {
    fn from(e: regcache::RegistrarError) -> Self {
        use regcache::RegistrarError as E;
        let code = match &e {
            E::NoResources { .. } => REGCACHE_ERR_NO_RESOURCES,
            E::NotMapped { .. } => REGCACHE_ERR_NOT_MAPPED,
            E::AccessRefused { .. } => REGCACHE_ERR_ACCESS_REFUSED,
            E::Unavailable { .. } => REGCACHE_ERR_UNAVAILABLE,
            _ => REGCACHE_ERR_REGISTRAR,
        };
        Error::new(code, e.to_string())
    }
}

impl From<regcache::CacheError> for Error {
    fn from(e: regcache::CacheError) -> Self {
        match e {
            regcache::CacheError::Range(r) => r.into(),
            regcache::CacheError::Registrar(r) => r.into(),
            regcache::CacheError::Monitor(m) => m.into(),
            other => Error::new(REGCACHE_ERR_REGISTRAR, other.to_string()),
        }
    }
}

impl From<umn::Error> for Error {
    fn from(e: umn::Error) -> Self {
        use umn::Error as E;
        let code = match &e {
            E::DeviceAbsent | E::DeviceOpen(_) | E::UffdOpen { .. } | E::UffdApi(_) => {
                REGCACHE_ERR_UNAVAILABLE
            }
            E::Busy { .. } => REGCACHE_ERR_BUSY,
            E::NotMapped { .. } => REGCACHE_ERR_NOT_MAPPED,
            E::DuplicateCookie(_) => REGCACHE_ERR_DUPLICATE_COOKIE,
            E::UnknownCookie(_) => REGCACHE_ERR_UNKNOWN_COOKIE,
            E::Range(_) => REGCACHE_ERR_INVALID_RANGE,
            E::Forked => REGCACHE_ERR_FORKED,
            E::Unsupported(_) => REGCACHE_ERR_UNSUPPORTED,
            _ => REGCACHE_ERR_NOTIFIER,
        };
        Error::new(code, e.to_string())
    }
}

thread_local! {
    /// Detail of the last failed call on this thread.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(detail: String) {
    let _ = LAST_ERROR.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = detail;
        }
    });
}

/// Run an export's body: catch panics, turn errors into codes and record
/// their detail. Every `extern "C"` function goes through this.
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

#[cold]
fn fail(e: Error) -> regcache_result {
    set_last_error(e.detail);
    e.code
}

/// A static, NUL-terminated description of `result` (a `regcache_result`
/// value; any other number gives "unknown regcache_result"). Never NULL;
/// the string must not be freed.
#[unsafe(no_mangle)]
pub extern "C" fn regcache_strerror(result: c_int) -> *const c_char {
    catch_unwind(|| {
        ALL.iter()
            .find(|r| **r as c_int == result)
            .map_or(c"unknown regcache_result", |r| r.text())
            .as_ptr()
    })
    .unwrap_or(c"unknown regcache_result".as_ptr())
}

/// Copy the detail of the last failed `regcache_*` call on the calling
/// thread (e.g. `REGCACHE_MAX_BYTES="12Q" is not valid: expected ...`) into
/// `buf` as a NUL-terminated string. `out_len` receives the length without
/// the NUL. An empty string when no call has failed on this thread.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` when `buf` or `out_len` is NULL;
/// `REGCACHE_ERR_BUFFER_TOO_SMALL` when `len` is not more than the length:
/// then only `out_len` is written (call again with `*out_len + 1` bytes).
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes; `out_len` for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_last_error(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> regcache_result {
    let detail = LAST_ERROR
        .try_with(|l| l.try_borrow().map(|s| s.clone()).unwrap_or_default())
        .unwrap_or_default();
    catch_unwind(AssertUnwindSafe(|| {
        if buf.is_null() || out_len.is_null() {
            return REGCACHE_ERR_NULL_ARGUMENT;
        }
        let n = detail.len();
        // SAFETY: out_len is non-NULL and valid for one write (contract).
        unsafe { out_len.write(n) };
        if len <= n {
            return REGCACHE_ERR_BUFFER_TOO_SMALL;
        }
        // SAFETY: buf is valid for `len` > n bytes (contract); the source
        // is our own String, which does not overlap caller memory.
        unsafe {
            std::ptr::copy_nonoverlapping(detail.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
        REGCACHE_OK
    }))
    .unwrap_or(REGCACHE_ERR_PANIC)
}

/// The library version (`"0.1.0"`), static, NUL-terminated.
#[unsafe(no_mangle)]
pub extern "C" fn regcache_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}

/// Write `v` through `out` after checking it for NULL.
///
/// # Safety
/// `out`, when non-NULL, is valid for one write of `T`.
#[inline(always)]
pub(crate) unsafe fn write_out<T>(out: *mut T, name: &str, v: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(Error::null(name));
    }
    // SAFETY: non-NULL, and valid for a write per the caller's contract.
    unsafe { out.write(v) };
    Ok(())
}
