//! The crate's error type: one variant per failing call, EBUSY apart.

use std::io;

use crate::queue::Cookie;
use crate::range::{AddrRange, RangeError};

/// Why a notifier operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `open(Source::Kernel)`: the device node does not exist (the module
    /// is not loaded).
    #[error("/dev/ummunotify not present")]
    DeviceAbsent,
    /// `open("/dev/ummunotify")` failed for another reason.
    #[error("open(/dev/ummunotify): {0}")]
    DeviceOpen(#[source] io::Error),
    /// An ioctl, `mmap` or `read` on the device failed.
    #[error("/dev/ummunotify {call}: {source}")]
    Device {
        /// The call, e.g. `"ioctl(UMMUNOTIFY_REGISTER_REGION)"`.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `REGISTER_REGION` on the kernel device: the file holds as many
    /// registrations as it accepts (`ENOSPC`; the module's `max_regions`
    /// parameter, read when the file was opened).
    #[error("/dev/ummunotify: registration limit of {limit} reached (ENOSPC)")]
    DeviceFull {
        /// Registrations per file.
        limit: u32,
    },
    /// Neither `userfaultfd(2)` nor `/dev/userfaultfd` gave a descriptor
    /// (e.g. `vm.unprivileged_userfaultfd=0` without CAP_SYS_PTRACE and no
    /// access to `/dev/userfaultfd`).
    #[error("userfaultfd unavailable: syscall: {syscall}; /dev/userfaultfd: {dev}")]
    UffdOpen {
        /// Error of `userfaultfd(UFFD_USER_MODE_ONLY|O_NONBLOCK|O_CLOEXEC)`.
        syscall: io::Error,
        /// Error of `ioctl(USERFAULTFD_IOC_NEW)` on `/dev/userfaultfd`.
        dev: io::Error,
    },
    /// `ioctl(UFFDIO_API)` failed or lacks `EVENT_UNMAP|EVENT_REMOVE|EVENT_REMAP`.
    #[error("ioctl(UFFDIO_API): {0}")]
    UffdApi(#[source] io::Error),
    /// `UFFDIO_REGISTER` returned EBUSY: another userfaultfd (the
    /// application's or another library's) owns a VMA of the range. Serve
    /// the range uncached and count it.
    #[error("ioctl(UFFDIO_REGISTER) {range}: EBUSY, another userfaultfd owns the VMA")]
    Busy {
        /// The VMA that could not be registered.
        range: AddrRange,
    },
    /// `UFFDIO_REGISTER` failed otherwise (e.g. EINVAL for a VM_PFNMAP or
    /// VM_IO mapping).
    #[error("ioctl(UFFDIO_REGISTER) {range}: {source}")]
    Register {
        /// The VMA that could not be registered.
        range: AddrRange,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Part of the range is not mapped.
    #[error("{range} is not (entirely) mapped")]
    NotMapped {
        /// The first unmapped page.
        range: AddrRange,
    },
    /// Reading the VMA layout (`PROCMAP_QUERY` or `/proc/self/maps`) failed.
    #[error("reading /proc/self/maps: {0}")]
    Maps(#[source] io::Error),
    /// The cookie is already registered.
    #[error("cookie {0:?} already registered")]
    DuplicateCookie(Cookie),
    /// The cookie is not registered.
    #[error("cookie {0:?} not registered")]
    UnknownCookie(Cookie),
    /// `Source::Patch`: libc could not be patched in this process (the
    /// named reason), or a later patch of another library overwrote ours.
    #[cfg(not(loom))]
    #[error("{0}")]
    PatchUnavailable(crate::patch::Unavailable),
    /// The range is empty or malformed.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// This process is a `fork` child of the process that opened the
    /// notifier: it no longer watches anything here. Flush every cached
    /// registration and open a new notifier.
    #[error("notifier was inherited across fork; open a new one in the child")]
    Forked,
    /// The operation does not exist for this source (e.g.
    /// `notify_unmapped` on the kernel device).
    #[error("{0} is not supported by this source")]
    Unsupported(&'static str),
    /// A system call of the notifier's own plumbing (eventfd, thread spawn,
    /// poll) failed.
    #[error("{call}: {source}")]
    Sys {
        /// The call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
