//! Slots, the slab that holds them, and the slot state word.
//!
//! Regions live in *slots*, allocated in chunks that are never freed while
//! the cache lives (only recycled), so a thread holding a stale slot index
//! can always read it safely. Each slot's `state` is one 64-bit atomic, the
//! [`StateWord`]:
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
//! Every transition of the word is a method of [`StateWord`], and nothing
//! else touches the atomic: the loom models (`cache/loom_models.rs`) drive these
//! very methods. The other fields of a slot are written only while the
//! slot is not LIVE and has no references, by the thread that reserved it,
//! and published by the Release store in [`StateWord::publish`]; readers
//! load the state with Acquire first and validate with the CAS of
//! [`StateWord::try_acquire`].
//!
//! The hit path runs through this module, so it must not panic (the C API
//! calls it outside `catch_unwind`): the lints below hold it to `get`
//! instead of indexing and to no `unwrap`/`expect`/`panic!`.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::sync::{AtomicU64, Ordering};
use crate::{AccessFlags, Keys, LKey, RKey, Registrar};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Mutex, OnceLock};
use umn::AddrRange;

pub(super) const CHUNK_BITS: u32 = 8;
pub(super) const CHUNK: usize = 1 << CHUNK_BITS;
/// Slots are addressed by a u32; this many chunks bound the slab.
pub(super) const MAX_CHUNKS: usize = 1 << 14;
/// The slot index of an uncached registration.
pub(super) const NO_SLOT: u32 = u32::MAX;

/// `[0, 0)`, built at compile time.
#[allow(clippy::panic)] // const-evaluated: a failure is a build error
pub(super) const EMPTY: AddrRange = match AddrRange::new(0, 0) {
    Ok(r) => r,
    Err(_) => panic!("[0, 0) is a range"),
};

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

/// One region slot. Fields other than `state` are written only while the
/// slot is not LIVE and has no references (by the thread that owns it then)
/// and published by [`StateWord::publish`]; readers load `state` with
/// Acquire first and validate with a CAS on `state`.
#[repr(align(64))]
pub(super) struct Slot<R: Registrar> {
    pub(super) state: StateWord,
    pub(super) start: std::sync::atomic::AtomicU64,
    pub(super) end: std::sync::atomic::AtomicU64,
    pub(super) access: AtomicU32,
    pub(super) has_keys: AtomicU32,
    pub(super) lkey: AtomicU32,
    pub(super) rkey: AtomicU32,
    /// Logical time of the last release (LRU).
    pub(super) last_use: std::sync::atomic::AtomicU64,
    /// The umn cookie watching this slot's range (reserved or published);
    /// 0 when unwatched. `(incarnation << 32) | slot index`.
    pub(super) cookie: std::sync::atomic::AtomicU64,
    /// An invalidation hit the reservation before it was published.
    pub(super) doomed: AtomicBool,
    /// The registration; taken by whoever owns deregistration.
    pub(super) region: Mutex<Option<R::Region>>,
}

impl<R: Registrar> Slot<R> {
    fn new() -> Self {
        use std::sync::atomic::AtomicU64;
        Self {
            state: StateWord::new(),
            start: AtomicU64::new(0),
            end: AtomicU64::new(0),
            access: AtomicU32::new(0),
            has_keys: AtomicU32::new(0),
            lkey: AtomicU32::new(0),
            rkey: AtomicU32::new(0),
            last_use: AtomicU64::new(0),
            cookie: AtomicU64::new(0),
            doomed: AtomicBool::new(false),
            region: Mutex::new(None),
        }
    }

    /// The registered range (meaningful while the caller holds a
    /// reference or the index lock).
    #[inline]
    pub(super) fn range(&self) -> AddrRange {
        AddrRange::new(self.start.load(Relaxed), self.end.load(Relaxed)).unwrap_or(EMPTY)
    }

    pub(super) fn keys(&self) -> Option<Keys> {
        (self.has_keys.load(Relaxed) != 0).then(|| Keys {
            lkey: LKey(self.lkey.load(Relaxed)),
            rkey: RKey(self.rkey.load(Relaxed)),
        })
    }

    pub(super) fn access(&self) -> AccessFlags {
        AccessFlags::from_bits_retain(self.access.load(Relaxed))
    }

    /// The slot's fields cover `req` with the access wanted. Relaxed loads:
    /// the caller validates them against the state word (see
    /// [`Slot::try_acquire`]) or holds a reference.
    #[inline(always)]
    fn covers(&self, req: &AddrRange, access: AccessFlags) -> bool {
        self.start.load(Relaxed) <= req.start()
            && self.end.load(Relaxed) >= req.end()
            && self.access().satisfies(access)
    }

    /// `true` when LIVE, covering `req` with the access wanted. Only for a
    /// caller that already holds a reference (the slot cannot be recycled
    /// under it).
    #[inline(always)]
    pub(super) fn covers_live(&self, req: &AddrRange, access: AccessFlags) -> bool {
        self.state.load(Acquire).is_live() && self.covers(req, access)
    }

    /// Take a reference if the slot is LIVE, covers `req` and has the
    /// access wanted. One CAS; no lock.
    #[inline(always)]
    pub(super) fn try_acquire(&self, req: &AddrRange, access: AccessFlags) -> bool {
        let st = self.state.load(Acquire);
        // Relaxed field loads suffice: the Acquire load above saw the
        // Release store that published these fields for this incarnation;
        // if the slot was recycled since, the CAS fails because the
        // incarnation (and LIVE) in `state` changed.
        st.is_live() && self.covers(req, access) && self.state.try_acquire(st)
    }

    /// Write a reserved slot's fields, then publish it LIVE with one
    /// reference (the caller's).
    pub(super) fn publish(
        &self,
        incarnation: u32,
        range: AddrRange,
        access: AccessFlags,
        keys: Option<Keys>,
        stamp: u64,
    ) {
        self.start.store(range.start(), Relaxed);
        self.end.store(range.end(), Relaxed);
        self.access.store(access.bits(), Relaxed);
        self.has_keys.store(keys.is_some() as u32, Relaxed);
        let k = keys.unwrap_or(Keys {
            lkey: LKey(0),
            rkey: RKey(0),
        });
        self.lkey.store(k.lkey.0, Relaxed);
        self.rkey.store(k.rkey.0, Relaxed);
        self.last_use.store(stamp, Relaxed);
        self.state.publish(incarnation);
    }
}

/// One chunk of [`CHUNK`] slots, created on first use.
type Chunk<R> = OnceLock<Box<[Slot<R>]>>;

/// The slab: chunks of slots, appended, never freed while the cache lives.
pub(super) struct Slab<R: Registrar> {
    chunks: Box<[Chunk<R>]>,
    /// Free slot indices and the number of slots ever created.
    free: Mutex<(Vec<u32>, u32)>,
}

impl<R: Registrar> Slab<R> {
    pub(super) fn new() -> Self {
        Self {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            free: Mutex::new((Vec::new(), 0)),
        }
    }

    /// The slot `idx`, if it was ever created: two bounds-checked loads,
    /// never a panic (the hit path's way in).
    #[inline(always)]
    pub(super) fn get(&self, idx: u32) -> Option<&Slot<R>> {
        let chunk = self.chunks.get((idx >> CHUNK_BITS) as usize)?.get()?;
        chunk.get(idx as usize & (CHUNK - 1))
    }

    /// The slot `idx`, which this slab handed out (slow paths only).
    #[inline(always)]
    #[allow(clippy::expect_used)] // slow paths: an index we allocated
    pub(super) fn slot(&self, idx: u32) -> &Slot<R> {
        self.get(idx).expect("slot index handed out by this slab")
    }

    /// A free slot, or `None` when the slab is full.
    pub(super) fn alloc(&self) -> Option<u32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = free.0.pop() {
            return Some(i);
        }
        let i = free.1;
        if i as usize >= MAX_CHUNKS * CHUNK || i == NO_SLOT {
            return None;
        }
        self.chunks
            .get((i >> CHUNK_BITS) as usize)?
            .get_or_init(|| (0..CHUNK).map(|_| Slot::new()).collect());
        free.1 += 1;
        Some(i)
    }

    /// Recycle slot `idx` (its region is gone).
    pub(super) fn release(&self, idx: u32) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push(idx);
    }
}
