//! The handle table: what a C `regcache_handle *` is.
//!
//! A C handle must survive being released twice, used after release, or
//! outliving its cache, and answer with `REGCACHE_ERR_STALE_HANDLE` rather
//! than touch freed memory. A `malloc`'d object per `get` would also cost
//! more than the whole Rust hit path. So a handle is not a pointer at all:
//! its value encodes `(generation << 32) | (index + 1)` into a process-wide
//! table of entries that are never freed: one flat array in an anonymous
//! `MAP_NORESERVE` mapping of 128 MiB of address space (less under an
//! address-space limit), backed page by page as entries are first used
//! (not heap memory, so leak checkers do not see it). Flat, so that a
//! release goes from the handle value to its entry with no dependent
//! load: a release's loads form the critical path of a get+release loop,
//! and the chunked table this replaced (an array of
//! `OnceLock<Box<[Entry]>>`) made a C get+release ~7 ns slower
//! (docs/RESULTS.md, "C API on the hit path").
//!
//! An entry's generation is odd while a handle is out and even when free;
//! every release and every destroy of its cache bumps it, so an old handle
//! value never matches again (until 2³¹ reuses of the same entry). That
//! protocol is `generation.rs`'s [`HandleCell`], on its own so that loom
//! can model it (this table, one 128 MiB mapping, it cannot); an entry is
//! a `HandleCell<Held>` plus the cache the handle belongs to.
//!
//! An entry holds what the handle stands for: for a cached hit, the
//! cache's 8-byte [`Token`] (slot + incarnation; no copy of a
//! `RawHandle`), for a one-off registration a boxed `RawHandle`. The
//! token alone cannot tell a double release from a release by another
//! holder of the same region (see `Cache::release_token`); the entry's
//! generation can, so a second release is always `STALE_HANDLE`.
//!
//! Free entries are kept in a small stack per thread, refilled from and
//! spilled to a global list, so a get+release pair on one thread touches
//! no lock and no atomic read-modify-write. The stacks are indexed by
//! `regcache::this_thread()` (unique per thread, never reused; an
//! initial-exec TLS load), not a `thread_local!`, which in this `cdylib`
//! would cost a `__tls_get_addr` call per get and per release. Threads
//! past the first `STRIPES` use the global list; the stack of a thread
//! that exits stays with its stripe (at most `LOCAL_MAX` entries each).
//!
//! Ownership protocol: the thread holding a live handle value owns the
//! entry's held value. It fills the value and `cache`, then publishes with
//! a Release store of the odd generation; a releaser loads the generation
//! with Acquire, checks it, takes the value, then stores the even
//! generation (`HandleCell`'s docs have the detail). Two threads releasing
//! the *same* handle at the same time is a caller race (like `free` twice
//! concurrently), documented in the header; the sequential double release
//! is what is detected.
//!
//! `get` and `release` take their fast paths through this module outside
//! `catch_unwind`, so it denies the lints that flag the ways Rust code
//! panics (indexing, `unwrap`, `expect`, `panic!`): slices are read with
//! `get`, and a cell index that cannot be out of bounds is still checked
//! (the check costs what the indexing's bounds check did).

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::cache::Inner;
use crate::generation::HandleCell;
use regcache::{AnyRegistrar, RawHandle, STRIPES, ThisThread, Token, this_thread};
use std::cell::UnsafeCell;
use std::sync::Mutex;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicPtr, AtomicU32};

/// Entries made available at once when the free lists are empty.
const CHUNK: usize = 1 << 10;
/// At most this many handles out at once (4 Mi; the table reserves
/// `MAX_ENTRIES * 32` bytes = 128 MiB of address space, backed only as
/// used). Under an address-space limit (`RLIMIT_AS`, as batch systems set
/// with `ulimit -v`) that refuses it, the table takes a quarter, then a
/// sixteenth, … down to `MIN_ENTRIES`.
const MAX_ENTRIES: usize = 1 << 22;
const MIN_ENTRIES: usize = 1 << 12;
const LOCAL_MAX: usize = 64;
const LOCAL_BATCH: usize = 32;

pub(crate) type Raw = RawHandle<AnyRegistrar>;

/// What a live entry stands for.
pub(crate) enum Held {
    /// A cached region (the hit path).
    Token(Token),
    /// A one-off registration outside the cache.
    Raw(Box<Raw>),
}

pub(crate) struct Entry {
    /// The generation and what the live handle stands for.
    cell: HandleCell<Held>,
    /// The live cache the entry's registration belongs to (its `Inner`,
    /// not the `CacheObj`: a live entry's cache is never destroyed, since
    /// destroy drains its entries first, so no liveness check is needed).
    cache: AtomicPtr<Inner>,
}

impl Entry {
    const fn new() -> Self {
        Self {
            cell: HandleCell::new(),
            cache: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// The table: up to `MAX_ENTRIES` entries in one anonymous `MAP_NORESERVE`
/// mapping made on first use (virtual address space only: a page is
/// backed when an entry on it is first used, and all-zero bytes are a
/// free entry of generation 0). One flat array, so a handle value leads
/// to its entry with no dependent load (a release's critical path).
static TABLE: AtomicPtr<Entry> = AtomicPtr::new(std::ptr::null_mut());

const _: () = assert!(std::mem::size_of::<Entry>() == 32);

/// How many entries `TABLE` has room for (0 until it is mapped).
static CAPACITY: AtomicU32 = AtomicU32::new(0);

/// Entries handed out so far (`TABLE[..CREATED]` may be named by a
/// handle); Release-stored after `TABLE` is set.
static CREATED: AtomicU32 = AtomicU32::new(0);

/// Free entry indices, and the number of entries ever created.
static GLOBAL_FREE: Mutex<(Vec<u32>, u32)> = Mutex::new((Vec::new(), 0));

/// One thread's free stack (see the module docs).
#[repr(align(128))]
struct Local {
    /// The entry freed last, if not yet reused: a get after a release on
    /// the same thread takes it with one load (the stack below costs two
    /// dependent ones: its length, then the item).
    hot: UnsafeCell<Option<Free>>,
    len: UnsafeCell<usize>,
    items: UnsafeCell<[Free; LOCAL_MAX]>,
}

// SAFETY: `LOCALS[i]` is read and written only by the thread whose
// `this_thread().index()` is `i`; these are unique per thread and never
// reused, so no two threads ever touch the same `Local`.
unsafe impl Sync for Local {}

/// A placeholder for unused stack cells (never read: cells at and above
/// `len` are dead).
static NO_ENTRY: Entry = Entry::new();

static LOCALS: [Local; STRIPES] = [const {
    Local {
        hot: UnsafeCell::new(None),
        len: UnsafeCell::new(0),
        items: UnsafeCell::new(
            [Free {
                idx: 0,
                generation: 0,
                entry: &NO_ENTRY,
            }; LOCAL_MAX],
        ),
    }
}; STRIPES];

fn global() -> std::sync::MutexGuard<'static, (Vec<u32>, u32)> {
    GLOBAL_FREE.lock().unwrap_or_else(|e| e.into_inner())
}

#[inline(always)]
fn entry(idx: u32) -> Option<&'static Entry> {
    if idx >= CREATED.load(Acquire) {
        return None;
    }
    // SAFETY: CREATED > idx was stored (Release) after TABLE was set to a
    // mapping of CAPACITY entries, never unmapped; idx < CREATED <=
    // CAPACITY. Zeroed memory is a valid `Entry` (atomics and
    // `MaybeUninit`).
    Some(unsafe { &*TABLE.load(Relaxed).add(idx as usize) })
}

/// Map the table (once; under the `GLOBAL_FREE` lock): `MAX_ENTRIES`
/// entries, or fewer when the address space is limited. `false` when not
/// even `MIN_ENTRIES` could be mapped.
fn map_table() -> bool {
    if !TABLE.load(Relaxed).is_null() {
        return true;
    }
    let mut n = MAX_ENTRIES;
    while n >= MIN_ENTRIES {
        // SAFETY: a fresh private anonymous mapping; no existing memory
        // named.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                n * std::mem::size_of::<Entry>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            TABLE.store(p.cast(), Relaxed);
            CAPACITY.store(n as u32, Relaxed);
            return true;
        }
        n /= 4;
    }
    false
}

/// Take up to `want` free indices from the global list, creating a chunk
/// of entries when it is empty.
#[cold]
fn take_global(want: usize) -> Vec<u32> {
    let mut g = global();
    let take = g.0.len().min(want);
    let at = g.0.len() - take;
    let mut out: Vec<u32> = g.0.drain(at..).collect();
    if out.is_empty() {
        let i = g.1;
        if !map_table() || i >= CAPACITY.load(Relaxed) {
            return out;
        }
        // A batch of CHUNK entries becomes available at once.
        let end = (i | (CHUNK as u32 - 1)) + 1;
        out.extend((i..end).rev());
        g.1 = end;
        // Release: the mapping is visible before any index below `end`.
        CREATED.store(end, Release);
        // Keep what the caller did not ask for.
        let extra = out.len().saturating_sub(want);
        let rest: Vec<u32> = out.drain(..extra).collect();
        g.0.extend(rest);
    }
    out
}

/// A free entry: its index, its (even) generation and the entry itself,
/// kept together so that a get neither looks the entry up in `TABLE` nor
/// loads its generation: fewer dependent loads on the hit path. A free
/// entry's generation does not change (only a live entry's owner and
/// `drain_cache`, which skips free entries, change it).
#[derive(Clone, Copy)]
struct Free {
    idx: u32,
    generation: u32,
    entry: &'static Entry,
}

impl Free {
    /// Describe free entry `idx` (slow path: reads the table).
    fn of(idx: u32) -> Option<Self> {
        let entry = entry(idx)?;
        Some(Self {
            idx,
            generation: entry.cell.free_generation(),
            entry,
        })
    }
}

#[cold]
fn refill(l: &Local) -> Option<Free> {
    let mut v = take_global(LOCAL_BATCH);
    let i = v.pop()?;
    // SAFETY: `l` is the calling thread's own stack (see `Local`).
    let (len, items) = unsafe { (&mut *l.len.get(), &mut *l.items.get()) };
    for x in v {
        let Some(f) = Free::of(x) else { continue };
        // Always room: the stack was empty and a batch fits in it.
        match items.get_mut(*len) {
            Some(cell) => {
                *cell = f;
                *len += 1;
            }
            None => global().0.push(x),
        }
    }
    Free::of(i)
}

#[cold]
fn spill(l: &Local) {
    // SAFETY: `l` is the calling thread's own stack (see `Local`).
    let (len, items) = unsafe { (&mut *l.len.get(), &*l.items.get()) };
    let at = len.saturating_sub(LOCAL_BATCH);
    let batch = items.get(at..*len).unwrap_or_default();
    global().0.extend(batch.iter().map(|f| f.idx));
    *len = at;
}

#[inline(always)]
fn alloc(me: ThisThread) -> Option<Free> {
    let Some(l) = LOCALS.get(me.index()) else {
        return Free::of(take_global(1).pop()?);
    };
    // SAFETY: `l` is the calling thread's own stack (see `Local`).
    if let Some(f) = unsafe { (*l.hot.get()).take() } {
        return Some(f);
    }
    // SAFETY: as above.
    let len = unsafe { &mut *l.len.get() };
    if *len == 0 {
        return refill(l);
    }
    *len -= 1;
    // SAFETY: as above; `*len < LOCAL_MAX`, so this is `Some`.
    unsafe { (*l.items.get()).get(*len).copied() }
}

#[inline(always)]
fn free(me: ThisThread, f: Free) {
    let Some(l) = LOCALS.get(me.index()) else {
        global().0.push(f.idx);
        return;
    };
    // SAFETY: `l` is the calling thread's own stack (see `Local`).
    let hot = unsafe { &mut *l.hot.get() };
    if hot.is_none() {
        *hot = Some(f);
        return;
    }
    // SAFETY: as above.
    let len = unsafe { &mut *l.len.get() };
    if *len == LOCAL_MAX {
        spill(l);
    }
    // SAFETY: as above; `*len < LOCAL_MAX` after a spill, so the cell is
    // there (were it not, the entry would go to the global list).
    match unsafe { (*l.items.get()).get_mut(*len) } {
        Some(cell) => {
            *cell = f;
            *len += 1;
        }
        None => global().0.push(f.idx),
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
pub(crate) struct Slot(Free);

/// Reserve a free entry (before the cache lookup, so that the raw handle
/// can be written straight into it). `None` when the table is full (4 Mi handles out,
/// fewer under an address-space limit) or could not be mapped.
#[inline(always)]
pub(crate) fn reserve(me: ThisThread) -> Option<Slot> {
    alloc(me).map(Slot)
}

impl Slot {
    /// Store `held` and make the entry live; returns the handle value
    /// (never 0).
    #[inline(always)]
    pub(crate) fn publish(self, cache: *const Inner, held: Held) -> usize {
        let Free {
            idx,
            generation,
            entry: e,
        } = self.0;
        // Published with the value by the Release store of the generation
        // (to a releaser on another thread, or a cache destroy).
        e.cache.store(cache.cast_mut(), Relaxed);
        // SAFETY: the entry is free with this generation (its index came
        // from a free list), so no live handle value names it and nobody
        // else touches its value.
        let generation = unsafe { e.cell.publish(generation, held) };
        encode(idx, generation)
    }

    /// The get failed: return the entry to the free list.
    #[cold]
    pub(crate) fn abandon(self) {
        free(this_thread(), self.0);
    }
}

/// The fast paths of the exports (see `cache::regcache_cache_get`): they
/// run outside `catch_unwind`, so everything here is panic-free: `get` on
/// slices (no indexing), plain loads and stores, no allocation, no lock.
///
/// This thread's hot free entry, taken (`None` when the cell is empty or
/// the thread has no stripe: then the caller takes the slow path).
#[inline(always)]
pub(crate) fn take_hot(me: ThisThread) -> Option<Slot> {
    let l = LOCALS.get(me.index())?;
    // SAFETY: `l` is the calling thread's own stack (see `Local`).
    unsafe { (*l.hot.get()).take() }.map(Slot)
}

/// Whether this thread's hot free entry is there (then [`take_hot`], on
/// the same thread with no handle-table call in between, returns it).
/// The get fast path checks before its cache lookup and takes after, so
/// that the entry is not held in registers across the lookup.
#[inline(always)]
pub(crate) fn has_hot(me: ThisThread) -> bool {
    match LOCALS.get(me.index()) {
        // SAFETY: `l` is the calling thread's own stack (see `Local`).
        Some(l) => unsafe { (*l.hot.get()).is_some() },
        None => false,
    }
}

/// Whether [`Entry::take_fast`] can free an entry on this thread without
/// spilling (the hot cell is empty or the stack has room).
#[inline(always)]
pub(crate) fn can_free_fast(me: ThisThread) -> bool {
    match LOCALS.get(me.index()) {
        // SAFETY: `l` is the calling thread's own stack (see `Local`).
        Some(l) => unsafe { (*l.hot.get()).is_none() || *l.len.get() < LOCAL_MAX },
        None => false,
    }
}

/// The live entry named by handle value `h`, or `None` when stale.
#[inline(always)]
pub(crate) fn lookup(h: usize) -> Option<&'static Entry> {
    let (idx, generation) = decode(h)?;
    let e = entry(idx)?;
    e.cell.check(generation).then_some(e)
}

impl Entry {
    /// The cache this live entry belongs to.
    #[inline(always)]
    pub(crate) fn cache(&self) -> *const Inner {
        self.cache.load(Relaxed)
    }

    /// What the live entry stands for.
    ///
    /// # Safety
    /// The caller holds the live handle value and does not release it
    /// concurrently (the header's thread-safety rule).
    #[inline(always)]
    pub(crate) unsafe fn held(&self) -> &Held {
        // SAFETY: the caller's contract.
        unsafe { self.cell.get() }
    }

    /// Take what the entry holds out and free the entry.
    ///
    /// # Safety
    /// As [`Entry::held`]; afterwards the handle value is stale.
    #[inline(always)]
    pub(crate) unsafe fn take(&'static self, me: ThisThread, idx_hint: usize) -> Held {
        // SAFETY: as `held`; afterwards every copy of the handle value is
        // stale.
        let (raw, g) = unsafe { self.cell.take() };
        if let Some((idx, _)) = decode(idx_hint) {
            free(
                me,
                Free {
                    idx,
                    generation: g,
                    entry: self,
                },
            );
        }
        raw
    }
}

impl Entry {
    /// The token of a live entry that holds one.
    ///
    /// # Safety
    /// As [`Entry::held`].
    #[inline(always)]
    pub(crate) unsafe fn token(&self) -> Option<Token> {
        // SAFETY: the caller's contract.
        match unsafe { self.held() } {
            Held::Token(t) => Some(*t),
            Held::Raw(_) => None,
        }
    }

    /// [`Entry::take`] for an entry holding a token (nothing to read out:
    /// a `Token` is `Copy`), after [`can_free_fast`] said yes: make the
    /// handle value stale and free the entry into this thread's hot cell
    /// or stack. Panic-free.
    ///
    /// # Safety
    /// As [`Entry::held`]; `idx` is the entry's index; afterwards the
    /// handle value is stale.
    #[inline(always)]
    pub(crate) unsafe fn take_fast(&'static self, me: ThisThread, idx: u32) {
        // SAFETY: the caller's contract; a token needs no drop.
        let g = unsafe { self.cell.retire() };
        let f = Free {
            idx,
            generation: g,
            entry: self,
        };
        let Some(l) = LOCALS.get(me.index()) else {
            return;
        };
        // SAFETY: `l` is the calling thread's own stack (see `Local`).
        let hot = unsafe { &mut *l.hot.get() };
        if hot.is_none() {
            *hot = Some(f);
            return;
        }
        // SAFETY: as above.
        let len = unsafe { &mut *l.len.get() };
        // SAFETY: as above.
        if let Some(cell) = unsafe { (*l.items.get()).get_mut(*len) } {
            *cell = f;
            *len += 1;
        }
    }
}

/// The live entry named by handle value `h` and its index, or `None`.
#[inline(always)]
pub(crate) fn lookup_idx(h: usize) -> Option<(&'static Entry, u32)> {
    let (idx, generation) = decode(h)?;
    let e = entry(idx)?;
    e.cell.check(generation).then_some((e, idx))
}

/// Take every live handle of `cache` out of the table (its cache is being
/// destroyed). The caller guarantees no other thread uses `cache` now.
pub(crate) fn drain_cache(cache: *const Inner) -> Vec<Held> {
    let created = global().1;
    let mut out = Vec::new();
    for idx in 0..created {
        let Some(e) = entry(idx) else { continue };
        let Some(g) = e.cell.live_generation() else {
            continue;
        };
        if std::ptr::eq(e.cache.load(Relaxed), cache) {
            // SAFETY: the entry is live and belongs to the cache being
            // destroyed; by the destroy contract no thread uses that cache's
            // handles concurrently, so we are the only reader of `held`.
            out.push(unsafe { e.take(this_thread(), encode(idx, g)) });
        }
    }
    out
}
