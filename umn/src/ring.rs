//! The preallocated event ring between writers and the draining reader.
//!
//! A bounded multi-producer queue after D. Vyukov's "bounded MPMC queue":
//! every slot carries a sequence number; a producer claims a position with a
//! CAS on `tail`, writes the slot, then publishes it by storing
//! `pos + 1` into the slot's sequence with `Release`. The consumer (one at a
//! time: the drain runs under the notifier's lock) loads the sequence with
//! `Acquire` before reading the slot. Nothing allocates after
//! construction, nothing blocks: the monitor thread may push while an
//! application thread is blocked in `munmap`.
//!
//! Why a drain after a settled generation sees every finished write: a
//! writer's `begin` (`AcqRel`) reads the `end` of every writer that
//! finished before it, so its claimed position is above theirs; the first
//! unpublished slot the consumer meets therefore belongs to a writer that
//! has not ended yet, and that writer will change the generation again.
//!
//! When the ring is full a push fails; the writer then sets the notifier's
//! overflow flag and the drain invalidates every registration (without
//! hint) — conservative, never wrong.

use crate::range::AddrRange;
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

/// What happened to a range, as the source saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RawKind {
    /// munmap, mremap shrink, MAP_FIXED over, brk shrink, shmdt.
    #[default]
    Unmap,
    /// madvise(DONTNEED/FREE/REMOVE): the VMA stays, the pages go.
    Remove,
    /// mremap move: `range` is the old location.
    Remap,
}

/// One raw event: a kind and the affected range. No cookie: matching
/// happens in the reader's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawEvent {
    pub(crate) kind: RawKind,
    pub(crate) range: AddrRange,
}

impl Default for RawEvent {
    fn default() -> Self {
        Self {
            kind: RawKind::Unmap,
            range: match AddrRange::new(0, 0) {
                Ok(r) => r,
                Err(_) => unreachable!(),
            },
        }
    }
}

struct Slot {
    seq: AtomicUsize,
    val: UnsafeCell<RawEvent>,
}

/// The ring (see the module docs).
pub(crate) struct Ring {
    slots: Box<[Slot]>,
    mask: usize,
    head: AtomicUsize,
    tail: AtomicUsize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.slots.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: slot values are only accessed by the producer that claimed the
// position (before publishing its sequence) or by the consumer that claimed
// it (after observing the published sequence with Acquire); the sequence
// protocol makes those accesses exclusive. RawEvent is plain data.
unsafe impl Sync for Ring {}
// SAFETY: as above; the ring owns plain data only.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring of at least `cap` slots (rounded up to a power of two, ≥ 2).
    pub(crate) fn with_capacity(cap: usize) -> Self {
        let cap = cap.max(2).next_power_of_two();
        let slots = (0..cap)
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                val: UnsafeCell::new(RawEvent::default()),
            })
            .collect();
        Self {
            slots,
            mask: cap - 1,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// Append; `false` when full. Never blocks, never allocates.
    pub(crate) fn push(&self, ev: RawEvent) -> bool {
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos) as isize;
            if dif == 0 {
                match self.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: we claimed `pos`; no one else touches this
                        // slot until we publish `pos + 1` below.
                        slot.val.with_mut(|p| unsafe { p.write(ev) });
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return true;
                    }
                    Err(actual) => pos = actual,
                }
            } else if dif < 0 {
                return false;
            } else {
                pos = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Take the oldest published event, if any.
    pub(crate) fn pop(&self) -> Option<RawEvent> {
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let dif = seq.wrapping_sub(pos.wrapping_add(1)) as isize;
            if dif == 0 {
                match self.head.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the producer published this slot (Acquire
                        // above) and we claimed it; exclusive until we hand
                        // it back by storing the next lap's sequence.
                        let v = slot.val.with(|p| unsafe { p.read() });
                        slot.seq
                            .store(pos.wrapping_add(self.mask + 1), Ordering::Release);
                        return Some(v);
                    }
                    Err(actual) => pos = actual,
                }
            } else if dif < 0 {
                return None;
            } else {
                pos = self.head.load(Ordering::Relaxed);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ev(i: u64) -> RawEvent {
        RawEvent {
            kind: RawKind::Unmap,
            range: AddrRange::from_start_len(i * 4096, 4096).unwrap(),
        }
    }

    #[test]
    fn fifo_full_and_wraparound() {
        let r = Ring::with_capacity(4);
        for lap in 0..3 {
            for i in 0..4 {
                assert!(r.push(ev(lap * 10 + i)));
            }
            assert!(!r.push(ev(99)), "fifth push into 4 slots must fail");
            for i in 0..4 {
                assert_eq!(r.pop(), Some(ev(lap * 10 + i)));
            }
            assert_eq!(r.pop(), None);
        }
    }

    #[test]
    fn concurrent_producers_lose_nothing() {
        let r = std::sync::Arc::new(Ring::with_capacity(4096));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        assert!(r.push(ev(t * 1000 + i)));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let mut got: Vec<u64> = std::iter::from_fn(|| r.pop())
            .map(|e| e.range.start() / 4096)
            .collect();
        got.sort_unstable();
        let mut want: Vec<u64> = (0..4)
            .flat_map(|t| (0..500).map(move |i| t * 1000 + i))
            .collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
