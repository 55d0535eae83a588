//! Slots and the slab that holds them.
//!
//! Regions live in *slots*, allocated in chunks that are never freed while
//! the cache lives (only recycled), so a thread holding a stale slot index
//! can always read it safely. Each slot has a state word (`state.rs`:
//! incarnation, LIVE, reference count) and the region's fields. Those
//! fields are written only while the slot is not LIVE and has no
//! references, by the thread that reserved it, and published by the
//! Release store in [`StateWord::publish`]; readers load the state with
//! Acquire first, read the fields with Relaxed loads, and validate them
//! with the CAS of [`StateWord::try_acquire`], which fails if the slot was
//! recycled in between (its incarnation changed).
//!
//! The hit path runs through this module, so it must not panic (the C API
//! calls it outside `catch_unwind`): the lints below hold it to `get`
//! instead of indexing and to no `unwrap`/`expect`/`panic!`; the one
//! panicking accessor, [`Slab::slot`], is for slow paths and says so.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::state::StateWord;
use crate::{AccessFlags, Keys, LKey, RKey, Registrar};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32};
use std::sync::{Mutex, OnceLock};
use umn::AddrRange;

pub(super) const CHUNK_BITS: u32 = 8;
pub(super) const CHUNK: usize = 1 << CHUNK_BITS;
/// Slots are addressed by a u32; this many chunks bound the slab.
pub(super) const MAX_CHUNKS: usize = 1 << 14;
/// The slot index of an uncached registration.
pub(super) const NO_SLOT: u32 = u32::MAX;

/// The word of a region that should have one and has none (the source has
/// per-region words but gave none for this registration: not expected):
/// never 0, so every hit on the region takes the slow path, which checks
/// the process-wide generation.
pub(super) static NO_WORD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// `[0, 0)`, built at compile time.
#[allow(clippy::panic)] // const-evaluated: a failure is a build error
pub(super) const EMPTY: AddrRange = match AddrRange::new(0, 0) {
    Ok(r) => r,
    Err(_) => panic!("[0, 0) is a range"),
};

/// One region slot. Fields other than `state` are written only while the
/// slot is not LIVE and has no references (by the thread that owns it then)
/// and published by [`StateWord::publish`]; readers load `state` with
/// Acquire first and validate with a CAS on `state`.
#[repr(align(64))]
pub(super) struct Slot<R: Registrar> {
    pub(super) state: StateWord,
    pub(super) start: std::sync::atomic::AtomicU64,
    pub(super) end: std::sync::atomic::AtomicU64,
    /// The source's word for this region (the kernel device's
    /// per-registration word, `umn::RegionWord::as_ptr`), or null: 0 until
    /// an invalidation hits the registered range. Written with the other
    /// fields (while reserved, before publish); points into the monitor's
    /// mapping, which lives as long as the cache; [`NO_WORD`] when the
    /// source has words but gave none for this registration. See
    /// [`Slot::word_fresh`].
    pub(super) word: AtomicPtr<std::sync::atomic::AtomicU64>,
    pub(super) access: AtomicU32,
    pub(super) has_keys: AtomicU32,
    pub(super) lkey: AtomicU32,
    pub(super) rkey: AtomicU32,
    /// The registrar's word for the registration
    /// ([`Registrar::user_data`]), read by holders of a reference.
    pub(super) user_data: std::sync::atomic::AtomicUsize,
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
            word: AtomicPtr::new(std::ptr::null_mut()),
            access: AtomicU32::new(0),
            has_keys: AtomicU32::new(0),
            lkey: AtomicU32::new(0),
            rkey: AtomicU32::new(0),
            user_data: std::sync::atomic::AtomicUsize::new(0),
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

    /// The registrar's word for the registration (meaningful while the
    /// caller holds a reference).
    #[inline]
    pub(super) fn user_data(&self) -> usize {
        self.user_data.load(Relaxed)
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

    /// What the source's own word for this region says (one Acquire
    /// load): `false` once an invalidation has hit the registration (the
    /// event may not be drained yet), else `true` — also for a region
    /// without a word (null: the source has none, and the caller checked
    /// the process-wide generation already). Meaningful for the
    /// incarnation the caller validates with the state word's CAS or
    /// holds a reference on, like the other fields.
    #[inline(always)]
    pub(super) fn word_fresh(&self) -> bool {
        let w = self.word.load(Relaxed);
        if w.is_null() {
            return true;
        }
        // SAFETY: a non-null `word` is [`NO_WORD`] or came from
        // `umn::RegionWord::as_ptr` of the cache's own notifier
        // (`Cache::watch_word`), which the cache keeps as long as it lives,
        // and only the cache's methods reach this slot: the pointer is
        // aligned and mapped, and the device and we only access it
        // atomically. A word since reused by another registration is still
        // memory we may load; the state word's incarnation check rejects
        // this slot's stale fields.
        unsafe { &*w }.load(Acquire) == 0
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
        self.try_acquire_if(req, access, |_| true)
    }

    /// As [`Slot::try_acquire`], also requiring `fresh(self)` (the hit's
    /// invalidation check, `Cache::fresh`), evaluated between the state
    /// load and the CAS: the fields it reads (the region's word) belong to
    /// the incarnation the CAS then validates. Checked before the CAS
    /// rather than after, so that a stale region costs no reference to
    /// undo (the C fast path changes nothing when it gives up).
    #[inline(always)]
    pub(super) fn try_acquire_if(
        &self,
        req: &AddrRange,
        access: AccessFlags,
        fresh: impl FnOnce(&Self) -> bool,
    ) -> bool {
        let st = self.state.load(Acquire);
        // Relaxed field loads suffice: the Acquire load above saw the
        // Release store that published these fields for this incarnation;
        // if the slot was recycled since, the CAS fails because the
        // incarnation (and LIVE) in `state` changed.
        st.is_live() && self.covers(req, access) && fresh(self) && self.state.try_acquire(st)
    }

    /// Write a reserved slot's fields, then publish it LIVE with one
    /// reference (the caller's).
    pub(super) fn publish(
        &self,
        incarnation: u32,
        range: AddrRange,
        access: AccessFlags,
        keys: Option<Keys>,
        user_data: usize,
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
        self.user_data.store(user_data, Relaxed);
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
