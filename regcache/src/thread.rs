//! The calling thread's index, and how it is found in one or two loads.
//!
//! Per-thread structures of the cache — the hit-counter stripes of
//! [`crate::Stats`] and the deferred-release tables — are arrays indexed by
//! a small process-unique *thread index*, handed out from a global counter
//! the first time a thread asks and never reused. So an entry is written
//! only by its owner thread, with plain loads and stores on atomics (no
//! locked read-modify-write), and read by others only for sums that may be
//! slightly old. Threads beyond the first [`STRIPES`] get indices past the
//! arrays' ends; every user checks with `get` and falls back to a shared
//! atomic path.
//!
//! The wart is the thread-local word itself: in a shared library Rust's
//! `thread_local!` costs a call per access, which the C hit path cannot
//! afford four times per get+release; hence the hand-written initial-exec
//! TLS below, and [`ThisThread`] to look the index up once per C call.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Number of per-thread entries in the per-thread arrays (hit-counter
/// stripes, deferred-release tables); threads with a higher index share
/// the atomic fallbacks.
pub const STRIPES: usize = 64;

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

// In a `cdylib` (the C API) Rust's `thread_local!` uses the
// general-dynamic TLS model: every access calls `__tls_get_addr` in the
// dynamic loader (~11 instructions, four times per C get+release). Stable
// Rust cannot ask for `initial-exec`, so on x86-64 Linux the stripe lives
// in a TLS word of our own, defined in assembly and addressed the
// initial-exec way: one GOT load plus one `%fs`-relative load. The linker
// then marks the shared library `STATIC_TLS`: when it is `dlopen`ed (not
// just linked or preloaded), glibc places its *whole* TLS block (168 bytes
// for libregcache.so, most of it std's) in the static-TLS surplus, as for
// libGL or LTTng; the default surplus (`glibc.rtld.optional_static_tls`,
// 512 bytes) holds it. Checked: dlopen + get + release works. The
// feature `initial-exec-tls` turns this on (regcache-ffi does); without
// it, or elsewhere, `thread_local!`.
#[cfg(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux"
))]
mod ie_tls {
    std::arch::global_asm!(
        ".pushsection .tdata.regcache_thread_stripe,\"awT\",@progbits",
        ".globl regcache_thread_stripe_word",
        ".hidden regcache_thread_stripe_word",
        ".type regcache_thread_stripe_word,@object",
        ".size regcache_thread_stripe_word,8",
        ".p2align 3",
        "regcache_thread_stripe_word:",
        ".quad -1",
        ".popsection",
    );

    /// This thread's stripe word: `usize::MAX` until assigned.
    #[inline(always)]
    pub(super) fn word() -> *mut usize {
        let p: *mut usize;
        // SAFETY: initial-exec TLS access on x86-64 (System V TLS ABI,
        // Drepper "ELF Handling For Thread-Local Storage" §4.3.6): the GOT
        // entry holds the word's offset from the thread pointer, and
        // `%fs:0` holds the thread pointer itself. Reads memory only
        // (the GOT and the TCB), which is always mapped.
        unsafe {
            std::arch::asm!(
                "mov {p}, qword ptr [rip + regcache_thread_stripe_word@GOTTPOFF]",
                "add {p}, qword ptr fs:[0]",
                p = out(reg) p,
                // `nomem`: the two words read (the GOT entry, written once
                // by the loader, and the thread pointer) never change
                // while this thread runs, so the compiler may reuse the
                // result within a function.
                options(pure, nomem, nostack),
            );
        }
        p
    }
}

#[cfg(not(all(
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux"
)))]
mod ie_tls {
    use std::cell::Cell;
    thread_local! {
        /// This thread's stripe word: `usize::MAX` until assigned.
        static WORD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    #[inline(always)]
    pub(super) fn word() -> *mut usize {
        WORD.with(|c| c.as_ptr())
    }
}

/// This thread's index: unique per thread for the life of the process
/// (never reused, so a structure indexed by it is written only by its
/// owner thread).
#[inline(always)]
pub fn thread_stripe() -> usize {
    let w = ie_tls::word();
    // SAFETY: `w` is this thread's own TLS word; only this thread reads or
    // writes it.
    let v = unsafe { w.read() };
    if v != usize::MAX {
        return v;
    }
    assign(w)
}

/// The calling thread, as a value that cannot leave it (`!Send`, `!Sync`):
/// look the per-thread index up once with [`this_thread`] and pass it to
/// several calls ([`crate::Cache::get_token_on`],
/// [`crate::Cache::release_token_on`]) instead of one TLS access each.
#[derive(Debug, Clone, Copy)]
pub struct ThisThread {
    index: usize,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl ThisThread {
    /// The thread's index ([`thread_stripe`]): unique per thread, never
    /// reused.
    #[inline(always)]
    pub fn index(self) -> usize {
        self.index
    }
}

/// The calling thread; see [`ThisThread`].
#[inline(always)]
pub fn this_thread() -> ThisThread {
    ThisThread {
        index: thread_stripe(),
        _not_send: std::marker::PhantomData,
    }
}

#[cold]
fn assign(w: *mut usize) -> usize {
    let id = NEXT_THREAD.fetch_add(1, Relaxed);
    // SAFETY: as in `thread_stripe`.
    unsafe { w.write(id) };
    id
}
