//! Helpers shared by the integration tests: real mappings, draining.
#![allow(dead_code, unreachable_pub)]

use umn::{AddrRange, Cookie, Event, Generation, Invalidation, Notifier, page_size};

pub fn pg() -> u64 {
    page_size()
}

/// A fresh anonymous read-write mapping of `pages` pages, touched.
pub fn map(pages: u64) -> AddrRange {
    let len = (pages * pg()) as usize;
    // SAFETY: a fresh anonymous mapping chosen by the kernel.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
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
    // SAFETY: the mapping is ours and writable.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0xa5, len) };
    AddrRange::from_start_len(p as u64, len as u64).unwrap()
}

/// `munmap` a range the test owns.
pub fn unmap(r: AddrRange) {
    // SAFETY: the test owns this range and nothing references it.
    let rc = unsafe { libc::munmap(r.start() as *mut libc::c_void, r.len() as usize) };
    assert_eq!(rc, 0, "munmap: {}", std::io::Error::last_os_error());
}

/// Page `i` (0-based) of `r`, `n` pages long.
pub fn pages(r: AddrRange, i: u64, n: u64) -> AddrRange {
    AddrRange::from_start_len(r.start() + i * pg(), n * pg()).unwrap()
}

/// Everything pending, the LAST counter, and the LAST generation.
pub fn drain(n: &Notifier) -> (Vec<Invalidation>, u64, Generation) {
    let mut buf = [Event::default(); 2]; // small: exercises batching
    let mut v = Vec::new();
    loop {
        let k = n.read(&mut buf).unwrap();
        assert!(k > 0, "read returned 0 records with room for 2");
        for e in &buf[..k] {
            match *e {
                Event::Inval(i) => v.push(i),
                Event::Last {
                    counter,
                    generation,
                } => return (v, counter, generation),
            }
        }
    }
}

/// The set of invalidations, sorted by cookie.
pub fn sorted(mut v: Vec<Invalidation>) -> Vec<Invalidation> {
    v.sort_by_key(|i| i.cookie);
    v
}

pub fn inval(c: u64, r: Option<AddrRange>) -> Invalidation {
    Invalidation {
        cookie: Cookie(c),
        range: r,
    }
}
