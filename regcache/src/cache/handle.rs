//! What the cache hands out: handles, raw handles and tokens.
//!
//! Three shapes of one thing, a counted reference on a cached region (or a
//! one-off registration outside the cache). A [`Handle`] borrows the cache
//! and releases on drop: the Rust API. A [`RawHandle`] is the same without
//! the borrow, for callers that cannot hold one. A [`Token`] is 8 `Copy`
//! bytes (slot index and incarnation) for callers that keep their own
//! per-handle state, the C API's handle table: the incarnation lets a
//! release of a token whose region is gone be told from a live one (see
//! [`Cache::release_token`]).

use super::Cache;
use super::slot::NO_SLOT;
use crate::{AccessFlags, Keys, Registrar};
use umn::AddrRange;

/// A reference to a registration from [`Cache::get`]. The registration is
/// not deregistered while the handle lives. Dropping it, or
/// [`Handle::release`], releases it.
///
/// The memory must not be unmapped or freed while the NIC may use it
/// through this handle's keys; if it is, the cache's invalidation source
/// invalidates the region and the registration goes at the last release.
pub struct Handle<'c, R: Registrar> {
    pub(super) cache: &'c Cache<R>,
    pub(super) raw: std::mem::ManuallyDrop<RawHandle<R>>,
}

/// A handle detached from the cache's lifetime, for callers that cannot
/// hold a borrow (the C API). Release it with [`Cache::release_raw`] on the
/// cache that produced it.
pub struct RawHandle<R: Registrar> {
    pub(super) slot: u32,
    pub(super) range: AddrRange,
    pub(super) keys: Option<Keys>,
    /// The registration of an uncached get (`slot == NO_SLOT`).
    pub(super) uncached: Option<R::Region>,
}

impl<R: Registrar> std::fmt::Debug for RawHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawHandle")
            .field("range", &self.range)
            .field("keys", &self.keys)
            .field("cached", &(self.slot != NO_SLOT))
            .finish()
    }
}

impl<R: Registrar> RawHandle<R> {
    /// The registered range (page-aligned; covers the request).
    pub fn range(&self) -> AddrRange {
        self.range
    }
    /// The registration's keys, where the registrar has them.
    pub fn keys(&self) -> Option<Keys> {
        self.keys
    }
    /// `false` when this registration is a one-off outside the cache.
    pub fn is_cached(&self) -> bool {
        self.slot != NO_SLOT
    }
}

/// A reference to a *cached* registration as a small `Copy` value: the
/// slot index and the slot's incarnation. From [`Cache::get_token`];
/// release with [`Cache::release_token`]. Holding a token keeps the region
/// registered exactly as a [`Handle`] does; unlike a handle nothing stops
/// it being copied, so releasing it once is the caller's duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    pub(super) slot: u32,
    pub(super) incarnation: u32,
}

impl Token {
    /// The token as one `u64` (`incarnation << 32 | slot`), for callers
    /// that store it in a word (the C API).
    pub fn to_bits(self) -> u64 {
        (u64::from(self.incarnation) << 32) | u64::from(self.slot)
    }
    /// The inverse of [`Token::to_bits`]. Any value makes a `Token`;
    /// releasing one that no get returned is the caller's error.
    pub fn from_bits(bits: u64) -> Self {
        Self {
            slot: bits as u32,
            incarnation: (bits >> 32) as u32,
        }
    }
}

/// What [`Cache::get_token`] gives: a token for a cached registration, or
/// a one-off registration outside the cache.
#[derive(Debug)]
pub enum Got<R: Registrar> {
    /// A cached region; release with [`Cache::release_token`].
    Cached(Token),
    /// A one-off registration; release with [`Cache::release_raw`].
    Uncached(RawHandle<R>),
}

impl<R: Registrar> std::fmt::Debug for Handle<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw.fmt(f)
    }
}

impl<'c, R: Registrar> Handle<'c, R> {
    /// The registered range: page-aligned, covering the request.
    pub fn range(&self) -> AddrRange {
        self.raw.range
    }
    /// The registration's lkey/rkey, where the registrar has keys.
    pub fn keys(&self) -> Option<Keys> {
        self.raw.keys
    }
    /// `false` when served by a one-off registration outside the cache.
    pub fn is_cached(&self) -> bool {
        self.raw.is_cached()
    }
    /// The registrar's word for the registration: the same on every hit on
    /// the region ([`Registrar::user_data`]; 0 for the built-in
    /// registrars).
    ///
    /// Read from the region when asked, not copied at every hit: the hit
    /// path stays what it was before user data existed.
    pub fn user_data(&self) -> usize {
        self.cache.user_data_of(&self.raw)
    }
    /// Release the registration (same as dropping the handle).
    pub fn release(self) {}

    /// Detach from the cache's lifetime; see [`RawHandle`].
    pub fn into_raw(self) -> RawHandle<R> {
        let mut me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so `raw` is taken exactly once.
        unsafe { std::mem::ManuallyDrop::take(&mut me.raw) }
    }
}

impl<R: Registrar> Drop for Handle<'_, R> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: `raw` is taken only here and in `into_raw`, which
        // prevents this drop from running.
        let raw = unsafe { std::mem::ManuallyDrop::take(&mut self.raw) };
        self.cache.release_inner(raw);
    }
}

/// One cached region, as reported by [`Cache::regions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// The registered, page-aligned range.
    pub range: AddrRange,
    /// The access flags it was registered with.
    pub access: AccessFlags,
    /// Handles alive on it.
    pub refs: u32,
    /// Its keys, where the registrar has them.
    pub keys: Option<Keys>,
}
