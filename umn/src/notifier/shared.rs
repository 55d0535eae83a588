//! [`Shared`]: what a local notifier shares with the threads that write
//! events into it — the userfaultfd monitor, the hooks, and any thread
//! calling `notify_unmapped`.
//!
//! Every field is an atomic or the lock-free ring, because a writer may
//! run while the application holds any lock (the monitor serves a `munmap`
//! that blocks until its event is read; a hook runs inside `shmdt`).
//! Nothing here allocates or blocks. The writer protocol is the
//! generation seqlock's (`crate::generation`): `begin`, poke the eventfd,
//! record into the ring, `end`. The reader side — draining the ring into
//! the event queue under the notifier's lock — is `Notifier::pump`, in the
//! parent module.
//!
//! The userfaultfd, its monitor and its spans are not here: they are the
//! process's, shared by every uffd notifier (`hub.rs`). A notifier's
//! `Shared` only says whether the hub's readers feed it (`uffd_fed`).
//!
//! Descriptors are held as `AtomicI32` (-1: none or closed) so that `Drop`
//! and the hub can close each exactly once with a `swap` (`take_fd`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::generation::GenCell;
use crate::ring::{RawEvent, Ring};
use crate::sys;

/// State shared by the caller's threads, the monitor thread and the hooks.
/// Every field is an atomic or the lock-free ring: nothing here can block
/// a writer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) word: GenCell,
    pub(crate) ring: Ring,
    /// Set by a writer whose push found the ring full, before its `end`.
    pub(super) overflow: AtomicBool,
    /// Pollable eventfd, poked after every batch of writes.
    pub(super) efd: AtomicI32,
    /// Set in a fork child.
    pub(super) forked: AtomicBool,
    /// A `Uffd` notifier: the hub's readers record every uffd event here
    /// (an `External` one gets only its own and the hooks' events).
    pub(crate) uffd_fed: bool,
    /// A `Patch` notifier: the libc patch's hooks record into it
    /// (`crate::patch`).
    pub(crate) patch_fed: bool,
}

impl Shared {
    /// Fresh state over the pollable eventfd `efd`, with a ring of
    /// `ring_capacity` raw events; `uffd_fed` for a `Uffd` notifier,
    /// `patch_fed` for a `Patch` one.
    pub(super) fn new(ring_capacity: usize, efd: RawFd, uffd_fed: bool, patch_fed: bool) -> Self {
        Self {
            word: GenCell::new(),
            ring: Ring::with_capacity(ring_capacity),
            overflow: AtomicBool::new(false),
            efd: AtomicI32::new(efd),
            forked: AtomicBool::new(false),
            uffd_fed,
            patch_fed,
        }
    }

    /// Put one raw event in the ring (between the writer's begin and end).
    pub(crate) fn record(&self, ev: RawEvent) {
        if !self.ring.push(ev) {
            // Published by the writer's `end` (Release).
            self.overflow.store(true, Ordering::Relaxed);
        }
    }

    /// Wake poll/epoll users.
    pub(crate) fn poke(&self) {
        let fd = self.efd.load(Ordering::Relaxed);
        if fd >= 0 {
            let _ = sys::write_u64(fd, 1);
        }
    }

    /// A complete write: begin, record, end, poke. Used by hooks and
    /// `notify_unmapped`.
    pub(crate) fn write(&self, ev: RawEvent) {
        self.word.begin();
        self.poke();
        self.record(ev);
        self.word.end();
    }

    pub(crate) fn is_forked(&self) -> bool {
        self.forked.load(Ordering::Acquire)
    }

    /// Close the descriptor held in `a`, once: whoever swaps it out closes
    /// it (closing -1 does nothing).
    pub(super) fn take_fd(a: &AtomicI32) {
        sys::close(a.swap(-1, Ordering::AcqRel));
    }
}
