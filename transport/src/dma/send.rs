//! The sender's path: find, announce, validate, claim, copy, publish.
//!
//! ## A send
//!
//! 1. Find a `BOUND` slot with the key whose pid is not ours
//!    ([`Registry::find_slot`]), or take the binding from the sender's
//!    cache (below, "The sender's cache").
//! 2. Announce the send (`InflightGuard`, see [`super::registry`],
//!    "Announced sends"), then re-check the slot is still bound with the
//!    same key (a cached binding: the same generation, owner, key and
//!    header checksum): with the send announced, unbind cannot complete.
//! 3. Validate the slot header (checksum, counts, ranges), once per
//!    binding generation.
//! 4. From this process's cursor, claim the first descriptor with
//!    `used_len == 0` by a CAS to our claim word, `CLAIM_BIT |
//!    ProcId::word` (our pid and start time). None free: take over a
//!    claim of a dead sender (below);
//!    none either: ring the receiver, wait (bounded) for its restock
//!    doorbell, retry once, else [`Error::NoFreeDescriptor`]. The restock
//!    doorbell is a [`BroadcastRecord`](crate::shm_signal::BroadcastRecord)
//!    (layout version 3): the sender takes its ticket before it looks for
//!    a free descriptor, and every sender waiting at once is woken by a
//!    restock (with a single-owner doorbell, as before, two waiting
//!    senders could consume each other's ring). The first claim is tried
//!    before the ticket is taken: the ticket only matters to a sender
//!    that goes on to wait.
//! 5. Validate the descriptor (checksum, section count, each section an
//!    [`AddrRange`] inside a registered range), once per binding
//!    generation while its `check` word stays the same.
//! 6. Copy `min(source, destination)` bytes by the path
//!    [`Config::path_for`](super::Config::path_for) picks for the size
//!    ([`super::config`], "Choosing a copy path by size"): eager (inline
//!    in the descriptor up to [`INLINE_BYTES`], else into the bounce area),
//!    bounce, one `process_vm_writev` with all sections as iovecs
//!    ([`super::cma`]), or split with the receiver ([`super::assisted`]).
//!    A single copy the kernel refuses (`EPERM`) bounces.
//! 7. Store `flags`, `sender_pid`, then `used_len` with **Release**; the
//!    receiver loads `used_len` with **Acquire**, so it sees the payload
//!    (CMA writes are done by the kernel in our context before the
//!    syscall returns, i.e. before the Release store).
//! 8. Ring the receiver's doorbell.
//!
//! ## The sender's cache
//!
//! Validating a binding on every send cost a scan of the registry for
//! the key, a checksum of the header and one of the claimed descriptor,
//! and the lookup of the bounce segment under a lock: more than half the
//! instructions of an 8-byte send (docs/RESULTS.md, "Intra-node
//! transport"), for a message that issue 14 measured at 1,656 ns half
//! round trip against shm_signal's 92. A sender therefore
//! keeps, per binding generation, a [`BindingCache`]: the slot index, the
//! validated header (`SlotView`), each descriptor's validated view as it is
//! first claimed, the mapped bounce segment, and its own claim cursor.
//!
//! A cached binding is used only after the send is announced and the
//! slot's first cache line still reads `BOUND` with the generation, owner
//! pid, key and header checksum that were validated; any difference (an
//! unbind, a rebind, a scribble) sends it through the full validation,
//! which cuts the binding off if it fails. A cached descriptor view is
//! used only while the descriptor's `check` word (in the cache line of its
//! `used_len`, which the claim has just brought in) is the one validated.
//! Where a peer scribbled the sections or ranges and left the checksums,
//! the sender still copies by what it validated, i.e. into buffers the
//! receiver bound and promised to keep: the cache never widens where a
//! sender writes. What it no longer does is notice such a scribble and cut
//! the binding off; the receiver still refuses the delivery against its
//! private copy.
//!
//! ## Eager sends
//!
//! A message of at most [`Config::eager_max_bytes`](super::Config::eager_max_bytes)
//! bytes is copied into shared memory, never with a system call: up to
//! [`INLINE_BYTES`] into the descriptor's own inline words (`F_INLINE`),
//! which share the cache line of its `used_len`, larger ones into its
//! bounce area (`F_BOUNCED`). With the cached binding, the sender's
//! per-message traffic is the claim, payload and publish of one descriptor
//! line (plus the bounce lines of a larger message) and the doorbell
//! (which stays in the sender's cache while the receiver polls, see
//! `receiver`, "Receiving"). Both report [`CopyPath::Bounce`]: the bytes
//! are copied in and out; [`DmaStats::eager_sends`](super::DmaStats::eager_sends)
//! counts them.
//!
//! ## Pipelined bounce
//!
//! A bounced message of at least two chunks (`PIPE_MIN_BYTES`, 64 KiB)
//! from a claim of our own is copied in `PIPE_CHUNK_BYTES` (32 KiB) at a
//! time; after each chunk the sender stores the bytes copied so far in the
//! descriptor's `piped` word (Release), and after the first it sets
//! `F_PIPED` in `flags` and rings the receiver. A receiver polling in
//! [`super::Receiver::recv`] (or calling `try_recv`) copies out what has
//! arrived while the sender copies the rest, so the two copies of a
//! bounce overlap on two cores instead of following each other. The
//! publish carries `F_BOUNCED | F_PIPED`; the receiver then copies only
//! what it has not copied yet.
//!
//! Why the receiver may trust its early copies: it resets `flags` and
//! `piped` before it frees a descriptor (restock, repair, bind), so
//! between a free and the next publish the only writer of either is the
//! claimer that CASed the descriptor from free, whose progress grows from
//! 0 over one message; every check of a pipelined copy comes before its
//! first chunk, so once begun it ends in a publish, or the sender died.
//! A sender that takes over a dead sender's claim never pipelines and
//! publishes without `F_PIPED`, so the receiver copies that message whole,
//! whatever it copied of the dead sender's. A peer scribbling `flags` or
//! `piped` can make the receiver copy bytes of its own bounce area into
//! its own buffer early (within its capacity, never elsewhere), i.e.
//! garble a message, which writing into the bounce area could always do.
//!
//! ## Claims of dead senders
//!
//! A sender killed between its claim (step 4) and its publish (step 7)
//! never frees the descriptor; before layout version 3 the claim was a
//! bare `u64::MAX`, so the descriptor stayed claimed for the rest of the
//! binding's life, and a receiver with one descriptor received nothing
//! more. Now the claim word names the claimer. A sender that finds no free
//! descriptor looks at the claimed ones before it asks for a restock: a
//! claim whose process is dead ([`ProcId::is_alive`]: gone, or its pid
//! now names a process with another start time) is taken over by a CAS of
//! that exact claim word to ours (AcqRel, as a claim), counted in
//! [`DmaStats::claims_taken_over`](super::DmaStats::claims_taken_over).
//! Only one sender wins the CAS; a live claimer is never robbed; the
//! receiver keeps no state about claims, so it needs no change.
//!
//! What the dead sender left behind is harmless: it wrote only into the
//! descriptor's buffer sections or bounce area (which we overwrite, and
//! the receiver reads only `used_len` bytes of them once we publish) and
//! into its `flags`/`sender_pid`/assist job (we write ours before
//! publishing, and open a new job, or none). The receiver helps an
//! assisted copy only while the claim that named the job's sender stands
//! ([`super::assisted`]), so it stops copying the dead sender's chunks once
//! we take the claim over. Warts: a chunk the receiver had already started
//! when we took over still finishes; it reads from a dead process and
//! fails, unless in that microsecond window the pid was handed to another
//! process of the same user whose memory is mapped at those addresses. A
//! dead sender's `assist_open` count is never given back: the receiver then
//! looks for jobs on every empty poll (32 loads), a cost, not an error. A
//! zombie claimer counts as alive until it is reaped.
//!
//! A failed check of shared memory cuts the binding off with the matching
//! [`CutReason`] (see [`super::registry`], "Validation and cutting off");
//! a failure that is not the binding's fault (the receiver died, a copy
//! error) frees the claimed descriptor and reports it.

use super::assisted::AssistFail;
use super::cma;
use super::config::PathChoice;
use super::layout::{
    BOUND, BindingSlot, CLAIM_BIT, CutReason, DescIndex, DmaDesc, F_BOUNCED, F_INLINE, F_PIPED,
    INLINE_BYTES, MAX_DESCS, MAX_SECTIONS, NO_RANGE, SlotIndex, desc_check, is_claim, read_pairs,
    slot_key,
};
use super::proc_id::ProcId;
use super::registry::{InflightGuard, Registry, SlotView, bump};
use crate::Error;
use crate::key::DmaKey;
use crate::shm::Segment;
use crate::shm_signal::Wake;
use crate::sync::Ordering;
use std::sync::atomic::{AtomicU32 as LocalU32, Ordering as LocalOrdering};
use std::sync::{Arc, OnceLock};
use umn::AddrRange;

/// Bounced messages of at least this many bytes are pipelined (module
/// docs, "Pipelined bounce"): two chunks at least.
const PIPE_MIN_BYTES: u64 = 2 * PIPE_CHUNK_BYTES as u64;
/// Bytes per chunk of a pipelined bounce: large enough that the progress
/// store and the receiver's poll are noise next to the copy, small enough
/// that the receiver starts early (half a typical L2).
const PIPE_CHUNK_BYTES: usize = 32 << 10;

/// Which copy path a send took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPath {
    /// One `process_vm_writev` straight into the receiver's buffer.
    Cma,
    /// Through the receiver's bounce segment (two copies).
    Bounce,
}

/// What a successful send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    /// Bytes delivered: `min(source, destination)`.
    pub copied: u64,
    /// `true` when the source was longer than the destination descriptor.
    pub truncated: bool,
    /// Descriptor index used at the receiver.
    pub index: u32,
    /// Copy path taken.
    pub path: CopyPath,
    /// `true` when the first attempt found no free descriptor and the
    /// retry after the restock signal succeeded.
    pub retried: bool,
    /// Chunks the receiver copied itself (receiver-assisted copy); 0 when
    /// it did not help or the send was not split.
    pub receiver_chunks: u32,
}

/// A validated view of a claimed descriptor, copied out of shared memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct DstView {
    sections: [AddrRange; MAX_SECTIONS],
    nsec: usize,
    bounce_off: u64,
    /// The descriptor's `check` word this view was validated with.
    check: u64,
}

impl DstView {
    fn sections(&self) -> &[AddrRange] {
        &self.sections[..self.nsec]
    }
}

/// What a sender validated of one binding generation (module docs,
/// "The sender's cache"): process-local, shared by the threads of one
/// [`Registry`] handle.
#[derive(Debug)]
pub(super) struct BindingCache {
    key: DmaKey,
    slot: SlotIndex,
    gen_: u32,
    /// The slot's `check` word as validated: it covers pid, generation,
    /// descriptor count, key, bounce length and ranges.
    check: u64,
    view: SlotView,
    /// Descriptors validated so far, by index.
    descs: [OnceLock<DstView>; MAX_DESCS],
    /// The binding's bounce segment, mapped on first use.
    bounce: OnceLock<Arc<Segment>>,
    /// Where this process's next claim starts (not shared: a shared hint
    /// written on every send made the slot's first cache line change hands
    /// with every message).
    cursor: LocalU32,
}

impl BindingCache {
    /// Whether the first cache line of `s` still says what we validated:
    /// bound (SeqCst: after our announcement, see `registry`, "Announced
    /// sends"), same generation, owner, key and checksum.
    fn current(&self, s: &BindingSlot) -> bool {
        s.state.load(Ordering::SeqCst) == BOUND
            && s.gen_.load(Ordering::Relaxed) == self.gen_
            && s.pid.load(Ordering::Relaxed) == self.view.pid
            && s.check.load(Ordering::Relaxed) == self.check
            && slot_key(s) == self.key
    }
}

/// Claim a free descriptor of a binding of `ndesc` (validated) descriptors
/// with our claim word `me`, looking from index `start` on.
fn claim(s: &BindingSlot, ndesc: usize, me: u64, start: usize) -> Option<DescIndex> {
    let start = DescIndex::new(start, ndesc).map_or(0, DescIndex::get);
    (0..ndesc)
        .map(|k| (start + k) % ndesc)
        .find(|&j| {
            s.descs[j]
                .used_len
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
        .and_then(|j| DescIndex::new(j, ndesc))
}

/// Take over, with our claim word `me`, a descriptor claimed by a sender
/// that died (module docs, "Claims of dead senders").
fn take_over_dead_claim(s: &BindingSlot, ndesc: usize, me: u64) -> Option<DescIndex> {
    (0..ndesc)
        .find(|&j| {
            let d = &s.descs[j].used_len;
            let w = d.load(Ordering::Relaxed);
            is_claim(w)
                && w != me
                && !ProcId::from_word(w & !CLAIM_BIT).is_alive()
                && d.compare_exchange(w, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
        })
        .and_then(|j| DescIndex::new(j, ndesc))
}

fn validate_desc(d: &DmaDesc, view: &SlotView) -> Result<DstView, &'static str> {
    let nsec = d.nsec.load(Ordering::Relaxed);
    if nsec == 0 || nsec as usize > MAX_SECTIONS {
        return Err("section count out of range");
    }
    let secs = read_pairs::<MAX_SECTIONS>(&d.sections[..nsec as usize]);
    let secs = &secs[..nsec as usize];
    let bounce_off = d.bounce_off.load(Ordering::Relaxed);
    let check = d.check.load(Ordering::Relaxed);
    if check != desc_check(view.gen_, nsec, bounce_off, secs) {
        return Err("descriptor checksum mismatch");
    }
    let mut sections = [NO_RANGE; MAX_SECTIONS];
    let mut cap: u64 = 0;
    for (out, &(a, l)) in sections.iter_mut().zip(secs) {
        let r = AddrRange::from_start_len(a, l).map_err(|_| "section overflows")?;
        if r.is_empty() || !view.ranges().iter().any(|g| g.contains(&r)) {
            return Err("section empty or outside the registered ranges");
        }
        cap = cap.checked_add(l).ok_or("capacity overflows")?;
        *out = r;
    }
    if bounce_off
        .checked_add(cap)
        .is_none_or(|e| e > view.bounce_len)
    {
        return Err("bounce area out of bounds");
    }
    Ok(DstView {
        sections,
        nsec: nsec as usize,
        bounce_off,
        check,
    })
}

/// The first `n <= INLINE_BYTES` bytes of `src` as the inline words.
fn inline_words(src: &[&[u8]], n: usize) -> [u64; INLINE_BYTES / 8] {
    let mut bytes = [0u8; INLINE_BYTES];
    let mut at = 0;
    for piece in src {
        let k = piece.len().min(n - at);
        bytes[at..at + k].copy_from_slice(&piece[..k]);
        at += k;
        if at == n {
            break;
        }
    }
    let mut words = [0u64; INLINE_BYTES / 8];
    for (w, c) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        *w = u64::from_le_bytes(b);
    }
    words
}

impl Registry {
    /// Send the concatenation of `src` to the receiver bound to `key`.
    ///
    /// Copies `min(source, destination descriptor)` bytes; the report says
    /// whether it truncated and which path ran ([`Config::path_for`]
    /// chooses by size; eager sends report [`CopyPath::Bounce`]: they are
    /// copied in and out through shared memory). Never delivers to a
    /// binding of this process.
    ///
    /// # Errors
    /// [`Error::EmptySend`], [`Error::NoReceiver`], [`Error::CutOff`],
    /// [`Error::NoFreeDescriptor`], [`Error::CorruptDescriptor`] (the
    /// binding is cut off), [`Error::ProcessVmWritev`] (receiver gone).
    ///
    /// [`Config::path_for`]: super::Config::path_for
    pub fn send(&self, key: DmaKey, src: &[&[u8]]) -> Result<SendReport, Error> {
        let total: u64 = src.iter().map(|s| s.len() as u64).sum();
        if total == 0 {
            return Err(Error::EmptySend);
        }
        let corrupt = |index: u32, reason: &'static str| Error::CorruptDescriptor {
            key,
            index,
            reason,
            sender_pid: 0,
        };
        let (b, _guard) = self.binding(key)?;
        let s = self.slot(b.slot);
        let view = &b.view;
        if s.banned
            .iter()
            .any(|p| p.load(Ordering::Relaxed) == self.inner.me)
        {
            return Err(Error::CutOff {
                key,
                reason: CutReason::ImpossibleLength.as_str(),
            });
        }

        let (j, retried, taken_over) = self.claim_or_wait(s, &b, key)?;
        let index = j.get() as u32;
        let d = &s.descs[j.get()];
        let dst = match self.desc_view(&b, j, d) {
            Ok(v) => v,
            Err(reason) => {
                self.cut_off(s, CutReason::Descriptor);
                return Err(corrupt(index, reason));
            }
        };
        let cap: u64 = dst.sections().iter().map(AddrRange::len).sum();
        let n = total.min(cap);

        let choice = self.inner.config.path_for(n);
        let mut path = CopyPath::Bounce;
        let mut flags = F_BOUNCED;
        let mut receiver_chunks = 0;
        if choice == PathChoice::Eager && n <= INLINE_BYTES as u64 {
            // Inline: the payload goes into the cache line of `used_len`.
            for (w, v) in d.inline.iter().zip(inline_words(src, n as usize)) {
                w.store(v, Ordering::Relaxed);
            }
            flags = F_INLINE;
        } else if matches!(choice, PathChoice::Single | PathChoice::Assisted)
            && !self.cma_refused(view.pid)
        {
            let copied = if choice == PathChoice::Assisted {
                self.assisted_write(s, d, view, src, dst.sections(), n)
            } else {
                cma::write(view.pid, src, dst.sections(), n)
                    .map(|()| 0)
                    .map_err(AssistFail::Io)
            };
            match copied {
                Ok(c) => {
                    path = CopyPath::Cma;
                    flags = 0;
                    receiver_chunks = c;
                }
                Err(AssistFail::Gone) => return Err(Error::NoReceiver(key)),
                Err(AssistFail::Stalled) => {
                    self.cut_off(s, CutReason::AssistStalled);
                    return Err(Error::CutOff {
                        key,
                        reason: CutReason::AssistStalled.as_str(),
                    });
                }
                Err(AssistFail::Io(e)) if e.raw_os_error() == Some(libc::EPERM) => {
                    bump(&self.inner.stats.cma_refusals, 1);
                    if let Ok(mut m) = self.inner.cma_refused.lock() {
                        m.insert(view.pid);
                    }
                }
                Err(AssistFail::Io(e)) if e.raw_os_error() == Some(libc::EFAULT) => {
                    self.cut_off(s, CutReason::Unmapped);
                    return Err(corrupt(index, CutReason::Unmapped.as_str()));
                }
                Err(AssistFail::Io(source)) => {
                    d.used_len.store(0, Ordering::Release);
                    return Err(Error::ProcessVmWritev {
                        pid: view.pid,
                        source,
                    });
                }
            }
        }
        if flags == F_BOUNCED {
            // Pipelined only from a claim of our own: the receiver trusts
            // what it copied out early only when the publisher is the
            // sender it copied from (module docs, "Pipelined bounce").
            let pipe = (choice == PathChoice::Bounce && n >= PIPE_MIN_BYTES && !taken_over)
                .then_some((s, d));
            match self.bounce_write(key, &b, dst.bounce_off, src, n, pipe) {
                Ok(true) => {
                    flags |= F_PIPED;
                    bump(&self.inner.stats.piped_sends, 1);
                }
                Ok(false) => {}
                Err(e) => {
                    match e {
                        Error::CorruptDescriptor { .. } => self.cut_off(s, CutReason::Bounce),
                        _ => d.used_len.store(0, Ordering::Release),
                    }
                    return Err(e);
                }
            }
        }

        d.flags.store(flags, Ordering::Relaxed);
        d.sender_pid.store(self.inner.me, Ordering::Relaxed);
        b.cursor
            .store(((j.get() + 1) % view.ndesc) as u32, LocalOrdering::Relaxed);
        // Release: the payload (CMA, bounce or inline) happens-before the
        // receiver's Acquire load of used_len.
        d.used_len.store(n, Ordering::Release);
        s.signal.arrived.notify();

        let st = &self.inner.stats;
        bump(
            if path == CopyPath::Cma {
                &st.cma_sends
            } else {
                &st.bounce_sends
            },
            1,
        );
        if choice == PathChoice::Eager {
            bump(&st.eager_sends, 1);
        }
        bump(&st.bytes_sent, n);
        if receiver_chunks > 0 {
            bump(&st.assisted_sends, 1);
        }
        Ok(SendReport {
            copied: n,
            truncated: n < total,
            index,
            path,
            retried,
            receiver_chunks,
        })
    }

    /// Steps 1–3 of a send: the validated binding of `key` with our send
    /// announced on it, from the cache when its slot still says what we
    /// validated, else found and validated afresh (and cached).
    fn binding(&self, key: DmaKey) -> Result<(Arc<BindingCache>, InflightGuard<'_>), Error> {
        let cached = {
            let m = self
                .inner
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            m.iter().flatten().find(|b| b.key == key).cloned()
        };
        if let Some(b) = cached {
            let s = self.slot(b.slot);
            let guard = InflightGuard::enter(s, self.inner.me);
            if b.current(s) {
                return Ok((b, guard));
            }
        }
        let i = self.find_slot(key)?;
        let s = self.slot(i);
        let guard = InflightGuard::enter(s, self.inner.me);
        // With the send announced, unbind cannot complete: if the slot is
        // still bound to `key` now, it stays so until we are done.
        if s.state.load(Ordering::SeqCst) != BOUND || slot_key(s) != key {
            return Err(Error::NoReceiver(key));
        }
        bump(&self.inner.stats.binding_validations, 1);
        let view = match self.view_slot(s, key) {
            Ok(v) => v,
            Err(reason) => {
                self.cut_off(s, reason);
                return Err(Error::CorruptDescriptor {
                    key,
                    index: u32::MAX,
                    reason: reason.as_str(),
                    sender_pid: 0,
                });
            }
        };
        if view.pid == self.inner.me {
            return Err(Error::NoReceiver(key));
        }
        let b = Arc::new(BindingCache {
            key,
            slot: i,
            gen_: view.gen_,
            check: s.check.load(Ordering::Relaxed),
            view,
            descs: std::array::from_fn(|_| OnceLock::new()),
            bounce: OnceLock::new(),
            cursor: LocalU32::new(0),
        });
        // Keep the binding only while the slot still says what we
        // validated (a check word that changed under us is found by the
        // next send's `current`).
        let mut m = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m[i.get()] = Some(b.clone());
        Ok((b, guard))
    }

    /// Step 5: the validated view of claimed descriptor `j`: the cached
    /// one while the descriptor's `check` word is the one it was
    /// validated with, else validated afresh (and cached when none was).
    fn desc_view(
        &self,
        b: &BindingCache,
        j: DescIndex,
        d: &DmaDesc,
    ) -> Result<DstView, &'static str> {
        let cell = &b.descs[j.get()];
        if let Some(v) = cell.get() {
            if d.check.load(Ordering::Relaxed) == v.check {
                return Ok(*v);
            }
        }
        let v = validate_desc(d, &b.view)?;
        let _ = cell.set(v);
        Ok(v)
    }

    /// Step 4 of a send: claim a free descriptor; one retry after a restock
    /// signal. Returns the descriptor, whether it took the retry, and
    /// whether it took over a dead sender's claim.
    fn claim_or_wait(
        &self,
        s: &BindingSlot,
        b: &BindingCache,
        key: DmaKey,
    ) -> Result<(DescIndex, bool, bool), Error> {
        let view = &b.view;
        let me = CLAIM_BIT | self.inner.id.word();
        let start = b.cursor.load(LocalOrdering::Relaxed) as usize;
        // The common case first, without the restock doorbell's ticket: a
        // sender that reads `seq` on every send makes that line, which the
        // receiver writes on every restock, change hands with every message.
        if let Some(j) = claim(s, view.ndesc, me, start) {
            return Ok((j, false, false));
        }
        let mut retried = false;
        let restocked = &s.signal.restocked;
        loop {
            // The ticket first, then the look at the descriptors: a restock
            // after the ticket ends the wait below at once, one before it
            // is seen by the claim (`shm_signal`, "Many waiters").
            let ticket = restocked.ticket();
            if let Some(j) = claim(s, view.ndesc, me, start) {
                return Ok((j, retried, false));
            }
            if let Some(j) = take_over_dead_claim(s, view.ndesc, me) {
                bump(&self.inner.stats.claims_taken_over, 1);
                log::warn!(
                    "regcache-transport: took over descriptor {} of a sender that died before publishing",
                    j.get()
                );
                return Ok((j, retried, true));
            }
            if retried {
                return Err(Error::NoFreeDescriptor(key));
            }
            retried = true;
            bump(&self.inner.stats.no_free_first_try, 1);
            s.want_restock.store(1, Ordering::SeqCst);
            s.signal.arrived.notify();
            let _: Wake = restocked.wait(
                ticket,
                self.inner.config.spin,
                Some(self.inner.config.restock_wait),
            );
            if s.state.load(Ordering::SeqCst) != BOUND
                || s.gen_.load(Ordering::Relaxed) != view.gen_
            {
                return Err(Error::NoReceiver(key));
            }
        }
    }

    fn cma_refused(&self, pid: u32) -> bool {
        self.inner
            .cma_refused
            .lock()
            .map(|m| m.contains(&pid))
            .unwrap_or(false)
    }

    /// The bounce path: copy the first `n` bytes of `src` into the bounce
    /// area at `off` of the binding `b` (mapping its bounce segment on
    /// first use per binding generation). With `pipe`, the slot and the
    /// claimed descriptor, the copy is pipelined (module docs, "Pipelined
    /// bounce"). Returns whether it was; every check comes before the
    /// first byte is copied, so a pipelined copy, once begun, finishes.
    fn bounce_write(
        &self,
        key: DmaKey,
        b: &BindingCache,
        off: u64,
        src: &[&[u8]],
        n: u64,
        pipe: Option<(&BindingSlot, &DmaDesc)>,
    ) -> Result<bool, Error> {
        let view = &b.view;
        let seg = match b.bounce.get() {
            Some(seg) => seg,
            None => {
                let seg = Arc::new(Segment::open(&self.bounce_name(b.slot, view.gen_))?);
                b.bounce.get_or_init(|| seg)
            }
        };
        let end = off.checked_add(n);
        if end.is_none_or(|e| e > view.bounce_len || e > seg.len() as u64) {
            return Err(Error::CorruptDescriptor {
                key,
                index: u32::MAX,
                reason: CutReason::Bounce.as_str(),
                sender_pid: 0,
            });
        }
        let mut at = off as usize;
        let mut left = n as usize;
        // Chunk boundaries: the whole message at once, or PIPE_CHUNK_BYTES
        // at a time with the progress published after each.
        let chunk = if pipe.is_some() {
            PIPE_CHUNK_BYTES
        } else {
            usize::MAX
        };
        let mut since_mark = 0usize;
        let mut done = 0u64;
        for piece in src {
            let mut p: &[u8] = piece;
            while left > 0 && !p.is_empty() {
                let k = p.len().min(left).min(chunk - since_mark);
                // SAFETY: `at + k <= off + n <= seg.len()` (checked above);
                // the bounce area of this descriptor is ours while we hold
                // the claimed used_len; the source is a valid slice.
                unsafe {
                    std::ptr::copy_nonoverlapping(p.as_ptr(), seg.as_ptr().add(at), k);
                }
                at += k;
                left -= k;
                p = &p[k..];
                since_mark += k;
                done += k as u64;
                if let Some((s, d)) = pipe {
                    if since_mark == chunk || left == 0 {
                        since_mark = 0;
                        // Release: the chunk happens-before a receiver's
                        // Acquire load of `piped` that reads it.
                        d.assist.piped.store(done, Ordering::Release);
                        if done as usize <= chunk {
                            // First chunk: mark the copy pipelined and
                            // wake a sleeping receiver to copy along.
                            d.flags.store(F_PIPED, Ordering::Release);
                            s.signal.arrived.notify();
                        }
                    }
                }
            }
            if left == 0 {
                break;
            }
        }
        Ok(pipe.is_some())
    }
}
