//! The process-wide userfaultfd *hub*: one uffd, one monitor thread and
//! one set of registered VMA spans, shared by every `Uffd` notifier of the
//! process.
//!
//! ## Why one per process
//!
//! The kernel lets a VMA belong to one userfaultfd context at a time:
//! `UFFDIO_REGISTER` of a VMA that another context holds is EBUSY. With one
//! uffd per notifier, a second notifier (Open MPI makes one rcache per
//! device, so one `regcache::Cache` and one notifier each) could not watch
//! memory that the first already watched — the heap, a buffer sent to two
//! devices — and got [`crate::Error::Busy`]. Registering a VMA again with
//! the *same* context is allowed. So the uffd is a process resource: the
//! first `Uffd` notifier opens the hub, every later one shares it, and the
//! last one to drop closes it; a process with no uffd notifier has no uffd
//! and no monitor thread.
//!
//! ## What is shared and what is not
//!
//! Shared (here): the uffd descriptor, the monitor thread with its
//! duplicate of the descriptor and its stop eventfd, the negotiated
//! features, and the [`Spans`] registered with the uffd (under their own
//! `Mutex`). Per notifier (`Shared`, `Inner`): the generation word, the
//! ring, the pollable eventfd, the event queue of cookies, the mremap echo
//! state.
//!
//! ## Fan-out
//!
//! A uffd event does not say whose it is, so every uffd batch goes to every
//! live uffd-fed notifier (`uffd::read_batch`): the set is captured once
//! per batch from the table of live notifiers (`fork.rs`, `with_uffd_fed`)
//! without allocation, then `begin` on all, `read`, record into all, `end`
//! on all. Each notifier matches the ranges to its own cookies in its
//! caller's thread; a notifier with no registration there queues nothing.
//! The capture holds the table's walker count for the whole batch, so a
//! notifier leaving the table waits for it (no `begin` without its `end`),
//! and a notifier entering the table waits for every batch that captured
//! without it before its `open` returns (so any event for memory it
//! registers is fanned out to it). `External` notifiers are in the table
//! for the fork handler and the hooks, but are not uffd-fed.
//!
//! ## Spans, and the hub's own feed
//!
//! A span must be carved by every UNMAP/REMAP (and every hook event) over
//! it, whichever notifier is alive to see it: a notifier opened later has
//! not seen the events before its `open`, and one that never pumps again
//! carves nothing, so a span left by either would make a later
//! `register` skip `UFFDIO_REGISTER` for new memory at that address — and
//! miss its events. So the hub carves from a feed of its own: a `Shared`
//! (generation word and ring, no eventfd) in the table of live notifiers
//! for the hub's whole life, uffd-fed like a notifier (and reached by the
//! hooks; `notify_unmapped` on a `Uffd` notifier writes to it too). Under
//! the spans lock, [`Hub::spans`] first catches up: it helps read the
//! uffd, waits for the feed's generation to settle, and carves with every
//! event in its ring — the notifier's `pump` protocol, for spans. Every
//! event of a change that returned before the caller took the lock is
//! carved by then. A feed overflow forgets every span (the hub no longer
//! knows what changed), which costs a `UFFDIO_REGISTER` per VMA again,
//! never an event. (Carving from each notifier's own ring, as the
//! per-notifier uffd did, failed umn's own tests in exactly that way: a
//! span left by a dropped notifier made `register` of new memory at the
//! address skip the uffd.) Lock order: a notifier's queue lock (`Inner`), then the
//! hub's spans lock; nothing else takes the spans lock, and no
//! invalidation source takes either.
//!
//! ## Life cycle
//!
//! The hub lives in an `Arc` held by each uffd notifier through a
//! [`HubRef`]; the static [`HUB`] holds a `Weak`. Opening upgrades it or
//! creates a new hub, and the last `HubRef` drops its `Arc` under the same
//! lock, so a new hub is never opened while the old one is still closing
//! (its VMAs would still belong to the old context: EBUSY). Closing is
//! today's notifier close: close the hub's descriptor, wake the monitor,
//! which closes the last reference (the kernel releases any blocked
//! `munmap` and unregisters every VMA) before it exits and is joined.
//!
//! The descriptors are kept in one static ([`FDS`]), not in the hub: the
//! monitor and the `pthread_atfork` child handler reach them without a
//! pointer whose lifetime they would have to reason about. At most one hub
//! exists at a time in a process, which is what makes one static enough.
//!
//! ## Warts
//!
//! - A notifier's generation moves on every uffd event of the process,
//!   also for memory only another notifier registered: the monitor cannot
//!   tell whose an event is before it has read it, and the generation must
//!   be busy before the read. The drain then matches nothing — a slow path
//!   taken for nothing, never an event lost. (The kernel device counts only
//!   events that hit the file's registrations.)
//! - `Options::monitor_cpu` is honoured by the notifier that opens the
//!   hub; later ones share its monitor as it is.
//! - The hub's feed takes one slot of the table of live notifiers (64).
//! - Opening a notifier waits for the uffd batches in flight (`fork.rs`).
//!
//! ## Fork
//!
//! The child handler (async-signal-safe) closes the three descriptors and
//! bumps [`EPOCH`]; a hub whose epoch is older is *forked*: its `Drop` does
//! not touch [`FDS`] (a new hub in the child may own them) nor join the
//! monitor (which does not exist in the child), and a new `open` in the
//! child opens a new hub. Wart: opening a uffd notifier in a fork child
//! takes [`HUB`]'s lock, which a parent thread opening or dropping a
//! notifier at the moment of `fork` may hold forever in the child — the
//! same hazard as `malloc` after `fork` in a threaded process.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use super::fork::{add_live, remove_live};
use super::shared::Shared;
use super::spans::Spans;
use crate::ring::{RawEvent, RawKind};
use crate::error::{Error, Result};
use crate::range::AddrRange;
use crate::{sys, uffd, vma};

/// The hub's descriptors (-1: none or closed). Each is closed exactly once
/// by whoever swaps it out (`Shared::take_fd`).
#[derive(Debug)]
pub(crate) struct HubFds {
    /// The uffd: registration and helping reads.
    pub(crate) uffd: AtomicI32,
    /// The monitor's own duplicate; the monitor closes it (last reference).
    pub(crate) mon: AtomicI32,
    /// Eventfd that wakes the monitor for shutdown.
    pub(crate) stop: AtomicI32,
}

/// The descriptors of the process's hub (at most one hub at a time).
pub(crate) static FDS: HubFds = HubFds {
    uffd: AtomicI32::new(-1),
    mon: AtomicI32::new(-1),
    stop: AtomicI32::new(-1),
};

/// Bumped by the fork child handler: hubs of older epochs are forked.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The current hub, if any notifier holds it. Upgrades and the last
/// strong drop both happen under this lock.
static HUB: Mutex<Weak<Hub>> = Mutex::new(Weak::new());

fn hub_lock() -> MutexGuard<'static, Weak<Hub>> {
    HUB.lock().unwrap_or_else(|p| p.into_inner())
}

/// The shared userfaultfd state (module docs).
#[derive(Debug)]
pub(super) struct Hub {
    /// `UFFD_FEATURE_*` negotiated.
    pub(super) features: u64,
    spans: Mutex<Spans>,
    /// The hub's own uffd-fed state, from which it carves the spans.
    feed: Arc<Shared>,
    /// `feed`'s slot in the table of live notifiers.
    feed_slot: usize,
    monitor: Option<JoinHandle<()>>,
    epoch: u64,
}

/// Raw events the feed holds between two catch-ups (a `register` of any
/// notifier, `unregister`, `registered_spans`); more forgets every span.
const FEED_CAPACITY: usize = 4096;

impl Hub {
    /// The hub of this process, opened if there is none.
    ///
    /// `opts.monitor_cpu` is honoured by the notifier that opens the hub;
    /// later ones share its monitor as it is.
    ///
    /// # Errors
    /// [`Error::UffdOpen`], [`Error::UffdApi`], [`Error::Sys`].
    pub(super) fn acquire(monitor_cpu: Option<usize>) -> Result<HubRef> {
        let mut cur = hub_lock();
        if let Some(h) = cur.upgrade() {
            if !h.is_forked() {
                return Ok(HubRef(Some(h)));
            }
            // A forked hub of a fork child: its descriptors are closed.
            // Its notifiers are inert; a new one gets a new hub.
        }
        let h = Arc::new(Self::open(monitor_cpu)?);
        *cur = Arc::downgrade(&h);
        Ok(HubRef(Some(h)))
    }

    fn open(monitor_cpu: Option<usize>) -> Result<Self> {
        let sys_err = |call| move |source| Error::Sys { call, source };
        let u = uffd::open()?;
        // Published at once, so the fork child handler closes them.
        FDS.uffd.store(u.fd, Ordering::Release);
        let close_all = || {
            Shared::take_fd(&FDS.uffd);
            Shared::take_fd(&FDS.mon);
            Shared::take_fd(&FDS.stop);
        };
        let mon = match sys::dup_cloexec(u.fd) {
            Ok(m) => m,
            Err(e) => {
                close_all();
                return Err(sys_err("fcntl(F_DUPFD_CLOEXEC)")(e));
            }
        };
        FDS.mon.store(mon, Ordering::Release);
        let stop = match sys::eventfd() {
            Ok(s) => s,
            Err(e) => {
                close_all();
                return Err(sys_err("eventfd")(e));
            }
        };
        FDS.stop.store(stop, Ordering::Release);
        // In the table before the monitor runs and before any VMA is
        // registered: every event that could carve a span reaches it.
        let feed = Arc::new(Shared::new(FEED_CAPACITY, -1, true, false));
        let Some(feed_slot) = add_live(&feed) else {
            close_all();
            return Err(table_full());
        };
        // `open` returns only once the monitor thread runs: its start-up
        // maps memory (the thread's signal stack), and done later it could
        // land in a range the application just unmapped — inside the
        // application's munmap, which waits for this very thread.
        let ready = Arc::new(Barrier::new(2));
        let started = ready.clone();
        let h = std::thread::Builder::new()
            .name("umn-monitor".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                started.wait();
                drop(started);
                if let Some(cpu) = monitor_cpu {
                    let _ = sys::pin_to_cpu(cpu);
                }
                uffd::monitor(&FDS, mon, stop);
            });
        let monitor = match h {
            Ok(h) => {
                ready.wait();
                h
            }
            Err(e) => {
                remove_live(feed_slot);
                close_all();
                return Err(sys_err("spawn(umn-monitor)")(e));
            }
        };
        Ok(Self {
            features: u.features,
            spans: Mutex::new(Spans::default()),
            feed,
            feed_slot,
            monitor: Some(monitor),
            epoch: EPOCH.load(Ordering::Acquire),
        })
    }

    /// `true` in a fork child of the process that opened this hub.
    fn is_forked(&self) -> bool {
        EPOCH.load(Ordering::Acquire) != self.epoch
    }

    /// The uffd, for a helping read; -1 once closed.
    pub(super) fn uffd(&self) -> RawFd {
        FDS.uffd.load(Ordering::Relaxed)
    }

    /// The spans registered with the uffd, carved with every event up to
    /// now (module docs). Take it after the notifier's queue lock, never
    /// before.
    pub(super) fn spans(&self) -> MutexGuard<'_, Spans> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        let help = || {
            let fd = self.uffd();
            if fd >= 0 && uffd::readable(fd) {
                uffd::read_batch(fd);
            }
        };
        help();
        self.feed.word.settle(help);
        while let Some(ev) = self.feed.ring.pop() {
            // REMOVE (madvise) leaves the VMA in place.
            if ev.kind != RawKind::Remove {
                spans.carve(ev.range);
            }
        }
        if self.feed.overflow.swap(false, Ordering::AcqRel) {
            spans.clear();
        }
        spans
    }

    /// Record an event the uffd did not report (`notify_unmapped` on a
    /// `Uffd` notifier), so that it carves the spans too. Lock-free.
    pub(super) fn record_unreported(&self, range: AddrRange) {
        self.feed.write(RawEvent {
            kind: RawKind::Unmap,
            range,
        });
    }

    /// Register every VMA covering `page` (page-aligned) that no span
    /// covers yet, and count one more cookie over `page`.
    ///
    /// # Errors
    /// [`Error::Busy`] (a VMA owned by a userfaultfd not ours),
    /// [`Error::NotMapped`], [`Error::Register`], [`Error::Maps`].
    pub(super) fn register(&self, page: AddrRange) -> Result<()> {
        let fd = self.uffd();
        let mut spans = self.spans();
        let mut addr = page.start();
        while addr < page.end() {
            if let Some(end) = spans.covering(addr) {
                addr = end;
                continue;
            }
            let vma = vma::find(addr)
                .map_err(Error::Maps)?
                .ok_or_else(|| Error::NotMapped {
                    range: AddrRange::new(addr, page.end()).unwrap_or(page),
                })?;
            uffd::register_vma(fd, vma.range)?;
            spans.insert(vma.range);
            addr = vma.range.end();
        }
        spans.adjust(page, true);
        Ok(())
    }
}

/// In the fork child (async-signal-safe only): the monitor does not exist
/// here and the child's VMAs lost their uffd context (no `EVENT_FORK`).
/// Close the inherited descriptors; the hub they belonged to is forked.
pub(super) fn after_fork_child() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
    Shared::take_fd(&FDS.uffd);
    Shared::take_fd(&FDS.mon);
    Shared::take_fd(&FDS.stop);
}

/// The error of a full table of live notifiers: a uffd-fed state outside
/// it would never see an event.
pub(super) fn table_full() -> Error {
    Error::Sys {
        call: "umn: table of live notifiers (64 slots) full",
        source: std::io::Error::from_raw_os_error(libc::EMFILE),
    }
}

impl Drop for Hub {
    /// The last uffd notifier is gone (runs under [`HUB`]'s lock, see
    /// [`HubRef`]).
    fn drop(&mut self) {
        // Out of the table (in a fork child too: no walker is left there).
        remove_live(self.feed_slot);
        if self.is_forked() {
            // The monitor thread does not exist in this process, and the
            // descriptors were closed by the child handler.
            std::mem::forget(self.monitor.take());
            return;
        }
        // Close our descriptor first, then wake the monitor: it closes the
        // last reference (releasing any blocked munmap) before it exits.
        Shared::take_fd(&FDS.uffd);
        let stop = FDS.stop.load(Ordering::Relaxed);
        if stop >= 0 {
            let _ = sys::write_u64(stop, 1);
        }
        if let Some(h) = self.monitor.take() {
            let _ = h.join();
        }
        Shared::take_fd(&FDS.mon);
        Shared::take_fd(&FDS.stop);
    }
}

/// A notifier's share of the hub. Dropping the last one closes the hub,
/// under [`HUB`]'s lock so that no new hub opens while it closes.
#[derive(Debug)]
pub(super) struct HubRef(Option<Arc<Hub>>);

impl std::ops::Deref for HubRef {
    type Target = Hub;

    fn deref(&self) -> &Hub {
        // Only `Drop` takes the Arc out.
        self.0.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for HubRef {
    fn drop(&mut self) {
        let Some(h) = self.0.take() else { return };
        if h.is_forked() {
            // No lock in a fork child (module docs): a forked hub's drop
            // touches nothing shared.
            drop(h);
            return;
        }
        let _cur = hub_lock();
        drop(h);
    }
}
