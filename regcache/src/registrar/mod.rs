//! The [`Registrar`] trait: what actually registers memory, and
//! [`AnyRegistrar`], the one chosen at run time (`any.rs`).

use crate::{AccessFlags, Keys};
use umn::AddrRange;

mod any;

pub use any::{AnyRegion, AnyRegistrar, RegistrarKind, UserRegion, open_registrar};

/// Why a registrar failed. One variant per failure callers branch on; each
/// names the C call that failed and carries the OS error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrarError {
    /// The registrar ran out of a resource it may get back if registrations
    /// are released: `ENOMEM`/`EAGAIN` from `ibv_reg_mr`, or `RLIMIT_MEMLOCK`
    /// reached by `mlock`. The cache evicts and retries on this one.
    #[error("{call}: out of registration resources: {source}")]
    NoResources {
        /// The C call that failed (`"ibv_reg_mr"`, `"mlock"`).
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Part of the range is not mapped (`EFAULT`, or `ENOMEM` from `mlock`
    /// on an unmapped page).
    #[error("{call}: range {range} is not (entirely) mapped: {source}")]
    NotMapped {
        /// The C call that failed.
        call: &'static str,
        /// The range that was asked for.
        range: AddrRange,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device refuses these access flags for this memory (`EACCES`,
    /// `EINVAL` for flags), e.g. write access to read-only memory.
    #[error("{call}: access refused for range {range}: {source}")]
    AccessRefused {
        /// The C call that failed.
        call: &'static str,
        /// The range that was asked for.
        range: AddrRange,
        /// The OS error.
        source: std::io::Error,
    },
    /// No device of this kind is here (no RDMA device, libibverbs absent).
    #[error("no {what} available: {reason}")]
    Unavailable {
        /// What is missing (`"RDMA device"`).
        what: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// Any other failure of a registration call.
    #[error("{call} failed: {source}")]
    Os {
        /// The C call that failed.
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl RegistrarError {
    /// `true` for the errors eviction may cure (ENOMEM, EAGAIN, memlock
    /// limit): the cache evicts least-recently-used idle regions and retries.
    pub fn is_resource_exhausted(&self) -> bool {
        matches!(self, RegistrarError::NoResources { .. })
    }
}

/// Registers and deregisters memory. Implementations: [`crate::PinRegistrar`]
/// (mlock), [`crate::VerbsRegistrar`] (ibverbs, in a domain of its own or
/// the caller's), and the caller's own (any implementation; behind
/// [`AnyRegistrar::User`] when the cache type must not depend on it).
///
/// The cache calls `register` and `deregister` in the thread that called
/// get, find, release, evict, flush, invalidate or drop — never in an
/// invalidation source's thread, and never while holding a lock of its own
/// that the registrar could need (it may call into the cache, and it may
/// block). `register` may run on several threads at once; `deregister` runs
/// exactly once per successful `register`, never while a handle to the
/// registration is alive. This is the contract of docs/DESIGN.md, "The
/// registrar belongs to the caller".
pub trait Registrar: Send + Sync + 'static {
    /// One registration (an ibverbs `MemoryRegion`, a pin record).
    type Region: Send + Sync + 'static;

    /// A short name for statistics and logs (`"pin"`, `"verbs"`).
    fn name(&self) -> &'static str;

    /// Register `range` (already page-aligned by the cache) for `access`.
    ///
    /// # Errors
    /// [`RegistrarError::NoResources`] when eviction may help; the other
    /// variants when it cannot.
    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Self::Region, RegistrarError>;

    /// The lkey/rkey of a registration, where the registrar has keys.
    fn keys(&self, region: &Self::Region) -> Option<Keys>;

    /// The caller's word for a registration: what a registrar driven by
    /// the caller's callbacks produced for it (Open MPI's registration
    /// object, an `fi_mr`, a `ucp_mem_h`), handed back by every hit on the
    /// region ([`crate::Handle::user_data`]) so the caller finds its own MR
    /// object. 0 (the default) for registrars that have none.
    fn user_data(&self, _region: &Self::Region) -> usize {
        0
    }

    /// Release a registration made by [`Registrar::register`].
    ///
    /// # Errors
    /// The OS error of the deregistration call. The cache counts and logs
    /// it; it never panics on it.
    fn deregister(&self, region: Self::Region) -> Result<(), RegistrarError>;
}
