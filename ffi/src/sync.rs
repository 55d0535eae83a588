//! The atomics of the handle table's generation protocol, switchable to
//! loom.
//!
//! [`crate::generation`] takes its atomic and its cell from here, so
//! `RUSTFLAGS="--cfg loom" cargo test -p regcache-ffi --lib --release loom`
//! model-checks the very code the handle table runs (as `umn::sync` does
//! for umn's seqlock). Under loom only that module is built: the rest of
//! the crate needs `regcache`, which does not build under `--cfg loom`.
//! The table's other statics (the mapping, the free lists) use `std`
//! directly: they are not part of the modelled protocol.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, Ordering};

/// An `UnsafeCell` with loom's closure API, so one protocol serves both.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    #[cfg(not(loom))]
    pub(crate) const fn new(v: T) -> Self {
        Self(std::cell::UnsafeCell::new(v))
    }

    #[cfg(loom)]
    pub(crate) fn new(v: T) -> Self {
        Self(loom::cell::UnsafeCell::new(v))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(loom)]
        return self.0.with(f);
        #[cfg(not(loom))]
        return f(self.0.get());
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(loom)]
        return self.0.with_mut(f);
        #[cfg(not(loom))]
        return f(self.0.get());
    }
}
