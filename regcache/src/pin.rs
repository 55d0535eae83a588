//! The `pin` registrar: real page pinning with `mlock(2)`, for hosts with no
//! RDMA device.
//!
//! `mlock` pins pages and is charged against `RLIMIT_MEMLOCK`, as
//! `ibv_reg_mr` is, so the cache's eviction-on-ENOMEM path runs for real.
//! Two differences from ibverbs are handled here:
//!
//! - `mlock` is not reference counted: one `munlock` unpins a page however
//!   many times it was locked. With overlapping registrations (merge off, or
//!   a merged region alive beside in-use old ones) that would unpin memory
//!   another registration still relies on. The registrar therefore keeps a
//!   count per page interval and only unlocks intervals whose count drops
//!   to zero.
//! - `mlock` reports an unmapped page as `ENOMEM`, the same errno as the
//!   memlock limit. After a failure the registrar asks `mincore(2)`, which
//!   fails with `ENOMEM` only for unmapped pages, to tell them apart.
//!
//! Root (CAP_IPC_LOCK) is not limited by `RLIMIT_MEMLOCK`.

use crate::{AccessFlags, Keys, Registrar, RegistrarError};
use std::collections::BTreeMap;
use std::sync::Mutex;
use umn::AddrRange;

/// Registrar that pins with `mlock`/`munlock`. See the module docs.
#[derive(Debug, Default)]
pub struct PinRegistrar {
    /// Pin counts over page intervals: a key `k` with value `c` means every
    /// page from `k` up to the next key is locked `c` times. Zero-count
    /// intervals are not stored except as the terminating boundary.
    counts: Mutex<BTreeMap<u64, u32>>,
}

/// One pinned range.
#[derive(Debug)]
pub struct PinnedRegion {
    range: AddrRange,
}

impl PinnedRegion {
    /// The pinned (page-aligned) range.
    pub fn range(&self) -> AddrRange {
        self.range
    }
}

impl PinRegistrar {
    /// A registrar with nothing pinned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `delta` (+1/-1) to the counts over `range`; returns the
    /// sub-ranges whose count went 0→1 (to lock) or 1→0 (to unlock).
    fn adjust(map: &mut BTreeMap<u64, u32>, range: AddrRange, delta: i32) -> Vec<AddrRange> {
        let (s, e) = (range.start(), range.end());
        // Ensure boundaries at s and e exist, carrying the count in force.
        for b in [s, e] {
            if !map.contains_key(&b) {
                let c = map.range(..b).next_back().map_or(0, |(_, &c)| c);
                map.insert(b, c);
            }
        }
        let mut changed = Vec::new();
        let keys: Vec<u64> = map.range(s..e).map(|(&k, _)| k).collect();
        for (i, &k) in keys.iter().enumerate() {
            let next = keys.get(i + 1).copied().unwrap_or(e);
            let c = map.get_mut(&k).expect("boundary present");
            let before = *c;
            *c = (before as i64 + delta as i64).max(0) as u32;
            if (before == 0) != (*c == 0) {
                let r = AddrRange::new(k, next).expect("ordered keys");
                match changed.last_mut() {
                    Some(last) if AddrRange::end(last) == k => *last = last.hull(&r),
                    _ => changed.push(r),
                }
            }
        }
        // Drop redundant boundaries (equal to their predecessor's count).
        let lo = map.range(..s).next_back().map(|(&k, _)| k).unwrap_or(s);
        let span: Vec<(u64, u32)> = map.range(lo..=e).map(|(&k, &c)| (k, c)).collect();
        let mut prev: Option<u32> = map.range(..lo).next_back().map(|(_, &c)| c);
        for (k, c) in span {
            if prev == Some(c) || (prev.is_none() && c == 0) {
                map.remove(&k);
            } else {
                prev = Some(c);
            }
        }
        changed
    }

    /// `true` when every page of `range` is mapped (`mincore` succeeds).
    fn is_mapped(range: AddrRange) -> bool {
        let page = umn::page_size();
        let mut vec = [0u8; 4096];
        let mut addr = range.start();
        while addr < range.end() {
            let chunk = (range.end() - addr).min(page * vec.len() as u64);
            // SAFETY: mincore only inspects the mapping of [addr, addr+chunk)
            // and writes one byte per page into `vec`, which has room for
            // chunk/page bytes.
            let rc = unsafe {
                libc::mincore(addr as *mut libc::c_void, chunk as usize, vec.as_mut_ptr())
            };
            if rc != 0 {
                return false;
            }
            addr += chunk;
        }
        true
    }
}

impl Registrar for PinRegistrar {
    type Region = PinnedRegion;

    fn name(&self) -> &'static str {
        "pin"
    }

    fn register(
        &self,
        range: AddrRange,
        _access: AccessFlags,
    ) -> Result<PinnedRegion, RegistrarError> {
        let range = range.page_align().map_err(|_| RegistrarError::NotMapped {
            call: "mlock",
            range,
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        })?;
        if range.is_empty() {
            return Err(RegistrarError::NotMapped {
                call: "mlock",
                range,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let to_lock = Self::adjust(&mut map, range, 1);
        // The whole range is locked, not only what went 0→1: the counts are
        // kept by address, and the memory under an address counted above 0
        // may be new — the application unmapped and re-mapped it while the
        // old registration was still cached (its invalidation not yet
        // applied, or the region in use). Locking only the 0→1 parts left
        // such pages unpinned and not even faulted in: the verify soak saw
        // their frames appear after registration (~1 hit in 30,000 with
        // every source). `mlock` of locked pages is a no-op per page.
        if let Err(err) = crate::sys::mlock(range) {
            // Roll back: unlock what only this call counted, restore
            // the counts.
            for done in &to_lock {
                let _ = crate::sys::munlock(*done);
            }
            Self::adjust(&mut map, range, -1);
            drop(map);
            let errno = err.raw_os_error().unwrap_or(0);
            return Err(if !Self::is_mapped(range) {
                RegistrarError::NotMapped {
                    call: "mlock",
                    range,
                    source: err,
                }
            } else if errno == libc::ENOMEM || errno == libc::EAGAIN || errno == libc::EPERM {
                RegistrarError::NoResources {
                    call: "mlock",
                    source: err,
                }
            } else {
                RegistrarError::Os {
                    call: "mlock",
                    source: err,
                }
            });
        }
        Ok(PinnedRegion { range })
    }

    fn keys(&self, _region: &PinnedRegion) -> Option<Keys> {
        None
    }

    fn deregister(&self, region: PinnedRegion) -> Result<(), RegistrarError> {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let to_unlock = Self::adjust(&mut map, region.range, -1);
        let mut result = Ok(());
        for r in to_unlock {
            if let Err(source) = crate::sys::munlock(r) {
                // munlock of memory the application already unmapped fails
                // with ENOMEM; the pages are gone, nothing stays pinned.
                if source.raw_os_error() != Some(libc::ENOMEM) {
                    result = Err(RegistrarError::Os {
                        call: "munlock",
                        source,
                    });
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resident(r: AddrRange) -> usize {
        let page = umn::page_size();
        let mut vec = vec![0u8; (r.len() / page) as usize];
        // SAFETY: mincore writes one byte per page of [start, end) into
        // `vec`, which has exactly that many.
        let rc = unsafe {
            libc::mincore(r.start() as *mut libc::c_void, r.len() as usize, vec.as_mut_ptr())
        };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        vec.iter().filter(|&&b| b & 1 != 0).count()
    }

    /// The memory under a still-counted address is new (the application
    /// unmapped and re-mapped it while the old registration was cached):
    /// registering it again must pin (and so fault in) the new pages,
    /// though the count there does not go 0→1.
    #[test]
    fn register_pins_new_memory_under_a_counted_address() {
        let page = umn::page_size();
        let len = 8 * page as usize;
        let map = |at: *mut libc::c_void, flags: i32| {
            // SAFETY: an anonymous private mapping, at `at` only with
            // MAP_FIXED over our own mapping.
            let p = unsafe {
                libc::mmap(at, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags, -1, 0)
            };
            assert_ne!(p, libc::MAP_FAILED);
            p
        };
        let p = map(std::ptr::null_mut(), 0);
        let r = AddrRange::from_start_len(p as u64, len as u64).unwrap();
        let pin = PinRegistrar::new();
        let old = match pin.register(r, AccessFlags::LOCAL_WRITE) {
            Ok(old) => old,
            Err(RegistrarError::NoResources { .. }) => {
                eprintln!("register_pins_new_memory_under_a_counted_address: SKIPPED: mlock refused (RLIMIT_MEMLOCK)");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(resident(r), 8);
        // New, untouched memory at the same address; the old registration
        // is still counted.
        let q = map(p, libc::MAP_FIXED);
        assert_eq!(q, p);
        assert_eq!(resident(r), 0);
        let new = pin.register(r, AccessFlags::LOCAL_WRITE).unwrap();
        assert_eq!(resident(r), 8, "the new pages were not pinned");
        pin.deregister(old).unwrap();
        pin.deregister(new).unwrap();
        // SAFETY: our mapping.
        assert_eq!(unsafe { libc::munmap(p, len) }, 0);
    }

    proptest! {
        /// The interval counts match a per-page model, and lock/unlock
        /// transitions are exactly the pages crossing zero.
        #[test]
        fn counts_match_page_model(ops in prop::collection::vec((0u64..32, 1u64..8, any::<bool>()), 1..60)) {
            let mut map = BTreeMap::new();
            let mut model = [0u32; 40];
            let mut live: Vec<AddrRange> = Vec::new();
            for (start, len, add) in ops {
                let (r, delta) = if add || live.is_empty() {
                    let r = AddrRange::from_start_len(start, len).unwrap();
                    live.push(r);
                    (r, 1)
                } else {
                    (live.remove(start as usize % live.len()), -1)
                };
                let changed = PinRegistrar::adjust(&mut map, r, delta);
                let mut expect = Vec::new();
                for p in r.start()..r.end() {
                    let before = model[p as usize];
                    model[p as usize] = (before as i32 + delta) as u32;
                    if (before == 0) != (model[p as usize] == 0) { expect.push(p); }
                }
                let got: Vec<u64> = changed.iter().flat_map(|c| c.start()..c.end()).collect();
                prop_assert_eq!(got, expect);
                for p in 0..40u64 {
                    let c = map.range(..=p).next_back().map_or(0, |(_, &c)| c);
                    prop_assert_eq!(c, model[p as usize]);
                }
            }
        }
    }
}
