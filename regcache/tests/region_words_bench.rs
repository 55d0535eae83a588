//! Hit throughput of a thread whose regions nobody touches, while another
//! thread unmaps registered memory of its own in a loop (issue 13, item
//! 2). Not a test: `#[ignore]`d, no thresholds. `cargo xtask kmod
//! --bench-words` runs it in the VM on the kernel device twice, with
//! `REGCACHE_REGION_WORDS=off` (every get compares the process-wide
//! generation, so each of the other thread's unmaps sends this thread's
//! next get to the drain) and `on` (a hit loads its own region's word),
//! and prints the numbers.
//!
//! Each pass measures thread A alone, then A with the unmapper B running,
//! for the same time; seven passes, interleaved, and the loss is the
//! median over the passes of `1 - with/alone`. B's unmaps hit a
//! registration every time (it gets its fresh mapping through the cache
//! before unmapping it), so every one of them bumps the generation.
//! Under qemu TCG on a shared host only the ratio means anything.

use regcache::{AccessFlags, AddrRange, Cache, Config, MonitorKind, PinRegistrar};
use regcache_testkit::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LEN: u64 = 64 << 10;
const REGIONS: usize = 16;
const PHASE: Duration = Duration::from_millis(1000);
const PASSES: usize = 7;

/// Gets per second of thread A on `regions` for `PHASE`, with the
/// unmapper running when `unmapper`; also how many unmaps B made.
fn phase(cache: &Cache<PinRegistrar>, regions: &[AddrRange], unmapper: bool) -> (f64, u64) {
    let stop = AtomicBool::new(false);
    let unmaps = AtomicU64::new(0);
    let gets = std::thread::scope(|s| {
        if unmapper {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = mem::map(LEN);
                    drop(cache.get(r, AccessFlags::LOCAL_WRITE).unwrap());
                    mem::unmap(r);
                    unmaps.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let a = s.spawn(|| {
            let t0 = Instant::now();
            let mut n = 0u64;
            while t0.elapsed() < PHASE {
                for r in regions {
                    let h = cache.get(*r, AccessFlags::LOCAL_WRITE).unwrap();
                    std::hint::black_box(&h);
                    n += 1;
                }
            }
            n as f64 / t0.elapsed().as_secs_f64()
        });
        let gets = a.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        gets
    });
    (gets, unmaps.load(Ordering::Relaxed))
}

#[test]
#[ignore = "timing; run by cargo xtask kmod --bench-words in the VM"]
fn untouched_regions_hit_rate_while_another_thread_unmaps() {
    let cache = match Cache::try_new(
        PinRegistrar::new(),
        Config {
            monitor: MonitorKind::Kernel,
            merge: false,
            ..Config::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: the kernel device is unavailable here ({e})");
            return;
        }
    };
    let words = if cache.region_words() { "on" } else { "off" };
    let regions: Vec<AddrRange> = (0..REGIONS).map(|_| mem::map(LEN)).collect();
    for r in &regions {
        drop(cache.get(*r, AccessFlags::LOCAL_WRITE).unwrap());
    }
    let mut losses = Vec::new();
    for pass in 0..PASSES {
        let (alone, _) = phase(&cache, &regions, false);
        let (with, unmaps) = phase(&cache, &regions, true);
        let loss = 100.0 * (1.0 - with / alone);
        println!(
            "BENCH region words {words}, pass {pass}: A alone {alone:>10.0} gets/s, \
             with B unmapping {with:>10.0} gets/s ({unmaps} unmaps): loss {loss:5.1}%"
        );
        losses.push(loss);
    }
    losses.sort_by(f64::total_cmp);
    let s = cache.stats();
    println!(
        "BENCH region words {words}: median loss {:.1}% over {PASSES} passes \
         (A's regions untouched; stats: {} hits, {} misses, {} invalidations)",
        losses[PASSES / 2],
        s.hits,
        s.misses,
        s.monitor_invalidations
    );
    for r in regions {
        mem::unmap(r);
    }
}
