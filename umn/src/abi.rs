//! The ummunotify ABI, bit for bit (`include/ummunotify.h` is the C side).
//!
//! These are the records and ioctl numbers of the ummunotify proposal
//! (R. Dreier, 2009–2010). The kernel device speaks them; the Rust sources
//! (userfaultfd, hooks, external) produce the same events in
//! [`crate::Event`] form. A test compiles a C program against the header
//! and compares every size, offset and ioctl number with this module.

#![allow(non_camel_case_types)]

/// `UMMUNOTIFY_EVENT_TYPE_INVAL`: a registration was invalidated.
pub const UMMUNOTIFY_EVENT_TYPE_INVAL: u32 = 0;
/// `UMMUNOTIFY_EVENT_TYPE_LAST`: ends a read that drained the queue and
/// carries the generation counter.
pub const UMMUNOTIFY_EVENT_TYPE_LAST: u32 = 1;
/// `UMMUNOTIFY_EVENT_FLAG_HINT`: `hint_start`/`hint_end` are valid.
pub const UMMUNOTIFY_EVENT_FLAG_HINT: u32 = 1;

/// Argument of `UMMUNOTIFY_REGISTER_REGION`. `end` is exclusive.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ummunotify_register_ioctl {
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The caller's cookie, reported back in INVAL events.
    pub user_cookie: u64,
    /// Must be 0.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

/// One record of `read(2)` on the device.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ummunotify_event {
    /// `UMMUNOTIFY_EVENT_TYPE_*`.
    pub type_: u32,
    /// `UMMUNOTIFY_EVENT_FLAG_*`.
    pub flags: u32,
    /// First invalidated byte, when `FLAG_HINT`.
    pub hint_start: u64,
    /// One past the last invalidated byte, when `FLAG_HINT`.
    pub hint_end: u64,
    /// INVAL: the cookie. LAST: the generation counter.
    pub user_cookie_counter: u64,
}

/// The ioctl magic, `'U'`.
pub const UMMUNOTIFY_MAGIC: u32 = b'U' as u32;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Linux `_IOC(dir, type, nr, size)` (asm-generic layout, x86 and arm64).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

/// `UMMUNOTIFY_EXCHANGE_FEATURES`: `_IOWR('U', 1, __u32)`.
pub const UMMUNOTIFY_EXCHANGE_FEATURES: u32 = ioc(
    IOC_READ | IOC_WRITE,
    UMMUNOTIFY_MAGIC,
    1,
    std::mem::size_of::<u32>(),
);
/// `UMMUNOTIFY_REGISTER_REGION`: `_IOW('U', 2, struct ummunotify_register_ioctl)`.
pub const UMMUNOTIFY_REGISTER_REGION: u32 = ioc(
    IOC_WRITE,
    UMMUNOTIFY_MAGIC,
    2,
    std::mem::size_of::<ummunotify_register_ioctl>(),
);
/// `UMMUNOTIFY_UNREGISTER_REGION`: `_IOW('U', 3, __u64)`.
pub const UMMUNOTIFY_UNREGISTER_REGION: u32 =
    ioc(IOC_WRITE, UMMUNOTIFY_MAGIC, 3, std::mem::size_of::<u64>());

/// `UMMUNOTIFY_FEATURE_REGION_WORDS` (extension, umn/kmod): a 64-bit word
/// per registration in the mmap'd area; REGISTER_REGION writes its index
/// (in `u64`s from the start of the mapping) back into `reserved`. The word
/// is 0 at registration and is incremented by every event that hits it.
pub const UMMUNOTIFY_FEATURE_REGION_WORDS: u32 = 1;

/// Result of `UMMUNOTIFY_GET_AREA` (extension, umn/kmod).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ummunotify_area {
    /// Bytes that `mmap` at offset 0 may map.
    pub length: u64,
    /// Registrations the file accepts (`ENOSPC` beyond).
    pub max_regions: u32,
    /// Index (in `u64`) of the first region word; 0 without the feature.
    pub first_word: u32,
}

/// `UMMUNOTIFY_GET_AREA`: `_IOR('U', 4, struct ummunotify_area)`
/// (extension, umn/kmod; `ENOTTY` from other devices).
pub const UMMUNOTIFY_GET_AREA: u32 = ioc(
    IOC_READ,
    UMMUNOTIFY_MAGIC,
    4,
    std::mem::size_of::<ummunotify_area>(),
);

const _: () = assert!(std::mem::size_of::<ummunotify_area>() == 16);
const _: () = assert!(std::mem::size_of::<ummunotify_register_ioctl>() == 32);
const _: () = assert!(std::mem::size_of::<ummunotify_event>() == 32);
