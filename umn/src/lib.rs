//! # umn — the ummunotify event model
//!
//! `umn` turns changes to a process's memory map (munmap, mremap, madvise,
//! `MAP_FIXED` over a range, ...) into *invalidation events* for address
//! ranges that were registered under a 64-bit cookie, after the ummunotify
//! proposal (R. Dreier, 2009–2010; see `../shared/DESIGN.md`).
//!
//! **Invariant:** `umn` knows nothing of ibverbs or of the registration
//! cache. It only turns memory-map changes into events for registered
//! cookies.
//!
//! What is here today:
//! - [`AddrRange`], the one half-open `[start, end)` address-range type of
//!   the whole project, with checked arithmetic and page alignment;
//! - [`page_size`], the system page size (from `sysconf`, never a constant).
//!
//! The event sources (userfaultfd, kernel device, hooks, external) are
//! built on top of these.

mod range;

pub use range::{AddrRange, RangeError, page_size};
