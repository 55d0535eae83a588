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
//!   child handler and the hooks reach every notifier without a lock.
//!
//! ## Order of a pump
//!
//! `pump` first helps (reads the uffd itself if it is readable), then
//! waits for the generation to settle (`GenCell::settle`), and only then
//! pops the ring: every event that was busy when it looked is in the ring
//! by then, so the generation it returns is one the queue is complete up
//! to. A moving `mremap` reports REMAP(old) then UNMAP(old) for one system
//! call; the echo is dropped so the counter moves once. Overflow of the
//! ring turns into "everything invalid" and forgets every span.
//!
//! `register` and `unregister` pump before they change the queue, so an
//! event that happened before a registration existed does not hit it, and
//! one that happened while it was live still counts (as the kernel device,
//! which counts at event time).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::generation::Generation;
use crate::kernel::KernelDev;
use crate::queue::{Cookie, Event, EventQueue, Invalidation, QueueError};
use crate::range::{AddrRange, RangeError};
use crate::ring::{RawEvent, RawKind};
use crate::{sys, uffd, vma};

mod fork;
mod shared;
mod spans;

pub(crate) use fork::for_each_live;
use fork::{add_live, remove_live};
pub(crate) use shared::Shared;
use spans::Spans;

/// Which invalidation source to open, or which one was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The kernel device if present, else userfaultfd. Never silently
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
}

/// Tuning for [`Notifier::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Pin the userfaultfd monitor thread to this CPU (best effort).
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
    spans: Spans,
    /// The last raw event was a REMAP of this range. A moving mremap
    /// reports REMAP(old) and then UNMAP(old) for the same system call;
    /// the UNMAP is the same change and is not counted twice.
    last_remap: Option<AddrRange>,
}

#[derive(Debug)]
struct Local {
    shared: Arc<Shared>,
    inner: Mutex<Inner>,
    monitor: Option<JoinHandle<()>>,
    slot: Option<usize>,
    uffd_features: Option<u64>,
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
    /// [`Error::UffdOpen`], [`Error::UffdApi`], [`Error::Sys`]. `Auto`: the
    /// userfaultfd error when neither works.
    pub fn open_with(source: Source, opts: &Options) -> Result<Self> {
        match source {
            Source::Kernel => Self::open_kernel(),
            Source::Uffd => Self::open_local(true, opts),
            Source::External => Self::open_local(false, opts),
            Source::Auto => match Self::open_kernel() {
                Ok(n) => Ok(n),
                Err(_) => Self::open_local(true, opts),
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

    fn open_local(with_uffd: bool, opts: &Options) -> Result<Self> {
        let sys_err = |call| move |source| Error::Sys { call, source };
        let uffd = if with_uffd { Some(uffd::open()?) } else { None };
        let close_all = |fds: &[RawFd]| fds.iter().for_each(|&fd| sys::close(fd));
        let ufd = uffd.as_ref().map_or(-1, |u| u.fd);
        let efd = match sys::eventfd() {
            Ok(fd) => fd,
            Err(e) => {
                close_all(&[ufd]);
                return Err(sys_err("eventfd")(e));
            }
        };
        let (mon, stop) = if with_uffd {
            let mon = match sys::dup_cloexec(ufd) {
                Ok(m) => m,
                Err(e) => {
                    close_all(&[ufd, efd]);
                    return Err(sys_err("fcntl(F_DUPFD_CLOEXEC)")(e));
                }
            };
            match sys::eventfd() {
                Ok(stop) => (mon, stop),
                Err(e) => {
                    close_all(&[ufd, efd, mon]);
                    return Err(sys_err("eventfd")(e));
                }
            }
        } else {
            (-1, -1)
        };
        let shared = Arc::new(Shared::new(opts.ring_capacity, efd, ufd, mon, stop));
        let monitor = if with_uffd {
            let sh = shared.clone();
            let cpu = opts.monitor_cpu;
            // `open` returns only once the monitor thread runs: its start-up
            // maps memory (the thread's signal stack), and done later it
            // could land in a range the application just unmapped — inside
            // the application's munmap, which waits for this very thread.
            let ready = Arc::new(std::sync::Barrier::new(2));
            let started = ready.clone();
            let h = std::thread::Builder::new()
                .name("umn-monitor".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    started.wait();
                    drop(started);
                    if let Some(cpu) = cpu {
                        let _ = sys::pin_to_cpu(cpu);
                    }
                    uffd::monitor(&sh, mon, stop);
                });
            match h {
                Ok(h) => {
                    ready.wait();
                    Some(h)
                }
                Err(e) => {
                    close_all(&[ufd, mon, stop, efd]);
                    return Err(sys_err("spawn(umn-monitor)")(e));
                }
            }
        } else {
            None
        };
        let slot = add_live(&shared);
        Ok(Self {
            word: shared.word.as_std() as *const AtomicU64,
            source: if with_uffd {
                Source::Uffd
            } else {
                Source::External
            },
            backend: Backend::Local(Box::new(Local {
                shared,
                inner: Mutex::new(Inner::default()),
                monitor,
                slot,
                uffd_features: uffd.map(|u| u.features),
            })),
        })
    }

    /// The source in use (`Kernel`, `Uffd` or `External`, never `Auto`).
    pub fn source(&self) -> Source {
        self.source
    }

    /// The userfaultfd features negotiated (`UFFD_FEATURE_*` bits), for
    /// the `Uffd` source.
    pub fn uffd_features(&self) -> Option<u64> {
        match &self.backend {
            Backend::Local(l) => l.uffd_features,
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
        let help = || {
            let fd = sh.uffd.load(Ordering::Relaxed);
            if fd >= 0 && uffd::readable(fd) {
                uffd::read_batch(sh, fd);
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
            let echo = ev.kind == RawKind::Unmap && inner.last_remap == Some(ev.range);
            inner.last_remap = (ev.kind == RawKind::Remap).then_some(ev.range);
            if echo {
                continue;
            }
            inner.queue.apply(ev.range);
            if ev.kind != RawKind::Remove {
                inner.spans.carve(ev.range);
            }
        }
        if sh.overflow.swap(false, Ordering::AcqRel) {
            inner.queue.invalidate_all();
            inner.spans = Spans::default();
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
    /// registered with the uffd once; later registrations inside them cost
    /// no system call.
    ///
    /// # Errors
    /// [`Error::DuplicateCookie`]; [`Error::Range`] for an empty range;
    /// `Uffd`: [`Error::Busy`] when another userfaultfd owns a VMA (serve
    /// the range uncached), [`Error::NotMapped`], [`Error::Register`],
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
        let page = range.page_align()?;
        let mut inner = Self::lock(l);
        // Apply what happened before this registration existed, so an old
        // unmap of this address does not invalidate the new registration.
        Self::pump(l, &mut inner);
        if inner.queue.range_of(cookie).is_some() {
            return Err(Error::DuplicateCookie(cookie));
        }
        let fd = l.shared.uffd.load(Ordering::Relaxed);
        if fd >= 0 {
            let mut addr = page.start();
            while addr < page.end() {
                if let Some(end) = inner.spans.covering(addr) {
                    addr = end;
                    continue;
                }
                let vma =
                    vma::find(addr)
                        .map_err(Error::Maps)?
                        .ok_or_else(|| Error::NotMapped {
                            range: AddrRange::new(addr, page.end()).unwrap_or(page),
                        })?;
                uffd::register_vma(fd, vma.range)?;
                inner.spans.insert(vma.range);
                addr = vma.range.end();
            }
            inner.spans.adjust(page, true);
        }
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
        if let Ok(page) = range.page_align() {
            inner.spans.adjust(page, false);
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
                l.shared.write(RawEvent {
                    kind: RawKind::Unmap,
                    range,
                });
                Ok(())
            }
        }
    }

    /// How many registered VMA spans the uffd source tracks (0 for other
    /// sources). Registrations inside one VMA share a span.
    pub fn registered_spans(&self) -> usize {
        match &self.backend {
            Backend::Local(l) => Self::lock(l).spans.len(),
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
        if let Some(slot) = l.slot {
            remove_live(slot);
        }
        let sh = &l.shared;
        if sh.is_forked() {
            // The monitor thread does not exist in this process.
            std::mem::forget(l.monitor.take());
            Shared::take_fd(&sh.efd);
            return;
        }
        // Close our descriptor first, then wake the monitor: it closes the
        // last reference (releasing any blocked munmap) before it exits.
        Shared::take_fd(&sh.uffd);
        let stop = sh.stop.load(Ordering::Relaxed);
        if stop >= 0 {
            let _ = sys::write_u64(stop, 1);
        }
        if let Some(h) = l.monitor.take() {
            let _ = h.join();
        }
        Shared::take_fd(&sh.mon_uffd);
        Shared::take_fd(&sh.stop);
        Shared::take_fd(&sh.efd);
    }
}
