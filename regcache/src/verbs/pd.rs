//! [`ProtectionDomain`]: an open device and a protection domain on it.
//!
//! Opening picks the device (by name, or the closest one: `device.rs`),
//! opens it and allocates the domain through `sideway`. The domain is an
//! `Arc` handle because everything made in it holds it: each
//! [`MemoryRegion`] and each queue pair keeps its domain — and so the
//! device context — alive, whatever order the application drops them in.
//! Registration itself ([`ProtectionDomain::register`]) is `mr.rs`'s, the
//! one place that calls `ibv_reg_mr`.

use super::WHAT;
use super::device::{RdmaDevice, closest, device_list, locate_all, no_device_error};
use super::mr::{self, MemoryRegion};
use crate::{AccessFlags, RegistrarError};
use sideway::ibverbs::device_context::DeviceContext;
use std::fmt;
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
        mr::register(self, range, access)
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
