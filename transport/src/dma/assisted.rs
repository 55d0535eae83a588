//! The receiver-assisted copy: both sides of it (the sender's job and the
//! receiver's help); the claim protocol itself is [`crate::assist`], which
//! the loom model checks.
//!
//! ## Receiver-assisted copy
//!
//! One `process_vm_writev` is a single-threaded kernel copy: on the
//! reference VM it runs at 0.55–0.77× of a user-space `memcpy` of the same
//! size (it pins the remote pages 16 at a time and copies page by page
//! without non-temporal stores). A receiver waiting in
//! [`Receiver::recv`](super::Receiver::recv) has a core and nothing to do,
//! so large single-copy sends split the work with it. When the copy takes
//! the CMA path and moves at least
//! [`Config::assist_min_bytes`](super::Config::assist_min_bytes) from at
//! most [`MAX_SECTIONS`] source slices, the sender publishes an
//! [`AssistJob`] in the claimed descriptor: its pid, the source slices
//! (addresses in the *sender's* address space), the length, a chunk size,
//! and a claim ticket `(seq, front, back)`. Then both sides take chunks
//! from the ticket until none is left (the sender from the front, the
//! receiver from the back): the sender writes its chunks with
//! `process_vm_writev`, the receiver reads its chunks with
//! `process_vm_readv` from the sender into the sections of its *private*
//! copy of the descriptor (it never trusts shared memory for where its own
//! bytes go). Each finished chunk bumps `done` (Release); the sender waits
//! for `done == chunks` (Acquire), redoes any chunk the receiver flagged
//! `failed` (e.g. `EPERM`: Yama lets a parent trace its child but not the
//! reverse), and only then publishes `used_len` as in step 7 of a send
//! ([`super::send`]). A receiver that is busy elsewhere simply never claims
//! a chunk, and the sender does them all (one system call per chunk).
//!
//! The ticket carries the job's sequence number, so a receiver that read
//! an older job can never claim a chunk of a newer one (its CAS fails);
//! the job's fields are covered by a checksum that includes `seq`, so a
//! torn read or a stray write makes the receiver skip the job (the sender
//! does the work). While a sender waits for the receiver's chunks it checks
//! that the receiver lives; a receiver alive but stalled for
//! [`Config::assist_wait`](super::Config::assist_wait) gets its binding cut
//! off, so a chunk it may still be writing is never delivered. The
//! receiver helps a job only while the descriptor's claim word names the
//! job's sender (`src_pid`) and re-reads it before every chunk: a sender
//! that took over the claim of a dead one ([`super::send`], "Claims of
//! dead senders") did not open that job, and its data must not be
//! overwritten by the dead sender's chunks.
//! `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES` sets the threshold (`off`
//! disables: exactly one `process_vm_writev` per send).

use super::cma::{self, Dir};
use super::layout::{
    AssistJob, BindingSlot, CLAIM_BIT, DmaDesc, MAX_SECTIONS, fnv_with_pairs, read_pairs,
    write_pairs,
};
use super::proc_id::ProcId;
use super::receiver::PrivDesc;
use super::registry::{LocalStats, Registry, SlotView, bump, pid_alive};
use crate::assist;
use crate::sync::Ordering;
use std::collections::HashSet;
use std::time::Instant;
use umn::AddrRange;

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

/// Checksum of a published job's fields.
fn assist_check(gen_: u32, seq: u32, pid: u32, total: u64, chunk: u64, src: &[(u64, u64)]) -> u64 {
    fnv_with_pairs(
        [
            u64::from(gen_),
            u64::from(seq),
            u64::from(pid),
            total,
            chunk,
            src.len() as u64,
        ],
        src,
    )
}

/// Why an (assisted) single copy failed.
pub(super) enum AssistFail {
    /// A `process_vm_writev` failed.
    Io(std::io::Error),
    /// The receiver died while it held chunks.
    Gone,
    /// The receiver held chunks for longer than
    /// [`Config::assist_wait`](super::Config::assist_wait).
    Stalled,
}

/// Keeps `assist_open` counted while a job is open.
struct Open<'a>(&'a BindingSlot);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.assist_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Registry {
    /// The single copy of `n` bytes split with the receiver (module docs).
    /// Returns the chunks the receiver copied. On return the job is
    /// closed: no chunk is being copied by anyone.
    pub(super) fn assisted_write(
        &self,
        s: &BindingSlot,
        d: &DmaDesc,
        view: &SlotView,
        src: &[&[u8]],
        dst: &[AddrRange],
        n: u64,
    ) -> Result<u32, AssistFail> {
        let src = cma::trim_bytes(src, n);
        let dst = cma::trim_ranges(dst, n);
        let chunk = assist_chunk(n);
        let nch = n.div_ceil(chunk);
        if src.len() > MAX_SECTIONS || nch < 2 {
            return cma::transfer(Dir::Write, view.pid, &src, &dst, 0, n)
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
        write_pairs(&job.src[..src.len()], &src);
        job.check.store(
            assist_check(view.gen_, seq, me, n, chunk, &src),
            Ordering::Relaxed,
        );
        assist::publish(&job.ticket, seq, nch);
        s.assist_open.fetch_add(1, Ordering::Release);
        let _open = Open(s);
        s.signal.arrived.notify();

        let mut mine = 0u64;
        let mut first_err = None;
        // `assist_sender_idle` (tests only): leave every chunk to the receiver.
        if !self.inner.config.assist_sender_idle {
            while let Some(k) = assist::sender_claim(&job.ticket) {
                mine += 1;
                if first_err.is_none() {
                    let off = k * chunk;
                    if let Err(e) =
                        cma::transfer(Dir::Write, view.pid, &src, &dst, off, chunk.min(n - off))
                    {
                        first_err = Some(e);
                    }
                }
                assist::finish(&job.done, &job.failed, k, true);
            }
        }
        self.wait_for_chunks(job, view, nch)?;
        if let Some(e) = first_err {
            return Err(AssistFail::Io(e));
        }
        // Only this job's chunks: `failed` is shared memory, and a stray
        // write must not turn into an underflow below.
        let failed = job.failed.load(Ordering::Relaxed) & (u64::MAX >> (64 - nch));
        for k in (0..nch).filter(|k| failed & (1 << k) != 0) {
            let off = k * chunk;
            cma::transfer(Dir::Write, view.pid, &src, &dst, off, chunk.min(n - off))
                .map_err(AssistFail::Io)?;
        }
        // Chunks the receiver claimed, less those it could not copy.
        let theirs = nch
            .saturating_sub(mine)
            .saturating_sub(u64::from(failed.count_ones()));
        Ok(theirs as u32)
    }

    /// Wait for the receiver's chunks: Acquire pairs with its Release
    /// increments (its copies are done before we publish `used_len`).
    fn wait_for_chunks(
        &self,
        job: &AssistJob,
        view: &SlotView,
        nch: u64,
    ) -> Result<(), AssistFail> {
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
        Ok(())
    }
}

/// Receiver: claim and copy chunks of the job of descriptor `d` into `p`
/// (our private copy of it) until none is left. Everything read from the
/// job is checked first; a job that fails a check is left to its sender.
/// `claim` is the descriptor's `used_len` as we read it: we help only the
/// claimer's own job, and only while the claim stands (a sender that
/// took over the claim of a dead one, see `send`, did not open that job).
/// Returns whether we copied any chunk.
pub(super) fn help_job(
    d: &DmaDesc,
    claim: u64,
    gen_: u32,
    p: &PrivDesc,
    refused: &mut HashSet<u32>,
    stats: &LocalStats,
) -> bool {
    let job = &d.assist;
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
    if ProcId::from_word(claim & !CLAIM_BIT).pid != pid {
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
    let dst = cma::trim_ranges(&p.sections, total);
    let mut helped = false;
    let mut cur = t;
    loop {
        if d.used_len.load(Ordering::Acquire) != claim {
            break;
        }
        let Some(k) = assist::receiver_claim(&job.ticket, seq, nch, &mut cur) else {
            break;
        };
        let off = k * chunk;
        let copied = cma::transfer(Dir::Read, pid, &dst, src, off, chunk.min(total - off));
        match &copied {
            Ok(()) => {
                helped = true;
                bump(&stats.assist_chunks, 1);
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
