//! [`MemoryRegion`]: one `ibv_mr`, and the only calls to `ibv_reg_mr` and
//! `ibv_dereg_mr` (dangerous calls go through one place each).
//!
//! A region holds its [`ProtectionDomain`], so the domain outlives every
//! registration made in it. Deregistration happens exactly once: the
//! `ibv_mr` pointer is taken out of an `Option` by whichever comes first,
//! [`Registrar::deregister`](crate::Registrar::deregister), which reports
//! a failure, or `Drop`, which logs it and never panics.
//!
//! `ibv_reg_mr`'s errno becomes a [`RegistrarError`] variant the cache can
//! branch on (`map_reg_error`): ENOMEM/EAGAIN are the ones eviction may
//! cure.

use super::pd::{Domain, ProtectionDomain};
use crate::{AccessFlags, Keys, LKey, RKey, RegistrarError};
use rdma_mummy_sys::{ibv_access_flags, ibv_dereg_mr, ibv_mr, ibv_reg_mr};
use std::fmt;
use std::ptr::NonNull;
use umn::AddrRange;

/// `ibv_reg_mr`: register `range` for `access` in `pd`; the errors are
/// [`ProtectionDomain::register`]'s.
pub(super) fn register(
    pd: &Domain,
    range: AddrRange,
    access: AccessFlags,
) -> Result<MemoryRegion, RegistrarError> {
    const CALL: &str = "ibv_reg_mr";
    if range.is_empty() || range.start() == 0 {
        return Err(RegistrarError::NotMapped {
            call: CALL,
            range,
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    let len = usize::try_from(range.len()).map_err(|_| RegistrarError::NotMapped {
        call: CALL,
        range,
        source: std::io::Error::from_raw_os_error(libc::EOVERFLOW),
    })?;
    let flags = ibv_access_flags(access.bits());
    // SAFETY: the PD pointer is valid while `pd` lives (we hold our own;
    // the caller keeps its own alive, `CallerPd::from_raw`'s contract).
    // ibv_reg_mr does not dereference `addr` from user space: the
    // kernel pins the pages under [addr, addr+len) or fails with EFAULT
    // if they are not mapped, so any address is sound to pass.
    let mr = unsafe {
        ibv_reg_mr(
            pd.as_ptr(),
            range.start() as *mut libc::c_void,
            len,
            flags.0 as i32,
        )
    };
    match NonNull::new(mr) {
        Some(mr) => Ok(MemoryRegion {
            mr: Some(mr),
            range,
            access,
            pd: pd.clone(),
        }),
        None => Err(map_reg_error(
            std::io::Error::last_os_error(),
            range,
            access,
        )),
    }
}

fn map_reg_error(err: std::io::Error, range: AddrRange, access: AccessFlags) -> RegistrarError {
    const CALL: &str = "ibv_reg_mr";
    let errno = err.raw_os_error().unwrap_or(0);
    let needs_local_write = access
        .intersects(AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_ATOMIC)
        && !access.contains(AccessFlags::LOCAL_WRITE);
    let unknown_bits = access.bits() & !AccessFlags::all().bits() != 0;
    match errno {
        libc::ENOMEM | libc::EAGAIN => RegistrarError::NoResources {
            call: CALL,
            source: err,
        },
        libc::EFAULT => RegistrarError::NotMapped {
            call: CALL,
            range,
            source: err,
        },
        libc::EACCES => RegistrarError::AccessRefused {
            call: CALL,
            range,
            source: err,
        },
        libc::EINVAL | libc::EOPNOTSUPP if needs_local_write || unknown_bits => {
            RegistrarError::AccessRefused {
                call: CALL,
                range,
                source: err,
            }
        }
        _ => RegistrarError::Os {
            call: CALL,
            source: err,
        },
    }
}

/// One `ibv_mr`. Holds its [`ProtectionDomain`] (a caller's domain is
/// the caller's to keep alive). Deregistered by
/// [`Registrar::deregister`](crate::Registrar::deregister), or by `Drop`
/// (failure logged).
pub struct MemoryRegion {
    /// `None` once deregistered.
    mr: Option<NonNull<ibv_mr>>,
    range: AddrRange,
    access: AccessFlags,
    pd: Domain,
}

// SAFETY: an ibv_mr is an immutable record after ibv_reg_mr returns (we
// only read lkey/rkey); libibverbs allows ibv_dereg_mr from any thread, and
// `deregister`/`Drop` take the region by value or `&mut`, so it happens once.
unsafe impl Send for MemoryRegion {}
// SAFETY: shared access only reads the immutable lkey/rkey fields.
unsafe impl Sync for MemoryRegion {}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("range", &self.range)
            .field("access", &self.access)
            .field("keys", &self.keys())
            .field("domain", &self.pd.describe())
            .finish()
    }
}

impl MemoryRegion {
    /// The registered range.
    pub fn range(&self) -> AddrRange {
        self.range
    }

    /// The access flags it was registered with.
    pub fn access(&self) -> AccessFlags {
        self.access
    }

    /// Its local and remote keys.
    pub fn keys(&self) -> Keys {
        match self.mr {
            Some(mr) => {
                // SAFETY: `mr` is a live ibv_mr (not yet deregistered) and its
                // lkey/rkey fields never change after registration.
                let m = unsafe { mr.as_ref() };
                Keys {
                    lkey: LKey(m.lkey),
                    rkey: RKey(m.rkey),
                }
            }
            None => Keys {
                lkey: LKey(0),
                rkey: RKey(0),
            },
        }
    }

    /// The protection domain it belongs to, when this crate opened it
    /// (`None` for a registration in the caller's domain).
    pub fn protection_domain(&self) -> Option<&ProtectionDomain> {
        match &self.pd {
            Domain::Own(pd) => Some(pd),
            Domain::Caller(_) => None,
        }
    }

    /// The `struct ibv_pd *` the MR was registered in (`ibv_mr.pd`;
    /// NULL once deregistered): the caller's own when registered through
    /// [`crate::CallerPd`].
    pub fn pd_ptr(&self) -> *mut libc::c_void {
        match self.mr {
            // SAFETY: a live ibv_mr; `pd` is set by ibv_reg_mr and never
            // changed.
            Some(mr) => unsafe { mr.as_ref() }.pd.cast(),
            None => std::ptr::null_mut(),
        }
    }

    pub(super) fn dereg(&mut self) -> Result<(), RegistrarError> {
        let Some(mr) = self.mr.take() else {
            return Ok(());
        };
        // SAFETY: `mr` came from ibv_reg_mr and is deregistered exactly once
        // (taken out of the Option above). The PD is still alive: we hold it.
        let rc = unsafe { ibv_dereg_mr(mr.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(RegistrarError::Os {
                call: "ibv_dereg_mr",
                source: std::io::Error::from_raw_os_error(rc),
            })
        }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        if let Err(e) = self.dereg() {
            log::error!("dropping {:?}: {e}", self.range);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        let r = AddrRange::new(0x1000, 0x2000).unwrap();
        let e = |n| std::io::Error::from_raw_os_error(n);
        let rw = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
        assert!(map_reg_error(e(libc::ENOMEM), r, rw).is_resource_exhausted());
        assert!(map_reg_error(e(libc::EAGAIN), r, rw).is_resource_exhausted());
        assert!(matches!(
            map_reg_error(e(libc::EFAULT), r, rw),
            RegistrarError::NotMapped { .. }
        ));
        assert!(matches!(
            map_reg_error(e(libc::EACCES), r, rw),
            RegistrarError::AccessRefused { .. }
        ));
        assert!(matches!(
            map_reg_error(e(libc::EINVAL), r, AccessFlags::REMOTE_WRITE),
            RegistrarError::AccessRefused { .. }
        ));
        assert!(matches!(
            map_reg_error(e(libc::EINVAL), r, rw),
            RegistrarError::Os { .. }
        ));
    }
}
