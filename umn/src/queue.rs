//! The ummunotify event model, source-independent: registrations, the
//! interval match of raw events to cookies, the pending queue.
//!
//! This runs only in a caller's thread (`Notifier::register`, `read`, ...),
//! never in the monitor or a hook: those only record raw ranges.
//!
//! Semantics (the seed's, kept for every source):
//! - one registration per cookie; a duplicate cookie is an error;
//! - overlapping registrations each get their own event;
//! - a registration hit again before it is read is reported once, and
//!   without `HINT` (the hint would no longer describe everything);
//! - unregistering a cookie drops its pending event;
//! - the counter is bumped once per raw event that hits any registration;
//! - a read that drains the queue ends with `LAST` carrying the counter.
//!
//! The hint is the part of the registration the event covered (the
//! intersection of the event's range with the registered range).

use std::collections::{HashMap, VecDeque};

use crate::generation::Generation;
use crate::interval::IntervalIndex;
use crate::range::AddrRange;

/// The caller's 64-bit name for a registration (ummunotify `user_cookie`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cookie(pub u64);

/// A registration that must be dropped: its memory was unmapped, moved or
/// discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidation {
    /// The registration's cookie.
    pub cookie: Cookie,
    /// The invalidated part of the registered range (`HINT`), or `None`
    /// when the registration was hit more than once before this read (or
    /// the source lost track, e.g. ring overflow or fork): treat the whole
    /// registration as gone.
    pub range: Option<AddrRange>,
}

/// One record of [`crate::Notifier::read`], mirroring `struct
/// ummunotify_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `UMMUNOTIFY_EVENT_TYPE_INVAL` (with `FLAG_HINT` when `range` is
    /// `Some`).
    Inval(Invalidation),
    /// `UMMUNOTIFY_EVENT_TYPE_LAST`: the queue is drained.
    Last {
        /// The ummunotify counter: raw events that hit at least one
        /// registration, since open.
        counter: u64,
        /// The generation this drain is complete up to: remember it and
        /// compare [`crate::Notifier::generation`] with it.
        generation: Generation,
    },
}

impl Default for Event {
    /// A placeholder for read buffers (`vec![Event::default(); 64]`).
    fn default() -> Self {
        Event::Last {
            counter: 0,
            generation: Generation(0),
        }
    }
}

/// Why the model refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    Duplicate,
    Unknown,
}

/// Registrations and pending events.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    /// Registrations by (start, cookie), for the interval match: two
    /// cookies may register the same range.
    by_start: IntervalIndex<(), Cookie>,
    by_cookie: HashMap<Cookie, AddrRange>,
    /// cookie → (tag, hint). The tag tells stale FIFO entries apart after
    /// an unregister and re-register of the same cookie.
    pending: HashMap<Cookie, (u64, Option<AddrRange>)>,
    fifo: VecDeque<(Cookie, u64)>,
    next_tag: u64,
    counter: u64,
}

impl EventQueue {
    pub(crate) fn register(&mut self, cookie: Cookie, range: AddrRange) -> Result<(), QueueError> {
        if self.by_cookie.contains_key(&cookie) {
            return Err(QueueError::Duplicate);
        }
        self.by_cookie.insert(cookie, range);
        self.by_start.insert(range, cookie, ());
        Ok(())
    }

    pub(crate) fn unregister(&mut self, cookie: Cookie) -> Result<AddrRange, QueueError> {
        let range = self.by_cookie.remove(&cookie).ok_or(QueueError::Unknown)?;
        self.by_start.remove(range.start(), cookie);
        self.pending.remove(&cookie);
        Ok(range)
    }

    pub(crate) fn range_of(&self, cookie: Cookie) -> Option<AddrRange> {
        self.by_cookie.get(&cookie).copied()
    }

    fn mark(&mut self, cookie: Cookie, hint: Option<AddrRange>) {
        match self.pending.get_mut(&cookie) {
            Some(p) => p.1 = None,
            None => {
                let tag = self.next_tag;
                self.next_tag += 1;
                self.pending.insert(cookie, (tag, hint));
                self.fifo.push_back((cookie, tag));
            }
        }
    }

    /// Apply one raw event. Returns `true` when it hit a registration.
    pub(crate) fn apply(&mut self, ev: AddrRange) -> bool {
        if ev.is_empty() {
            return false;
        }
        let hits: Vec<(Cookie, AddrRange)> = self
            .by_start
            .overlapping(ev)
            .filter_map(|(r, c, ())| ev.intersection(&r).map(|i| (c, i)))
            .collect();
        for &(c, hint) in &hits {
            self.mark(c, Some(hint));
        }
        if !hits.is_empty() {
            self.counter += 1;
        }
        !hits.is_empty()
    }

    /// Everything is invalid (ring overflow, fork): every registration gets
    /// an event without hint; one counter bump.
    pub(crate) fn invalidate_all(&mut self) {
        let mut all: Vec<Cookie> = self.by_cookie.keys().copied().collect();
        all.sort_unstable(); // deterministic: by cookie
        for c in &all {
            self.mark(*c, None);
        }
        if !all.is_empty() {
            self.counter += 1;
        }
    }

    /// Fill `out` with pending events; append `LAST` when the queue is
    /// drained and a slot is left. Returns the number written.
    pub(crate) fn fill(&mut self, out: &mut [Event], generation: Generation) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some((cookie, tag)) = self.fifo.pop_front() else {
                out[n] = Event::Last {
                    counter: self.counter,
                    generation,
                };
                return n + 1;
            };
            match self.pending.get(&cookie) {
                Some(&(t, hint)) if t == tag => {
                    self.pending.remove(&cookie);
                    out[n] = Event::Inval(Invalidation {
                        cookie,
                        range: hint,
                    });
                    n += 1;
                }
                _ => {} // unregistered since: its event was dropped
            }
        }
        n
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: u64, e: u64) -> AddrRange {
        AddrRange::new(s, e).unwrap()
    }

    fn drain(q: &mut EventQueue) -> (Vec<Invalidation>, u64) {
        let mut buf = [Event::default(); 3];
        let mut v = Vec::new();
        loop {
            let n = q.fill(&mut buf, Generation(0));
            for e in &buf[..n] {
                match *e {
                    Event::Inval(i) => v.push(i),
                    Event::Last { counter, .. } => return (v, counter),
                }
            }
        }
    }

    #[test]
    fn seed_semantics() {
        let mut q = EventQueue::default();
        q.register(Cookie(1), r(0x1000, 0x5000)).unwrap();
        q.register(Cookie(2), r(0x3000, 0x8000)).unwrap();
        assert_eq!(
            q.register(Cookie(1), r(0, 0x1000)),
            Err(QueueError::Duplicate)
        );
        // Overlap: both get their event, one counter bump.
        assert!(q.apply(r(0x4000, 0x6000)));
        let (ev, c) = drain(&mut q);
        assert_eq!(c, 1);
        assert_eq!(
            ev,
            vec![
                Invalidation {
                    cookie: Cookie(1),
                    range: Some(r(0x4000, 0x5000))
                },
                Invalidation {
                    cookie: Cookie(2),
                    range: Some(r(0x4000, 0x6000))
                },
            ]
        );
        // Hit twice before read: once, no hint, two bumps.
        q.apply(r(0x1000, 0x2000));
        q.apply(r(0x2000, 0x3000));
        let (ev, c) = drain(&mut q);
        assert_eq!(c, 3);
        assert_eq!(
            ev,
            vec![Invalidation {
                cookie: Cookie(1),
                range: None
            }]
        );
        // Unregister drops the pending event; re-register starts clean.
        q.apply(r(0x1000, 0x2000));
        q.unregister(Cookie(1)).unwrap();
        q.register(Cookie(1), r(0x1000, 0x5000)).unwrap();
        assert_eq!(drain(&mut q).0, vec![]);
        // A miss does not bump.
        assert!(!q.apply(r(0x9000, 0xa000)));
        assert_eq!(drain(&mut q).1, 4);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Reg(u64, u64, u64),
        Unreg(u64),
        Ev(u64, u64),
        All,
        Read(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..6, 0u64..40, 1u64..12).prop_map(|(c, s, l)| Op::Reg(c, s, s + l)),
            (0u64..6).prop_map(Op::Unreg),
            (0u64..48, 1u64..10).prop_map(|(s, l)| Op::Ev(s, s + l)),
            Just(Op::All),
            (0usize..4).prop_map(Op::Read),
        ]
    }

    /// The naive model: a Vec of registrations, a Vec of pending events.
    #[derive(Default)]
    struct Naive {
        regs: Vec<(u64, u64, u64)>,
        pending: Vec<(u64, Option<(u64, u64)>)>,
        counter: u64,
    }

    impl Naive {
        fn hit(&mut self, c: u64, h: Option<(u64, u64)>) {
            if let Some(p) = self.pending.iter_mut().find(|p| p.0 == c) {
                p.1 = None;
            } else {
                self.pending.push((c, h));
            }
        }
    }

    proptest! {
        #[test]
        fn matches_naive_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut q = EventQueue::default();
            let mut m = Naive::default();
            for o in ops {
                match o {
                    Op::Reg(c, s, e) => {
                        let dup = m.regs.iter().any(|x| x.0 == c);
                        prop_assert_eq!(q.register(Cookie(c), r(s, e)).is_err(), dup);
                        if !dup { m.regs.push((c, s, e)); }
                    }
                    Op::Unreg(c) => {
                        let known = m.regs.iter().any(|x| x.0 == c);
                        prop_assert_eq!(q.unregister(Cookie(c)).is_ok(), known);
                        m.regs.retain(|x| x.0 != c);
                        m.pending.retain(|x| x.0 != c);
                    }
                    Op::Ev(s, e) => {
                        let mut any = false;
                        // One event hits registrations in address order.
                        let mut regs = m.regs.clone();
                        regs.sort_unstable_by_key(|x| (x.1, x.0));
                        for (c, rs, re) in regs {
                            let (is, ie) = (s.max(rs), e.min(re));
                            if is < ie { any = true; m.hit(c, Some((is, ie))); }
                        }
                        if any { m.counter += 1; }
                        prop_assert_eq!(q.apply(r(s, e)), any);
                    }
                    Op::All => {
                        let mut cs: Vec<u64> = m.regs.iter().map(|x| x.0).collect();
                        cs.sort_unstable();
                        for c in cs { m.hit(c, None); }
                        if !m.regs.is_empty() { m.counter += 1; }
                        q.invalidate_all();
                    }
                    Op::Read(k) => {
                        let mut buf = vec![Event::default(); k];
                        let n = q.fill(&mut buf, Generation(0));
                        let take = k.min(m.pending.len());
                        let mut want: Vec<Event> = m
                            .pending
                            .drain(..take)
                            .map(|(c, h)| {
                                Event::Inval(Invalidation {
                                    cookie: Cookie(c),
                                    range: h.map(|(s, e)| r(s, e)),
                                })
                            })
                            .collect();
                        if m.pending.is_empty() && take < k {
                            want.push(Event::Last {
                                counter: m.counter,
                                generation: Generation(0),
                            });
                        }
                        prop_assert_eq!(&buf[..n], &want[..]);
                    }
                }
            }
        }
    }
}
