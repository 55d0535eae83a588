//! The handle table: what a C `regcache_handle *` is.
//!
//! A C handle must survive being released twice, used after release, or
//! outliving its cache, and answer with `REGCACHE_ERR_STALE_HANDLE` rather
//! than touch freed memory. A `malloc`'d object per `get` would also cost
//! more than the whole Rust hit path. So a handle is not a pointer at all:
//! its value encodes `(generation << 32) | (index + 1)` into a process-wide
//! table of entries that are never freed (chunks are allocated on demand
//! and stay reachable from a static, so leak checkers see them as
//! reachable). An entry's generation is odd while a handle is out and even
//! when free; every release and every destroy of its cache bumps it, so an
//! old handle value never matches again (until 2³¹ reuses of the same
//! entry).
//!
//! Free entries are kept in a small per-thread stack, refilled from and
//! spilled to a global list, so a get+release pair on one thread touches
//! no lock and no atomic read-modify-write.
//!
//! Ownership protocol: the thread holding a live handle value owns the
//! entry's `raw` field. It fills `raw` and `cache`, then publishes with a
//! Release store of the odd generation; a releaser loads the generation
//! with Acquire, checks it, takes `raw`, then stores the even generation.
//! Two threads releasing the *same* handle at the same time is a caller
//! race (like `free` twice concurrently), documented in the header; the
//! sequential double release is what is detected.

use crate::cache::CacheObj;
use regcache::{AnyRegistrar, RawHandle};
use std::cell::{RefCell, UnsafeCell};
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicPtr, AtomicU32};
use std::sync::{Mutex, OnceLock};

const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 4096;
const LOCAL_MAX: usize = 64;
const LOCAL_BATCH: usize = 32;

pub(crate) type Raw = RawHandle<AnyRegistrar>;

pub(crate) struct Entry {
    generation: AtomicU32,
    cache: AtomicPtr<CacheObj>,
    raw: UnsafeCell<MaybeUninit<Raw>>,
}

// SAFETY: `raw` is accessed only by the thread that holds the entry's live
// handle value (see the module docs: published by a Release store of the
// generation, taken after an Acquire load); the other fields are atomics.
// `Raw` is Send (the registrar's regions are Send + Sync).
unsafe impl Sync for Entry {}

impl Entry {
    fn new() -> Self {
        Self {
            generation: AtomicU32::new(0),
            cache: AtomicPtr::new(std::ptr::null_mut()),
            raw: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

static CHUNKS: [OnceLock<Box<[Entry]>>; MAX_CHUNKS] = [const { OnceLock::new() }; MAX_CHUNKS];

/// Free entry indices, and the number of entries ever created.
static GLOBAL_FREE: Mutex<(Vec<u32>, u32)> = Mutex::new((Vec::new(), 0));

struct LocalFree(Vec<u32>);

impl Drop for LocalFree {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            global().0.append(&mut self.0);
        }
    }
}

thread_local! {
    static LOCAL: RefCell<LocalFree> = const { RefCell::new(LocalFree(Vec::new())) };
}

fn global() -> std::sync::MutexGuard<'static, (Vec<u32>, u32)> {
    GLOBAL_FREE.lock().unwrap_or_else(|e| e.into_inner())
}

#[inline(always)]
fn entry(idx: u32) -> Option<&'static Entry> {
    CHUNKS
        .get((idx >> CHUNK_BITS) as usize)?
        .get()?
        .get(idx as usize & (CHUNK - 1))
}

/// Refill `local` from the global list, creating entries when it is empty.
#[cold]
fn refill(local: &mut Vec<u32>) -> Option<()> {
    let mut g = global();
    let take = g.0.len().min(LOCAL_BATCH);
    let at = g.0.len() - take;
    local.extend(g.0.drain(at..));
    if local.is_empty() {
        let i = g.1;
        if i as usize >= MAX_CHUNKS * CHUNK {
            return None;
        }
        CHUNKS[(i >> CHUNK_BITS) as usize]
            .get_or_init(|| (0..CHUNK).map(|_| Entry::new()).collect());
        // A whole chunk becomes available at once.
        let end = (i | (CHUNK as u32 - 1)) + 1;
        local.extend((i..end).rev());
        g.1 = end;
    }
    Some(())
}

#[inline(always)]
fn alloc_index() -> Option<u32> {
    let fast = LOCAL.try_with(|l| {
        let mut l = l.try_borrow_mut().ok()?;
        if let Some(i) = l.0.pop() {
            return Some(i);
        }
        refill(&mut l.0)?;
        l.0.pop()
    });
    match fast {
        Ok(Some(i)) => Some(i),
        Ok(None) => None,
        // Thread-local storage torn down (a call from a thread destructor):
        // use the global list.
        Err(_) => {
            let mut v = Vec::new();
            refill(&mut v)?;
            let i = v.pop();
            global().0.extend(v);
            i
        }
    }
}

#[inline(always)]
fn free_index(idx: u32) {
    let spilled = LOCAL.try_with(|l| {
        let Ok(mut l) = l.try_borrow_mut() else {
            return false;
        };
        l.0.push(idx);
        if l.0.len() > LOCAL_MAX {
            let at = l.0.len() - LOCAL_BATCH;
            let spill: Vec<u32> = l.0.drain(at..).collect();
            global().0.extend(spill);
        }
        true
    });
    if spilled != Ok(true) {
        global().0.push(idx);
    }
}

/// Encode a live entry as the C handle value.
#[inline(always)]
fn encode(idx: u32, generation: u32) -> usize {
    ((generation as usize) << 32) | (idx as usize + 1)
}

#[inline(always)]
fn decode(h: usize) -> Option<(u32, u32)> {
    let idx = (h as u64 & 0xffff_ffff).checked_sub(1)? as u32;
    Some((idx, (h as u64 >> 32) as u32))
}

/// A free entry, reserved for one `get`: fill it with [`Slot::publish`] or
/// give it back with [`Slot::abandon`].
pub(crate) struct Slot {
    idx: u32,
    entry: &'static Entry,
}

/// Reserve a free entry (before the cache lookup, so that the raw handle
/// can be written straight into it). `None` when 4 Mi handles are out.
#[inline(always)]
pub(crate) fn reserve() -> Option<Slot> {
    let idx = alloc_index()?;
    Some(Slot {
        idx,
        entry: entry(idx)?,
    })
}

impl Slot {
    /// Store `raw` and make the entry live; returns the handle value
    /// (never 0).
    #[inline(always)]
    pub(crate) fn publish(self, cache: *const CacheObj, raw: Raw) -> usize {
        let e = self.entry;
        // Odd: live. Only a freed entry is in a free list, so it is even now.
        let generation = e.generation.load(Relaxed).wrapping_add(1) | 1;
        // SAFETY: the entry is free (its index came from a free list), so no
        // live handle value names it and nobody else touches `raw`.
        unsafe { (*e.raw.get()).write(raw) };
        e.cache.store(cache.cast_mut(), Relaxed);
        // Release: publishes `raw` and `cache` to whoever acquires the
        // generation (a releaser on another thread, or a cache destroy).
        e.generation.store(generation, Release);
        encode(self.idx, generation)
    }

    /// The get failed: return the entry to the free list.
    #[cold]
    pub(crate) fn abandon(self) {
        free_index(self.idx);
    }
}

/// The live entry named by handle value `h`, or `None` when stale.
#[inline(always)]
pub(crate) fn lookup(h: usize) -> Option<&'static Entry> {
    let (idx, generation) = decode(h)?;
    let e = entry(idx)?;
    (generation & 1 == 1 && e.generation.load(Acquire) == generation).then_some(e)
}

impl Entry {
    /// The cache this live entry belongs to.
    #[inline(always)]
    pub(crate) fn cache(&self) -> *const CacheObj {
        self.cache.load(Relaxed)
    }

    /// The live entry's raw handle.
    ///
    /// # Safety
    /// The caller holds the live handle value and does not release it
    /// concurrently (the header's thread-safety rule).
    #[inline(always)]
    pub(crate) unsafe fn raw(&self) -> &Raw {
        // SAFETY: live entries hold an initialised `raw` (written before
        // the generation was published), and it is not taken while the
        // caller holds the handle (contract).
        unsafe { (*self.raw.get()).assume_init_ref() }
    }

    /// Take the raw handle out and free the entry.
    ///
    /// # Safety
    /// As [`Entry::raw`]; afterwards the handle value is stale.
    #[inline(always)]
    pub(crate) unsafe fn take(&'static self, idx_hint: usize) -> Raw {
        // SAFETY: as `raw`; the generation bump below makes every copy of
        // the handle value stale, so `raw` is read out exactly once.
        let raw = unsafe { (*self.raw.get()).assume_init_read() };
        let g = self.generation.load(Relaxed);
        self.generation.store(g.wrapping_add(1) & !1, Release);
        if let Some((idx, _)) = decode(idx_hint) {
            free_index(idx);
        }
        raw
    }
}

/// Take every live handle of `cache` out of the table (its cache is being
/// destroyed). The caller guarantees no other thread uses `cache` now.
pub(crate) fn drain_cache(cache: *const CacheObj) -> Vec<Raw> {
    let created = global().1;
    let mut out = Vec::new();
    for idx in 0..created {
        let Some(e) = entry(idx) else { continue };
        let g = e.generation.load(Acquire);
        if g & 1 == 1 && std::ptr::eq(e.cache.load(Relaxed), cache) {
            // SAFETY: the entry is live and belongs to the cache being
            // destroyed; by the destroy contract no thread uses that cache's
            // handles concurrently, so we are the only reader of `raw`.
            out.push(unsafe { e.take(encode(idx, g)) });
        }
    }
    out
}
