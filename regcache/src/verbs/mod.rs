//! The `verbs` registrar: real `ibv_reg_mr` in an ibverbs protection domain.
//!
//! This is the one module that calls `ibv_reg_mr` and `ibv_dereg_mr`, in
//! `mr.rs` (dangerous calls go through one place each). Everything else
//! about the device — listing, opening, the protection domain, queue
//! pairs — goes through [`sideway`], the safe layer over `rdma-mummy-sys`.
//!
//! ## Loading
//!
//! `rdma-mummy-sys` does not link against libibverbs: it `dlopen`s
//! `libibverbs.so.1` at run time, so the crate builds on a machine with no
//! RDMA packages (it needs `cmake` and libclang for its build script). On
//! such a machine every verb fails with `EOPNOTSUPP`, which
//! [`RdmaDevice::list`] reports as [`RegistrarError::Unavailable`] with the
//! reason in words. A kernel without RDMA support makes
//! `ibv_get_device_list` fail with `ENOSYS`; a kernel with support but no
//! device returns an empty list. All three are `Unavailable { what: "RDMA
//! device", .. }`, so `--registrar auto` ([`crate::open_registrar`]) falls
//! back to the `pin` registrar.
//!
//! ## Layout
//!
//! - `device.rs`: listing devices, where each sits, and which one is
//!   closest to the calling thread (NUMA distance, or hwloc);
//! - `pd.rs`: [`ProtectionDomain`], an open device and a domain on it;
//! - `mr.rs`: [`MemoryRegion`], the one caller of `ibv_reg_mr` and
//!   `ibv_dereg_mr`;
//! - here: [`VerbsRegistrar`], the [`Registrar`] over one domain — its
//!   own, or the caller's ([`CallerPd`]: an MPI library registers in the
//!   domain its queue pairs live in).
//!
//! ## Ownership
//!
//! A [`ProtectionDomain`] is a cheap `Arc` handle; every [`MemoryRegion`]
//! holds one, so a registration keeps its protection domain (and the
//! device context under it) alive. [`Registrar::deregister`] reports
//! `ibv_dereg_mr` failures; a `MemoryRegion` dropped without it is
//! deregistered by `Drop`, which logs a failure and never panics.

use crate::{AccessFlags, Keys, Registrar, RegistrarError};
use umn::AddrRange;

mod device;
mod mr;
mod pd;

pub use device::RdmaDevice;
pub use mr::MemoryRegion;
pub use pd::{CallerPd, ProtectionDomain};
use pd::Domain;

/// What [`RegistrarError::Unavailable`] says is missing.
const WHAT: &str = "RDMA device";

/// The ibverbs registrar: `ibv_reg_mr` in one protection domain, a
/// [`ProtectionDomain`] of its own or the caller's ([`CallerPd`]).
#[derive(Debug, Clone)]
pub struct VerbsRegistrar {
    pd: Domain,
}

impl VerbsRegistrar {
    /// Open the device named `name` (or the closest one, `None`) and
    /// allocate a protection domain: see [`ProtectionDomain::open`].
    ///
    /// # Errors
    /// As [`ProtectionDomain::open`].
    pub fn open(name: Option<&str>) -> Result<VerbsRegistrar, RegistrarError> {
        ProtectionDomain::open(name).map(VerbsRegistrar::new)
    }

    /// A registrar registering in an existing protection domain (the one
    /// the queue pairs live in).
    pub fn new(pd: ProtectionDomain) -> VerbsRegistrar {
        VerbsRegistrar {
            pd: Domain::Own(pd),
        }
    }

    /// A registrar registering in the caller's protection domain (an MPI
    /// library's `struct ibv_pd *`).
    pub fn on_caller_pd(pd: CallerPd) -> VerbsRegistrar {
        VerbsRegistrar {
            pd: Domain::Caller(pd),
        }
    }

    /// Its protection domain, when it opened its own (`None` on the
    /// caller's).
    pub fn protection_domain(&self) -> Option<&ProtectionDomain> {
        match &self.pd {
            Domain::Own(pd) => Some(pd),
            Domain::Caller(_) => None,
        }
    }
}

impl Registrar for VerbsRegistrar {
    type Region = MemoryRegion;

    fn name(&self) -> &'static str {
        "verbs"
    }

    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<MemoryRegion, RegistrarError> {
        mr::register(&self.pd, range, access)
    }

    fn keys(&self, region: &MemoryRegion) -> Option<Keys> {
        Some(region.keys())
    }

    fn deregister(&self, mut region: MemoryRegion) -> Result<(), RegistrarError> {
        region.dereg()
    }
}
