//! The slot state word: one atomic per slot, every transition a method.
//!
//! ```text
//!  63            33  32   31             0
//! [ incarnation:31 |LIVE| references:32   ]
//! ```
//!
//! - LIVE set: the region is in the index; new hits may take it.
//! - Clearing LIVE (invalidate, evict, merge) is one atomic step. Whoever
//!   sees the transition to `!LIVE && refs == 0` first owns deregistration:
//!   the remover if refs were already 0, else the last releaser.
//! - Eviction only clears LIVE by CAS from a state with refs == 0, so it
//!   never races a concurrent hit into deregistering in-use memory.
//! - A recycled slot gets the next incarnation, so a CAS prepared against
//!   the old region fails.
//!
//! Nothing but the methods of [`StateWord`] touches the atomic, and it
//! comes from `crate::sync`: the loom models (`cache/loom_models.rs`)
//! drive these very methods. The hit and release paths run through here,
//! so the module denies whatever could panic.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::sync::{AtomicU64, Ordering};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// A value of a slot's state word (see the module docs for the layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct State(u64);

impl State {
    const REFS_MASK: u64 = 0xffff_ffff;
    const LIVE: u64 = 1 << 32;
    const INC_SHIFT: u32 = 33;
    const INC_MASK: u64 = (1 << (64 - Self::INC_SHIFT)) - 1;

    /// References held (handles, tokens and deferred entries).
    #[inline(always)]
    pub(super) const fn refs(self) -> u64 {
        self.0 & Self::REFS_MASK
    }

    /// In the index: hits may take it.
    #[inline(always)]
    pub(super) const fn is_live(self) -> bool {
        self.0 & Self::LIVE != 0
    }

    /// The slot's incarnation: bumped each time the slot is reused.
    #[inline(always)]
    pub(super) const fn incarnation(self) -> u32 {
        ((self.0 >> Self::INC_SHIFT) & Self::INC_MASK) as u32
    }

    /// The incarnation the slot's next region gets.
    pub(super) const fn next_incarnation(self) -> u32 {
        ((self.0 >> Self::INC_SHIFT).wrapping_add(1) & Self::INC_MASK) as u32
    }

    /// `true` when the slot holds a published region of `incarnation` with
    /// at least one reference: what a token's release requires.
    #[inline(always)]
    pub(super) const fn held_in(self, incarnation: u32) -> bool {
        self.incarnation() == incarnation && self.refs() != 0
    }
}

/// A slot's state word: every transition of the protocol is one method.
#[derive(Debug)]
pub(super) struct StateWord(AtomicU64);

/// What [`StateWord::kill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Killed {
    /// LIVE was already clear, or (for eviction) the region is in use:
    /// nothing changed.
    No,
    /// LIVE cleared with no references held: the caller owns
    /// deregistration.
    Idle,
    /// LIVE cleared with references held: the last release deregisters.
    InUse,
}

impl StateWord {
    pub(super) fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    #[inline(always)]
    pub(super) fn load(&self, order: Ordering) -> State {
        State(self.0.load(order))
    }

    /// Take a reference on the region `seen` describes, if the word still
    /// holds exactly `seen` (same incarnation, LIVE, same count): one CAS.
    /// Acquire on success pairs with the Release of [`StateWord::publish`]
    /// (a hitter that saw `seen` with Relaxed loads of the slot's fields
    /// learns they belonged to this incarnation), and a recycled slot's new
    /// incarnation makes the CAS fail.
    #[inline(always)]
    pub(super) fn try_acquire(&self, seen: State) -> bool {
        if !seen.is_live() || seen.refs() == State::REFS_MASK {
            return false;
        }
        self.0
            .compare_exchange(seen.0, seen.0.wrapping_add(1), Acquire, Relaxed)
            .is_ok()
    }

    /// Drop one reference. Returns `true` when the caller now owns
    /// deregistration: it dropped the last reference of a region whose
    /// LIVE was cleared. Release orders our uses of the registration before
    /// the deregistration by whoever sees the count reach zero; Acquire
    /// orders the other holders' uses before ours, when we are that one.
    #[inline(always)]
    pub(super) fn release(&self) -> bool {
        let prev = State(self.0.fetch_sub(1, AcqRel));
        debug_assert!(prev.refs() > 0, "release of a slot with no references");
        prev.refs() == 1 && !prev.is_live()
    }

    /// Clear LIVE. With `only_idle` (eviction) only by a CAS from a state
    /// with no references, so a concurrent hit either lands first (and
    /// the eviction gives up) or fails its CAS.
    pub(super) fn kill(&self, only_idle: bool) -> Killed {
        // (`mut` unused in the deliberately broken loom build.)
        #[cfg_attr(regcache_loom_break = "state", allow(unused_mut))]
        let mut st = self.load(Acquire);
        loop {
            if !st.is_live() || (only_idle && st.refs() != 0) {
                return Killed::No;
            }
            #[cfg(regcache_loom_break = "state")]
            {
                // Deliberately broken for the loom model's must-fail run:
                // check, then store, instead of one CAS. A hit between the
                // two loses its reference and the region is deregistered
                // under it.
                self.0.store(st.0 & !State::LIVE, Release);
                break;
            }
            #[cfg(not(regcache_loom_break = "state"))]
            match self
                .0
                .compare_exchange(st.0, st.0 & !State::LIVE, AcqRel, Acquire)
            {
                Ok(_) => break,
                Err(now) => st = State(now),
            }
        }
        if st.refs() == 0 {
            Killed::Idle
        } else {
            Killed::InUse
        }
    }

    /// Clear LIVE unconditionally (the cache is being dropped).
    pub(super) fn kill_for_drop(&self) {
        self.0.fetch_and(!State::LIVE, AcqRel);
    }

    /// Publish a region of `incarnation` with one reference (the
    /// publisher's). Release: the slot's fields, written before, are
    /// visible to a hitter whose Acquire load sees this value.
    pub(super) fn publish(&self, incarnation: u32) {
        let v = (u64::from(incarnation) << State::INC_SHIFT) | State::LIVE | 1;
        self.0.store(v, Release);
    }
}
