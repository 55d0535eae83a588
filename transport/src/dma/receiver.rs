//! The receiver's side: bind a key, take deliveries, restock, unbind.
//!
//! ## Binding
//!
//! A receiver *binds* a key by filling a free slot under the registry
//! lock: its pid, the key, up to [`MAX_RANGES`] registered ranges (its
//! buffers must lie inside them), up to [`MAX_DESCS`] [`DmaDesc`]s of up to
//! [`MAX_SECTIONS`] `{addr, len}` sections each, a checksum over all of
//! that, a fresh bounce segment (`<registry>-b<slot>-<generation>`, as
//! large as all buffers together) and two doorbells (`BindingDoorbells`):
//! `arrived`, an [`IrqRecord`](crate::shm_signal::IrqRecord) the receiver
//! owns ("data or a restock request arrived"), and `restocked`, a
//! [`BroadcastRecord`](crate::shm_signal::BroadcastRecord) any number of
//! senders short of a descriptor wait on (see `shm_signal`, "Many
//! waiters"). The slot's `state := BOUND` Release store publishes it
//! all. While it holds the lock, bind also reaps the slots of dead
//! receivers (with unbind's Dekker pair, so a send still in flight keeps
//! the slot `UNBINDING` until a later bind).
//!
//! ## Receiving
//!
//! The receiver keeps a *private* copy of every descriptor it bound
//! (`PrivDesc`) and never trusts shared memory for where its own bytes
//! go. A delivery is a descriptor whose `used_len` (loaded Acquire) is
//! neither 0 nor a claim ([`is_claim`]): it is checked against the private copy
//! (same sections, same bounce offset, known flags, `used_len` within
//! capacity), bounced payloads are copied out of the bounce segment into
//! the private copy's sections, and the descriptor stays the caller's
//! until [`Receiver::restock`] hands it back with a Release store of 0. A
//! descriptor that fails its check is repaired from the private copy and
//! freed ([`Error::CorruptDescriptor`]); a sender that published an
//! impossible length is banned from the binding. While nothing is
//! delivered, the receiver helps open assisted copies into its claimed
//! descriptors ([`super::assisted`]). An inline delivery (`F_INLINE`,
//! layout version 4) is copied from the descriptor's inline words into
//! the private copy's sections; one that claims more than
//! [`INLINE_BYTES`] is refused like a mismatched descriptor.
//!
//! [`Receiver::recv`] first polls the descriptors' `used_len` words
//! themselves (the spin of [`Config::spin`](super::Config::spin), a
//! `sched_yield` every 64th poll as in `shm_signal`), and only then sleeps
//! on the `arrived` doorbell (shm_signal's enable, re-check, `futex_wait`).
//! While it polls it never touches the doorbell, so a sender's ring
//! (`dirty` already 1) stays in the sender's cache: a small message costs
//! the descriptor's cache line going to the receiver and back, not also
//! the doorbell's. The first sleep after a run of polled deliveries
//! returns at once on the stale ring and polls once more; no wake-up is
//! lost, because the sleep is shm_signal's own protocol.
//!
//! ## Unbinding
//!
//! `state := UNBINDING` (SeqCst), then a bounded wait until no live sender
//! is announced on the slot (see [`super::registry`], "Announced sends"),
//! then `gen += 1; state := FREE` and the bounce segment is unlinked.

use super::assisted::help_job;
use super::layout::{
    BOUND, BindingSlot, CLAIM_BIT, CutReason, DmaDesc, F_BOUNCED, F_INLINE, F_PIPED, FREE,
    INLINE_BYTES, MAX_DESCS, MAX_RANGES, MAX_SECTIONS, SlotIndex, UNBINDING, desc_check, is_claim,
    slot_check, slot_key, write_pairs,
};
use super::registry::{Registry, pid_alive, sends_in_flight};
use super::send::CopyPath;
use crate::Error;
use crate::key::DmaKey;
use crate::shm::Segment;
use crate::shm_signal::{Side, SpinPolicy, Wake};
use crate::sync::Ordering;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use umn::AddrRange;

/// A receive buffer: up to [`MAX_SECTIONS`] non-empty sections, filled in
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaBuffer {
    /// The sections, in fill order.
    pub sections: Vec<AddrRange>,
}

impl DmaBuffer {
    /// A buffer from its sections.
    pub fn new(sections: Vec<AddrRange>) -> Self {
        Self { sections }
    }

    fn capacity(&self) -> u64 {
        self.sections.iter().map(AddrRange::len).sum()
    }
}

/// A message delivered to a [`Receiver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Descriptor index; pass to [`Receiver::restock`] when done.
    pub index: u32,
    /// Bytes written into the descriptor's sections, in order.
    pub len: u64,
    /// The sender's pid as it recorded it.
    pub sender_pid: u32,
    /// How the bytes came.
    pub path: CopyPath,
}

/// The receiver's private copy of one bound descriptor.
#[derive(Debug)]
pub(super) struct PrivDesc {
    pub(super) sections: Vec<AddrRange>,
    pub(super) cap: u64,
    bounce_off: u64,
    delivered: bool,
    /// Bytes of a pipelined bounce already copied out (`F_PIPED`) since the
    /// descriptor was last handed to senders.
    piped_out: u64,
}

/// (Re)write shared descriptor `d` from the private copy `p` and free it.
fn write_desc(d: &DmaDesc, gen_: u32, p: &PrivDesc) {
    let secs: Vec<(u64, u64)> = p.sections.iter().map(|r| (r.start(), r.len())).collect();
    write_pairs(&d.sections, &secs);
    let nsec = secs.len() as u32;
    d.nsec.store(nsec, Ordering::Relaxed);
    d.bounce_off.store(p.bounce_off, Ordering::Relaxed);
    d.flags.store(0, Ordering::Relaxed);
    d.sender_pid.store(0, Ordering::Relaxed);
    d.assist.piped.store(0, Ordering::Relaxed);
    d.check.store(
        desc_check(gen_, nsec, p.bounce_off, &secs),
        Ordering::Relaxed,
    );
    // Release: a sender that claims it (AcqRel CAS) sees the sections.
    d.used_len.store(0, Ordering::Release);
}

/// Every this-many polls of [`Receiver::recv`] is a `sched_yield` (as in
/// `shm_signal`'s spin).
const POLL_YIELD_EVERY: u32 = 64;

/// Why a used descriptor failed the receiver's check.
enum UsedFault {
    /// Flags or sections differ from what was bound.
    Mismatch(&'static str),
    /// `used_len` is more than the descriptor holds: the sender is banned.
    TooLong,
}

/// A bound receiver: owns its binding slot until unbound or dropped.
#[derive(Debug)]
pub struct Receiver {
    reg: Registry,
    slot: SlotIndex,
    gen_: u32,
    key: DmaKey,
    descs: Vec<PrivDesc>,
    bounce: Segment,
    bounce_name: String,
    cursor: usize,
    unbound: bool,
    /// Senders whose memory `process_vm_readv` may not read (`EPERM`).
    assist_refused: HashSet<u32>,
}

/// Check `bind`'s arguments; the private copies of the descriptors and
/// the total bounce length.
fn check_bind(ranges: &[AddrRange], buffers: &[DmaBuffer]) -> Result<(Vec<PrivDesc>, u64), Error> {
    if ranges.is_empty() || ranges.len() > MAX_RANGES {
        return Err(Error::InvalidBind("1..=MAX_RANGES registered ranges"));
    }
    if buffers.is_empty() || buffers.len() > MAX_DESCS {
        return Err(Error::InvalidBind("1..=MAX_DESCS buffers"));
    }
    if ranges.iter().any(|r| r.is_empty() || r.start() == 0) {
        return Err(Error::InvalidBind("empty or NULL registered range"));
    }
    let mut bounce_len: u64 = 0;
    let mut priv_descs = Vec::with_capacity(buffers.len());
    for b in buffers {
        if b.sections.is_empty() || b.sections.len() > MAX_SECTIONS {
            return Err(Error::InvalidBind("1..=MAX_SECTIONS sections per buffer"));
        }
        for s in &b.sections {
            if s.is_empty() || !ranges.iter().any(|r| r.contains(s)) {
                return Err(Error::InvalidBind(
                    "section empty or outside the registered ranges",
                ));
            }
        }
        let cap = b.capacity();
        priv_descs.push(PrivDesc {
            sections: b.sections.clone(),
            cap,
            bounce_off: bounce_len,
            delivered: false,
            piped_out: 0,
        });
        bounce_len = bounce_len
            .checked_add(cap)
            .filter(|&n| n < CLAIM_BIT)
            .ok_or(Error::InvalidBind("total capacity of 2^63 bytes or more"))?;
    }
    Ok((priv_descs, bounce_len))
}

impl Registry {
    /// Bind `buffers` as this process's receive descriptors for `key`.
    ///
    /// `ranges` are the registered ranges (≤ [`MAX_RANGES`]); every section
    /// of every buffer must lie inside one of them. Up to [`MAX_DESCS`]
    /// buffers of up to [`MAX_SECTIONS`] sections.
    ///
    /// # Safety
    /// Every section must be valid for writes (by other processes, through
    /// the kernel or a bounce copy) until the returned [`Receiver`] is
    /// unbound or dropped, and must not be moved, freed or unmapped in the
    /// meantime. Reads of a buffer are only meaningful between the
    /// [`Delivery`] that names it and its [`Receiver::restock`].
    ///
    /// # Errors
    /// [`Error::InvalidBind`], [`Error::KeyInUse`], [`Error::RegistryFull`],
    /// and segment errors creating the bounce segment.
    pub unsafe fn bind(
        &self,
        key: DmaKey,
        ranges: &[AddrRange],
        buffers: &[DmaBuffer],
    ) -> Result<Receiver, Error> {
        let (priv_descs, bounce_len) = check_bind(ranges, buffers)?;
        let _g = self.lock();
        let i = self.reap_and_find_free(key)?;
        let s = self.slot(i);
        let gen_ = s.gen_.load(Ordering::Relaxed).wrapping_add(1);
        let bounce_name = self.bounce_name(i, gen_);
        let _ = Segment::unlink(&bounce_name);
        let bounce = Segment::create(
            &bounce_name,
            usize::try_from(bounce_len.max(1))
                .map_err(|_| Error::InvalidBind("capacity too large"))?,
        )?;

        s.gen_.store(gen_, Ordering::Relaxed);
        s.pid.store(self.inner.me, Ordering::Relaxed);
        s.ndesc.store(buffers.len() as u32, Ordering::Relaxed);
        s.next_dma.store(0, Ordering::Relaxed);
        s.cut_reason
            .store(CutReason::Unknown as u32, Ordering::Relaxed);
        s.nranges.store(ranges.len() as u32, Ordering::Relaxed);
        s.key_dev.store(key.dev, Ordering::Relaxed);
        s.key_ino.store(key.ino, Ordering::Relaxed);
        s.key_off.store(key.offset, Ordering::Relaxed);
        s.bounce_len.store(bounce_len, Ordering::Relaxed);
        for b in &s.banned {
            b.store(0, Ordering::Relaxed);
        }
        s.want_restock.store(0, Ordering::Relaxed);
        s.assist_open.store(0, Ordering::Relaxed);
        let rs: Vec<(u64, u64)> = ranges.iter().map(|r| (r.start(), r.len())).collect();
        write_pairs(&s.ranges[..rs.len()], &rs);
        let check = slot_check(
            self.inner.me,
            gen_,
            buffers.len() as u32,
            key,
            bounce_len,
            &rs,
        );
        s.check.store(check, Ordering::Relaxed);
        for (d, p) in s.descs.iter().zip(&priv_descs) {
            write_desc(d, gen_, p);
        }
        // Fresh doorbells for the new binding: nobody waits on either (the
        // slot was free). `restocked.seq` is left as it is: waiters compare
        // it with their own tickets only.
        s.signal.arrived.reset();
        s.signal.restocked.reset();
        // Release: publishes everything above to senders' Acquire load.
        s.state.store(BOUND, Ordering::Release);

        Ok(Receiver {
            reg: self.clone(),
            slot: i,
            gen_,
            key,
            descs: priv_descs,
            bounce,
            bounce_name,
            cursor: 0,
            unbound: false,
            assist_refused: HashSet::new(),
        })
    }

    /// Under the registry lock: reap bindings of dead processes, refuse a
    /// live duplicate of `key`, and return the first free slot.
    fn reap_and_find_free(&self, key: DmaKey) -> Result<SlotIndex, Error> {
        let mut free = None;
        for i in SlotIndex::all() {
            let s = self.slot(i);
            let st = s.state.load(Ordering::Acquire);
            // A dead receiver's slot is reaped with unbind's Dekker pair
            // (state := UNBINDING, then inflight == 0?); with a send still
            // in flight it stays UNBINDING until a later bind.
            if st != FREE && !pid_alive(s.pid.load(Ordering::Relaxed)) {
                s.state.store(UNBINDING, Ordering::SeqCst);
                if !sends_in_flight(s) {
                    let g = s.gen_.load(Ordering::Relaxed);
                    let _ = Segment::unlink(&self.bounce_name(i, g));
                    s.gen_.fetch_add(1, Ordering::Relaxed);
                    s.state.store(FREE, Ordering::Release);
                }
                continue;
            }
            if st == BOUND && slot_key(s) == key {
                return Err(Error::KeyInUse(key));
            }
            if st == FREE && free.is_none() {
                free = Some(i);
            }
        }
        free.ok_or(Error::RegistryFull)
    }
}

impl Receiver {
    fn slot(&self) -> &BindingSlot {
        self.reg.slot(self.slot)
    }

    /// The bound key.
    pub fn key(&self) -> DmaKey {
        self.key
    }

    /// Take the next delivered descriptor without sleeping. When nothing
    /// is delivered yet but a sender has opened an assisted copy into one
    /// of our descriptors, copy chunks of it first (see
    /// the `dma::assisted` module docs), then look again.
    ///
    /// # Errors
    /// [`Error::CutOff`] when a sender cut the binding off (rebind to
    /// continue); [`Error::CorruptDescriptor`] when a used descriptor
    /// failed validation (it was repaired from the private copy and
    /// freed; the receiver keeps working).
    pub fn try_recv(&mut self) -> Result<Option<Delivery>, Error> {
        if let Some(d) = self.take()? {
            return Ok(Some(d));
        }
        let piped = self.pipe_out();
        if self.help() || piped {
            return self.take();
        }
        Ok(None)
    }

    /// Copy out what senders of pipelined bounces (`F_PIPED`) into our
    /// claimed descriptors have copied in so far. Returns whether we copied
    /// any. Bounded by our own capacity and bounce offsets whatever shared
    /// memory says (`send`, "Pipelined bounce").
    fn pipe_out(&mut self) -> bool {
        let s = self.reg.slot(self.slot);
        let mut copied = false;
        for j in 0..self.descs.len() {
            let d = &s.descs[j];
            if self.descs[j].delivered || !is_claim(d.used_len.load(Ordering::Acquire)) {
                continue;
            }
            if d.flags.load(Ordering::Acquire) & F_PIPED == 0 {
                continue;
            }
            // Acquire: pairs with the sender's Release after each chunk.
            let upto = d
                .assist
                .piped
                .load(Ordering::Acquire)
                .min(self.descs[j].cap);
            let from = self.descs[j].piped_out;
            if upto > from {
                self.copy_out(j, from, upto);
                self.descs[j].piped_out = upto;
                copied = true;
            }
        }
        copied
    }

    /// Copy chunks of senders' open assist jobs on our claimed
    /// descriptors. Returns whether we copied any.
    fn help(&mut self) -> bool {
        let s = self.reg.slot(self.slot);
        if s.assist_open.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut helped = false;
        for (j, p) in self.descs.iter().enumerate() {
            let claim = s.descs[j].used_len.load(Ordering::Relaxed);
            if p.delivered || !is_claim(claim) {
                continue;
            }
            helped |= help_job(
                &s.descs[j],
                claim,
                self.gen_,
                p,
                &mut self.assist_refused,
                &self.reg.inner.stats,
            );
        }
        helped
    }

    fn take(&mut self) -> Result<Option<Delivery>, Error> {
        let s = self.slot();
        let st = s.state.load(Ordering::Acquire);
        if st != BOUND || s.gen_.load(Ordering::Relaxed) != self.gen_ {
            return Err(Error::CutOff {
                key: self.key,
                reason: CutReason::words_of(s),
            });
        }
        let n = self.descs.len();
        for k in 0..n {
            let j = (self.cursor + k) % n;
            if self.descs[j].delivered {
                continue;
            }
            let d = &s.descs[j];
            // Acquire: pairs with the sender's Release store after the data.
            let used = d.used_len.load(Ordering::Acquire);
            if used == 0 || is_claim(used) {
                continue;
            }
            let sender_pid = d.sender_pid.load(Ordering::Relaxed);
            let flags = d.flags.load(Ordering::Relaxed);
            if let Err(fault) = self.check_used(j, used, flags) {
                let reason = match fault {
                    UsedFault::Mismatch(reason) => reason,
                    UsedFault::TooLong => {
                        self.ban(sender_pid);
                        CutReason::ImpossibleLength.as_str()
                    }
                };
                write_desc(&s.descs[j], self.gen_, &self.descs[j]);
                s.signal.restocked.notify();
                // Freed again: what we copied early of a pipelined bounce
                // into it is void (as at restock).
                self.descs[j].piped_out = 0;
                return Err(Error::CorruptDescriptor {
                    key: self.key,
                    index: j as u32,
                    reason,
                    sender_pid,
                });
            }
            let path = if flags & F_INLINE != 0 {
                self.copy_inline(j, used);
                CopyPath::Bounce
            } else if flags & F_BOUNCED != 0 {
                // A pipelined bounce of this message (published with
                // F_PIPED, module docs) left `piped_out` bytes to skip;
                // any other delivery is copied whole.
                let from = if flags & F_PIPED != 0 {
                    self.descs[j].piped_out.min(used)
                } else {
                    0
                };
                self.copy_out(j, from, used);
                CopyPath::Bounce
            } else {
                CopyPath::Cma
            };
            self.descs[j].delivered = true;
            self.cursor = (j + 1) % n;
            return Ok(Some(Delivery {
                index: j as u32,
                len: used,
                sender_pid,
                path,
            }));
        }
        Ok(None)
    }

    /// Copy bytes `[from, to)` of the message in descriptor `j` out of the
    /// bounce area into our own sections (as the private copy names them);
    /// `to <= cap`.
    fn copy_out(&self, j: usize, from: u64, to: u64) {
        let p = &self.descs[j];
        let to = to.min(p.cap);
        let mut off = 0u64; // message offset of section `r`
        for r in &p.sections {
            let (lo, hi) = (from.max(off), to.min(off + r.len()));
            if lo < hi {
                let at = (p.bounce_off + lo) as usize;
                // SAFETY: `bounce_off + hi <= bounce_off + cap <=
                // bounce.len()` by construction of the private copy
                // (`to <= cap`); `[lo - off, hi - off)` lies in section `r`,
                // which is ours and valid for writes (bind's contract).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.bounce.as_ptr().add(at),
                        (r.start() + (lo - off)) as *mut u8,
                        (hi - lo) as usize,
                    );
                }
            }
            off += r.len();
            if off >= to {
                break;
            }
        }
    }

    /// Copy `used <= INLINE_BYTES` bytes of descriptor `j`'s inline words
    /// into our own sections (as the private copy names them).
    fn copy_inline(&self, j: usize, used: u64) {
        let mut bytes = [0u8; INLINE_BYTES];
        for (c, w) in bytes.chunks_exact_mut(8).zip(&self.slot().descs[j].inline) {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let p = &self.descs[j];
        let mut at = 0;
        let mut left = (used as usize).min(INLINE_BYTES);
        for r in &p.sections {
            if left == 0 {
                break;
            }
            let k = (r.len() as usize).min(left);
            // SAFETY: `at + k <= used <= INLINE_BYTES` (checked in
            // `check_used`, and clamped above), `k <= r.len()`; the section
            // is ours and valid for writes (bind's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().add(at), r.start() as *mut u8, k);
            }
            at += k;
            left -= k;
        }
    }

    fn check_used(&self, j: usize, used: u64, flags: u32) -> Result<(), UsedFault> {
        let s = self.slot();
        let d = &s.descs[j];
        let p = &self.descs[j];
        if ![0, F_BOUNCED, F_BOUNCED | F_PIPED, F_INLINE].contains(&flags) {
            return Err(UsedFault::Mismatch("unknown descriptor flags"));
        }
        let nsec = d.nsec.load(Ordering::Relaxed) as usize;
        let same = nsec == p.sections.len()
            && d.bounce_off.load(Ordering::Relaxed) == p.bounce_off
            && d.sections[..nsec].iter().zip(&p.sections).all(|(s, r)| {
                s.addr.load(Ordering::Relaxed) == r.start()
                    && s.len.load(Ordering::Relaxed) == r.len()
            });
        if !same {
            return Err(UsedFault::Mismatch(
                "descriptor sections differ from what was bound",
            ));
        }
        if used > p.cap {
            return Err(UsedFault::TooLong);
        }
        // After the capacity: a sender that published more than the buffer
        // holds is banned whatever its flags say.
        if flags & F_INLINE != 0 && used > INLINE_BYTES as u64 {
            return Err(UsedFault::Mismatch(
                "inline delivery longer than the inline area",
            ));
        }
        Ok(())
    }

    fn ban(&self, pid: u32) {
        if pid == 0 || pid == self.reg.inner.me {
            return;
        }
        let s = self.slot();
        for b in &s.banned {
            if b.compare_exchange(0, pid, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
                || b.load(Ordering::Relaxed) == pid
            {
                return;
            }
        }
    }

    /// `true` (once) when a sender found no free descriptor since the last
    /// call: restock what you can, then [`Self::restock`] rings it.
    pub fn restock_requested(&self) -> bool {
        self.slot().want_restock.swap(0, Ordering::SeqCst) != 0
    }

    /// Wait on the binding's doorbell (spin, then sleep) without taking a
    /// delivery: for loops that also watch [`Self::restock_requested`].
    pub fn wait(&self, timeout: Option<Duration>) -> Wake {
        self.slot()
            .signal
            .arrived
            .wait(self.reg.inner.config.spin, timeout)
    }

    /// Wait for a delivery: poll the descriptors themselves for up to
    /// [`Config::spin`](super::Config::spin) rounds, then sleep on the
    /// binding's doorbell (module docs, "Receiving").
    ///
    /// Returns `Ok(None)` when `timeout` passes with nothing delivered
    /// (`None` waits forever).
    ///
    /// # Errors
    /// As [`Self::try_recv`].
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Delivery>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let spin = self.reg.inner.config.spin;
        loop {
            if let Some(d) = self.try_recv()? {
                return Ok(Some(d));
            }
            for k in 0..spin.iters {
                if k % POLL_YIELD_EVERY == POLL_YIELD_EVERY - 1 {
                    // As shm_signal's spin: let a peer on our core run.
                    std::thread::yield_now();
                    if deadline.is_some_and(|dl| Instant::now() >= dl) {
                        break;
                    }
                } else {
                    std::hint::spin_loop();
                }
                if let Some(d) = self.try_recv()? {
                    return Ok(Some(d));
                }
            }
            let left = match deadline {
                Some(dl) => match dl.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return Ok(None),
                },
                None => None,
            };
            // We polled already: sleep at once (after shm_signal's
            // re-check), or return on a ring left by an earlier send.
            let _ = self
                .slot()
                .signal
                .arrived
                .wait(SpinPolicy { iters: 0 }, left);
        }
    }

    /// Hand descriptor `index` back (its `used_len := 0`, Release) and ring
    /// senders waiting for a free descriptor.
    ///
    /// # Errors
    /// [`Error::InvalidBind`] for an index out of range.
    pub fn restock(&mut self, index: u32) -> Result<(), Error> {
        let j = index as usize;
        let p = self
            .descs
            .get_mut(j)
            .ok_or(Error::InvalidBind("restock index out of range"))?;
        p.delivered = false;
        p.piped_out = 0;
        let s = self.reg.slot(self.slot);
        let d = &s.descs[j];
        // A pipelined bounce's marks go before the descriptor does: the
        // next claimer starts from "nothing copied" (`send`, "Pipelined
        // bounce").
        d.flags.store(0, Ordering::Relaxed);
        d.assist.piped.store(0, Ordering::Relaxed);
        // Release: our reads of the payload (and the resets above) happen
        // before a sender's AcqRel claim and its new writes.
        d.used_len.store(0, Ordering::Release);
        s.signal.restocked.notify();
        Ok(())
    }

    /// Pids announced as being in the middle of a send to this binding
    /// (diagnostics; a dead pid stays listed until an unbind or a reaping
    /// bind clears it).
    pub fn senders_in_flight(&self) -> Vec<u32> {
        self.slot()
            .senders
            .iter()
            .map(|e| e.load(Ordering::SeqCst))
            .filter(|&p| p != 0)
            .collect()
    }

    /// Counters of this binding's doorbells: `North`, ours ("arrived",
    /// [`crate::shm_signal::IrqRecord::stats`]); `South`, the senders'
    /// restock doorbell ([`crate::shm_signal::BroadcastRecord::stats`]:
    /// `sleeps` counts the `futex_wait`s of all waiting senders).
    pub fn signal_stats(&self, side: Side) -> crate::shm_signal::IrqStats {
        match side {
            Side::North => self.slot().signal.arrived.stats(),
            Side::South => self.slot().signal.restocked.stats(),
        }
    }

    /// Unbind: no new send can find the binding; waits (bounded) for
    /// in-flight sends; frees the slot; removes the bounce segment.
    ///
    /// # Errors
    /// [`Error::UnbindBusy`] when in-flight sends did not finish in
    /// `Config::unbind_wait` (the buffers must then stay valid).
    pub fn unbind(mut self) -> Result<(), Error> {
        self.do_unbind()
    }

    fn do_unbind(&mut self) -> Result<(), Error> {
        if self.unbound {
            return Ok(());
        }
        self.unbound = true;
        let s = self.reg.slot(self.slot);
        if s.gen_.load(Ordering::Relaxed) != self.gen_
            || s.pid.load(Ordering::Relaxed) != self.reg.inner.me
        {
            // Our slot was reaped or scribbled on; nothing of ours to free.
            let _ = Segment::unlink(&self.bounce_name);
            return Ok(());
        }
        let _g = self.reg.lock();
        s.state.store(UNBINDING, Ordering::SeqCst);
        let deadline = Instant::now() + self.reg.inner.config.unbind_wait;
        let mut spins = 0u32;
        while sends_in_flight(s) {
            if Instant::now() > deadline {
                return Err(Error::UnbindBusy(self.key));
            }
            spins = spins.wrapping_add(1);
            if spins > 64 {
                std::thread::yield_now();
            }
        }
        s.gen_.fetch_add(1, Ordering::Relaxed);
        s.state.store(FREE, Ordering::Release);
        let _ = Segment::unlink(&self.bounce_name);
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Err(e) = self.do_unbind() {
            log::error!("regcache-transport: unbind on drop failed: {e}");
        }
    }
}
