//! # regcache — a memory-registration cache for RDMA
//!
//! (Crate documentation is completed with the cache itself.)

mod access;
mod pin;
mod registrar;
mod sys;
mod verbs;

pub use access::{AccessFlags, Keys, LKey, RKey};
pub use pin::{PinRegistrar, PinnedRegion};
pub use registrar::{Registrar, RegistrarError};
pub use umn::{AddrRange, RangeError, page_size};
pub use verbs::{
    AnyRegion, AnyRegistrar, MemoryRegion, ProtectionDomain, RdmaDevice, RegistrarKind,
    VerbsRegistrar, open_registrar,
};
