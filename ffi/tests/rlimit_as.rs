//! The handle table under an address-space limit (`RLIMIT_AS`, what
//! `ulimit -v` in a batch job sets): the table's full 128 MiB reservation
//! is refused, and the C API must still hand out handles from a smaller
//! table rather than fail every get with `REGCACHE_ERR_NO_RESOURCES`.
//!
//! Alone in its test binary because the limit is process-wide and the
//! table is mapped once per process, on the first get.

mod common;

use regcache_ffi::*;
use regcache_result::*;

/// This process's current virtual size in bytes (`VmSize` in
/// `/proc/self/status`).
fn vm_size() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kb << 10
}

#[test]
fn handles_work_under_an_address_space_limit() {
    let bufs: Vec<Vec<u8>> = (0..4).map(|i| vec![i as u8; 1 << 16]).collect();
    let c = common::new_pin_cache();
    // Room for 16 MiB more: the 128 MiB and 32 MiB tables are refused,
    // the 8 MiB one fits.
    let limit = vm_size() + (16 << 20);
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads one rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    // The limit binds: a 128 MiB reservation like the full table's fails.
    // SAFETY: an anonymous mapping, unmapped below if it was made.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            128 << 20,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        // SAFETY: p is the mapping just made.
        unsafe { libc::munmap(p, 128 << 20) };
        panic!("RLIMIT_AS did not bind: a 128 MiB mapping succeeded");
    }

    // More handles out at once than one batch of the table (1024), on
    // every buffer, then all released, then each stale.
    let mut out = Vec::new();
    for i in 0..3000 {
        let b = &bufs[i % bufs.len()];
        let mut h: *mut regcache_handle = std::ptr::null_mut();
        // SAFETY: c is live, b is mapped, h is written on success.
        let r = unsafe { regcache_cache_get(c, b.as_ptr().cast(), b.len(), 1, &mut h) };
        assert_eq!(r, REGCACHE_OK, "get {i} under RLIMIT_AS");
        out.push(h);
    }
    for &h in &out {
        // SAFETY: each handle is released once here.
        assert_eq!(unsafe { regcache_handle_release(h) }, REGCACHE_OK);
    }
    for &h in &out[..10] {
        // SAFETY: the C API answers a released handle value with
        // STALE_HANDLE (what this checks); it touches no freed memory.
        let r = unsafe { regcache_handle_release(h) };
        assert_eq!(r, REGCACHE_ERR_STALE_HANDLE);
    }
    let rl = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) };
    // SAFETY: c is live and no handle is out.
    assert_eq!(unsafe { regcache_cache_destroy(c) }, REGCACHE_OK);
}
