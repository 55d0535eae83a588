//! The atomics of the cross-thread protocols, switchable to loom.
//!
//! The generation seqlock ([`crate::generation`]) and the event ring
//! ([`crate::ring`]) take their atomics and cells from here, so
//! `RUSTFLAGS="--cfg loom" cargo test -p umn --lib loom` model-checks the
//! very code that runs. Process-wide statics (fork and hook tables) use
//! `std` atomics directly: they are not part of the modelled protocol.

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) fn spin_hint() {
    std::thread::yield_now();
}

/// An `UnsafeCell` with loom's closure API, so one ring serves both.
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
);

impl<T> UnsafeCell<T> {
    pub(crate) fn new(v: T) -> Self {
        #[cfg(loom)]
        return Self(loom::cell::UnsafeCell::new(v));
        #[cfg(not(loom))]
        return Self(std::cell::UnsafeCell::new(v));
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(loom)]
        return self.0.with(f);
        #[cfg(not(loom))]
        return f(self.0.get());
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(loom)]
        return self.0.with_mut(f);
        #[cfg(not(loom))]
        return f(self.0.get());
    }
}
