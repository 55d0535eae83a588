//! The userfaultfd source: the bundled fallback when there is no device.
//!
//! ## How it sees memory-map changes
//!
//! Whole VMAs are registered with `UFFDIO_REGISTER_MODE_WP` and never
//! write-protected, on a uffd opened with `EVENT_UNMAP | EVENT_REMOVE |
//! EVENT_REMAP` (plus `WP_ASYNC` where offered, Linux 6.7+, which lets
//! file-backed and SysV memory be registered too). The application never
//! faults into us; the kernel queues non-cooperative events instead:
//! munmap, mremap (move, grow-with-move, shrink), madvise
//! DONTNEED/FREE/REMOVE, `MAP_FIXED` over a range, brk/sbrk shrink, and so
//! free() of mmap'd chunks and heap trims.
//!
//! ## What it cannot see, and what covers it
//!
//! | change                                   | covered by                         |
//! |------------------------------------------|------------------------------------|
//! | `shmdt`, `shmat(SHM_REMAP)`              | [`crate::hooks`] (interposition)   |
//! | `remap_file_pages`, `MADV_GUARD_INSTALL` | [`crate::hooks`], kernel device   |
//! | hole punch / truncate of a shared file   | kernel device only (MMU notifier)  |
//! | another thread mapping new memory at the same address before the event is queued | kernel device; `Source::Patch` (`crate::patch`) |
//! | a VMA owned by a uffd not umn's (EBUSY)  | nothing: [`crate::Error::Busy`], serve uncached |
//! | memory of a `fork` child                 | nothing: the child's notifier reports [`crate::Error::Forked`] |
//!
//! A change uffd misses also leaves the hub believing the VMA span is
//! still registered, so new memory mapped there later would not be
//! registered either: the hooks' events and `notify_unmapped` on a `Uffd`
//! notifier therefore also reach the hub's feed and drop the span (as
//! UNMAP and REMAP events do), and the next `register` there issues
//! `UFFDIO_REGISTER` again.
//!
//! ## One uffd per process
//!
//! A VMA can belong to one userfaultfd context only, so every `Uffd`
//! notifier of a process shares one uffd, one monitor thread and one set
//! of registered VMA spans: the *hub* (`notifier/hub.rs`). Each batch
//! read from it is fanned out to every uffd-fed notifier; each matches the
//! ranges to its own cookies. [`crate::Error::Busy`] now only means a
//! userfaultfd that is not umn's (the application's, another library's).
//!
//! ## The monitor thread
//!
//! `munmap` blocks until some thread `read()`s its event, with no timeout.
//! So a thread is always reading: it polls the uffd and a stop eventfd,
//! and per batch does, on every uffd-fed notifier captured for the batch,
//! `begin` → poke the pollable eventfd → `read` (once) → push raw ranges
//! into every ring → `end` on every one (see `generation.rs`, and
//! `notifier/fork.rs` for the capture). It never
//! allocates, takes no lock (an application thread may hold any lock while
//! it unmaps), never touches registered memory, and never matches ranges
//! to cookies: that happens in the caller's thread in `Notifier::read`.
//! Lookups that find the generation busy read the uffd themselves (same
//! protocol), so a descheduled monitor does not stall them.
//!
//! Shutdown, when the last uffd notifier of the process drops: the hub
//! closes its descriptor, then wakes the monitor,
//! which closes the last reference to the uffd (the kernel then releases
//! any blocked `munmap` and drops the registrations) *before* it exits and
//! is joined.

use std::io;
use std::os::fd::RawFd;

use crate::error::{Error, Result};
use crate::notifier::{HubFds, with_uffd_fed};
use crate::range::AddrRange;
use crate::ring::{RawEvent, RawKind};
use crate::sys;

const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFDIO: u32 = 0xAA;
const USERFAULTFD_IOC_NEW: u32 = crate::abi::ioc(0, UFFDIO, 0x00, 0);

pub(crate) const FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub(crate) const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub(crate) const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
pub(crate) const FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
pub(crate) const FEATURE_WP_ASYNC: u64 = 1 << 15;
const REQUIRED: u64 = FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;

const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;

const REGISTER_MODE_WP: u64 = 1 << 1;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// `struct uffd_msg`: 8 bytes of header, a 24-byte union.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    a: u64,
    b: u64,
    c: u64,
}

const _: () = assert!(std::mem::size_of::<UffdMsg>() == 32);

const UFFDIO_API: u32 = crate::abi::ioc(3, UFFDIO, 0x3F, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: u32 =
    crate::abi::ioc(3, UFFDIO, 0x00, std::mem::size_of::<UffdioRegister>());

/// A negotiated userfaultfd.
#[derive(Debug)]
pub(crate) struct Uffd {
    pub(crate) fd: RawFd,
    pub(crate) features: u64,
}

fn open_raw() -> Result<RawFd> {
    let flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    let syscall = match sys::userfaultfd(UFFD_USER_MODE_ONLY | flags) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let dev = match sys::open(c"/dev/userfaultfd", libc::O_RDWR) {
        Ok(dev) => {
            // SAFETY: USERFAULTFD_IOC_NEW takes its flags as the ioctl's
            // integer argument (passed as a pointer-sized value); nothing is
            // dereferenced.
            let r = unsafe { sys::ioctl(dev, USERFAULTFD_IOC_NEW, (flags as usize) as *mut u8) };
            sys::close(dev);
            match r {
                Ok(fd) => return Ok(fd as RawFd),
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    Err(Error::UffdOpen { syscall, dev })
}

fn api(fd: RawFd, features: u64) -> io::Result<u64> {
    let mut a = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: `a` is a live uffdio_api, as UFFDIO_API expects.
    unsafe { sys::ioctl(fd, UFFDIO_API, &mut a) }?;
    Ok(a.features)
}

/// Open and negotiate. Features are probed on a throwaway descriptor
/// first: a second `UFFDIO_API` on one descriptor is EINVAL.
pub(crate) fn open() -> Result<Uffd> {
    let probe = open_raw()?;
    let offered = api(probe, 0);
    sys::close(probe);
    let offered = offered.map_err(Error::UffdApi)?;
    if offered & REQUIRED != REQUIRED {
        return Err(Error::UffdApi(io::Error::other(format!(
            "kernel lacks EVENT_UNMAP|EVENT_REMOVE|EVENT_REMAP (offers {offered:#x})"
        ))));
    }
    let want = REQUIRED | (offered & (FEATURE_WP_ASYNC | FEATURE_WP_HUGETLBFS_SHMEM));
    let fd = open_raw()?;
    match api(fd, want) {
        Ok(_) => Ok(Uffd { fd, features: want }),
        Err(e) => {
            sys::close(fd);
            Err(Error::UffdApi(e))
        }
    }
}

/// `UFFDIO_REGISTER` one whole VMA in WP mode (never write-protected).
pub(crate) fn register_vma(fd: RawFd, vma: AddrRange) -> Result<()> {
    let mut r = UffdioRegister {
        start: vma.start(),
        len: vma.len(),
        mode: REGISTER_MODE_WP,
        ioctls: 0,
    };
    // SAFETY: `r` is a live uffdio_register, as UFFDIO_REGISTER expects.
    match unsafe { sys::ioctl(fd, UFFDIO_REGISTER, &mut r) } {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(Error::Busy { range: vma }),
        Err(source) => Err(Error::Register { range: vma, source }),
    }
}

fn to_raw(m: &UffdMsg) -> Option<RawEvent> {
    let (kind, range) = match m.event {
        EVENT_UNMAP => (RawKind::Unmap, AddrRange::new(m.a, m.b).ok()?),
        EVENT_REMOVE => (RawKind::Remove, AddrRange::new(m.a, m.b).ok()?),
        EVENT_REMAP => (RawKind::Remap, AddrRange::from_start_len(m.a, m.c).ok()?),
        _ => return None,
    };
    Some(RawEvent { kind, range })
}

/// Read whatever the uffd holds, under the generation protocol of every
/// uffd-fed notifier (captured once per batch of 32 messages: begin on
/// all, read, record into all, end on all). Returns the number of events
/// read. Allocation-free, lock-free; used by the monitor and by helping
/// lookups. With no uffd-fed notifier left (the last one is closing the
/// hub) the events are read and dropped: nobody is left to tell.
pub(crate) fn read_batch(fd: RawFd) -> usize {
    let mut msgs = [UffdMsg::default(); 32];
    let mut total = 0;
    loop {
        let n = with_uffd_fed(|fed| {
            for s in fed.iter() {
                s.word.begin(); // publish before consuming
            }
            if total == 0 {
                // Wake pollers before the read lets munmap return (see
                // `Notifier::pump` for the matching re-check).
                fed.iter().for_each(|s| s.poke());
            }
            let n = sys::read_records(fd, &mut msgs).unwrap_or(0);
            for ev in msgs[..n].iter().filter_map(to_raw) {
                fed.iter().for_each(|s| s.record(ev));
            }
            for s in fed.iter() {
                s.word.end();
            }
            n
        });
        total += n;
        if n < msgs.len() {
            break;
        }
    }
    total
}

/// `true` when `fd` has an event to read now.
pub(crate) fn readable(fd: RawFd) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    matches!(sys::poll(&mut p, 0), Ok(1)) && p[0].revents & libc::POLLIN != 0
}

/// The monitor thread's body. `uffd` is its own duplicate of the hub's
/// descriptor (held in `hub.mon`); it closes it before returning.
pub(crate) fn monitor(hub: &HubFds, uffd: RawFd, stop: RawFd) {
    let mut fds = [
        libc::pollfd {
            fd: uffd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        if sys::poll(&mut fds, -1).is_err() {
            break;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            read_batch(uffd);
        }
        if fds[1].revents != 0 || fds[0].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            break;
        }
    }
    // Close the last reference before exiting: the kernel releases any
    // munmap still waiting on this context.
    // A CAS, not a swap: the fork child handler closes `hub.mon` in a
    // child; once it is -1 here, no child closes a reused number.
    if hub
        .mon
        .compare_exchange(
            uffd,
            -1,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Relaxed,
        )
        .is_ok()
    {
        sys::close(uffd);
    }
}
