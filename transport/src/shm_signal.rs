//! # shm_signal — doorbells between processes
//!
//! A [`ShmSignalDesc`] is 192 bytes of shared memory: a magic, a version and
//! two [`IrqRecord`]s, `north` and `south`. Each end of a channel *owns*
//! one record (it is the only one that sleeps on it) and *rings* the other.
//!
//! ## The protocol (after lguest's and Xen's event channels)
//!
//! Sender, `notify(remote)`:
//! 1. `remote.dirty.swap(1)` (AcqRel);
//! 2. if `remote.enabled == 1` (Relaxed) and `remote.pending.swap(1)`
//!    returned 0 (AcqRel): `futex_wake(&remote.pending)`.
//!
//! Receiver, [`ShmSignal::wait`] on its own record `me`:
//! 1. if `me.dirty.swap(0) == 1` (AcqRel): return (the caller drains).
//! 2. spin up to `spin` iterations watching `dirty` *while disabled*:
//!    senders skip the system call, the receiver catches the store.
//! 3. `me.enabled := 1`; `me.pending.swap(0)` (consume a stale wake-up);
//!    re-check `me.dirty.swap(0)`: if set, disable and return.
//! 4. `futex_wait(&me.pending, 0)`; then `me.enabled := 0` and go to 1.
//!
//! **No lost wake-up.** Both sides update `dirty` with read-modify-writes,
//! so its modification order decides. If the sender's swap comes before
//! the receiver's step-3 re-check, the re-check reads 1 and the receiver
//! does not sleep. If it comes after, it reads the value the re-check
//! wrote (or one written by a later RMW of the release sequence), so it
//! *synchronizes with* the re-check: the receiver's `enabled := 1` and
//! `pending := 0` happen before the sender's step 2, which therefore reads
//! `enabled == 1` and swaps `pending` 0→1 (or finds a 1 set by another
//! sender after that point, who wakes), and wakes the futex. The kernel
//! checks `pending == 0` and queues the waiter atomically with respect to
//! the wake (futex hash-bucket lock), so the receiver either does not
//! sleep or is woken. No SeqCst fence is needed: a first version had
//! Dekker-style fences and a plain `dirty` store; making the sender's
//! `dirty` update an RMW made the fences redundant (loom agrees, and
//! removing the step-3 re-check makes it report the lost wake-up).
//!
//! **At most one wake-up in flight per direction.** `futex_wake` is issued
//! only by the sender whose swap moved `pending` 0→1, and only the owner
//! moves it back to 0 (step 3). Repeated notifies while a wake-up is
//! pending, or while the owner is awake (`enabled == 0`), only set
//! `dirty`: they are the suppressed (spurious) wake-ups.
//!
//! The loom model in `tests/loom_shm_signal.rs` checks both properties
//! (a lost wake-up shows up as a loom deadlock).
//!
//! ## Spin policy
//!
//! Before sleeping the receiver polls `dirty` up to [`SpinPolicy::iters`]
//! times with a `pause` hint between polls (default
//! [`SpinPolicy::DEFAULT_ITERS`] = 2000), *with the irq disabled*, so a
//! sender answering within that window costs neither side a system call.
//! A `pause` takes ~10 cycles on older x86 and ~140 since Skylake, so the
//! default spin lasts roughly 10–100 µs at most: about one futex
//! sleep/wake round trip on a loaded node, the point where sleeping starts
//! to pay. Every 64th poll is a `sched_yield` instead of a `pause`: on an
//! oversubscribed node the peer we wait for may share our core, and pure
//! spinning only delays it (measured here under load ~9 on 2 cores:
//! 8-byte half round trip 21–55 µs with pure spinning, ~4 µs with the
//! yields). The spin ends at the first poll that sees `dirty`. `iters = 0`
//! sleeps at once (for oversubscribed nodes, where spinning steals the
//! peer's core). The spin is counted in iterations, never timed.
//!
//! ## Atomics, producers and consumers
//!
//! - `enabled`: written by the owner (steps 3–4), read by senders;
//!   Relaxed, because the sender reads it after acquiring the owner's
//!   re-check through `dirty` (above).
//! - `pending`: 0→1 by a sender, 1→0 by the owner; the futex word. AcqRel
//!   swaps.
//! - `dirty`: set by senders (AcqRel swap), cleared by the owner (AcqRel
//!   swap): a consumer that takes the doorbell sees what was published
//!   before it was rung. The payload itself (e.g. a DMA `used_len`) has
//!   its own Release/Acquire pair; the doorbell carries no data.
//! - the counters are statistics only: Relaxed, read after the fact.
//!
//! ## Many waiters: [`BroadcastRecord`]
//!
//! An [`IrqRecord`] has one owner: only the owner clears `dirty`, moves
//! `pending` back to 0 and turns `enabled` off. Keyed DMA once used one as
//! the binding's "restocked" doorbell, on which *every* sender short of a
//! descriptor waited: two waiters then undo each other. Two senders
//! asleep, the receiver restocks two descriptors (one coalesced `dirty`,
//! one wake-up); the first sender takes `dirty` and a descriptor, the
//! second finds `dirty` clear, goes back to sleep beside a free descriptor
//! and sleeps through its whole timeout (`tests/xproc.rs`,
//! `dma_two_senders_waiting_for_restock_both_get_a_restocked_descriptor`,
//! makes exactly that happen with SIGSTOP/SIGCONT).
//!
//! A [`BroadcastRecord`] is an event count (a sequence number that only
//! grows, as in Reed and Kanodia's eventcounts and the futex-based
//! condition variables of glibc): waiters consume nothing, so any number
//! can wait at once.
//!
//! Ringer, [`BroadcastRecord::notify`]:
//! 1. `seq.fetch_add(1)` (AcqRel);
//! 2. if `waiters.fetch_add(0)` (AcqRel: a read done as an RMW) `!= 0`:
//!    `futex_wake(&seq, all)`.
//!
//! Waiter: `t = ticket()` (`seq`, Acquire) *before* it looks at the
//! condition (a free descriptor); if the condition is false,
//! [`BroadcastRecord::wait`]`(t)`:
//! 1. spin up to `spin` polls of `seq != t`;
//! 2. `waiters.fetch_add(1)` (AcqRel), then while `seq.load()` (Acquire)
//!    `== t`: `futex_wait(&seq, t)`; finally `waiters.fetch_sub(1)`.
//!
//! **No lost wake-up.** Both sides update `waiters` with RMWs, so its
//! modification order decides, as for `dirty` above. If the waiter's
//! increment comes first, the ringer's RMW reads it (`!= 0`) and wakes;
//! the kernel checks `seq == t` and queues the waiter atomically with
//! respect to that wake, so the waiter either does not sleep or is woken.
//! If the ringer's RMW comes first, the waiter's increment reads from its
//! release sequence and synchronises with it: the ringer's `seq` increment
//! happens before the waiter's `seq` load, which therefore sees `!= t`
//! and does not sleep. (A first version read `waiters`, and the waiter
//! `seq`, with plain SeqCst loads after the RMWs; loom, which models
//! SeqCst accesses as AcqRel, reported a lost wake-up. The RMW read makes
//! the argument need no SeqCst at all.) A ring
//! *before* the ticket is
//! covered by the caller's look at the condition: the ticket's Acquire
//! load that reads the incremented `seq` synchronises with the ringer's
//! RMW, so the waiter sees what the ringer published before ringing (a
//! restocked `used_len == 0`). The loom model
//! `loom_broadcast_two_waiters_two_rings` checks it, with each waiter
//! taking one "descriptor".
//!
//! Costs and warts: the ringer pays a `futex_wake` for every ring while
//! anyone waits (restocks are rare next to sends); a waiter killed while
//! waiting leaves `waiters` counted up, so rings keep making the system
//! call until the record is reset (keyed DMA resets it at bind). `seq` is
//! 32 bits: a waiter is fooled only by exactly 2³² rings during one wait.
//!
//! Layout: fixed-width little-endian fields at asserted offsets (the
//! crate refuses to build on big-endian targets; peers on one node share
//! the CPU's byte order anyway).

use crate::Error;
use crate::shm::{Segment, SharedRecord};
use crate::sync::{AtomicU32, AtomicU64, FutexU32, Ordering, WaitOutcome, spin_hint};
use std::sync::Arc;
use std::time::Duration;

/// `"RCSG"` read as a little-endian u32.
pub const SIGNAL_MAGIC: u32 = u32::from_le_bytes(*b"RCSG");
/// Layout version of [`ShmSignalDesc`].
pub const SIGNAL_VERSION: u32 = 1;

/// One direction's interrupt record: 64 bytes, one cache line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct IrqRecord {
    /// 1 while the owner is (about to be) asleep and wants a wake-up.
    pub(crate) enabled: AtomicU32,
    /// 1 while a wake-up is injected and not yet consumed; the futex word.
    pub(crate) pending: FutexU32,
    /// 1 when a sender signalled since the owner last looked.
    pub(crate) dirty: AtomicU32,
    _pad: u32,
    /// Notifies received (statistics).
    pub(crate) notifies: AtomicU64,
    /// `futex_wake` calls issued (0→1 transitions of `pending`).
    pub(crate) wakes_sent: AtomicU64,
    /// Wake-ups consumed by the owner (1→0 transitions of `pending`).
    pub(crate) wakes_taken: AtomicU64,
    /// Times the owner went to sleep in `futex_wait`.
    pub(crate) sleeps: AtomicU64,
    _reserved: [u64; 2],
}

/// The shared descriptor: magic, version, then the two irq records.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct ShmSignalDesc {
    magic: AtomicU32,
    version: AtomicU32,
    _pad: [u32; 14],
    north: IrqRecord,
    south: IrqRecord,
}

// SAFETY: only atomics and plain integers; all bit patterns valid.
unsafe impl SharedRecord for ShmSignalDesc {}

/// A doorbell any number of processes may wait on at once (module docs,
/// "Many waiters"): 64 bytes, one cache line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct BroadcastRecord {
    /// Rings so far (wrapping); the futex word.
    pub(crate) seq: FutexU32,
    /// Waiters between their announcement and the end of their wait.
    pub(crate) waiters: AtomicU32,
    _pad: [u32; 2],
    /// Rings (statistics).
    pub(crate) notifies: AtomicU64,
    /// `futex_wake` calls issued.
    pub(crate) wakes_sent: AtomicU64,
    /// Waits that ended with a ring (not a timeout).
    pub(crate) wakes_taken: AtomicU64,
    /// `futex_wait` calls.
    pub(crate) sleeps: AtomicU64,
    _reserved: [u64; 2],
}

// SAFETY: only atomics and plain integers; all bit patterns valid.
unsafe impl SharedRecord for BroadcastRecord {}

impl BroadcastRecord {
    /// A zeroed record (for in-process use and the loom model).
    pub fn new() -> Self {
        Self::default()
    }

    /// Ring: every waiter whose ticket is older wakes. Returns `true` when
    /// a `futex_wake` was issued (someone was waiting).
    pub fn notify(&self) -> bool {
        self.notifies.fetch_add(1, Ordering::Relaxed);
        // Release half: what was written before ringing (a restocked
        // `used_len`) is seen by a ticket or check that reads the new value.
        self.seq.fetch_add(1, Ordering::AcqRel);
        // A read as an RMW: `waiters`' modification order orders it against
        // every waiter's announcement (module docs, "No lost wake-up").
        if self.waiters.fetch_add(0, Ordering::AcqRel) != 0 {
            self.wakes_sent.fetch_add(1, Ordering::Relaxed);
            self.seq.wake(u32::MAX);
            return true;
        }
        false
    }

    /// Waiter: the ring count to wait past. Take it *before* looking at
    /// the condition the rings announce.
    pub fn ticket(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Waiter: wait until a ring after `ticket`, spinning first as
    /// [`IrqRecord::wait`] does. `None` waits forever.
    pub fn wait(&self, ticket: u32, spin: SpinPolicy, timeout: Option<Duration>) -> Wake {
        for k in 0..spin.iters {
            if self.seq.load(Ordering::Acquire) != ticket {
                self.wakes_taken.fetch_add(1, Ordering::Relaxed);
                return Wake::Signalled;
            }
            if k % YIELD_EVERY == YIELD_EVERY - 1 {
                yield_now();
            } else {
                spin_hint();
            }
        }
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        // Announce, then look: an announcement after the ringer's read
        // acquires its `seq` increment.
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let out = loop {
            if self.seq.load(Ordering::Acquire) != ticket {
                break Wake::Signalled;
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => break Wake::TimedOut,
                },
            };
            self.sleeps.fetch_add(1, Ordering::Relaxed);
            // Sleeps only while `seq == ticket` (checked by the kernel
            // atomically with respect to `notify`'s wake); a wake-up, a
            // changed value, a timeout or a signal all loop to the check.
            let _ = self.seq.wait(ticket, left);
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        if out == Wake::Signalled {
            self.wakes_taken.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    /// Forget waiters (none may be waiting: e.g. a fresh binding).
    pub(crate) fn reset(&self) {
        self.waiters.store(0, Ordering::Relaxed);
    }

    /// Counter snapshot: `notifies` rings, `wakes_sent` `futex_wake`
    /// calls, `wakes_taken` waits ended by a ring, `sleeps` `futex_wait`
    /// calls.
    pub fn stats(&self) -> IrqStats {
        IrqStats {
            notifies: self.notifies.load(Ordering::Relaxed),
            wakes_sent: self.wakes_sent.load(Ordering::Relaxed),
            wakes_taken: self.wakes_taken.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
        }
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<IrqRecord>() == 64);
    assert!(align_of::<IrqRecord>() == 64);
    assert!(offset_of!(IrqRecord, enabled) == 0);
    assert!(offset_of!(IrqRecord, pending) == 4);
    assert!(offset_of!(IrqRecord, dirty) == 8);
    assert!(offset_of!(IrqRecord, notifies) == 16);
    assert!(offset_of!(IrqRecord, wakes_sent) == 24);
    assert!(offset_of!(IrqRecord, wakes_taken) == 32);
    assert!(offset_of!(IrqRecord, sleeps) == 40);
    assert!(size_of::<ShmSignalDesc>() == 192);
    assert!(size_of::<BroadcastRecord>() == 64);
    assert!(offset_of!(BroadcastRecord, seq) == 0);
    assert!(offset_of!(BroadcastRecord, waiters) == 4);
    assert!(offset_of!(BroadcastRecord, notifies) == 16);
    assert!(offset_of!(ShmSignalDesc, magic) == 0);
    assert!(offset_of!(ShmSignalDesc, version) == 4);
    assert!(offset_of!(ShmSignalDesc, north) == 64);
    assert!(offset_of!(ShmSignalDesc, south) == 128);
};

#[cfg(target_endian = "big")]
compile_error!("the shared layouts of regcache-transport are little-endian");

/// Which record an endpoint owns. The other one is its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Owns `north`, rings `south`.
    North,
    /// Owns `south`, rings `north`.
    South,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::North => Side::South,
            Side::South => Side::North,
        }
    }
}

/// Polls between two `sched_yield`s while spinning.
const YIELD_EVERY: u32 = 64;

fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// How long the receiver polls before it sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinPolicy {
    /// Polls of `dirty` (each followed by a `pause`) before `futex_wait`.
    pub iters: u32,
}

impl SpinPolicy {
    /// 2000 polls: roughly 10–100 µs depending on `pause` latency.
    pub const DEFAULT_ITERS: u32 = 2000;
}

impl Default for SpinPolicy {
    fn default() -> Self {
        Self {
            iters: Self::DEFAULT_ITERS,
        }
    }
}

/// How a [`ShmSignal::wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The doorbell was rung: drain, then wait again.
    Signalled,
    /// The timeout passed with no signal.
    TimedOut,
}

/// Snapshot of one irq record's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IrqStats {
    /// `notify` calls aimed at this record.
    pub notifies: u64,
    /// Real `futex_wake` calls issued for it.
    pub wakes_sent: u64,
    /// Wake-ups its owner consumed.
    pub wakes_taken: u64,
    /// Times its owner slept in `futex_wait`.
    pub sleeps: u64,
}

impl IrqRecord {
    /// A zeroed record (for in-process use and the loom model).
    pub fn new() -> Self {
        Self::default()
    }

    /// Ring this record (sender side). Returns `true` when a real wake-up
    /// (`futex_wake`) was injected, `false` when it was suppressed.
    pub fn notify(&self) -> bool {
        self.notifies.fetch_add(1, Ordering::Relaxed);
        // An RMW, not a plain store: `dirty`'s modification order is what
        // the no-lost-wake-up argument rests on (module docs). Release
        // half: the owner's Acquire swap sees the payload published before
        // ringing; Acquire half: we see the owner's `enabled`/`pending`
        // updates made before its last swap.
        self.dirty.swap(1, Ordering::AcqRel);
        if self.enabled.load(Ordering::Relaxed) != 0 && self.pending.swap(1, Ordering::AcqRel) == 0
        {
            self.wakes_sent.fetch_add(1, Ordering::Relaxed);
            self.pending.wake(u32::MAX);
            return true;
        }
        false
    }

    /// Owner: consume the doorbell without sleeping. `true` when rung.
    pub fn try_take(&self) -> bool {
        self.dirty.swap(0, Ordering::AcqRel) != 0
    }

    /// Owner: ask for wake-ups (lguest's "enable"). The caller must
    /// re-check its queue (or [`Self::try_take`]) afterwards.
    pub fn enable(&self) {
        self.enabled.store(1, Ordering::Relaxed);
    }

    /// Owner: stop wake-ups; notifies only set `dirty` (polling mode).
    pub fn disable(&self) {
        self.enabled.store(0, Ordering::Relaxed);
    }

    /// Owner: wait until rung (see the module docs for the protocol).
    pub fn wait(&self, spin: SpinPolicy, timeout: Option<Duration>) -> Wake {
        loop {
            if self.try_take() {
                return Wake::Signalled;
            }
            let mut rung = false;
            for k in 0..spin.iters {
                if self.dirty.load(Ordering::Relaxed) != 0 {
                    rung = true;
                    break;
                }
                if k % YIELD_EVERY == YIELD_EVERY - 1 {
                    // Let a peer that shares our core run (oversubscribed
                    // nodes): spinning alone would only delay its answer.
                    yield_now();
                } else {
                    spin_hint();
                }
            }
            if rung {
                continue;
            }
            self.enabled.store(1, Ordering::Relaxed);
            if self.pending.swap(0, Ordering::AcqRel) != 0 {
                self.wakes_taken.fetch_add(1, Ordering::Relaxed);
            }
            if self.try_take() {
                self.disable();
                return Wake::Signalled;
            }
            self.sleeps.fetch_add(1, Ordering::Relaxed);
            let out = self.pending.wait(0, timeout);
            self.disable();
            if out == WaitOutcome::TimedOut {
                return if self.try_take() {
                    Wake::Signalled
                } else {
                    Wake::TimedOut
                };
            }
        }
    }

    /// Owner: forget the doorbell's state (a fresh binding; nobody may be
    /// waiting on it). Counters are kept.
    pub(crate) fn reset(&self) {
        self.dirty.store(0, Ordering::Relaxed);
        self.enabled.store(0, Ordering::Relaxed);
        self.pending.store(0, Ordering::Relaxed);
    }

    /// Counter snapshot.
    pub fn stats(&self) -> IrqStats {
        IrqStats {
            notifies: self.notifies.load(Ordering::Relaxed),
            wakes_sent: self.wakes_sent.load(Ordering::Relaxed),
            wakes_taken: self.wakes_taken.load(Ordering::Relaxed),
            sleeps: self.sleeps.load(Ordering::Relaxed),
        }
    }
}

impl ShmSignalDesc {
    /// The record owned by `side`.
    pub fn irq(&self, side: Side) -> &IrqRecord {
        match side {
            Side::North => &self.north,
            Side::South => &self.south,
        }
    }

    /// Write magic and version (after the segment was zero-filled).
    pub(crate) fn init(&self) {
        self.version.store(SIGNAL_VERSION, Ordering::Relaxed);
        // Release: a peer that Acquire-loads the magic sees the version.
        self.magic.store(SIGNAL_MAGIC, Ordering::Release);
    }

    /// Check magic and version.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let magic = self.magic.load(Ordering::Acquire);
        let version = self.version.load(Ordering::Relaxed);
        if magic != SIGNAL_MAGIC || version != SIGNAL_VERSION {
            return Err(Error::BadSignal { magic, version });
        }
        Ok(())
    }
}

// SAFETY: `desc` points into the mapping owned by `seg` (kept alive by
// the Arc); the record is only accessed through atomics.
unsafe impl Send for ShmSignal {}
// SAFETY: as for `Send`.
unsafe impl Sync for ShmSignal {}

/// One endpoint of a shm_signal channel in a mapped [`Segment`].
#[derive(Debug, Clone)]
pub struct ShmSignal {
    _seg: Arc<Segment>,
    desc: std::ptr::NonNull<ShmSignalDesc>,
    side: Side,
    spin: SpinPolicy,
}

impl ShmSignal {
    /// Size in bytes of the shared descriptor.
    pub const SIZE: usize = std::mem::size_of::<ShmSignalDesc>();

    /// Initialise a descriptor at `offset` (64-byte aligned, zero-filled
    /// memory) and return the `side` endpoint.
    ///
    /// # Errors
    /// [`Error::SegmentTooSmall`] when out of bounds or misaligned.
    pub fn create(seg: Arc<Segment>, offset: usize, side: Side) -> Result<Self, Error> {
        let desc = std::ptr::NonNull::from(seg.record::<ShmSignalDesc>(offset)?);
        // SAFETY: `desc` was just checked in bounds and aligned.
        unsafe { desc.as_ref() }.init();
        Ok(Self {
            _seg: seg,
            desc,
            side,
            spin: SpinPolicy::default(),
        })
    }

    /// Attach to an initialised descriptor as `side`.
    ///
    /// # Errors
    /// [`Error::SegmentTooSmall`], [`Error::BadSignal`].
    pub fn attach(seg: Arc<Segment>, offset: usize, side: Side) -> Result<Self, Error> {
        let desc = std::ptr::NonNull::from(seg.record::<ShmSignalDesc>(offset)?);
        // SAFETY: `desc` was just checked in bounds and aligned.
        unsafe { desc.as_ref() }.check()?;
        Ok(Self {
            _seg: seg,
            desc,
            side,
            spin: SpinPolicy::default(),
        })
    }

    /// Replace the spin policy of this endpoint's waits.
    pub fn with_spin(mut self, spin: SpinPolicy) -> Self {
        self.spin = spin;
        self
    }

    fn desc(&self) -> &ShmSignalDesc {
        // SAFETY: bounds and alignment were checked at construction and
        // `self.seg` keeps the mapping alive as long as `self`.
        unsafe { self.desc.as_ref() }
    }

    /// Ring the remote side. `true` when a real wake-up was issued.
    pub fn notify(&self) -> bool {
        self.desc().irq(self.side.other()).notify()
    }

    /// Wait on our own record until rung or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> Wake {
        self.desc().irq(self.side).wait(self.spin, timeout)
    }

    /// Consume our doorbell without sleeping.
    pub fn try_take(&self) -> bool {
        self.desc().irq(self.side).try_take()
    }

    /// Counters of the record owned by `side`.
    pub fn stats(&self, side: Side) -> IrqStats {
        self.desc().irq(side).stats()
    }

    /// Which side this endpoint owns.
    pub fn side(&self) -> Side {
        self.side
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn broadcast_wait_returns_at_once_for_a_ring_after_the_ticket() {
        let b = BroadcastRecord::new();
        let t = b.ticket();
        // Nobody waits: no system call.
        assert!(!b.notify());
        assert_eq!(
            b.wait(t, SpinPolicy { iters: 0 }, Some(Duration::from_secs(60))),
            Wake::Signalled
        );
        let t = b.ticket();
        assert_eq!(
            b.wait(t, SpinPolicy { iters: 0 }, Some(Duration::from_millis(1))),
            Wake::TimedOut
        );
        let s = b.stats();
        assert_eq!((s.notifies, s.wakes_sent, s.wakes_taken), (1, 0, 1));
        assert!(s.sleeps >= 1, "{s:?}");
        assert_eq!(b.waiters.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn broadcast_survives_garbage_counts() {
        // A peer scribbled on the record: counts at the edge of wrapping.
        let b = BroadcastRecord::new();
        b.waiters.store(u32::MAX, Ordering::Relaxed);
        b.seq.store(u32::MAX, Ordering::Relaxed);
        let t = b.ticket();
        assert!(b.notify(), "a nonzero waiter count makes the ringer wake");
        assert_eq!(b.ticket(), 0);
        assert_eq!(
            b.wait(t, SpinPolicy { iters: 0 }, Some(Duration::from_millis(1))),
            Wake::Signalled
        );
        b.reset();
        assert!(!b.notify());
    }
}
