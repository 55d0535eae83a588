//! The scenarios the userfaultfd source and the kernel device share, each
//! written once and run against both (`tests/uffd.rs`, `tests/kernel.rs`).
//!
//! Every scenario: register real memory, change the map with the real
//! system call, then assert (1) the generation changed as soon as the call
//! returned, before any read, (2) the exact events, (3) the LAST counter,
//! and (4) that the generation the drain reports is the current one.
//!
//! The two sources agree on all of that, with two differences kept here in
//! the open, where they live: the kernel device's generation *is* its
//! counter (its drain checks `Generation(counter)`), while userfaultfd's
//! is a separate seqlock-like value that must be settled (even) after a
//! drain; and the device's hint for memory it did not map page-aligned
//! (a malloc block) may be wider than the block, so there only the cookie
//! is checked. A test file names each shared test with [`shared_tests!`],
//! so the test names (which CI output and the VM tier's scripts use) stay
//! the same in both binaries.

use umn::{AddrRange, Cookie, Error, Generation, Invalidation, Notifier, Source};

use super::*;

/// The notifier a shared scenario runs on: userfaultfd must open on every
/// host the tests run on; the device may be absent (then `None`, SKIPPED).
pub fn open_or_skip(source: Source) -> Option<Notifier> {
    match source {
        Source::Kernel => device(),
        s => Some(open(s)),
    }
}

/// Assert the generation moved since `before` (no read in between), then
/// drain and check the generation the drain reports is settled and
/// current, and that a second drain is quiet; return the events and the
/// LAST counter.
pub fn changed_then_drain(n: &Notifier, before: Generation) -> (Vec<Invalidation>, u64) {
    let kernel = n.source() == Source::Kernel;
    let what = if kernel { "counter" } else { "generation" };
    assert_ne!(
        n.generation(),
        before,
        "the change returned but the {what} did not move"
    );
    let (ev, counter, g) = drain(n);
    if kernel {
        assert_eq!(g, Generation(counter));
    } else {
        assert!(g.is_settled());
    }
    assert_eq!(g, n.generation(), "nothing happened after the drain");
    // Quiet now: a second read is just LAST with the same counter (and,
    // for userfaultfd, the same generation).
    let (ev2, c2, g2) = drain(n);
    assert!(ev2.is_empty(), "second drain not quiet: {ev2:?}");
    assert_eq!(c2, counter);
    if !kernel {
        assert_eq!(g2, g);
    }
    (ev, counter)
}

/// `#[test] fn <name>() { suite::<name>(<source>) }` for each shared
/// scenario: the scenarios under their own names in a test binary. The
/// list is here once, so both binaries run the same set.
#[allow(unused_macros)] // by the test binaries that share no scenario
macro_rules! shared_tests {
    ($source:expr) => {
        common::suite::shared_tests!($source;
            quiet_generation_is_stable,
            munmap_whole_range,
            madvise_dontneed_and_free,
            map_fixed_over_registered_range,
            free_of_mmapped_malloc_block,
            brk_shrink,
            overlapping_registrations_each_get_an_event,
            hit_twice_before_read_is_one_event_without_hint,
            unregister_drops_pending_event,
            munmap_on_another_thread,
            address_reuse_race,
        );
    };
    ($source:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let _only = common::exclusive();
                common::suite::$name($source)
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use shared_tests;

pub fn quiet_generation_is_stable(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let (ev, c, g) = drain(&n);
    assert!(ev.is_empty());
    assert_eq!(c, 0);
    assert_eq!(n.generation(), g);
    assert_eq!(n.watch().load(), g);
    // Touching registered memory (for userfaultfd: WP mode, never
    // write-protected) does not fault into the monitor nor produce events.
    regcache_testkit::mem::fill(r, 1);
    if source == Source::Kernel {
        // mprotect keeps the pages: not reported (report_protection=0).
        // SAFETY: our mapping.
        let rc = unsafe { libc::mprotect(r.start() as *mut _, r.len() as usize, libc::PROT_READ) };
        assert_eq!(rc, 0);
    }
    assert_eq!(n.generation(), g);
    unmap(r);
}

pub fn munmap_whole_range(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(4);
    n.register(r, Cookie(7)).unwrap();
    let g0 = drain(&n).2;
    unmap(r);
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(7, Some(r))]);
    assert_eq!(c, 1);
}

pub fn madvise_dontneed_and_free(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(6);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    madvise(pages(r, 1, 2), libc::MADV_DONTNEED);
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(pages(r, 1, 2)))]);
    assert_eq!(c, 1);
    // The registration stays after DONTNEED (for userfaultfd: the VMA stays
    // registered): FREE is reported too.
    let g1 = n.generation();
    madvise(pages(r, 4, 1), libc::MADV_FREE);
    let (ev, c) = changed_then_drain(&n, g1);
    assert_eq!(ev, vec![inval(1, Some(pages(r, 4, 1)))]);
    assert_eq!(c, 2);
    unmap(r);
}

pub fn map_fixed_over_registered_range(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    let over = pages(r, 1, 2);
    map_fixed(over);
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(over))]);
    assert_eq!(c, 1);
    unmap(r);
}

pub fn free_of_mmapped_malloc_block(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let len = 4 << 20; // far above glibc's mmap threshold (128 KiB .. 32 MiB dynamic)
    // SAFETY: plain malloc.
    let p = unsafe { libc::malloc(len) };
    assert!(!p.is_null());
    // SAFETY: the block is ours.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, len) };
    let r = AddrRange::from_buffer(p.cast(), len).unwrap();
    n.register(r, Cookie(9)).unwrap();
    let g0 = n.generation();
    // SAFETY: freeing our block.
    unsafe { libc::free(p) };
    let (ev, c) = changed_then_drain(&n, g0);
    if source == Source::Kernel {
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].cookie, Cookie(9));
    } else {
        assert_eq!(ev, vec![inval(9, Some(r))]);
    }
    assert_eq!(c, 1);
}

pub fn brk_shrink(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let step = 8 * pg();
    // SAFETY: sbrk is safe to call; the test is the only user of the break
    // between these calls (the monitor never allocates).
    let base = unsafe { libc::sbrk(step as libc::intptr_t) };
    assert_ne!(base as isize, -1);
    let start = (base as u64).next_multiple_of(pg());
    let r = AddrRange::from_start_len(start, 4 * pg()).unwrap();
    regcache_testkit::mem::fill(r, 1);
    n.register(r, Cookie(4)).unwrap();
    let g0 = n.generation();
    // SAFETY: giving back exactly what we took.
    let rc = unsafe { libc::sbrk(-(step as libc::intptr_t)) };
    assert_ne!(rc as isize, -1);
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(4, Some(r))]);
    assert_eq!(c, 1);
}

pub fn overlapping_registrations_each_get_an_event(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(6);
    n.register(pages(r, 0, 4), Cookie(1)).unwrap();
    n.register(pages(r, 2, 4), Cookie(2)).unwrap();
    n.register(pages(r, 5, 1), Cookie(3)).unwrap(); // not hit
    let g0 = n.generation();
    unmap(pages(r, 3, 2));
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(
        sorted(ev),
        vec![
            inval(1, Some(pages(r, 3, 1))),
            inval(2, Some(pages(r, 3, 2)))
        ]
    );
    assert_eq!(c, 1, "one event, one counter bump however many it hits");
    unmap(pages(r, 0, 3));
    unmap(pages(r, 5, 1));
}

pub fn hit_twice_before_read_is_one_event_without_hint(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    unmap(pages(r, 0, 1));
    let g1 = n.generation();
    assert_ne!(g1, g0);
    madvise(pages(r, 2, 1), libc::MADV_DONTNEED);
    let (ev, c) = changed_then_drain(&n, g1);
    assert_eq!(ev, vec![inval(1, None)]);
    assert_eq!(c, 2, "two events hit, two bumps");
    unmap(pages(r, 1, 3));
}

pub fn unregister_drops_pending_event(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    let s = map(2);
    n.register(s, Cookie(2)).unwrap();
    unmap(r);
    unmap(s);
    n.unregister(Cookie(1)).unwrap();
    let (ev, c, _) = drain(&n);
    assert_eq!(ev, vec![inval(2, Some(s))]);
    assert_eq!(c, 2);
}

/// The client refuses a duplicate and an unknown cookie; then `more` runs
/// the source's own refusals on the registered range `r`; the first
/// registration is intact afterwards.
pub fn duplicate_and_unknown_cookies_then(source: Source, more: impl FnOnce(&Notifier, AddrRange)) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    assert!(matches!(
        n.register(pages(r, 1, 1), Cookie(1)),
        Err(Error::DuplicateCookie(Cookie(1)))
    ));
    assert!(matches!(
        n.unregister(Cookie(2)),
        Err(Error::UnknownCookie(Cookie(2)))
    ));
    more(&n, r);
    // The first registration is intact.
    unmap(r);
    assert_eq!(drain(&n).0, vec![inval(1, Some(r))]);
}

pub fn munmap_on_another_thread(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let r = map(4);
    n.register(r, Cookie(5)).unwrap();
    let g0 = n.generation();
    std::thread::spawn(move || unmap(r)).join().unwrap();
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(5, Some(r))]);
    assert_eq!(c, 1);
}

/// Register 4 pages, move them with `mremap(MREMAP_FIXED)` onto another
/// mapping: the event is the whole old range, one bump. Returns the
/// moved range (registered nowhere).
pub fn mremap_move_registered(n: &Notifier) -> AddrRange {
    let r = map(4);
    let dst = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    let moved = mremap(
        r,
        r.len(),
        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
        dst.start(),
    );
    assert_eq!(moved, dst);
    let (ev, c) = changed_then_drain(n, g0);
    assert_eq!(ev, vec![inval(1, Some(r))]);
    assert_eq!(c, 1);
    moved
}

/// A memory-map change a source may be unable to see. Each source
/// declares its blind spots in [`blind_to`]; the scenarios that need a
/// change a source cannot see say so (`SKIPPED ... declared`) instead of
/// failing, and the race reports its stale count without asserting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A system call that bypasses libc (`syscall(SYS_munmap, ..)`, a
    /// statically linked runtime).
    RawSyscall,
    /// `shmdt`, `shmat(SHM_REMAP)` (uffd: only through `umn::hooks`).
    SysvDetach,
    /// The unmap event arrives only after the address is free again, so
    /// another thread can map it and look it up first.
    AfterTheFact,
    /// Anything the host does not push with `notify_unmapped`.
    Unreported,
}

/// What `source` cannot see (module docs of each source: `umn::patch`,
/// `umn::uffd`; the kernel device's MMU notifier sees every change).
pub fn blind_to(source: Source) -> &'static [Change] {
    match source {
        Source::Kernel => &[],
        Source::Patch => &[Change::RawSyscall, Change::SysvDetach],
        Source::Uffd => &[Change::SysvDetach, Change::AfterTheFact],
        _ => &[Change::Unreported],
    }
}

/// Rounds of [`address_reuse_race`]: `UMN_RACE_ROUNDS`, else 200 (CI);
/// `UMN_RACE_ROUNDS=10000` on demand.
pub fn race_rounds() -> u64 {
    std::env::var("UMN_RACE_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("UMN_RACE_ROUNDS: a round count"))
        .unwrap_or(200)
}

/// The cross-thread address-reuse race, as a cache would meet it: thread
/// A unmaps a registered range while thread B maps new memory at the same
/// address as soon as it is free and then checks, as a cache's hit path
/// does, whether the registration is still good: the generation unchanged
/// since the last drain, or changed but the drain has no invalidation of
/// its cookie, is a *stale* result. Prints the stale count per source;
/// asserts 0 for a source not declared [`Change::AfterTheFact`]. The
/// `External` source is driven as a host with its own hooks drives it:
/// `notify_unmapped` before the `munmap`.
pub fn address_reuse_race(source: Source) {
    let Some(n) = open_or_skip(source) else {
        return;
    };
    let rounds = race_rounds();
    let (mut stale, mut raced) = (0u64, 0u64);
    for i in 0..rounds {
        let r = map(16);
        let cookie = Cookie(1_000 + i);
        n.register(r, cookie).unwrap();
        let seen = drain(&n).2;
        let ready = std::sync::Barrier::new(2);
        let got = std::thread::scope(|s| {
            let b = s.spawn(|| {
                ready.wait();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                loop {
                    if let Ok(m) = regcache_testkit::mem::try_map_at(r.start(), r.len()) {
                        // The cache's check, right after the address is ours.
                        let hit = n.generation() == seen
                            || drain(&n).0.iter().all(|e| e.cookie != cookie);
                        break Some((hit, m));
                    }
                    if std::time::Instant::now() > deadline {
                        break None; // something else took the address
                    }
                    std::hint::spin_loop();
                }
            });
            ready.wait();
            if source == Source::External {
                n.notify_unmapped(r).unwrap();
            }
            unmap(r);
            b.join().unwrap()
        });
        if let Some((hit, again)) = got {
            raced += 1;
            stale += u64::from(hit);
            unmap(again);
        }
        n.unregister(cookie).unwrap();
    }
    assert!(
        raced >= rounds / 2,
        "the freed address was reused in only {raced} of {rounds} rounds"
    );
    println!("address reuse race, {source:?} source: {stale} stale of {raced} raced rounds");
    if !blind_to(source).contains(&Change::AfterTheFact) {
        assert_eq!(stale, 0, "{source:?} let a stale registration through");
    }
}
