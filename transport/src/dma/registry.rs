//! The registry: one shared segment per job that maps keys to bindings.
//!
//! ## The registry
//!
//! One shared segment per job (`/dev/shm/<name>`, created `O_EXCL` mode
//! 0600) holds a [`RegistryHeader`] and [`NSLOTS`] [`BindingSlot`]s (the
//! records are in [`super::layout`]). A receiver *binds* a key by filling
//! a free slot under the registry lock ([`super::receiver`]); a sender
//! finds the `BOUND` slot with the key ([`Registry::find_slot`]) and
//! validates its header ([`Registry::view_slot`]) before it trusts a
//! byte of it ([`super::send`]).
//!
//! Bindings of dead receivers are reaped by the next bind.
//!
//! ## The registry lock
//!
//! A 64-bit word in the header: 0 when free, else the holder's
//! [`ProcId::word`] — its pid *and* its start time (see `proc_id`). It
//! serialises bind and unbind only (sends never take it). Taking it is a
//! CAS 0 → ours (Acquire); releasing it a store of 0 (Release), so what one
//! holder wrote to the slots is seen by the next. A holder that died inside
//! bind or unbind never releases it: every 1024th failed attempt, a waiter
//! asks whether the process the word names is alive and, if not, steals
//! the lock with a CAS of that exact word back to 0 (then takes it as
//! usual). Both halves of the word matter:
//!
//! - the start time makes a dead holder whose pid now names a live,
//!   unrelated process count as dead (before layout version 3 the word was
//!   the pid alone, and such a lock was never stolen: every bind and
//!   unbind of the job hung);
//! - the CAS compares the whole word, so a waiter that judged a holder
//!   dead cannot clear the lock of a *new* holder that got the same pid
//!   (its start time differs): no ABA.
//!
//! A steal is counted ([`DmaStats::lock_steals`]) and logged: it means a
//! process died in the middle of bind or unbind. What it had half written
//! is harmless: bind publishes a slot with its last store (`state :=
//! BOUND`), and a slot left `UNBINDING` by a dead receiver is reaped.
//!
//! ## Validation and cutting off
//!
//! Everything in the registry can be scribbled on by any process that maps
//! it. The sender never trusts a slot: a failed check marks the binding
//! `CUT_OFF` with a [`CutReason`] ([`Registry::cut_off`]), every later send
//! to it fails with [`Error::CutOff`], and the receiver learns it on its
//! next receive and may rebind. The receiver never trusts a descriptor: it
//! compares each used descriptor with its private copy, bounds `used_len`
//! by its own capacity, repairs the descriptor from the private copy and
//! reports [`Error::CorruptDescriptor`]; a sender pid that published an
//! impossible length is banned from the binding. The defence is against
//! garbage (bugs, stray writes), not against a same-user adversary, who
//! could `ptrace` the receiver anyway.
//!
//! ## Announced sends
//!
//! A send announces itself on the slot before it re-checks the binding
//! ([`InflightGuard`]): our pid into a free entry of the slot's `senders`
//! table (or, when all [`MAX_SENDERS`](super::MAX_SENDERS) are taken,
//! `inflight += 1`). With unbind's `state := UNBINDING; wait until no live
//! sender is announced` ([`sends_in_flight`]) that is a Dekker pair, all
//! SeqCst. A sender that dies mid-send leaves its pid behind, which unbind
//! and the reaper skip once the pid is gone; only a crash of a sender
//! counted in `inflight` (the overflow) keeps unbind waiting for
//! [`Config::unbind_wait`].

use super::config::Config;
use super::layout::{
    BOUND, BindingSlot, CUT_OFF, CutReason, FREE, MAX_DESCS, MAX_RANGES, MAX_SECTIONS, NO_RANGE,
    NSLOTS, REG_MAGIC, REG_VERSION, REGISTRY_BYTES, RegistryHeader, SlotIndex, read_pairs,
    slot_check, slot_key,
};
use super::proc_id::ProcId;
pub(super) use super::proc_id::pid_alive;
use super::send::BindingCache;
use crate::Error;
use crate::key::DmaKey;
use crate::shm::Segment;
use crate::sync::{AtomicU32, Ordering};
use std::collections::HashSet;
use std::sync::atomic::AtomicU64 as LocalU64;
use std::sync::{Arc, Mutex};
use umn::AddrRange;

/// Declares [`DmaStats`] and its live counterpart `LocalStats` from one
/// list of counters, so the two cannot drift apart.
macro_rules! dma_stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Process-local counters of a [`Registry`] handle.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct DmaStats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        /// The live counters behind [`DmaStats`] (process-local std
        /// atomics, not shared memory).
        #[derive(Debug, Default)]
        pub(super) struct LocalStats {
            $(pub(super) $name: LocalU64,)*
        }

        impl LocalStats {
            fn snapshot(&self) -> DmaStats {
                DmaStats {
                    $($name: self.$name.load(std::sync::atomic::Ordering::Relaxed),)*
                }
            }
        }
    };
}

dma_stats! {
    /// Sends completed with `process_vm_writev`.
    cma_sends,
    /// Sends completed through a bounce segment.
    bounce_sends,
    /// `process_vm_writev` calls refused with `EPERM`.
    cma_refusals,
    /// Payload bytes sent.
    bytes_sent,
    /// Sends that found no free descriptor on the first attempt.
    no_free_first_try,
    /// Bindings this process cut off after failed validation.
    cutoffs,
    /// Sends whose receiver copied at least one chunk.
    assisted_sends,
    /// Chunks this process copied as a receiver, for senders
    /// (`process_vm_readv`).
    assist_chunks,
    /// Registry locks this process stole from a holder that died inside
    /// bind or unbind (module docs, "The registry lock").
    lock_steals,
    /// Descriptors this process took over from a sender that died after
    /// claiming them (`send`, "Claims of dead senders").
    claims_taken_over,
    /// Sends that took the eager path (`send`, "Eager sends"); also
    /// counted in `bounce_sends`.
    eager_sends,
    /// Bounce sends this handle pipelined (`send`, "Pipelined bounce").
    piped_sends,
    /// Slot headers this handle validated: once per binding generation a
    /// sender sends to while its cache holds (`send`, "The sender's
    /// cache"), again after any change of the slot's first cache line.
    binding_validations,
}

/// Add `n` to a counter.
pub(super) fn bump(a: &LocalU64, n: u64) {
    a.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) seg: Segment,
    pub(super) name: String,
    pub(super) me: u32,
    /// This process as pid and start time: what the lock word and our
    /// descriptor claims name.
    pub(super) id: ProcId,
    pub(super) config: Config,
    pub(super) stats: LocalStats,
    /// Per slot: what we validated of the binding generation we last
    /// sent to (`send`, "The sender's cache").
    pub(super) cache: Mutex<Vec<Option<Arc<BindingCache>>>>,
    pub(super) cma_refused: Mutex<HashSet<u32>>,
}

/// A handle on a keyed-DMA registry segment. `Send + Sync`; clone freely.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(super) inner: Arc<Inner>,
}

/// A send announced on a slot (module docs, "Announced sends"); withdrawn
/// on drop.
pub(super) enum InflightGuard<'a> {
    /// Our pid in `senders[i]`.
    Entry(&'a AtomicU32),
    /// Counted in `inflight` (every entry was taken).
    Counted(&'a BindingSlot),
}

impl<'a> InflightGuard<'a> {
    pub(super) fn enter(s: &'a BindingSlot, me: u32) -> Self {
        for e in &s.senders {
            if e.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                return InflightGuard::Entry(e);
            }
        }
        s.inflight.fetch_add(1, Ordering::SeqCst);
        InflightGuard::Counted(s)
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        match self {
            InflightGuard::Entry(e) => e.store(0, Ordering::SeqCst),
            InflightGuard::Counted(s) => {
                s.inflight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Whether a send may still be in flight on `s`: a counted one, or an
/// announced pid that is alive. Entries of dead senders are cleared.
pub(super) fn sends_in_flight(s: &BindingSlot) -> bool {
    if s.inflight.load(Ordering::SeqCst) != 0 {
        return true;
    }
    let mut busy = false;
    for e in &s.senders {
        let p = e.load(Ordering::SeqCst);
        if p != 0 {
            if pid_alive(p) {
                busy = true;
            } else {
                let _ = e.compare_exchange(p, 0, Ordering::SeqCst, Ordering::Relaxed);
            }
        }
    }
    busy
}

/// A validated view of a slot header, copied out of shared memory.
#[derive(Debug)]
pub(super) struct SlotView {
    pub(super) pid: u32,
    pub(super) gen_: u32,
    pub(super) ndesc: usize,
    ranges: [AddrRange; MAX_RANGES],
    nranges: usize,
    pub(super) bounce_len: u64,
}

impl SlotView {
    pub(super) fn ranges(&self) -> &[AddrRange] {
        &self.ranges[..self.nranges]
    }
}

/// Registry lock guard (unlocks on drop).
pub(super) struct RegistryLock<'a>(&'a RegistryHeader);

impl Drop for RegistryLock<'_> {
    fn drop(&mut self) {
        self.0.lock.store(0, Ordering::Release);
    }
}

impl Registry {
    /// Create the registry `/dev/shm/<name>` (mode 0600), configured from
    /// the environment ([`Config::from_env`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed `REGCACHE_TRANSPORT_*` variable;
    /// those of [`Segment::create`] (e.g. [`Error::Open`] with `EEXIST`).
    pub fn create(name: &str) -> Result<Self, Error> {
        Self::create_with(name, Config::from_env()?)
    }

    /// [`Self::create`] with an explicit [`Config`] (the environment is
    /// not read).
    ///
    /// # Errors
    /// Those of [`Segment::create`].
    pub fn create_with(name: &str, config: Config) -> Result<Self, Error> {
        let seg = Segment::create(name, REGISTRY_BYTES)?;
        let h = seg.record::<RegistryHeader>(0)?;
        h.version.store(REG_VERSION, Ordering::Relaxed);
        h.nslots.store(NSLOTS as u32, Ordering::Relaxed);
        h.max_descs.store(MAX_DESCS as u32, Ordering::Relaxed);
        h.max_sections.store(MAX_SECTIONS as u32, Ordering::Relaxed);
        h.magic.store(REG_MAGIC, Ordering::Release);
        Ok(Self::wrap(seg, name, config))
    }

    /// Open an existing registry, configured from the environment
    /// ([`Config::from_env`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a malformed `REGCACHE_TRANSPORT_*` variable;
    /// those of [`Segment::open`]; [`Error::BadRegistry`] when the header
    /// does not match this build's layout.
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::open_with(name, Config::from_env()?)
    }

    /// [`Self::open`] with an explicit [`Config`] (the environment is not
    /// read).
    ///
    /// # Errors
    /// Those of [`Segment::open`]; [`Error::BadRegistry`].
    pub fn open_with(name: &str, config: Config) -> Result<Self, Error> {
        let seg = Segment::open(name)?;
        if seg.len() < REGISTRY_BYTES {
            return Err(Error::SegmentTooSmall);
        }
        let h = seg.record::<RegistryHeader>(0)?;
        let magic = h.magic.load(Ordering::Acquire);
        let version = h.version.load(Ordering::Relaxed);
        if magic != REG_MAGIC
            || version != REG_VERSION
            || h.nslots.load(Ordering::Relaxed) != NSLOTS as u32
            || h.max_descs.load(Ordering::Relaxed) != MAX_DESCS as u32
            || h.max_sections.load(Ordering::Relaxed) != MAX_SECTIONS as u32
        {
            return Err(Error::BadRegistry { magic, version });
        }
        Ok(Self::wrap(seg, name, config))
    }

    /// Open, or create when absent (racing creators: one wins `O_EXCL`,
    /// the others open; a half-initialised header is waited for briefly).
    /// Configured from the environment ([`Config::from_env`]).
    ///
    /// # Errors
    /// As [`Self::create`] and [`Self::open`].
    pub fn open_or_create(name: &str) -> Result<Self, Error> {
        let config = Config::from_env()?;
        match Self::create_with(name, config.clone()) {
            Ok(r) => Ok(r),
            Err(Error::Open(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                let mut last = None;
                for _ in 0..1000 {
                    match Self::open_with(name, config.clone()) {
                        Ok(r) => return Ok(r),
                        Err(e @ (Error::BadRegistry { .. } | Error::SegmentTooSmall)) => {
                            last = Some(e);
                            std::thread::yield_now();
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(last.unwrap_or(Error::SegmentTooSmall))
            }
            Err(e) => Err(e),
        }
    }

    /// Remove the registry file (mappings stay valid).
    ///
    /// # Errors
    /// As [`Segment::unlink`].
    pub fn unlink(name: &str) -> Result<(), Error> {
        Segment::unlink(name)
    }

    fn wrap(seg: Segment, name: &str, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                seg,
                name: name.to_owned(),
                me: std::process::id(),
                id: ProcId::me(),
                config,
                stats: LocalStats::default(),
                cache: Mutex::new(vec![None; NSLOTS]),
                cma_refused: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// This handle's counters.
    pub fn stats(&self) -> DmaStats {
        self.inner.stats.snapshot()
    }

    /// The name of the bounce segment of generation `gen_` of slot `i`.
    pub(super) fn bounce_name(&self, i: SlotIndex, gen_: u32) -> String {
        format!("{}-b{}-{}", self.inner.name, i, gen_)
    }

    fn header(&self) -> &RegistryHeader {
        // SAFETY: create/open checked the mapping is at least
        // REGISTRY_BYTES long; the base is page-aligned; the header is a
        // `SharedRecord` (atomics only, any bit pattern valid); the
        // mapping lives as long as `self.inner`.
        unsafe { &*self.inner.seg.as_ptr().cast::<RegistryHeader>() }
    }

    pub(super) fn slot(&self, i: SlotIndex) -> &BindingSlot {
        // SAFETY: `i.offset() + size_of::<BindingSlot>() <= REGISTRY_BYTES`
        // as `i < NSLOTS` (a `SlotIndex`), and the mapping is at least
        // REGISTRY_BYTES long (checked at open/create); the offset is a
        // multiple of 64 from a page-aligned base; a `SharedRecord`; the
        // mapping outlives the borrow of `self`.
        unsafe {
            &*self
                .inner
                .seg
                .as_ptr()
                .add(i.offset())
                .cast::<BindingSlot>()
        }
    }

    /// The raw slot table, for tests that play a hostile peer.
    #[doc(hidden)]
    pub fn slot_bytes(&self, key: DmaKey) -> Option<(*mut u8, usize)> {
        SlotIndex::all().find_map(|i| {
            let s = self.slot(i);
            (s.state.load(Ordering::Acquire) != FREE && slot_key(s) == key).then(|| {
                // SAFETY: in bounds: i.offset() < REGISTRY_BYTES.
                let p = unsafe { self.inner.seg.as_ptr().add(i.offset()) };
                (p, std::mem::size_of::<BindingSlot>())
            })
        })
    }

    /// Tests only: write the registry lock record a holder with `pid`,
    /// started at `start_ticks` (`/proc/<pid>/stat` field 22), would leave
    /// behind had it died holding the lock.
    #[doc(hidden)]
    pub fn plant_lock_record(&self, pid: u32, start_ticks: u64) {
        self.header()
            .lock
            .store(ProcId::of(pid, start_ticks).word(), Ordering::Release);
    }

    /// Take the registry lock (module docs, "The registry lock").
    pub(super) fn lock(&self) -> RegistryLock<'_> {
        let h = self.header();
        let me = self.inner.id.word();
        let mut spins = 0u32;
        loop {
            match h
                .lock
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return RegistryLock(h),
                Err(holder) => {
                    spins = spins.wrapping_add(1);
                    if spins % 1024 == 0 {
                        self.steal_lock_if_dead(holder);
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Clear the lock word `holder` if the process it names is dead.
    /// Returns whether we cleared it.
    fn steal_lock_if_dead(&self, holder: u64) -> bool {
        if holder == 0 || ProcId::from_word(holder).is_alive() {
            return false;
        }
        // The whole word must still be there: a new holder with the same
        // pid has another start time, so its lock is never cleared here.
        let stolen = self
            .header()
            .lock
            .compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if stolen {
            bump(&self.inner.stats.lock_steals, 1);
            log::warn!(
                "regcache-transport: stole the registry lock of pid {}, which died holding it",
                ProcId::from_word(holder).pid
            );
        }
        stolen
    }

    /// Validate the header of the slot `s` bound to `key`: counts,
    /// checksum, ranges. Every failure is [`CutReason::Header`].
    pub(super) fn view_slot(&self, s: &BindingSlot, key: DmaKey) -> Result<SlotView, CutReason> {
        const BAD: CutReason = CutReason::Header;
        let pid = s.pid.load(Ordering::Relaxed);
        let gen_ = s.gen_.load(Ordering::Relaxed);
        let ndesc = s.ndesc.load(Ordering::Relaxed);
        let nranges = s.nranges.load(Ordering::Relaxed) as usize;
        let bounce_len = s.bounce_len.load(Ordering::Relaxed);
        if ndesc == 0 || ndesc as usize > MAX_DESCS || nranges == 0 || nranges > MAX_RANGES {
            return Err(BAD);
        }
        let rs = read_pairs::<MAX_RANGES>(&s.ranges[..nranges]);
        let rs = &rs[..nranges];
        if s.check.load(Ordering::Relaxed) != slot_check(pid, gen_, ndesc, key, bounce_len, rs) {
            return Err(BAD);
        }
        let mut ranges = [NO_RANGE; MAX_RANGES];
        for (out, &(a, l)) in ranges.iter_mut().zip(rs) {
            let r = AddrRange::from_start_len(a, l).map_err(|_| BAD)?;
            if r.is_empty() || r.start() == 0 {
                return Err(BAD);
            }
            *out = r;
        }
        Ok(SlotView {
            pid,
            gen_,
            ndesc: ndesc as usize,
            ranges,
            nranges,
            bounce_len,
        })
    }

    /// Cut the binding in `s` off for `reason` and ring its receiver.
    pub(super) fn cut_off(&self, s: &BindingSlot, reason: CutReason) {
        s.cut_reason.store(reason as u32, Ordering::Relaxed);
        if s.state
            .compare_exchange(BOUND, CUT_OFF, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            bump(&self.inner.stats.cutoffs, 1);
            log::warn!("regcache-transport: cut off a binding: {}", reason.as_str());
        }
        s.signal.arrived.notify();
    }

    /// The slot bound to `key` by another process.
    ///
    /// # Errors
    /// [`Error::CutOff`] when the only such binding is cut off,
    /// [`Error::NoReceiver`] when there is none.
    pub(super) fn find_slot(&self, key: DmaKey) -> Result<SlotIndex, Error> {
        let mut cut = None;
        for i in SlotIndex::all() {
            let s = self.slot(i);
            let st = s.state.load(Ordering::Acquire);
            if (st == BOUND || st == CUT_OFF)
                && slot_key(s) == key
                && s.pid.load(Ordering::Relaxed) != self.inner.me
            {
                if st == BOUND {
                    return Ok(i);
                }
                cut = Some(CutReason::words_of(s));
            }
        }
        match cut {
            Some(reason) => Err(Error::CutOff { key, reason }),
            None => Err(Error::NoReceiver(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steal decision on real processes: a live holder (this process,
    /// with its own start time) keeps the lock; its pid with another start
    /// time (a dead process whose pid we got) loses it, to a CAS of that
    /// exact word.
    #[test]
    fn the_lock_is_stolen_only_from_a_dead_holder() {
        let name = format!("rc-unit-{}-lock", std::process::id());
        let reg = Registry::create_with(&name, Config::default()).unwrap();
        Registry::unlink(&name).unwrap();
        let me = ProcId::me();
        let live = me.word();
        reg.header().lock.store(live, Ordering::Relaxed);
        assert!(!reg.steal_lock_if_dead(live));
        assert_eq!(reg.header().lock.load(Ordering::Relaxed), live);

        let earlier = ProcId::from_word(live ^ (1 << 40)).word();
        reg.header().lock.store(earlier, Ordering::Relaxed);
        // A stale observation of the word does not clear another one.
        assert!(!reg.steal_lock_if_dead(earlier ^ (1 << 41)));
        assert!(reg.steal_lock_if_dead(earlier));
        assert_eq!(reg.header().lock.load(Ordering::Relaxed), 0);
        assert_eq!(reg.stats().lock_steals, 1);
        // And the lock works afterwards.
        drop(reg.lock());
        assert_eq!(reg.header().lock.load(Ordering::Relaxed), 0);

        // Garbage a peer wrote names no live process: stolen, no panic.
        for junk in [u64::MAX, 1 << 40, u64::from(u32::MAX), 0x8000_0000] {
            reg.header().lock.store(junk, Ordering::Relaxed);
            assert!(reg.steal_lock_if_dead(junk), "{junk:#x}");
        }
        assert_eq!(reg.stats().lock_steals, 5);
    }
}
