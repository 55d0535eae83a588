//! Test memory: anonymous mappings and the map changes a test makes to
//! them, each a real system call on real memory.
//!
//! Every invalidation test is about what `munmap`, `mremap`, `madvise` and
//! `mmap(MAP_FIXED)` do to memory that something registered, so these
//! helpers are deliberately thin: one call each, asserting it succeeded
//! (and naming the call and errno when it did not). None of them keeps
//! the mapping alive for the caller — except [`Mapping`], which unmaps on
//! drop — so a test decides exactly when memory goes away; that moment is
//! what it is testing.
//!
//! Addresses come back as [`AddrRange`] (umn's type, which the cache
//! re-exports), and the caller owns what it maps: every `unsafe` here
//! touches only memory the calling test mapped and hands back.

use std::io;

use umn::{AddrRange, page_size};

/// The byte [`map`] fills fresh memory with: touched pages are populated
/// pages, which is what a registration of real memory finds.
pub const FILL: u8 = 0xa5;

/// `mmap` of `len` bytes of private anonymous memory with `prot` and the
/// extra `flags` (`MAP_PRIVATE | MAP_ANONYMOUS` are always set), at `at`
/// when given (a hint, or fixed with `MAP_FIXED*` in `flags`). The memory is
/// not touched.
///
/// # Errors
/// The `mmap` errno.
pub fn try_mmap(
    at: Option<u64>,
    len: u64,
    prot: libc::c_int,
    flags: libc::c_int,
) -> io::Result<AddrRange> {
    let addr = at.map_or(std::ptr::null_mut(), |a| a as *mut libc::c_void);
    // SAFETY: an anonymous private mapping; the only way it can replace
    // existing memory is MAP_FIXED in `flags`, which the caller asks for
    // over memory it owns.
    let p = unsafe {
        libc::mmap(
            addr,
            len as usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(AddrRange::from_start_len(p as u64, len).expect("mmap returned a range that overflows"))
}

/// A fresh read-write anonymous mapping of `len` bytes chosen by the
/// kernel, every byte written with [`FILL`].
pub fn map(len: u64) -> AddrRange {
    let r = try_mmap(None, len, libc::PROT_READ | libc::PROT_WRITE, 0)
        .unwrap_or_else(|e| panic!("mmap of {len} bytes: {e}"));
    fill(r, FILL);
    r
}

/// [`map`] of `n` pages.
pub fn map_pages(n: u64) -> AddrRange {
    map(n * page_size())
}

/// Write `byte` over all of `r`, which the test mapped read-write.
pub fn fill(r: AddrRange, byte: u8) {
    // SAFETY: `r` is a writable mapping the test owns.
    unsafe { std::ptr::write_bytes(r.start() as *mut u8, byte, r.len() as usize) };
}

/// Why [`try_map_at`] did not map at the address asked for.
#[derive(Debug)]
pub enum NotAt {
    /// Something else is mapped there (`EEXIST`) or mmap failed otherwise.
    Refused(io::Error),
    /// A kernel that ignores `MAP_FIXED_NOREPLACE` (before 4.17) placed the
    /// mapping at this other address; it has been unmapped again.
    Elsewhere(u64),
}

/// A read-write anonymous mapping of `len` bytes exactly at `at`, never
/// replacing anything (`MAP_FIXED_NOREPLACE`); untouched. Tests of address
/// reuse map freed addresses again with it: another thread's allocation
/// may land in the hole first, which the caller treats as "try again".
///
/// # Errors
/// [`NotAt`]: the address is taken, or the kernel put the mapping elsewhere.
pub fn try_map_at(at: u64, len: u64) -> Result<AddrRange, NotAt> {
    let r = try_mmap(
        Some(at),
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_FIXED_NOREPLACE,
    )
    .map_err(NotAt::Refused)?;
    if r.start() != at {
        unmap(r);
        return Err(NotAt::Elsewhere(r.start()));
    }
    Ok(r)
}

/// Map fresh anonymous read-write memory over `over` (`MAP_FIXED`):
/// the pages there are replaced, which is an invalidation.
pub fn map_fixed(over: AddrRange) {
    let r = try_mmap(
        Some(over.start()),
        over.len(),
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_FIXED,
    )
    .unwrap_or_else(|e| panic!("mmap(MAP_FIXED) over {over:?}: {e}"));
    assert_eq!(r.start(), over.start());
}

/// `munmap` of a range the test owns.
pub fn unmap(r: AddrRange) {
    // SAFETY: the test owns this range and nothing references it.
    let rc = unsafe { libc::munmap(r.start() as *mut libc::c_void, r.len() as usize) };
    assert_eq!(rc, 0, "munmap: {}", io::Error::last_os_error());
}

/// `mremap` of `old` to `new_len` bytes with `flags`, to `to` with
/// `MREMAP_FIXED`; the new range.
pub fn mremap(old: AddrRange, new_len: u64, flags: libc::c_int, to: u64) -> AddrRange {
    // SAFETY: remapping memory the test owns.
    let p = unsafe {
        libc::mremap(
            old.start() as *mut libc::c_void,
            old.len() as usize,
            new_len as usize,
            flags,
            to as *mut libc::c_void,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mremap: {}",
        io::Error::last_os_error()
    );
    AddrRange::from_start_len(p as u64, new_len).unwrap()
}

/// `madvise(advice)` over a range the test owns.
pub fn madvise(r: AddrRange, advice: libc::c_int) {
    // SAFETY: advising on memory the test owns.
    let rc = unsafe { libc::madvise(r.start() as *mut libc::c_void, r.len() as usize, advice) };
    assert_eq!(rc, 0, "madvise: {}", io::Error::last_os_error());
}

/// An anonymous private mapping, populated (`MAP_POPULATE`), unmapped on
/// drop: for tests that register memory and want it gone at scope end.
#[derive(Debug)]
pub struct Mapping {
    range: AddrRange,
}

impl Mapping {
    /// `len` bytes with protection `prot`.
    pub fn new(len: usize, prot: libc::c_int) -> Mapping {
        let range = try_mmap(None, len as u64, prot, libc::MAP_POPULATE)
            .unwrap_or_else(|e| panic!("mmap of {len} bytes: {e}"));
        Mapping { range }
    }

    /// The whole mapping.
    pub fn range(&self) -> AddrRange {
        self.range
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Not `unmap`: a test may have unmapped parts (guard pages, holes)
        // already, and a failing munmap must not panic during unwinding.
        // SAFETY: we own this mapping and nothing borrows it any more.
        unsafe {
            libc::munmap(
                self.range.start() as *mut libc::c_void,
                self.range.len() as usize,
            )
        };
    }
}
