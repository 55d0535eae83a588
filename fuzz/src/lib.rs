//! Helpers shared by the fuzz targets in `fuzz_targets/` (one binary
//! each; `cargo xtask fuzz --list` names them).
//!
//! The targets run under libFuzzer (the `libfuzzer-sys` crate), built by
//! `cargo xtask fuzz` with the stable toolchain's SanitizerCoverage
//! options (`-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-*`,
//! as `cargo fuzz` passes them) but without a sanitizer, which needs
//! nightly's `-Zsanitizer`: the oracle is Rust's own checks (bounds,
//! overflow and debug assertions are on), each target's asserts, and
//! canaries around memory a hostile input could make the code write.

use std::ptr::NonNull;

/// A private anonymous mapping of whole pages that a target may unmap and
/// map again page by page; unmapped on drop.
#[derive(Debug)]
pub struct Arena {
    base: NonNull<u8>,
    pages: usize,
    page: usize,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

impl Arena {
    /// `pages` pages, read-write, filled with a pattern.
    ///
    /// # Panics
    /// If `mmap` fails.
    pub fn new(pages: usize) -> Self {
        let page = page_size();
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let a = Arena {
            base: NonNull::new(p.cast()).expect("mmap returned NULL"),
            pages,
            page,
        };
        // SAFETY: the whole mapping is ours and writable.
        unsafe { std::ptr::write_bytes(a.base.as_ptr(), 0xa5, pages * page) };
        a
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.pages * self.page
    }

    /// Never empty (at least one page); for clippy.
    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    /// The address `off` bytes into the arena (`off < len()`).
    pub fn at(&self, off: usize) -> *mut u8 {
        self.base.as_ptr().wrapping_add(off)
    }

    /// Pages `first .. first + n`, clamped to the arena (mod its length
    /// for `first`).
    fn span(&self, first: usize, n: usize) -> (usize, usize) {
        let first = first % self.pages;
        (first, n.clamp(1, self.pages - first))
    }

    /// `munmap` pages `first .. first + n` (clamped).
    pub fn unmap(&self, first: usize, n: usize) {
        let (first, n) = self.span(first, n);
        // SAFETY: inside our own mapping; nothing in the target keeps a
        // Rust reference into the arena.
        let r = unsafe { libc::munmap(self.at(first * self.page).cast(), n * self.page) };
        assert_eq!(r, 0, "munmap: {}", std::io::Error::last_os_error());
    }

    /// Map pages `first .. first + n` (clamped) afresh (`MAP_FIXED`): new,
    /// zeroed pages at the same addresses.
    pub fn remap(&self, first: usize, n: usize) {
        let (first, n) = self.span(first, n);
        // SAFETY: MAP_FIXED over our own address range only.
        let p = unsafe {
            libc::mmap(
                self.at(first * self.page).cast(),
                n * self.page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: our mapping (holes are fine for munmap).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len()) };
    }
}
