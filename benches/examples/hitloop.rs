//! Tight get+release loop on one cached region, for profilers
//! (`perf record`, `valgrind --tool=callgrind`): prints ns per get+release.
use regcache::{AccessFlags, AddrRange, Cache, Config, PinRegistrar};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let buf = vec![1u8; 1 << 16];
    let r = AddrRange::from_buffer(buf.as_ptr(), buf.len()).unwrap();
    let cache = Cache::new(PinRegistrar::new(), Config::default());
    drop(cache.get(r, AccessFlags::LOCAL_WRITE).unwrap());
    let t = Instant::now();
    let c0 = cpu_ns();
    for _ in 0..n {
        drop(black_box(
            cache.get(black_box(r), AccessFlags::LOCAL_WRITE).unwrap(),
        ));
    }
    let cpu = (cpu_ns() - c0) as f64 / n as f64;
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{cpu:.2} ns of thread CPU time per get+release");
    let s = cache.stats();
    assert_eq!(s.hits, n);
    println!(
        "{ns:.2} ns per get+release ({} hits, {} invalidation source)",
        s.hits,
        cache.monitor().name()
    );
}

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID), ns: unaffected by
/// time spent descheduled on a loaded machine.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
