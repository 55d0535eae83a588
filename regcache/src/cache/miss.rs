//! The miss: lookup, reserve, register, publish.
//!
//! A get the hit path could not serve comes here ([`Cache::get_slow`]),
//! and each attempt ([`Cache::miss_once`]) goes through four steps:
//!
//! 1. **Lookup** ([`Cache::lookup`]): the authoritative index, under the
//!    read lock. A covering region is a hit after all (the hint table
//!    pointed elsewhere); it is remembered in the hint table. Otherwise the
//!    region to register is planned: the request, or with merging the hull
//!    of the request and every cached region it overlaps or touches, unless
//!    that hull alone exceeds the byte limit.
//! 2. **Reserve** ([`Cache::reserve`]): a slot, and the invalidation
//!    source told to watch the target range under the slot's next cookie
//!    *before* registering it, so an unmap at any later moment reaches the
//!    slot (it is marked doomed; see `invalidate.rs`). A source that cannot
//!    watch the range means the get is served uncached: nothing is cached
//!    that nothing watches.
//! 3. **Register** ([`Cache::register_evicting`]), outside any lock:
//!    `ibv_reg_mr` takes 10–100 µs. When the registrar runs out of
//!    resources (ENOMEM/EAGAIN), least recently used idle regions are
//!    evicted and the registration retried; a merged target that fails is
//!    retried as the bare request.
//! 4. **Publish** ([`Cache::publish`]), under the write lock: an unmap may
//!    have doomed the reservation (then everything is undone and the miss
//!    tried again); another thread may have cached the range meanwhile
//!    (then ours is dropped and counted as a lost race); merged regions
//!    leave the index; limits are enforced by evicting least recently used
//!    idle regions (giving back this thread's deferred references once if
//!    that is what blocks eviction); then the slot's fields are written and
//!    published with one Release store of its state word.
//!
//! Over the limits with nothing evictable, the request gets a one-off
//! registration outside the cache.

use super::slot::NO_SLOT;
use super::{Cache, Index, RawHandle};
use crate::stats::add;
use crate::{AccessFlags, CacheError, Merge, Registrar, RegistrarError};
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Instant;
use umn::AddrRange;

/// What a miss registers, for which request.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The request, widened to pages, and the access it wants.
    req: AddrRange,
    access: AccessFlags,
    /// What to register: the request, or the merged hull.
    target: AddrRange,
    target_access: AccessFlags,
}

impl Plan {
    /// Register the request alone, not merged.
    fn unmerge(&mut self) {
        (self.target, self.target_access) = (self.req, self.access);
    }

    fn merged(&self) -> bool {
        self.target != self.req
    }
}

/// A slot reserved for a miss: not LIVE, watched under the next cookie.
#[derive(Debug, Clone, Copy)]
struct Reserved {
    slot: u32,
    incarnation: u32,
}

impl<R: Registrar> Cache<R> {
    /// A LIVE region in the index covering `req` with `access`, with a
    /// reference taken on it.
    fn find_covering(&self, idx: &Index, req: &AddrRange, access: AccessFlags) -> Option<u32> {
        idx.covering_candidates(*req)
            .find(|&slot| self.slab.slot(slot).try_acquire(req, access))
    }

    /// The raw handle for a slot the caller holds a reference on.
    fn handle_for(&self, slot: u32) -> RawHandle<R> {
        let s = self.slab.slot(slot);
        RawHandle {
            slot,
            range: s.range(),
            keys: s.keys(),
            uncached: None,
        }
    }

    /// Remember in the hint table that `slot` served a request starting
    /// at `start`.
    fn remember(&self, start: u64, slot: u32) {
        if self.verifier.is_some() {
            // Hits must come through the checked lookup (`verify.rs`).
            return;
        }
        self.hints.remember(self.page_of(start), slot, |idx| {
            self.slab
                .get(idx)
                .is_none_or(|s| !s.state.load(Relaxed).is_live())
        });
    }

    /// Look up a cached registration covering `range` with at least
    /// `access`, never registering: Open MPI's `rcache_find`. `Ok(None)`
    /// when no live cached region covers it (nothing is registered, nothing
    /// counted); a found region is a hit, with a reference taken as by
    /// [`Cache::get`].
    ///
    /// # Errors
    /// [`CacheError::Range`] for an empty or overflowing range.
    pub fn find(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Option<super::Handle<'_, R>>, CacheError> {
        Ok(self
            .find_slot(crate::thread::thread_stripe(), range, access)?
            .map(|slot| super::Handle {
                cache: self,
                raw: std::mem::ManuallyDrop::new(self.handle_for(slot)),
            }))
    }

    /// As [`Cache::find`], as a [`super::Token`] (release it with
    /// [`Cache::release_token`]), for a caller that already has
    /// [`crate::this_thread`].
    ///
    /// # Errors
    /// As [`Cache::find`].
    pub fn find_token_on(
        &self,
        me: crate::ThisThread,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Option<super::Token>, CacheError> {
        Ok(self
            .find_slot(me.index(), range, access)?
            .map(|slot| Self::token_for(slot, self.slab.slot(slot))))
    }

    /// The slot [`Cache::find`] found, with a reference taken.
    fn find_slot(
        &self,
        me: usize,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Option<u32>, CacheError> {
        let req = self.prologue(range)?;
        if let Some((idx, _)) = self.hit::<true>(me, &req, access) {
            return Ok(Some(idx));
        }
        if self.forked.load(Relaxed) {
            return Ok(None);
        }
        let idx = self.read_index();
        let found = self.find_covering(&idx, &req, access);
        drop(idx);
        Ok(found.filter(|&slot| self.accept_indexed_hit(slot, &req, me)))
    }

    /// A hit the index found (a reference held on `slot`, no lock held):
    /// checked in verify mode (`false`: it was stale, is invalidated and
    /// its reference dropped), then remembered in the hint table and
    /// counted on stripe `me`.
    fn accept_indexed_hit(&self, slot: u32, req: &AddrRange, me: usize) -> bool {
        if !self.verify_ok(slot, req) {
            return false;
        }
        self.remember(req.start(), slot);
        self.counters.hits.incr_at(me);
        true
    }

    /// The miss path: everything a get does after the hit path missed.
    #[cold]
    pub(super) fn get_slow(
        &self,
        req: AddrRange,
        access: AccessFlags,
    ) -> Result<RawHandle<R>, CacheError> {
        if self.forked.load(Relaxed) {
            // A fork child has no invalidation source: nothing is cached.
            add(&self.counters.misses, 1);
            return self.uncached(req, access);
        }
        for attempt in 0..8 {
            match self.miss_once(req, access, attempt == 0)? {
                Some(h) => return Ok(h),
                // An unmap hit the range while we registered it: again.
                None => add(&self.counters.doomed_retries, 1),
            }
        }
        // The memory under the request keeps changing under us: a one-off
        // registration, not cached.
        self.uncached(req, access)
    }

    /// Register `range` outside the cache, for one handle.
    fn uncached(&self, range: AddrRange, access: AccessFlags) -> Result<RawHandle<R>, CacheError> {
        let (region, range, _) = self.register_evicting(range, access, range)?;
        add(&self.counters.uncached, 1);
        Ok(self.uncached_handle(region, range))
    }

    /// The handle of a one-off registration.
    fn uncached_handle(&self, region: R::Region, range: AddrRange) -> RawHandle<R> {
        RawHandle {
            slot: NO_SLOT,
            range,
            keys: self.registrar.keys(&region),
            uncached: Some(region),
        }
    }

    /// One attempt at a miss. `Ok(None)`: an invalidation event hit the
    /// reserved slot before it was published; the caller tries again.
    fn miss_once(
        &self,
        req: AddrRange,
        access: AccessFlags,
        first: bool,
    ) -> Result<Option<RawHandle<R>>, CacheError> {
        let mut plan = match self.lookup(req, access) {
            Break(hit) => return Ok(Some(hit)),
            Continue(plan) => plan,
        };
        if first {
            add(&self.counters.misses, 1);
        }
        let resv = match self.reserve(&mut plan)? {
            Break(served) => return Ok(Some(served)),
            Continue(resv) => resv,
        };
        let registered = self.register_evicting(plan.target, plan.target_access, plan.req);
        match registered {
            Ok((region, target, target_access)) => {
                if let Some(v) = &self.verifier {
                    v.record(resv.slot, resv.incarnation, target);
                }
                plan.target = target;
                plan.target_access = target_access;
                Ok(self.publish(plan, resv, region))
            }
            Err(e) => {
                self.unreserve(resv.slot);
                Err(e)
            }
        }
    }

    /// Step 1: the index, shared. `Break` with a handle on a hit; else the
    /// plan of what to register.
    fn lookup(&self, req: AddrRange, access: AccessFlags) -> ControlFlow<RawHandle<R>, Plan> {
        let idx = self.read_index();
        if let Some(slot) = self.find_covering(&idx, &req, access) {
            drop(idx);
            if !self.accept_indexed_hit(slot, &req, crate::thread::thread_stripe()) {
                // Stale (verify mode): invalidated now; look again.
                return self.lookup(req, access);
            }
            return Break(self.handle_for(slot));
        }
        let (target, target_access) = match self.config.merge {
            Merge::Off => (req, access),
            merge => {
                // Adaptive: only within the window the "do not merge
                // across" table leaves (policy.rs); its mutex is a leaf
                // under the index lock.
                let adaptive = merge == Merge::Adaptive;
                let (lo, hi) = match merge {
                    Merge::Adaptive if self.boundaries.short_lived(&req) => (u64::MAX, 0),
                    Merge::Adaptive => self.boundaries.window(&req),
                    _ => (0, u64::MAX),
                };
                idx.overlapping(&req, true)
                    .iter()
                    .filter(|(_, region)| region.start() >= lo && region.end() <= hi)
                    .filter(|(_, region)| !adaptive || !self.boundaries.short_lived(region))
                    .fold((req, access), |(r, a), (slot, region)| {
                        (r.hull(region), a | self.slab.slot(*slot).access())
                    })
            }
        };
        drop(idx);
        let mut plan = Plan {
            req,
            access,
            target,
            target_access,
        };
        if plan.target.len() > self.config.max_bytes && plan.merged() {
            // Merging would exceed the byte limit on its own: don't merge.
            add(&self.counters.merge_fallbacks, 1);
            plan.unmerge();
        }
        Continue(plan)
    }

    /// Step 2: reserve a slot and watch the target range *before*
    /// registering it. `Break` with a one-off registration when the slab
    /// is full or the source cannot watch the range.
    fn reserve(&self, plan: &mut Plan) -> Result<ControlFlow<RawHandle<R>, Reserved>, CacheError> {
        let Some(slot) = self.slab.alloc() else {
            return self.uncached(plan.req, plan.access).map(Break);
        };
        let s = self.slab.slot(slot);
        let incarnation = s.state.load(Relaxed).next_incarnation();
        let resv = Reserved { slot, incarnation };
        let cookie = (u64::from(incarnation) << 32) | u64::from(slot);
        s.doomed.store(false, Relaxed);
        s.cookie.store(0, Relaxed);
        s.word.store(std::ptr::null_mut(), Relaxed);
        let Some(m) = &self.monitor else {
            return Ok(Continue(resv));
        };
        // Release: `apply` reads the cookie (under the index lock) only
        // after the notifier delivered an event for it, which follows this
        // registration.
        s.cookie.store(cookie, Release);
        let t = Instant::now();
        let mut watched = m.notifier.register(plan.target, umn::Cookie(cookie));
        if matches!(watched, Err(umn::Error::NotMapped { .. })) && plan.merged() {
            add(&self.counters.merge_fallbacks, 1);
            plan.unmerge();
            watched = m.notifier.register(plan.target, umn::Cookie(cookie));
        }
        add(&self.counters.monitor_ns, t.elapsed().as_nanos() as u64);
        let Err(e) = watched else {
            self.watch_word(s, cookie);
            return Ok(Continue(resv));
        };
        s.cookie.store(0, Relaxed);
        self.slab.release(slot);
        match e {
            umn::Error::NotMapped { range } => {
                Err(CacheError::Registrar(RegistrarError::NotMapped {
                    call: "umn register",
                    range,
                    source: std::io::Error::from_raw_os_error(libc::EFAULT),
                }))
            }
            umn::Error::Forked => {
                self.on_fork();
                self.uncached(plan.req, plan.access).map(Break)
            }
            e => {
                // EBUSY (another userfaultfd owns the memory) or another
                // failure: serve it, but never cache what nothing watches.
                add(&self.counters.unwatched, 1);
                log::debug!("{} served uncached: {e}", plan.target);
                self.uncached(plan.req, plan.access).map(Break)
            }
        }
    }

    /// Step 3: register `target` (falling back to `req` when the merged
    /// target cannot be registered), evicting LRU regions and retrying when
    /// the registrar runs out of resources. Returns the region, what was
    /// registered, and its access.
    fn register_evicting(
        &self,
        mut target: AddrRange,
        mut access: AccessFlags,
        req: AddrRange,
    ) -> Result<(R::Region, AddrRange, AccessFlags), CacheError> {
        let req_access = access;
        loop {
            match self.register(target, access) {
                Ok(region) => return Ok((region, target, access)),
                Err(e) if e.is_resource_exhausted() => {
                    let victims = {
                        let mut idx = self.write_index();
                        self.evict_lru(&mut idx, 1)
                    };
                    if victims.is_empty() {
                        if let Some(d) = self.own_deferred() {
                            self.purge_deferred(d, true);
                            continue;
                        }
                        if target != req {
                            add(&self.counters.merge_fallbacks, 1);
                            (target, access) = (req, req_access);
                            continue;
                        }
                        return Err(e.into());
                    }
                    add(&self.counters.enomem_retries, 1);
                    self.retire_all(victims);
                }
                // A merged registration can fail where the request alone
                // would not (a neighbour's memory went away): retry without
                // merging.
                Err(_) if target != req => {
                    add(&self.counters.merge_fallbacks, 1);
                    (target, access) = (req, req_access);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Step 4: publish under the write lock. `None`: the reservation was
    /// doomed by an unmap, everything is undone, try again.
    fn publish(&self, plan: Plan, resv: Reserved, region: R::Region) -> Option<RawHandle<R>> {
        let Plan {
            req,
            access,
            target,
            target_access,
        } = plan;
        let s = self.slab.slot(resv.slot);
        let mut retire = Vec::new();
        let mut idx = self.write_index();
        let mut purged = false;
        let fits = target.len() <= self.config.max_bytes;
        loop {
            if s.doomed.load(Acquire) {
                drop(idx);
                self.deregister(region, target);
                self.unreserve(resv.slot);
                self.retire_all(retire);
                return None;
            }
            if let Some(hit) = self.find_covering(&idx, &req, access) {
                drop(idx);
                add(&self.counters.lost_races, 1);
                self.deregister(region, target);
                self.unreserve(resv.slot);
                self.retire_all(retire);
                if !self.verify_ok(hit, &req) {
                    // The winner is stale (verify mode): try again.
                    return None;
                }
                self.remember(req.start(), hit);
                return Some(self.handle_for(hit));
            }
            if self.config.merge.merges() {
                // Regions the new one covers are superseded.
                let mut parts = vec![(None, req)];
                for (victim, r) in idx.overlapping(&target, false) {
                    if target.contains(&r) {
                        if self.kill(&mut idx, victim, r, false) {
                            retire.push(victim);
                        }
                        parts.push((Some(victim), r));
                        add(&self.counters.merges, 1);
                    }
                }
                if self.config.merge == Merge::Adaptive {
                    // Where the parts met: what adaptive merging learns
                    // from if an invalidation without a hint kills it.
                    self.boundaries.merged(resv.slot, target, &parts);
                }
            }
            while fits && self.over(&idx, target) {
                let v = self.evict_lru(&mut idx, 1);
                if v.is_empty() {
                    break;
                }
                retire.extend(v);
            }
            match self.own_deferred() {
                // Our own deferred references may be what keeps regions
                // from being evicted: give them back (outside the lock)
                // and try once more.
                Some(d) if fits && !purged && self.over(&idx, target) => {
                    drop(idx);
                    self.purge_deferred(d, true);
                    purged = true;
                    idx = self.write_index();
                }
                _ => break,
            }
        }
        if self.over(&idx, target) {
            drop(idx);
            self.unreserve(resv.slot);
            self.retire_all(retire);
            add(&self.counters.uncached, 1);
            return Some(self.uncached_handle(region, target));
        }
        let keys = self.registrar.keys(&region);
        let user_data = self.registrar.user_data(&region);
        *s.region.lock().unwrap_or_else(|e| e.into_inner()) = Some(region);
        let stamp = self.clock.load(Relaxed);
        // One reference is ours.
        s.publish(resv.incarnation, target, target_access, keys, user_data, stamp);
        idx.insert(resv.slot, target, stamp);
        let regions = idx.len() as u64;
        drop(idx);
        self.counters.peak_regions.fetch_max(regions, Relaxed);
        self.remember(req.start(), resv.slot);
        self.retire_all(retire);
        Some(RawHandle {
            slot: resv.slot,
            range: target,
            keys,
            uncached: None,
        })
    }

    /// `true` when caching `target` would exceed a limit.
    fn over(&self, idx: &Index, target: AddrRange) -> bool {
        idx.over(target.len(), self.config.max_regions, self.config.max_bytes)
    }

    /// Give back a reserved, never-published slot: stop watching it.
    fn unreserve(&self, slot: u32) {
        let s = self.slab.slot(slot);
        let cookie = s.cookie.swap(0, Relaxed);
        if let (Some(m), true) = (&self.monitor, cookie != 0) {
            let t = Instant::now();
            let _ = m.notifier.unregister(umn::Cookie(cookie));
            add(&self.counters.monitor_ns, t.elapsed().as_nanos() as u64);
        }
        self.slab.release(slot);
    }

    /// One call of the registrar's `register`, counted and timed.
    fn register(&self, range: AddrRange, access: AccessFlags) -> Result<R::Region, RegistrarError> {
        let t = Instant::now();
        let r = self.registrar.register(range, access);
        add(&self.counters.registrar_ns, t.elapsed().as_nanos() as u64);
        match &r {
            Ok(_) => {
                add(&self.counters.registrations, 1);
                let now = self
                    .counters
                    .bytes_registered
                    .fetch_add(range.len(), Relaxed)
                    + range.len();
                self.counters.peak_bytes.fetch_max(now, Relaxed);
            }
            Err(e) => {
                add(&self.counters.registration_failures, 1);
                log::debug!("{} register {range} failed: {e}", self.registrar.name());
            }
        }
        r
    }
}
