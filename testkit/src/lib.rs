//! Test scaffolding shared by the workspace's integration tests, and by
//! nothing else: this crate is only ever a `[dev-dependencies]` entry.
//!
//! Three kinds of help live here, each once:
//!
//! - [`mem`]: anonymous test memory and the map changes tests make to it
//!   (`mmap`, `munmap`, `mremap`, `madvise`, `MAP_FIXED` over a range).
//!   Tests of invalidation are about exactly these calls, so the helpers
//!   assert that each call did what was asked and name the call and errno
//!   when it did not.
//! - [`skip`]: a test that needs a capability the host lacks (an RDMA
//!   device, an unprivileged user, a small `RLIMIT_MEMLOCK`) says so by
//!   name with a `SKIPPED` line and returns — never a silent pass — and
//!   the VM tier's `REGCACHE_REQUIRE_*` variables turn that skip into a
//!   failure.
//! - [`registrar`]: one checking [`Registrar`](regcache::Registrar) that
//!   numbers registrations (the number is the lkey and rkey, so a test can
//!   tell a fresh registration from a stale one), optionally pins the pages
//!   for real, optionally runs out of capacity like a NIC, and records
//!   every deregistration of a registration a test says it still holds.
//!
//! - [`faults`]: that registrar made to fail on command (ENOMEM/EAGAIN
//!   storms, EFAULT, failing deregistration), for fault-injection tests.
//! - [`process`]: a closure run in a forked child, for fork tests.
//!
//! The wart: umn's own tests use this crate too, and this crate depends on
//! umn (for [`AddrRange`](umn::AddrRange)). Cargo allows that cycle through a
//! dev-dependency: integration tests link the one umn library both see. The
//! `regcache` feature (on by default) is turned off there, so umn's tests do
//! not build the cache they sit under.

pub mod mem;
pub mod process;
// The cache's parts need the full `regcache`, which a `--cfg loom` build
// (the transport's loom models compile this crate as a dev-dependency)
// reduces to its model-checked protocols.
#[cfg(all(feature = "regcache", not(loom)))]
pub mod faults;
#[cfg(all(feature = "regcache", not(loom)))]
pub mod registrar;
pub mod skip;

#[cfg(all(feature = "regcache", not(loom)))]
pub use registrar::{CheckingRegistrar, Registration};
