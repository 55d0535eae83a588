//! The process-wide table of live local notifiers, for the two parties
//! that must reach every notifier without being handed one: the
//! `pthread_atfork` child handler and the hooks (`crate::hooks`).
//!
//! ## Why a fixed table of raw pointers
//!
//! Both callers run where nothing may allocate or lock: the fork child
//! handler runs in a single-threaded copy of a process whose other threads
//! may have held any lock at the `fork`; a hook runs inside the
//! application's `shmdt`. So the table is [`MAX_LIVE`] atomic pointers,
//! each to the `Shared` of a live notifier (kept alive by the notifier's
//! `Arc` until it leaves the table). A notifier that finds no free slot
//! still works, but its fork child is not made inert and the hooks do
//! not reach it.
//!
//! ## Leaving the table
//!
//! A hook may be walking the table while a notifier drops. `WALKERS`
//! counts walkers; [`remove_live`] clears the slot and then waits for the
//! count to reach 0. Both sides use `SeqCst` (a Dekker pattern: each
//! stores, then loads the other's variable), so either the walker's
//! increment is seen and waited for, or the walker loads the slot after
//! it was cleared.
//!
//! ## The fork child
//!
//! After `fork` the child has no monitor thread, and its VMAs lost their
//! uffd context (the uffd is opened without `EVENT_FORK`). Each notifier
//! becomes inert: [`Shared::after_fork_child`] closes the inherited
//! descriptors, advances the generation past anything a cache remembers
//! and flags everything invalid; every later call returns
//! [`crate::Error::Forked`].

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use super::shared::Shared;

/// Slots of the table: live local notifiers per process.
const MAX_LIVE: usize = 64;
static LIVE: [AtomicPtr<Shared>; MAX_LIVE] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_LIVE];
/// Hooks currently walking `LIVE`; a notifier leaving the table waits for 0.
static WALKERS: AtomicUsize = AtomicUsize::new(0);
static ATFORK: Once = Once::new();

impl Shared {
    /// In a fork child (single-threaded, async-signal-safe calls only):
    /// the monitor does not exist here, the child's VMAs lost their uffd
    /// context (no EVENT_FORK). Close the inherited descriptors, advance the
    /// generation past anything cached, and flag everything invalid.
    fn after_fork_child(&self) {
        self.forked.store(true, Ordering::Release);
        Self::take_fd(&self.uffd);
        Self::take_fd(&self.mon_uffd);
        Self::take_fd(&self.stop);
        self.overflow.store(true, Ordering::Relaxed);
        self.word.reset_after_fork();
        self.poke();
    }
}

extern "C" fn atfork_child() {
    WALKERS.store(0, Ordering::Relaxed); // no other thread survived fork
    for slot in &LIVE {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: pointers in LIVE are kept alive by their Notifier
            // until removed (remove_live), and the child is single-threaded.
            unsafe { &*p }.after_fork_child();
        }
    }
}

/// Enter `s` in the table (installing the fork handler on first use).
/// Returns its slot, or `None` when the table is full.
pub(super) fn add_live(s: &Arc<Shared>) -> Option<usize> {
    ATFORK.call_once(|| {
        // SAFETY: registering a plain extern "C" fn with no preconditions.
        unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    });
    let p = Arc::as_ptr(s).cast_mut();
    LIVE.iter().position(|slot| {
        slot.compare_exchange(std::ptr::null_mut(), p, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    })
}

/// Leave the table; on return no walker still sees the slot's notifier.
pub(super) fn remove_live(slot: usize) {
    LIVE[slot].store(std::ptr::null_mut(), Ordering::SeqCst);
    // Dekker with `for_each_live`: a walker either incremented WALKERS
    // before our load (we wait for it) or loads the slot after our store.
    while WALKERS.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// Call `f` on every live, non-forked local notifier. Lock-free,
/// allocation-free (the hooks use it).
pub(crate) fn for_each_live(mut f: impl FnMut(&Shared)) {
    WALKERS.fetch_add(1, Ordering::SeqCst);
    for slot in &LIVE {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: remove_live waits for WALKERS to drop to 0 before
            // the Notifier releases its Arc, so `p` is alive here.
            let s = unsafe { &*p };
            if !s.is_forked() {
                f(s);
            }
        }
    }
    WALKERS.fetch_sub(1, Ordering::SeqCst);
}
