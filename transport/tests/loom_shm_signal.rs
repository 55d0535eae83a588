//! Loom model of the shm_signal protocol.
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
