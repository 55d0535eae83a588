//! Timings of the kernel device against the other sources (not a test:
//! `#[ignore]`d, no thresholds; the VM tier runs them with `--ignored
//! --nocapture` and prints the numbers, which docs/KERNEL.md quotes).
//!
//! 1. Cost added to `munmap` of a registered one-page range: no monitor,
//!    the kernel device, userfaultfd (whose munmap waits for the monitor
//!    thread to read the event).
//! 2. Per-event cost at 10 and 10,000 registrations: `munmap` of one
//!    registered page plus the `read` that collects its event, with the
//!    other registrations elsewhere in the address space (interval tree:
//!    O(log n + k), so the two must be close).

mod common;

use std::time::Instant;

use common::*;
use umn::{Cookie, Event, Notifier, Source};

const ROUNDS: usize = 2000;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median ns of `munmap` of a fresh touched page, registered with `n`
/// under a new cookie when given; events are drained outside the timing.
fn munmap_cost(n: Option<&Notifier>, base_cookie: u64, rounds: usize) -> u64 {
    let mut t = Vec::with_capacity(rounds);
    let mut buf = [Event::default(); 8];
    for i in 0..rounds {
        let r = map(1);
        if let Some(n) = n {
            n.register(r, Cookie(base_cookie + i as u64)).unwrap();
        }
        let t0 = Instant::now();
        unmap(r);
        t.push(t0.elapsed().as_nanos() as u64);
        if let Some(n) = n {
            while !matches!(
                n.read(&mut buf).unwrap().checked_sub(1).map(|k| buf[k]),
                Some(Event::Last { .. })
            ) {}
            let _ = n.unregister(Cookie(base_cookie + i as u64));
        }
    }
    median(t)
}

/// Median ns of munmap + read of the event, with `background`
/// registrations alive elsewhere; plus munmap of an unregistered page.
fn per_event_cost(background: u64) -> (u64, u64, u64) {
    let n = Notifier::open(Source::Kernel).unwrap();
    // Background registrations: disjoint pages of one big reservation
    // (registration needs no populated pages on the device).
    let len = background * 2 * pg();
    let bg = regcache_testkit::mem::try_mmap(None, len, libc::PROT_NONE, libc::MAP_NORESERVE)
        .expect("mmap of the reservation");
    for i in 0..background {
        n.register(pages(bg, 2 * i, 1), Cookie(1 << 40 | i))
            .unwrap();
    }
    let mut hit = Vec::with_capacity(ROUNDS);
    let mut read = Vec::with_capacity(ROUNDS);
    let mut miss = Vec::with_capacity(ROUNDS);
    let mut buf = [Event::default(); 8];
    for i in 0..ROUNDS as u64 {
        let r = map(1);
        n.register(r, Cookie(i)).unwrap();
        let t0 = Instant::now();
        unmap(r);
        let t1 = Instant::now();
        let k = n.read(&mut buf).unwrap();
        let t2 = Instant::now();
        assert!(k >= 1 && matches!(buf[0], Event::Inval(_)));
        hit.push((t1 - t0).as_nanos() as u64);
        read.push((t2 - t1).as_nanos() as u64);
        n.unregister(Cookie(i)).unwrap();
        while !matches!(
            n.read(&mut buf).unwrap().checked_sub(1).map(|k| buf[k]),
            Some(Event::Last { .. })
        ) {}
        let m = map(1);
        let t0 = Instant::now();
        unmap(m);
        miss.push(t0.elapsed().as_nanos() as u64);
    }
    unmap(bg);
    (median(hit), median(read), median(miss))
}

/// Whether the device is there to time; SKIPPED when it is not.
fn device_present() -> bool {
    let present = Notifier::open(Source::Kernel).is_ok();
    if !present {
        println!("SKIPPED: /dev/ummunotify absent");
    }
    present
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (VM tier)"]
fn bench_munmap_added_cost() {
    if !device_present() {
        return;
    }
    // Three passes, each source in turn; the minimum of the per-pass
    // medians (the shared TCG host drifts by tens of percent).
    let (mut none, mut kernel, mut uffd) = (u64::MAX, u64::MAX, Ok(u64::MAX));
    for pass in 0..3u64 {
        none = none.min(munmap_cost(None, 0, ROUNDS));
        let dev = Notifier::open(Source::Kernel).unwrap();
        kernel = kernel.min(munmap_cost(Some(&dev), pass << 32, ROUNDS));
        drop(dev);
        uffd = match (uffd, Notifier::open(Source::Uffd)) {
            (Ok(best), Ok(n)) => Ok(best.min(munmap_cost(Some(&n), pass << 32, ROUNDS / 4))),
            (Ok(_), Err(e)) | (Err(e), _) => Err(e),
        };
    }
    println!("BENCH munmap of a registered 1-page range, min over 3 passes of the median (ns):");
    println!("BENCH   no monitor      {none:>9}");
    println!(
        "BENCH   kernel device   {kernel:>9}  ({:.2}x)",
        kernel as f64 / none as f64
    );
    match uffd {
        Ok(u) => println!(
            "BENCH   userfaultfd     {u:>9}  ({:.2}x; {:.2}x the device)",
            u as f64 / none as f64,
            u as f64 / kernel as f64
        ),
        Err(e) => println!("BENCH   userfaultfd     unavailable: {e}"),
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (VM tier)"]
fn bench_per_event_cost_vs_registrations() {
    if !device_present() {
        return;
    }
    println!(
        "BENCH per event, median of {ROUNDS} (ns): munmap hit | read | munmap miss | hit - miss"
    );
    // Interleaved (10, 10k) x 3; per size the minimum of the medians (the
    // shared TCG host drifts by tens of percent).
    let mut best = [(u64::MAX, u64::MAX, u64::MAX); 2];
    for _ in 0..3 {
        for (j, bg) in [10u64, 10_000].into_iter().enumerate() {
            let (h, r, m) = per_event_cost(bg);
            println!(
                "BENCH   {bg:>6} registrations  {h:>9} | {r:>9} | {m:>9} | {:>7}",
                h as i64 - m as i64
            );
            best[j] = (best[j].0.min(h), best[j].1.min(r), best[j].2.min(m));
        }
    }
    for (bg, (h, r, m)) in [10, 10_000].iter().zip(best) {
        println!("BENCH   best {bg:>6}: munmap hit {h} | read {r} | munmap miss {m}");
    }
    println!(
        "BENCH   ratio 10,000/10 (best): munmap hit {:.2}x, read {:.2}x, munmap miss {:.2}x",
        best[1].0 as f64 / best[0].0 as f64,
        best[1].1 as f64 / best[0].1 as f64,
        best[1].2 as f64 / best[0].2 as f64
    );
}
