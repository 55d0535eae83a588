//! The process-wide table of live local notifiers, for the three parties
//! that must reach every notifier without being handed one: the
//! `pthread_atfork` child handler, the hooks (`crate::hooks`), and the
//! userfaultfd hub's readers (the monitor and helping lookups, which fan
//! each uffd batch out to every uffd-fed notifier: `hub.rs`).
//!
//! ## Why a fixed table of raw pointers
//!
//! Both callers run where nothing may allocate or lock: the fork child
//! handler runs in a single-threaded copy of a process whose other threads
//! may have held any lock at the `fork`; a hook runs inside the
//! application's `shmdt`. So the table is [`MAX_LIVE`] atomic pointers,
//! each to the `Shared` of a live notifier (kept alive by the notifier's
//! `Arc` until it leaves the table). A notifier that finds no free slot
//! still works if it is `External`, but its fork child is not made inert
//! and the hooks do not reach it; a `Uffd` notifier would get no uffd
//! event at all, so its `open` fails instead.
//!
//! ## Entering and leaving the table
//!
//! A hook or a uffd reader may be walking the table while a notifier
//! opens or drops. `WALKERS` counts walkers; a walker increments it before
//! it loads any slot and decrements it when it is done with what it
//! loaded (a uffd reader: after the `end` of its whole batch).
//! [`remove_live`] clears the slot and then waits for the count to reach
//! 0; [`add_live`] fills the slot and waits the same way. Both sides use
//! `SeqCst` (a Dekker pattern: each stores, then loads the other's
//! variable), so either the walker's increment is seen and waited for, or
//! the walker loads the slot after the store. Hence:
//! - leaving: no walker still holds the notifier when `remove_live`
//!   returns (its `Shared` may be freed; no `begin` is left without `end`);
//! - entering: when `add_live` returns, every uffd batch that captured the
//!   table without the new notifier has ended, so every event read from
//!   the uffd after that — every event for memory it registers later —
//!   reaches it. Without the wait a batch captured before the `open` could
//!   go on to read the munmap of memory the new notifier registered
//!   meanwhile, and the new notifier's generation would never move.
//!
//! A steady stream of overlapping walkers would make the wait long; each
//! walk is short and never blocks (a non-blocking `read` of at most 32
//! messages, ring pushes, eventfd writes), so the count does fall to 0.
//!
//! ## The fork child
//!
//! After `fork` the child has no monitor thread, and its VMAs lost their
//! uffd context (the uffd is opened without `EVENT_FORK`). Each notifier
//! becomes inert: `hub::after_fork_child` closes the hub's inherited
//! descriptors, and [`Shared::after_fork_child`] advances the generation
//! past anything a cache remembers and flags everything invalid; every
//! later call returns [`crate::Error::Forked`].

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use super::hub;
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
    /// context (no EVENT_FORK; the hub's descriptors are closed apart).
    /// Advance the generation past anything cached, and flag everything
    /// invalid.
    fn after_fork_child(&self) {
        self.forked.store(true, Ordering::Release);
        self.overflow.store(true, Ordering::Relaxed);
        self.word.reset_after_fork();
        self.poke();
    }
}

extern "C" fn atfork_child() {
    WALKERS.store(0, Ordering::Relaxed); // no other thread survived fork
    hub::after_fork_child();
    for slot in &LIVE {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: pointers in LIVE are kept alive by their Notifier
            // until removed (remove_live), and the child is single-threaded.
            unsafe { &*p }.after_fork_child();
        }
    }
}

/// Enter `s` in the table (installing the fork handler on first use), and
/// wait until no walker that missed it is still walking (module docs).
/// Returns its slot, or `None` when the table is full.
pub(super) fn add_live(s: &Arc<Shared>) -> Option<usize> {
    ATFORK.call_once(|| {
        // SAFETY: registering a plain extern "C" fn with no preconditions.
        unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    });
    let p = Arc::as_ptr(s).cast_mut();
    let slot = LIVE.iter().position(|slot| {
        slot.compare_exchange(std::ptr::null_mut(), p, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    });
    // Dekker with `Walk::new`: a walker either incremented WALKERS before
    // our load (we wait for it) or loads the slot after our store.
    wait_for_walkers();
    slot
}

/// Leave the table; on return no walker still sees the slot's notifier.
pub(super) fn remove_live(slot: usize) {
    LIVE[slot].store(std::ptr::null_mut(), Ordering::SeqCst);
    // Dekker with `Walk::new`: a walker either incremented WALKERS
    // before our load (we wait for it) or loads the slot after our store.
    wait_for_walkers();
}

fn wait_for_walkers() {
    while WALKERS.load(Ordering::SeqCst) != 0 {
        std::thread::yield_now();
    }
}

/// One walk of the table: counted in WALKERS from creation to drop (also
/// if the walker's closure panicked, so `remove_live` cannot hang).
struct Walk;

impl Walk {
    fn new() -> Self {
        WALKERS.fetch_add(1, Ordering::SeqCst);
        Walk
    }

    /// The live, non-forked notifiers, in slot order.
    fn live(&self) -> impl Iterator<Item = &Shared> {
        LIVE.iter().filter_map(|slot| {
            let p = slot.load(Ordering::SeqCst);
            // SAFETY: remove_live waits for WALKERS to drop to 0 before
            // the Notifier releases its Arc, and this walk holds WALKERS
            // for as long as the borrow of `self` lasts.
            let s = unsafe { p.as_ref() }?;
            (!s.is_forked()).then_some(s)
        })
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        WALKERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Call `f` on every live, non-forked local notifier. Lock-free,
/// allocation-free (the hooks use it).
pub(crate) fn for_each_live(f: impl FnMut(&Shared)) {
    let walk = Walk::new();
    walk.live().for_each(f);
}

/// The uffd-fed notifiers captured by one walk (at most [`MAX_LIVE`], on
/// the stack: the monitor allocates nothing).
pub(crate) struct UffdFed<'a> {
    set: [Option<&'a Shared>; MAX_LIVE],
}

impl UffdFed<'_> {
    /// The captured notifiers.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Shared> {
        self.set.iter().map_while(|s| *s)
    }
}

/// Call `f` with the live uffd-fed notifiers, captured once: the same set
/// for the whole call, none of them removed from the table before `f`
/// returns, and every notifier entering the table meanwhile waits for `f`
/// to return (module docs). Lock-free, allocation-free (the uffd readers
/// use it for one batch).
pub(crate) fn with_uffd_fed<R>(f: impl FnOnce(&UffdFed<'_>) -> R) -> R {
    let walk = Walk::new();
    let mut fed = UffdFed {
        set: [None; MAX_LIVE],
    };
    for (dst, s) in fed
        .set
        .iter_mut()
        .zip(walk.live().filter(|s| s.uffd_fed))
    {
        *dst = Some(s);
    }
    f(&fed)
}

/// Call `f` with the live `Patch` notifiers, captured once like
/// [`with_uffd_fed`] (the same set for the whole call, none removed before
/// `f` returns): the libc patch's hooks keep the captured notifiers'
/// generations busy across the system call they perform. Lock-free,
/// allocation-free.
pub(crate) fn with_patch_fed<R>(f: impl FnOnce(&UffdFed<'_>) -> R) -> R {
    let walk = Walk::new();
    let mut all = UffdFed {
        set: [None; MAX_LIVE],
    };
    for (dst, s) in all.set.iter_mut().zip(walk.live().filter(|s| s.patch_fed)) {
        *dst = Some(s);
    }
    f(&all)
}
