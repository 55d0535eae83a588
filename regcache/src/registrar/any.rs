//! [`AnyRegistrar`]: the registrar chosen at run time.
//!
//! Callers that take the registrar from configuration — the C API
//! (`REGCACHE_REGISTRAR=auto|pin|verbs`), the bench's `--registrar` —
//! need one cache type whatever was chosen. [`open_registrar`] makes it; `Auto`
//! takes ibverbs when a device is there and falls back to `mlock` pinning
//! only when there is none ([`RegistrarError::Unavailable`]): a device that
//! exists but fails to open is an error, not a silent fallback.
//!
//! Each region remembers which registrar made it ([`AnyRegion`]). A region
//! given back to the other kind of registrar is still deregistered (an MR
//! deregisters itself on drop) or the mismatch is reported as an error.
//!
//! ## The caller's registrar
//!
//! An MPI library registers in its own protection domain, with its own
//! verbs (or `fi_mr_reg`, or `ucp_mem_map`): a cache that registers in a
//! domain of its own is useless to it. [`AnyRegistrar::User`] holds any
//! registrar whose regions are a [`UserRegion`] — the caller's opaque word
//! for its MR object and the keys — behind a `Box<dyn Registrar>`, so a
//! cache whose registrar is chosen at run time (the C API's
//! `regcache_cache_new_with_ops`, which wraps C callbacks in one) is still
//! one type. The box costs an indirect call per registration, never per
//! hit: the hit path does not touch the registrar.

use crate::{AccessFlags, Keys, MemoryRegion, Registrar, RegistrarError, VerbsRegistrar};
use umn::AddrRange;

/// Which registrar [`open_registrar`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrarKind {
    /// `verbs` when an RDMA device is there, else `pin` (logged).
    #[default]
    Auto,
    /// The `mlock` registrar.
    Pin,
    /// The ibverbs registrar; failing when there is no device.
    Verbs,
}

impl std::str::FromStr for RegistrarKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RegistrarKind::Auto),
            "pin" => Ok(RegistrarKind::Pin),
            "verbs" => Ok(RegistrarKind::Verbs),
            other => Err(format!(
                "unknown registrar {other:?} (expected auto, pin or verbs)"
            )),
        }
    }
}

/// A built-in registrar chosen at run time by [`open_registrar`], or the
/// caller's own ([`AnyRegistrar::User`]).
#[non_exhaustive]
pub enum AnyRegistrar {
    /// `mlock` pinning.
    Pin(crate::PinRegistrar),
    /// ibverbs.
    Verbs(VerbsRegistrar),
    /// The caller's registrar (its protection domain, its callbacks).
    User(Box<dyn Registrar<Region = UserRegion>>),
}

impl std::fmt::Debug for AnyRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnyRegistrar::Pin(p) => f.debug_tuple("Pin").field(p).finish(),
            AnyRegistrar::Verbs(v) => f.debug_tuple("Verbs").field(v).finish(),
            AnyRegistrar::User(u) => f.debug_tuple("User").field(&u.name()).finish(),
        }
    }
}

/// A registration made by a caller's registrar: the caller's word for its
/// MR object (returned by every hit, [`Registrar::user_data`]) and the
/// keys, if the registrar has keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRegion {
    /// The caller's word (a pointer to its MR object, an index).
    pub user_data: usize,
    /// The registration's lkey/rkey; `None` for a registrar without keys.
    pub keys: Option<Keys>,
}

/// A registration of an [`AnyRegistrar`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyRegion {
    /// From the pin registrar.
    Pin(crate::PinnedRegion),
    /// From the verbs registrar.
    Verbs(MemoryRegion),
    /// From the caller's registrar.
    User(UserRegion),
}

/// Make a registrar of `kind`. `device` names the RDMA device for `verbs`
/// and `auto` (`None`: the closest one).
///
/// # Errors
/// For [`RegistrarKind::Verbs`], the errors of [`VerbsRegistrar::open`].
/// `Auto` fails only when verbs fails with something other than
/// [`RegistrarError::Unavailable`] (a device that exists but cannot be
/// opened is reported, not papered over).
pub fn open_registrar(
    kind: RegistrarKind,
    device: Option<&str>,
) -> Result<AnyRegistrar, RegistrarError> {
    match kind {
        RegistrarKind::Pin => Ok(AnyRegistrar::Pin(crate::PinRegistrar::new())),
        RegistrarKind::Verbs => VerbsRegistrar::open(device).map(AnyRegistrar::Verbs),
        RegistrarKind::Auto => match VerbsRegistrar::open(device) {
            Ok(v) => Ok(AnyRegistrar::Verbs(v)),
            Err(RegistrarError::Unavailable { what, reason }) => {
                log::info!("registrar auto: no {what} ({reason}); using pin (mlock)");
                Ok(AnyRegistrar::Pin(crate::PinRegistrar::new()))
            }
            Err(e) => Err(e),
        },
    }
}

impl Registrar for AnyRegistrar {
    type Region = AnyRegion;

    fn name(&self) -> &'static str {
        match self {
            AnyRegistrar::Pin(p) => p.name(),
            AnyRegistrar::Verbs(v) => v.name(),
            AnyRegistrar::User(u) => u.name(),
        }
    }

    fn register(&self, range: AddrRange, access: AccessFlags) -> Result<AnyRegion, RegistrarError> {
        match self {
            AnyRegistrar::Pin(p) => p.register(range, access).map(AnyRegion::Pin),
            AnyRegistrar::Verbs(v) => v.register(range, access).map(AnyRegion::Verbs),
            AnyRegistrar::User(u) => u.register(range, access).map(AnyRegion::User),
        }
    }

    fn keys(&self, region: &AnyRegion) -> Option<Keys> {
        match region {
            AnyRegion::Pin(_) => None,
            AnyRegion::Verbs(r) => Some(r.keys()),
            AnyRegion::User(r) => r.keys,
        }
    }

    fn user_data(&self, region: &AnyRegion) -> usize {
        match region {
            AnyRegion::User(r) => r.user_data,
            AnyRegion::Pin(_) | AnyRegion::Verbs(_) => 0,
        }
    }

    fn deregister(&self, region: AnyRegion) -> Result<(), RegistrarError> {
        match (self, region) {
            (AnyRegistrar::Pin(p), AnyRegion::Pin(r)) => p.deregister(r),
            (AnyRegistrar::Verbs(v), AnyRegion::Verbs(r)) => v.deregister(r),
            (AnyRegistrar::User(u), AnyRegion::User(r)) => u.deregister(r),
            (_, AnyRegion::User(_)) => Err(RegistrarError::Os {
                call: "deregister",
                source: std::io::Error::other("caller's region given to a built-in registrar"),
            }),
            (_, AnyRegion::Verbs(r)) => {
                // Not ours, but still a live MR: drop deregisters it.
                drop(r);
                Ok(())
            }
            (_, AnyRegion::Pin(_)) => Err(RegistrarError::Os {
                call: "munlock",
                source: std::io::Error::other("pin region given to another registrar"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_parses() {
        assert_eq!("auto".parse(), Ok(RegistrarKind::Auto));
        assert_eq!("pin".parse(), Ok(RegistrarKind::Pin));
        assert_eq!("verbs".parse(), Ok(RegistrarKind::Verbs));
        assert!("ucx".parse::<RegistrarKind>().is_err());
    }
}
