//! [`ProtectionDomain`]: an open device and a protection domain on it.
//!
//! Opening picks the device (by name, or the closest one: `device.rs`),
//! opens it and allocates the domain through `sideway`. The domain is an
//! `Arc` handle because everything made in it holds it: each
//! [`MemoryRegion`] and each queue pair keeps its domain — and so the
//! device context — alive, whatever order the application drops them in.
//! Registration itself ([`ProtectionDomain::register`]) is `mr.rs`'s, the
//! one place that calls `ibv_reg_mr`.
//!
//! [`CallerPd`] is the other kind of domain: one the caller allocated (an
//! MPI library's, where its queue pairs live), known only by its `struct
//! ibv_pd *`. The caller owns it and keeps it alive; we only register in
//! it. [`Domain`] is either, for the registrar and its regions.

use super::WHAT;
use super::device::{RdmaDevice, closest, device_list, locate_all, no_device_error};
use super::mr::{self, MemoryRegion};
use crate::{AccessFlags, RegistrarError};
use sideway::ibverbs::device_context::DeviceContext;
use rdma_mummy_sys::ibv_pd;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use umn::AddrRange;

struct PdInner {
    /// Declared first: dropped (ibv_dealloc_pd) before the context it
    /// holds another reference to.
    pd: Arc<sideway::ibverbs::protection_domain::ProtectionDomain>,
    context: Arc<DeviceContext>,
    device: RdmaDevice,
}

/// An ibverbs protection domain on an open device. Cloning is cheap (an
/// `Arc`); the domain is deallocated when the last clone — including the
/// ones held by [`MemoryRegion`]s and queue pairs — goes away.
#[derive(Clone)]
pub struct ProtectionDomain(Arc<PdInner>);

impl fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionDomain")
            .field("device", &self.0.device)
            .finish_non_exhaustive()
    }
}

impl ProtectionDomain {
    /// Open a device and allocate a protection domain on it. `name`
    /// selects the device (`"rxe0"`); `None` takes the one closest to the
    /// calling thread (see the module docs).
    ///
    /// # Errors
    /// [`RegistrarError::Unavailable`] when there is no such device (or
    /// none at all); [`RegistrarError::Os`] naming `ibv_open_device` or
    /// `ibv_alloc_pd` when those fail.
    pub fn open(name: Option<&str>) -> Result<ProtectionDomain, RegistrarError> {
        let list = device_list()?;
        let infos = locate_all(&list)?;
        let index = match name {
            Some(want) => infos.iter().position(|d| d.name == want).ok_or_else(|| {
                RegistrarError::Unavailable {
                    what: WHAT,
                    reason: format!(
                        "no RDMA device named {want:?} (have: {})",
                        infos
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            })?,
            None => closest(&infos),
        };
        let device = list.get(index).ok_or_else(no_device_error)?;
        let context = device.open().map_err(|e| RegistrarError::Os {
            call: "ibv_open_device",
            source: io_of(&e),
        })?;
        let pd = context.alloc_pd().map_err(|e| RegistrarError::Os {
            call: "ibv_alloc_pd",
            source: io_of(&e),
        })?;
        Ok(ProtectionDomain(Arc::new(PdInner {
            pd,
            context,
            device: infos[index].clone(),
        })))
    }

    /// The device this domain lives on.
    pub fn device(&self) -> &RdmaDevice {
        &self.0.device
    }

    /// The open device context (for completion queues, port and GID
    /// queries).
    pub fn context(&self) -> &Arc<DeviceContext> {
        &self.0.context
    }

    /// The `sideway` protection domain (for queue pairs).
    pub fn as_sideway(&self) -> &Arc<sideway::ibverbs::protection_domain::ProtectionDomain> {
        &self.0.pd
    }

    /// Register `range` for `access` in this domain: `ibv_reg_mr`.
    ///
    /// The range is registered exactly as given (the NIC pins whole pages
    /// under it). The memory may later be unmapped by the application: the
    /// region then still pins the old pages, which is the stale-registration
    /// problem the cache's invalidation exists for; it is never undefined
    /// behaviour in this process.
    ///
    /// # Errors
    /// - empty range: [`RegistrarError::NotMapped`] with `EINVAL`;
    /// - `ENOMEM`/`EAGAIN` (e.g. `RLIMIT_MEMLOCK` for an unprivileged
    ///   process): [`RegistrarError::NoResources`];
    /// - `EFAULT` (part of the range not mapped, or not writable when write
    ///   access is asked): [`RegistrarError::NotMapped`];
    /// - `EACCES`, or `EINVAL`/`EOPNOTSUPP` for flags (remote write or
    ///   atomic without local write, flags the device lacks):
    ///   [`RegistrarError::AccessRefused`];
    /// - anything else: [`RegistrarError::Os`].
    pub fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<MemoryRegion, RegistrarError> {
        mr::register(&Domain::Own(self.clone()), range, access)
    }
}

/// A protection domain the caller allocated and owns: a `struct ibv_pd *`
/// from the caller's libibverbs (the same `libibverbs.so.1` this crate
/// loads at run time, so the pointer is valid for our calls). A `Copy`
/// pointer: the caller keeps the domain alive while any registration made
/// in it, or any cache registering in it, exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerPd(NonNull<ibv_pd>);

// SAFETY: a `struct ibv_pd *` may be used from any thread (libibverbs is
// thread-safe); we never write through it.
unsafe impl Send for CallerPd {}
// SAFETY: as above.
unsafe impl Sync for CallerPd {}

impl CallerPd {
    /// Wrap the caller's `struct ibv_pd *`.
    ///
    /// # Errors
    /// [`RegistrarError::Unavailable`] for NULL, or a domain with no device
    /// context (not a domain `ibv_alloc_pd` returned).
    ///
    /// # Safety
    /// `pd` is NULL or a live `struct ibv_pd *` from `ibv_alloc_pd` in
    /// this process, and stays allocated while any registration made in it
    /// (and any registrar over it) exists.
    pub unsafe fn from_raw(pd: *mut libc::c_void) -> Result<CallerPd, RegistrarError> {
        let Some(pd) = NonNull::new(pd.cast::<ibv_pd>()) else {
            return Err(RegistrarError::Unavailable {
                what: "protection domain",
                reason: "the caller's struct ibv_pd * is NULL".into(),
            });
        };
        // SAFETY: a live ibv_pd (contract); `context` is its first field,
        // set by ibv_alloc_pd and never changed.
        if unsafe { pd.as_ref() }.context.is_null() {
            return Err(RegistrarError::Unavailable {
                what: "protection domain",
                reason: "the caller's struct ibv_pd has no device context".into(),
            });
        }
        Ok(CallerPd(pd))
    }

    /// The raw pointer, for `ibv_reg_mr`.
    pub(super) fn as_ptr(self) -> *mut ibv_pd {
        self.0.as_ptr()
    }
}

/// The domain a registrar registers in: its own, or the caller's.
#[derive(Debug, Clone)]
pub(super) enum Domain {
    /// Opened by us; every region holds a clone, keeping it alive.
    Own(ProtectionDomain),
    /// The caller's; the caller keeps it alive.
    Caller(CallerPd),
}

impl Domain {
    /// The `struct ibv_pd *` to register in.
    pub(super) fn as_ptr(&self) -> *mut ibv_pd {
        match self {
            // SAFETY: `pd()` hands out the raw pointer of a domain we
            // hold (the Arc keeps it allocated); we only pass it to
            // ibv_reg_mr.
            Domain::Own(pd) => unsafe { pd.as_sideway().pd() }.as_ptr(),
            Domain::Caller(pd) => pd.as_ptr(),
        }
    }

    /// A name for logs: the device, or "caller's PD".
    pub(super) fn describe(&self) -> &str {
        match self {
            Domain::Own(pd) => &pd.device().name,
            Domain::Caller(_) => "caller's PD",
        }
    }
}

/// The `io::Error` inside a sideway error, or a generic one.
fn io_of(e: &(dyn std::error::Error + 'static)) -> std::io::Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return std::io::Error::from_raw_os_error(code);
            }
        }
        cur = err.source();
    }
    // sideway's error kinds are `#[error(transparent)]` around the
    // io::Error, which hides it from `source()`; its Debug form keeps the
    // OS error code.
    std::io::Error::other(format!("{e:?}"))
}
