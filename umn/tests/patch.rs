//! The `patch` source (libc's unmap-like functions patched to invalidate
//! before the system call) against real memory-map changes: the shared
//! scenarios of `common/suite.rs`, then what only this source does.
//!
//! Installing the patch is once per process and permanent, so every test
//! of this binary runs patched; the tests that need an unpatched process
//! (a foreign patch first, the fork/exec child) run a child process.

mod common;

use common::suite::{self, changed_then_drain, shared_tests};
use common::*;
use umn::{AddrRange, Cookie, Notifier, Source};

fn open() -> Notifier {
    common::open(Source::Patch)
}

shared_tests!(Source::Patch);

#[test]
fn auto_picks_patch_without_device() {
    let _only = exclusive();
    if std::path::Path::new(umn::DEVICE_PATH).exists() {
        println!("SKIPPED: /dev/ummunotify present; Auto picks the device (VM tier)");
        return;
    }
    let n = Notifier::open(Source::Auto).unwrap();
    assert_eq!(n.source(), Source::Patch);
    assert_eq!(umn::patch::fallbacks(), 0);
    assert!(umn::patch::intact());
}

#[test]
fn mremap_move() {
    let _only = exclusive();
    let n = open();
    let moved = suite::mremap_move_registered(&n);
    unmap(moved);
}

#[test]
fn mremap_shrink_reports_the_tail() {
    let _only = exclusive();
    let n = open();
    let r = map(4);
    n.register(r, Cookie(3)).unwrap();
    let g0 = n.generation();
    let kept = mremap(r, 2 * pg(), 0, 0);
    assert_eq!(kept.start(), r.start());
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(3, Some(pages(r, 2, 2)))]);
    assert_eq!(c, 1);
    unmap(kept);
}

#[test]
fn realloc_of_a_large_block_invalidates_the_old_range() {
    let _only = exclusive();
    let n = open();
    // Above glibc's largest dynamic mmap threshold (32 MiB): an mmapped
    // chunk whatever the tests before freed.
    let len = 40 << 20;
    // SAFETY: plain malloc/realloc of our own block.
    let p = unsafe { libc::malloc(len) };
    assert!(!p.is_null());
    // SAFETY: our block.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, len) };
    let r = AddrRange::from_buffer(p.cast(), len).unwrap();
    n.register(r, Cookie(2)).unwrap();
    let g0 = n.generation();
    // glibc grows an mmapped chunk with its internal __mremap.
    // SAFETY: our block.
    let q = unsafe { libc::realloc(p, 2 * len) };
    assert!(!q.is_null());
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].cookie, Cookie(2));
    assert_eq!(c, 1);
    // SAFETY: our block.
    unsafe { libc::free(q) };
}

#[test]
fn malloc_trim_madvise_is_seen() {
    let _only = exclusive();
    let n = open();
    // The whole heap VMA is registered; a trim that gives pages back
    // (glibc's internal __madvise or __brk) must reach us.
    let blocks: Vec<_> = (0..64)
        // SAFETY: plain malloc below the mmap threshold: heap memory.
        .map(|_| unsafe { libc::malloc(64 << 10) })
        .collect();
    for &b in &blocks {
        // SAFETY: our block.
        unsafe { std::ptr::write_bytes(b.cast::<u8>(), 1, 64 << 10) };
    }
    let lo = blocks.iter().map(|&b| b as u64).min().unwrap();
    let hi = blocks.iter().map(|&b| b as u64).max().unwrap() + (64 << 10);
    let r = AddrRange::new(lo, hi).unwrap().page_align().unwrap();
    n.register(r, Cookie(8)).unwrap();
    let g0 = n.generation();
    for b in blocks {
        // SAFETY: our block.
        unsafe { libc::free(b) };
    }
    // SAFETY: no preconditions.
    let gave_back = unsafe { libc::malloc_trim(0) };
    assert_eq!(gave_back, 1, "malloc_trim released nothing");
    let (ev, _) = changed_then_drain(&n, g0);
    assert!(ev.iter().any(|i| i.cookie == Cookie(8)), "{ev:?}");
}

#[test]
fn shmdt_is_seen() {
    let _only = exclusive();
    let n = open();
    let len = 4 * pg() as usize;
    // SAFETY: SysV calls with valid arguments; the segment is ours.
    let (id, p) = unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600);
        assert!(id >= 0);
        let p = libc::shmat(id, std::ptr::null(), 0);
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        (id, p)
    };
    assert_ne!(p as isize, -1, "shmat {id}");
    let r = AddrRange::from_buffer(p.cast(), len).unwrap();
    n.register(r, Cookie(6)).unwrap();
    let g0 = n.generation();
    // SAFETY: detaching our segment.
    assert_eq!(unsafe { libc::shmdt(p) }, 0);
    let (ev, c) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(6, Some(r))]);
    assert_eq!(c, 1);
}

#[test]
fn hooks_keep_errno_and_results_of_failing_calls() {
    let _only = exclusive();
    let _n = open();
    // SAFETY: invalid arguments: the kernel refuses, nothing is unmapped.
    unsafe {
        assert_eq!(libc::munmap(std::ptr::dangling_mut(), 4096), -1);
        assert_eq!(*libc::__errno_location(), libc::EINVAL);
        assert_eq!(libc::madvise(std::ptr::null_mut(), 4096, 12345), -1);
        assert_eq!(*libc::__errno_location(), libc::EINVAL);
        let m = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            1,
        );
        assert_eq!(m, libc::MAP_FAILED);
        assert_eq!(*libc::__errno_location(), libc::EINVAL);
        assert_eq!(libc::shmdt(8 as *const _), -1);
        assert_eq!(*libc::__errno_location(), libc::EINVAL);
    }
}

#[test]
fn raw_syscall_is_not_seen_declared() {
    // The declared blind spot: a system call that bypasses libc.
    let _only = exclusive();
    let n = open();
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    let g0 = n.generation();
    // SAFETY: unmapping our own mapping, bypassing libc.
    let rc = unsafe { libc::syscall(libc::SYS_munmap, r.start(), r.len()) };
    assert_eq!(rc, 0);
    assert_eq!(n.generation(), g0, "the patch saw a raw system call?");
}

/// A signal handler that unmaps, delivered while the interrupted thread is
/// itself inside a hooked munmap loop: both unmaps are reported, nothing
/// hangs (the hook is reentrant: no per-thread state, no lock).
#[test]
fn signal_handler_that_unmaps() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static VICTIM: AtomicU64 = AtomicU64::new(0);
    static LEN: AtomicU64 = AtomicU64::new(0);
    extern "C" fn on_usr1(_: libc::c_int) {
        let a = VICTIM.swap(0, Ordering::SeqCst);
        if a != 0 {
            // SAFETY: unmapping the victim mapping the test made for us.
            unsafe { libc::munmap(a as *mut _, LEN.load(Ordering::SeqCst) as usize) };
        }
    }
    let _only = exclusive();
    let n = open();
    let victim = map(2);
    VICTIM.store(victim.start(), Ordering::SeqCst);
    LEN.store(victim.len(), Ordering::SeqCst);
    n.register(victim, Cookie(11)).unwrap();
    // SAFETY: installing a handler that only does async-signal-safe work.
    let old = unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    // SAFETY: no preconditions.
    let me = unsafe { libc::pthread_self() };
    let kicker = std::thread::spawn(move || {
        // SAFETY: signalling the test thread, which is alive (joined below).
        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
    });
    let mut own = 0;
    while VICTIM.load(Ordering::SeqCst) != 0 {
        let r = map(1);
        unmap(r);
        own += 1;
    }
    kicker.join().unwrap();
    // SAFETY: restoring the previous disposition.
    unsafe { libc::signal(libc::SIGUSR1, old) };
    let (ev, _, _) = drain(&n);
    assert_eq!(ev, vec![inval(11, Some(victim))], "after {own} own unmaps");
}

/// The Rust allocator inside the hook's caller: dropping a large Vec is
/// free() → munmap of a block registered under a cookie, while a second
/// thread allocates and frees in a loop.
#[test]
fn allocator_frees_under_the_hook() {
    let _only = exclusive();
    let n = open();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let churn = std::thread::spawn(move || {
        let mut k = 0u64;
        loop {
            let v = vec![1u8; 1 << 20];
            k += v[k as usize % v.len()] as u64;
            if s2.load(std::sync::atomic::Ordering::Relaxed) {
                return k;
            }
        }
    });
    for i in 0..20u64 {
        // Above glibc's largest dynamic mmap threshold (32 MiB): always
        // its own mapping, so dropping it is munmap.
        let v = vec![0u8; 40 << 20];
        let r = AddrRange::from_buffer(v.as_ptr(), v.len()).unwrap();
        n.register(r, Cookie(100 + i)).unwrap();
        drop(v);
        let (ev, _, _) = drain(&n);
        assert!(
            ev.iter().any(|e| e.cookie == Cookie(100 + i)),
            "round {i}: {ev:?}"
        );
        let _ = n.unregister(Cookie(100 + i));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0);
}

/// fork, then exec of a program that outlives the parent's notifier: the
/// child runs patched code with inert notifiers (and unmaps freely), the
/// exec'd image has a fresh libc. The parent's source keeps working.
#[test]
fn fork_then_exec() {
    let _only = exclusive();
    let n = open();
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    let status = in_child(|| {
        // The child: patched libc, notifiers inert; unmapping works.
        let s = map(3);
        unmap(s);
        let e = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .status()
            .map(|s| s.code());
        if e.ok().flatten() == Some(7) { 0 } else { 1 }
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the fork child could not unmap and exec: status {status:#x}"
    );
    let g0 = n.generation();
    unmap(r);
    let (ev, _) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(r))]);
}
