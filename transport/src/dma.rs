//! # Keyed DMA (after lguest's `bind_dma` / `send_dma`)
//!
//! ## The registry
//!
//! One shared segment per job (`/dev/shm/<name>`, created `O_EXCL` mode
//! 0600) holds a [`RegistryHeader`] and [`NSLOTS`] [`BindingSlot`]s. A
//! receiver *binds* a key by filling a free slot under the registry lock:
//! its pid, the key, up to [`MAX_RANGES`] registered ranges (its buffers
//! must lie inside them), up to [`MAX_DESCS`] [`DmaDesc`]s of up to
//! [`MAX_SECTIONS`] `{addr, len}` sections each, a checksum over all of
//! that, and a [`ShmSignalDesc`] (the receiver owns `north`: "data or a
//! restock request arrived"; senders wait on `south`: "restocked").
//!
//! ## A send
//!
//! 1. Find a `BOUND` slot with the key whose pid is not ours.
//! 2. Announce the send: our pid into a free entry of the slot's
//!    `senders` table (or, when all [`MAX_SENDERS`] are taken, `inflight
//!    += 1`), then re-check the slot is still bound with the same
//!    generation (a Dekker pair with unbind's `state := UNBINDING; wait
//!    until no live sender is announced`, all SeqCst). A sender that dies
//!    mid-send leaves its pid behind, which unbind and the reaper skip once
//!    the pid is gone; only a crash of a sender counted in `inflight` (the
//!    overflow) keeps unbind waiting for [`Config::unbind_wait`].
//! 3. Validate the slot header (checksum, counts, ranges).
//! 4. From `next_dma`, claim the first descriptor with `used_len == 0` by
//!    CAS to `CLAIMED`. None free: ring the receiver, wait (bounded) for
//!    its restock doorbell, retry once, else [`Error::NoFreeDescriptor`].
//! 5. Validate the descriptor (checksum, section count, each section an
//!    [`AddrRange`] inside a registered range).
//! 6. Copy `min(source, destination)` bytes section by section: one
//!    `process_vm_writev` with all sections as iovecs, or, when the kernel
//!    refuses (`EPERM`) or the config forces it, a copy into the
//!    receiver's bounce segment that the receiver copies out. Messages
//!    under [`Config::cma_min_bytes`] bounce by choice (cheaper than the
//!    system call).
//! 7. Store `flags`, `sender_pid`, then `used_len` with **Release**; the
//!    receiver loads `used_len` with **Acquire**, so it sees the payload
//!    (CMA writes are done by the kernel in our context before the
//!    syscall returns, i.e. before the Release store).
//! 8. Ring the receiver's doorbell.
//!
//! ## Receiver-assisted copy
//!
//! One `process_vm_writev` is a single-threaded kernel copy: on the
//! reference VM it runs at 0.55–0.77× of a user-space `memcpy` of the same
//! size (it pins the remote pages 16 at a time and copies page by page
//! without non-temporal stores). A receiver waiting in [`Receiver::recv`]
//! has a core and nothing to do, so large single-copy sends split the work
//! with it. When the copy takes the CMA path and moves at least
//! [`Config::assist_min_bytes`] from at most [`MAX_SECTIONS`] source
//! slices, the sender publishes an [`AssistJob`] in the claimed descriptor:
//! its pid, the source slices (addresses in the *sender's* address space),
//! the length, a chunk size, and a claim ticket `(seq, front, back)`.
//! Then both sides take chunks from the ticket until none is left (the
//! sender from the front, the receiver from the back): the
//! sender writes its chunks with `process_vm_writev`, the receiver reads
//! its chunks with `process_vm_readv` from the sender into the sections of
//! its *private* copy of the descriptor (it never trusts shared memory for
//! where its own bytes go). Each finished chunk bumps `done` (Release);
//! the sender waits for `done == chunks` (Acquire), redoes any chunk the
//! receiver flagged `failed` (e.g. `EPERM`: Yama lets a parent trace its
//! child but not the reverse), and only then publishes `used_len` as in
//! step 7. A receiver that is busy elsewhere simply never claims a chunk,
//! and the sender does them all (one system call per chunk).
//!
//! The ticket carries the job's sequence number, so a receiver that read
//! an older job can never claim a chunk of a newer one (its CAS fails);
//! the job's fields are covered by a checksum that includes `seq`, so a
//! torn read or a stray write makes the receiver skip the job (the sender
//! does the work). While a sender waits for the receiver's chunks it checks
//! that the receiver lives; a receiver alive but stalled for
//! [`Config::assist_wait`] gets its binding cut off, so a chunk it may
//! still be writing is never delivered. `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES`
//! sets the threshold (`off` disables: exactly one `process_vm_writev` per
//! send).
//!
//! ## Validation and cutting off
//!
//! Everything in the registry can be scribbled on by any process that maps
//! it. The sender never trusts a slot: a failed check marks the binding
//! `CUT_OFF` with a reason, every later send to it fails with
//! [`Error::CutOff`], and the receiver learns it on its next receive and
//! may rebind. The receiver never trusts a descriptor: it compares each
//! used descriptor with its private copy, bounds `used_len` by its own
//! capacity, repairs the descriptor from the private copy and reports
//! [`Error::CorruptDescriptor`]; a sender pid that published an impossible
//! length is banned from the binding. The defence is against garbage
//! (bugs, stray writes), not against a same-user adversary, who could
//! `ptrace` the receiver anyway.
//!
//! ## Atomics
//!
//! All shared fields are atomics. Immutable-after-bind fields (key,
//! ranges, sections, checksums) are written Relaxed before the slot's
//! `state := BOUND` Release store and read Relaxed after an Acquire load of
//! `state` (producer: the binding receiver; consumers: senders).
//! `used_len`: producer the sender (Release, after the data), consumer the
//! receiver (Acquire); the receiver frees with a Release store of 0 and
//! senders claim with an AcqRel CAS, so the receiver's reads of the old
//! payload happen before the next sender's writes. `next_dma` is a hint
//! (Relaxed). `inflight`/`state` for unbind: SeqCst (store-load).

use crate::assist;
use crate::key::DmaKey;
use crate::shm::{Segment, SharedRecord};
use crate::shm_signal::{ShmSignalDesc, Side, SpinPolicy, Wake};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::{CUT_REASONS, Error};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

const REG_MAGIC: u32 = u32::from_le_bytes(*b"RCDR");
const REG_VERSION: u32 = 2;

const FREE: u32 = 0;
const BOUND: u32 = 2;
const CUT_OFF: u32 = 3;
const UNBINDING: u32 = 4;

/// `used_len` value of a descriptor a sender has claimed but not filled.
const CLAIMED: u64 = u64::MAX;
/// `flags` bit: the payload is in the bounce segment.
const F_BOUNCED: u32 = 1;

/// `{addr, len}` of one section, in the receiver's address space (bytes).
#[repr(C)]
#[derive(Debug, Default)]
pub struct SharedSection {
    addr: AtomicU64,
    len: AtomicU64,
}

/// One DMA descriptor: 384 bytes.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct DmaDesc {
    /// 0: free; [`CLAIMED`]: being filled; else bytes delivered.
    used_len: AtomicU64,
    flags: AtomicU32,
    sender_pid: AtomicU32,
    nsec: AtomicU32,
    _pad: u32,
    bounce_off: AtomicU64,
    check: AtomicU64,
    _reserved: [u64; 3],
    sections: [SharedSection; MAX_SECTIONS],
    assist: AssistJob,
}

/// A receiver-assisted copy into a claimed descriptor (see "Receiver-
/// assisted copy" in the module docs): 192 bytes. Written by the sender
/// that holds the descriptor `CLAIMED`; the receiver only claims chunks
/// (CAS on `ticket`) and reports them (`done`, `failed`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct AssistJob {
    /// `(seq << 32) | (front << 16) | back`: chunks `front..back` are
    /// unclaimed; the sender claims at the front, the receiver at the back,
    /// within the same `seq` (`assist`).
    ticket: AtomicU64,
    /// Chunks finished, by either side, in the current job.
    done: AtomicU32,
    /// The sender's pid (whose address space `src` is in).
    src_pid: AtomicU32,
    /// Bit `k`: the receiver could not copy chunk `k`.
    failed: AtomicU64,
    /// Bytes to copy.
    total: AtomicU64,
    /// Bytes per chunk (the last one is shorter).
    chunk: AtomicU64,
    nsrc: AtomicU32,
    _pad: u32,
    /// FNV over the binding generation, `seq` and all fields above.
    check: AtomicU64,
    _reserved: u64,
    src: [SharedSection; MAX_SECTIONS],
}

/// One binding: 6528 bytes.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct BindingSlot {
    state: AtomicU32,
    pid: AtomicU32,
    gen_: AtomicU32,
    ndesc: AtomicU32,
    next_dma: AtomicU32,
    inflight: AtomicU32,
    cut_reason: AtomicU32,
    nranges: AtomicU32,
    key_dev: AtomicU64,
    key_ino: AtomicU64,
    key_off: AtomicU64,
    check: AtomicU64,
    bounce_len: AtomicU64,
    banned: [AtomicU32; MAX_BANNED],
    /// Set by a sender that found no free descriptor; cleared by the
    /// receiver in [`Receiver::restock_requested`].
    want_restock: AtomicU32,
    _pad: u32,
    /// Assist jobs open on this binding: a hint that lets
    /// [`Receiver::try_recv`] skip looking for jobs with one load.
    assist_open: AtomicU32,
    _pad2: u32,
    _reserved: u64,
    ranges: [SharedSection; MAX_RANGES],
    signal: ShmSignalDesc,
    descs: [DmaDesc; MAX_DESCS],
    /// Pids of senders in the middle of a send (0: free entry).
    senders: [AtomicU32; MAX_SENDERS],
}

/// Registry header: 64 bytes.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct RegistryHeader {
    magic: AtomicU32,
    version: AtomicU32,
    nslots: AtomicU32,
    max_descs: AtomicU32,
    max_sections: AtomicU32,
    /// Registry lock: 0 or the holder's pid.
    lock: AtomicU32,
    _reserved: [u32; 10],
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
    assert!(offset_of!(AssistJob, src) == 64);
    assert!(offset_of!(BindingSlot, assist_open) == 96);
    assert!(offset_of!(DmaDesc, used_len) == 0);
    assert!(offset_of!(DmaDesc, flags) == 8);
    assert!(offset_of!(DmaDesc, sender_pid) == 12);
    assert!(offset_of!(DmaDesc, nsec) == 16);
    assert!(offset_of!(DmaDesc, bounce_off) == 24);
    assert!(offset_of!(DmaDesc, check) == 32);
    assert!(offset_of!(DmaDesc, sections) == 64);
    assert!(size_of::<RegistryHeader>() == 64);
    assert!(offset_of!(BindingSlot, key_dev) == 32);
    assert!(offset_of!(BindingSlot, check) == 56);
    assert!(offset_of!(BindingSlot, bounce_len) == 64);
    assert!(offset_of!(BindingSlot, banned) == 72);
    assert!(offset_of!(BindingSlot, ranges) == 112);
    assert!(offset_of!(BindingSlot, signal) == 192);
    assert!(offset_of!(BindingSlot, descs) == 384);
    assert!(offset_of!(BindingSlot, senders) == 384 + 384 * MAX_DESCS);
    assert!(size_of::<BindingSlot>() == 384 + 384 * MAX_DESCS + 4 * MAX_SENDERS);
};

/// Total registry segment size in bytes.
pub const REGISTRY_BYTES: usize =
    std::mem::size_of::<RegistryHeader>() + NSLOTS * std::mem::size_of::<BindingSlot>();

fn slot_offset(i: usize) -> usize {
    std::mem::size_of::<RegistryHeader>() + i * std::mem::size_of::<BindingSlot>()
}

/// A word-at-a-time multiplicative hash (the FNV offset basis, then
/// `rotl 5, xor, multiply` by the 64-bit golden ratio per word, as in
/// rustc's FxHasher), finished with a xor-shift so the last word reaches
/// the low bits: detects random garbage and torn reads, not an adversary.
fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    h ^ (h >> 32)
}

fn desc_check(gen_: u32, nsec: u32, bounce_off: u64, secs: &[(u64, u64)]) -> u64 {
    fnv([u64::from(gen_), u64::from(nsec), bounce_off]
        .into_iter()
        .chain(secs.iter().flat_map(|&(a, l)| [a, l])))
}

#[allow(clippy::too_many_arguments)]
fn slot_check(
    pid: u32,
    gen_: u32,
    ndesc: u32,
    key: DmaKey,
    bounce_len: u64,
    ranges: &[(u64, u64)],
) -> u64 {
    fnv([
        u64::from(pid),
        u64::from(gen_),
        u64::from(ndesc),
        key.dev,
        key.ino,
        key.offset,
        bounce_len,
        ranges.len() as u64,
    ]
    .into_iter()
    .chain(ranges.iter().flat_map(|&(a, l)| [a, l])))
}

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

/// Process-local counters of a [`Registry`] handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DmaStats {
    /// Sends completed with `process_vm_writev`.
    pub cma_sends: u64,
    /// Sends completed through a bounce segment.
    pub bounce_sends: u64,
    /// `process_vm_writev` calls refused with `EPERM`.
    pub cma_refusals: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Sends that found no free descriptor on the first attempt.
    pub no_free_first_try: u64,
    /// Bindings this process cut off after failed validation.
    pub cutoffs: u64,
    /// Sends whose receiver copied at least one chunk.
    pub assisted_sends: u64,
    /// Chunks this process copied as a receiver, for senders
    /// (`process_vm_readv`).
    pub assist_chunks: u64,
}

#[derive(Debug, Default)]
struct LocalStats {
    assisted_sends: std::sync::atomic::AtomicU64,
    assist_chunks: std::sync::atomic::AtomicU64,
    cma_sends: std::sync::atomic::AtomicU64,
    bounce_sends: std::sync::atomic::AtomicU64,
    cma_refusals: std::sync::atomic::AtomicU64,
    bytes_sent: std::sync::atomic::AtomicU64,
    no_free_first_try: std::sync::atomic::AtomicU64,
    cutoffs: std::sync::atomic::AtomicU64,
}

/// Tunables of a registry handle.
#[derive(Debug, Clone)]
pub struct Config {
    /// Never try `process_vm_writev`; always bounce. Also set by the
    /// environment variable `REGCACHE_TRANSPORT_FORCE_BOUNCE=1`.
    pub force_bounce: bool,
    /// How long a sender with no free descriptor waits for the receiver's
    /// restock doorbell before its one retry. Default 100 ms.
    pub restock_wait: Duration,
    /// Spin before sleeping in [`Receiver::recv`].
    pub spin: SpinPolicy,
    /// Bounded wait of unbind for in-flight sends. Default 10 s.
    pub unbind_wait: Duration,
    /// Messages shorter than this many bytes take the bounce path even
    /// when single copy is permitted: a `process_vm_writev` costs a system
    /// call plus pinning the remote pages, more than two `memcpy`s of a
    /// small message (the eager/rendezvous split of MPI libraries).
    /// Default 8192; 0 means "always try single copy". Also set by
    /// `REGCACHE_TRANSPORT_CMA_MIN_BYTES`.
    pub cma_min_bytes: u64,
    /// Single-copy sends of at least this many bytes are split with a
    /// receiver that waits in [`Receiver::recv`] (module docs,
    /// "Receiver-assisted copy"). Default 256 KiB: below that the extra
    /// doorbell and chunk system calls cost more than the second core
    /// saves. `u64::MAX` disables it. Also set by
    /// `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES` (bytes, or `off`).
    pub assist_min_bytes: u64,
    /// How long a sender waits for a live receiver to finish the chunks it
    /// claimed before cutting the binding off. Default 10 s.
    pub assist_wait: Duration,
    /// Testing only: in an assisted copy the sender copies no chunk itself
    /// and waits for the receiver to take them all (it still redoes the
    /// chunks the receiver reports failed). Makes the receiver's side of
    /// the protocol deterministic in tests.
    #[doc(hidden)]
    pub assist_sender_idle: bool,
}

/// Default [`Config::assist_min_bytes`].
pub const ASSIST_MIN_BYTES: u64 = 256 << 10;
/// Smallest chunk of an assisted copy (bytes).
const ASSIST_MIN_CHUNK: u64 = 128 << 10;
/// An assisted copy is cut into about this many chunks: enough for the two
/// sides to finish together, few enough that the per-chunk system call is
/// noise. Measured on the reference VM: 128–256 KiB chunks at 1 MiB.
const ASSIST_TARGET_CHUNKS: u64 = 16;

/// Chunk size for an assisted copy of `n` bytes: page multiple, at least
/// [`ASSIST_MIN_CHUNK`], at most [`assist::MAX_CHUNKS`] chunks.
fn assist_chunk(n: u64) -> u64 {
    n.div_ceil(ASSIST_TARGET_CHUNKS)
        .max(n.div_ceil(assist::MAX_CHUNKS))
        .next_multiple_of(4096)
        .max(ASSIST_MIN_CHUNK)
}

/// `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES`: bytes, or `off`. A malformed
/// value is reported (log) and the default kept.
fn assist_min_from_env() -> u64 {
    const VAR: &str = "REGCACHE_TRANSPORT_ASSIST_MIN_BYTES";
    match std::env::var(VAR) {
        Err(_) => ASSIST_MIN_BYTES,
        Ok(v) if v.trim() == "off" => u64::MAX,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            log::error!(
                "regcache-transport: {VAR}={v:?} is not a byte count or `off`; using {ASSIST_MIN_BYTES}"
            );
            ASSIST_MIN_BYTES
        }),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            force_bounce: std::env::var("REGCACHE_TRANSPORT_FORCE_BOUNCE").is_ok_and(|v| v == "1"),
            restock_wait: Duration::from_millis(100),
            spin: SpinPolicy::default(),
            unbind_wait: Duration::from_secs(10),
            cma_min_bytes: std::env::var("REGCACHE_TRANSPORT_CMA_MIN_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(8192),
            assist_min_bytes: assist_min_from_env(),
            assist_wait: Duration::from_secs(10),
            assist_sender_idle: false,
        }
    }
}

/// A bounce segment mapped for one binding generation of a slot.
type BounceMap = Option<(u32, Arc<Segment>)>;

#[derive(Debug)]
struct Inner {
    seg: Segment,
    name: String,
    me: u32,
    config: Config,
    stats: LocalStats,
    /// Per slot: the bounce segment of the binding generation we last
    /// sent to.
    bounce: Mutex<Vec<BounceMap>>,
    cma_refused: Mutex<HashSet<u32>>,
}

/// A handle on a keyed-DMA registry segment. `Send + Sync`; clone freely.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks existence/permission.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A send announced on a slot (step 2 of a send); withdrawn on drop.
enum InflightGuard<'a> {
    /// Our pid in `senders[i]`.
    Entry(&'a AtomicU32),
    /// Counted in `inflight` (every entry was taken).
    Counted(&'a BindingSlot),
}

impl<'a> InflightGuard<'a> {
    fn enter(s: &'a BindingSlot, me: u32) -> Self {
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
fn sends_in_flight(s: &BindingSlot) -> bool {
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
struct SlotView {
    pid: u32,
    gen_: u32,
    ndesc: usize,
    ranges: [AddrRange; MAX_RANGES],
    nranges: usize,
    bounce_len: u64,
}

impl SlotView {
    fn ranges(&self) -> &[AddrRange] {
        &self.ranges[..self.nranges]
    }
}

/// Filler of fixed-size range arrays.
const NO_RANGE: AddrRange = match AddrRange::from_start_len(0, 0) {
    Ok(r) => r,
    Err(_) => panic!("the empty range at 0 is valid"),
};

/// `{addr, len}` pairs read from shared memory: the first
/// `min(secs.len(), N)` entries; the rest are `(0, 0)`.
fn read_pairs<const N: usize>(secs: &[SharedSection]) -> [(u64, u64); N] {
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

impl Registry {
    /// Create the registry `/dev/shm/<name>` (mode 0600).
    ///
    /// # Errors
    /// Those of [`Segment::create`] (e.g. [`Error::Open`] with `EEXIST`).
    pub fn create(name: &str) -> Result<Self, Error> {
        Self::create_with(name, Config::default())
    }

    /// [`Self::create`] with an explicit [`Config`].
    ///
    /// # Errors
    /// As [`Self::create`].
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

    /// Open an existing registry.
    ///
    /// # Errors
    /// Those of [`Segment::open`]; [`Error::BadRegistry`] when the header
    /// does not match this build's layout.
    pub fn open(name: &str) -> Result<Self, Error> {
        Self::open_with(name, Config::default())
    }

    /// [`Self::open`] with an explicit [`Config`].
    ///
    /// # Errors
    /// As [`Self::open`].
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
    ///
    /// # Errors
    /// As [`Self::create`] and [`Self::open`].
    pub fn open_or_create(name: &str) -> Result<Self, Error> {
        match Self::create(name) {
            Ok(r) => Ok(r),
            Err(Error::Open(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                let mut last = None;
                for _ in 0..1000 {
                    match Self::open(name) {
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
                config,
                stats: LocalStats::default(),
                bounce: Mutex::new(vec![None; NSLOTS]),
                cma_refused: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// This handle's counters.
    pub fn stats(&self) -> DmaStats {
        let s = &self.inner.stats;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        DmaStats {
            cma_sends: l(&s.cma_sends),
            bounce_sends: l(&s.bounce_sends),
            cma_refusals: l(&s.cma_refusals),
            bytes_sent: l(&s.bytes_sent),
            no_free_first_try: l(&s.no_free_first_try),
            cutoffs: l(&s.cutoffs),
            assisted_sends: l(&s.assisted_sends),
            assist_chunks: l(&s.assist_chunks),
        }
    }

    fn bump(a: &std::sync::atomic::AtomicU64, n: u64) {
        a.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn header(&self) -> &RegistryHeader {
        // SAFETY: create/open checked the mapping is at least
        // REGISTRY_BYTES long; the base is page-aligned; the header is a
        // `SharedRecord` (atomics only, any bit pattern valid); the
        // mapping lives as long as `self.inner`.
        unsafe { &*self.inner.seg.as_ptr().cast::<RegistryHeader>() }
    }

    fn slot(&self, i: usize) -> &BindingSlot {
        // Indices come from loops over 0..NSLOTS or from our own bind.
        let i = i.min(NSLOTS - 1);
        // SAFETY: `slot_offset(i) + size_of::<BindingSlot>() <=
        // REGISTRY_BYTES` for i < NSLOTS (checked at open/create); the
        // offset is a multiple of 64 from a page-aligned base; a
        // `SharedRecord`; the mapping outlives the borrow of `self`.
        unsafe {
            &*self
                .inner
                .seg
                .as_ptr()
                .add(slot_offset(i))
                .cast::<BindingSlot>()
        }
    }

    /// The raw slot table, for tests that play a hostile peer.
    #[doc(hidden)]
    pub fn slot_bytes(&self, key: DmaKey) -> Option<(*mut u8, usize)> {
        (0..NSLOTS).find_map(|i| {
            let s = self.slot(i);
            (s.state.load(Ordering::Acquire) != FREE && slot_key(s) == key).then(|| {
                // SAFETY: in bounds: slot_offset(i) < REGISTRY_BYTES.
                let p = unsafe { self.inner.seg.as_ptr().add(slot_offset(i)) };
                (p, std::mem::size_of::<BindingSlot>())
            })
        })
    }

    fn lock(&self) -> RegistryLock<'_> {
        let h = self.header();
        let me = self.inner.me;
        let mut spins = 0u32;
        loop {
            match h
                .lock
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return RegistryLock(h),
                Err(holder) => {
                    spins = spins.wrapping_add(1);
                    if spins % 1024 == 0 && !pid_alive(holder) {
                        // The holder died inside bind/unbind: steal.
                        let _ =
                            h.lock
                                .compare_exchange(holder, 0, Ordering::AcqRel, Ordering::Relaxed);
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

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
            });
            bounce_len = bounce_len
                .checked_add(cap)
                .ok_or(Error::InvalidBind("total capacity overflows"))?;
        }

        let _g = self.lock();
        // Reap bindings of dead processes; refuse a live duplicate.
        let mut free = None;
        for i in 0..NSLOTS {
            let s = self.slot(i);
            let st = s.state.load(Ordering::Acquire);
            // A dead receiver's slot is reaped with unbind's Dekker pair
            // (state := UNBINDING, then inflight == 0?); with a send still
            // in flight it stays UNBINDING until a later bind.
            if st != FREE && !pid_alive(s.pid.load(Ordering::Relaxed)) {
                s.state.store(UNBINDING, Ordering::SeqCst);
                if !sends_in_flight(s) {
                    let g = s.gen_.load(Ordering::Relaxed);
                    let _ = Segment::unlink(&format!("{}-b{}-{}", self.inner.name, i, g));
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
        let i = free.ok_or(Error::RegistryFull)?;
        let s = self.slot(i);
        let gen_ = s.gen_.load(Ordering::Relaxed).wrapping_add(1);
        let bounce_name = format!("{}-b{}-{}", self.inner.name, i, gen_);
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
        s.cut_reason.store(0, Ordering::Relaxed);
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
        for (dst, &(a, l)) in s.ranges.iter().zip(&rs) {
            dst.addr.store(a, Ordering::Relaxed);
            dst.len.store(l, Ordering::Relaxed);
        }
        s.check.store(
            slot_check(
                self.inner.me,
                gen_,
                buffers.len() as u32,
                key,
                bounce_len,
                &rs,
            ),
            Ordering::Relaxed,
        );
        for (d, p) in s.descs.iter().zip(&priv_descs) {
            write_desc(d, gen_, p);
        }
        // Fresh doorbells for the new binding.
        s.signal.init();
        for side in [Side::North, Side::South] {
            let irq = s.signal.irq(side);
            irq.dirty.store(0, Ordering::Relaxed);
            irq.enabled.store(0, Ordering::Relaxed);
            irq.pending.store(0, Ordering::Relaxed);
        }
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

    fn view_slot(&self, s: &BindingSlot, key: DmaKey) -> Result<SlotView, &'static str> {
        let pid = s.pid.load(Ordering::Relaxed);
        let gen_ = s.gen_.load(Ordering::Relaxed);
        let ndesc = s.ndesc.load(Ordering::Relaxed);
        let nranges = s.nranges.load(Ordering::Relaxed) as usize;
        let bounce_len = s.bounce_len.load(Ordering::Relaxed);
        if ndesc == 0 || ndesc as usize > MAX_DESCS || nranges == 0 || nranges > MAX_RANGES {
            return Err(CUT_REASONS[1]);
        }
        let rs = read_pairs::<MAX_RANGES>(&s.ranges[..nranges]);
        let rs = &rs[..nranges];
        if s.check.load(Ordering::Relaxed) != slot_check(pid, gen_, ndesc, key, bounce_len, rs) {
            return Err(CUT_REASONS[1]);
        }
        let mut ranges = [NO_RANGE; MAX_RANGES];
        for (out, &(a, l)) in ranges.iter_mut().zip(rs) {
            let r = AddrRange::from_start_len(a, l).map_err(|_| CUT_REASONS[1])?;
            if r.is_empty() || r.start() == 0 {
                return Err(CUT_REASONS[1]);
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

    fn cut_off(&self, s: &BindingSlot, code: u32) {
        s.cut_reason.store(code, Ordering::Relaxed);
        if s.state
            .compare_exchange(BOUND, CUT_OFF, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            Self::bump(&self.inner.stats.cutoffs, 1);
            log::warn!(
                "regcache-transport: cut off a binding: {}",
                CUT_REASONS[code as usize]
            );
        }
        s.signal.irq(Side::North).notify();
    }

    fn find_slot(&self, key: DmaKey) -> Result<usize, Error> {
        let mut cut = None;
        for i in 0..NSLOTS {
            let s = self.slot(i);
            let st = s.state.load(Ordering::Acquire);
            if (st == BOUND || st == CUT_OFF)
                && slot_key(s) == key
                && s.pid.load(Ordering::Relaxed) != self.inner.me
            {
                if st == BOUND {
                    return Ok(i);
                }
                let code = s.cut_reason.load(Ordering::Relaxed) as usize;
                cut = Some(CUT_REASONS.get(code).copied().unwrap_or(CUT_REASONS[0]));
            }
        }
        match cut {
            Some(reason) => Err(Error::CutOff { key, reason }),
            None => Err(Error::NoReceiver(key)),
        }
    }

    /// Send the concatenation of `src` to the receiver bound to `key`.
    ///
    /// Copies `min(source, destination descriptor)` bytes; the report says
    /// whether it truncated and which path ran. Never delivers to a
    /// binding of this process.
    ///
    /// # Errors
    /// [`Error::EmptySend`], [`Error::NoReceiver`], [`Error::CutOff`],
    /// [`Error::NoFreeDescriptor`], [`Error::CorruptDescriptor`] (the
    /// binding is cut off), [`Error::ProcessVmWritev`] (receiver gone).
    pub fn send(&self, key: DmaKey, src: &[&[u8]]) -> Result<SendReport, Error> {
        let total: u64 = src.iter().map(|s| s.len() as u64).sum();
        if total == 0 {
            return Err(Error::EmptySend);
        }
        let i = self.find_slot(key)?;
        let s = self.slot(i);
        let _guard = InflightGuard::enter(s, self.inner.me);
        // With the send announced, unbind cannot complete: if the slot is
        // still bound to `key` now, it stays so until we are done.
        if s.state.load(Ordering::SeqCst) != BOUND || slot_key(s) != key {
            return Err(Error::NoReceiver(key));
        }
        let view = match self.view_slot(s, key) {
            Ok(v) => v,
            Err(reason) => {
                self.cut_off(s, 1);
                return Err(Error::CorruptDescriptor {
                    key,
                    index: u32::MAX,
                    reason,
                    sender_pid: 0,
                });
            }
        };
        if view.pid == self.inner.me {
            return Err(Error::NoReceiver(key));
        }
        if s.banned
            .iter()
            .any(|b| b.load(Ordering::Relaxed) == self.inner.me)
        {
            return Err(Error::CutOff {
                key,
                reason: CUT_REASONS[5],
            });
        }

        // Claim a free descriptor; one retry after a restock signal.
        let mut retried = false;
        let j = loop {
            if let Some(j) = claim(s, view.ndesc) {
                break j;
            }
            if retried {
                return Err(Error::NoFreeDescriptor(key));
            }
            retried = true;
            Self::bump(&self.inner.stats.no_free_first_try, 1);
            let restocked = s.signal.irq(Side::South);
            // Discard stale restock rings (every restock rings, whether or
            // not anyone waits), then look again before sleeping: a
            // restock between our failed claim and the discard is seen
            // here instead of costing the whole wait.
            let _ = restocked.try_take();
            let free_now = s.descs[..view.ndesc]
                .iter()
                .any(|d| d.used_len.load(Ordering::Acquire) == 0);
            if !free_now {
                s.want_restock.store(1, Ordering::SeqCst);
                s.signal.irq(Side::North).notify();
                let _: Wake =
                    restocked.wait(self.inner.config.spin, Some(self.inner.config.restock_wait));
            }
            if s.state.load(Ordering::SeqCst) != BOUND
                || s.gen_.load(Ordering::Relaxed) != view.gen_
            {
                return Err(Error::NoReceiver(key));
            }
        };
        let d = &s.descs[j];

        let dst = match validate_desc(d, &view) {
            Ok(v) => v,
            Err(reason) => {
                self.cut_off(s, 2);
                return Err(Error::CorruptDescriptor {
                    key,
                    index: j as u32,
                    reason,
                    sender_pid: 0,
                });
            }
        };
        let cap: u64 = dst.sections().iter().map(AddrRange::len).sum();
        let n = total.min(cap);

        let mut path = CopyPath::Bounce;
        let mut receiver_chunks = 0;
        if !self.inner.config.force_bounce
            && n >= self.inner.config.cma_min_bytes
            && !self.cma_refused(view.pid)
        {
            let copied = if n >= self.inner.config.assist_min_bytes {
                self.assisted_write(s, d, &view, src, dst.sections(), n)
            } else {
                cma_write(view.pid, src, dst.sections(), n)
                    .map(|()| 0)
                    .map_err(AssistFail::Io)
            };
            match copied {
                Ok(c) => {
                    path = CopyPath::Cma;
                    receiver_chunks = c;
                }
                Err(AssistFail::Gone) => return Err(Error::NoReceiver(key)),
                Err(AssistFail::Stalled) => {
                    self.cut_off(s, 6);
                    return Err(Error::CutOff {
                        key,
                        reason: CUT_REASONS[6],
                    });
                }
                Err(AssistFail::Io(e)) if e.raw_os_error() == Some(libc::EPERM) => {
                    Self::bump(&self.inner.stats.cma_refusals, 1);
                    if let Ok(mut m) = self.inner.cma_refused.lock() {
                        m.insert(view.pid);
                    }
                }
                Err(AssistFail::Io(e)) if e.raw_os_error() == Some(libc::EFAULT) => {
                    self.cut_off(s, 3);
                    return Err(Error::CorruptDescriptor {
                        key,
                        index: j as u32,
                        reason: CUT_REASONS[3],
                        sender_pid: 0,
                    });
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
        if path == CopyPath::Bounce {
            if let Err(e) = self.bounce_write(key, i, &view, dst.bounce_off, src, n) {
                match e {
                    Error::CorruptDescriptor { .. } => self.cut_off(s, 4),
                    _ => d.used_len.store(0, Ordering::Release),
                }
                return Err(e);
            }
        }

        d.flags.store(
            if path == CopyPath::Bounce {
                F_BOUNCED
            } else {
                0
            },
            Ordering::Relaxed,
        );
        d.sender_pid.store(self.inner.me, Ordering::Relaxed);
        s.next_dma
            .store(((j + 1) % view.ndesc) as u32, Ordering::Relaxed);
        // Release: the payload (CMA or bounce) happens-before the
        // receiver's Acquire load of used_len.
        d.used_len.store(n, Ordering::Release);
        s.signal.irq(Side::North).notify();

        let st = &self.inner.stats;
        Self::bump(
            if path == CopyPath::Cma {
                &st.cma_sends
            } else {
                &st.bounce_sends
            },
            1,
        );
        Self::bump(&st.bytes_sent, n);
        if receiver_chunks > 0 {
            Self::bump(&st.assisted_sends, 1);
        }
        Ok(SendReport {
            copied: n,
            truncated: n < total,
            index: j as u32,
            path,
            retried,
            receiver_chunks,
        })
    }

    /// The single copy of `n` bytes split with the receiver (module docs,
    /// "Receiver-assisted copy"). Returns the chunks the receiver copied.
    /// On return the job is closed: no chunk is being copied by anyone.
    fn assisted_write(
        &self,
        s: &BindingSlot,
        d: &DmaDesc,
        view: &SlotView,
        src: &[&[u8]],
        dst: &[AddrRange],
        n: u64,
    ) -> Result<u32, AssistFail> {
        let src = trim_slices(src.iter().map(|p| (p.as_ptr() as u64, p.len() as u64)), n);
        let dst = trim_slices(dst.iter().map(|r| (r.start(), r.len())), n);
        let chunk = assist_chunk(n);
        let nch = n.div_ceil(chunk);
        if src.len() > MAX_SECTIONS || nch < 2 {
            return cma_write_slices(view.pid, &src, &dst, 0, n)
                .map(|()| 0)
                .map_err(AssistFail::Io);
        }
        let job = &d.assist;
        let me = self.inner.me;
        let seq = assist::open(&job.ticket, &job.done, &job.failed);
        job.src_pid.store(me, Ordering::Relaxed);
        job.total.store(n, Ordering::Relaxed);
        job.chunk.store(chunk, Ordering::Relaxed);
        job.nsrc.store(src.len() as u32, Ordering::Relaxed);
        for (sec, &(a, l)) in job.src.iter().zip(&src) {
            sec.addr.store(a, Ordering::Relaxed);
            sec.len.store(l, Ordering::Relaxed);
        }
        job.check.store(
            assist_check(view.gen_, seq, me, n, chunk, &src),
            Ordering::Relaxed,
        );
        assist::publish(&job.ticket, seq, nch);
        s.assist_open.fetch_add(1, Ordering::Release);
        struct Open<'a>(&'a BindingSlot);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                self.0.assist_open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _open = Open(s);
        s.signal.irq(Side::North).notify();

        let mut mine = 0u64;
        let mut first_err = None;
        // `assist_sender_idle` (tests only): leave every chunk to the receiver.
        if !self.inner.config.assist_sender_idle {
            while let Some(k) = assist::sender_claim(&job.ticket) {
                mine += 1;
                if first_err.is_none() {
                    let off = k * chunk;
                    if let Err(e) = cma_write_slices(view.pid, &src, &dst, off, chunk.min(n - off))
                    {
                        first_err = Some(e);
                    }
                }
                assist::finish(&job.done, &job.failed, k, true);
            }
        }
        // Wait for the receiver's chunks: Acquire pairs with its Release
        // increments (its copies are done before we publish used_len).
        let mut spins = 0u32;
        let mut deadline = None;
        while assist::finished(&job.done) < nch {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                crate::sync::spin_hint();
            }
            if spins % 4096 == 0 {
                if !pid_alive(view.pid) {
                    return Err(AssistFail::Gone);
                }
                let dl =
                    *deadline.get_or_insert_with(|| Instant::now() + self.inner.config.assist_wait);
                if Instant::now() > dl {
                    return Err(AssistFail::Stalled);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(AssistFail::Io(e));
        }
        // Only this job's chunks: `failed` is shared memory, and a stray
        // write must not turn into an underflow below.
        let failed = job.failed.load(Ordering::Relaxed) & (u64::MAX >> (64 - nch));
        for k in (0..nch).filter(|k| failed & (1 << k) != 0) {
            let off = k * chunk;
            cma_write_slices(view.pid, &src, &dst, off, chunk.min(n - off))
                .map_err(AssistFail::Io)?;
        }
        // Chunks the receiver claimed, less those it could not copy.
        let theirs = nch
            .saturating_sub(mine)
            .saturating_sub(u64::from(failed.count_ones()));
        Ok(theirs as u32)
    }

    fn cma_refused(&self, pid: u32) -> bool {
        self.inner
            .cma_refused
            .lock()
            .map(|m| m.contains(&pid))
            .unwrap_or(false)
    }

    fn bounce_write(
        &self,
        key: DmaKey,
        slot: usize,
        view: &SlotView,
        off: u64,
        src: &[&[u8]],
        n: u64,
    ) -> Result<(), Error> {
        let seg = {
            let mut m = self
                .inner
                .bounce
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let e = &mut m[slot.min(NSLOTS - 1)];
            match e {
                Some((g, s)) if *g == view.gen_ => s.clone(),
                _ => {
                    // The mapping of an older binding of this slot goes.
                    let name = format!("{}-b{}-{}", self.inner.name, slot, view.gen_);
                    let seg = Arc::new(Segment::open(&name)?);
                    *e = Some((view.gen_, seg.clone()));
                    seg
                }
            }
        };
        let end = off.checked_add(n);
        if end.is_none_or(|e| e > view.bounce_len || e > seg.len() as u64) {
            return Err(Error::CorruptDescriptor {
                key,
                index: u32::MAX,
                reason: CUT_REASONS[4],
                sender_pid: 0,
            });
        }
        let mut at = off as usize;
        let mut left = n as usize;
        for piece in src {
            if left == 0 {
                break;
            }
            let k = piece.len().min(left);
            // SAFETY: `at + k <= off + n <= seg.len()` (checked above); the
            // bounce area of this descriptor is ours while we hold the
            // CLAIMED used_len; the source is a valid slice.
            unsafe {
                std::ptr::copy_nonoverlapping(piece.as_ptr(), seg.as_ptr().add(at), k);
            }
            at += k;
            left -= k;
        }
        Ok(())
    }
}

fn slot_key(s: &BindingSlot) -> DmaKey {
    DmaKey {
        dev: s.key_dev.load(Ordering::Relaxed),
        ino: s.key_ino.load(Ordering::Relaxed),
        offset: s.key_off.load(Ordering::Relaxed),
    }
}

fn claim(s: &BindingSlot, ndesc: usize) -> Option<usize> {
    let start = s.next_dma.load(Ordering::Relaxed) as usize % ndesc;
    (0..ndesc).map(|k| (start + k) % ndesc).find(|&j| {
        s.descs[j]
            .used_len
            .compare_exchange(0, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

struct DstView {
    sections: [AddrRange; MAX_SECTIONS],
    nsec: usize,
    bounce_off: u64,
}

impl DstView {
    fn sections(&self) -> &[AddrRange] {
        &self.sections[..self.nsec]
    }
}

fn validate_desc(d: &DmaDesc, view: &SlotView) -> Result<DstView, &'static str> {
    let nsec = d.nsec.load(Ordering::Relaxed);
    if nsec == 0 || nsec as usize > MAX_SECTIONS {
        return Err("section count out of range");
    }
    let secs = read_pairs::<MAX_SECTIONS>(&d.sections[..nsec as usize]);
    let secs = &secs[..nsec as usize];
    let bounce_off = d.bounce_off.load(Ordering::Relaxed);
    if d.check.load(Ordering::Relaxed) != desc_check(view.gen_, nsec, bounce_off, secs) {
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
    })
}

/// Why an (assisted) single copy failed.
enum AssistFail {
    /// A `process_vm_writev` failed.
    Io(std::io::Error),
    /// The receiver died while it held chunks.
    Gone,
    /// The receiver held chunks for longer than [`Config::assist_wait`].
    Stalled,
}

/// The first `n` bytes of the concatenation of `pieces` as `(addr, len)`.
fn trim_slices(pieces: impl Iterator<Item = (u64, u64)>, n: u64) -> Vec<(u64, u64)> {
    let mut left = n;
    let mut out = Vec::with_capacity(MAX_SECTIONS);
    for (a, l) in pieces {
        if left == 0 {
            break;
        }
        let k = l.min(left);
        if k > 0 {
            out.push((a, k));
        }
        left -= k;
    }
    out
}

/// Bytes `[off, off + len)` of the concatenation of `secs`, as iovecs.
/// Addresses do not overflow: every `(a, l)` is a valid range or a slice.
fn iov_slice(secs: &[(u64, u64)], mut off: u64, mut len: u64) -> Vec<libc::iovec> {
    let mut out = Vec::with_capacity(secs.len());
    for &(a, l) in secs {
        if len == 0 {
            break;
        }
        if off >= l {
            off -= l;
            continue;
        }
        let k = (l - off).min(len);
        out.push(libc::iovec {
            iov_base: (a + off) as *mut libc::c_void,
            iov_len: k as usize,
        });
        off = 0;
        len -= k;
    }
    out
}

/// One `process_vm_writev` (or `readv` with `read`) of `n` bytes between
/// `local` (ours) and `remote` (in `pid`). A short transfer is `EFAULT`.
fn pvm(
    read: bool,
    pid: u32,
    local: &[libc::iovec],
    remote: &[libc::iovec],
    n: u64,
) -> std::io::Result<()> {
    if local.len() > 1024 || remote.len() > 1024 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let f = if read {
        libc::process_vm_readv
    } else {
        libc::process_vm_writev
    };
    // SAFETY: the local iovecs describe memory of ours that is valid for
    // the call (readable source slices, or our own bound sections for a
    // read); the remote ones are addresses in `pid`, checked by the kernel
    // (EFAULT).
    let r = unsafe {
        f(
            pid as libc::pid_t,
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r as u64 != n {
        // A partial transfer means a remote section stopped being mapped.
        return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

/// `process_vm_writev` of bytes `[off, off + len)` of `src` (ours) to the
/// same bytes of `dst` (the receiver's sections).
fn cma_write_slices(
    pid: u32,
    src: &[(u64, u64)],
    dst: &[(u64, u64)],
    off: u64,
    len: u64,
) -> std::io::Result<()> {
    pvm(
        false,
        pid,
        &iov_slice(src, off, len),
        &iov_slice(dst, off, len),
        len,
    )
}

/// One `process_vm_writev` of the first `n` bytes of `src` into `dst`.
fn cma_write(pid: u32, src: &[&[u8]], dst: &[AddrRange], n: u64) -> std::io::Result<()> {
    let src = trim_slices(src.iter().map(|p| (p.as_ptr() as u64, p.len() as u64)), n);
    let dst = trim_slices(dst.iter().map(|r| (r.start(), r.len())), n);
    cma_write_slices(pid, &src, &dst, 0, n)
}

fn assist_check(gen_: u32, seq: u32, pid: u32, total: u64, chunk: u64, src: &[(u64, u64)]) -> u64 {
    fnv([
        u64::from(gen_),
        u64::from(seq),
        u64::from(pid),
        total,
        chunk,
        src.len() as u64,
    ]
    .into_iter()
    .chain(src.iter().flat_map(|&(a, l)| [a, l])))
}

fn write_desc(d: &DmaDesc, gen_: u32, p: &PrivDesc) {
    let secs: Vec<(u64, u64)> = p.sections.iter().map(|r| (r.start(), r.len())).collect();
    for (dst, &(a, l)) in d.sections.iter().zip(&secs) {
        dst.addr.store(a, Ordering::Relaxed);
        dst.len.store(l, Ordering::Relaxed);
    }
    for dst in &d.sections[secs.len()..] {
        dst.addr.store(0, Ordering::Relaxed);
        dst.len.store(0, Ordering::Relaxed);
    }
    let nsec = secs.len() as u32;
    d.nsec.store(nsec, Ordering::Relaxed);
    d.bounce_off.store(p.bounce_off, Ordering::Relaxed);
    d.flags.store(0, Ordering::Relaxed);
    d.sender_pid.store(0, Ordering::Relaxed);
    d.check.store(
        desc_check(gen_, nsec, p.bounce_off, &secs),
        Ordering::Relaxed,
    );
    // Release: a sender that claims it (AcqRel CAS) sees the sections.
    d.used_len.store(0, Ordering::Release);
}

#[derive(Debug)]
struct PrivDesc {
    sections: Vec<AddrRange>,
    cap: u64,
    bounce_off: u64,
    delivered: bool,
}

/// A bound receiver: owns its binding slot until unbound or dropped.
#[derive(Debug)]
pub struct Receiver {
    reg: Registry,
    slot: usize,
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

/// Claim and copy chunks of `job` into descriptor `p` (our private copy)
/// until none is left. Everything read from `job` is checked first; a job
/// that fails a check is left to its sender.
fn help_job(
    job: &AssistJob,
    gen_: u32,
    p: &PrivDesc,
    refused: &mut HashSet<u32>,
    stats: &LocalStats,
) -> bool {
    let t = assist::observe(&job.ticket);
    let seq = (t >> 32) as u32;
    if !assist::has_unclaimed(t) {
        return false;
    }
    let pid = job.src_pid.load(Ordering::Relaxed);
    let total = job.total.load(Ordering::Relaxed);
    let chunk = job.chunk.load(Ordering::Relaxed);
    let nsrc = job.nsrc.load(Ordering::Relaxed) as usize;
    if nsrc == 0 || nsrc > MAX_SECTIONS || refused.contains(&pid) {
        return false;
    }
    let src = read_pairs::<MAX_SECTIONS>(&job.src[..nsrc]);
    let src = &src[..nsrc];
    if job.check.load(Ordering::Relaxed) != assist_check(gen_, seq, pid, total, chunk, src) {
        return false;
    }
    if total == 0
        || total > p.cap
        || chunk < 4096
        || total.div_ceil(chunk) > assist::MAX_CHUNKS
        || pid == 0
    {
        return false;
    }
    let mut sum: u64 = 0;
    for &(a, l) in src {
        if a == 0 || AddrRange::from_start_len(a, l).is_err() {
            return false;
        }
        sum = sum.saturating_add(l);
    }
    if sum < total {
        return false;
    }
    let nch = total.div_ceil(chunk);
    let dst = trim_slices(p.sections.iter().map(|r| (r.start(), r.len())), total);
    let mut helped = false;
    let mut cur = t;
    while let Some(k) = assist::receiver_claim(&job.ticket, seq, nch, &mut cur) {
        let off = k * chunk;
        let len = chunk.min(total - off);
        let copied = pvm(
            true,
            pid,
            &iov_slice(&dst, off, len),
            &iov_slice(src, off, len),
            len,
        );
        match &copied {
            Ok(()) => {
                helped = true;
                Registry::bump(&stats.assist_chunks, 1);
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                refused.insert(pid);
            }
            Err(_) => {}
        }
        assist::finish(&job.done, &job.failed, k, copied.is_ok());
        cur = assist::observe(&job.ticket);
    }
    helped
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
    /// of our descriptors, copy chunks of it first (module docs,
    /// "Receiver-assisted copy"), then look again.
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
        if self.help() {
            return self.take();
        }
        Ok(None)
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
            if p.delivered || s.descs[j].used_len.load(Ordering::Relaxed) != CLAIMED {
                continue;
            }
            helped |= help_job(
                &s.descs[j].assist,
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
            let code = s.cut_reason.load(Ordering::Relaxed) as usize;
            return Err(Error::CutOff {
                key: self.key,
                reason: CUT_REASONS.get(code).copied().unwrap_or(CUT_REASONS[0]),
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
            if used == 0 || used == CLAIMED {
                continue;
            }
            let sender_pid = d.sender_pid.load(Ordering::Relaxed);
            let flags = d.flags.load(Ordering::Relaxed);
            if let Err(reason) = self.check_used(j, used, flags) {
                if reason == CUT_REASONS[5] {
                    self.ban(sender_pid);
                }
                write_desc(&s.descs[j], self.gen_, &self.descs[j]);
                s.signal.irq(Side::South).notify();
                return Err(Error::CorruptDescriptor {
                    key: self.key,
                    index: j as u32,
                    reason,
                    sender_pid,
                });
            }
            let p = &self.descs[j];
            let path = if flags & F_BOUNCED != 0 {
                // Copy out of the bounce area into our own sections.
                let mut at = p.bounce_off as usize;
                let mut left = used as usize;
                for r in &p.sections {
                    if left == 0 {
                        break;
                    }
                    let k = (r.len() as usize).min(left);
                    // SAFETY: `at + k <= bounce_off + cap <= bounce.len()`
                    // by construction of the private copy; the section is
                    // ours and valid for writes (bind's contract).
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.bounce.as_ptr().add(at),
                            r.start() as *mut u8,
                            k,
                        );
                    }
                    at += k;
                    left -= k;
                }
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

    fn check_used(&self, j: usize, used: u64, flags: u32) -> Result<(), &'static str> {
        let s = self.slot();
        let d = &s.descs[j];
        let p = &self.descs[j];
        if flags & !F_BOUNCED != 0 {
            return Err("unknown descriptor flags");
        }
        let nsec = d.nsec.load(Ordering::Relaxed) as usize;
        let same = nsec == p.sections.len()
            && d.bounce_off.load(Ordering::Relaxed) == p.bounce_off
            && d.sections[..nsec].iter().zip(&p.sections).all(|(s, r)| {
                s.addr.load(Ordering::Relaxed) == r.start()
                    && s.len.load(Ordering::Relaxed) == r.len()
            });
        if !same {
            return Err("descriptor sections differ from what was bound");
        }
        if used > p.cap {
            return Err(CUT_REASONS[5]);
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
            .irq(Side::North)
            .wait(self.reg.inner.config.spin, timeout)
    }

    /// Wait (spin, then sleep on the binding's doorbell) for a delivery.
    ///
    /// Returns `Ok(None)` when `timeout` passes with nothing delivered
    /// (`None` waits forever).
    ///
    /// # Errors
    /// As [`Self::try_recv`].
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Delivery>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(d) = self.try_recv()? {
                return Ok(Some(d));
            }
            let left = match deadline {
                Some(dl) => match dl.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l),
                    _ => return Ok(None),
                },
                None => None,
            };
            let spin = self.reg.inner.config.spin;
            let _ = self.slot().signal.irq(Side::North).wait(spin, left);
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
        let s = self.reg.slot(self.slot);
        // Release: our reads of the payload happen before a sender's
        // AcqRel claim and its new writes.
        s.descs[j].used_len.store(0, Ordering::Release);
        s.signal.irq(Side::South).notify();
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

    /// Counters of this binding's doorbell (`North` = ours, `South` =
    /// senders' restock doorbell).
    pub fn signal_stats(&self, side: Side) -> crate::shm_signal::IrqStats {
        self.slot().signal.irq(side).stats()
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

/// Registry lock guard (unlocks on drop).
struct RegistryLock<'a>(&'a RegistryHeader);

impl Drop for RegistryLock<'_> {
    fn drop(&mut self) {
        self.0.lock.store(0, Ordering::Release);
    }
}
