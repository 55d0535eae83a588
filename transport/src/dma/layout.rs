//! The shared-memory layout: the fixed-width records of the registry
//! segment, their checksums, and the typed views of the few values in them
//! that index or name something (a slot, a cut-off reason).
//!
//! One registry segment is a [`RegistryHeader`] followed by [`NSLOTS`]
//! [`BindingSlot`]s; each slot holds [`MAX_DESCS`] [`DmaDesc`]s, each
//! descriptor one [`AssistJob`]. Every field is an atomic (or padding), so
//! every bit pattern is a valid record: another process may write anything
//! at any time, and the code that reads a record checks it (checksums,
//! counts, ranges) instead of trusting it. The sizes and offsets are fixed
//! by the assertions below: processes built from different commits of
//! this crate share a registry only when they agree on them (and on
//! `REG_VERSION`, checked at open).
//!
//! ## Atomics
//!
//! All shared fields are atomics. Immutable-after-bind fields (key,
//! ranges, sections, checksums) are written Relaxed before the slot's
//! `state := BOUND` Release store and read Relaxed after an Acquire load of
//! `state` (producer: the binding receiver; consumers: senders).
//! `used_len`: producer the sender (Release, after the data), consumer the
//! receiver (Acquire); the receiver frees with a Release store of 0 and
//! senders claim with an AcqRel CAS 0 → claim word ([`CLAIM_BIT`] and the
//! claimer's pid and start time), so the receiver's reads of the old
//! payload happen before the next sender's writes. A sender takes over a
//! dead claimer's descriptor with an AcqRel CAS of that exact claim word
//! to its own (`send`, "Claims of dead senders"). The registry lock is a
//! CAS 0 → holder word (Acquire) and a store of 0 (Release)
//! (`registry`, "The registry lock"). `inflight`/`state` for unbind:
//! SeqCst (store-load). The inline payload words ([`DmaDesc::inline`])
//! are written Relaxed by the claiming sender before its Release store of
//! `used_len` and read Relaxed by the receiver after its Acquire load, like
//! any payload.
//!
//! ## Indices and codes from shared memory
//!
//! A slot index is a [`SlotIndex`]: made only by [`SlotIndex::new`] (which
//! refuses an out-of-range value) or by iterating [`SlotIndex::all`], so
//! the code that turns it into an address needs no clamp. A descriptor
//! index goes through [`DescIndex::new`] against the binding's validated
//! descriptor count.
//! The cut-off reason is stored as the `u32` of a [`CutReason`]; a value
//! this build does not know is reported as such ([`CutReason::from_shared`]),
//! never read as some other reason.

use crate::key::DmaKey;
use crate::shm::SharedRecord;
use crate::shm_signal::{BroadcastRecord, IrqRecord};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use umn::AddrRange;

/// Binding slots per registry.
pub const NSLOTS: usize = 32;
/// Descriptors per binding.
pub const MAX_DESCS: usize = 32;
/// Sections per descriptor.
pub const MAX_SECTIONS: usize = 8;
/// Registered ranges per binding.
pub const MAX_RANGES: usize = 4;
/// Banned sender pids per binding.
pub const MAX_BANNED: usize = 4;
/// Concurrent sends per binding announced by pid (more are counted).
pub const MAX_SENDERS: usize = 16;

pub(super) const REG_MAGIC: u32 = u32::from_le_bytes(*b"RCDR");
/// Layout version, checked at open: a peer of another version gets
/// [`crate::Error::BadRegistry`]. 3 (issue 15): the lock word names its
/// holder by pid and start time (`RegistryHeader::lock`, 64 bits at
/// offset 24); a claimed descriptor's `used_len` names its claimer
/// ([`CLAIM_BIT`]) instead of being `u64::MAX`; the restock doorbell is a
/// [`BroadcastRecord`] that many senders may wait on
/// ([`BindingDoorbells`]). 4 (issue 14): a descriptor carries an inline
/// payload area ([`DmaDesc::inline`], [`INLINE_BYTES`] at offset 40, where
/// version 3 had reserved words) and the [`F_INLINE`] flag; a pipelined
/// bounce ([`F_PIPED`]) publishes its progress in [`AssistJob::piped`]
/// (offset 56 of the job, reserved in 3); senders no longer write
/// `next_dma`.
pub(super) const REG_VERSION: u32 = 4;

/// Slot states (`BindingSlot::state`).
pub(super) const FREE: u32 = 0;
pub(super) const BOUND: u32 = 2;
pub(super) const CUT_OFF: u32 = 3;
pub(super) const UNBINDING: u32 = 4;

/// Bit 63 of `used_len`: the descriptor is claimed by a sender that has
/// not published yet; the other 63 bits are the claimer's
/// [`ProcId::word`](super::proc_id::ProcId::word) (pid and start time),
/// so that another sender can tell a claim of a dead process (see `send`,
/// "Claims of dead senders"). A length never has it: bind refuses a
/// capacity of 2⁶³ bytes or more.
pub(super) const CLAIM_BIT: u64 = 1 << 63;

/// Whether a `used_len` value is a claim (not 0, not a length).
pub(super) fn is_claim(used: u64) -> bool {
    used & CLAIM_BIT != 0
}
/// `flags` bit: the payload is in the bounce segment.
pub(super) const F_BOUNCED: u32 = 1;
/// `flags` bit: the payload (at most [`INLINE_BYTES`]) is in the
/// descriptor's own [`DmaDesc::inline`] words, in the cache line of its
/// `used_len` (the eager path of `send`, "Eager sends").
pub(super) const F_INLINE: u32 = 2;
/// `flags` bit: a pipelined bounce (`send`, "Pipelined bounce"): while
/// the descriptor is claimed, [`AssistJob::piped`] counts the bytes the
/// sender has copied into the bounce area so far, which a polling
/// receiver may copy out before the publish; published with
/// [`F_BOUNCED`], it tells the receiver that those copies were of this
/// message (a sender that took over a dead claim never sets it).
pub(super) const F_PIPED: u32 = 4;

/// Bytes of payload a descriptor holds inline: the three words after
/// `check`, which end its first cache line.
pub const INLINE_BYTES: usize = 24;

/// `{addr, len}` of one section, in the receiver's address space (bytes).
#[repr(C)]
#[derive(Debug, Default)]
pub struct SharedSection {
    pub(super) addr: AtomicU64,
    pub(super) len: AtomicU64,
}

/// One DMA descriptor: 384 bytes. Its first cache line holds everything a
/// small message touches: `used_len`, `flags`, `sender_pid`, the
/// immutable `check` the sender compares with its cached validation, and
/// the inline payload.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct DmaDesc {
    /// 0: free; `CLAIM_BIT | ProcId::word` of the claimer: being filled;
    /// else bytes delivered.
    pub(super) used_len: AtomicU64,
    pub(super) flags: AtomicU32,
    pub(super) sender_pid: AtomicU32,
    pub(super) nsec: AtomicU32,
    _pad: u32,
    pub(super) bounce_off: AtomicU64,
    pub(super) check: AtomicU64,
    /// Inline payload of an [`F_INLINE`] delivery: bytes `8k..8k+8` of
    /// the message in word `k`, little-endian. Written Relaxed by the
    /// claiming sender before its Release store of `used_len`.
    pub(super) inline: [AtomicU64; 3],
    pub(super) sections: [SharedSection; MAX_SECTIONS],
    pub(super) assist: AssistJob,
}

/// A receiver-assisted copy into a claimed descriptor (see
/// `dma::assisted`): 192 bytes. Written by the sender that holds the
/// descriptor claimed; the receiver only claims chunks (CAS on `ticket`)
/// and reports them (`done`, `failed`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct AssistJob {
    /// `(seq << 32) | (front << 16) | back`: chunks `front..back` are
    /// unclaimed; the sender claims at the front, the receiver at the back,
    /// within the same `seq` (`assist`).
    pub(super) ticket: AtomicU64,
    /// Chunks finished, by either side, in the current job.
    pub(super) done: AtomicU32,
    /// The sender's pid (whose address space `src` is in).
    pub(super) src_pid: AtomicU32,
    /// Bit `k`: the receiver could not copy chunk `k`.
    pub(super) failed: AtomicU64,
    /// Bytes to copy.
    pub(super) total: AtomicU64,
    /// Bytes per chunk (the last one is shorter).
    pub(super) chunk: AtomicU64,
    pub(super) nsrc: AtomicU32,
    _pad: u32,
    /// FNV over the binding generation, `seq` and all fields above.
    pub(super) check: AtomicU64,
    /// Not part of the assist job: the bytes of a pipelined bounce
    /// ([`F_PIPED`]) copied into the bounce area so far. Written by the
    /// claiming sender (Release, after each chunk), read by the receiver
    /// (Acquire), reset to 0 by the receiver before it frees the
    /// descriptor.
    pub(super) piped: AtomicU64,
    pub(super) src: [SharedSection; MAX_SECTIONS],
}

/// One binding: 6528 bytes. Its first cache line (state, pid, generation,
/// key, checksum) is written only by bind, unbind and cut-off, so senders
/// checking their cached validation against it share it read-only.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct BindingSlot {
    pub(super) state: AtomicU32,
    pub(super) pid: AtomicU32,
    pub(super) gen_: AtomicU32,
    pub(super) ndesc: AtomicU32,
    /// Set to 0 by bind; unused since layout version 4 (a sender writing
    /// it on every send made this line, which the receiver polls, change
    /// hands with every message; each sender keeps its own claim cursor).
    pub(super) next_dma: AtomicU32,
    pub(super) inflight: AtomicU32,
    /// A [`CutReason`] as `u32`.
    pub(super) cut_reason: AtomicU32,
    pub(super) nranges: AtomicU32,
    pub(super) key_dev: AtomicU64,
    pub(super) key_ino: AtomicU64,
    pub(super) key_off: AtomicU64,
    pub(super) check: AtomicU64,
    pub(super) bounce_len: AtomicU64,
    pub(super) banned: [AtomicU32; MAX_BANNED],
    /// Set by a sender that found no free descriptor; cleared by the
    /// receiver in [`super::Receiver::restock_requested`].
    pub(super) want_restock: AtomicU32,
    _pad: u32,
    /// Assist jobs open on this binding: a hint that lets
    /// [`super::Receiver::try_recv`] skip looking for jobs with one load.
    pub(super) assist_open: AtomicU32,
    _pad2: u32,
    _reserved: u64,
    pub(super) ranges: [SharedSection; MAX_RANGES],
    pub(super) signal: BindingDoorbells,
    pub(super) descs: [DmaDesc; MAX_DESCS],
    /// Pids of senders in the middle of a send (0: free entry).
    pub(super) senders: [AtomicU32; MAX_SENDERS],
}

/// The doorbells of a binding: 192 bytes, where layout version 2 had a
/// [`ShmSignalDesc`](crate::shm_signal::ShmSignalDesc) whose `south`
/// record every waiting sender shared (see `shm_signal`, "Many waiters").
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(super) struct BindingDoorbells {
    /// Version 2's magic and version of the `ShmSignalDesc`; unused.
    _retired: [u32; 16],
    /// "A delivery, an assist job, a restock request or a cut-off": rung by
    /// senders, waited on by the receiver alone (its owner).
    pub(super) arrived: IrqRecord,
    /// "Restocked": rung by the receiver on every restock or repair,
    /// waited on by any number of senders short of a descriptor.
    pub(super) restocked: BroadcastRecord,
}

/// Registry header: 64 bytes.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct RegistryHeader {
    pub(super) magic: AtomicU32,
    pub(super) version: AtomicU32,
    pub(super) nslots: AtomicU32,
    pub(super) max_descs: AtomicU32,
    pub(super) max_sections: AtomicU32,
    /// Version 2's lock word (the holder's pid alone); unused since 3.
    _retired_lock: u32,
    /// Registry lock: 0, or the holder's `ProcId::word` (pid and start
    /// time; see `proc_id`).
    pub(super) lock: AtomicU64,
    _reserved: [u32; 8],
}

// SAFETY: only atomics and padding integers; every bit pattern is valid.
unsafe impl SharedRecord for DmaDesc {}
// SAFETY: as above.
unsafe impl SharedRecord for AssistJob {}
// SAFETY: as above.
unsafe impl SharedRecord for BindingSlot {}
// SAFETY: as above.
unsafe impl SharedRecord for RegistryHeader {}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<SharedSection>() == 16);
    assert!(size_of::<DmaDesc>() == 384);
    assert!(size_of::<AssistJob>() == 192);
    assert!(offset_of!(DmaDesc, assist) == 192);
    assert!(offset_of!(AssistJob, check) == 48);
    assert!(offset_of!(AssistJob, piped) == 56);
    assert!(offset_of!(AssistJob, src) == 64);
    assert!(offset_of!(BindingSlot, assist_open) == 96);
    assert!(offset_of!(DmaDesc, used_len) == 0);
    assert!(offset_of!(DmaDesc, flags) == 8);
    assert!(offset_of!(DmaDesc, sender_pid) == 12);
    assert!(offset_of!(DmaDesc, nsec) == 16);
    assert!(offset_of!(DmaDesc, bounce_off) == 24);
    assert!(offset_of!(DmaDesc, check) == 32);
    assert!(offset_of!(DmaDesc, inline) == 40);
    assert!(offset_of!(DmaDesc, inline) + INLINE_BYTES == 64);
    assert!(offset_of!(DmaDesc, sections) == 64);
    assert!(size_of::<RegistryHeader>() == 64);
    assert!(offset_of!(RegistryHeader, lock) == 24);
    assert!(offset_of!(BindingSlot, key_dev) == 32);
    assert!(offset_of!(BindingSlot, check) == 56);
    assert!(offset_of!(BindingSlot, bounce_len) == 64);
    assert!(offset_of!(BindingSlot, banned) == 72);
    assert!(offset_of!(BindingSlot, ranges) == 112);
    assert!(offset_of!(BindingSlot, signal) == 192);
    assert!(size_of::<BindingDoorbells>() == 192);
    assert!(offset_of!(BindingDoorbells, arrived) == 64);
    assert!(offset_of!(BindingDoorbells, restocked) == 128);
    assert!(offset_of!(BindingSlot, descs) == 384);
    assert!(offset_of!(BindingSlot, senders) == 384 + 384 * MAX_DESCS);
    assert!(size_of::<BindingSlot>() == 384 + 384 * MAX_DESCS + 4 * MAX_SENDERS);
};

/// Total registry segment size in bytes.
pub const REGISTRY_BYTES: usize =
    std::mem::size_of::<RegistryHeader>() + NSLOTS * std::mem::size_of::<BindingSlot>();

/// The index of a binding slot, `< NSLOTS` by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotIndex(usize);

impl SlotIndex {
    /// `Some` when `i < NSLOTS`.
    pub(super) fn new(i: usize) -> Option<Self> {
        (i < NSLOTS).then_some(Self(i))
    }

    /// Every slot, in order.
    pub(super) fn all() -> impl Iterator<Item = Self> {
        (0..NSLOTS).filter_map(Self::new)
    }

    /// The index as a number (`< NSLOTS`).
    pub(super) fn get(self) -> usize {
        self.0
    }

    /// Byte offset of the slot in the registry segment: the slot ends at
    /// or before [`REGISTRY_BYTES`].
    pub(super) fn offset(self) -> usize {
        std::mem::size_of::<RegistryHeader>() + self.0 * std::mem::size_of::<BindingSlot>()
    }
}

impl std::fmt::Display for SlotIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The index of a descriptor of a binding, `< ndesc` (its validated
/// descriptor count, itself `<= MAX_DESCS`) by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DescIndex(usize);

impl DescIndex {
    /// `Some` when `i < ndesc <= MAX_DESCS`.
    pub(super) fn new(i: usize, ndesc: usize) -> Option<Self> {
        (i < ndesc && ndesc <= MAX_DESCS).then_some(Self(i))
    }

    /// The index as a number.
    pub(super) fn get(self) -> usize {
        self.0
    }
}

/// Why a binding was cut off, as stored in `BindingSlot::cut_reason`.
/// The numbers are part of the shared layout: never renumber.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CutReason {
    /// No reason recorded (a binding that went away without a cut-off).
    Unknown = 0,
    /// The slot header failed its checksum or bounds.
    Header = 1,
    /// A descriptor failed its checksum or bounds.
    Descriptor = 2,
    /// `process_vm_writev` hit an unmapped receiver buffer.
    Unmapped = 3,
    /// The bounce area of a descriptor lies outside the bounce segment.
    Bounce = 4,
    /// A sender published more bytes than the descriptor holds.
    ImpossibleLength = 5,
    /// The receiver held assist chunks for too long.
    AssistStalled = 6,
}

/// A `cut_reason` value this build does not know (shared memory written
/// by something else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UnknownCutReason(pub(super) u32);

impl CutReason {
    /// The words of [`crate::Error::CutOff`] and
    /// [`crate::Error::CorruptDescriptor`].
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CutReason::Unknown => "unknown",
            CutReason::Header => "binding header failed its checksum or bounds",
            CutReason::Descriptor => "descriptor failed its checksum or bounds",
            CutReason::Unmapped => "receiver buffer not mapped (EFAULT)",
            CutReason::Bounce => "bounce area out of bounds",
            CutReason::ImpossibleLength => "sender wrote an impossible length",
            CutReason::AssistStalled => "receiver stalled in an assisted copy",
        }
    }

    /// The reason stored as `code` in shared memory.
    ///
    /// # Errors
    /// [`UnknownCutReason`] for a code that names no reason.
    pub(super) fn from_shared(code: u32) -> Result<Self, UnknownCutReason> {
        [
            Self::Unknown,
            Self::Header,
            Self::Descriptor,
            Self::Unmapped,
            Self::Bounce,
            Self::ImpossibleLength,
            Self::AssistStalled,
        ]
        .into_iter()
        .find(|&r| r as u32 == code)
        .ok_or(UnknownCutReason(code))
    }

    /// The words for the reason stored in `slot` (read Relaxed): the
    /// reason's, or, for a code no reason has, words that say so.
    pub(super) fn words_of(slot: &BindingSlot) -> &'static str {
        match Self::from_shared(slot.cut_reason.load(Ordering::Relaxed)) {
            Ok(r) => r.as_str(),
            Err(UnknownCutReason(code)) => {
                log::warn!(
                    "regcache-transport: cut-off reason code {code} in shared memory is not one this build knows"
                );
                "cut-off reason code in shared memory is not a known reason"
            }
        }
    }
}

/// A word-at-a-time multiplicative hash (the FNV offset basis, then
/// `rotl 5, xor, multiply` by the 64-bit golden ratio per word, as in
/// rustc's FxHasher), finished with a xor-shift so the last word reaches
/// the low bits: detects random garbage and torn reads, not an adversary.
pub(super) fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    h ^ (h >> 32)
}

/// `fnv` over `head`, then the `{addr, len}` pairs of `pairs`: the shape
/// of every checksum here (fixed fields, then a variable list).
pub(super) fn fnv_with_pairs<const N: usize>(head: [u64; N], pairs: &[(u64, u64)]) -> u64 {
    fnv(head
        .into_iter()
        .chain(pairs.iter().flat_map(|&(a, l)| [a, l])))
}

/// Checksum of a descriptor's immutable-after-bind fields.
pub(super) fn desc_check(gen_: u32, nsec: u32, bounce_off: u64, secs: &[(u64, u64)]) -> u64 {
    fnv_with_pairs([u64::from(gen_), u64::from(nsec), bounce_off], secs)
}

/// Checksum of a slot header's immutable-after-bind fields.
pub(super) fn slot_check(
    pid: u32,
    gen_: u32,
    ndesc: u32,
    key: DmaKey,
    bounce_len: u64,
    ranges: &[(u64, u64)],
) -> u64 {
    fnv_with_pairs(
        [
            u64::from(pid),
            u64::from(gen_),
            u64::from(ndesc),
            key.dev,
            key.ino,
            key.offset,
            bounce_len,
            ranges.len() as u64,
        ],
        ranges,
    )
}

/// The key a slot is bound to (Relaxed loads: after an Acquire of `state`).
pub(super) fn slot_key(s: &BindingSlot) -> DmaKey {
    DmaKey {
        dev: s.key_dev.load(Ordering::Relaxed),
        ino: s.key_ino.load(Ordering::Relaxed),
        offset: s.key_off.load(Ordering::Relaxed),
    }
}

/// Filler of fixed-size range arrays.
pub(super) const NO_RANGE: AddrRange = match AddrRange::from_start_len(0, 0) {
    Ok(r) => r,
    Err(_) => panic!("the empty range at 0 is valid"),
};

/// `{addr, len}` pairs read from shared memory: the first
/// `min(secs.len(), N)` entries; the rest are `(0, 0)`.
pub(super) fn read_pairs<const N: usize>(secs: &[SharedSection]) -> [(u64, u64); N] {
    let mut out = [(0, 0); N];
    let n = secs.len().min(N);
    for (o, s) in out.iter_mut().zip(&secs[..n]) {
        *o = (
            s.addr.load(Ordering::Relaxed),
            s.len.load(Ordering::Relaxed),
        );
    }
    out
}

/// Store `pairs` into `secs` (Relaxed: published by a later Release) and
/// zero the entries after them.
pub(super) fn write_pairs(secs: &[SharedSection], pairs: &[(u64, u64)]) {
    for (k, dst) in secs.iter().enumerate() {
        let (a, l) = pairs.get(k).copied().unwrap_or((0, 0));
        dst.addr.store(a, Ordering::Relaxed);
        dst.len.store(l, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_reason_codes_round_trip_and_unknown_codes_are_errors() {
        for code in 0..7 {
            let r = CutReason::from_shared(code).unwrap();
            assert_eq!(r as u32, code);
        }
        assert_eq!(CutReason::ImpossibleLength as u32, 5);
        assert_eq!(CutReason::from_shared(7), Err(UnknownCutReason(7)));
        assert_eq!(
            CutReason::from_shared(u32::MAX),
            Err(UnknownCutReason(u32::MAX))
        );
    }

    #[test]
    fn indices_refuse_out_of_range_values() {
        assert_eq!(
            SlotIndex::new(NSLOTS - 1).map(SlotIndex::get),
            Some(NSLOTS - 1)
        );
        assert_eq!(SlotIndex::new(NSLOTS), None);
        assert_eq!(SlotIndex::all().count(), NSLOTS);
        let last = SlotIndex::new(NSLOTS - 1).unwrap();
        assert!(last.offset() + std::mem::size_of::<BindingSlot>() <= REGISTRY_BYTES);
        assert_eq!(DescIndex::new(3, 4).map(DescIndex::get), Some(3));
        assert_eq!(DescIndex::new(4, 4), None);
        assert_eq!(DescIndex::new(0, MAX_DESCS + 1), None);
    }
}
