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
use umn::{AddrRange, Cookie, Error, Notifier, Source};

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
    assert!(suite::blind_to(Source::Patch).contains(&suite::Change::RawSyscall));
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

/// Write another patcher's jump (`movabs $to, %rax; jmp *%rax`, the form
/// UCX's bistro and Open MPI's patcher use) at the start of libc's `name`.
/// Only in a single-threaded fork child: the write is not atomic.
fn foreign_patch(name: &std::ffi::CStr, to: usize) {
    // SAFETY: dlopen/dlsym of the loaded libc; mprotect and a write of 12
    // bytes at the start of a libc function (each ≥ 33 bytes long) in a
    // single-threaded child, which then only calls it through the jump.
    unsafe {
        let h = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
        assert!(!h.is_null());
        let f = libc::dlsym(h, name.as_ptr()) as usize;
        assert_ne!(f, 0);
        let pg = pg() as usize;
        let page = f & !(pg - 1);
        let span = (f + 12).next_multiple_of(pg) - page;
        let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
        assert_eq!(libc::mprotect(page as *mut _, span, rwx), 0);
        let mut code = [0u8; 12];
        code[0] = 0x48;
        code[1] = 0xb8;
        code[2..10].copy_from_slice(&(to as u64).to_le_bytes());
        code[10] = 0xff;
        code[11] = 0xe0;
        std::ptr::copy_nonoverlapping(code.as_ptr(), f as *mut u8, 12);
        let rx = libc::PROT_READ | libc::PROT_EXEC;
        assert_eq!(libc::mprotect(page as *mut _, span, rx), 0);
    }
}

/// The other library's hook: forwards with the raw system call.
extern "C" fn foreign_madvise(a: *mut libc::c_void, l: usize, adv: libc::c_int) -> libc::c_int {
    // SAFETY: the caller's madvise, performed for it.
    unsafe { libc::syscall(libc::SYS_madvise, a, l, adv) as libc::c_int }
}

/// The other library's hook: forwards with the raw system call.
extern "C" fn foreign_shmdt(a: *const libc::c_void) -> libc::c_int {
    // SAFETY: the caller's shmdt, performed for it.
    unsafe { libc::syscall(libc::SYS_shmdt, a) as libc::c_int }
}

/// Another library patched libc first (as Open MPI's patcher does in every
/// PMPI run): the patch is refused by name, `Auto` falls back to
/// userfaultfd and counts it, and the process keeps working. Runs in a
/// fresh process (this test binary again, the one test below): a process
/// where another test already patched libc cannot be unpatched.
#[test]
fn foreign_patch_first_falls_back_to_uffd_counted() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "foreign_patch_first_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("UMN_TEST_FOREIGN_FIRST", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("foreign-first: fallback to uffd, counted 1"),
        "{}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of the test above, in its own process (does nothing unless
/// `UMN_TEST_FOREIGN_FIRST` is set).
#[test]
fn foreign_patch_first_child() {
    if std::env::var_os("UMN_TEST_FOREIGN_FIRST").is_none() {
        return;
    }
    // The one thread calling libc here while the jump is written.
    foreign_patch(c"madvise", foreign_madvise as *const () as usize);
    match Notifier::open(Source::Patch) {
        Err(Error::PatchUnavailable(umn::patch::Unavailable::ForeignPatch("madvise"))) => {}
        other => panic!("Patch over a foreign patch: {other:?}"),
    }
    let n = Notifier::open(Source::Auto).unwrap();
    assert_eq!(n.source(), Source::Uffd);
    assert_eq!(umn::patch::fallbacks(), 1);
    // The fallback works: uffd sees the munmap, and the foreign madvise
    // hook still runs.
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    madvise(pages(r, 0, 1), libc::MADV_DONTNEED);
    unmap(r);
    let (ev, _, _) = drain(&n);
    assert!(ev.iter().any(|e| e.cookie == Cookie(1)), "{ev:?}");
    println!(
        "foreign-first: fallback to uffd, counted {}",
        umn::patch::fallbacks()
    );
}

/// Another library patches libc *after* us: our jump is gone, and a
/// `Patch` notifier refuses new registrations by name instead of silently
/// missing their unmaps.
#[test]
fn foreign_patch_after_ours_is_detected() {
    let _only = exclusive();
    let status = in_child(|| {
        let n = open();
        let r = map(2);
        n.register(r, Cookie(1)).unwrap();
        foreign_patch(c"shmdt", foreign_shmdt as *const () as usize);
        if umn::patch::intact() {
            return 1;
        }
        match n.register(pages(r, 1, 1), Cookie(2)) {
            Err(Error::PatchUnavailable(umn::patch::Unavailable::Overwritten)) => 0,
            other => {
                eprintln!("register after an overwrite: {other:?}");
                2
            }
        }
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
}

/// `vfork`-style spawning (Rust's `Command` uses `posix_spawn`, which
/// clones with `CLONE_VM | CLONE_VFORK`: the child runs patched libc in
/// our address space until its `exec`) neither hangs nor disturbs the
/// parent's invalidation.
#[test]
fn vfork_spawn_keeps_the_parent_working() {
    let _only = exclusive();
    let n = open();
    let r = map(2);
    n.register(r, Cookie(1)).unwrap();
    for _ in 0..10 {
        let st = std::process::Command::new("/bin/true").status().unwrap();
        assert!(st.success());
    }
    let g0 = n.generation();
    unmap(r);
    let (ev, _) = changed_then_drain(&n, g0);
    assert_eq!(ev, vec![inval(1, Some(r))]);
}
