//! The generation protocol of a handle-table entry, on its own.
//!
//! A C `regcache_handle *` is `(generation << 32) | (index + 1)` into the
//! handle table (`handles.rs`). What makes a stale value harmless is the
//! entry's 32-bit generation, and this module is all of its protocol, in
//! a type small enough for loom to explore ([`HandleCell`]: the
//! generation and the value the live handle stands for). The table is one
//! flat 128 MiB mapping of these; loom cannot model that, but the table
//! adds nothing to the protocol: it only finds the cell.
//!
//! - **Odd while out, even when free.** [`HandleCell::publish`] takes the
//!   free (even) generation a free list recorded and stores `free + 1`
//!   (odd); [`HandleCell::take`] and [`HandleCell::retire`] store the next
//!   even value. A handle value carries the odd generation it was given.
//! - **Release publish, Acquire check.** The owner writes the value, then
//!   stores the odd generation with Release; [`HandleCell::check`] loads
//!   it with Acquire and compares. So a thread whose check succeeds sees
//!   the value written before the publish, even when the handle value
//!   itself reached it with no synchronisation of its own (a C program
//!   passing it through a relaxed atomic): the generation is the only
//!   synchronisation the value needs.
//! - **Stale values never match again.** Every retire makes the
//!   generation even and every publish makes it odd and larger (mod 2³²),
//!   so a released handle's value stops matching at its release and does
//!   not match the entry's next lives, until 2³¹ reuses of one entry
//!   wrap the counter (a wart accepted: a handle held across two billion
//!   reuses of its entry).
//! - **Sequential double release is detected**: the first release
//!   retires the generation, so the second's check fails
//!   (`REGCACHE_ERR_STALE_HANDLE`). Two releases of one handle *at the
//!   same time* are a caller race (like two concurrent `free`s), not
//!   detected: both checks may pass before either retires.
//!
//! The value is owned by the thread holding the live handle value: it is
//! written only while the entry is free (no live value names it) and read
//! or taken only by a holder whose check passed.
//!
//! Modelled with loom: `RUSTFLAGS="--cfg loom" cargo test -p regcache-ffi
//! --lib --release loom`. With `--cfg regcache_loom_break="handles"` the
//! publish is Relaxed instead of Release, and the cross-thread model must
//! fail (`cargo xtask test` runs both).

use crate::sync::Ordering::{Acquire, Relaxed, Release};
use crate::sync::{AtomicU32, UnsafeCell};
use std::mem::MaybeUninit;

/// The ordering of the publishing store: Release, or Relaxed in the
/// deliberately broken build that shows the loom model can fail.
#[cfg(not(regcache_loom_break = "handles"))]
const PUBLISH: crate::sync::Ordering = Release;
#[cfg(regcache_loom_break = "handles")]
const PUBLISH: crate::sync::Ordering = Relaxed;

/// A generation and the value a live handle stands for (see the module
/// docs). All-zero bytes are a free cell of generation 0 (the table's
/// fresh pages).
#[derive(Debug)]
pub(crate) struct HandleCell<T> {
    generation: AtomicU32,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: `value` is accessed only by the thread holding the cell's live
// handle value, after a successful check (Acquire, pairing with the
// publish's Release), or by the owner of the free cell before it
// publishes; `T: Send` moves between those threads.
unsafe impl<T: Send> Sync for HandleCell<T> {}

impl<T> HandleCell<T> {
    /// A free cell of generation 0.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            generation: AtomicU32::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// A free cell of generation 0.
    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            generation: AtomicU32::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The generation of a free cell (Relaxed: only the free lists'
    /// owner reads it, and a free cell's generation does not change).
    #[inline(always)]
    pub(crate) fn free_generation(&self) -> u32 {
        self.generation.load(Relaxed)
    }

    /// Store `v` and make the cell live; returns the odd generation the
    /// handle value carries.
    ///
    /// # Safety
    /// The cell is free with generation `free` (it came from a free list),
    /// so no live handle value names it and no other thread touches
    /// `value`.
    #[inline(always)]
    pub(crate) unsafe fn publish(&self, free: u32, v: T) -> u32 {
        // Odd: live. A free cell is even, so this is `free + 1`.
        let generation = free.wrapping_add(1) | 1;
        // SAFETY: free cell, ours alone (contract).
        self.value.with_mut(|p| unsafe { (*p).write(v) });
        // Release: publishes `value` (and whatever the caller stored
        // before) to whoever acquires the generation.
        self.generation.store(generation, PUBLISH);
        generation
    }

    /// Whether `generation` (from a handle value) names this live cell.
    /// Acquire: pairs with the publish, so the value is visible after.
    #[inline(always)]
    pub(crate) fn check(&self, generation: u32) -> bool {
        generation & 1 == 1 && self.generation.load(Acquire) == generation
    }

    /// The live generation, if the cell is live (for a scan of the table:
    /// Acquire, as [`HandleCell::check`]).
    #[inline(always)]
    pub(crate) fn live_generation(&self) -> Option<u32> {
        let g = self.generation.load(Acquire);
        (g & 1 == 1).then_some(g)
    }

    /// The live value.
    ///
    /// # Safety
    /// The caller holds the live handle value (its check passed) and does
    /// not release it while the reference is used.
    #[inline(always)]
    pub(crate) unsafe fn get(&self) -> &T {
        // SAFETY: live cells hold an initialised value, written before
        // the publish the caller's check acquired; not taken while the
        // caller holds the handle (contract).
        self.value.with(|p| unsafe { (*p).assume_init_ref() })
    }

    /// Make the cell free again without reading the value (for a `Copy`
    /// value already read); returns the new, even, generation. Every
    /// copy of the handle value is stale afterwards.
    ///
    /// # Safety
    /// As [`HandleCell::get`]; the value needs no drop.
    #[inline(always)]
    pub(crate) unsafe fn retire(&self) -> u32 {
        let g = self.generation.load(Relaxed).wrapping_add(1) & !1;
        // Release: a later owner of the cell (through the free lists,
        // which synchronise on their own) sees this release's reads done.
        self.generation.store(g, Release);
        g
    }

    /// Take the value out and make the cell free; returns it and the new
    /// generation.
    ///
    /// # Safety
    /// As [`HandleCell::get`]; afterwards the handle value is stale, so
    /// the value is read out exactly once.
    #[inline(always)]
    pub(crate) unsafe fn take(&self) -> (T, u32) {
        // SAFETY: live and ours (contract); the retire below makes every
        // copy of the handle value stale, so this is the only read.
        let v = self.value.with(|p| unsafe { (*p).assume_init_read() });
        // SAFETY: the value was just moved out.
        let g = unsafe { self.retire() };
        (v, g)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The generation protocol under loom: the real `HandleCell`, with the
    //! handle value passed between threads through a *relaxed* atomic, so
    //! that the cell's own Release/Acquire is all that orders the value.
    use super::HandleCell;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::thread;

    /// Loom with a preemption bound, as the transport's models
    /// (`LOOM_MAX_PREEMPTIONS` overrides it).
    fn builder() -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(3);
        }
        b
    }

    /// One thread gets a handle (publishes a value) and passes the handle
    /// value on with a relaxed store; another releases it.
    #[test]
    fn loom_publish_then_release_on_another_thread() {
        builder().check(|| {
            let cell = Arc::new(HandleCell::<[u64; 2]>::new());
            let handle = Arc::new(AtomicU64::new(0));
            let getter = {
                let (cell, handle) = (cell.clone(), handle.clone());
                thread::spawn(move || {
                    // SAFETY: the cell is free (generation 0), ours alone.
                    let g = unsafe { cell.publish(0, [7, 9]) };
                    handle.store(u64::from(g), Ordering::Relaxed);
                })
            };
            let g = handle.load(Ordering::Relaxed) as u32;
            // The handle value came with no synchronisation of its own, so
            // the check may still see the free generation (then a release
            // answers STALE_HANDLE: nothing is read). When it passes, the
            // value must be there whole: the cell's Release/Acquire alone
            // orders it (else loom reports a causality violation).
            if g != 0 && cell.check(g) {
                // SAFETY: the check passed; this thread is the only
                // releaser.
                let (v, free) = unsafe { cell.take() };
                assert_eq!(v, [7, 9]);
                assert_eq!(free & 1, 0);
                assert!(!cell.check(g), "a released handle still checks");
            }
            getter.join().unwrap();
        });
    }

    /// Release, then release again: the second check fails. Reuse: the
    /// stale value does not name the entry's next life, while a thread
    /// racing with the reuse never sees the stale value match.
    #[test]
    fn loom_stale_values_never_match_again() {
        builder().check(|| {
            let cell = Arc::new(HandleCell::<u64>::new());
            // SAFETY: free cell of generation 0, ours alone.
            let g1 = unsafe { cell.publish(0, 1) };
            assert!(cell.check(g1));
            // SAFETY: g1 checked; released once here.
            let (v, free) = unsafe { cell.take() };
            assert_eq!(v, 1);
            assert!(!cell.check(g1), "double release not detected");
            let stale = {
                let cell = cell.clone();
                thread::spawn(move || assert!(!cell.check(g1), "stale value matched"))
            };
            // SAFETY: free cell of generation `free`, ours alone.
            let g2 = unsafe { cell.publish(free, 2) };
            assert_ne!(g2, g1);
            assert!(cell.check(g2));
            assert!(!cell.check(g1));
            // SAFETY: g2 checked.
            let _ = unsafe { cell.retire() };
            stale.join().unwrap();
        });
    }
}
