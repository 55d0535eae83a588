//! The atomics of the cache's cross-thread protocols, switchable to loom.
//!
//! The slot state word ([`crate::cache`]'s `StateWord`) and the
//! deferred-release tables take their atomics from here, so
//! `RUSTFLAGS="--cfg loom" cargo test -p regcache --lib --release loom`
//! model-checks the very code that runs (see `cache/loom_models.rs`). Everything
//! else (slot fields validated by the state word's CAS, counters, the hint
//! table, process-wide statics) uses `std` atomics directly: it is not part
//! of the modelled protocol, and loom atomics cannot live in statics or be
//! created outside a model.
//!
//! Under `cfg(loom)` a [`crate::Cache`] can therefore only be built inside
//! a loom model; the loom runs execute the `loom` tests alone.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
pub(crate) use std::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};
