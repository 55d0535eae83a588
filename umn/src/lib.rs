//! # umn — the ummunotify event model
//!
//! `umn` turns changes to a process's memory map (munmap, mremap, madvise,
//! `MAP_FIXED` over a range, brk shrink, SysV detach, ...) into
//! *invalidation events* for address ranges registered under a 64-bit
//! [`Cookie`], after the ummunotify proposal (R. Dreier, 2009–2010).
//!
//! **Invariant:** `umn` knows nothing of ibverbs or of the registration
//! cache. It only turns memory-map changes into events for registered
//! cookies.
//!
//! **Invariant:** no code that runs inside an invalidation source (the
//! monitor thread, a hook) allocates, frees, unmaps or takes a lock an
//! application thread can hold; it only records raw ranges. Matching ranges
//! to cookies happens in the caller's thread, in [`Notifier::read`].
//!
//! ## Quick start
//!
//! ```no_run
//! use umn::{AddrRange, Cookie, Event, Notifier, Source};
//!
//! let n = Notifier::open(Source::Auto)?;
//! println!("invalidation source: {:?}", n.source());
//! let buf = vec![0u8; 1 << 20];
//! n.register(AddrRange::from_buffer(buf.as_ptr(), buf.len())?, Cookie(1))?;
//!
//! // Fast path: one load, no system call.
//! let mut seen = n.generation();
//! drop(buf); // free() of a 1 MiB block: munmap
//! if n.generation() != seen {
//!     let mut ev = [Event::default(); 32];
//!     loop {
//!         let k = n.read(&mut ev)?;
//!         for e in &ev[..k] {
//!             match *e {
//!                 Event::Inval(inv) => println!("drop {:?} ({:?})", inv.cookie, inv.range),
//!                 Event::Last { generation, .. } => seen = generation,
//!             }
//!         }
//!         if matches!(ev[..k].last(), Some(Event::Last { .. })) { break; }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Features (sources)
//!
//! - [`Source::Kernel`]: `/dev/ummunotify`, the module in `umn/kmod`
//!   (docs/KERNEL.md); [`Error::DeviceAbsent`] when it is not loaded.
//!   With it, [`Notifier::region_word`] validates one registration with
//!   one load.
//! - [`Source::Patch`]: libc's `munmap`, `mremap`, `madvise`, `mmap`
//!   (`MAP_FIXED`), `brk` and `shmdt` patched to invalidate *before* the
//!   system call — see the `patch` module docs. What `Auto` picks without
//!   the device; blind only to system calls that bypass libc.
//! - [`Source::Uffd`]: userfaultfd with a monitor thread — see the `uffd`
//!   module docs for what it sees and what it cannot. One uffd and one
//!   monitor per process, shared by every `Uffd` notifier: several
//!   notifiers (one cache per device) watch the same memory.
//! - Hooks: [`interpose_shm!`] defines `shmdt`/`shmat` for SysV memory.
//! - [`Source::External`]: the host pushes [`Notifier::notify_unmapped`].
//!
//! ## System requirements
//!
//! Linux. userfaultfd needs `vm.unprivileged_userfaultfd=1`, or
//! `UFFD_USER_MODE_ONLY` (Linux 5.11+, works unprivileged), or access to
//! `/dev/userfaultfd`; `EVENT_UNMAP|REMOVE|REMAP` (4.11+). `WP_ASYNC`
//! (6.7+) widens it to file-backed and SysV memory; `PROCMAP_QUERY`
//! (6.11+) makes VMA lookup one ioctl (else `/proc/self/maps` is parsed).
//!
//! ## Thread safety
//!
//! [`Notifier`] is `Send + Sync`. [`Notifier::generation`] and
//! [`GenerationWatch::load`] are lock-free single loads. `register`,
//! `unregister` and `read` serialise on an internal lock that no
//! invalidation source ever takes (and `Uffd` notifiers, to register VMAs,
//! on the process's span lock after it). Every uffd event of the process
//! moves every `Uffd` notifier's generation, also for memory only another
//! notifier registered (a drain then finds nothing: a wasted slow path,
//! never a missed event). `munmap` of uffd-registered memory
//! blocks until the monitor (or a lookup) reads its event; the monitor
//! takes no lock, so an application may unmap while holding any lock.
//!
//! ## Resource cleanup
//!
//! The first `Uffd` notifier opens the process's uffd and monitor thread;
//! dropping the last one closes the descriptor, then stops the monitor,
//! which closes the last reference to the uffd (the kernel unregisters
//! every VMA and releases any waiting `munmap`) before it is joined. A
//! process with no `Uffd` notifier has no uffd and no monitor thread. After
//! `fork`, the child's copy is inert: its descriptors are closed by an
//! atfork handler and every call returns [`Error::Forked`].
//!
//! ## For the detail-oriented
//!
//! - The generation word is a multi-writer seqlock *published before
//!   consuming* (module `generation`): busy before `read(uffd)`, settled after the
//!   raw event is in the ring. A lookup that finds it changed drains; if
//!   busy, it helps by reading the uffd itself, then waits for settled.
//!   Modelled with loom (`RUSTFLAGS="--cfg loom" cargo test -p umn --lib
//!   --release loom`), including a model of the bug it prevents.
//! - The event ring (module `ring`) is a bounded lock-free MPMC queue;
//!   overflow degrades to "everything invalid", never to a lost event.
//! - Event semantics (module `queue`): as the seed. The hint is the
//!   intersection of the event with the registered range.
//! - uffd registration covers whole VMAs, counted per span, never
//!   unregistered eagerly (UNREGISTER walks page tables). The spans are
//!   the process's (module `notifier::hub`), carved from the hub's own
//!   copy of every event.
//! - Registrations, VMA spans (and the cache's regions, in `regcache`) are
//!   found by overlap in one structure, [`IntervalIndex`]: a `BTreeMap` by
//!   start and a bound on the longest entry.

// Under loom only the modelled protocol is built; the OS sources are not.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

pub mod abi;

mod env;
mod error;
mod generation;
mod interval;
mod queue;
mod range;
mod ring;
mod sync;

pub use env::ConfigError;
pub use error::{Error, Result};
pub use generation::Generation;
pub use interval::{IntervalId, IntervalIndex};
pub use queue::{Cookie, Event, Invalidation};
pub use range::{AddrRange, RangeError, page_size};

/// Applies `#[cfg(not(loom))]` to each item: the OS sources, which the
/// loom build leaves out.
macro_rules! not_loom {
    ($($item:item)*) => { $( #[cfg(not(loom))] $item )* };
}

not_loom! {
    pub mod hooks;
    pub mod patch;
    mod kernel;
    mod notifier;
    mod sys;
    mod uffd;
    mod vma;

    pub use kernel::{DEVICE_PATH, RegionWord};
    pub use notifier::{GenerationWatch, Notifier, Options, Source};
    pub use vma::have_procmap_query;
}
