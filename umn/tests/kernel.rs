//! The kernel device (`/dev/ummunotify`, umn/kmod) against real
//! memory-map changes: every scenario of `tests/uffd.rs` that applies to
//! the device, plus what only the device has (the read-only counter page,
//! per-registration words, per-process files, the bounded queue).
//!
//! On a host without the module these tests print SKIPPED by name. In the
//! VM tier (`cargo xtask kmod`) the module is loaded and
//! `REGCACHE_REQUIRE_DEVICE=1` turns "absent" into a failure.

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use common::suite::{self, changed_then_drain, shared_tests};
use common::*;
use umn::abi;
use umn::{AddrRange, Cookie, Error, Notifier, Source};

// The scenarios the userfaultfd source shares, each under its own name (the list is
// in common/suite.rs).
shared_tests!(Source::Kernel);

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A raw descriptor on the device, as a 2010 program opens it.
struct RawDev(libc::c_int);

impl RawDev {
    fn open() -> Option<Self> {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c"/dev/ummunotify".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        (fd >= 0).then_some(Self(fd))
    }
    /// [`RawDev::open`], or `None` and SKIPPED when the device is absent.
    fn open_or_skip() -> Option<Self> {
        let raw = Self::open();
        if raw.is_none() {
            device_absent();
        }
        raw
    }
    fn ioctl<T>(&self, req: u32, arg: &mut T) -> Result<(), i32> {
        // SAFETY: every request used here reads/writes exactly one T.
        let rc = unsafe { libc::ioctl(self.0, req as _, arg as *mut T) };
        if rc < 0 {
            Err(errno().raw_os_error().unwrap())
        } else {
            Ok(())
        }
    }
    fn register(&self, r: AddrRange, cookie: u64) -> Result<u32, i32> {
        let mut a = abi::ummunotify_register_ioctl {
            start: r.start(),
            end: r.end(),
            user_cookie: cookie,
            flags: 0,
            reserved: 0,
        };
        self.ioctl(abi::UMMUNOTIFY_REGISTER_REGION, &mut a)
            .map(|()| a.reserved)
    }
    fn read_into(&self, buf: *mut u8, len: usize) -> isize {
        // SAFETY: the kernel checks `buf`; tests pass bad pointers on purpose.
        unsafe { libc::read(self.0, buf.cast(), len) }
    }
}

impl Drop for RawDev {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.0) };
    }
}

#[test]
fn absent_device_is_a_named_error() {
    if std::path::Path::new(umn::DEVICE_PATH).exists() {
        println!("SKIPPED: /dev/ummunotify present; absence not testable here");
        return;
    }
    assert!(!required(), "REGCACHE_REQUIRE_DEVICE=1 but no device");
    let e = Notifier::open(Source::Kernel).unwrap_err();
    assert!(matches!(e, Error::DeviceAbsent));
    assert_eq!(e.to_string(), "/dev/ummunotify not present");
}

#[test]
fn auto_picks_the_device() {
    let Some(_) = device() else { return };
    assert_eq!(
        Notifier::open(Source::Auto).unwrap().source(),
        Source::Kernel
    );
}

#[test]
fn munmap_middle_page() {
    let Some(n) = device() else { return };
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = drain(&n).2;
    unmap(pages(r, 1, 1));
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(pages(r, 1, 1)))]);
    assert_eq!(c, 1);
    assert!(matches!(
        n.register(r, Cookie(1)),
        Err(Error::DuplicateCookie(_))
    ));
    // The rest is still registered.
    let g1 = n.generation();
    unmap(pages(r, 2, 2));
    let (ev, _) = changed_then_drain(&n, g1);
    assert_eq!(ev, vec![inval(1, Some(pages(r, 2, 2)))]);
    unmap(pages(r, 0, 1));
}

#[test]
fn mremap_move_grow_and_shrink() {
    let Some(n) = device() else { return };
    let moved = suite::mremap_move_registered(&n);
    // Shrink: the cut-off tail.
    n.register(moved, Cookie(2)).unwrap();
    let g1 = n.generation();
    let kept = mremap(moved, 2 * pg(), 0, 0);
    let (ev, _) = changed_then_drain(&n, g1);
    assert_eq!(ev, vec![inval(2, Some(pages(moved, 2, 2)))]);
    // Grow with move (a blocker after it).
    let blocker = map(1);
    let _ = blocker;
    n.unregister(Cookie(2)).unwrap();
    n.register(kept, Cookie(3)).unwrap();
    let g2 = n.generation();
    let grown = mremap(kept, 64 * pg(), libc::MREMAP_MAYMOVE, 0);
    if grown.start() == kept.start() {
        println!("note: grew in place; no event expected for a pure grow");
        assert_eq!(n.generation(), g2);
    } else {
        let (ev, _) = changed_then_drain(&n, g2);
        assert_eq!(ev, vec![inval(3, Some(kept))]);
    }
    unmap(grown);
    unmap(blocker);
}

/// A repeat hit inside the pending hint (what mremap's move does in the
/// kernel) leaves the event and the counter as they were.
#[test]
fn repeat_hit_inside_the_hint_changes_nothing() {
    let Some(n) = device() else { return };
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    madvise(pages(r, 1, 2), libc::MADV_DONTNEED);
    let g1 = n.generation();
    assert_ne!(g1, g0);
    madvise(pages(r, 1, 1), libc::MADV_DONTNEED);
    assert_eq!(n.generation(), g1);
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(pages(r, 1, 2)))]);
    assert_eq!(c, 1);
    unmap(r);
}

#[test]
fn duplicate_and_unknown_cookies() {
    suite::duplicate_and_unknown_cookies_then(Source::Kernel, |_, r| {
        // The device itself refuses, too (a C program has no client-side set).
        let raw = RawDev::open().unwrap();
        raw.register(r, 5).unwrap();
        assert_eq!(raw.register(pages(r, 1, 1), 5), Err(libc::EEXIST));
        let mut unknown = 6u64;
        assert_eq!(
            raw.ioctl(abi::UMMUNOTIFY_UNREGISTER_REGION, &mut unknown),
            Err(libc::ENOENT)
        );
        let mut empty = abi::ummunotify_register_ioctl {
            start: r.start(),
            end: r.start(),
            user_cookie: 7,
            flags: 0,
            reserved: 0,
        };
        assert_eq!(
            raw.ioctl(abi::UMMUNOTIFY_REGISTER_REGION, &mut empty),
            Err(libc::EINVAL)
        );
        let mut flagged = abi::ummunotify_register_ioctl {
            end: r.end(),
            flags: 1,
            ..empty
        };
        assert_eq!(
            raw.ioctl(abi::UMMUNOTIFY_REGISTER_REGION, &mut flagged),
            Err(libc::EINVAL)
        );
    });
}

/// Unlike userfaultfd, the device watches addresses, not VMAs: a range
/// with nothing mapped may be registered and reports once mapped memory
/// there changes.
#[test]
fn unmapped_range_is_accepted_and_watched() {
    let Some(n) = device() else { return };
    let r = map(2);
    unmap(r);
    n.register(r, Cookie(1)).unwrap();
    // Map at the address we just gave back (something may have taken it).
    if regcache_testkit::mem::try_map_at(r.start(), r.len()).is_err() {
        println!("note: address reused meanwhile; only registration checked");
        return;
    }
    let g0 = n.generation();
    unmap(r);
    let (ev, _) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(r))]);
}

fn poll_in(fd: libc::c_int, timeout_ms: libc::c_int) -> libc::c_int {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) }
}

#[test]
fn poll_select_epoll_become_readable() {
    let Some(n) = device() else { return };
    let fd = n.as_raw_fd();
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    drain(&n);
    assert_eq!(poll_in(fd, 0), 0, "readable with nothing pending");
    // SAFETY: epoll on our descriptor.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 42,
    };
    // SAFETY: valid epoll and event.
    let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    assert_eq!(rc, 0);
    let mut out = [libc::epoll_event { events: 0, u64: 0 }; 2];
    // SAFETY: out has room for 2.
    assert_eq!(unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 2, 0) }, 0);
    // A thread unmaps while we wait in epoll.
    let (s, l) = (r.start(), r.len());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        unmap(AddrRange::from_start_len(s, l).unwrap());
    });
    // SAFETY: as above.
    let k = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 2, 30_000) };
    t.join().unwrap();
    assert_eq!(k, 1, "epoll did not wake up");
    assert_eq!({ out[0].u64 }, 42);
    assert_eq!(poll_in(fd, 0), 1, "not readable after an event");
    // select(2)
    // SAFETY: fd_set is plain data; FD_SET on our fd below FD_SETSIZE.
    let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::FD_SET(fd, &mut set) };
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: valid sets and timeout.
    let k = unsafe {
        libc::select(
            fd + 1,
            &mut set,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut tv,
        )
    };
    assert_eq!(k, 1, "select: not readable");
    drain(&n);
    assert_eq!(poll_in(fd, 0), 0, "still readable after the drain");
    // SAFETY: our epoll descriptor.
    unsafe { libc::close(ep) };
}

static SIGIO_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_sigio(_: libc::c_int) {
    SIGIO_SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn sigio_via_fasync() {
    if RawDev::open_or_skip().is_none() {
        return;
    }
    // In a child: signal dispositions are process-wide.
    let st = in_child(|| {
        let Some(raw) = RawDev::open() else { return 1 };
        // SAFETY: installing an async-signal-safe handler.
        unsafe { libc::signal(libc::SIGIO, on_sigio as *const () as libc::sighandler_t) };
        // SAFETY: fcntl on our descriptor.
        unsafe {
            if libc::fcntl(raw.0, libc::F_SETOWN, libc::getpid()) != 0 {
                return 2;
            }
            let fl = libc::fcntl(raw.0, libc::F_GETFL);
            if libc::fcntl(raw.0, libc::F_SETFL, fl | libc::O_ASYNC) != 0 {
                return 3;
            }
        }
        let r = map(2);
        if raw.register(r, 1).is_err() {
            return 4;
        }
        unmap(r);
        for _ in 0..100 {
            if SIGIO_SEEN.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return 0;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        5
    });
    assert!(libc::WIFEXITED(st), "child died: {st:#x}");
    assert_eq!(libc::WEXITSTATUS(st), 0, "no SIGIO (child code)");
}

#[test]
fn blocking_read_wakes_on_event() {
    let Some(_) = device() else { return };
    // SAFETY: a blocking descriptor of our own.
    let fd = unsafe { libc::open(c"/dev/ummunotify".as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0);
    let raw = RawDev(fd);
    let r = map(1);
    raw.register(r, 77).unwrap();
    let (s, l) = (r.start(), r.len());
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        unmap(AddrRange::from_start_len(s, l).unwrap());
    });
    let mut buf = [abi::ummunotify_event::default(); 4];
    let n = raw.read_into(buf.as_mut_ptr().cast(), std::mem::size_of_val(&buf));
    t.join().unwrap();
    assert_eq!(n, 64, "one INVAL and LAST");
    assert_eq!(buf[0].type_, abi::UMMUNOTIFY_EVENT_TYPE_INVAL);
    assert_eq!(buf[0].user_cookie_counter, 77);
    assert_eq!(buf[1].type_, abi::UMMUNOTIFY_EVENT_TYPE_LAST);
    assert_eq!(buf[1].user_cookie_counter, 1);
}

/// A 2010 program: no EXCHANGE, or EXCHANGE of 0, gets no extension; the
/// counter page alone is mappable; `reserved` is not written back.
#[test]
fn features_are_off_unless_asked() {
    let Some(raw) = RawDev::open_or_skip() else {
        return;
    };
    let mut f = 0u32;
    raw.ioctl(abi::UMMUNOTIFY_EXCHANGE_FEATURES, &mut f)
        .unwrap();
    assert_eq!(f, 0);
    let mut unknown = 0x8000_0000u32;
    raw.ioctl(abi::UMMUNOTIFY_EXCHANGE_FEATURES, &mut unknown)
        .unwrap();
    assert_eq!(unknown, 0, "unknown bits are dropped");
    let mut area = abi::ummunotify_area::default();
    raw.ioctl(abi::UMMUNOTIFY_GET_AREA, &mut area).unwrap();
    assert_eq!(area.length, pg());
    assert_eq!(area.first_word, 0);
    assert!(area.max_regions > 0);
    let r = map(1);
    assert_eq!(raw.register(r, 1), Ok(0));
    // Too late to turn a feature on now.
    let mut want = abi::UMMUNOTIFY_FEATURE_REGION_WORDS;
    assert_eq!(
        raw.ioctl(abi::UMMUNOTIFY_EXCHANGE_FEATURES, &mut want),
        Err(libc::EBUSY)
    );
    // Two pages cannot be mapped when the area is one.
    // SAFETY: a fresh mapping of the device.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * pg() as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            raw.0,
            0,
        )
    };
    assert_eq!(p, libc::MAP_FAILED);
    unmap(r);
}

#[test]
fn region_words_validate_with_one_load() {
    let Some(n) = device() else { return };
    assert_eq!(
        n.device_features(),
        Some(abi::UMMUNOTIFY_FEATURE_REGION_WORDS)
    );
    let a = map(2);
    let b = map(2);
    n.register(a, Cookie(1)).unwrap();
    n.register(b, Cookie(2)).unwrap();
    let (wa, wb) = (
        n.region_word(Cookie(1)).unwrap(),
        n.region_word(Cookie(2)).unwrap(),
    );
    assert!(wa.is_valid() && wb.is_valid());
    unmap(pages(a, 0, 1));
    assert!(
        !wa.is_valid(),
        "the word changed before munmap returned, before any read"
    );
    assert!(wb.is_valid());
    madvise(pages(a, 1, 1), libc::MADV_DONTNEED);
    assert_eq!(wa.load(), 2);
    drain(&n);
    assert_eq!(wa.load(), 2, "reading does not reset the word");
    n.unregister(Cookie(1)).unwrap();
    n.register(pages(a, 1, 1), Cookie(3)).unwrap();
    let w3 = n.region_word(Cookie(3)).unwrap();
    assert!(w3.is_valid(), "a new registration starts valid");
    assert!(n.region_word(Cookie(1)).is_none());
    unmap(pages(a, 1, 1));
    unmap(b);
    assert!(!w3.is_valid() && !wb.is_valid());
}

fn sigsegv_or_sigbus(st: libc::c_int) -> bool {
    libc::WIFSIGNALED(st) && matches!(libc::WTERMSIG(st), libc::SIGSEGV | libc::SIGBUS)
}

#[test]
fn counter_page_is_read_only() {
    let Some(raw) = RawDev::open_or_skip() else {
        return;
    };
    let len = pg() as usize;
    let map_dev = |prot| {
        // SAFETY: a fresh mapping of the device.
        unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, raw.0, 0) }
    };
    assert_eq!(
        map_dev(libc::PROT_READ | libc::PROT_WRITE),
        libc::MAP_FAILED
    );
    let p = map_dev(libc::PROT_READ);
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", errno());
    // SAFETY: our mapping.
    let rc = unsafe { libc::mprotect(p, len, libc::PROT_READ | libc::PROT_WRITE) };
    assert_eq!(rc, -1);
    assert_eq!(errno().raw_os_error(), Some(libc::EACCES));
    // A store through the mapping faults (in a child).
    let st = in_child(|| {
        // SAFETY: deliberately writing a read-only mapping: must fault.
        unsafe { std::ptr::write_volatile(p.cast::<u64>(), 12345) };
        0
    });
    assert!(sigsegv_or_sigbus(st), "write did not fault: {st:#x}");
    // SAFETY: our mapping, read-only.
    assert_eq!(unsafe { std::ptr::read_volatile(p.cast::<u64>()) }, 0);
    // SAFETY: our mapping.
    unsafe { libc::munmap(p, len) };
}

/// Two processes, each with its own file: each sees its own events only.
/// A fork child cannot register on its parent's file (EPERM).
#[test]
fn two_processes_each_with_their_own_file() {
    let Some(n) = device() else { return };
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    let g0 = drain(&n).2;
    let raw_parent = RawDev::open().unwrap();
    let st = in_child(|| {
        // The inherited file belongs to the parent's mm.
        if raw_parent.register(map(1), 9) != Err(libc::EPERM) {
            return 1;
        }
        // The Rust client names it.
        if !matches!(n.register(map(1), Cookie(9)), Err(Error::Forked)) {
            return 6;
        }
        if !matches!(n.unregister(Cookie(1)), Err(Error::Forked)) {
            return 7;
        }
        // Our own copy of `r`: unmapping it is not the parent's event.
        unmap(r);
        // Our own file sees our own events.
        let Ok(c) = Notifier::open(Source::Kernel) else {
            return 2;
        };
        let s = map(2);
        if c.register(s, Cookie(5)).is_err() {
            return 3;
        }
        unmap(s);
        let (ev, cnt, _) = drain(&c);
        if ev != vec![inval(5, Some(s))] || cnt != 1 {
            return 4;
        }
        0
    });
    assert!(libc::WIFEXITED(st), "child died: {st:#x}");
    assert_eq!(libc::WEXITSTATUS(st), 0, "child failure code");
    let (ev, _, g1) = drain(&n);
    assert_eq!(ev, vec![], "the child's unmap reached the parent");
    assert_eq!(g1, g0);
    unmap(r);
    assert_eq!(drain(&n).0, vec![inval(1, Some(r))]);
}

/// A process that exits with registrations (and a pending event) alive.
#[test]
fn exit_with_live_registrations() {
    let Some(_) = device() else { return };
    let st = in_child(|| {
        let Some(raw) = RawDev::open() else { return 1 };
        for i in 0..64 {
            if raw.register(map(1), i).is_err() {
                return 2;
            }
        }
        let r = map(4);
        let _ = raw.register(r, 100);
        unmap(r);
        std::mem::forget(raw);
        0
    });
    assert!(libc::WIFEXITED(st));
    assert_eq!(libc::WEXITSTATUS(st), 0);
}

/// 2,000 registrations of two pages, every one hit (the even ones twice,
/// on different pages) with nothing read: the queue holds one entry per
/// registration, so nothing is lost and nothing is duplicated.
#[test]
fn storm_with_full_queue_loses_nothing() {
    let Some(n) = device() else { return };
    let k = 2000u64;
    let len = 2 * k * pg();
    // Without THP: splitting a huge page would invalidate its whole 2 MiB.
    let all = regcache_testkit::mem::try_mmap(None, len, libc::PROT_READ | libc::PROT_WRITE, 0)
        .expect("mmap");
    madvise(all, libc::MADV_NOHUGEPAGE);
    regcache_testkit::mem::fill(all, 1);
    for i in 0..k {
        n.register(pages(all, 2 * i, 2), Cookie(i)).unwrap();
    }
    drain(&n);
    for i in (0..k).step_by(2) {
        madvise(pages(all, 2 * i, 1), libc::MADV_DONTNEED);
    }
    unmap(all);
    let (ev, c, _) = drain(&n);
    let mut cookies: Vec<u64> = ev.iter().map(|i| i.cookie.0).collect();
    cookies.sort_unstable();
    assert_eq!(cookies, (0..k).collect::<Vec<_>>());
    // The even ones were hit twice, outside the first hint: no hint. The
    // odd ones once: the whole registration.
    for i in ev {
        if i.cookie.0 % 2 == 0 {
            assert_eq!(i.range, None, "{i:?}");
        } else {
            assert_eq!(i.range, Some(pages(all, 2 * i.cookie.0, 2)), "{i:?}");
        }
    }
    assert_eq!(c, k / 2 + 1, "one bump per madvise, one for the munmap");
}

/// A read into a bad buffer fails with EFAULT and loses nothing.
#[test]
fn efault_read_loses_nothing() {
    let Some(raw) = RawDev::open_or_skip() else {
        return;
    };
    let r = map(1);
    raw.register(r, 3).unwrap();
    unmap(r);
    // Below mmap_min_addr: never mapped.
    let bad = 0x1000 as *mut u8;
    assert_eq!(raw.read_into(bad, 64), -1);
    assert_eq!(errno().raw_os_error(), Some(libc::EFAULT));
    assert_eq!(raw.read_into(std::ptr::null_mut(), 16), -1, "short buffer");
    let mut buf = [abi::ummunotify_event::default(); 1];
    assert_eq!(raw.read_into(buf.as_mut_ptr().cast(), 32), 32);
    assert_eq!(buf[0].user_cookie_counter, 3);
    // No room for LAST in that read: the next read is LAST alone.
    assert_eq!(raw.read_into(buf.as_mut_ptr().cast(), 32), 32);
    assert_eq!(buf[0].type_, abi::UMMUNOTIFY_EVENT_TYPE_LAST);
    assert_eq!(buf[0].user_cookie_counter, 1);
    assert_eq!(raw.read_into(buf.as_mut_ptr().cast(), 32), -1);
    assert_eq!(errno().raw_os_error(), Some(libc::EAGAIN));
}

/// The per-file limit (`max_regions`, read at open): ENOSPC beyond it,
/// as the named error. Needs root to set the parameter (the VM tier).
#[test]
fn registration_limit_is_a_named_error() {
    let Some(_) = device() else { return };
    let param = "/sys/module/ummunotify/parameters/max_regions";
    let Ok(old) = std::fs::read_to_string(param) else {
        println!("SKIPPED: {param} not readable");
        return;
    };
    if std::fs::write(param, "8").is_err() {
        assert!(
            !required(),
            "REGCACHE_REQUIRE_DEVICE=1 but {param} not writable"
        );
        println!("SKIPPED: {param} not writable (needs root)");
        return;
    }
    let n = Notifier::open(Source::Kernel);
    std::fs::write(param, old.trim()).unwrap();
    let n = n.unwrap();
    let r = map(16);
    for i in 0..8 {
        n.register(pages(r, i, 1), Cookie(i)).unwrap();
    }
    let e = n.register(pages(r, 8, 1), Cookie(8)).unwrap_err();
    assert!(matches!(e, Error::DeviceFull { limit: 8 }), "{e}");
    n.unregister(Cookie(0)).unwrap();
    n.register(pages(r, 8, 1), Cookie(8)).unwrap();
    unmap(r);
    assert_eq!(drain(&n).0.len(), 8);
}

/// Stress: threads register, unmap and read concurrently on one file,
/// plus a thread opening and closing files. The VM tier checks dmesg
/// afterwards (any WARN/BUG fails the run).
#[test]
fn stress_register_unmap_read() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(n) = device() else { return };
    let n = Arc::new(n);
    let done = Arc::new(AtomicBool::new(false));
    let rounds: u64 = std::env::var("UMN_STRESS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let workers: Vec<_> = (0..3u64)
        .map(|t| {
            let n = n.clone();
            std::thread::spawn(move || {
                for i in 0..rounds {
                    let r = map(2);
                    let c = Cookie(t << 32 | i);
                    n.register(r, c).unwrap();
                    let before = n.generation();
                    if i % 3 == 0 {
                        n.unregister(c).unwrap();
                        unmap(r);
                    } else {
                        unmap(pages(r, i % 2, 1));
                        assert_ne!(n.generation(), before);
                        unmap(pages(r, 1 - i % 2, 1));
                    }
                }
            })
        })
        .collect();
    let churn = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut k = 0;
            while !done.load(Ordering::Acquire) {
                let f = Notifier::open(Source::Kernel).unwrap();
                let r = map(1);
                f.register(r, Cookie(1)).unwrap();
                if k % 2 == 0 {
                    unmap(r);
                    drop(f);
                } else {
                    drop(f);
                    unmap(r);
                }
                k += 1;
            }
        })
    };
    let reader = {
        let (n, done) = (n.clone(), done.clone());
        std::thread::spawn(move || {
            let mut got = std::collections::HashSet::new();
            while !done.load(Ordering::Acquire) {
                for i in drain(&n).0 {
                    let _ = n.unregister(i.cookie);
                    got.insert(i.cookie.0);
                }
            }
            for i in drain(&n).0 {
                got.insert(i.cookie.0);
            }
            got
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    churn.join().unwrap();
    let got = reader.join().unwrap();
    for t in 0..3u64 {
        for i in (0..rounds).filter(|i| i % 3 != 0) {
            assert!(got.contains(&(t << 32 | i)), "lost {t}/{i}");
        }
    }
}
