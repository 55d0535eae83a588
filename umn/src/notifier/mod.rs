//! [`Notifier`]: one API over every invalidation source.
//!
//! A notifier has one of two backends. `Kernel` forwards every call to the
//! device (`crate::kernel`), which keeps registrations, matches events and
//! queues them itself. `Local` — the `Uffd` and `External` sources — does
//! that work in this process, in three layers:
//!
//! - writers (the userfaultfd monitor, the hooks, `notify_unmapped`)
//!   record raw ranges into [`Shared`] (`shared.rs`): atomics and a
//!   lock-free ring, nothing that can block them;
//! - the caller's threads, under the notifier's one `Mutex` (`Inner`),
//!   *pump* the ring into the event queue (`crate::queue`), which matches
//!   ranges to cookies, and carve the VMA spans registered with the uffd
//!   (`spans.rs`);
//! - the process-wide table of live notifiers (`fork.rs`) lets the fork
//!   child handler, the hooks and the uffd readers reach every notifier
//!   without a lock.
//!
//! The userfaultfd itself, its monitor thread and the spans are one per
//! process, shared by every `Uffd` notifier (`hub.rs`): a VMA can belong
//! to one userfaultfd context only, and several notifiers (one cache per
//! device) watch the same memory. Each uffd batch is fanned out to every
//! uffd-fed notifier's `Shared`; the queue, ring and generation word stay
//! per notifier.
//!
//! ## Order of a pump
//!
//! `pump` first helps (reads the uffd itself if it is readable), then
//! waits for the generation to settle (`GenCell::settle`), and only then
//! pops the ring: every event that was busy when it looked is in the ring
//! by then, so the generation it returns is one the queue is complete up
//! to. Overflow of the ring turns into "everything invalid". The VMA spans
//! are not carved here but by the hub, from its own feed (`hub.rs`);
//! taking the hub's spans lock inside the queue lock is the one lock order
//! of the module.
//!
//! ## The mremap echo
//!
//! A moving `mremap` reports REMAP(old) and then UNMAP(old) for one system
//! call; the second is the same change, dropped so the counter moves once
//! and the hint survives. The two are two uffd messages, each waited for
//! separately by the kernel, so with other threads changing the map (and
//! every uffd event of the process reaching every uffd notifier) other
//! events can come between them, and two readers (the monitor and a
//! helping lookup) can even record them in the other order. So `Echo`
//! keeps the last [`ECHO_WINDOW`] REMAP and UNMAP ranges, and an event of
//! the other kind over exactly the same range is dropped as the pair's
//! second half. Dropping the second of two events over one range is safe
//! whenever no registration over that range was made between them: they
//! hit the same cookies, which the first already invalidated. So
//! `register` forgets every remembered range its range overlaps (it pumps
//! first: the events before it are applied), and an event after it counts
//! in full. A forgotten range (window full) only costs a second count.
//!
//! `register` and `unregister` pump before they change the queue, so an
//! event that happened before a registration existed does not hit it, and
//! one that happened while it was live still counts (as the kernel device,
//! which counts at event time).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::generation::Generation;
use crate::kernel::KernelDev;
use crate::queue::{Cookie, Event, EventQueue, Invalidation, QueueError};
use crate::range::{AddrRange, RangeError};
use crate::ring::{RawEvent, RawKind};
use crate::{sys, uffd};

mod fork;
mod hub;
mod shared;
mod spans;

pub(crate) use fork::{for_each_live, with_patch_fed, with_uffd_fed};
use fork::{add_live, remove_live};
pub(crate) use hub::HubFds;
use hub::{Hub, HubRef};
pub(crate) use shared::Shared;

/// Which invalidation source to open, or which one was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The kernel device if present, else the libc patch
    /// ([`Source::Patch`]), else userfaultfd (a patch refused, e.g. because
    /// another library patched libc first, is counted in
    /// [`crate::patch::fallbacks`]). Never silently
    /// `External`: a cache on `External` is only safe if the host pushes
    /// every unmap, which `Auto` cannot know.
    Auto,
    /// `/dev/ummunotify` (MMU notifier; sees everything, closes the
    /// address-reuse window).
    Kernel,
    /// userfaultfd with a monitor thread (plus the hooks, when the
    /// interposer is linked or preloaded).
    Uffd,
    /// Events only from [`Notifier::notify_unmapped`] (and the hooks): for
    /// an MPI library that has its own memory hooks.
    External,
    /// libc's `munmap`, `mremap`, `madvise`, `mmap` (`MAP_FIXED`), `brk`
    /// and `shmdt` patched to invalidate *before* the system call
    /// ([`crate::patch`]): synchronous like the kernel device, no module,
    /// no privilege. Blind to raw system calls that bypass libc.
    Patch,
}

/// Tuning for [`Notifier::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Pin the userfaultfd monitor thread to this CPU (best effort). The
    /// monitor is the process's, shared by every `Uffd` notifier: only the
    /// notifier that starts it (the first one open) pins it.
    pub monitor_cpu: Option<usize>,
    /// Raw events the ring holds between drains (rounded up to a power of
    /// two). On overflow every registration is invalidated, without hint.
    pub ring_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            monitor_cpu: None,
            ring_capacity: 4096,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    queue: EventQueue,
    echo: Echo,
}

/// REMAP and UNMAP ranges remembered for pairing (module docs).
const ECHO_WINDOW: usize = 16;

/// The last [`ECHO_WINDOW`] REMAP/UNMAP events not yet paired, oldest
/// first (module docs, "The mremap echo").
#[derive(Debug, Default)]
struct Echo {
    recent: std::collections::VecDeque<(RawKind, AddrRange)>,
}

impl Echo {
    /// `true` when `ev` is the second half of a remembered REMAP/UNMAP
    /// pair (then forgotten); otherwise remembers `ev` when it is either.
    fn is_echo(&mut self, ev: RawEvent) -> bool {
        let other = match ev.kind {
            RawKind::Remap => RawKind::Unmap,
            RawKind::Unmap => RawKind::Remap,
            RawKind::Remove => return false,
        };
        if let Some(i) = self.recent.iter().position(|&e| e == (other, ev.range)) {
            self.recent.remove(i);
            return true;
        }
        if self.recent.len() == ECHO_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back((ev.kind, ev.range));
        false
    }

    /// A registration over `r`: later events over it count in full.
    fn forget(&mut self, r: AddrRange) {
        self.recent.retain(|(_, e)| !e.overlaps(&r));
    }
}

#[derive(Debug)]
struct Local {
    shared: Arc<Shared>,
    inner: Mutex<Inner>,
    /// The process's userfaultfd, for a `Uffd` notifier.
    hub: Option<HubRef>,
    slot: Option<usize>,
}

#[derive(Debug)]
enum Backend {
    Kernel(Arc<KernelDev>),
    Local(Box<Local>),
}

/// A source of ummunotify events for registered address ranges.
///
/// `Send + Sync`: every method takes `&self`. `register`, `unregister` and
/// `read` serialise on an internal lock (never held by the monitor thread
/// or the hooks); [`Notifier::generation`] takes no lock and makes no
/// system call.
#[derive(Debug)]
pub struct Notifier {
    /// The generation word: in `Shared` or in the device's mmap'd page,
    /// both owned by `backend`.
    word: *const AtomicU64,
    source: Source,
    backend: Backend,
}

// SAFETY: `word` points into memory owned by `backend` (an Arc'd Shared or
// KernelDev mapping) and is only accessed atomically; the rest is Send.
unsafe impl Send for Notifier {}
// SAFETY: as above; shared state is atomics, the lock-free ring, or
// Mutex-protected.
unsafe impl Sync for Notifier {}

/// A cheap handle to a notifier's generation word, for a cache to hold.
/// [`GenerationWatch::load`] is one `Acquire` load (~1 ns).
#[derive(Clone)]
pub struct GenerationWatch {
    word: *const AtomicU64,
    _owner: Arc<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for GenerationWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GenerationWatch")
            .field(&self.load())
            .finish()
    }
}

// SAFETY: `word` is kept alive by `_owner` and only accessed atomically.
unsafe impl Send for GenerationWatch {}
// SAFETY: as above.
unsafe impl Sync for GenerationWatch {}

impl GenerationWatch {
    /// The current generation (one `Acquire` load, no system call).
    #[inline]
    pub fn load(&self) -> Generation {
        // SAFETY: `_owner` keeps the word alive; it is only accessed
        // atomically by every party.
        Generation(unsafe { &*self.word }.load(Ordering::Acquire))
    }
}

fn queue_err(e: QueueError, cookie: Cookie) -> Error {
    match e {
        QueueError::Duplicate => Error::DuplicateCookie(cookie),
        QueueError::Unknown => Error::UnknownCookie(cookie),
    }
}

impl Notifier {
    /// Open `source` with default [`Options`].
    ///
    /// # Errors
    /// As [`Notifier::open_with`].
    pub fn open(source: Source) -> Result<Self> {
        Self::open_with(source, &Options::default())
    }

    /// Open `source`. [`Notifier::source`] tells which one `Auto` chose.
    ///
    /// # Errors
    /// `Kernel`: [`Error::DeviceAbsent`] when `/dev/ummunotify` does not
    /// exist, [`Error::DeviceOpen`]/[`Error::Device`] otherwise. `Uffd`:
    /// [`Error::UffdOpen`], [`Error::UffdApi`], [`Error::Sys`]. `Patch`:
    /// [`Error::PatchUnavailable`]. `Auto`: the userfaultfd error when
    /// none works.
    pub fn open_with(source: Source, opts: &Options) -> Result<Self> {
        match source {
            Source::Kernel => Self::open_kernel(),
            Source::Uffd => Self::open_local(Source::Uffd, opts),
            Source::External => Self::open_local(Source::External, opts),
            Source::Patch => {
                crate::patch::install().map_err(Error::PatchUnavailable)?;
                Self::open_local(Source::Patch, opts)
            }
            Source::Auto => match Self::open_kernel() {
                Ok(n) => Ok(n),
                Err(_) => match crate::patch::install() {
                    Ok(()) => Self::open_local(Source::Patch, opts),
                    Err(_) => {
                        crate::patch::count_fallback();
                        Self::open_local(Source::Uffd, opts)
                    }
                },
            },
        }
    }

    fn open_kernel() -> Result<Self> {
        let dev = Arc::new(KernelDev::open()?);
        Ok(Self {
            word: dev.counter() as *const AtomicU64,
            source: Source::Kernel,
            backend: Backend::Kernel(dev),
        })
    }

    fn open_local(source: Source, opts: &Options) -> Result<Self> {
        let with_uffd = source == Source::Uffd;
        let sys_err = |call| move |source| Error::Sys { call, source };
        // Dropped on every error path below: the last one closes the hub.
        let hub = if with_uffd {
            Some(Hub::acquire(opts.monitor_cpu)?)
        } else {
            None
        };
        let efd = sys::eventfd().map_err(sys_err("eventfd"))?;
        let shared = Arc::new(Shared::new(
            opts.ring_capacity,
            efd,
            with_uffd,
            source == Source::Patch,
        ));
        let slot = add_live(&shared);
        if (with_uffd || source == Source::Patch) && slot.is_none() {
            // The hub's readers reach notifiers through the table only: a
            // uffd notifier outside it would never see an event.
            Shared::take_fd(&shared.efd);
            return Err(hub::table_full());
        }
        Ok(Self {
            word: shared.word.as_std() as *const AtomicU64,
            source,
            backend: Backend::Local(Box::new(Local {
                shared,
                inner: Mutex::new(Inner::default()),
                hub,
                slot,
            })),
        })
    }

    /// The source in use (`Kernel`, `Patch`, `Uffd` or `External`, never
    /// `Auto`).
    pub fn source(&self) -> Source {
        self.source
    }

    /// The userfaultfd features negotiated (`UFFD_FEATURE_*` bits), for
    /// the `Uffd` source.
    pub fn uffd_features(&self) -> Option<u64> {
        match &self.backend {
            Backend::Local(l) => l.hub.as_ref().map(|h| h.features),
            Backend::Kernel(_) => None,
        }
    }

    /// The features the kernel device granted in
    /// `UMMUNOTIFY_EXCHANGE_FEATURES`, for the `Kernel` source.
    pub fn device_features(&self) -> Option<u32> {
        match &self.backend {
            Backend::Kernel(d) => Some(d.features),
            Backend::Local(_) => None,
        }
    }

    /// `true` when the uffd source got `UFFD_FEATURE_WP_ASYNC` (Linux 6.7+:
    /// file-backed and SysV memory can be registered too).
    pub fn wp_async(&self) -> bool {
        self.uffd_features()
            .is_some_and(|f| f & uffd::FEATURE_WP_ASYNC != 0)
    }

    /// The current generation: one `Acquire` load, no lock, no system call.
    ///
    /// Compare with the `generation` of the last [`Event::Last`] you read:
    /// equal means no registered range was invalidated since; different
    /// means call [`Notifier::read`] before trusting a cached registration.
    #[inline]
    pub fn generation(&self) -> Generation {
        // SAFETY: `word` points into `self.backend`, alive as long as self;
        // every party accesses it atomically.
        Generation(unsafe { &*self.word }.load(Ordering::Acquire))
    }

    /// The per-registration word of `cookie` on the kernel device, when it
    /// granted `UMMUNOTIFY_FEATURE_REGION_WORDS` (umn/kmod); `None` for
    /// other sources, older devices and unknown cookies.
    pub fn region_word(&self, cookie: Cookie) -> Option<crate::kernel::RegionWord> {
        match &self.backend {
            Backend::Kernel(d) => crate::kernel::RegionWord::new(d, cookie),
            Backend::Local(_) => None,
        }
    }

    /// A handle the cache can keep to load the generation without going
    /// through the notifier.
    pub fn watch(&self) -> GenerationWatch {
        let owner: Arc<dyn std::any::Any + Send + Sync> = match &self.backend {
            Backend::Kernel(d) => d.clone(),
            Backend::Local(l) => l.shared.clone(),
        };
        GenerationWatch {
            word: self.word,
            _owner: owner,
        }
    }

    fn lock(l: &Local) -> MutexGuard<'_, Inner> {
        l.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Move every raw event recorded so far into the queue. Returns the
    /// settled generation the queue is now complete up to.
    fn pump(l: &Local, inner: &mut Inner) -> Generation {
        let sh = &*l.shared;
        // A helping read fans out to every uffd notifier, this one included.
        let help = || {
            let fd = l.hub.as_ref().map_or(-1, |h| h.uffd());
            if fd >= 0 && uffd::readable(fd) {
                uffd::read_batch(fd);
            }
        };
        help();
        let g = sh.word.settle(help);
        let efd = sh.efd.load(Ordering::Relaxed);
        if efd >= 0 {
            let mut b = [0u8; 8];
            let _ = sys::read(efd, &mut b);
        }
        while let Some(ev) = sh.ring.pop() {
            if !inner.echo.is_echo(ev) {
                inner.queue.apply(ev.range);
            }
        }
        if sh.overflow.swap(false, Ordering::AcqRel) {
            inner.queue.invalidate_all();
        }
        // Writers poke after `begin` and before the event can be observed.
        // A writer that began after `g` may have had its poke cleared by us
        // above before its event reached the ring: then the word has moved
        // past `g`, and we poke again so pollers come back for it.
        if sh.word.load() != g {
            sh.poke();
        }
        g
    }

    /// Register `range` under `cookie`: from now on, any change that
    /// unmaps, moves or discards part of it yields one INVAL for `cookie`.
    ///
    /// With `Uffd`, the whole VMAs covering the (page-aligned) range are
    /// registered with the process's uffd once; later registrations inside
    /// them, by this or any other `Uffd` notifier, cost no system call.
    ///
    /// # Errors
    /// [`Error::DuplicateCookie`]; [`Error::Range`] for an empty range;
    /// `Uffd`: [`Error::Busy`] when a userfaultfd that is not umn's (the
    /// application's, another library's) owns a VMA (serve the range
    /// uncached; every umn notifier of the process shares one uffd, so
    /// they never refuse each other), [`Error::NotMapped`], [`Error::Register`],
    /// [`Error::Maps`]; [`Error::Forked`] in a fork child; `Kernel`:
    /// [`Error::Device`].
    pub fn register(&self, range: AddrRange, cookie: Cookie) -> Result<()> {
        if range.is_empty() {
            return Err(RangeError::Empty {
                start: range.start(),
            }
            .into());
        }
        let l = match &self.backend {
            Backend::Kernel(d) => return d.register(range, cookie),
            Backend::Local(l) => l,
        };
        if l.shared.is_forked() {
            return Err(Error::Forked);
        }
        if self.source == Source::Patch && !crate::patch::intact() {
            // Another library patched over our jump: nothing would report
            // an unmap of this range.
            return Err(Error::PatchUnavailable(crate::patch::Unavailable::Overwritten));
        }
        let page = range.page_align()?;
        let mut inner = Self::lock(l);
        // Apply what happened before this registration existed, so an old
        // unmap of this address does not invalidate the new registration.
        Self::pump(l, &mut inner);
        if inner.queue.range_of(cookie).is_some() {
            return Err(Error::DuplicateCookie(cookie));
        }
        if let Some(hub) = &l.hub {
            hub.register(page)?;
        }
        inner.echo.forget(page);
        inner
            .queue
            .register(cookie, range)
            .map_err(|e| queue_err(e, cookie))
    }

    /// Drop `cookie`'s registration and its pending event, if any.
    ///
    /// # Errors
    /// [`Error::UnknownCookie`]; [`Error::Forked`]; `Kernel`:
    /// [`Error::Device`].
    pub fn unregister(&self, cookie: Cookie) -> Result<()> {
        let l = match &self.backend {
            Backend::Kernel(d) => return d.unregister(cookie),
            Backend::Local(l) => l,
        };
        if l.shared.is_forked() {
            return Err(Error::Forked);
        }
        let mut inner = Self::lock(l);
        // Events that happened while the cookie was live count (the kernel
        // device bumps its counter at event time).
        Self::pump(l, &mut inner);
        let range = inner
            .queue
            .unregister(cookie)
            .map_err(|e| queue_err(e, cookie))?;
        if let (Ok(page), Some(hub)) = (range.page_align(), &l.hub) {
            hub.spans().adjust(page, false);
        }
        Ok(())
    }

    /// Read pending events into `out`, oldest first, without blocking.
    /// A read that drains the queue ends with [`Event::Last`] (when `out`
    /// has room for it); with nothing pending it returns just `Last`.
    /// Returns how many records were written.
    ///
    /// This is where raw ranges are matched to cookies: in the caller's
    /// thread, never in the monitor.
    ///
    /// # Errors
    /// [`Error::Forked`] in a fork child (flush everything);
    /// `Kernel`: [`Error::Device`].
    pub fn read(&self, out: &mut [Event]) -> Result<usize> {
        let l = match &self.backend {
            Backend::Kernel(d) => return d.read(out),
            Backend::Local(l) => l,
        };
        if l.shared.is_forked() {
            return Err(Error::Forked);
        }
        if out.is_empty() {
            return Ok(0);
        }
        let mut inner = Self::lock(l);
        let g = Self::pump(l, &mut inner);
        Ok(inner.queue.fill(out, g))
    }

    /// Read until the queue is drained, calling `f` for each invalidation;
    /// returns the LAST record's `(counter, generation)`. The cache's slow
    /// path: call it when [`Notifier::generation`] differs from the
    /// generation it returned last time.
    ///
    /// # Errors
    /// As [`Notifier::read`].
    pub fn drain_with(&self, mut f: impl FnMut(Invalidation)) -> Result<(u64, Generation)> {
        let mut buf = [Event::default(); 64];
        loop {
            let k = self.read(&mut buf)?;
            for e in &buf[..k] {
                match *e {
                    Event::Inval(i) => f(i),
                    Event::Last {
                        counter,
                        generation,
                    } => return Ok((counter, generation)),
                }
            }
        }
    }

    /// Tell the notifier that `range` was unmapped (or will no longer hold
    /// the same pages), for a host that has its own memory hooks. Produces
    /// the same events as a kernel-reported unmap. Lock-free and
    /// allocation-free: callable from inside a memory hook.
    ///
    /// # Errors
    /// [`Error::Unsupported`] on the kernel device; [`Error::Forked`].
    pub fn notify_unmapped(&self, range: AddrRange) -> Result<()> {
        match &self.backend {
            Backend::Kernel(_) => Err(Error::Unsupported("notify_unmapped")),
            Backend::Local(l) if l.shared.is_forked() => Err(Error::Forked),
            Backend::Local(l) => {
                // The hub first: a `register` that sees our event in this
                // notifier's queue finds the span carved too.
                if let Some(hub) = &l.hub {
                    hub.record_unreported(range);
                }
                l.shared.write(RawEvent {
                    kind: RawKind::Unmap,
                    range,
                });
                Ok(())
            }
        }
    }

    /// How many VMA spans are registered with the process's uffd (0 for
    /// other sources and in a fork child). Registrations inside one VMA
    /// share a span, and every `Uffd` notifier of the process shares the
    /// spans, so this counts the other notifiers' too.
    pub fn registered_spans(&self) -> usize {
        match &self.backend {
            Backend::Local(l) if l.shared.is_forked() => 0,
            Backend::Local(l) => l.hub.as_ref().map_or(0, |h| h.spans().len()),
            Backend::Kernel(_) => 0,
        }
    }

    /// `true` in a fork child of the process that opened this notifier.
    pub fn is_forked(&self) -> bool {
        match &self.backend {
            Backend::Local(l) => l.shared.is_forked(),
            Backend::Kernel(_) => false,
        }
    }
}

impl AsRawFd for Notifier {
    /// A descriptor that polls readable when events may be pending: the
    /// device for `Kernel`, an eventfd poked by every writer otherwise.
    fn as_raw_fd(&self) -> RawFd {
        match &self.backend {
            Backend::Kernel(d) => d.fd,
            Backend::Local(l) => l.shared.efd.load(Ordering::Relaxed),
        }
    }
}

impl AsFd for Notifier {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is owned by self and stays open until
        // drop.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let Backend::Local(l) = &mut self.backend else {
            return;
        };
        // Out of the table first: on return no uffd reader still holds our
        // `Shared` mid-batch.
        if let Some(slot) = l.slot {
            remove_live(slot);
        }
        Shared::take_fd(&l.shared.efd);
        // The last uffd notifier closes the hub (the uffd, then the
        // monitor: `hub.rs`); in a fork child this touches nothing shared.
        drop(l.hub.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: RawKind, start: u64, end: u64) -> RawEvent {
        RawEvent {
            kind,
            range: AddrRange::new(start, end).unwrap(),
        }
    }

    #[test]
    fn echo_pairs_remap_and_unmap_of_one_range_in_either_order() {
        let mut e = Echo::default();
        assert!(!e.is_echo(ev(RawKind::Remap, 0x1000, 0x3000)));
        // Another thread's events in between.
        assert!(!e.is_echo(ev(RawKind::Unmap, 0x8000, 0x9000)));
        assert!(!e.is_echo(ev(RawKind::Remove, 0x1000, 0x3000)));
        assert!(e.is_echo(ev(RawKind::Unmap, 0x1000, 0x3000)));
        // Paired once: the next UNMAP of the range counts.
        assert!(!e.is_echo(ev(RawKind::Unmap, 0x1000, 0x3000)));
        // Recorded in the other order by two readers.
        assert!(e.is_echo(ev(RawKind::Remap, 0x1000, 0x3000)));
        // A different range is not an echo.
        assert!(!e.is_echo(ev(RawKind::Remap, 0x1000, 0x2000)));
        assert!(!e.is_echo(ev(RawKind::Unmap, 0x1000, 0x3000)));
    }

    #[test]
    fn echo_forgets_ranges_a_registration_overlaps() {
        let mut e = Echo::default();
        assert!(!e.is_echo(ev(RawKind::Remap, 0x1000, 0x3000)));
        assert!(!e.is_echo(ev(RawKind::Remap, 0x5000, 0x6000)));
        e.forget(AddrRange::new(0x2000, 0x3000).unwrap());
        // An UNMAP after a registration over the range hits it in full.
        assert!(!e.is_echo(ev(RawKind::Unmap, 0x1000, 0x3000)));
        assert!(e.is_echo(ev(RawKind::Unmap, 0x5000, 0x6000)));
    }

    #[test]
    fn echo_window_is_bounded() {
        let mut e = Echo::default();
        for i in 0..=ECHO_WINDOW as u64 {
            assert!(!e.is_echo(ev(RawKind::Remap, i << 12, (i + 1) << 12)));
        }
        assert_eq!(e.recent.len(), ECHO_WINDOW);
        // The second oldest is still paired; the oldest was forgotten: its
        // UNMAP counts.
        assert!(e.is_echo(ev(RawKind::Unmap, 1 << 12, 2 << 12)));
        assert!(!e.is_echo(ev(RawKind::Unmap, 0, 1 << 12)));
    }
}
