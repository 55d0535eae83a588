//! The hit and the release: one path each.
//!
//! **The hit.** A *hint table* (`hints.rs`: set-associative, laid out
//! like a page table), keyed by the request's first page, remembers which
//! slot last served a request starting there — a software TLB. The slot
//! is checked (LIVE, covers the request, access flags suffice) and its
//! reference count taken with a
//! single compare-and-swap on its state word ([`Slot::try_acquire`]); the
//! CAS also proves the slot was not recycled between the checks and the
//! increment, because the state word carries the slot's incarnation. No
//! lock, no allocation, no system call; the hit is counted in a per-thread
//! stripe.
//!
//! **The release** gives the reference back into this thread's deferred
//! table while the region is LIVE (see `deferred.rs`), else decrements the
//! count with one `fetch_sub`; the last release of a killed region
//! retires it.
//!
//! **One path.** The Rust API ([`Cache::get`], [`Cache::get_token_on`])
//! and the C API's panic-free fast paths ([`Cache::try_hit_token_on`],
//! [`Cache::try_release_token_fast`]) share one hit function and one
//! release function, monomorphised on a `const` flag: the fast variants
//! give up (returning "not done", having changed nothing) where the others
//! would purge, apply events or decrement. **Invariant:** nothing on the
//! hit or release path can panic; the lints below, and the same ones in
//! `slot.rs`, `state.rs`, `hints.rs` and `deferred.rs`, enforce it (`get`,
//! never indexing; no `unwrap`, `expect` or `panic!`). `Slab::slot`, which
//! panics on a bad index, is for the slow paths only.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use super::deferred::Deferred;
use super::slot::{EMPTY, NO_SLOT, Slot};
use super::state::State;
use super::{Cache, Got, RawHandle, Token};
use crate::thread::{ThisThread, this_thread, thread_stripe};
use crate::{AccessFlags, CacheError, Keys, Registrar};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use umn::AddrRange;

impl<R: Registrar> Cache<R> {
    /// The hit path: a reference on a LIVE slot covering `req`, from this
    /// thread's deferred table or the hint table; `None` on a miss there.
    /// With `PURGE` a stale deferred table is purged first; without, a
    /// stale table is a miss (the C fast path then changed nothing).
    ///
    /// Verify mode ([`crate::Verify::Pfn`]) costs this path nothing: a
    /// verifying cache has no deferred tables and never fills the hint
    /// table, so every hit goes through the slow lookup, which checks it
    /// (`verify.rs`).
    ///
    /// Invalidation: without per-region words the caller checked the
    /// generation already (`behind`); with them, each candidate is checked
    /// with its own word ([`Cache::fresh`]), and with `PURGE` a miss here
    /// catches up with pending events ([`Cache::settle`]) before the
    /// caller's slow path looks in the index.
    #[inline(always)]
    pub(super) fn hit<const PURGE: bool>(
        &self,
        me: usize,
        req: &AddrRange,
        access: AccessFlags,
    ) -> Option<(u32, &Slot<R>)> {
        let found = self.hit_here::<PURGE>(me, req, access);
        if PURGE && found.is_none() {
            self.settle();
        }
        found
    }

    /// [`Cache::hit`] without the catching up on a miss.
    #[inline(always)]
    fn hit_here<const PURGE: bool>(
        &self,
        me: usize,
        req: &AddrRange,
        access: AccessFlags,
    ) -> Option<(u32, &Slot<R>)> {
        if let Some(d) = self.deferred.table(me) {
            if d.is_stale(&self.deferred) {
                if !PURGE {
                    return None;
                }
                self.purge_deferred(d, false);
            }
            let held = d.take(|idx| {
                let slot = self.slab.get(idx)?;
                // We hold this reference: the slot cannot be recycled.
                (slot.covers_live(req, access) && self.fresh(slot)).then_some(slot)
            });
            if held.is_some() {
                self.counters.hits.incr_at(me);
                return held;
            }
        }
        let idx = self.hints.lookup(self.page_of(req.start()))?;
        let slot = self.slab.get(idx)?;
        if slot.try_acquire_if(req, access, |s| self.fresh(s)) {
            self.counters.hits.incr_at(me);
            return Some((idx, slot));
        }
        None
    }

    /// The token of a slot the caller holds a reference on (so its
    /// incarnation cannot change under us).
    #[inline(always)]
    pub(super) fn token_for(idx: u32, slot: &Slot<R>) -> Token {
        Token {
            slot: idx,
            incarnation: slot.state.load(Relaxed).incarnation(),
        }
    }

    /// As [`Cache::get_raw`], but a cached registration comes back as a
    /// [`Token`]: 8 bytes, `Copy`, nothing to move or drop. Release it with
    /// [`Cache::release_token`]; a one-off (uncached) registration comes
    /// back as a [`RawHandle`], released with [`Cache::release_raw`].
    ///
    /// # Errors
    /// As [`Cache::get`].
    #[inline(always)]
    pub fn get_token(&self, range: AddrRange, access: AccessFlags) -> Result<Got<R>, CacheError> {
        self.get_token_on(this_thread(), range, access)
    }

    /// As [`Cache::get_token`], for a caller that already has
    /// [`this_thread`] (one TLS access less).
    ///
    /// # Errors
    /// As [`Cache::get`].
    #[inline(always)]
    pub fn get_token_on(
        &self,
        me: ThisThread,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Got<R>, CacheError> {
        let req = self.prologue(range)?;
        if let Some((idx, slot)) = self.hit::<true>(me.index(), &req, access) {
            return Ok(Got::Cached(Self::token_for(idx, slot)));
        }
        let raw = self.get_slow(req, access)?;
        match self.slab.get(raw.slot) {
            Some(slot) => Ok(Got::Cached(Self::token_for(raw.slot, slot))),
            None => Ok(Got::Uncached(raw)),
        }
    }

    /// The hit path alone, for a caller with its own slow path (the C
    /// API's exports): `Some(token)` when this thread's deferred table or
    /// the hint table has a LIVE region covering `range` with `access`
    /// (the token then holds a reference, as from [`Cache::get_token_on`]);
    /// `None`, having changed nothing, when anything else would be needed:
    /// an empty or overflowing range, a fork, monitor events to apply, a
    /// deferred table to purge, a miss. Then call [`Cache::get_token_on`].
    ///
    /// **Invariant:** this function cannot panic and calls nothing out of
    /// line: only atomic loads and stores, `Option`-returning lookups
    /// (`get`, never indexing) and wrapping arithmetic. The C API runs it
    /// outside its `catch_unwind` and relies on that.
    #[inline(always)]
    pub fn try_hit_token_on(
        &self,
        me: ThisThread,
        range: AddrRange,
        access: AccessFlags,
    ) -> Option<Token> {
        let req = self.widen(range).ok()?;
        if self.behind() {
            return None;
        }
        let (idx, slot) = self.hit::<false>(me.index(), &req, access)?;
        Some(Self::token_for(idx, slot))
    }

    /// Stamp `slot`'s last use with the LRU clock. A plain load and store,
    /// not a locked RMW: concurrent releases may share a stamp, which only
    /// blurs the order between them.
    #[inline(always)]
    fn stamp(&self, slot: &Slot<R>) {
        let t = self.clock.load(Relaxed).wrapping_add(1);
        self.clock.store(t, Relaxed);
        slot.last_use.store(t, Relaxed);
    }

    /// The release path: give back one reference on slot `idx`, whose
    /// state the caller loaded as `st`. While the region is LIVE the
    /// reference goes into this thread's deferred table, displacing the
    /// oldest entry (whose reference is then dropped); else it is dropped
    /// now. With `FAST`, does only what needs no atomic RMW and no call —
    /// the deferred store into a table whose oldest entry is empty — and
    /// returns `false`, having changed nothing, otherwise.
    #[inline(always)]
    fn release_ref<const FAST: bool>(
        &self,
        me: usize,
        idx: u32,
        slot: &Slot<R>,
        st: State,
    ) -> bool {
        match self.deferred.table(me) {
            Some(d) if st.is_live() => {
                let old = d.oldest();
                if FAST && old != 0 {
                    return false;
                }
                self.stamp(slot);
                // (A region killed after the LIVE check is purged on this
                // thread's next call: the kill bumped the epoch.)
                d.push(idx);
                if old != 0 {
                    self.drop_ref(old.wrapping_sub(1));
                }
                true
            }
            _ if FAST => false,
            _ => {
                self.stamp(slot);
                self.drop_ref(idx);
                true
            }
        }
    }

    /// The release of a token, checked against its slot (see
    /// [`Cache::release_token`]).
    #[inline(always)]
    fn release_token_checked<const FAST: bool>(&self, me: usize, token: Token) -> bool {
        let Some(slot) = self.slab.get(token.slot) else {
            return false;
        };
        let st = slot.state.load(Relaxed);
        if !st.held_in(token.incarnation) {
            return false;
        }
        self.release_ref::<FAST>(me, token.slot, slot, st)
    }

    /// The release fast path, for a caller with its own slow path (the C
    /// API): give `token`'s reference to this thread's deferred table when
    /// that is all there is to do — the token's slot is in the token's
    /// incarnation, referenced and LIVE, and the deferred entry it would
    /// displace is empty. Returns `false`, having changed nothing,
    /// otherwise; then call [`Cache::release_token_on`].
    ///
    /// **Invariant:** cannot panic and calls nothing out of line, as
    /// [`Cache::try_hit_token_on`].
    ///
    /// # Safety
    /// As [`Cache::release_token`].
    #[inline(always)]
    pub unsafe fn try_release_token_fast(&self, me: ThisThread, token: Token) -> bool {
        self.release_token_checked::<true>(me.index(), token)
    }

    /// Release a token from [`Cache::get_token`].
    ///
    /// Returns `false`, and changes nothing, when the token's slot is not
    /// in the incarnation the token names or has no references: the
    /// region the token named is gone, so this release is a duplicate (or
    /// the token is garbage). A duplicate release while the region is
    /// still referenced by other holders (including this thread's
    /// deferred-release table) is **not** detectable from the token alone:
    /// a caller that must detect double release keeps per-handle state
    /// (the C API's handle table does).
    ///
    /// # Safety
    /// `token` comes from *this* cache's [`Cache::get_token`] and is
    /// released once; releasing it twice or on another cache takes someone
    /// else's reference, and a registration could then be deregistered
    /// while the NIC still uses it.
    #[inline(always)]
    pub unsafe fn release_token(&self, token: Token) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.release_token_on(this_thread(), token) }
    }

    /// As [`Cache::release_token`], for a caller that already has
    /// [`this_thread`].
    ///
    /// # Safety
    /// As [`Cache::release_token`].
    #[inline(always)]
    pub unsafe fn release_token_on(&self, me: ThisThread, token: Token) -> bool {
        self.release_token_checked::<false>(me.index(), token)
    }

    /// The registered range and keys of a token's region (an empty range
    /// and no keys for a token no get returned).
    ///
    /// # Safety
    /// The caller holds `token` (got from this cache and not released), so
    /// the slot cannot be recycled under it.
    #[inline(always)]
    pub unsafe fn token_info(&self, token: Token) -> (AddrRange, Option<Keys>) {
        match self.slab.get(token.slot) {
            Some(s) => (s.range(), s.keys()),
            None => (EMPTY, None),
        }
    }

    /// The registrar's word for a token's region ([`Registrar::user_data`];
    /// 0 for a token no get returned).
    ///
    /// # Safety
    /// As [`Cache::token_info`].
    #[inline(always)]
    pub unsafe fn token_user_data(&self, token: Token) -> usize {
        self.slab.get(token.slot).map_or(0, |s| s.user_data())
    }

    /// The registrar's word for a raw handle's registration
    /// ([`Registrar::user_data`]; 0 for the built-in registrars): the same
    /// on every hit on the region. `raw` comes from this cache.
    pub fn user_data_of(&self, raw: &RawHandle<R>) -> usize {
        match &raw.uncached {
            Some(region) => self.registrar.user_data(region),
            None => self.slab.get(raw.slot).map_or(0, |s| s.user_data()),
        }
    }

    /// Release a handle obtained with [`Cache::get_raw`] or
    /// [`super::Handle::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from *this* cache. Releasing it on another cache
    /// corrupts that cache's reference counts, and a registration could
    /// then be deregistered while the NIC still uses it.
    pub unsafe fn release_raw(&self, raw: RawHandle<R>) {
        self.release_inner(raw);
    }

    /// Release a raw handle: a cached one through the release path, an
    /// uncached one by deregistering it.
    #[inline(always)]
    pub(super) fn release_inner(&self, raw: RawHandle<R>) {
        if raw.slot == NO_SLOT {
            if let Some(region) = raw.uncached {
                self.deregister(region, raw.range);
            }
            return;
        }
        if let Some(slot) = self.slab.get(raw.slot) {
            let st = slot.state.load(Relaxed);
            self.release_ref::<false>(thread_stripe(), raw.slot, slot, st);
        }
    }

    /// Drop one counted reference; the last one on a killed region
    /// deregisters it.
    pub(super) fn drop_ref(&self, slot_idx: u32) {
        if let Some(slot) = self.slab.get(slot_idx) {
            if slot.state.release() {
                // Invalidated, merged or evicted while we held it: we are
                // the last user, so we deregister.
                self.retire(slot_idx);
            }
        }
    }

    /// Drop this thread's deferred references: all of them with `all`, else
    /// those whose region left the index.
    pub(super) fn purge_deferred(&self, d: &Deferred, all: bool) {
        d.purge(
            &self.deferred,
            all,
            |idx| {
                self.slab
                    .get(idx)
                    .is_some_and(|s| !s.state.load(Acquire).is_live())
            },
            |idx| self.drop_ref(idx),
        );
    }

    /// Release the calling thread's deferred references (see the module
    /// docs): afterwards the cache holds no reference on this thread's
    /// behalf. Call it when a thread stops using the cache for a long time,
    /// or before `fork`. Returns nothing; cheap when there is nothing to do.
    pub fn quiesce(&self) {
        if let Some(d) = self.deferred.table(thread_stripe()) {
            self.purge_deferred(d, true);
        }
    }

    /// This thread's deferred table, when it holds references to give back.
    pub(super) fn own_deferred(&self) -> Option<&Deferred> {
        self.deferred
            .table(thread_stripe())
            .filter(|d| !d.is_empty())
    }
}
