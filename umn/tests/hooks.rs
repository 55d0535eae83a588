//! Hooks: SysV `shmdt` and `shmat(SHM_REMAP)`, which userfaultfd does not
//! report, caught by symbol interposition. This test binary defines
//! `shmdt`/`shmat` itself (as the preload library will), so the calls
//! below go through umn's hooks to libc's functions.
//!
//! A hook reports to every live local notifier of the process, so each
//! test takes the process's memory map to itself (`common::exclusive`):
//! another test's `shmdt` at an address this one reused would hit its
//! registrations too.

mod common;

use std::ffi::c_void;

use common::*;
use umn::{AddrRange, Cookie, Notifier, Source};

umn::interpose_shm!();

struct Seg(i32);

impl Seg {
    fn new(len: u64) -> Self {
        // SAFETY: creating a private SysV segment.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, len as usize, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        Seg(id)
    }
    fn attach(&self, at: Option<u64>, flags: i32) -> AddrRange {
        let addr = at.map_or(std::ptr::null(), |a| a as *const c_void);
        // SAFETY: calls our interposed shmat; the address, if any, is
        // memory the test owns.
        let p = unsafe { shmat(self.0, addr, flags) };
        assert_ne!(p as isize, -1, "shmat: {}", std::io::Error::last_os_error());
        // SAFETY: shmid_ds is plain data; all-zero is a valid value.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: reading the segment's descriptor.
        assert_eq!(unsafe { libc::shmctl(self.0, libc::IPC_STAT, &mut ds) }, 0);
        AddrRange::from_start_len(p as u64, ds.shm_segsz as u64)
            .unwrap()
            .page_align()
            .unwrap()
    }
}

impl Drop for Seg {
    fn drop(&mut self) {
        // SAFETY: removing our segment.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// A userfaultfd notifier that can register SysV memory (WP_ASYNC), or
/// `None` and SKIPPED.
fn uffd_with_wp_async_or_skip() -> Option<Notifier> {
    let n = Notifier::open(Source::Uffd).unwrap();
    if !n.wp_async() {
        println!("SKIPPED: SysV memory not registrable without WP_ASYNC");
        return None;
    }
    Some(n)
}

/// Through the interposed symbol: detach invalidates (uffd and external).
#[test]
fn shmdt_through_the_hook_invalidates() {
    let _only = exclusive();
    for source in [Source::External, Source::Uffd] {
        let n = Notifier::open(source).unwrap();
        let seg = Seg::new(4 * pg());
        let r = seg.attach(None, 0);
        match n.register(r, Cookie(1)) {
            Ok(()) => {}
            Err(e) if source == Source::Uffd && !n.wp_async() => {
                println!("SKIPPED (uffd part): SysV memory not registrable without WP_ASYNC: {e}");
                continue;
            }
            Err(e) => panic!("register SysV memory with {source:?}: {e}"),
        }
        let g0 = drain(&n).2;
        // SAFETY: detaching our attachment through the interposed symbol.
        assert_eq!(unsafe { shmdt(r.start() as *const c_void) }, 0);
        assert_ne!(
            n.generation(),
            g0,
            "{source:?}: shmdt returned, generation unchanged"
        );
        let (ev, c, _) = drain(&n);
        assert_eq!(ev, vec![inval(1, Some(r))], "{source:?}");
        assert_eq!(c, 1);
    }
}

/// The hole the hook covers: uffd alone does not see a SysV detach.
#[test]
fn uffd_alone_misses_shmdt() {
    let _only = exclusive();
    let Some(n) = uffd_with_wp_async_or_skip() else {
        return;
    };
    let seg = Seg::new(2 * pg());
    let r = seg.attach(None, 0);
    n.register(r, Cookie(1)).unwrap();
    let g0 = drain(&n).2;
    // libc's shmdt directly, bypassing the hook.
    // SAFETY: dlsym of a libc symbol with shmdt's signature.
    let real: unsafe extern "C" fn(*const c_void) -> i32 =
        unsafe { std::mem::transmute(libc::dlsym(libc::RTLD_NEXT, c"shmdt".as_ptr())) };
    // SAFETY: detaching our attachment.
    assert_eq!(unsafe { real(r.start() as *const c_void) }, 0);
    assert_eq!(
        n.generation(),
        g0,
        "uffd reported shmdt; update the docs table"
    );
    assert!(drain(&n).0.is_empty());
}

/// `shmat(SHM_REMAP)` over a registered attachment invalidates it.
#[test]
fn shmat_remap_through_the_hook_invalidates() {
    let _only = exclusive();
    let n = Notifier::open(Source::External).unwrap();
    let a = Seg::new(2 * pg());
    let b = Seg::new(2 * pg());
    let r = a.attach(None, 0);
    n.register(r, Cookie(5)).unwrap();
    let g0 = drain(&n).2;
    let r2 = b.attach(Some(r.start()), libc::SHM_REMAP);
    assert_eq!(r2, r);
    assert_ne!(n.generation(), g0);
    assert_eq!(drain(&n).0, vec![inval(5, Some(r))]);
    // SAFETY: detaching our attachment.
    assert_eq!(unsafe { shmdt(r.start() as *const c_void) }, 0);
}

/// After a hooked `shmdt`, new memory at the same address is registered
/// with the uffd again (the hook event dropped the stale span), so its
/// munmap is reported.
#[test]
fn memory_reused_after_hooked_shmdt_is_watched() {
    let _only = exclusive();
    let Some(n) = uffd_with_wp_async_or_skip() else {
        return;
    };
    let seg = Seg::new(2 * pg());
    let r = seg.attach(None, 0);
    n.register(r, Cookie(1)).unwrap();
    // SAFETY: detaching our attachment through the interposed symbol.
    assert_eq!(unsafe { shmdt(r.start() as *const c_void) }, 0);
    assert_eq!(drain(&n).0, vec![inval(1, Some(r))]);
    n.unregister(Cookie(1)).unwrap();
    // Map at the address we just vacated.
    if let Err(e) = regcache_testkit::mem::try_map_at(r.start(), r.len()) {
        panic!("address was reused by someone else: {e:?}");
    }
    n.register(r, Cookie(2)).unwrap();
    let g0 = n.generation();
    unmap(r);
    assert_ne!(n.generation(), g0, "munmap of reused memory not seen");
    assert_eq!(drain(&n).0, vec![inval(2, Some(r))]);
}

/// `remap_file_pages` through the hook invalidates the range.
#[test]
fn remap_file_pages_through_the_hook_invalidates() {
    let _only = exclusive();
    let n = Notifier::open(Source::External).unwrap();
    // SAFETY: creating and sizing a memfd we own.
    let fd = unsafe { libc::memfd_create(c"umn-rfp".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: sizing our memfd.
    assert_eq!(unsafe { libc::ftruncate(fd, (4 * pg()) as libc::off_t) }, 0);
    // SAFETY: a fresh shared mapping of our memfd.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            (4 * pg()) as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let r = AddrRange::from_start_len(p as u64, 4 * pg()).unwrap();
    n.register(r, Cookie(1)).unwrap();
    let g0 = drain(&n).2;
    let target = pages(r, 1, 1);
    // SAFETY: remapping page 1 of our mapping to file page 3.
    let rc = unsafe { remap_file_pages(target.start() as *mut c_void, pg() as usize, 0, 3, 0) };
    assert_eq!(
        rc,
        0,
        "remap_file_pages: {}",
        std::io::Error::last_os_error()
    );
    assert_ne!(n.generation(), g0);
    assert_eq!(drain(&n).0, vec![inval(1, Some(target))]);
    unmap(r);
    // SAFETY: closing our memfd.
    unsafe { libc::close(fd) };
}

/// `madvise(MADV_GUARD_INSTALL)` through the hook invalidates the range;
/// other advice passes through untouched.
#[test]
fn guard_install_through_the_hook_invalidates() {
    let _only = exclusive();
    let n = Notifier::open(Source::External).unwrap();
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = drain(&n).2;
    // SAFETY: advice on our own mapping; WILLNEED changes nothing.
    let rc = unsafe {
        madvise(
            r.start() as *mut c_void,
            r.len() as usize,
            libc::MADV_WILLNEED,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(n.generation(), g0, "harmless advice reported");
    let guard = pages(r, 2, 1);
    // SAFETY: installing a guard page in our own mapping.
    let rc = unsafe {
        madvise(
            guard.start() as *mut c_void,
            pg() as usize,
            umn::hooks::MADV_GUARD_INSTALL,
        )
    };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        println!("SKIPPED: MADV_GUARD_INSTALL unsupported by this kernel (needs 6.13)");
        unmap(r);
        return;
    }
    assert_eq!(
        rc,
        0,
        "madvise(GUARD_INSTALL): {}",
        std::io::Error::last_os_error()
    );
    assert_ne!(n.generation(), g0);
    assert_eq!(drain(&n).0, vec![inval(1, Some(guard))]);
    unmap(r);
}
