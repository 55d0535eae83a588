//! Loom models of the shm_signal protocols (the single-owner `IrqRecord`
//! and the many-waiter `BroadcastRecord`) and of the claim protocol of the
//! receiver-assisted copy (`regcache_transport::assist`).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p regcache-transport --release --test loom_shm_signal`
//!
//! Properties checked over every interleaving loom explores:
//! - **no lost wake-up**: the receiver sleeps in the modelled futex until
//!   it has seen every message; a lost wake-up leaves it asleep forever,
//!   which loom reports as a deadlock (the test fails);
//! - **at most one wake-up in flight per direction**: `futex_wake` is issued
//!   only on a 0→1 transition of `pending`, consumed by the owner before
//!   another can be issued: `wakes_sent <= wakes_taken + 1` at the end,
//!   and a wake-up is never issued while one is outstanding (checked with
//!   a model counter next to `pending`).
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use regcache_transport::shm_signal::{IrqRecord, SpinPolicy, Wake};

/// Loom with a preemption bound (as tokio and crossbeam run it in CI): 3
/// preemptions cover every interleaving of the protocol's critical
/// windows here while keeping the run in seconds. `LOOM_MAX_PREEMPTIONS`
/// overrides it.
fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b
}

fn model(senders: u32, per_sender: u32, spin: u32) {
    builder().check(move || {
        let irq = Arc::new(IrqRecord::new());
        // The "queue": messages produced; published before the doorbell.
        let produced = Arc::new(AtomicU32::new(0));
        let total = senders * per_sender;

        let mut hs = Vec::new();
        for _ in 0..senders {
            let irq = irq.clone();
            let produced = produced.clone();
            hs.push(loom::thread::spawn(move || {
                for _ in 0..per_sender {
                    produced.fetch_add(1, Ordering::Release);
                    irq.notify();
                }
            }));
        }

        let mut seen = 0;
        while seen < total {
            // Drain.
            seen = produced.load(Ordering::Acquire);
            if seen == total {
                break;
            }
            let w = irq.wait(SpinPolicy { iters: spin }, None);
            assert_eq!(w, Wake::Signalled);
        }
        for h in hs {
            h.join().unwrap();
        }
        let st = irq.stats();
        assert!(st.wakes_sent <= st.wakes_taken + 1, "{st:?}");
        assert!(st.wakes_sent <= st.notifies, "{st:?}");
        assert_eq!(st.notifies, u64::from(total));
    });
}

#[test]
fn loom_one_sender_two_messages_no_spin() {
    model(1, 2, 0);
}

#[test]
fn loom_two_senders_no_spin() {
    model(2, 1, 0);
}

#[test]
fn loom_one_sender_with_spin() {
    model(1, 2, 1);
}

/// Enable/disable by hand (polling mode) then sleep: a notify while
/// disabled must still be seen by the re-check before sleeping.
#[test]
fn loom_notify_while_disabled() {
    builder().check(|| {
        let irq = Arc::new(IrqRecord::new());
        let flag = Arc::new(AtomicU32::new(0));
        let (i2, f2) = (irq.clone(), flag.clone());
        let h = loom::thread::spawn(move || {
            f2.store(1, Ordering::Release);
            i2.notify();
        });
        irq.disable();
        while flag.load(Ordering::Acquire) == 0 {
            assert_eq!(irq.wait(SpinPolicy { iters: 0 }, None), Wake::Signalled);
        }
        h.join().unwrap();
    });
}

/// The assisted copy's claim protocol (`assist`): a sender runs two jobs
/// of two chunks, one after the other, on the same ticket; a receiver
/// helps whenever it sees an open job, and fails (leaves to the sender)
/// its first chunk of the second job. Checked over every interleaving:
/// every chunk of every job is copied exactly once, with that job's own
/// fields (a receiver that read job 1 never copies into job 2), and the
/// sender sees all of a job's chunks finished before it moves on.
#[test]
fn loom_assisted_copy_every_chunk_exactly_once_per_job() {
    use loom::sync::atomic::AtomicU64;
    use regcache_transport::assist;
    const JOBS: u32 = 2;
    const CHUNKS: u64 = 2;
    builder().check(|| {
        let ticket = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU32::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        // The job's fields, reduced to its number (the checksum's role:
        // fields that do not match the ticket's seq are not used).
        let fields = Arc::new(AtomicU32::new(0));
        // copies[job - 1][chunk]
        let copies: Arc<Vec<AtomicU32>> = Arc::new(
            (0..JOBS as u64 * CHUNKS)
                .map(|_| AtomicU32::new(0))
                .collect(),
        );
        let cell = |job: u32, k: u64| (u64::from(job - 1) * CHUNKS + k) as usize;

        let rx = {
            let (ticket, done, failed, fields, copies) = (
                ticket.clone(),
                done.clone(),
                failed.clone(),
                fields.clone(),
                copies.clone(),
            );
            loom::thread::spawn(move || {
                let mut failed_one = false;
                for _ in 0..2 {
                    let t = assist::observe(&ticket);
                    let seq = (t >> 32) as u32;
                    let job = fields.load(Ordering::Relaxed);
                    if seq == 0 || job != seq {
                        loom::thread::yield_now();
                        continue;
                    }
                    let mut cur = t;
                    while let Some(k) = assist::receiver_claim(&ticket, seq, CHUNKS, &mut cur) {
                        let ok = job != 2 || failed_one;
                        failed_one |= job == 2;
                        if ok {
                            copies[cell(job, k)].fetch_add(1, Ordering::Relaxed);
                        }
                        assist::finish(&done, &failed, k, ok);
                        cur = assist::observe(&ticket);
                    }
                }
            })
        };

        for job in 1..=JOBS {
            let seq = assist::open(&ticket, &done, &failed);
            assert_eq!(seq, job);
            fields.store(job, Ordering::Relaxed);
            assist::publish(&ticket, seq, CHUNKS);
            while let Some(k) = assist::sender_claim(&ticket) {
                copies[cell(job, k)].fetch_add(1, Ordering::Relaxed);
                assist::finish(&done, &failed, k, true);
            }
            while assist::finished(&done) < CHUNKS {
                loom::thread::yield_now();
            }
            let f = failed.load(Ordering::Relaxed);
            for k in (0..CHUNKS).filter(|k| f & (1 << k) != 0) {
                copies[cell(job, k)].fetch_add(1, Ordering::Relaxed);
            }
            for k in 0..CHUNKS {
                assert_eq!(
                    copies[cell(job, k)].load(Ordering::Relaxed),
                    1,
                    "job {job} chunk {k}"
                );
            }
        }
        rx.join().unwrap();
        for job in 1..=JOBS {
            for k in 0..CHUNKS {
                assert_eq!(copies[cell(job, k)].load(Ordering::Relaxed), 1);
            }
        }
    });
}

/// The restock doorbell of keyed DMA (`BroadcastRecord`): two waiters
/// each need one "descriptor"; the ringer makes two free, ringing after
/// each. A waiter takes its ticket before it looks for a free one, then
/// sleeps (no timeout: a lost wake-up is a loom deadlock). (The
/// single-owner `IrqRecord` once used here loses a ring when two waiters
/// share it: `tests/xproc.rs`,
/// `dma_two_senders_waiting_for_restock_both_get_a_restocked_descriptor`.)
#[test]
fn loom_broadcast_two_waiters_two_rings() {
    use regcache_transport::shm_signal::BroadcastRecord;
    builder().check(|| {
        let bell = Arc::new(BroadcastRecord::new());
        let free = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (bell, free) = (bell.clone(), free.clone());
                loom::thread::spawn(move || {
                    loop {
                        let t = bell.ticket();
                        let n = free.load(Ordering::Acquire);
                        if n > 0
                            && free
                                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Relaxed)
                                .is_ok()
                        {
                            return;
                        }
                        if n == 0 {
                            assert_eq!(
                                bell.wait(t, SpinPolicy { iters: 0 }, None),
                                Wake::Signalled
                            );
                        }
                    }
                })
            })
            .collect();
        for _ in 0..2 {
            free.fetch_add(1, Ordering::Release);
            bell.notify();
        }
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(free.load(Ordering::Relaxed), 0);
        let st = bell.stats();
        assert_eq!(st.notifies, 2);
        assert!(st.wakes_sent <= st.notifies, "{st:?}");
    });
}
