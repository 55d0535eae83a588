//! `regcache_result` (made from the one table in `result/codes.rs`),
//! `regcache_strerror`, the crate's [`Error`] with the conversions from
//! the other crates' errors, and the per-thread error detail behind
//! `regcache_last_error`. The panic barrier that turns an [`Error`] into
//! a code is `object::ffi_guard`.

use crate::object::guard_or;
use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int};

/// Make the `regcache_result` enum, `ALL` (every code, for
/// `regcache_strerror`) and each code's text from the one table in
/// `result/codes.rs`. The enum is `repr(C)` with explicit numbers (the
/// ABI); `text` is an exhaustive `match`, so a code cannot lack a text.
macro_rules! result_codes {
    (
        $(#[$meta:meta])*
        pub enum regcache_result {
            $( $(#[doc = $doc:literal])* $name:ident = $num:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum regcache_result {
            $( $(#[doc = $doc])* $name = $num, )*
        }

        /// Every code, in table order, for `regcache_strerror`.
        const ALL: &[regcache_result] = &[$(regcache_result::$name),*];

        impl regcache_result {
            /// The static text `regcache_strerror` gives for the code.
            fn text(self) -> &'static CStr {
                match self {
                    $( regcache_result::$name => $text, )*
                }
            }
        }
    };
}

include!("result/codes.rs");

use regcache_result::*;

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

/// Record `e`'s detail for `regcache_last_error` and return its code.
#[cold]
pub(crate) fn fail(e: Error) -> regcache_result {
    set_last_error(e.detail);
    e.code
}

/// A static, NUL-terminated description of `result` (a `regcache_result`
/// value; any other number gives "unknown regcache_result"). Never NULL;
/// the string must not be freed.
#[unsafe(no_mangle)]
pub extern "C" fn regcache_strerror(result: c_int) -> *const c_char {
    const UNKNOWN: &CStr = c"unknown regcache_result";
    guard_or(UNKNOWN.as_ptr(), || {
        ALL.iter()
            .find(|r| **r as c_int == result)
            .map_or(UNKNOWN, |r| r.text())
            .as_ptr()
    })
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
    // Not `ffi_guard`: a failure here must not replace the detail it
    // reports. The one output written on an error (`out_len` with
    // `BUFFER_TOO_SMALL`) is the documented exception.
    guard_or(REGCACHE_ERR_PANIC, || {
        if buf.is_null() || out_len.is_null() {
            return REGCACHE_ERR_NULL_ARGUMENT;
        }
        let detail = LAST_ERROR
            .try_with(|l| l.try_borrow().map(|s| s.clone()).unwrap_or_default())
            .unwrap_or_default();
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
    })
}

/// The library version (`"0.1.0"`), static, NUL-terminated.
#[unsafe(no_mangle)]
pub extern "C" fn regcache_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    // A constant: no code that could panic, so no barrier.
    V.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table keeps the numbers: 0, then 4701 up, in order, none
    /// skipped; every code has a text and `regcache_strerror` finds it.
    #[test]
    fn codes_numbers_and_texts() {
        assert_eq!(ALL.len(), 39);
        assert_eq!(ALL.first().copied(), Some(REGCACHE_OK));
        for (i, r) in ALL.iter().enumerate().skip(1) {
            assert_eq!(*r as c_int, 4700 + i as c_int, "{r:?}");
        }
        for r in ALL {
            assert!(!r.text().is_empty(), "{r:?}");
            // SAFETY: strerror returns a static NUL-terminated string.
            let s = unsafe { CStr::from_ptr(regcache_strerror(*r as c_int)) };
            assert_eq!(s, r.text());
        }
        // SAFETY: as above.
        let s = unsafe { CStr::from_ptr(regcache_strerror(-1)) };
        assert_eq!(s, c"unknown regcache_result");
        assert_eq!(REGCACHE_ERR_TRANSPORT as c_int, 4737);
        assert_eq!(REGCACHE_ERR_NOT_CACHED as c_int, 4738);
    }
}
