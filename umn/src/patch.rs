//! The `patch` source: libc's unmap-like functions patched to jump to our
//! hooks, which invalidate *before* the system call. No module, no
//! privilege, no userfaultfd.
//!
//! ## Why patch function bodies, not symbols
//!
//! Interposing a symbol (`crate::hooks`) catches the application's calls
//! only: glibc calls its own hidden aliases (`__munmap` from `free`,
//! `__mremap` from `realloc`, `__madvise` from `malloc_trim`, `__brk`
//! from `sbrk`), which never go through the PLT. Those aliases share the
//! function *body* with the exported symbol, so a jump written at the
//! start of the body catches every caller. The hook does not return into
//! libc's body: it performs the system call itself (`syscall(2)`, which
//! sets `errno` like the wrapper) — so there is no displaced-instruction
//! trampoline to get wrong.
//!
//! Patched: `munmap`, `mremap`, `madvise` (DONTNEED, DONTNEED_LOCKED,
//! FREE, REMOVE, GUARD_INSTALL), `mmap` (`MAP_FIXED` over a range), `brk`
//! (shrink; glibc's `__curbrk` is kept up to date as its `brk` does),
//! `shmdt`.
//!
//! ## The ordering argument
//!
//! The hooks feed the `Patch` notifiers only (`Shared::patch_fed`): a
//! `Uffd` notifier hears the same change from its uffd, and an extra
//! event would cost it the hint; `External` ones hear only their host.
//!
//! A hook, with `r` the range the call may take away:
//!
//! ```text
//!   walk = capture live Patch notifiers    (fork.rs: held until the end)
//!   for each: begin()  (AcqRel RMW: busy)  ; record(r) into its ring
//!   syscall(munmap, ...)                    (the kernel frees the range)
//!   for each: end()    (Release: settled)   ; poke its eventfd
//! ```
//!
//! Claim: a `get` on another thread B that is served after the address
//! can be reused never hits the stale registration. B can only hold
//! memory at a reused address after its own `mmap` there returned; the
//! kernel serialises that `mmap` after our `munmap` removed the VMA (both
//! under the process's mmap lock, a release/acquire pair), and our
//! `begin` is sequenced before our system call. So B's `Acquire` load of
//! the generation in the hit path reads `begin`'s value or a later one:
//! it differs from what the cache last drained to, and B drains. The
//! drain waits for a *settled* value (`GenCell::settle`), which comes
//! only after our `end` — after the system call returned — and our event
//! was in the ring before `end` (`Release`), so the drain applies it and
//! the stale registration is gone before B's lookup. Keeping the word
//! busy *across* the system call (rather than `begin; record; end;
//! syscall`) matters for a drain that runs in between: it could consume
//! our event while the old pages are still mapped, and a registration
//! made right after it (of memory that is about to go) would survive the
//! unmap. With the word busy, every drain of the window waits for the
//! unmap to complete. A failed call leaves a spurious event: one
//! unnecessary invalidation, never a missed one.
//!
//! ## Reentrancy, and why there is no thread-local guard
//!
//! A hook runs wherever libc's function would: inside `free` (malloc's
//! arena lock held), inside the Rust allocator, inside a signal handler,
//! inside umn's own drain. So it takes no lock, allocates nothing and
//! calls nothing patched: atomics, the lock-free rings, `syscall(2)`,
//! `__errno_location`, and for `shmdt` the allocation-free VMA lookup of
//! `crate::vma`. Nothing in it is per thread, so a nested hook (a signal
//! handler that unmaps while the thread is inside a hook) simply runs the
//! whole protocol nested: the busy count goes to 2 and back. A
//! thread-local "already inside" flag would add nothing but risk: in a
//! `dlopen`ed `libregcache.so` a thread-local lives in dynamic TLS, whose
//! first touch by a thread goes through `__tls_get_addr`, which may call
//! `malloc` — inside `free`. The one self-wait is a drain on a thread that
//! is itself inside a hook (a signal handler calling into the cache
//! during the unmap it interrupted): `settle` would spin on its own busy
//! mark. The cache is not async-signal-safe, so that is out of contract.
//!
//! ## Installing a patch without a half-written moment
//!
//! libfabric's patcher crashed threads that executed a half-written jump
//! (libfabric #7569, #10943). Here a patch is one aligned 8-byte atomic
//! compare-and-swap that replaces *exactly one* instruction start (the
//! function's first instruction) and leaves the other bytes of the word
//! as they were; a thread fetches either the whole old instruction or the
//! whole new one, and a thread parked at a later instruction boundary
//! (e.g. inside the `syscall` of a `munmap` that waits for a userfaultfd
//! monitor) returns into unchanged bytes. Two forms:
//!
//! - **near**: the first instruction is 5 bytes or longer (glibc's
//!   syscall wrappers start with `mov $nr, %eax`): it becomes `jmp rel32`
//!   to a 16-byte stub in a page we map within ±2 GiB of libc, which does
//!   `movabs $hook, %r11; jmp *%r11` (`r11` is clobbered by `syscall`
//!   anyway and is not an argument register);
//! - **short**: the first instruction is 2–4 bytes (`mremap`, `mmap`): it
//!   becomes `jmp rel8` to the alignment padding right before or after
//!   the function (bytes no code reaches, checked with the symbol sizes
//!   of `dladdr1` and the padding byte patterns), where a `jmp rel32` to
//!   the stub was written first; the padding is not executed by anyone,
//!   so writing it needs no care.
//!
//! The page is made `RWX` for the store and restored to `R-X`; then
//! `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)` makes every
//! running thread serialise its instruction stream, so no thread executes
//! the unpatched body once `install` returns. (Linux's own text patching
//! uses `int3` because it replaces instructions whose interior other CPUs
//! may be at; replacing only the first instruction in one atomic store
//! does not need it, and needs no SIGTRAP handler — which would kill a
//! thread that blocks SIGTRAP.)
//!
//! All-or-nothing: every function is planned (decoded, a stub and a slot
//! found) before any is written. A prologue that is already a jump
//! (another patcher: UCX's bistro, Open MPI's patcher) or that we cannot
//! decode is a named [`Unavailable`] reason, counted in
//! [`fallbacks`], and `Source::Auto` then opens userfaultfd. If a write
//! fails midway, the functions already patched stay patched (their hooks
//! are correct for every source) and the source is still refused. A
//! patch is never removed: the process keeps the hooks until it exits or
//! `exec`s (the new image has a fresh libc); a `fork` child inherits them
//! with inert notifiers (the walk skips forked ones).
//!
//! ## What it cannot see
//!
//! System calls that do not go through libc's functions: raw `syscall`
//! instructions (a statically linked runtime, `syscall(SYS_munmap, ..)`),
//! another libc, `io_uring`. Changes the kernel makes without a call of
//! ours: a shared file truncated or hole-punched elsewhere. `shmat` with
//! `SHM_REMAP` and `remap_file_pages` (`crate::hooks` interposes those).
//! A patch another library writes *after* ours replaces our jump; we
//! cannot see that happen ([`intact`] tells, and `Notifier::register` on
//! a `Patch` notifier checks it).
//!
//! x86-64 only; elsewhere [`install`] reports [`Unavailable::Arch`].

use std::ffi::{CStr, c_int, c_long, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::notifier::with_patch_fed;
use crate::range::AddrRange;
use crate::ring::{RawEvent, RawKind};

/// Why the `patch` source is not available in this process: the named
/// reason of a fallback to userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// Not x86-64.
    Arch,
    /// `dlopen("libc.so.6", RTLD_NOLOAD)` or `dlsym` found no libc function.
    NoLibc(&'static str),
    /// The function already starts with a jump or a trap: another library
    /// (Open MPI's patcher, UCX's bistro, a debugger) patched it first.
    ForeignPatch(&'static str),
    /// The first instruction is not one the patcher can replace safely.
    UnknownPrologue(&'static str),
    /// A short first instruction and no padding slot within `jmp rel8`.
    NoSlot(&'static str),
    /// No page for the stubs within ±2 GiB of libc.
    NoStubPage,
    /// `mprotect` refused to make libc's text writable (SELinux `execmod`,
    /// PaX, a W^X policy).
    Protect(&'static str),
    /// The function's bytes changed between planning and the store (a
    /// concurrent patcher).
    Raced(&'static str),
    /// Installed, but a patch written after ours replaced a jump.
    Overwritten,
    /// Running under valgrind (its preload is in `LD_PRELOAD`): valgrind
    /// keeps executing its translation of libc's file-backed text made
    /// before the patch (`--smc-check=all-non-file`), so hooks would be
    /// skipped silently.
    Valgrind,
}

impl Unavailable {
    /// A short name for logs and statistics, e.g. `foreign-patch(munmap)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Arch => "arch".into(),
            Self::NoLibc(f) => format!("no-libc({f})"),
            Self::ForeignPatch(f) => format!("foreign-patch({f})"),
            Self::UnknownPrologue(f) => format!("unknown-prologue({f})"),
            Self::NoSlot(f) => format!("no-slot({f})"),
            Self::NoStubPage => "no-stub-page".into(),
            Self::Protect(f) => format!("mprotect({f})"),
            Self::Raced(f) => format!("raced({f})"),
            Self::Overwritten => "overwritten".into(),
            Self::Valgrind => "valgrind".into(),
        }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "libc patching unavailable: {}", self.describe())
    }
}

static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// How many times `Source::Auto` fell back from the `patch` source to
/// userfaultfd in this process (the reason is [`install`]'s error).
pub fn fallbacks() -> u64 {
    FALLBACKS.load(Ordering::Relaxed)
}

pub(crate) fn count_fallback() {
    FALLBACKS.fetch_add(1, Ordering::Relaxed);
}

/// One function to patch: its libc name and our hook.
struct Target {
    name: &'static CStr,
    short: &'static str,
    hook: usize,
}

fn targets() -> [Target; 6] {
    [
        Target {
            name: c"munmap",
            short: "munmap",
            hook: hook_munmap as *const () as usize,
        },
        Target {
            name: c"mremap",
            short: "mremap",
            hook: hook_mremap as *const () as usize,
        },
        Target {
            name: c"madvise",
            short: "madvise",
            hook: hook_madvise as *const () as usize,
        },
        Target {
            name: c"mmap",
            short: "mmap",
            hook: hook_mmap as *const () as usize,
        },
        Target {
            name: c"brk",
            short: "brk",
            hook: hook_brk as *const () as usize,
        },
        Target {
            name: c"shmdt",
            short: "shmdt",
            hook: hook_shmdt as *const () as usize,
        },
    ]
}

/// The result of the one installation attempt of the process.
static INSTALLED: Mutex<Option<Result<(), Unavailable>>> = Mutex::new(None);
/// The patched words, for [`intact`]: (address, value we stored).
static SITES: [(AtomicUsize, AtomicU64); 6] = [const { (AtomicUsize::new(0), AtomicU64::new(0)) }; 6];

/// Patch libc (once per process; later calls return the first result).
///
/// # Errors
/// The [`Unavailable`] reason; the process then keeps running unpatched
/// (or with the functions patched before the failure, whose hooks are
/// correct for every source).
pub fn install() -> Result<(), Unavailable> {
    let mut g = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = *g {
        return r;
    }
    let r = imp::install();
    *g = Some(r);
    r
}

/// `true` when every patch of [`install`] is still in place (another
/// library patching libc after us would have overwritten a jump).
pub fn intact() -> bool {
    let ok = matches!(
        *INSTALLED.lock().unwrap_or_else(|p| p.into_inner()),
        Some(Ok(()))
    );
    ok && SITES.iter().all(|(a, v)| {
        let a = a.load(Ordering::Acquire);
        // SAFETY: `a` is an 8-aligned word of libc's text we patched; text
        // stays mapped for the process's life and is read atomically.
        a != 0 && unsafe { &*(a as *const AtomicU64) }.load(Ordering::Acquire) == v.load(Ordering::Acquire)
    })
}

// ---- the hooks ----------------------------------------------------------

/// Invalidate `range` on every live `Patch` notifier around `call` (module docs,
/// "The ordering argument"). Lock-free, allocation-free.
fn around(kind: RawKind, range: Option<AddrRange>, call: impl FnOnce() -> c_long) -> c_long {
    let Some(range) = range.filter(|r| !r.is_empty()) else {
        return call();
    };
    with_patch_fed(|set| {
        for s in set.iter() {
            s.word.begin();
            s.record(RawEvent { kind, range });
        }
        let r = call();
        for s in set.iter() {
            s.word.end();
            s.poke();
        }
        r
    })
}

fn pages(start: usize, len: usize) -> Option<AddrRange> {
    AddrRange::from_start_len(start as u64, len as u64)
        .and_then(|r| r.page_align())
        .ok()
}

extern "C" fn hook_munmap(addr: *mut c_void, len: usize) -> c_int {
    let r = around(RawKind::Unmap, pages(addr as usize, len), || {
        // SAFETY: the application's munmap, performed for it.
        unsafe { libc::syscall(libc::SYS_munmap, addr, len) }
    });
    r as c_int
}

extern "C" fn hook_mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new_addr: *mut c_void,
) -> *mut c_void {
    // Growing in place keeps the old pages, but whether it moves is known
    // only afterwards: the whole old range, except a plain shrink.
    let moves = flags & (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) != 0;
    let gone = if !moves && new_len < old_len {
        pages((old as usize).wrapping_add(new_len), old_len - new_len)
    } else {
        pages(old as usize, old_len)
    };
    let call = || {
        // SAFETY: the application's mremap, performed for it (`new_addr`
        // is only read by the kernel with MREMAP_FIXED, as in libc).
        unsafe { libc::syscall(libc::SYS_mremap, old, old_len, new_len, flags, new_addr) }
    };
    let r = if flags & libc::MREMAP_FIXED != 0 {
        // The destination is unmapped first.
        around(RawKind::Unmap, pages(new_addr as usize, new_len), || {
            around(RawKind::Unmap, gone, call)
        })
    } else {
        around(RawKind::Unmap, gone, call)
    };
    r as *mut c_void
}

/// `MADV_GUARD_INSTALL` (Linux 6.13).
const MADV_GUARD_INSTALL: c_int = 102;

extern "C" fn hook_madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int {
    let drops = matches!(
        advice,
        libc::MADV_DONTNEED
            | libc::MADV_FREE
            | libc::MADV_REMOVE
            | libc::MADV_DONTNEED_LOCKED
            | MADV_GUARD_INSTALL
    );
    let range = if drops { pages(addr as usize, len) } else { None };
    let r = around(RawKind::Remove, range, || {
        // SAFETY: the application's madvise, performed for it.
        unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice) }
    });
    r as c_int
}

extern "C" fn hook_mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: libc::off_t,
) -> *mut c_void {
    let range = if flags & libc::MAP_FIXED != 0 {
        pages(addr as usize, len)
    } else {
        None
    };
    let r = around(RawKind::Unmap, range, || {
        // SAFETY: the application's mmap, performed for it (the kernel
        // checks the offset's alignment as glibc does: EINVAL).
        unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) }
    });
    r as *mut c_void
}

/// glibc's `__curbrk` (exported): its `brk` stores the new break there,
/// and `sbrk` reads it.
static CURBRK: AtomicUsize = AtomicUsize::new(0);

extern "C" fn hook_brk(addr: *mut c_void) -> c_int {
    let cur_p = CURBRK.load(Ordering::Relaxed) as *mut usize;
    // SAFETY: `cur_p` is glibc's `__curbrk` (dlsym'd at install), a plain
    // word glibc itself reads and writes without synchronisation.
    let cur = if cur_p.is_null() { 0 } else { unsafe { *cur_p } };
    let want = addr as usize;
    let pg = crate::range::page_size() as usize;
    // A shrink unmaps [PAGE_ALIGN(new), PAGE_ALIGN(old)) (mm/mmap.c brk).
    let range = if want != 0 && want < cur {
        let lo = want.next_multiple_of(pg);
        let hi = cur.next_multiple_of(pg);
        (hi > lo).then(|| pages(lo, hi - lo)).flatten()
    } else {
        None
    };
    let got = around(RawKind::Unmap, range, || {
        // SAFETY: the brk system call; it never fails, it returns the
        // break in force.
        unsafe { libc::syscall(libc::SYS_brk, addr) }
    }) as usize;
    if !cur_p.is_null() {
        // SAFETY: as above; glibc's brk does exactly this store.
        unsafe { *cur_p = got };
    }
    if got < want {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
        return -1;
    }
    0
}

extern "C" fn hook_shmdt(addr: *const c_void) -> c_int {
    // Before detaching: afterwards the segment is gone from the maps.
    let extent = crate::vma::object_extent(addr as u64).ok().flatten();
    let r = around(RawKind::Unmap, extent, || {
        // SAFETY: the application's shmdt, performed for it.
        unsafe { libc::syscall(libc::SYS_shmdt, addr) }
    });
    r as c_int
}

// ---- the patcher --------------------------------------------------------

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn install() -> Result<(), super::Unavailable> {
        Err(super::Unavailable::Arch)
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;

    /// `membarrier(2)` commands (include/uapi/linux/membarrier.h).
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: c_long = 1 << 5;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: c_long = 1 << 6;
    /// `dladdr1` flag: return the `ElfW(Sym)` (dlfcn.h).
    const RTLD_DL_SYMENT: c_int = 1;
    /// Bytes of one stub: `movabs $hook, %r11; jmp *%r11`, padded.
    const STUB: usize = 16;

    /// How the first instruction is replaced.
    #[derive(Clone, Copy)]
    enum Form {
        /// `jmp rel32` to the stub, over a first instruction of ≥ 5 bytes.
        Near,
        /// `jmp rel8` to `slot` (padding), which holds `jmp rel32`.
        Short { slot: usize },
    }

    #[derive(Clone, Copy)]
    struct Plan {
        short: &'static str,
        site: usize,
        /// The 8-byte word containing the replaced bytes, as read.
        word: u64,
        form: Form,
        hook: usize,
    }

    /// Length of the instruction at `b[0]`, for the few forms compilers
    /// emit first in libc's unmap-like functions; `None` otherwise.
    pub(super) fn insn_len(b: &[u8]) -> Option<usize> {
        let (rex, op) = match b[0] {
            0x40..=0x4f => (1, &b[1..]),
            _ => (0, b),
        };
        let rex_w = rex == 1 && b[0] & 0x08 != 0;
        let modrm_reg = |m: u8| m >> 6 == 3;
        let n = match op[0] {
            // endbr64
            0xf3 if rex == 0 && op[1..4] == [0x0f, 0x1e, 0xfa] => 4,
            // mov $imm32, %r32 (imm64 with REX.W)
            0xb8..=0xbf => {
                if rex_w {
                    9
                } else {
                    5
                }
            }
            // push/pop %r
            0x50..=0x5f => 1,
            // reg-reg mov/test/xor/add/sub/cmp
            0x89 | 0x8b | 0x85 | 0x31 | 0x33 | 0x01 | 0x03 | 0x29 | 0x2b | 0x39 | 0x3b
                if modrm_reg(op[1]) =>
            {
                2
            }
            // add/sub/cmp $imm8, %r
            0x83 if modrm_reg(op[1]) => 3,
            // add/sub/cmp $imm32, %r
            0x81 if modrm_reg(op[1]) => 6,
            _ => return None,
        };
        Some(rex + n)
    }

    /// The first bytes are a jump or a trap: somebody patched it.
    pub(super) fn foreign(b: &[u8]) -> bool {
        matches!(b[0], 0xe9 | 0xeb | 0xcc | 0xe8)
            || (b[0] == 0xff && (b[1] >> 3) & 7 == 4)
            || (b[0] == 0x41 && b[1] == 0xff)
            || (matches!(b[0], 0x48 | 0x49) && matches!(b[1], 0xb8..=0xbf) && {
                // movabs $imm64, %r then jmp *%r: Open MPI's and UCX's form.
                b.len() > 12 && (b[10] == 0xff || b[11] == 0xff)
            })
    }

    /// gcc/gas alignment padding bytes (multi-byte nops, int3, nop).
    fn padding_byte(b: u8) -> bool {
        matches!(b, 0x90 | 0xcc | 0x66 | 0x2e | 0x0f | 0x1f | 0x84 | 0x44 | 0x40 | 0x80 | 0x00)
    }

    fn sym_of(addr: usize) -> Option<(usize, usize)> {
        let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
        let mut sym: *mut c_void = std::ptr::null_mut();
        // SAFETY: dladdr1 writes `info` and a pointer to the symbol entry
        // (owned by the loader, read-only, valid while libc is loaded).
        let ok = unsafe {
            libc::dladdr1(
                addr as *const c_void,
                info.as_mut_ptr(),
                &mut sym as *mut *mut c_void,
                RTLD_DL_SYMENT,
            )
        };
        if ok == 0 || sym.is_null() {
            return None;
        }
        // SAFETY: as above, `sym` points at an Elf64_Sym.
        let s = unsafe { &*(sym as *const libc::Elf64_Sym) };
        // SAFETY: dladdr1 succeeded, so `info` is initialised.
        let base = unsafe { info.assume_init() }.dli_fbase as usize;
        Some((base + s.st_value as usize, s.st_size as usize))
    }

    /// Five padding bytes within `jmp rel8` of `site + 2` (the jump's
    /// end): the tail of the function's own alignment padding, or the
    /// padding right before it.
    fn find_slot(site: usize) -> Option<usize> {
        let (start, size) = sym_of(site)?;
        if start != site || size == 0 {
            return None;
        }
        let reach = |slot: usize| {
            let d = slot as isize - (site as isize + 2);
            (-128..=127).contains(&d)
        };
        let all_padding = |a: usize, n: usize| {
            // SAFETY: libc text, mapped readable for the process's life.
            (0..n).all(|i| padding_byte(unsafe { *((a + i) as *const u8) }))
        };
        // After: [end, next 16-byte boundary) is padding no code reaches.
        let end = site + size;
        let after_end = end.next_multiple_of(16);
        if after_end - end >= 5
            && reach(end)
            && sym_of(end).is_none()
            && all_padding(end, after_end - end)
        {
            return Some(end);
        }
        // Before: the previous function (the last byte some symbol
        // covers, scanning down) ends short of us; the gap is padding.
        for a in (site.saturating_sub(16)..site).rev() {
            if let Some((pstart, psize)) = sym_of(a) {
                let pend = pstart + psize;
                let slot = site - 5;
                if pend <= slot && reach(slot) && all_padding(pend, site - pend) {
                    return Some(slot);
                }
                break;
            }
        }
        None
    }

    fn plan(t: &Target, libc: *mut c_void) -> Result<Plan, Unavailable> {
        // SAFETY: dlsym on a handle from dlopen, with a C string.
        let p = unsafe { libc::dlsym(libc, t.name.as_ptr()) } as usize;
        if p == 0 {
            return Err(Unavailable::NoLibc(t.short));
        }
        let mut b = [0u8; 16];
        // SAFETY: a function of libc: its first 16 bytes are mapped text
        // (functions are followed by other text or padding in the page).
        unsafe { std::ptr::copy_nonoverlapping(p as *const u8, b.as_mut_ptr(), 16) };
        if foreign(&b) {
            return Err(Unavailable::ForeignPatch(t.short));
        }
        let len = insn_len(&b).ok_or(Unavailable::UnknownPrologue(t.short))?;
        let in_word = |n: usize| p % 8 + n <= 8;
        let form = if len >= 5 && in_word(5) {
            Form::Near
        } else if len >= 2 && in_word(2) {
            Form::Short {
                slot: find_slot(p).ok_or(Unavailable::NoSlot(t.short))?,
            }
        } else {
            return Err(Unavailable::UnknownPrologue(t.short));
        };
        let wa = p & !7;
        // SAFETY: aligned word of mapped text, read atomically.
        let word = unsafe { &*(wa as *const AtomicU64) }.load(Ordering::Acquire);
        Ok(Plan {
            short: t.short,
            site: p,
            word,
            form,
            hook: t.hook,
        })
    }

    /// Map one page for the stubs within `jmp rel32` of every site.
    fn stub_page(sites: &[usize]) -> Option<usize> {
        let lo = *sites.iter().min()?;
        let hi = *sites.iter().max()?;
        let pg = crate::range::page_size() as usize;
        let ok = |a: usize| {
            let far = |s: usize| (a as isize - s as isize).unsigned_abs() < (1 << 31) - 2 * pg;
            far(lo) && far(hi)
        };
        // Below libc first (the usual free gap), then above it.
        for k in 1..512usize {
            for cand in [
                (lo & !(pg - 1)).checked_sub(k << 20),
                (hi & !(pg - 1)).checked_add(k << 20),
            ]
            .into_iter()
            .flatten()
            {
                if !ok(cand) {
                    continue;
                }
                // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; a
                // fresh private anonymous page.
                let m = unsafe {
                    libc::mmap(
                        cand as *mut c_void,
                        pg,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                if m != libc::MAP_FAILED {
                    if m as usize == cand {
                        return Some(cand);
                    }
                    // An old kernel treated the flag as a hint.
                    // SAFETY: our own fresh mapping.
                    unsafe { libc::munmap(m, pg) };
                }
            }
        }
        None
    }

    fn jmp_rel32(from: usize, to: usize) -> [u8; 5] {
        let d = (to as isize - (from as isize + 5)) as i32;
        let r = d.to_le_bytes();
        [0xe9, r[0], r[1], r[2], r[3]]
    }

    /// Make the pages of `[a, a + n)` RWX (`true`) or R-X again.
    fn protect(a: usize, n: usize, write: bool) -> bool {
        let pg = crate::range::page_size() as usize;
        let lo = a & !(pg - 1);
        let hi = (a + n).next_multiple_of(pg);
        let prot = libc::PROT_READ | libc::PROT_EXEC | if write { libc::PROT_WRITE } else { 0 };
        // SAFETY: changing the protection of libc's own text pages, which
        // stay mapped; R-X is what the loader gave them.
        unsafe { libc::mprotect(lo as *mut c_void, hi - lo, prot) == 0 }
    }

    fn sync_cores(registered: bool) {
        if registered {
            // SAFETY: membarrier has no memory-safety preconditions.
            unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
                    0,
                    0,
                )
            };
        }
    }

    pub(super) fn install() -> Result<(), Unavailable> {
        if std::env::var_os("LD_PRELOAD")
            .is_some_and(|p| p.to_string_lossy().contains("vgpreload"))
        {
            return Err(Unavailable::Valgrind);
        }
        // SAFETY: dlopen of an already-loaded library by its soname, with
        // RTLD_NOLOAD: no constructor runs, no new object is mapped.
        let h = unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        if h.is_null() {
            return Err(Unavailable::NoLibc("libc.so.6"));
        }
        // SAFETY: as above; the exported `__curbrk` word.
        let curbrk = unsafe { libc::dlsym(h, c"__curbrk".as_ptr()) };
        let ts = targets();
        let mut plans = [None; 6];
        for (p, t) in plans.iter_mut().zip(&ts) {
            *p = Some(plan(t, h)?);
        }
        let plans = plans.map(|p| p.unwrap_or_else(|| unreachable!()));
        let sites = plans.map(|p| p.site);
        let stubs = stub_page(&sites).ok_or(Unavailable::NoStubPage)?;
        for (i, p) in plans.iter().enumerate() {
            let s = stubs + i * STUB;
            let mut code = [0xccu8; STUB];
            code[0] = 0x49;
            code[1] = 0xbb;
            code[2..10].copy_from_slice(&(p.hook as u64).to_le_bytes());
            code[10..13].copy_from_slice(&[0x41, 0xff, 0xe3]);
            // SAFETY: our own fresh RW page, STUB bytes per function.
            unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), s as *mut u8, STUB) };
        }
        let pg = crate::range::page_size() as usize;
        // SAFETY: our own page: now read+execute only.
        if unsafe { libc::mprotect(stubs as *mut c_void, pg, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            return Err(Unavailable::NoStubPage);
        }
        CURBRK.store(curbrk as usize, Ordering::Relaxed);
        // SAFETY: membarrier has no memory-safety preconditions.
        let registered = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            )
        } == 0;
        for (i, p) in plans.iter().enumerate() {
            let stub = stubs + i * STUB;
            let wa = p.site & !7;
            let off = p.site - wa;
            let mut bytes = p.word.to_le_bytes();
            let (lo, n) = match p.form {
                Form::Near => {
                    bytes[off..off + 5].copy_from_slice(&jmp_rel32(p.site, stub));
                    (wa, 8)
                }
                Form::Short { slot } => {
                    let d = (slot as isize - (p.site as isize + 2)) as i8;
                    bytes[off] = 0xeb;
                    bytes[off + 1] = d as u8;
                    let lo = wa.min(slot);
                    (lo, (wa + 8).max(slot + 5) - lo)
                }
            };
            if !protect(lo, n, true) {
                return Err(Unavailable::Protect(p.short));
            }
            if let Form::Short { slot } = p.form {
                let j = jmp_rel32(slot, stub);
                // SAFETY: alignment padding no code reaches (find_slot),
                // on a page made writable above.
                unsafe { std::ptr::copy_nonoverlapping(j.as_ptr(), slot as *mut u8, 5) };
            }
            // SAFETY: an aligned word of writable text; the one atomic
            // store replaces the first instruction whole (module docs).
            let cell = unsafe { &*(wa as *const AtomicU64) };
            let new = u64::from_le_bytes(bytes);
            let swapped = cell
                .compare_exchange(p.word, new, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            sync_cores(registered);
            let restored = protect(lo, n, false);
            if !swapped {
                return Err(Unavailable::Raced(p.short));
            }
            SITES[i].0.store(wa, Ordering::Release);
            SITES[i].1.store(new, Ordering::Release);
            if !restored {
                return Err(Unavailable::Protect(p.short));
            }
        }
        Ok(())
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::imp::{foreign, insn_len};

    #[test]
    fn decodes_the_prologues_glibc_starts_with() {
        let pad = |v: &[u8]| {
            let mut b = [0u8; 16];
            b[..v.len()].copy_from_slice(v);
            b
        };
        assert_eq!(insn_len(&pad(&[0xb8, 0x0b, 0, 0, 0])), Some(5)); // mov $11,%eax
        assert_eq!(insn_len(&pad(&[0x48, 0x83, 0xec, 0x58])), Some(4)); // sub $0x58,%rsp
        assert_eq!(insn_len(&pad(&[0x41, 0x89, 0xca])), Some(3)); // mov %ecx,%r10d
        assert_eq!(insn_len(&pad(&[0x41, 0x54])), Some(2)); // push %r12
        assert_eq!(insn_len(&pad(&[0xf3, 0x0f, 0x1e, 0xfa])), Some(4)); // endbr64
        // A memory operand is not decoded: refused, not guessed.
        assert_eq!(insn_len(&pad(&[0x48, 0x8b, 0x05, 1, 2, 3, 4])), None);
    }

    #[test]
    fn recognises_other_patchers_jumps() {
        let pad = |v: &[u8]| {
            let mut b = [0u8; 16];
            b[..v.len()].copy_from_slice(v);
            b
        };
        assert!(foreign(&pad(&[0xe9, 1, 2, 3, 4])));
        assert!(foreign(&pad(&[0xcc])));
        // movabs $x, %r11; jmp *%r11
        assert!(foreign(&pad(&[0x49, 0xbb, 1, 2, 3, 4, 5, 6, 7, 8, 0x41, 0xff, 0xe3])));
        // movabs $x, %rax; jmp *%rax
        assert!(foreign(&pad(&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xe0])));
        assert!(!foreign(&pad(&[0xb8, 0x0b, 0, 0, 0, 0x0f, 0x05])));
        assert!(!foreign(&pad(&[0x48, 0x83, 0xec, 0x58])));
    }
}
