//! Loom models of the slot state word and of deferred release.
//!
//! They drive the real [`StateWord`] and [`Deferred`] methods (the cache
//! calls the same ones, in the same order, from `hit.rs`, `invalidate.rs`
//! and `index.rs`), with the atomics of `crate::sync` switched to loom's.
//! What stands in for the cache: a *region* that is a
//! loom `UnsafeCell` holding 1 while registered, written by `deregister`
//! and read by every holder while it uses the region, so loom reports a
//! deregistration that is not ordered after every use (a missing
//! Acquire/Release) as well as one that happens while a reference is held,
//! and counts deregistrations to check that exactly one happens.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p regcache --lib --release
//! loom` (`cargo xtask test` does, in `target/loom`). Each model has a
//! must-fail twin: with `--cfg regcache_loom_break="state"` eviction clears
//! LIVE by check-then-store instead of a CAS from a zero count, and with
//! `--cfg regcache_loom_break="deferred"` the deferred tables' epoch is
//! bumped and checked with Relaxed instead of Release/Acquire; the
//! corresponding model must then fail (xtask checks that it does).

use super::deferred::{Deferred, DeferredTables};
use super::state::{Killed, StateWord};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

/// A registration as the model sees it.
struct Region {
    /// 1 while registered, 0 once deregistered.
    registered: UnsafeCell<u32>,
    deregistrations: AtomicUsize,
}

impl Region {
    fn new() -> Self {
        Self {
            registered: UnsafeCell::new(1),
            deregistrations: AtomicUsize::new(0),
        }
    }

    /// What a holder does with the registration: it must still exist.
    fn use_it(&self) {
        let v = self.registered.with(|p| {
            // SAFETY: loom checks that this read races no deregistration.
            unsafe { *p }
        });
        assert_eq!(v, 1, "region used after deregistration");
    }

    fn deregister(&self) {
        self.registered.with_mut(|p| {
            // SAFETY: loom checks that this write races no other access.
            unsafe {
                assert_eq!(*p, 1, "region deregistered twice");
                *p = 0;
            }
        });
        self.deregistrations.fetch_add(1, Relaxed);
    }
}

/// A published slot (incarnation 1, LIVE), with the publisher's reference
/// still `held` or given back.
fn published(held: bool) -> StateWord {
    let w = StateWord::new();
    w.publish(1);
    if !held {
        assert!(!w.release());
    }
    w
}

/// A hit as `Slot::try_acquire` does it, the holder's use, and its
/// release as `Cache::drop_ref` does it.
fn hit_use_release(w: &StateWord, region: &Region) {
    let st = w.load(Acquire);
    if w.try_acquire(st) {
        region.use_it();
        if w.release() {
            region.deregister();
        }
    }
}

/// `Cache::kill` and the retire that follows when the killer owns it.
fn kill(w: &StateWord, only_idle: bool, region: &Region, tables: Option<&DeferredTables>) {
    match w.kill(only_idle) {
        Killed::Idle => region.deregister(),
        Killed::InUse => {
            if let Some(t) = tables {
                t.killed_in_use();
            }
        }
        Killed::No => {}
    }
}

/// Exhaustive exploration (no preemption bound): the models are small
/// enough to run in seconds. `LOOM_MAX_PREEMPTIONS` bounds it if they grow.
fn builder() -> loom::model::Builder {
    loom::model::Builder::new()
}

/// (a) The state word: a hit's CAS, invalidation clearing LIVE, eviction's
/// CAS from a zero count and the release race; exactly one party
/// deregisters, never while a reference is held.
#[test]
fn loom_state_word() {
    builder().check(|| {
        let w = Arc::new(published(false));
        let region = Arc::new(Region::new());
        let hitter = {
            let (w, region) = (w.clone(), region.clone());
            loom::thread::spawn(move || hit_use_release(&w, &region))
        };
        let evictor = {
            let (w, region) = (w.clone(), region.clone());
            loom::thread::spawn(move || kill(&w, true, &region, None))
        };
        kill(&w, false, &region, None);
        hitter.join().unwrap();
        evictor.join().unwrap();
        let st = w.load(Acquire);
        assert!(!st.is_live());
        assert_eq!(st.refs(), 0);
        assert_eq!(region.deregistrations.load(Relaxed), 1);
    });
}

/// (a) A CAS prepared against a slot's old incarnation fails once the slot
/// was retired and published again for another region, although the new
/// state has the same LIVE bit and count (no ABA).
#[test]
fn loom_state_word_recycled() {
    builder().check(|| {
        let w = Arc::new(published(false));
        let old = w.load(Acquire);
        let recycler = {
            let w = w.clone();
            loom::thread::spawn(move || {
                if w.kill(false) != Killed::Idle {
                    return false;
                }
                // Retired; the slot is reused for the next region, whose
                // publisher then releases its reference.
                w.publish(w.load(Relaxed).next_incarnation());
                assert!(!w.release());
                true
            })
        };
        let took = w.try_acquire(old);
        let recycled = recycler.join().unwrap();
        assert!(!(took && recycled), "a stale CAS took a recycled slot");
        let now = w.load(Acquire);
        assert_eq!(now.incarnation(), if recycled { 2 } else { 1 });
    });
}

/// The deferred-release side of one thread: `Cache::release_ref` while
/// LIVE (into the table) or dropping the reference.
fn release_deferred(w: &StateWord, d: &Deferred, region: &Region) {
    if w.load(Relaxed).is_live() {
        assert_eq!(d.oldest(), 0);
        d.push(0);
    } else if w.release() {
        region.deregister();
    }
}

/// The thread's next call, as `Cache::hit::<true>` begins: purge killed
/// entries when the epoch moved, then a deferred hit if the entry is LIVE
/// (used and given back to the table).
fn next_call(w: &StateWord, tables: &DeferredTables, d: &Deferred, region: &Region) {
    if d.is_stale(tables) {
        d.purge(
            tables,
            false,
            |_| !w.load(Acquire).is_live(),
            |_| {
                if w.release() {
                    region.deregister();
                }
            },
        );
    }
    if d.take(|_| w.load(Acquire).is_live().then_some(()))
        .is_some()
    {
        region.use_it();
        release_deferred(w, d, region);
    }
}

/// (b) Deferred release against invalidation and eviction: the deferred
/// reference keeps the region registered (eviction skips it, invalidation
/// leaves deregistration to the reference's release), and once invalidated
/// the thread's next call purges the entry and exactly one deregistration
/// happens.
#[test]
fn loom_deferred_release() {
    builder().check(|| {
        // The thread got the region (one reference) before the model.
        let w = Arc::new(published(true));
        let tables = Arc::new(DeferredTables::new(1));
        let region = Arc::new(Region::new());
        let user = {
            let (w, tables, region) = (w.clone(), tables.clone(), region.clone());
            loom::thread::spawn(move || {
                let Some(d) = tables.table(0) else {
                    unreachable!("one table")
                };
                release_deferred(&w, d, &region);
                next_call(&w, &tables, d, &region);
            })
        };
        let evictor = {
            let (w, region) = (w.clone(), region.clone());
            loom::thread::spawn(move || kill(&w, true, &region, None))
        };
        kill(&w, false, &region, Some(&tables));
        user.join().unwrap();
        evictor.join().unwrap();
        // The thread's next call after the invalidation (it is the
        // thread's table: we joined it).
        let Some(d) = tables.table(0) else {
            unreachable!("one table")
        };
        next_call(&w, &tables, d, &region);
        assert!(d.is_empty(), "a killed region stayed deferred");
        assert_eq!(w.load(Acquire).refs(), 0);
        assert_eq!(region.deregistrations.load(Relaxed), 1);
    });
}
