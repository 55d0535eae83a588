//! The claim protocol of the receiver-assisted copy (see `dma`'s module
//! docs, "Receiver-assisted copy"), on its own so that the same code runs
//! in `dma` and under the loom model (`tests/loom_shm_signal.rs`).
//!
//! Three shared words per job:
//! - `ticket = (seq << 32) | next`: the sender opens job `seq` by storing
//!   `seq << 32` (Release, after the job's fields); a chunk is claimed by
//!   moving `next` forward. The sender may `fetch_add` (it owns the job);
//!   a receiver claims by CAS *within the `seq` it read*, so it can never
//!   claim a chunk of a later job with an earlier job's fields.
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

/// Sender: publish job `seq` (Release: a receiver that loads the ticket
/// with Acquire sees the job's fields and the reset `done`/`failed`).
pub fn publish(ticket: &AtomicU64, seq: u32) {
    ticket.store(u64::from(seq) << 32, Ordering::Release);
}

/// Sender: claim the next chunk index (`>= chunks` when none is left).
pub fn sender_claim(ticket: &AtomicU64) -> u64 {
    u64::from(ticket.fetch_add(1, Ordering::AcqRel) as u32)
}

/// Receiver: load the ticket (Acquire) to learn the job's `seq` before
/// reading its fields.
pub fn observe(ticket: &AtomicU64) -> u64 {
    ticket.load(Ordering::Acquire)
}

/// Receiver: claim the next chunk of job `seq` out of `chunks`, starting
/// from the ticket value `cur` last seen; `None` when the job has no chunk
/// left or is no longer `seq`.
pub fn receiver_claim(ticket: &AtomicU64, seq: u32, chunks: u64, cur: &mut u64) -> Option<u64> {
    loop {
        if (*cur >> 32) as u32 != seq || u64::from(*cur as u32) >= chunks {
            return None;
        }
        match ticket.compare_exchange_weak(*cur, *cur + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                let k = u64::from(*cur as u32);
                *cur += 1;
                return Some(k);
            }
            Err(v) => *cur = v,
        }
    }
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
