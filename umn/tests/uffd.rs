//! The userfaultfd source against real memory-map changes.
//!
//! Every test: register real memory, change the map with the real system
//! call, then assert (1) the generation changed as soon as the call
//! returned, before any read, (2) the exact events, (3) the LAST counter,
//! and (4) that the generation the drain reports is the current one. The
//! scenarios the kernel device shares are written once, in
//! `common/suite.rs`, and named here with `shared_tests!`.
//!
//! Every `Uffd` notifier of the process shares one userfaultfd, so every
//! uffd event moves every one's generation: each test takes the process's
//! memory map to itself (`common::exclusive`) to assert exact values. The
//! notifiers that share the uffd are tested together inside one test
//! (`notifiers_share_one_uffd_and_all_see_one_munmap`, ...).

mod common;

use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::Duration;

use common::suite::{self, changed_then_drain, shared_tests};
use common::*;
use umn::{AddrRange, Cookie, Error, Notifier, Options, Source};

fn open() -> Notifier {
    common::open(Source::Uffd)
}

// The scenarios the kernel device shares, each under its own name (the list is
// in common/suite.rs).
shared_tests!(Source::Uffd);

#[test]
fn munmap_middle_page_hint_is_that_page() {
    let _only = exclusive();
    let n = open();
    let r = map(5);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    let mid = pages(r, 2, 1);
    unmap(mid);
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(mid))]);
    assert_eq!(c, 1);
    // The rest is still registered with the uffd: unmapping it reports too.
    n.unregister(Cookie(1)).unwrap();
    n.register(pages(r, 3, 2), Cookie(2)).unwrap();
    let g1 = n.generation();
    unmap(pages(r, 3, 2));
    let (ev, _) = changed_then_drain(&n, g1);
    assert_eq!(ev, vec![inval(2, Some(pages(r, 3, 2)))]);
    unmap(pages(r, 0, 2));
}

#[test]
fn mremap_move() {
    let _only = exclusive();
    let n = open();
    let moved = suite::mremap_move_registered(&n);
    unmap(moved);
}

#[test]
fn mremap_grow_with_move() {
    let _only = exclusive();
    let n = open();
    // [r: 2 pages][blocker: 1 page]: growing r in place is impossible.
    let all = map(3);
    let r = pages(all, 0, 2);
    let blocker = pages(all, 2, 1);
    // SAFETY: changing protection of memory the test owns splits the VMA.
    let rc = unsafe {
        libc::mprotect(
            blocker.start() as *mut libc::c_void,
            pg() as usize,
            libc::PROT_READ,
        )
    };
    assert_eq!(rc, 0);
    n.register(r, Cookie(3)).unwrap();
    let g0 = n.generation();
    let grown = mremap(r, 8 * pg(), libc::MREMAP_MAYMOVE, 0);
    assert_ne!(
        grown.start(),
        r.start(),
        "the kernel grew in place; test needs a move"
    );
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(3, Some(r))]);
    assert_eq!(c, 1);
    unmap(grown);
    unmap(blocker);
}

#[test]
fn mremap_shrink() {
    let _only = exclusive();
    let n = open();
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    let kept = mremap(r, 2 * pg(), 0, 0);
    assert_eq!(kept, pages(r, 0, 2));
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(pages(r, 2, 2)))]);
    assert_eq!(c, 1);
    unmap(kept);
}

#[test]
fn duplicate_and_unknown_cookies() {
    let _only = exclusive();
    suite::duplicate_and_unknown_cookies_then(Source::Uffd, |n, r| {
        assert!(matches!(
            n.register(AddrRange::new(r.start(), r.start()).unwrap(), Cookie(3)),
            Err(Error::Range(_))
        ));
    });
}

#[test]
fn unmapped_range_is_refused() {
    let _only = exclusive();
    let n = open();
    let r = map(2);
    unmap(r);
    drain(&n);
    assert!(matches!(
        n.register(r, Cookie(1)),
        Err(Error::NotMapped { .. })
    ));
}

#[test]
fn whole_vmas_registered_once_no_split() {
    let _only = exclusive();
    let n = open();
    let r = map(256);
    // VMAs intersecting `r`, from /proc/self/maps.
    let vmas_in_r = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| {
                let span = l.split(' ').next().unwrap();
                let (s, e) = span.split_once('-').unwrap();
                let s = u64::from_str_radix(s, 16).unwrap();
                let e = u64::from_str_radix(e, 16).unwrap();
                s < r.end() && e > r.start()
            })
            .count()
    };
    let before = vmas_in_r();
    let spans = n.registered_spans(); // the process's, none in r
    for i in 0..256 {
        n.register(pages(r, i, 1), Cookie(i)).unwrap();
    }
    assert_eq!(vmas_in_r(), before, "page registrations split the VMA");
    assert_eq!(n.registered_spans(), spans + 1);
    unmap(pages(r, 100, 1));
    assert_eq!(drain(&n).0, vec![inval(100, Some(pages(r, 100, 1)))]);
    unmap(pages(r, 0, 100));
    unmap(pages(r, 101, 155));
    assert_eq!(drain(&n).0.len(), 255);
}

/// A userfaultfd that is not umn's (the application's), with `VMA` of
/// `r` registered with it (MISSING mode, no event features: it never
/// blocks anything). Closed on drop.
struct ForeignUffd(libc::c_int);

impl ForeignUffd {
    fn over(r: AddrRange) -> Self {
        const UFFD_USER_MODE_ONLY: libc::c_int = 1;
        // struct uffdio_api { api, features, ioctls } and struct
        // uffdio_register { start, len, mode, ioctls }, <linux/userfaultfd.h>.
        const UFFDIO_API: u32 = umn::abi::ioc(3, 0xAA, 0x3F, 24);
        const UFFDIO_REGISTER: u32 = umn::abi::ioc(3, 0xAA, 0x00, 32);
        const MODE_MISSING: u64 = 1;
        // SAFETY: userfaultfd(2) with flags only.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                UFFD_USER_MODE_ONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        } as libc::c_int;
        assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
        let mut api = [0xAAu64, 0, 0];
        // SAFETY: `api` is a live struct uffdio_api.
        let rc = unsafe { libc::ioctl(fd, UFFDIO_API as _, api.as_mut_ptr()) };
        assert_eq!(rc, 0, "UFFDIO_API: {}", std::io::Error::last_os_error());
        let mut reg = [r.start(), r.len(), MODE_MISSING, 0];
        // SAFETY: `reg` is a live struct uffdio_register over our mapping.
        let rc = unsafe { libc::ioctl(fd, UFFDIO_REGISTER as _, reg.as_mut_ptr()) };
        assert_eq!(
            rc,
            0,
            "UFFDIO_REGISTER: {}",
            std::io::Error::last_os_error()
        );
        Self(fd)
    }
}

impl Drop for ForeignUffd {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// A userfaultfd that is not umn's owns the VMA: a distinct error, and
/// nothing breaks.
#[test]
fn busy_when_another_uffd_owns_the_vma() {
    let _only = exclusive();
    let n = open();
    let r = map(2);
    // The application registers the VMA with its own userfaultfd first.
    let app = ForeignUffd::over(r);
    match n.register(r, Cookie(1)) {
        Err(Error::Busy { range }) => assert!(range.contains(&r)),
        other => panic!("expected Error::Busy, got {other:?}"),
    }
    // The refused notifier gets no event, and keeps working elsewhere.
    let g = n.generation();
    unmap(r);
    assert_eq!(drain(&n).0, vec![]);
    assert_eq!(n.generation(), g);
    drop(app);
    let other = map(1);
    n.register(other, Cookie(2)).unwrap();
    unmap(other);
    assert_eq!(drain(&n).0, vec![inval(2, Some(other))]);
}

/// Several uffd notifiers in one process (one cache per device) register
/// cookies over the same VMA from their own threads: none is refused
/// (the process has one uffd), and one munmap reaches all of them, each
/// generation moved by the time munmap returned.
#[test]
fn notifiers_share_one_uffd_and_all_see_one_munmap() {
    let _only = exclusive();
    const N: usize = 4;
    let r = map(4);
    let notifiers: Vec<Arc<Notifier>> = (0..N).map(|_| Arc::new(open())).collect();
    let start = Arc::new(Barrier::new(N));
    let threads: Vec<_> = notifiers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (n, start) = (n.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                // Overlapping cookies: the whole range, and page i.
                n.register(r, Cookie(10 + i as u64)).unwrap();
                n.register(pages(r, i as u64, 1), Cookie(20 + i as u64))
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let before: Vec<_> = notifiers.iter().map(|n| drain(n).2).collect();
    unmap(r);
    for (i, n) in notifiers.iter().enumerate() {
        assert_ne!(
            n.generation(),
            before[i],
            "notifier {i}: munmap returned, generation unchanged"
        );
        let (ev, c, _) = drain(n);
        assert_eq!(
            sorted(ev),
            vec![
                inval(10 + i as u64, Some(r)),
                inval(20 + i as u64, Some(pages(r, i as u64, 1)))
            ],
            "notifier {i}"
        );
        assert_eq!(c, 1, "notifier {i}: one raw event");
    }
}

/// Dropping one uffd notifier while another is live leaves the other
/// working: on memory both registered, and on memory registered after the
/// drop (the process's uffd and monitor outlive the first notifier).
#[test]
fn dropping_one_notifier_keeps_the_other_working() {
    let _only = exclusive();
    let a = open();
    let b = open();
    let both = map(2);
    a.register(both, Cookie(1)).unwrap();
    b.register(both, Cookie(2)).unwrap();
    drop(a);
    let g = drain(&b).2;
    // A hang here would be a monitor that left with the first notifier:
    // munmap of uffd-registered memory waits for its event to be read.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        unmap(both);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("munmap blocked after one of two notifiers was dropped");
    assert_ne!(b.generation(), g);
    assert_eq!(drain(&b).0, vec![inval(2, Some(both))]);
    b.unregister(Cookie(2)).unwrap(); // as a cache drops the region
    let later = map(2);
    b.register(later, Cookie(3)).unwrap();
    unmap(pages(later, 1, 1));
    assert_eq!(drain(&b).0, vec![inval(3, Some(pages(later, 1, 1)))]);
    unmap(pages(later, 0, 1));
}

/// An `External` notifier shares the table of live notifiers with the
/// uffd ones but is not fed by the uffd: a munmap of memory a uffd
/// notifier watches (and the external one registered too) reaches only
/// the uffd one.
#[test]
fn external_notifier_gets_no_uffd_events() {
    let _only = exclusive();
    let u = open();
    let e = common::open(Source::External);
    let r = map(2);
    u.register(r, Cookie(1)).unwrap();
    e.register(r, Cookie(2)).unwrap();
    let ge = drain(&e).2;
    unmap(r);
    assert_eq!(drain(&u).0, vec![inval(1, Some(r))]);
    assert_eq!(e.generation(), ge);
    assert_eq!(drain(&e).0, vec![]);
}

#[test]
fn pollable_fd_becomes_readable() {
    let _only = exclusive();
    use std::os::fd::AsRawFd;
    let n = open();
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    drain(&n);
    let poll = |n: &Notifier| {
        let mut p = libc::pollfd {
            fd: n.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) }
    };
    assert_eq!(poll(&n), 0, "readable with nothing pending");
    unmap(r);
    assert_eq!(poll(&n), 1, "not readable after an event");
    drain(&n);
    assert_eq!(poll(&n), 0, "still readable after the drain");
}

#[test]
fn ring_overflow_invalidates_everything() {
    let _only = exclusive();
    let mut o = Options::default();
    o.ring_capacity = 2;
    let n = Notifier::open_with(Source::Uffd, &o).unwrap();
    let rs: Vec<AddrRange> = (0..6).map(|_| map(1)).collect();
    for (i, r) in rs.iter().enumerate() {
        n.register(*r, Cookie(i as u64)).unwrap();
    }
    let keep = map(1);
    n.register(keep, Cookie(100)).unwrap();
    for r in &rs {
        unmap(*r);
    }
    let (ev, _, _) = drain(&n);
    let cookies: std::collections::BTreeSet<u64> = ev.iter().map(|i| i.cookie.0).collect();
    // Nothing lost: every unmapped cookie is reported (the overflow also
    // conservatively reports the survivor, without hint).
    for i in 0..6 {
        assert!(cookies.contains(&i), "cookie {i} lost in overflow: {ev:?}");
    }
    assert!(ev.iter().any(|i| i.range.is_none()));
    unmap(keep);
}

/// A thread that holds a lock and unmaps completes while other threads
/// register and read: the monitor takes no lock, and `read()` never waits
/// for anything an unmapping thread holds. A hang is the failure (caught by
/// the watchdog, not measured).
#[test]
fn unmap_under_application_lock_completes() {
    let _only = exclusive();
    let n = Arc::new(open());
    let app_lock = Arc::new(Mutex::new(()));
    let rounds = 200;
    let (tx, rx) = mpsc::channel();
    let start = Arc::new(Barrier::new(3));
    let unmapper = {
        let (n, app_lock, start) = (n.clone(), app_lock.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            for i in 0..rounds {
                let r = map(2);
                n.register(r, Cookie(1_000_000 + i)).unwrap();
                let _held = app_lock.lock().unwrap();
                unmap(r);
            }
        })
    };
    let reader = {
        let (n, app_lock, start) = (n.clone(), app_lock.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut seen = 0;
            while seen < rounds {
                let _contend = app_lock.lock().unwrap();
                drop(_contend);
                let (ev, _, _) = drain(&n);
                seen += ev.len() as u64;
                let r = map(1);
                n.register(r, Cookie(seen + 10)).ok();
                n.unregister(Cookie(seen + 10)).ok();
                unmap(r);
            }
        })
    };
    std::thread::spawn(move || {
        start.wait();
        unmapper.join().unwrap();
        reader.join().unwrap();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("deadlock: unmapping under a lock did not complete");
}

#[test]
fn fork_child_is_inert_parent_keeps_working() {
    let _only = exclusive();
    let n = open();
    let shared = map(2); // registered, inherited by the child
    let parent_only = map(2);
    n.register(shared, Cookie(1)).unwrap();
    n.register(parent_only, Cookie(2)).unwrap();
    let g0 = drain(&n).2;
    // The child only makes async-signal-safe calls and umn calls that take
    // no lock, then _exit()s.
    let status = in_child(|| {
        // Child: its VMAs lost the uffd context; munmap must not block.
        let mut code = 0;
        if !n.is_forked() {
            code |= 1;
        }
        if !matches!(n.register(parent_only, Cookie(3)), Err(Error::Forked)) {
            code |= 2;
        }
        if n.generation() == g0 {
            code |= 4; // a cache in the child must see a change
        }
        // SAFETY: the child's own copy of the mapping.
        if unsafe { libc::munmap(shared.start() as *mut libc::c_void, shared.len() as usize) } != 0
        {
            code |= 8;
        }
        code
    });
    assert!(libc::WIFEXITED(status), "child did not exit: {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child failure bits");
    // The child's munmap did not touch the parent: no events.
    let (ev, _, g1) = drain(&n);
    assert_eq!(ev, vec![]);
    assert_eq!(g1, g0);
    assert!(!n.is_forked());
    // The parent still gets its own events.
    unmap(shared);
    assert_eq!(drain(&n).0, vec![inval(1, Some(shared))]);
    n.register(map(1), Cookie(3)).unwrap();
    unmap(parent_only);
    assert_eq!(drain(&n).0, vec![inval(2, Some(parent_only))]);
}

#[test]
fn drop_with_live_registrations_releases_everything() {
    let _only = exclusive();
    let r = map(4);
    {
        let n = open();
        n.register(r, Cookie(1)).unwrap();
    }
    // No monitor any more: munmap must not block (the uffd was released).
    let (tx, rx) = mpsc::channel();
    let (s, l) = (r.start(), r.len());
    std::thread::spawn(move || {
        unmap(AddrRange::from_start_len(s, l).unwrap());
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("munmap blocked after the notifier was dropped");
}

/// The protocol on the real kernel, under contention: two threads map,
/// register and unmap while a third drains. After every munmap returns, the
/// generation differs from the value loaded before it, and in the end every
/// registration has been invalidated.
#[test]
fn concurrent_unmaps_never_leave_generation_unchanged() {
    let _only = exclusive();
    use std::sync::atomic::{AtomicBool, Ordering};
    let n = Arc::new(open());
    let done = Arc::new(AtomicBool::new(false));
    let per_thread = 300u64;
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let n = n.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let r = map(1);
                    n.register(r, Cookie(t * 1_000_000 + i)).unwrap();
                    let before = n.generation();
                    unmap(r);
                    assert_ne!(n.generation(), before, "thread {t} round {i}");
                }
            })
        })
        .collect();
    let reader = {
        let (n, done) = (n.clone(), done.clone());
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let take = |got: &mut Vec<umn::Invalidation>| {
                for i in drain(&n).0 {
                    // As a cache does: drop the invalidated entry. (An
                    // address reused before this may hit the old cookie
                    // again: hence the dedup below.)
                    let _ = n.unregister(i.cookie);
                    got.push(i);
                }
            };
            while !done.load(Ordering::Acquire) {
                take(&mut got);
            }
            take(&mut got);
            got
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let mut got: Vec<u64> = reader.join().unwrap().iter().map(|i| i.cookie.0).collect();
    got.sort_unstable();
    got.dedup();
    let mut want: Vec<u64> = (0..2u64)
        .flat_map(|t| (0..per_thread).map(move |i| t * 1_000_000 + i))
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

/// Notifiers open and drop on some threads while others register, unmap
/// and drain: the hub is shared, closed when the count falls to zero and
/// opened again, and notifiers enter and leave the set of a uffd batch in
/// flight. Every munmap moves its notifier's generation before it
/// returns, every drain settles (a `begin` left without its `end` would
/// hang it: the watchdog turns that into a failure), and every
/// registration is invalidated.
#[test]
fn notifiers_opening_and_dropping_while_others_unmap() {
    let _only = exclusive();
    let rounds = 150u64;
    let (tx, rx) = mpsc::channel();
    let worker = |t: u64, keep: bool| {
        std::thread::spawn(move || {
            let long = keep.then(open);
            for i in 0..rounds {
                let short;
                let n = match &long {
                    Some(n) => n,
                    None => {
                        short = open();
                        &short
                    }
                };
                let r = map(1);
                let c = Cookie(t * 1_000_000 + i);
                n.register(r, c).unwrap();
                let before = n.generation();
                unmap(r);
                assert_ne!(n.generation(), before, "thread {t} round {i}");
                let (ev, _, g) = drain(n);
                assert!(g.is_settled());
                assert!(
                    ev.iter().any(|e| e.cookie == c),
                    "thread {t} round {i}: {ev:?}"
                );
                n.unregister(c).unwrap();
            }
        })
    };
    let workers = vec![worker(1, true), worker(2, false), worker(3, false)];
    let churn = std::thread::spawn(move || {
        for _ in 0..rounds {
            drop(open());
        }
    });
    std::thread::spawn(move || {
        let panicked = workers
            .into_iter()
            .chain([churn])
            .map(|w| w.join())
            .filter(Result::is_err)
            .count();
        tx.send(panicked).unwrap();
    });
    let panicked = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("hang: a notifier opening or dropping stalled the others");
    assert_eq!(panicked, 0, "threads failed (their messages are above)");
}
