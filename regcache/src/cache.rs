//! The registration cache: slots, the interval index, LRU, limits.
//!
//! ## The journey of a `get`
//!
//! A request `[addr, addr+len)` is first widened to page boundaries: the
//! NIC (and `mlock`) work in pages, and two requests in the same pages
//! should share a registration.
//!
//! **Fast path.** A direct-mapped *hint table*, indexed by a hash of the
//! request's first page, remembers which slot last served a request
//! starting there — a software TLB. The slot is checked (LIVE, covers the
//! request, access flags suffice) and its reference count taken with a
//! single compare-and-swap on its `state` word. The CAS also proves the
//! slot was not recycled between the checks and the increment, because the
//! state word carries the slot's *incarnation*. No lock, no allocation, no
//! system call; the hit is counted in a per-thread stripe.
//!
//! **Slow path.** The authoritative index (a `BTreeMap` keyed by region
//! start, under an `RwLock`) is searched under the read lock. On a miss the
//! region to register is computed (the request, or with merging the hull
//! of the request and every cached region it overlaps or touches), then
//! registered *outside any lock* — `ibv_reg_mr` takes 10–100 µs. Under the
//! write lock the index is searched again (another thread may have cached
//! the range meanwhile; then ours is dropped and counted as a lost race),
//! merged regions leave the index, limits are enforced by evicting least
//! recently used idle regions, and the new region is published.
//!
//! **Release.** Dropping a [`Handle`] stamps the slot's last use for LRU
//! and, if the region is still LIVE, *defers* the release: the reference
//! goes into the calling thread's small deferred-release table (see below)
//! instead of being decremented. Otherwise the slot's count is decremented;
//! if the region was invalidated while in use, the last release
//! deregisters it.
//!
//! ## Deferred release: a hit with no atomic read-modify-write
//!
//! A locked read-modify-write costs 12–16 ns on the reference machine, and
//! a get+release needs two (take and drop a reference), which alone is over
//! the 25 ns hit budget. The dominant MPI pattern is the same thread
//! reusing the same buffer. So each thread keeps up to [`DEFERRED`]
//! references it released, in a per-cache table only that thread writes
//! (indexed by its process-unique thread index, like the statistics
//! stripes). A get first looks there: an entry whose slot is LIVE and
//! covers the request is handed out with plain loads and stores. A
//! deferred reference is a real counted reference, so nothing about
//! deregistration changes: a held region is never deregistered.
//!
//! The price, bounded and stated: a region whose only holder is a deferred
//! entry counts as in use. Eviction skips it; when nothing else is
//! evictable, the evicting thread purges its own table and retries.
//! Invalidation bumps the cache's epoch, and every thread purges killed
//! entries from its table on its next get or release, so an invalidated
//! region's deregistration waits at most until its last thread's next call
//! (or [`Cache::quiesce`]). Threads beyond the first 64 of the process
//! skip the table and use the atomic path.
//!
//! ## Slots and the state word
//!
//! Regions live in *slots*, allocated in chunks that are never freed while
//! the cache lives (only recycled), so a thread holding a stale slot index
//! can always read it safely. Each slot's `state` is one `AtomicU64`:
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
//! ## LRU without touching a list on hits
//!
//! Each release stamps the slot with a logical clock. The evictor keeps a
//! map ordered by the stamp it *last saw* for each region. Stamps only
//! grow, so when the oldest recorded entry still has its recorded stamp it
//! is the true least recently used; otherwise it is re-keyed with its
//! current stamp and the search continues. Each re-key pays for at least
//! one hit since the last, so eviction is amortised O(log n) per hit, and
//! exact LRU single-threaded. The clock is advanced with a plain load and
//! store, not a locked RMW: concurrent releases may share a stamp, which
//! only blurs the order between them.

use crate::stats::{Counters, STRIPES, Stats, ThisThread, add, this_thread, thread_stripe};
use crate::{AccessFlags, Config, Keys, LKey, MonitorKind, RKey, Registrar, RegistrarError};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;
use umn::{AddrRange, RangeError};

const REFS_MASK: u64 = 0xffff_ffff;
const LIVE: u64 = 1 << 32;
const INC_SHIFT: u32 = 33;
const INC_MASK: u64 = (1 << (64 - INC_SHIFT)) - 1;
const CHUNK_BITS: u32 = 8;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Slots are addressed by a u32; this many chunks bound the slab.
const MAX_CHUNKS: usize = 1 << 14;
const NO_SLOT: u32 = u32::MAX;
/// References each thread may keep deferred per cache.
pub const DEFERRED: usize = 2;

/// One thread's deferred references (slot index + 1; 0 = empty) and the
/// cache epoch it last purged at. Written only by the owning thread
/// (plain loads and stores on atomics); read by nobody else except
/// `Cache::drop`, which has exclusive access.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Deferred {
    epoch: AtomicU64,
    slots: [AtomicU32; DEFERRED],
}

const fn refs(state: u64) -> u64 {
    state & REFS_MASK
}

/// Why [`Cache::get`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The request is NULL, empty or overflows the address space.
    #[error("invalid range: {0}")]
    Range(#[from] RangeError),
    /// The invalidation source failed (could not be opened, or refused a
    /// range).
    #[error("invalidation source: {0}")]
    Monitor(#[from] umn::Error),
    /// The registrar failed and eviction could not help (nothing idle left
    /// to evict, or the error is not a resource shortage).
    #[error(transparent)]
    Registrar(#[from] RegistrarError),
}

/// One region slot. Fields other than `state` are written only while the
/// slot is not LIVE and has no references (by the thread that owns it then)
/// and published by a Release store of `state`; readers load `state` with
/// Acquire first and validate with a CAS on `state`.
#[repr(align(64))]
struct Slot<R: Registrar> {
    state: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
    access: AtomicU32,
    has_keys: AtomicU32,
    lkey: AtomicU32,
    rkey: AtomicU32,
    /// Logical time of the last release (LRU).
    last_use: AtomicU64,
    /// The umn cookie watching this slot's range (reserved or published);
    /// 0 when unwatched. `(incarnation << 32) | slot index`.
    cookie: AtomicU64,
    /// An invalidation hit the reservation before it was published.
    doomed: AtomicBool,
    /// The registration; taken by whoever owns deregistration.
    region: Mutex<Option<R::Region>>,
}

impl<R: Registrar> Slot<R> {
    fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
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

    #[inline]
    fn range(&self) -> AddrRange {
        AddrRange::new(self.start.load(Relaxed), self.end.load(Relaxed))
            .unwrap_or(AddrRange::new(0, 0).expect("empty"))
    }

    fn keys(&self) -> Option<Keys> {
        (self.has_keys.load(Relaxed) != 0).then(|| Keys {
            lkey: LKey(self.lkey.load(Relaxed)),
            rkey: RKey(self.rkey.load(Relaxed)),
        })
    }

    /// `true` when LIVE, covering `req` with the access wanted. Only for a
    /// caller that already holds a reference (the slot cannot be recycled
    /// under it).
    #[inline]
    fn covers_live(&self, req: &AddrRange, access: AccessFlags) -> bool {
        self.state.load(Acquire) & LIVE != 0
            && self.start.load(Relaxed) <= req.start()
            && self.end.load(Relaxed) >= req.end()
            && AccessFlags::from_bits_retain(self.access.load(Relaxed)).satisfies(access)
    }

    /// Take a reference if the slot is LIVE, covers `req` and has the
    /// access wanted. One CAS; no lock.
    #[inline]
    fn try_acquire(&self, req: &AddrRange, access: AccessFlags) -> bool {
        let st = self.state.load(Acquire);
        if st & LIVE == 0 || refs(st) == REFS_MASK {
            return false;
        }
        // Relaxed suffices: the Acquire load above saw the Release store
        // that published these fields for this incarnation; if the slot
        // was recycled since, the CAS below fails because the incarnation
        // (and LIVE) in `state` changed.
        if self.start.load(Relaxed) > req.start()
            || self.end.load(Relaxed) < req.end()
            || !AccessFlags::from_bits_retain(self.access.load(Relaxed)).satisfies(access)
        {
            return false;
        }
        self.state
            .compare_exchange(st, st + 1, Acquire, Relaxed)
            .is_ok()
    }
}

/// One chunk of [`CHUNK`] slots, created on first use.
type Chunk<R> = OnceLock<Box<[Slot<R>]>>;

/// The slab: chunks of slots, appended, never freed while the cache lives.
struct Slab<R: Registrar> {
    chunks: Box<[Chunk<R>]>,
    /// Free slot indices and the number of slots ever created.
    free: Mutex<(Vec<u32>, u32)>,
}

impl<R: Registrar> Slab<R> {
    fn new() -> Self {
        Self {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
            free: Mutex::new((Vec::new(), 0)),
        }
    }

    #[inline(always)]
    fn get(&self, idx: u32) -> Option<&Slot<R>> {
        let chunk = self.chunks.get((idx >> CHUNK_BITS) as usize)?.get()?;
        chunk.get(idx as usize & (CHUNK - 1))
    }

    #[inline(always)]
    fn slot(&self, idx: u32) -> &Slot<R> {
        self.get(idx).expect("slot index handed out by this slab")
    }

    fn alloc(&self) -> Option<u32> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = free.0.pop() {
            return Some(i);
        }
        let i = free.1;
        if i as usize >= MAX_CHUNKS * CHUNK || i == NO_SLOT {
            return None;
        }
        self.chunks[(i >> CHUNK_BITS) as usize]
            .get_or_init(|| (0..CHUNK).map(|_| Slot::new()).collect());
        free.1 += 1;
        Some(i)
    }

    fn release(&self, idx: u32) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .push(idx);
    }
}

/// The authoritative index, under the cache's RwLock.
#[derive(Debug, Default)]
struct Index {
    /// (start, slot) → end, of LIVE regions.
    by_start: BTreeMap<(u64, u32), u64>,
    /// (recorded last-use stamp, slot) of LIVE regions, for LRU.
    lru: BTreeMap<(u64, u32), ()>,
    /// slot → the stamp it is recorded under in `lru`.
    lru_key: BTreeMap<u32, u64>,
    /// Longest region ever indexed: bounds backward scans.
    max_len: u64,
    live_bytes: u64,
}

impl Index {
    /// Slots of LIVE regions overlapping (or, with `touching`, adjacent to)
    /// `r`, in start order.
    fn overlapping(&self, r: &AddrRange, touching: bool) -> Vec<(u32, AddrRange)> {
        let lo = r.start().saturating_sub(self.max_len);
        self.by_start
            .range((lo, 0)..=(r.end(), u32::MAX))
            .filter_map(|(&(s, slot), &e)| {
                let region = AddrRange::new(s, e).ok()?;
                let hit = if touching {
                    region.touches(r)
                } else {
                    region.overlaps(r)
                };
                hit.then_some((slot, region))
            })
            .collect()
    }

    /// Candidate slots that may cover `req`: starts in
    /// `[req.end - max_len, req.start]`, nearest first.
    fn covering_candidates(&self, req: AddrRange) -> impl Iterator<Item = u32> + '_ {
        // No region longer than max_len exists: when the request is longer,
        // nothing covers it and the scan is empty.
        let lo = req
            .end()
            .saturating_sub(self.max_len)
            .min(req.start().saturating_add(1));
        self.by_start
            .range((lo, 0)..(req.start().saturating_add(1), 0))
            .rev()
            .filter(move |&(_, &e)| e >= req.end())
            .map(|(&(_, slot), _)| slot)
    }

    fn insert(&mut self, slot: u32, r: AddrRange, stamp: u64) {
        self.by_start.insert((r.start(), slot), r.end());
        self.lru.insert((stamp, slot), ());
        self.lru_key.insert(slot, stamp);
        self.max_len = self.max_len.max(r.len());
        self.live_bytes += r.len();
    }

    fn remove(&mut self, slot: u32, r: AddrRange) {
        if self.by_start.remove(&(r.start(), slot)).is_some() {
            self.live_bytes -= r.len();
        }
        if let Some(stamp) = self.lru_key.remove(&slot) {
            self.lru.remove(&(stamp, slot));
        }
    }

    fn rekey(&mut self, slot: u32, old: u64, new: u64) {
        self.lru.remove(&(old, slot));
        self.lru.insert((new, slot), ());
        self.lru_key.insert(slot, new);
    }

    fn len(&self) -> usize {
        self.by_start.len()
    }
}

/// Bumped in every fork child (a `pthread_atfork` child handler, installed
/// when the first cache is built). A cache compares it with the value at
/// its creation on every get: in a child, the registrations belong to the
/// parent (mlock is not inherited; an MR's pages are the parent's), so the
/// cache forgets them and caches nothing, whatever the source.
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
static ATFORK: std::sync::Once = std::sync::Once::new();

extern "C" fn fork_child() {
    // Async-signal-safe: one atomic add.
    FORK_EPOCH.fetch_add(1, Relaxed);
}

fn install_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only does an atomic add; the
        // function pointer stays valid for the life of the process.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(fork_child)) };
        if rc != 0 {
            log::warn!("pthread_atfork failed ({rc}): fork children are detected only by the invalidation source");
        }
    });
}

/// The cache's invalidation source.
struct Monitor {
    notifier: umn::Notifier,
    /// One-load view of the notifier's generation word.
    watch: umn::GenerationWatch,
    /// The generation as of the last complete drain: a get that sees
    /// another value applies events first.
    seen: AtomicU64,
    /// One drain at a time.
    drain: Mutex<()>,
}

/// A memory-registration cache over a [`Registrar`]. `Send + Sync`: share
/// it between threads by reference or in an `Arc`.
///
/// See the [crate documentation](crate) for the contract and the module
/// source for the protocol.
pub struct Cache<R: Registrar> {
    registrar: R,
    config: Config,
    slab: Slab<R>,
    index: RwLock<Index>,
    /// Direct-mapped: hash(first page of a request) → slot index + 1.
    hints: Box<[AtomicU32]>,
    hint_shift: u32,
    page_shift: u32,
    /// LRU logical clock, advanced on every release (racy by design).
    clock: AtomicU64,
    /// Bumped when regions are killed while possibly deferred.
    epoch: AtomicU64,
    deferred: Box<[Deferred]>,
    monitor: Option<Monitor>,
    /// The source in force (what `Auto` chose, or `None`).
    source: MonitorKind,
    /// Why the configured source could not be opened, if it could not.
    monitor_error: Option<String>,
    /// Set in a fork child: nothing is cached any more.
    forked: AtomicBool,
    /// [`FORK_EPOCH`] when the cache was built.
    fork_epoch: u64,
    counters: Counters,
    /// See [`Cache::set_invalidation_observer`].
    observer: OnceLock<InvalidationObserver>,
}

/// What [`Cache::set_invalidation_observer`] installs: called with the
/// part of a cached region that was invalidated.
pub type InvalidationObserver = Box<dyn Fn(AddrRange) + Send + Sync>;

impl<R: Registrar> std::fmt::Debug for Cache<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("registrar", &self.registrar.name())
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A reference to a registration from [`Cache::get`]. The registration is
/// not deregistered while the handle lives. Dropping it, or
/// [`Handle::release`], releases it.
///
/// The memory must not be unmapped or freed while the NIC may use it
/// through this handle's keys; if it is, the cache's invalidation source
/// invalidates the region and the registration goes at the last release.
pub struct Handle<'c, R: Registrar> {
    cache: &'c Cache<R>,
    raw: std::mem::ManuallyDrop<RawHandle<R>>,
}

/// A handle detached from the cache's lifetime, for callers that cannot
/// hold a borrow (the C API). Release it with [`Cache::release_raw`] on the
/// cache that produced it.
pub struct RawHandle<R: Registrar> {
    slot: u32,
    range: AddrRange,
    keys: Option<Keys>,
    /// The registration of an uncached get (`slot == NO_SLOT`).
    uncached: Option<R::Region>,
}

impl<R: Registrar> std::fmt::Debug for RawHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawHandle")
            .field("range", &self.range)
            .field("keys", &self.keys)
            .field("cached", &(self.slot != NO_SLOT))
            .finish()
    }
}

impl<R: Registrar> RawHandle<R> {
    /// The registered range (page-aligned; covers the request).
    pub fn range(&self) -> AddrRange {
        self.range
    }
    /// The registration's keys, where the registrar has them.
    pub fn keys(&self) -> Option<Keys> {
        self.keys
    }
    /// `false` when this registration is a one-off outside the cache.
    pub fn is_cached(&self) -> bool {
        self.slot != NO_SLOT
    }
}

/// A reference to a *cached* registration as a small `Copy` value: the
/// slot index and the slot's incarnation. From [`Cache::get_token`];
/// release with [`Cache::release_token`]. Holding a token keeps the region
/// registered exactly as a [`Handle`] does; unlike a handle nothing stops
/// it being copied, so releasing it once is the caller's duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    slot: u32,
    incarnation: u32,
}

impl Token {
    /// The token as one `u64` (`incarnation << 32 | slot`), for callers
    /// that store it in a word (the C API).
    pub fn to_bits(self) -> u64 {
        (u64::from(self.incarnation) << 32) | u64::from(self.slot)
    }
    /// The inverse of [`Token::to_bits`]. Any value makes a `Token`;
    /// releasing one that no get returned is the caller's error.
    pub fn from_bits(bits: u64) -> Self {
        Self {
            slot: bits as u32,
            incarnation: (bits >> 32) as u32,
        }
    }
}

/// What [`Cache::get_token`] gives: a token for a cached registration, or
/// a one-off registration outside the cache.
#[derive(Debug)]
pub enum Got<R: Registrar> {
    /// A cached region; release with [`Cache::release_token`].
    Cached(Token),
    /// A one-off registration; release with [`Cache::release_raw`].
    Uncached(RawHandle<R>),
}

impl<R: Registrar> std::fmt::Debug for Handle<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw.fmt(f)
    }
}

impl<'c, R: Registrar> Handle<'c, R> {
    /// The registered range: page-aligned, covering the request.
    pub fn range(&self) -> AddrRange {
        self.raw.range
    }
    /// The registration's lkey/rkey, where the registrar has keys.
    pub fn keys(&self) -> Option<Keys> {
        self.raw.keys
    }
    /// `false` when served by a one-off registration outside the cache.
    pub fn is_cached(&self) -> bool {
        self.raw.is_cached()
    }
    /// Release the registration (same as dropping the handle).
    pub fn release(self) {}

    /// Detach from the cache's lifetime; see [`RawHandle`].
    pub fn into_raw(self) -> RawHandle<R> {
        let mut me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so `raw` is taken exactly once.
        unsafe { std::mem::ManuallyDrop::take(&mut me.raw) }
    }
}

impl<R: Registrar> Drop for Handle<'_, R> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: `raw` is taken only here and in `into_raw`, which
        // prevents this drop from running.
        let raw = unsafe { std::mem::ManuallyDrop::take(&mut self.raw) };
        self.cache.release_inner(raw);
    }
}

/// One cached region, as reported by [`Cache::regions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// The registered, page-aligned range.
    pub range: AddrRange,
    /// The access flags it was registered with.
    pub access: AccessFlags,
    /// Handles alive on it.
    pub refs: u32,
    /// Its keys, where the registrar has them.
    pub keys: Option<Keys>,
}

enum Lookup {
    Hit(u32),
    Miss,
}

impl<R: Registrar> Cache<R> {
    /// A cache over `registrar` with `config`, watching memory with the
    /// source `config.monitor` names. If that source cannot be opened the
    /// cache runs with none, logs why, and says so in
    /// [`Cache::monitor`] and [`Cache::monitor_error`]; use
    /// [`Cache::try_new`] to make that an error instead.
    pub fn new(registrar: R, config: Config) -> Self {
        match Self::open_monitor(config.monitor) {
            Ok((monitor, source)) => Self::build(registrar, config, monitor, source, None),
            Err(e) => {
                log::error!(
                    "regcache: cannot open invalidation source {}: {e}; running without one",
                    config.monitor.name()
                );
                Self::build(
                    registrar,
                    config,
                    None,
                    MonitorKind::None,
                    Some(e.to_string()),
                )
            }
        }
    }

    /// As [`Cache::new`], but a source that cannot be opened is an error
    /// (with `Auto`, only when neither the kernel device nor userfaultfd
    /// opens).
    ///
    /// # Errors
    /// [`CacheError::Monitor`] with the source's error.
    pub fn try_new(registrar: R, config: Config) -> Result<Self, CacheError> {
        let (monitor, source) = Self::open_monitor(config.monitor)?;
        Ok(Self::build(registrar, config, monitor, source, None))
    }

    fn open_monitor(kind: MonitorKind) -> Result<(Option<Monitor>, MonitorKind), umn::Error> {
        let source = match kind {
            MonitorKind::None => return Ok((None, MonitorKind::None)),
            MonitorKind::Auto => umn::Source::Auto,
            MonitorKind::Kernel => umn::Source::Kernel,
            MonitorKind::Uffd => umn::Source::Uffd,
            MonitorKind::External => umn::Source::External,
        };
        let notifier = umn::Notifier::open(source)?;
        let active = match notifier.source() {
            umn::Source::Kernel => MonitorKind::Kernel,
            umn::Source::Uffd => MonitorKind::Uffd,
            umn::Source::External => MonitorKind::External,
            _ => kind,
        };
        let watch = notifier.watch();
        let seen = AtomicU64::new(notifier.generation().0);
        Ok((
            Some(Monitor {
                notifier,
                watch,
                seen,
                drain: Mutex::new(()),
            }),
            active,
        ))
    }

    fn build(
        registrar: R,
        config: Config,
        monitor: Option<Monitor>,
        source: MonitorKind,
        monitor_error: Option<String>,
    ) -> Self {
        let config = Config {
            max_regions: config
                .max_regions
                .clamp(1, (MAX_CHUNKS * CHUNK / 2).min(u32::MAX as usize / 2)),
            max_bytes: config.max_bytes.max(1),
            ..config
        };
        let hint_len = (config.max_regions * 4)
            .next_power_of_two()
            .clamp(1 << 10, 1 << 20);
        Self {
            registrar,
            slab: Slab::new(),
            index: RwLock::new(Index::default()),
            hints: (0..hint_len).map(|_| AtomicU32::new(0)).collect(),
            hint_shift: 64 - hint_len.trailing_zeros(),
            page_shift: umn::page_size().trailing_zeros(),
            clock: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            deferred: (0..STRIPES).map(|_| Deferred::default()).collect(),
            monitor,
            source,
            monitor_error,
            forked: AtomicBool::new(false),
            fork_epoch: {
                install_atfork();
                FORK_EPOCH.load(Relaxed)
            },
            counters: Counters::default(),
            observer: OnceLock::new(),
            config,
        }
    }

    /// The invalidation source in force: what `Auto` chose, or
    /// [`MonitorKind::None`] when none is open.
    pub fn monitor(&self) -> MonitorKind {
        self.source
    }

    /// Why the configured invalidation source could not be opened.
    pub fn monitor_error(&self) -> Option<&str> {
        self.monitor_error.as_deref()
    }

    /// The host reports that `range` was unmapped (or no longer holds the
    /// same pages): for an MPI library with its own memory hooks.
    ///
    /// With a source open this only records the range: it takes no lock,
    /// allocates nothing and may be called from inside a memory hook; the
    /// regions are invalidated by the next get on any thread. With no
    /// source ([`MonitorKind::None`]) it invalidates at once, like
    /// [`Cache::invalidate`], and must not be called from a hook.
    ///
    /// # Errors
    /// [`CacheError::Monitor`] when the source refuses the range (a fork
    /// child).
    pub fn notify_unmapped(&self, range: AddrRange) -> Result<(), CacheError> {
        match &self.monitor {
            Some(m) => Ok(m.notifier.notify_unmapped(range)?),
            None => {
                self.invalidate(range);
                Ok(())
            }
        }
    }

    /// Install `f`, to be called once for every cached region invalidated
    /// (by the invalidation source or by [`Cache::invalidate`]), with the
    /// part of the region that was unmapped or changed: the source's hint
    /// (ummunotify's `FLAG_HINT` range, intersected with the registration)
    /// when it has one, else the whole registered range; for
    /// [`Cache::invalidate`] its range intersected with the region. A
    /// tracer records these as the `U` records of DESIGN.md's trace
    /// format. Regions evicted, merged away or flushed are not reported:
    /// their memory did not change.
    ///
    /// `f` runs on the thread that applies the invalidation (a get or a
    /// release on any thread, or the caller of [`Cache::invalidate`]),
    /// after the regions have left the index, before that call returns; it
    /// must not call into this cache (the source's event lock is held).
    ///
    /// Returns `false`, keeping the first, if an observer is already set.
    pub fn set_invalidation_observer(&self, f: impl Fn(AddrRange) + Send + Sync + 'static) -> bool {
        self.observer.set(Box::new(f)).is_ok()
    }

    /// The registrar this cache registers with.
    pub fn registrar(&self) -> &R {
        &self.registrar
    }

    /// The configuration in force (limits clamped to what the cache
    /// supports).
    pub fn config(&self) -> &Config {
        &self.config
    }

    #[inline(always)]
    fn hint_index(&self, page_start: u64) -> usize {
        (page_start.wrapping_shr(self.page_shift))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_shr(self.hint_shift) as usize
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Get a registration covering `range` with at least `access`.
    ///
    /// The request is widened to page boundaries. A cached region that
    /// covers it with sufficient access is a hit; otherwise a region is
    /// registered (merged with overlapping and adjacent cached regions when
    /// [`Config::merge`] is on) and cached, evicting least recently used
    /// idle regions to stay within the limits. Over the limits with nothing
    /// evictable, the request gets a one-off registration outside the cache
    /// (counted in [`Stats::uncached`]).
    ///
    /// # Errors
    /// [`CacheError::Range`] for an empty or overflowing range;
    /// [`CacheError::Registrar`] when registration fails and evicting every
    /// idle region did not help, or the failure is not a resource shortage
    /// (e.g. the memory is not mapped). The cache is unchanged by a failed
    /// get, except for regions evicted while retrying.
    #[inline(always)]
    pub fn get(&self, range: AddrRange, access: AccessFlags) -> Result<Handle<'_, R>, CacheError> {
        let raw = self.get_raw(range, access)?;
        Ok(Handle {
            cache: self,
            raw: std::mem::ManuallyDrop::new(raw),
        })
    }

    /// As [`Cache::get`], returning a [`RawHandle`] that must be released
    /// with [`Cache::release_raw`].
    ///
    /// # Errors
    /// As [`Cache::get`].
    #[inline(always)]
    pub fn get_raw(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<RawHandle<R>, CacheError> {
        let req = self.prologue(range)?;
        match self.hit(thread_stripe(), &req, access) {
            Some((idx, slot)) => Ok(RawHandle {
                slot: idx,
                range: slot.range(),
                keys: slot.keys(),
                uncached: None,
            }),
            None => self.get_slow(req, access),
        }
    }

    /// As [`Cache::get_raw`], but a cached registration comes back as a
    /// [`Token`]: 8 bytes, `Copy`, nothing to move or drop. Release it with
    /// [`Cache::release_token`]; a one-off (uncached) registration comes
    /// back as a [`RawHandle`], released with [`Cache::release_raw`].
    ///
    /// # Errors
    /// As [`Cache::get`].
    #[inline(always)]
    pub fn get_token(&self, range: AddrRange, access: AccessFlags) -> Result<Got<R>, CacheError> {
        self.get_token_on(this_thread(), range, access)
    }

    /// As [`Cache::get_token`], for a caller that already has
    /// [`this_thread`] (one TLS access less).
    ///
    /// # Errors
    /// As [`Cache::get`].
    #[inline(always)]
    pub fn get_token_on(
        &self,
        me: ThisThread,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Got<R>, CacheError> {
        let req = self.prologue(range)?;
        if let Some((idx, slot)) = self.hit(me.index(), &req, access) {
            return Ok(Got::Cached(Self::token_for(idx, slot)));
        }
        let raw = self.get_slow(req, access)?;
        if raw.slot == NO_SLOT {
            return Ok(Got::Uncached(raw));
        }
        Ok(Got::Cached(Self::token_for(
            raw.slot,
            self.slab.slot(raw.slot),
        )))
    }

    /// The token of a slot the caller holds a reference on (so its
    /// incarnation cannot change under us).
    #[inline(always)]
    fn token_for(idx: u32, slot: &Slot<R>) -> Token {
        let st = slot.state.load(Relaxed);
        Token {
            slot: idx,
            incarnation: ((st >> INC_SHIFT) & INC_MASK) as u32,
        }
    }

    /// Checks and events common to every get; the request widened to pages.
    #[inline(always)]
    fn prologue(&self, range: AddrRange) -> Result<AddrRange, CacheError> {
        if range.is_empty() {
            return Err(RangeError::Empty {
                start: range.start(),
            }
            .into());
        }
        let req = range.align_out(1 << self.page_shift)?;
        if FORK_EPOCH.load(Relaxed) != self.fork_epoch {
            self.on_fork();
        }
        if let Some(m) = &self.monitor {
            // One load when nothing changed. Events are applied before any
            // lookup that sees the generation move.
            if m.watch.load().0 != m.seen.load(Relaxed) {
                self.apply(m);
            }
        }
        Ok(req)
    }

    /// The fast path: a reference on a LIVE slot covering `req`, from this
    /// thread's deferred table or the hint table; `None` on a miss there.
    #[inline(always)]
    fn hit(&self, me: usize, req: &AddrRange, access: AccessFlags) -> Option<(u32, &Slot<R>)> {
        if let Some(d) = self.deferred.get(me) {
            if d.epoch.load(Relaxed) != self.epoch.load(Relaxed) {
                self.purge_deferred(d, false);
            }
            for e in &d.slots {
                let v = e.load(Relaxed);
                if v != 0 {
                    let slot = self.slab.slot(v - 1);
                    if slot.covers_live(req, access) {
                        // We already hold this counted reference: hand it
                        // over. Only this thread writes `e`.
                        e.store(0, Relaxed);
                        self.counters.hits.incr_at(me);
                        return Some((v - 1, slot));
                    }
                }
            }
        }
        let h = self.hints[self.hint_index(req.start())].load(Relaxed);
        if h != 0 {
            let slot = self.slab.slot(h - 1);
            if slot.try_acquire(req, access) {
                self.counters.hits.incr_at(me);
                return Some((h - 1, slot));
            }
        }
        None
    }

    /// The hit path alone, for a caller with its own slow path (the C
    /// API's exports): `Some(token)` when this thread's deferred table or
    /// the hint table has a LIVE region covering `range` with `access`
    /// (the token then holds a reference, as from [`Cache::get_token_on`]);
    /// `None`, having changed nothing, when anything else would be needed:
    /// an empty or overflowing range, a fork, monitor events to apply, a
    /// deferred table to purge, a miss. Then call [`Cache::get_token_on`].
    ///
    /// **Invariant:** this function cannot panic and calls nothing out of
    /// line: only atomic loads and stores, `Option`-returning lookups
    /// (`get`, never indexing) and wrapping arithmetic. The C API runs it
    /// outside its `catch_unwind` and relies on that.
    #[inline(always)]
    pub fn try_hit_token_on(
        &self,
        me: ThisThread,
        range: AddrRange,
        access: AccessFlags,
    ) -> Option<Token> {
        if range.is_empty() {
            return None;
        }
        let req = range.align_out(1u64.wrapping_shl(self.page_shift)).ok()?;
        if FORK_EPOCH.load(Relaxed) != self.fork_epoch {
            return None;
        }
        if let Some(m) = &self.monitor {
            if m.watch.load().0 != m.seen.load(Relaxed) {
                return None;
            }
        }
        let me = me.index();
        if let Some(d) = self.deferred.get(me) {
            if d.epoch.load(Relaxed) != self.epoch.load(Relaxed) {
                return None;
            }
            for e in &d.slots {
                let v = e.load(Relaxed);
                if v != 0 {
                    let idx = v.wrapping_sub(1);
                    let slot = self.slab.get(idx)?;
                    if slot.covers_live(&req, access) {
                        // We already hold this counted reference: hand it
                        // over. Only this thread writes `e`.
                        e.store(0, Relaxed);
                        self.counters.hits.incr_at(me);
                        return Some(Self::token_for(idx, slot));
                    }
                }
            }
        }
        let h = self.hints.get(self.hint_index(req.start()))?.load(Relaxed);
        if h != 0 {
            let idx = h.wrapping_sub(1);
            let slot = self.slab.get(idx)?;
            if slot.try_acquire(&req, access) {
                self.counters.hits.incr_at(me);
                return Some(Self::token_for(idx, slot));
            }
        }
        None
    }

    /// The release fast path, for a caller with its own slow path (the C
    /// API): give `token`'s reference to this thread's deferred table when
    /// that is all there is to do — the token's slot is in the token's
    /// incarnation, referenced and LIVE, and the deferred entry it would
    /// displace is empty. Returns `false`, having changed nothing,
    /// otherwise; then call [`Cache::release_token_on`].
    ///
    /// **Invariant:** cannot panic and calls nothing out of line, as
    /// [`Cache::try_hit_token_on`].
    ///
    /// # Safety
    /// As [`Cache::release_token`].
    #[inline(always)]
    pub unsafe fn try_release_token_fast(&self, me: ThisThread, token: Token) -> bool {
        let Some(slot) = self.slab.get(token.slot) else {
            return false;
        };
        let Some(d) = self.deferred.get(me.index()) else {
            return false;
        };
        let st = slot.state.load(Relaxed);
        if ((st >> INC_SHIFT) & INC_MASK) as u32 != token.incarnation
            || refs(st) == 0
            || st & LIVE == 0
            || d.slots[DEFERRED - 1].load(Relaxed) != 0
        {
            return false;
        }
        // What `release_slot` does when the displaced entry is empty.
        let t = self.clock.load(Relaxed).wrapping_add(1);
        self.clock.store(t, Relaxed);
        slot.last_use.store(t, Relaxed);
        for i in (1..DEFERRED).rev() {
            d.slots[i].store(d.slots[i - 1].load(Relaxed), Relaxed);
        }
        d.slots[0].store(token.slot.wrapping_add(1), Relaxed);
        true
    }

    /// Release a token from [`Cache::get_token`].
    ///
    /// Returns `false`, and changes nothing, when the token's slot is not
    /// in the incarnation the token names or has no references: the
    /// region the token named is gone, so this release is a duplicate (or
    /// the token is garbage). A duplicate release while the region is
    /// still referenced by other holders (including this thread's
    /// deferred-release table) is **not** detectable from the token alone:
    /// a caller that must detect double release keeps per-handle state
    /// (the C API's handle table does).
    ///
    /// # Safety
    /// `token` comes from *this* cache's [`Cache::get_token`] and is
    /// released once; releasing it twice or on another cache takes someone
    /// else's reference, and a registration could then be deregistered
    /// while the NIC still uses it.
    #[inline(always)]
    pub unsafe fn release_token(&self, token: Token) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.release_token_on(this_thread(), token) }
    }

    /// As [`Cache::release_token`], for a caller that already has
    /// [`this_thread`].
    ///
    /// # Safety
    /// As [`Cache::release_token`].
    #[inline(always)]
    pub unsafe fn release_token_on(&self, me: ThisThread, token: Token) -> bool {
        let Some(slot) = self.slab.get(token.slot) else {
            return false;
        };
        let st = slot.state.load(Relaxed);
        if ((st >> INC_SHIFT) & INC_MASK) as u32 != token.incarnation || refs(st) == 0 {
            return false;
        }
        self.release_slot(me.index(), token.slot, slot);
        true
    }

    /// The registered range and keys of a token's region.
    ///
    /// # Safety
    /// The caller holds `token` (got from this cache and not released), so
    /// the slot cannot be recycled under it.
    #[inline(always)]
    pub unsafe fn token_info(&self, token: Token) -> (AddrRange, Option<Keys>) {
        let s = self.slab.slot(token.slot);
        (s.range(), s.keys())
    }

    /// Release a handle obtained with [`Cache::get_raw`] or
    /// [`Handle::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from *this* cache. Releasing it on another cache
    /// corrupts that cache's reference counts, and a registration could
    /// then be deregistered while the NIC still uses it.
    pub unsafe fn release_raw(&self, raw: RawHandle<R>) {
        self.release_inner(raw);
    }

    #[inline(always)]
    fn release_inner(&self, raw: RawHandle<R>) {
        if raw.slot == NO_SLOT {
            if let Some(region) = raw.uncached {
                self.deregister(region, raw.range);
            }
            return;
        }
        self.release_slot(thread_stripe(), raw.slot, self.slab.slot(raw.slot));
    }

    /// Give back one reference on `slot_idx`: into this thread's deferred
    /// table while the region is LIVE, else a counted decrement.
    #[inline(always)]
    fn release_slot(&self, me: usize, slot_idx: u32, slot: &Slot<R>) {
        let t = self.clock.load(Relaxed).wrapping_add(1);
        self.clock.store(t, Relaxed);
        slot.last_use.store(t, Relaxed);
        if let Some(d) = self.deferred.get(me) {
            if slot.state.load(Relaxed) & LIVE != 0 {
                // Keep the reference, displacing the older entry. (A
                // region killed after this check is purged on this
                // thread's next get: the kill bumped the epoch.)
                let old = d.slots[DEFERRED - 1].load(Relaxed);
                for i in (1..DEFERRED).rev() {
                    d.slots[i].store(d.slots[i - 1].load(Relaxed), Relaxed);
                }
                d.slots[0].store(slot_idx + 1, Relaxed);
                if old != 0 {
                    self.drop_ref(old - 1);
                }
                return;
            }
        }
        self.drop_ref(slot_idx);
    }

    /// Drop one counted reference; the last one on a killed region
    /// deregisters it.
    fn drop_ref(&self, slot_idx: u32) {
        let slot = self.slab.slot(slot_idx);
        // Release: our uses of the registration happen before a
        // deregistration by whoever sees refs reach zero.
        let prev = slot.state.fetch_sub(1, AcqRel);
        debug_assert!(refs(prev) > 0, "release of a slot with no references");
        if refs(prev) == 1 && prev & LIVE == 0 {
            // Invalidated, merged or evicted while we held it: we are the
            // last user, so we deregister.
            self.retire(slot_idx);
        }
    }

    /// Drop this thread's deferred references: all of them with `all`, else
    /// those whose region left the index.
    fn purge_deferred(&self, d: &Deferred, all: bool) {
        d.epoch.store(self.epoch.load(Relaxed), Relaxed);
        for e in &d.slots {
            let v = e.load(Relaxed);
            if v != 0 && (all || self.slab.slot(v - 1).state.load(Acquire) & LIVE == 0) {
                e.store(0, Relaxed);
                self.drop_ref(v - 1);
            }
        }
    }

    /// Release the calling thread's deferred references (see the module
    /// docs): afterwards the cache holds no reference on this thread's
    /// behalf. Call it when a thread stops using the cache for a long time,
    /// or before `fork`. Returns nothing; cheap when there is nothing to do.
    pub fn quiesce(&self) {
        if let Some(d) = self.deferred.get(thread_stripe()) {
            self.purge_deferred(d, true);
        }
    }

    fn find_covering(&self, idx: &Index, req: &AddrRange, access: AccessFlags) -> Lookup {
        for slot in idx.covering_candidates(*req) {
            if self.slab.slot(slot).try_acquire(req, access) {
                return Lookup::Hit(slot);
            }
        }
        Lookup::Miss
    }

    fn handle_for(&self, slot: u32) -> RawHandle<R> {
        let s = self.slab.slot(slot);
        RawHandle {
            slot,
            range: s.range(),
            keys: s.keys(),
            uncached: None,
        }
    }

    #[cold]
    fn get_slow(&self, req: AddrRange, access: AccessFlags) -> Result<RawHandle<R>, CacheError> {
        if self.forked.load(Relaxed) {
            // A fork child has no invalidation source: nothing is cached.
            add(&self.counters.misses, 1);
            return self.uncached(req, access);
        }
        for attempt in 0..8 {
            match self.miss_once(req, access, attempt == 0)? {
                Some(h) => return Ok(h),
                // An unmap hit the range while we registered it: again.
                None => add(&self.counters.doomed_retries, 1),
            }
        }
        // The memory under the request keeps changing under us: a one-off
        // registration, not cached.
        self.uncached(req, access)
    }

    /// Register `range` outside the cache, for one handle.
    fn uncached(&self, range: AddrRange, access: AccessFlags) -> Result<RawHandle<R>, CacheError> {
        let (region, range, _) = self.register_evicting(range, access, range)?;
        add(&self.counters.uncached, 1);
        let keys = self.registrar.keys(&region);
        Ok(RawHandle {
            slot: NO_SLOT,
            range,
            keys,
            uncached: Some(region),
        })
    }

    /// Register `target` (falling back to `req` when the merged target
    /// cannot be registered), evicting LRU regions and retrying when the
    /// registrar runs out of resources. Returns the region, what was
    /// registered, and its access.
    fn register_evicting(
        &self,
        mut target: AddrRange,
        mut access: AccessFlags,
        req: AddrRange,
    ) -> Result<(R::Region, AddrRange, AccessFlags), CacheError> {
        let req_access = access;
        loop {
            match self.register(target, access) {
                Ok(region) => return Ok((region, target, access)),
                Err(e) if e.is_resource_exhausted() => {
                    let victims = {
                        let mut idx = self.write_index();
                        self.evict_lru(&mut idx, 1)
                    };
                    if victims.is_empty() {
                        if let Some(d) = self.own_deferred() {
                            self.purge_deferred(d, true);
                            continue;
                        }
                        if target != req {
                            add(&self.counters.merge_fallbacks, 1);
                            (target, access) = (req, req_access);
                            continue;
                        }
                        return Err(e.into());
                    }
                    add(&self.counters.enomem_retries, 1);
                    self.retire_all(victims);
                }
                // A merged registration can fail where the request alone
                // would not (a neighbour's memory went away): retry without
                // merging.
                Err(_) if target != req => {
                    add(&self.counters.merge_fallbacks, 1);
                    (target, access) = (req, req_access);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One attempt at a miss. `Ok(None)`: an invalidation event hit the
    /// reserved slot before it was published; the caller tries again.
    fn miss_once(
        &self,
        req: AddrRange,
        access: AccessFlags,
        first: bool,
    ) -> Result<Option<RawHandle<R>>, CacheError> {
        let hint = self.hint_index(req.start());
        // 1. The authoritative index, shared.
        let (mut target, mut target_access) = {
            let idx = self.read_index();
            if let Lookup::Hit(slot) = self.find_covering(&idx, &req, access) {
                drop(idx);
                self.hints[hint].store(slot + 1, Relaxed);
                self.counters.hits.incr_at(thread_stripe());
                return Ok(Some(self.handle_for(slot)));
            }
            if self.config.merge {
                idx.overlapping(&req, true)
                    .iter()
                    .fold((req, access), |(r, a), (slot, region)| {
                        let acc = AccessFlags::from_bits_retain(
                            self.slab.slot(*slot).access.load(Relaxed),
                        );
                        (r.hull(region), a | acc)
                    })
            } else {
                (req, access)
            }
        };
        if first {
            add(&self.counters.misses, 1);
        }
        if target.len() > self.config.max_bytes && target != req {
            // Merging would exceed the byte limit on its own: don't merge.
            add(&self.counters.merge_fallbacks, 1);
            (target, target_access) = (req, access);
        }

        // 2. Reserve a slot and watch the range *before* registering it, so
        //    an unmap at any later moment reaches the slot (see `apply`).
        let Some(slot) = self.slab.alloc() else {
            return self.uncached(req, access).map(Some);
        };
        let s = self.slab.slot(slot);
        let inc = (s.state.load(Relaxed) >> INC_SHIFT).wrapping_add(1) & INC_MASK;
        let cookie = (inc << 32) | u64::from(slot);
        s.doomed.store(false, Relaxed);
        s.cookie.store(0, Relaxed);
        if let Some(m) = &self.monitor {
            // Release: `apply` reads the cookie (under the index lock) only
            // after the notifier delivered an event for it, which follows
            // this registration.
            s.cookie.store(cookie, Release);
            let t = Instant::now();
            let mut watched = m.notifier.register(target, umn::Cookie(cookie));
            if matches!(watched, Err(umn::Error::NotMapped { .. })) && target != req {
                add(&self.counters.merge_fallbacks, 1);
                (target, target_access) = (req, access);
                watched = m.notifier.register(target, umn::Cookie(cookie));
            }
            add(&self.counters.monitor_ns, t.elapsed().as_nanos() as u64);
            match watched {
                Ok(()) => {}
                Err(e) => {
                    s.cookie.store(0, Relaxed);
                    self.slab.release(slot);
                    return match e {
                        umn::Error::NotMapped { range } => {
                            Err(CacheError::Registrar(RegistrarError::NotMapped {
                                call: "umn register",
                                range,
                                source: std::io::Error::from_raw_os_error(libc::EFAULT),
                            }))
                        }
                        umn::Error::Forked => {
                            self.on_fork();
                            self.uncached(req, access).map(Some)
                        }
                        e => {
                            // EBUSY (another userfaultfd owns the memory) or
                            // another failure: serve it, but never cache
                            // what nothing watches.
                            add(&self.counters.unwatched, 1);
                            log::debug!("{target} served uncached: {e}");
                            self.uncached(req, access).map(Some)
                        }
                    };
                }
            }
        }

        // 3. Register outside any lock.
        let (region, target, target_access) =
            match self.register_evicting(target, target_access, req) {
                Ok(r) => r,
                Err(e) => {
                    self.unreserve(slot);
                    return Err(e);
                }
            };

        // 4. Publish under the write lock.
        let mut retire = Vec::new();
        let mut idx = self.write_index();
        let mut purged = false;
        loop {
            if s.doomed.load(Acquire) {
                drop(idx);
                self.deregister(region, target);
                self.unreserve(slot);
                self.retire_all(retire);
                return Ok(None);
            }
            if let Lookup::Hit(hit) = self.find_covering(&idx, &req, access) {
                drop(idx);
                add(&self.counters.lost_races, 1);
                self.deregister(region, target);
                self.unreserve(slot);
                self.hints[hint].store(hit + 1, Relaxed);
                self.retire_all(retire);
                return Ok(Some(self.handle_for(hit)));
            }
            if self.config.merge {
                // Regions the new one covers are superseded.
                for (victim, r) in idx.overlapping(&target, false) {
                    if target.contains(&r) {
                        if self.kill(&mut idx, victim, r, false) {
                            retire.push(victim);
                        }
                        add(&self.counters.merges, 1);
                    }
                }
            }
            let fits = target.len() <= self.config.max_bytes;
            while fits
                && (idx.len() + 1 > self.config.max_regions
                    || idx.live_bytes + target.len() > self.config.max_bytes)
            {
                let v = self.evict_lru(&mut idx, 1);
                if v.is_empty() {
                    break;
                }
                retire.extend(v);
            }
            let over = idx.len() + 1 > self.config.max_regions
                || idx.live_bytes + target.len() > self.config.max_bytes;
            match self.own_deferred() {
                // Our own deferred references may be what keeps regions
                // from being evicted: give them back (outside the lock)
                // and try once more.
                Some(d) if over && fits && !purged => {
                    drop(idx);
                    self.purge_deferred(d, true);
                    purged = true;
                    idx = self.write_index();
                }
                _ => break,
            }
        }
        let over = idx.len() + 1 > self.config.max_regions
            || idx.live_bytes + target.len() > self.config.max_bytes;
        if over {
            drop(idx);
            self.unreserve(slot);
            self.retire_all(retire);
            add(&self.counters.uncached, 1);
            let keys = self.registrar.keys(&region);
            return Ok(Some(RawHandle {
                slot: NO_SLOT,
                range: target,
                keys,
                uncached: Some(region),
            }));
        }
        let keys = self.registrar.keys(&region);
        *s.region.lock().unwrap_or_else(|e| e.into_inner()) = Some(region);
        s.start.store(target.start(), Relaxed);
        s.end.store(target.end(), Relaxed);
        s.access.store(target_access.bits(), Relaxed);
        s.has_keys.store(keys.is_some() as u32, Relaxed);
        let k = keys.unwrap_or(Keys {
            lkey: LKey(0),
            rkey: RKey(0),
        });
        s.lkey.store(k.lkey.0, Relaxed);
        s.rkey.store(k.rkey.0, Relaxed);
        let stamp = self.clock.load(Relaxed);
        s.last_use.store(stamp, Relaxed);
        // Release: publishes the fields above to hitters, who load `state`
        // with Acquire. One reference is ours.
        s.state.store((inc << INC_SHIFT) | LIVE | 1, Release);
        idx.insert(slot, target, stamp);
        let regions = idx.len() as u64;
        drop(idx);
        self.counters.peak_regions.fetch_max(regions, Relaxed);
        self.hints[hint].store(slot + 1, Relaxed);
        self.retire_all(retire);
        Ok(Some(RawHandle {
            slot,
            range: target,
            keys,
            uncached: None,
        }))
    }

    /// Give back a reserved, never-published slot: stop watching it.
    fn unreserve(&self, slot: u32) {
        let s = self.slab.slot(slot);
        let cookie = s.cookie.swap(0, Relaxed);
        if let (Some(m), true) = (&self.monitor, cookie != 0) {
            let t = Instant::now();
            let _ = m.notifier.unregister(umn::Cookie(cookie));
            add(&self.counters.monitor_ns, t.elapsed().as_nanos() as u64);
        }
        self.slab.release(slot);
    }

    /// Apply pending invalidation events: drain the notifier in this
    /// (caller's) thread and kill the regions its cookies name. Regions
    /// reserved but not yet published are marked doomed, so their
    /// publisher drops them. Deregistration of idle victims happens here,
    /// after the lock is dropped; never on the monitor thread.
    #[cold]
    fn apply(&self, m: &Monitor) {
        let _one = m.drain.lock().unwrap_or_else(|e| e.into_inner());
        let mut cookies = Vec::new();
        let t = Instant::now();
        let drained = m
            .notifier
            .drain_with(|inv| cookies.push((inv.cookie.0, inv.range)));
        add(&self.counters.monitor_ns, t.elapsed().as_nanos() as u64);
        match drained {
            Ok((_, generation)) => m.seen.store(generation.0, Relaxed),
            Err(umn::Error::Forked) => {
                drop(_one);
                self.on_fork();
                return;
            }
            Err(e) => {
                // Without a working source nothing cached can be trusted.
                log::error!("draining invalidation events failed ({e}); flushing the cache");
                drop(_one);
                self.on_fork();
                return;
            }
        }
        if cookies.is_empty() {
            return;
        }
        let mut retire = Vec::new();
        let mut seen = Vec::new();
        {
            let mut idx = self.write_index();
            for (c, hint) in cookies {
                let Some(s) = self.slab.get(c as u32) else {
                    continue;
                };
                let st = s.state.load(Acquire);
                if st & LIVE != 0 && st >> INC_SHIFT == c >> 32 {
                    add(&self.counters.monitor_invalidations, 1);
                    let r = s.range();
                    if self.observer.get().is_some() {
                        seen.push(hint.and_then(|h| h.intersection(&r)).unwrap_or(r));
                    }
                    if self.kill(&mut idx, c as u32, r, false) {
                        add(&self.counters.invalidations_idle, 1);
                        retire.push(c as u32);
                    } else {
                        add(&self.counters.invalidations_in_use, 1);
                    }
                } else if s.cookie.load(Acquire) == c {
                    // Reserved, not yet published: its publisher checks
                    // `doomed` under this same lock.
                    s.doomed.store(true, Release);
                }
            }
        }
        self.observe(seen);
        self.retire_all(retire);
    }

    /// Tell the observer, if any, of invalidated ranges (no index lock
    /// held).
    fn observe(&self, ranges: Vec<AddrRange>) {
        if let Some(f) = self.observer.get() {
            for r in ranges {
                f(r);
            }
        }
    }

    /// This process is a fork child: the notifier no longer watches it and
    /// the registrations belong to the parent (an ibverbs MR deregistered
    /// through the inherited context would vanish from the parent too).
    /// Forget every region without deregistering it, and cache nothing
    /// from now on.
    #[cold]
    fn on_fork(&self) {
        if self.forked.swap(true, Relaxed) {
            return;
        }
        log::info!("fork child: regcache forgets its regions and caches nothing");
        let mut retire = Vec::new();
        {
            let mut idx = self.write_index();
            let all: Vec<(u32, AddrRange)> = idx
                .by_start
                .iter()
                .filter_map(|(&(s, slot), &e)| Some((slot, AddrRange::new(s, e).ok()?)))
                .collect();
            for (slot, r) in all {
                if self.kill(&mut idx, slot, r, false) {
                    retire.push(slot);
                }
            }
        }
        self.retire_all(retire);
    }

    /// Clear LIVE and remove from the index. Returns `true` when the caller
    /// now owns deregistration (no references were held). With
    /// `only_idle`, a region with references is left alone and `false`
    /// returned without change.
    fn kill(&self, idx: &mut Index, slot: u32, r: AddrRange, only_idle: bool) -> bool {
        let s = self.slab.slot(slot);
        let mut st = s.state.load(Acquire);
        loop {
            if st & LIVE == 0 || (only_idle && refs(st) != 0) {
                return false;
            }
            match s.state.compare_exchange(st, st & !LIVE, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => st = now,
            }
        }
        idx.remove(slot, r);
        if refs(st) != 0 {
            // Possibly held only by a deferred entry: make every thread
            // purge killed entries on its next call.
            self.epoch.fetch_add(1, Relaxed);
        }
        refs(st) == 0
    }

    /// `true` when this thread has deferred references to give back.
    fn own_deferred(&self) -> Option<&Deferred> {
        let d = self.deferred.get(thread_stripe())?;
        d.slots.iter().any(|e| e.load(Relaxed) != 0).then_some(d)
    }

    /// Evict up to `n` least recently used idle regions; returns their
    /// slots for [`Cache::retire_all`] once the lock is dropped.
    fn evict_lru(&self, idx: &mut Index, n: usize) -> Vec<u32> {
        let mut victims = Vec::new();
        // Regions found in use are set aside for this pass and put back
        // under the stamp they were recorded with: their release stamps a
        // later time, so recorded ≤ actual still holds, and a region held
        // only by a deferred reference keeps its true LRU position.
        let mut in_use = Vec::new();
        let mut examined = 0;
        let limit = idx.lru.len() * 2 + 1;
        while victims.len() < n && examined < limit {
            let Some((&(recorded, slot), _)) = idx.lru.first_key_value() else {
                break;
            };
            examined += 1;
            let s = self.slab.slot(slot);
            if refs(s.state.load(Acquire)) != 0 {
                idx.lru.remove(&(recorded, slot));
                in_use.push((recorded, slot));
                continue;
            }
            let actual = s.last_use.load(Relaxed);
            if actual != recorded {
                idx.rekey(slot, recorded, actual);
                continue;
            }
            let r = s.range();
            if self.kill(idx, slot, r, true) {
                add(&self.counters.evictions, 1);
                victims.push(slot);
            } else if idx.lru_key.contains_key(&slot) {
                // Taken by a hit between the checks: treat as in use.
                idx.lru.remove(&(recorded, slot));
                in_use.push((recorded, slot));
            }
        }
        for (recorded, slot) in in_use {
            idx.lru.insert((recorded, slot), ());
        }
        victims
    }

    /// Invalidate every cached region overlapping `range`: they leave the
    /// index at once (no later get can hit them); idle ones are
    /// deregistered now, in-use ones on their last release. Returns how
    /// many regions were invalidated.
    ///
    /// This is what the cache's invalidation source calls for an unmapped
    /// range, and what an MPI library with its own memory hooks calls.
    /// It deregisters on the calling thread, so it must not be called from
    /// inside a memory hook or monitor thread (see DESIGN.md).
    pub fn invalidate(&self, range: AddrRange) -> usize {
        let mut retire = Vec::new();
        let mut seen = Vec::new();
        let mut n = 0;
        {
            let mut idx = self.write_index();
            for (slot, r) in idx.overlapping(&range, false) {
                n += 1;
                if self.observer.get().is_some() {
                    seen.extend(range.intersection(&r));
                }
                if self.kill(&mut idx, slot, r, false) {
                    add(&self.counters.invalidations_idle, 1);
                    retire.push(slot);
                } else {
                    add(&self.counters.invalidations_in_use, 1);
                }
            }
        }
        self.observe(seen);
        self.retire_all(retire);
        n
    }

    /// Evict every idle cached region (e.g. before a fork or at a phase
    /// change). Returns how many were evicted.
    pub fn flush(&self) -> usize {
        let victims = {
            let mut idx = self.write_index();
            let n = idx.len();
            self.evict_lru(&mut idx, n)
        };
        let n = victims.len();
        self.retire_all(victims);
        n
    }

    fn retire_all(&self, slots: Vec<u32>) {
        for slot in slots {
            self.retire(slot);
        }
    }

    /// Deregister a slot's region and recycle the slot. Called exactly once
    /// per region, by its deregistration owner, never with a lock held.
    fn retire(&self, slot: u32) {
        let s = self.slab.slot(slot);
        let region = s.region.lock().unwrap_or_else(|e| e.into_inner()).take();
        let cookie = s.cookie.swap(0, Relaxed);
        if let (Some(m), true) = (&self.monitor, cookie != 0) {
            if !self.forked.load(Relaxed) {
                let t = Instant::now();
                let _ = m.notifier.unregister(umn::Cookie(cookie));
                add(&self.counters.monitor_ns, t.elapsed().as_nanos() as u64);
            }
        }
        if let Some(region) = region {
            if self.forked.load(Relaxed) {
                // The parent's registration: forget it (see `on_fork`).
                std::mem::forget(region);
                self.counters
                    .bytes_registered
                    .fetch_sub(s.range().len(), Relaxed);
            } else {
                self.deregister(region, s.range());
            }
        }
        self.slab.release(slot);
    }

    fn register(&self, range: AddrRange, access: AccessFlags) -> Result<R::Region, RegistrarError> {
        let t = Instant::now();
        let r = self.registrar.register(range, access);
        add(&self.counters.registrar_ns, t.elapsed().as_nanos() as u64);
        match &r {
            Ok(_) => {
                add(&self.counters.registrations, 1);
                let now = self
                    .counters
                    .bytes_registered
                    .fetch_add(range.len(), Relaxed)
                    + range.len();
                self.counters.peak_bytes.fetch_max(now, Relaxed);
            }
            Err(e) => {
                add(&self.counters.registration_failures, 1);
                log::debug!("{} register {range} failed: {e}", self.registrar.name());
            }
        }
        r
    }

    fn deregister(&self, region: R::Region, range: AddrRange) {
        let t = Instant::now();
        let r = self.registrar.deregister(region);
        add(&self.counters.registrar_ns, t.elapsed().as_nanos() as u64);
        add(&self.counters.deregistrations, 1);
        self.counters
            .bytes_registered
            .fetch_sub(range.len(), Relaxed);
        if let Err(e) = r {
            add(&self.counters.deregistration_failures, 1);
            log::warn!("{} deregister {range} failed: {e}", self.registrar.name());
        }
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let hits = c.hits.sum();
        let misses = c.misses.load(Relaxed);
        Stats {
            gets: hits + misses,
            hits,
            misses,
            merges: c.merges.load(Relaxed),
            merge_fallbacks: c.merge_fallbacks.load(Relaxed),
            monitor: self.source,
            monitor_invalidations: c.monitor_invalidations.load(Relaxed),
            unwatched: c.unwatched.load(Relaxed),
            doomed_retries: c.doomed_retries.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            invalidations_idle: c.invalidations_idle.load(Relaxed),
            invalidations_in_use: c.invalidations_in_use.load(Relaxed),
            registrations: c.registrations.load(Relaxed),
            registration_failures: c.registration_failures.load(Relaxed),
            deregistrations: c.deregistrations.load(Relaxed),
            deregistration_failures: c.deregistration_failures.load(Relaxed),
            enomem_retries: c.enomem_retries.load(Relaxed),
            uncached: c.uncached.load(Relaxed),
            lost_races: c.lost_races.load(Relaxed),
            regions: self.read_index().len() as u64,
            peak_regions: c.peak_regions.load(Relaxed),
            bytes_registered: c.bytes_registered.load(Relaxed),
            peak_bytes: c.peak_bytes.load(Relaxed),
            registrar_ns: c.registrar_ns.load(Relaxed),
            monitor_ns: c.monitor_ns.load(Relaxed),
        }
    }

    /// The cached regions now, in address order (for diagnostics and
    /// tests).
    pub fn regions(&self) -> Vec<RegionInfo> {
        let idx = self.read_index();
        idx.by_start
            .keys()
            .map(|&(_, slot)| {
                let s = self.slab.slot(slot);
                RegionInfo {
                    range: s.range(),
                    access: AccessFlags::from_bits_retain(s.access.load(Relaxed)),
                    refs: refs(s.state.load(Acquire)) as u32,
                    keys: s.keys(),
                }
            })
            .collect()
    }
}

impl<R: Registrar> Drop for Cache<R> {
    /// Deregisters every region. Handles borrow the cache, so none is
    /// alive here; raw handles still out are leaked registrations, logged.
    fn drop(&mut self) {
        // Deferred references of every thread: we have exclusive access.
        for d in self.deferred.iter() {
            for e in &d.slots {
                let v = e.swap(0, Relaxed);
                if v != 0 {
                    self.drop_ref(v - 1);
                }
            }
        }
        let idx = std::mem::take(self.index.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (&(start, slot), &end) in &idx.by_start {
            let s = self.slab.slot(slot);
            let r = refs(s.state.load(Acquire));
            if r != 0 {
                log::warn!(
                    "cache dropped with {r} raw handle(s) on [{start:#x}, {end:#x}) still out"
                );
            }
            s.state.fetch_and(!LIVE, AcqRel);
            self.retire(slot);
        }
    }
}

// The slot table is shared: `Cache<R>` is Send + Sync when the registrar
// and its regions are; all shared mutation goes through atomics, the
// RwLock and per-slot Mutexes. These assertions keep that true.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cache<crate::PinRegistrar>>();
};
