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

/// Either registrar, chosen at run time by [`open_registrar`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyRegistrar {
    /// `mlock` pinning.
    Pin(crate::PinRegistrar),
    /// ibverbs.
    Verbs(VerbsRegistrar),
}

/// A registration of an [`AnyRegistrar`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyRegion {
    /// From the pin registrar.
    Pin(crate::PinnedRegion),
    /// From the verbs registrar.
    Verbs(MemoryRegion),
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
        }
    }

    fn register(&self, range: AddrRange, access: AccessFlags) -> Result<AnyRegion, RegistrarError> {
        match self {
            AnyRegistrar::Pin(p) => p.register(range, access).map(AnyRegion::Pin),
            AnyRegistrar::Verbs(v) => v.register(range, access).map(AnyRegion::Verbs),
        }
    }

    fn keys(&self, region: &AnyRegion) -> Option<Keys> {
        match region {
            AnyRegion::Pin(_) => None,
            AnyRegion::Verbs(r) => Some(r.keys()),
        }
    }

    fn deregister(&self, region: AnyRegion) -> Result<(), RegistrarError> {
        match (self, region) {
            (AnyRegistrar::Pin(p), AnyRegion::Pin(r)) => p.deregister(r),
            (AnyRegistrar::Verbs(v), AnyRegion::Verbs(r)) => v.deregister(r),
            (_, AnyRegion::Verbs(r)) => {
                // Not ours, but still a live MR: drop deregisters it.
                drop(r);
                Ok(())
            }
            (_, AnyRegion::Pin(_)) => Err(RegistrarError::Os {
                call: "munlock",
                source: std::io::Error::other("pin region given to a verbs registrar"),
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
