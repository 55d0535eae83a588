//! Hit throughput of a thread whose regions nobody touches, while another
//! thread unmaps registered memory of its own in a loop (issue 13, item
//! 2). Not a test: `#[ignore]`d, no thresholds. `cargo xtask kmod
//! --bench-words` runs it in the VM on the kernel device twice, with
//! `REGCACHE_REGION_WORDS=off` (every get compares the process-wide
//! generation, so each of the other thread's unmaps sends this thread's
//! next get to the drain) and `on` (a hit loads its own region's word),
//! and prints the numbers.
//!
//! Each pass measures thread A three ways for the same time: alone; with
//! a control thread B doing the same work on memory nobody watches (map,
//! get through a second cache that has no invalidation source,
//! invalidate, unmap: the same mmap/mlock/munlock/munmap load on the
//! machine, no generation bump); and with B unmapping watched memory (it
//! gets its fresh mapping through A's cache before unmapping it, so every
//! unmap hits a registration and bumps the generation). The loss that
//! words are about is `1 - watched/control` (the control takes out the
//! CPU B itself takes from A: under TCG both vCPUs share the host's
//! cores); `1 - watched/alone` is printed too. Seven passes, interleaved;
//! medians. Under qemu TCG on a shared host only the ratios mean anything.

use regcache::{AccessFlags, AddrRange, Cache, Config, MonitorKind, PinRegistrar};
use regcache_testkit::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LEN: u64 = 64 << 10;
const REGIONS: usize = 16;
const PHASE: Duration = Duration::from_millis(1000);
const PASSES: usize = 7;

/// What thread B does while A gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum B {
    /// Nothing (B does not run).
    Idle,
    /// Map, register through `control` (no source), invalidate, unmap.
    Control,
    /// Map, get through A's cache (watched), unmap: bumps the generation.
    Unmapper,
}

/// Gets per second of thread A on `regions` for `PHASE` while B does
/// `b`; also how many unmaps B made.
fn phase(
    cache: &Cache<PinRegistrar>,
    control: &Cache<PinRegistrar>,
    regions: &[AddrRange],
    b: B,
) -> (f64, u64) {
    let stop = AtomicBool::new(false);
    let unmaps = AtomicU64::new(0);
    let gets = std::thread::scope(|s| {
        if b != B::Idle {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = mem::map(LEN);
                    if b == B::Unmapper {
                        drop(cache.get(r, AccessFlags::LOCAL_WRITE).unwrap());
                    } else {
                        drop(control.get(r, AccessFlags::LOCAL_WRITE).unwrap());
                        control.invalidate(r);
                    }
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "timing; run by cargo xtask kmod --bench-words in the VM"]
fn untouched_regions_hit_rate_while_another_thread_unmaps() {
    let cache = match Cache::try_new(
        PinRegistrar::new(),
        Config {
            monitor: MonitorKind::Kernel,
            merge: regcache::Merge::Off,
            ..Config::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: the kernel device is unavailable here ({e})");
            return;
        }
    };
    let control = Cache::try_new(
        PinRegistrar::new(),
        Config {
            monitor: MonitorKind::None,
            merge: regcache::Merge::Off,
            ..Config::default()
        },
    )
    .unwrap();
    let words = if cache.region_words() { "on" } else { "off" };
    let regions: Vec<AddrRange> = (0..REGIONS).map(|_| mem::map(LEN)).collect();
    for r in &regions {
        drop(cache.get(*r, AccessFlags::LOCAL_WRITE).unwrap());
    }
    let (mut vs_control, mut vs_alone) = (Vec::new(), Vec::new());
    for pass in 0..PASSES {
        let (alone, _) = phase(&cache, &control, &regions, B::Idle);
        let (ctl, ctl_unmaps) = phase(&cache, &control, &regions, B::Control);
        let (watched, unmaps) = phase(&cache, &control, &regions, B::Unmapper);
        let lc = 100.0 * (1.0 - watched / ctl);
        let la = 100.0 * (1.0 - watched / alone);
        println!(
            "BENCH region words {words}, pass {pass}: A gets/s alone {alone:>8.0}, \
             B control {ctl:>8.0} ({ctl_unmaps} unmaps), B watched {watched:>8.0} \
             ({unmaps} unmaps): loss vs control {lc:5.1}%, vs alone {la:5.1}%"
        );
        vs_control.push(lc);
        vs_alone.push(la);
    }
    let s = cache.stats();
    println!(
        "BENCH region words {words}: median loss vs control {:.1}%, vs alone {:.1}%, \
         over {PASSES} passes (A's regions untouched; stats: {} hits, {} misses, \
         {} invalidations)",
        median(vs_control),
        median(vs_alone),
        s.hits,
        s.misses,
        s.monitor_invalidations
    );
    for r in regions {
        mem::unmap(r);
    }
}
