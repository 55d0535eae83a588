//! The claim protocol of the receiver-assisted copy (see `dma`'s module
//! docs, "Receiver-assisted copy"), on its own so that the same code runs
//! in `dma` and under the loom model (`tests/loom_shm_signal.rs`).
//!
//! Three shared words per job:
//! - `ticket = (seq << 32) | (front << 16) | back`: the sender opens job
//!   `seq` by storing `seq << 32 | chunks` (Release, after the job's
//!   fields); chunks `front..back` are unclaimed. The sender claims from
//!   the front, a receiver from the back, each by CAS *within the `seq` it
//!   read*, so a receiver can never claim a chunk of a later job with an
//!   earlier job's fields. Claiming from both ends means that in a steady
//!   stream each side tends to copy the same chunks of a reused buffer
//!   every time, so those cache lines stay in that side's cache instead of
//!   migrating between cores.
//! - `done`: chunks finished by either side (Release increments); the
//!   sender waits for `done == chunks` (Acquire) before it publishes the
//!   message or reuses the job.
//! - `failed`: bit `k` set (before `done` is bumped) by a receiver that
//!   could not copy chunk `k`; the sender redoes those.
//!
//! Because the sender waits for every claimed chunk before it opens the
//! next job, and a receiver's CAS needs `next < chunks` in the *same*
//! `seq`, no claim of job `seq` can complete after job `seq + 1` opened.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Sender: open a new job on `ticket` (whose previous job, if any, is
/// complete), after the job's fields are written. Returns its `seq`.
pub fn open(ticket: &AtomicU64, done: &AtomicU32, failed: &AtomicU64) -> u32 {
    let seq = ((ticket.load(Ordering::Relaxed) >> 32) as u32).wrapping_add(1);
    done.store(0, Ordering::Relaxed);
    failed.store(0, Ordering::Relaxed);
    seq
}

/// Most chunks of one job.
pub const MAX_CHUNKS: u64 = 64;

/// Sender: publish job `seq` of `chunks` (≤ [`MAX_CHUNKS`]) chunks
/// (Release: a receiver that loads the ticket with Acquire sees the job's
/// fields and the reset `done`/`failed`).
pub fn publish(ticket: &AtomicU64, seq: u32, chunks: u64) {
    debug_assert!(chunks <= MAX_CHUNKS);
    ticket.store((u64::from(seq) << 32) | chunks, Ordering::Release);
}

fn front(t: u64) -> u64 {
    (t >> 16) & 0xffff
}

fn back(t: u64) -> u64 {
    t & 0xffff
}

/// Sender: claim the lowest unclaimed chunk; `None` when none is left.
pub fn sender_claim(ticket: &AtomicU64) -> Option<u64> {
    let mut t = ticket.load(Ordering::Acquire);
    loop {
        if front(t) >= back(t) {
            return None;
        }
        match ticket.compare_exchange_weak(t, t + (1 << 16), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(front(t)),
            Err(v) => t = v,
        }
    }
}

/// Receiver: load the ticket (Acquire) to learn the job's `seq` before
/// reading its fields.
pub fn observe(ticket: &AtomicU64) -> u64 {
    ticket.load(Ordering::Acquire)
}

/// Receiver: claim the highest unclaimed chunk of job `seq` (of `chunks`
/// chunks, as the job's fields say), starting from the ticket value `cur`
/// last seen; `None` when the job has no chunk left, is no longer `seq`,
/// or the ticket does not fit `chunks` (garbage).
pub fn receiver_claim(ticket: &AtomicU64, seq: u32, chunks: u64, cur: &mut u64) -> Option<u64> {
    loop {
        let (f, b) = (front(*cur), back(*cur));
        if (*cur >> 32) as u32 != seq || f >= b || b > chunks {
            return None;
        }
        match ticket.compare_exchange_weak(*cur, *cur - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                *cur -= 1;
                return Some(b - 1);
            }
            Err(v) => *cur = v,
        }
    }
}

/// Receiver: whether the ticket value `t` has unclaimed chunks.
pub fn has_unclaimed(t: u64) -> bool {
    front(t) < back(t)
}

/// Either side: chunk `k` is finished (`ok == false`: not copied, the
/// sender must redo it).
pub fn finish(done: &AtomicU32, failed: &AtomicU64, k: u64, ok: bool) {
    if !ok {
        failed.fetch_or(1 << k, Ordering::Relaxed);
    }
    // Release: the copy (and `failed`) happen before the sender's Acquire
    // load that sees the count complete.
    done.fetch_add(1, Ordering::Release);
}

/// Sender: chunks finished so far (Acquire).
pub fn finished(done: &AtomicU32) -> u64 {
    u64::from(done.load(Ordering::Acquire))
}
