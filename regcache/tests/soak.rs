//! The soak (issue 15): threads that map, free, remap, discard and
//! register memory concurrently, with verify mode on as the oracle.
//!
//! Each thread keeps a few buffers of its own — `mmap`ed or `malloc`ed,
//! 1 to 64 pages — and in a loop mostly gets and releases registrations on
//! them (hits), and sometimes frees a buffer and makes a new one (the
//! kernel hands freed addresses out again, often to another thread),
//! moves one with `mremap`, or discards its pages with `madvise
//! (MADV_DONTNEED)` (new zero pages under the same address). Every hit is
//! checked against the physical pages it registered
//! ([`regcache::Verify::Pfn`]); the registrar is the testkit's checking
//! `pin` registrar, which records any deregistration of a registration in
//! use. The kernel device should give 0 mismatches (the VM tier runs it,
//! reporting the count; see xtask/src/kmod.rs). userfaultfd has a
//! known hole (docs/RESULTS.md, issue 13): the kernel queues the unmap
//! event only after the address is free again, so another thread that
//! maps the same address and gets in that window is handed the old
//! registration. Under this soak that happens (measured: 186 of 1 000 540
//! checked hits, 4 threads, 20 s); the test asserts that every such hit is
//! caught and repaired, and prints the count, rather than 0. A source that
//! sees nothing ([`MonitorKind::None`]: the deliberately broken one) must
//! be caught by the check, repaired (the next get registers the new
//! pages) and counted.
//!
//! CI form: until 10⁶ hits were checked per source, or
//! `REGCACHE_SOAK_SECS` seconds (default 60) pass, whichever is first.
//! On demand: `REGCACHE_SOAK_SECS=3600 REGCACHE_SOAK_HITS=0 cargo test -p
//! regcache --release --test soak` (0 hits: no hit target, time only).
//! The kernel-device soak runs in the VM tier (`/dev/ummunotify` is there).

use regcache::{AccessFlags, AddrRange, Cache, Config, MonitorKind, Stats};
use regcache_testkit::CheckingRegistrar;
use regcache_testkit::registrar::id;
use regcache_testkit::skip::{skipped, verified_or_skip};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

const THREADS: usize = 4;
const BUFS: usize = 6;
const RW: AccessFlags = AccessFlags::LOCAL_WRITE;

/// xorshift64*: enough randomness for choosing operations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A buffer of one thread.
enum Buf {
    Mmap(AddrRange),
    Malloc(*mut libc::c_void, AddrRange),
}

impl Buf {
    fn new(rng: &mut Rng) -> Buf {
        let page = regcache::page_size();
        let len = (1 + rng.below(64)) * page;
        if rng.below(2) == 0 {
            // SAFETY: a fresh anonymous mapping.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            // SAFETY: the mapping is ours, len bytes.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, len as usize) };
            Buf::Mmap(AddrRange::from_start_len(p as u64, len).unwrap())
        } else {
            // Large mallocs are mmap'd by glibc and unmapped by free.
            // SAFETY: plain malloc; checked for NULL.
            let p = unsafe { libc::malloc(len as usize) };
            assert!(!p.is_null());
            // SAFETY: malloc'd, len bytes.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, len as usize) };
            Buf::Malloc(p, AddrRange::from_start_len(p as u64, len).unwrap())
        }
    }
    fn range(&self) -> AddrRange {
        match self {
            Buf::Mmap(r) | Buf::Malloc(_, r) => *r,
        }
    }
    fn free(self) {
        match self {
            // SAFETY: our mapping.
            Buf::Mmap(r) => unsafe {
                libc::munmap(r.start() as *mut libc::c_void, r.len() as usize);
            },
            // SAFETY: from malloc, freed once.
            Buf::Malloc(p, _) => unsafe { libc::free(p) },
        }
    }
    /// Move an mmap'd buffer elsewhere (mremap MAYMOVE with growth), when
    /// it is still one VMA.
    fn remap(self) -> Buf {
        let Buf::Mmap(r) = self else { return self };
        let new_len = r.len() + regcache::page_size();
        // SAFETY: our mapping; MAYMOVE lets the kernel move it.
        let p = unsafe {
            libc::mremap(
                r.start() as *mut libc::c_void,
                r.len() as usize,
                new_len as usize,
                libc::MREMAP_MAYMOVE,
            )
        };
        if p == libc::MAP_FAILED {
            // EFAULT when the buffer spans several VMAs (a registration of
            // part of it was mlocked, which splits the VMA): keep it.
            return Buf::Mmap(r);
        }
        Buf::Mmap(AddrRange::from_start_len(p as u64, new_len).unwrap())
    }
    /// New zero pages under the same address.
    fn discard(&self) {
        if let Buf::Mmap(r) = self {
            // SAFETY: our private anonymous mapping.
            unsafe {
                libc::madvise(
                    r.start() as *mut libc::c_void,
                    r.len() as usize,
                    libc::MADV_DONTNEED,
                )
            };
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Soak `cache` and return its statistics.
fn soak(cache: &Cache<CheckingRegistrar>) -> Stats {
    let secs = env_u64("REGCACHE_SOAK_SECS", 60);
    let want_hits = env_u64("REGCACHE_SOAK_HITS", 1_000_000);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let stop = &stop;
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) * 0x1234_5678));
                let mut bufs: Vec<Buf> = (0..BUFS).map(|_| Buf::new(&mut rng)).collect();
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let i = rng.below(BUFS as u64) as usize;
                    match rng.below(100) {
                        0..=3 => {
                            let b = bufs.swap_remove(i);
                            b.free();
                            bufs.push(Buf::new(&mut rng));
                        }
                        4 => {
                            let b = bufs.swap_remove(i);
                            bufs.push(b.remap());
                        }
                        5 => bufs[i].discard(),
                        _ => {
                            let r = bufs[i].range();
                            let page = regcache::page_size();
                            let off = rng.below(r.len() / page) * page;
                            let len = (1 + rng.below((r.len() - off) / page)) * page;
                            let req = AddrRange::from_start_len(r.start() + off, len).unwrap();
                            let h = cache.get(req, RW).expect("get on mapped memory");
                            cache.registrar().hold(id(&h));
                            // SAFETY: the buffer is mapped and ours.
                            unsafe { std::ptr::write_volatile(req.start() as *mut u8, 2) };
                            cache.registrar().release(id(&h));
                            drop(h);
                        }
                    }
                    n += 1;
                    if n % 4096 == 0 && t == 0 {
                        let st = cache.stats();
                        if Instant::now() > deadline
                            || (want_hits > 0 && st.verify_checks >= want_hits)
                        {
                            stop.store(true, Relaxed);
                        }
                    }
                }
                bufs.into_iter().for_each(Buf::free);
            });
        }
    });
    cache.stats()
}

fn cache(monitor: MonitorKind, test: &str) -> Option<Cache<CheckingRegistrar>> {
    let c = verified_or_skip(
        Config {
            monitor,
            max_regions: 256,
            ..Config::default()
        },
        test,
    )?;
    if monitor != MonitorKind::None && c.monitor() != monitor {
        skipped(
            test,
            &format!("source {} does not open here", monitor.name()),
        );
        return None;
    }
    Some(c)
}

fn report(test: &str, s: &Stats) {
    eprintln!(
        "{test}: {} gets, {} hits checked, {} mismatches, {} registrations, {} invalidations",
        s.gets,
        s.verify_checks,
        s.verify_mismatches,
        s.registrations,
        s.invalidations_idle + s.invalidations_in_use
    );
}

/// Soak with `monitor`; with `clean`, assert no stale hit was caught.
/// Either way every caught one was repaired: the hit was not returned
/// (the checking registrar saw no registration deregistered in use, and
/// the get went on to register the new pages).
fn soak_with(monitor: MonitorKind, test: &str, clean: bool) {
    let Some(c) = cache(monitor, test) else {
        return;
    };
    let s = soak(&c);
    report(test, &s);
    assert!(s.verify_checks > 0, "{s:?}");
    if clean {
        assert_eq!(
            s.verify_mismatches,
            0,
            "stale hits with the {} source: {s:?}",
            monitor.name()
        );
    }
    assert!(
        c.registrar().violations().is_empty(),
        "{:?}",
        c.registrar().violations()
    );
}

#[test]
fn soak_uffd_verified() {
    // Not clean: the address-reuse window of userfaultfd (module docs).
    soak_with(MonitorKind::Uffd, "soak_uffd_verified", false);
}

#[test]
fn soak_kernel_verified() {
    // `REGCACHE_SOAK_COUNT_ONLY=1`: report stale hits without failing (the
    // kernel tier in CI; see xtask/src/kmod.rs for why).
    let clean = std::env::var("REGCACHE_SOAK_COUNT_ONLY").as_deref() != Ok("1");
    soak_with(MonitorKind::Kernel, "soak_kernel_verified", clean);
}

#[test]
fn soak_broken_source_is_caught() {
    let test = "soak_broken_source_is_caught";
    let Some(c) = cache(MonitorKind::None, test) else {
        return;
    };
    let s = soak(&c);
    report(test, &s);
    assert!(
        s.verify_mismatches >= 1,
        "a source that sees nothing must be caught by verify: {s:?}"
    );
    assert!(
        c.registrar().violations().is_empty(),
        "{:?}",
        c.registrar().violations()
    );
}

#[test]
fn soak_patch_verified() {
    // The synchronous source (issue 13): invalidates before every unmap
    // the soak makes (munmap, mremap, madvise, free), so no stale hit.
    soak_with(MonitorKind::Patch, "soak_patch_verified", true);
}
