//! umn benchmarks: the fast-path generation check, and what the uffd
//! monitor costs `munmap` (with and without the monitor pinned to the other
//! core). Run: `cargo bench -p umn`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use umn::{AddrRange, Cookie, Event, Notifier, Options, Source};

const LEN: usize = 64 << 10;

fn mmap64k() -> AddrRange {
    // SAFETY: a fresh anonymous mapping chosen by the kernel.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    AddrRange::from_start_len(p as u64, LEN as u64).unwrap()
}

fn munmap(r: AddrRange) {
    // SAFETY: unmapping a mapping the bench made.
    let rc = unsafe { libc::munmap(r.start() as *mut libc::c_void, r.len() as usize) };
    assert_eq!(rc, 0);
}

fn drain(n: &Notifier) {
    let mut buf = [Event::default(); 64];
    while n.read(&mut buf).unwrap() == buf.len() {}
}

fn pin_self(cpus: &[usize]) {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: cpu < CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: valid set for this thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

fn generation(c: &mut Criterion) {
    let n = Notifier::open(Source::Uffd).unwrap();
    let r = mmap64k();
    n.register(r, Cookie(1)).unwrap();
    let seen = n.generation();
    let w = n.watch();
    c.bench_function("generation_unchanged/notifier", |b| {
        b.iter(|| black_box(black_box(&n).generation() == seen))
    });
    c.bench_function("generation_unchanged/watch", |b| {
        b.iter(|| black_box(black_box(&w).load() == seen))
    });
    munmap(r);
}

/// munmap of a registered, populated 64 KiB range. Setup (untimed) maps
/// and registers; the routine times only munmap (+ the mmap that follows
/// in the full-cycle variant).
fn unmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("munmap_64k");
    g.bench_function("no_monitor", |b| {
        b.iter_batched(mmap64k, munmap, BatchSize::PerIteration)
    });
    for pinned in [false, true] {
        let mut o = Options::default();
        if pinned {
            o.monitor_cpu = Some(1);
            pin_self(&[0]);
        }
        let n = Notifier::open_with(Source::Uffd, &o).unwrap();
        let mut cookie = 0;
        let name = if pinned {
            "uffd_monitor_cross_core"
        } else {
            "uffd_monitor"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    drain(&n);
                    let r = mmap64k();
                    cookie += 1;
                    n.register(r, Cookie(cookie)).unwrap();
                    n.unregister(Cookie(cookie)).unwrap();
                    r
                },
                munmap,
                BatchSize::PerIteration,
            )
        });
        drop(n);
    }
    pin_self(&[0, 1]);
    g.finish();

    // The full cycle mmap + munmap, the figure the issue asks for: the
    // range is registered (its VMA is in the uffd) when it is unmapped.
    let mut g = c.benchmark_group("mmap_munmap_64k");
    g.bench_function("no_monitor", |b| b.iter(|| munmap(mmap64k())));
    let n = Notifier::open(Source::Uffd).unwrap();
    // Each round: a new VMA, registered with the uffd (one UFFDIO_REGISTER
    // plus a PROCMAP_QUERY), unmapped (event through the monitor), drained,
    // unregistered.
    let mut cookie = 0;
    g.bench_function("uffd_monitor_incl_register_and_read", |b| {
        b.iter(|| {
            let r = mmap64k();
            cookie += 1;
            n.register(r, Cookie(cookie)).unwrap();
            munmap(r);
            drain(&n);
            // As the cache does with an invalidated entry.
            n.unregister(Cookie(cookie)).unwrap();
        })
    });
    g.finish();
}

fn madvise(c: &mut Criterion) {
    let mut g = c.benchmark_group("madv_dontneed_64k");
    let r = mmap64k();
    let touch = |r: AddrRange| {
        // SAFETY: writing our own mapping.
        unsafe { std::ptr::write_bytes(r.start() as *mut u8, 1, LEN) }
    };
    let advise = |r: AddrRange| {
        // SAFETY: discarding our own mapping's pages.
        unsafe { libc::madvise(r.start() as *mut libc::c_void, LEN, libc::MADV_DONTNEED) };
    };
    g.bench_function("no_monitor", |b| {
        b.iter_batched(|| touch(r), |_| advise(r), BatchSize::PerIteration)
    });
    let n = Notifier::open(Source::Uffd).unwrap();
    n.register(r, Cookie(1)).unwrap();
    g.bench_function("uffd_monitor", |b| {
        b.iter_batched(
            || {
                drain(&n);
                touch(r)
            },
            |_| advise(r),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    drop(n);
    munmap(r);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = generation, unmap, madvise
}
criterion_main!(benches);
