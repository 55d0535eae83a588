//! Get+release over many live regions, for profilers (`perf`,
//! `valgrind --tool=callgrind`): `manyloop N ITERS [rr|random]` caches N
//! distinct 64 KiB regions (each followed by a free page, so none merge),
//! then runs ITERS get+release visiting them round-robin or in a fixed
//! random order, and prints thread CPU ns per get+release. Issue 17's
//! "hits on many live regions"; `hitloop` is the one-hot-buffer twin.
use regcache::{AccessFlags, AddrRange, Cache, Config, PinRegistrar};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let iters: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let random = args.next().is_some_and(|s| s == "random");
    let page = regcache::page_size() as usize;
    let stride = (64 << 10) + page;
    let len = n * stride;
    // SAFETY: a fresh anonymous private mapping; aliases nothing.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let region =
        |i: usize| AddrRange::from_start_len(base as u64 + (i * stride) as u64, 64 << 10).unwrap();
    let cache = Cache::new(
        PinRegistrar::new(),
        Config {
            max_regions: n.max(16384),
            max_bytes: 1 << 40,
            ..Config::default()
        },
    );
    for i in 0..n {
        drop(cache.get(region(i), AccessFlags::LOCAL_WRITE).unwrap());
    }
    let mut order: Vec<AddrRange> = (0..n).map(region).collect();
    if random {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
    }
    let before = cache.stats();
    let t = Instant::now();
    let c0 = cpu_ns();
    for k in 0..iters {
        let r = order[k % n];
        drop(black_box(
            cache.get(black_box(r), AccessFlags::LOCAL_WRITE).unwrap(),
        ));
    }
    let cpu = (cpu_ns() - c0) as f64 / iters as f64;
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    let s = cache.stats();
    assert_eq!(s.hits - before.hits, iters as u64, "every get is a hit");
    println!("{cpu:.2} ns of thread CPU time per get+release over {n} regions ({ns:.2} ns wall)");
    drop(cache);
    // SAFETY: the mapping made above; the cache (and its registrations)
    // is gone.
    unsafe { libc::munmap(base, len) };
}

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID), ns.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
