//! Invalidation: events from the source, explicit invalidation, fork;
//! killing regions and retiring them.
//!
//! **Killing** a region clears LIVE in its state word and removes it from
//! the index, under the index's write lock: from then on no get returns it
//! (hits require LIVE, and the index is authoritative). **Retiring** it
//! deregisters the registration, stops watching its range and recycles the
//! slot; exactly one party retires a region, whoever saw the transition to
//! `!LIVE && refs == 0` (see `slot.rs`): the killer when no reference was
//! held, else the last release. Retiring happens with no lock held, because
//! `ibv_dereg_mr` is slow.
//!
//! **Events.** The invalidation source (umn) delivers `(cookie, range)`
//! events; a cookie is `(incarnation << 32) | slot`, so an event for a
//! region whose slot has since been recycled names a dead incarnation and
//! is ignored. Gets compare the source's generation word with the value
//! last drained (one load) and drain in the caller's thread when it moved:
//! the monitor never deregisters anything itself.
//!
//! **Per-region words.** The kernel device can also give every
//! registration a word of its own, bumped with the generation (same lock,
//! before the unmapping call returns). With them, a hit is validated with
//! its region's word alone — between the state load and the CAS that takes
//! the reference, so the word read is the one of the incarnation taken —
//! and the generation is compared only when a get misses, before it looks
//! in the index. Another thread's munmap of its own regions then moves the
//! generation without sending this thread's hits to the drain. A word
//! that moved sends the hit to the slow path, whose catching up kills the
//! region (the generation moved with the word, so it is never found
//! caught up while the region is LIVE). The wart: with every get hitting,
//! nobody drains, so the registrations of unmapped memory stay until some
//! get misses (any thread's); their regions are unreachable meanwhile. A region reserved by a
//! miss but not yet published is watched already; an event for it marks it
//! *doomed*, and its publisher, which checks under the same lock, drops it
//! and tries again.
//!
//! **Fork.** In a fork child the registrations belong to the parent
//! (mlock is not inherited; an MR's pages are the parent's) and the source
//! no longer watches this process: the cache forgets every region without
//! deregistering it and caches nothing from then on.

use super::Cache;
use super::index::Index;
use super::state::Killed;
use crate::stats::add;
use crate::{CacheError, MonitorKind, Registrar};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Instant;
use umn::AddrRange;

/// Bumped in every fork child (a `pthread_atfork` child handler, installed
/// when the first cache is built). A cache compares it with the value at
/// its creation on every get: in a child, the registrations belong to the
/// parent (mlock is not inherited; an MR's pages are the parent's), so the
/// cache forgets them and caches nothing, whatever the source.
pub(super) static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);
static ATFORK: std::sync::Once = std::sync::Once::new();

extern "C" fn fork_child() {
    // Async-signal-safe: one atomic add.
    FORK_EPOCH.fetch_add(1, Relaxed);
}

pub(super) fn install_atfork() {
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
pub(super) struct Monitor {
    pub(super) notifier: umn::Notifier,
    /// One-load view of the notifier's generation word.
    watch: umn::GenerationWatch,
    /// The generation as of the last complete drain: a get that sees
    /// another value applies events first.
    seen: AtomicU64,
    /// One drain at a time.
    drain: Mutex<()>,
    /// The source gives every registration its own word (the kernel
    /// device with `UMMUNOTIFY_FEATURE_REGION_WORDS`), and
    /// `REGCACHE_REGION_WORDS` is not `off`: hits validate with the
    /// region's word and only misses compare the generation.
    words: bool,
}

/// `REGCACHE_REGION_WORDS`: `on` (default) or `off`. Off makes the cache
/// ignore the device's per-registration words and validate every get with
/// the process-wide generation (the behaviour before the words; for
/// measuring one against the other, or a device whose words misbehave).
/// A malformed value is logged and the default used.
fn region_words_wanted() -> bool {
    match std::env::var("REGCACHE_REGION_WORDS").as_deref() {
        Err(_) | Ok("on" | "1" | "yes") => true,
        Ok("off" | "0" | "no") => false,
        Ok(v) => {
            log::error!(
                "regcache: REGCACHE_REGION_WORDS={v:?} is not valid: expected on or off; using on"
            );
            true
        }
    }
}

impl Monitor {
    /// The generation moved since the last complete drain (two loads).
    #[inline(always)]
    fn moved(&self) -> bool {
        self.watch.load().0 != self.seen.load(Acquire)
    }

    /// Open the source `kind` names: `None` for [`MonitorKind::None`], with
    /// the source actually in force (what `Auto` chose).
    pub(super) fn open(kind: MonitorKind) -> Result<(Option<Self>, MonitorKind), umn::Error> {
        let source = match kind {
            MonitorKind::None => return Ok((None, MonitorKind::None)),
            MonitorKind::Auto => umn::Source::Auto,
            MonitorKind::Kernel => umn::Source::Kernel,
            MonitorKind::Uffd => umn::Source::Uffd,
            MonitorKind::Patch => umn::Source::Patch,
            MonitorKind::External => umn::Source::External,
        };
        let notifier = umn::Notifier::open(source)?;
        let active = match notifier.source() {
            umn::Source::Kernel => MonitorKind::Kernel,
            umn::Source::Uffd => MonitorKind::Uffd,
            umn::Source::Patch => MonitorKind::Patch,
            umn::Source::External => MonitorKind::External,
            _ => kind,
        };
        let watch = notifier.watch();
        let seen = AtomicU64::new(notifier.generation().0);
        let words = notifier
            .device_features()
            .is_some_and(|f| f & umn::abi::UMMUNOTIFY_FEATURE_REGION_WORDS != 0)
            && region_words_wanted();
        Ok((
            Some(Self {
                notifier,
                watch,
                seen,
                drain: Mutex::new(()),
                words,
            }),
            active,
        ))
    }
}

impl<R: Registrar> Cache<R> {
    /// `true` when a get must catch up before looking anything up: this
    /// process forked, or — unless the source has per-region words — the
    /// source's generation moved since the last drain. One load each when
    /// nothing changed; no side effect.
    ///
    /// With per-region words a get does not ask the generation here: a
    /// hit validates with its region's own word ([`Cache::fresh`]), so an
    /// invalidation of *other* regions (another thread's munmap) no longer
    /// sends every thread's next get to the drain; a get that misses
    /// catches up before it looks in the index ([`Cache::settle`]).
    #[inline(always)]
    pub(super) fn behind(&self) -> bool {
        FORK_EPOCH.load(Relaxed) != self.fork_epoch
            || self.monitor.as_ref().is_some_and(|m| !m.words && m.moved())
    }

    /// `true` when hits are validated with per-region words (the kernel
    /// device granted `UMMUNOTIFY_FEATURE_REGION_WORDS` and
    /// `REGCACHE_REGION_WORDS` is not `off`): then an invalidation of
    /// other regions costs a thread's hits nothing. `false` with every
    /// other source, an older device, or no source.
    pub fn region_words(&self) -> bool {
        self.monitor.as_ref().is_some_and(|m| m.words)
    }

    /// A hit on `slot` may be returned as far as invalidation goes: its
    /// own word says no event hit it (without per-region words there is
    /// no word, and `behind` checked the generation already). A `false`
    /// sends the get to the slow path, which catches up and so kills the
    /// region if it was invalidated.
    #[inline(always)]
    pub(super) fn fresh(&self, slot: &super::slot::Slot<R>) -> bool {
        slot.word_fresh()
    }

    /// Before a lookup in the index on the slow path: with per-region
    /// words `behind` did not look at the generation, so catch up here
    /// (the index is authoritative only after every event counted by the
    /// generation a get saw has been applied). Without words, nothing to
    /// do: `behind` did it.
    #[inline(always)]
    pub(super) fn settle(&self) {
        if let Some(m) = &self.monitor {
            if m.words && m.moved() {
                self.apply(m);
            }
        }
    }

    /// Point a reserved slot at the source's word for `cookie` (null when
    /// the cache does not use words; `NO_WORD`, which fails every hit,
    /// should the source give none): called once the source watches the
    /// slot's range, before the slot is published.
    pub(super) fn watch_word(&self, slot: &super::slot::Slot<R>, cookie: u64) {
        let w = match &self.monitor {
            Some(m) if m.words => m
                .notifier
                .region_word(umn::Cookie(cookie))
                .map_or(std::ptr::from_ref(&super::slot::NO_WORD), |w| w.as_ptr())
                .cast_mut(),
            _ => std::ptr::null_mut(),
        };
        slot.word.store(w, Relaxed);
    }

    /// Catch up with a fork and with pending invalidation events. Events
    /// are applied before any lookup that saw the generation move.
    #[cold]
    pub(super) fn catch_up(&self) {
        if FORK_EPOCH.load(Relaxed) != self.fork_epoch {
            self.on_fork();
        }
        if let Some(m) = &self.monitor {
            if m.watch.load().0 != m.seen.load(Acquire) {
                self.apply(m);
            }
        }
    }

    /// The host reports that `range` was unmapped (or no longer holds the
    /// same pages): for an MPI library with its own memory hooks.
    ///
    /// With a source open this only records the range: it takes no lock,
    /// allocates nothing and may be called from inside a memory hook; the
    /// regions are invalidated by the next get on any thread. With no
    /// source ([`MonitorKind::None`]) it invalidates at once, like
    /// [`Cache::invalidate`], and must not be called from a hook. On the
    /// kernel device it does nothing: the device sees every change itself.
    ///
    /// # Errors
    /// [`CacheError::Monitor`] when the source refuses the range (a fork
    /// child).
    pub fn notify_unmapped(&self, range: AddrRange) -> Result<(), CacheError> {
        match &self.monitor {
            // The kernel device sees every change to the address space
            // itself (MMU notifier): a host's report adds nothing, and an
            // MPI library's memory hooks call this whatever the source.
            Some(_) if self.source == MonitorKind::Kernel => Ok(()),
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
    /// tracer records these as the `U` records of docs/TRACES.md's trace
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

    /// Apply pending invalidation events: drain the notifier in this
    /// (caller's) thread and kill the regions its cookies name. Regions
    /// reserved but not yet published are marked doomed, so their
    /// publisher drops them. Deregistration of idle victims happens here,
    /// after the lock is dropped; never on the monitor thread.
    #[cold]
    pub(super) fn apply(&self, m: &Monitor) {
        let _one = m.drain.lock().unwrap_or_else(|e| e.into_inner());
        let mut cookies = Vec::new();
        let t = Instant::now();
        let drained = m
            .notifier
            .drain_with(|inv| cookies.push((inv.cookie.0, inv.range)));
        add(&self.counters.monitor_ns, t.elapsed().as_nanos() as u64);
        let generation = match drained {
            Ok((_, generation)) => generation.0,
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
        };
        if cookies.is_empty() {
            m.seen.store(generation, Release);
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
                if st.is_live() && u64::from(st.incarnation()) == c >> 32 {
                    add(&self.counters.monitor_invalidations, 1);
                    let r = s.range();
                    if self.observer.get().is_some() {
                        seen.push(hint.and_then(|h| h.intersection(&r)).unwrap_or(r));
                    }
                    self.learn_boundaries(c as u32, r, hint);
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
        // Only now may a get skip catching up: were `seen` stored before the
        // kills, a get on another thread could find the generation caught
        // up, take a hit on a region this drain is about to kill, and hand
        // out a registration of unmapped memory. (Found by the verify-mode
        // soak on the kernel device: 1 stale hit in 66 070.) Release pairs
        // with `behind`'s Acquire: who sees this value sees LIVE cleared.
        m.seen.store(generation, Release);
        self.observe(seen);
        // The drain lock goes before deregistering: a caller's registrar
        // callback may call into this cache (a get catches up under it).
        drop(_one);
        self.retire_all(retire);
    }

    /// Adaptive merging learns from `slot`'s `region`, killed because
    /// `dead` was unmapped, or an unknown part of it when `None` (see
    /// `policy.rs`); under the index's write lock.
    fn learn_boundaries(&self, slot: u32, region: AddrRange, dead: Option<AddrRange>) {
        if self.config.merge != crate::Merge::Adaptive {
            return;
        }
        let page = 1u64 << self.page_shift;
        match dead.map(|d| d.align_out(page)) {
            Some(Ok(dead)) => {
                self.boundaries.forget(slot);
                self.boundaries.learn(region, dead);
                self.boundaries
                    .died(dead.intersection(&region).unwrap_or(region));
            }
            _ => {
                self.boundaries.learn_seams(slot);
                self.boundaries.died(region);
            }
        }
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
    pub(super) fn on_fork(&self) {
        if self.forked.swap(true, Relaxed) {
            return;
        }
        log::info!("fork child: regcache forgets its regions and caches nothing");
        let mut retire = Vec::new();
        {
            let mut idx = self.write_index();
            for (slot, r) in idx.all() {
                if self.kill(&mut idx, slot, r, false) {
                    retire.push(slot);
                }
            }
        }
        self.retire_all(retire);
    }

    /// Clear LIVE and remove from the index. Returns `true` when the caller
    /// now owns deregistration (no references were held). With
    /// `only_idle` (eviction), a region with references is left alone and
    /// `false` returned without change.
    pub(super) fn kill(&self, idx: &mut Index, slot: u32, r: AddrRange, only_idle: bool) -> bool {
        let killed = self.slab.slot(slot).state.kill(only_idle);
        if killed == Killed::No {
            return false;
        }
        idx.remove(slot, r);
        if killed == Killed::InUse {
            // Possibly held only by a deferred entry: make every thread
            // purge killed entries on its next call.
            self.deferred.killed_in_use();
        }
        killed == Killed::Idle
    }
    /// Invalidate every cached region overlapping `range`: they leave the
    /// index at once (no later get can hit them); idle ones are
    /// deregistered now, in-use ones on their last release. Returns how
    /// many regions were invalidated.
    ///
    /// This is what the cache's invalidation source calls for an unmapped
    /// range, and what an MPI library with its own memory hooks calls.
    /// It deregisters on the calling thread, so it must not be called from
    /// inside a memory hook or monitor thread (see docs/DESIGN.md).
    pub fn invalidate(&self, range: AddrRange) -> usize {
        let mut retire = Vec::new();
        let mut seen = Vec::new();
        let mut n = 0;
        {
            let mut idx = self.write_index();
            for (slot, r) in idx.overlapping(&range, false) {
                n += 1;
                self.learn_boundaries(slot, r, Some(range));
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

    /// Evict up to `n` idle regions, least recently used first, and
    /// deregister them (on this thread). When nothing is idle but this
    /// thread's deferred references hold regions, those are given back and
    /// the eviction tried once more. Returns how many were evicted: Open
    /// MPI's `rcache_evict` (one region, "did you free anything?"), or a
    /// caller that ran out of NIC resources outside the cache.
    pub fn evict(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut victims = {
            let mut idx = self.write_index();
            self.evict_lru(&mut idx, n)
        };
        if victims.is_empty() {
            if let Some(d) = self.own_deferred() {
                self.purge_deferred(d, true);
                let mut idx = self.write_index();
                victims = self.evict_lru(&mut idx, n);
            }
        }
        let k = victims.len();
        self.retire_all(victims);
        k
    }

    pub(super) fn retire_all(&self, slots: Vec<u32>) {
        for slot in slots {
            self.retire(slot);
        }
    }

    /// Deregister a slot's region and recycle the slot. Called exactly once
    /// per region, by its deregistration owner, never with a lock held.
    /// Out of line: the release path calls it (on a killed region's last
    /// reference), and inlined it would cost that path spills on every
    /// release.
    #[cold]
    #[inline(never)]
    pub(super) fn retire(&self, slot: u32) {
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

    /// Deregister `region` (registered as `range`): counted, timed, and a
    /// failure logged, never a panic.
    pub(super) fn deregister(&self, region: R::Region, range: AddrRange) {
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
}
