//! The generation word: a multi-writer seqlock published before consuming.
//!
//! ## Why "publish before consume"
//!
//! With userfaultfd, `munmap` in an application thread blocks until some
//! thread `read()`s the UNMAP event, and returns as soon as it has. If the
//! monitor bumped the generation only *after* `read()`, an application could
//! see `munmap` return, look the range up, find the generation unchanged and
//! serve a stale registration (measured: about 1 run in 20 on one core).
//! So every writer makes the word *busy* before it consumes an event and
//! *settled* again after it has recorded it in the ring:
//!
//! ```text
//!   writer:  begin()  ── read(uffd) ── ring.push() ── end()
//!   app:                      └─ munmap returns ─ generation() ≠ last ─ drain
//! ```
//!
//! ## Encoding
//!
//! The low 16 bits count writers in flight; the rest counts finished
//! writes. `begin` adds 1, `end` adds `2^16 − 1`. With the monitor as the
//! only writer this is exactly the odd/even seqlock of docs/DESIGN.md (busy =
//! odd, settled = a multiple of 2^16, even); the counting form lets hooks,
//! `notify_unmapped` callers and lookups that help drain the uffd be writers
//! too without breaking parity.
//!
//! ## Orderings
//!
//! Producer: every writer (monitor thread, hook, external notifier, helping
//! lookup). Consumer: `Notifier::generation` (one `Acquire` load) and the
//! drain in `Notifier::read`.
//! - `begin` is an `AcqRel` RMW sequenced before `read(uffd)`; the kernel's
//!   wake-up of the blocked `munmap` is a release/acquire pair, so a lookup
//!   that runs after `munmap` returned loads `begin`'s value or a later one.
//!   `Acquire` also orders this writer's ring slot after every slot of
//!   writers that ended before it (the ring argument in `ring.rs`).
//! - `end` is `Release`: the ring slot written before it is visible to
//!   whoever `Acquire`-loads the settled value.
//! - A drain first waits for a settled value `g`, then empties the ring and
//!   reports `g`: every write that ended at or before `g` is in the ring;
//!   any later one changes the word again.

use crate::sync::{AtomicU64, Ordering};

/// Low bits of the word: writers in flight.
pub(crate) const BUSY_MASK: u64 = 0xffff;
/// What a finished write adds in total.
pub(crate) const WRITE_STEP: u64 = BUSY_MASK + 1;

/// A value of a notifier's generation counter.
///
/// Compare values only for equality: "unchanged since my last drain" means
/// no registered range was invalidated since. For the kernel device it is
/// the ummunotify counter of the mmap'd page; for the userfaultfd, hooks
/// and external sources it is the seqlock word described in the
/// "For the detail-oriented" part of the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Generation(pub u64);

impl Generation {
    /// Local sources (uffd, hooks, external): `true` when no writer was in
    /// flight when this value was loaded — always so for the values a drain
    /// reports in `Event::Last`. Meaningless for the kernel device, whose
    /// counter is a plain event count.
    pub const fn is_settled(self) -> bool {
        self.0 & BUSY_MASK == 0
    }
}

/// The generation word (see the module docs for the protocol).
#[derive(Debug)]
pub(crate) struct GenCell {
    word: AtomicU64,
}

impl GenCell {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// Make the word busy. Call before consuming an event.
    pub(crate) fn begin(&self) {
        self.word.fetch_add(1, Ordering::AcqRel);
    }

    /// Make the word settled again (if no other writer is in flight).
    /// Call after the event is in the ring.
    pub(crate) fn end(&self) {
        self.word.fetch_add(WRITE_STEP - 1, Ordering::Release);
    }

    /// The current value (one `Acquire` load).
    pub(crate) fn load(&self) -> Generation {
        Generation(self.word.load(Ordering::Acquire))
    }

    /// Wait for a settled value, calling `help` between attempts (the
    /// userfaultfd source reads the uffd there itself).
    pub(crate) fn settle(&self, mut help: impl FnMut()) -> Generation {
        loop {
            let g = self.load();
            if g.is_settled() {
                return g;
            }
            help();
            crate::sync::spin_hint();
        }
    }

    /// After `fork`, in the child: no writer of the parent exists here any
    /// more. Clear the in-flight count and advance the counter, so that no
    /// cached value can match again. Single-threaded context only.
    pub(crate) fn reset_after_fork(&self) {
        let g = self.word.load(Ordering::Relaxed);
        let next = (g & !BUSY_MASK).wrapping_add(2 * WRITE_STEP);
        self.word.store(next, Ordering::Release);
    }

    #[cfg(not(loom))]
    pub(crate) fn as_std(&self) -> &std::sync::atomic::AtomicU64 {
        &self.word
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model of the monitor/lookup protocol. Run with
    //! `RUSTFLAGS="--cfg loom" cargo test -p umn --lib --release loom`.
    use super::*;
    use crate::range::AddrRange;
    use crate::ring::{RawEvent, RawKind, Ring};
    use crate::sync::{Arc, AtomicBool};
    use loom::thread;

    fn ev() -> RawEvent {
        RawEvent {
            kind: RawKind::Unmap,
            range: AddrRange::new(0x1000, 0x2000).unwrap(),
        }
    }

    /// `publish_first`: the real order (begin before the consuming read).
    /// `false` models the measured bug: bump only after the read.
    fn model(publish_first: bool) {
        loom::model(move || {
            let g = Arc::new(GenCell::new());
            let ring = Arc::new(Ring::with_capacity(2));
            // The kernel's hand-off: munmap returns once the event is read.
            let consumed = Arc::new(AtomicBool::new(false));
            let last_seen = g.load();
            assert!(last_seen.is_settled());

            let monitor = {
                let (g, ring, consumed) = (g.clone(), ring.clone(), consumed.clone());
                thread::spawn(move || {
                    if publish_first {
                        g.begin();
                        consumed.store(true, Ordering::Release); // read(uffd)
                        assert!(ring.push(ev()));
                        g.end();
                    } else {
                        consumed.store(true, Ordering::Release); // read(uffd)
                        g.begin();
                        assert!(ring.push(ev()));
                        g.end();
                    }
                })
            };

            // The application thread: munmap, then a cache lookup.
            if consumed.load(Ordering::Acquire) {
                let now = g.load();
                assert_ne!(now, last_seen, "munmap returned, generation unchanged");
                let settled = g.settle(|| {});
                assert_ne!(settled, last_seen);
                let got = ring.pop();
                assert_eq!(got, Some(ev()), "settled after the event but ring empty");
            }
            monitor.join().unwrap();
        });
    }

    #[test]
    fn loom_publish_before_consume_never_misses() {
        model(true);
    }

    /// The model is not vacuous: the measured bug is found.
    #[test]
    #[should_panic]
    fn loom_bump_after_read_is_caught() {
        model(false);
    }

    /// Two writers (monitor and a hook): a lookup that saw both finish
    /// finds both events, and a settled value is never reported early.
    #[test]
    fn loom_two_writers() {
        // Five preemptions: ~16 s on the 2-core host; the unbounded run
        // (~12 min) passed too.
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(5);
        b.check(|| {
            let g = Arc::new(GenCell::new());
            let ring = Arc::new(Ring::with_capacity(2));
            let w = |g: Arc<GenCell>, ring: Arc<Ring>| {
                thread::spawn(move || {
                    g.begin();
                    assert!(ring.push(ev()));
                    g.end();
                })
            };
            let a = w(g.clone(), ring.clone());
            let b = w(g.clone(), ring.clone());
            let s = g.settle(|| {});
            let mut n = 0;
            while ring.pop().is_some() {
                n += 1;
            }
            // Every write that ended by `s` is drained (later ones may be
            // too: their slots can be published before their `end`).
            assert!(n as u64 >= s.0 / WRITE_STEP, "drained {n} at {s:?}");
            a.join().unwrap();
            b.join().unwrap();
        });
    }
}
