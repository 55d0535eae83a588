//! The one module that calls `mlock`/`munlock` (dangerous calls go through
//! one place each).

use umn::AddrRange;

/// `mlock(2)` over a page-aligned range.
pub(crate) fn mlock(r: AddrRange) -> std::io::Result<()> {
    // SAFETY: mlock only changes residency of the given pages; it does not
    // read or write them through Rust references. Unmapped ranges fail with
    // ENOMEM rather than faulting.
    let rc = unsafe { libc::mlock(r.start() as *const libc::c_void, r.len() as usize) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `munlock(2)` over a page-aligned range.
pub(crate) fn munlock(r: AddrRange) -> std::io::Result<()> {
    // SAFETY: as for mlock; munlock never touches page contents.
    let rc = unsafe { libc::munlock(r.start() as *const libc::c_void, r.len() as usize) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
