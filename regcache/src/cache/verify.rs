//! The verify mode ([`crate::Verify::Pfn`]): an oracle for "every hit still
//! points at the pages it registered", independent of the invalidation
//! source it checks.
//!
//! At registration the physical frame numbers of the region's pages are
//! read from `/proc/self/pagemap` (one 8-byte entry per page: bit 63
//! present, bits 0–54 the PFN; Documentation/admin-guide/mm/pagemap.rst)
//! and recorded under the slot and its incarnation. Every hit then reads
//! the PFNs of the request's pages and compares. The registration pins its
//! pages (mlock, `ibv_reg_mr`), so while the memory stays mapped they
//! cannot move; a different PFN means the range was unmapped and mapped
//! again — new pages under an old registration, the stale hit that
//! corrupts data silently. UCX offers the same check as
//! `UCX_RCACHE_CHECK_PFN`.
//!
//! On a mismatch the hit is not returned: the region is invalidated (as
//! if the source had reported the unmap), the reference dropped, the range
//! reported once on stderr, and the get goes on as a miss, registering the
//! new pages. The check runs with no lock of the cache held.
//!
//! Since Linux 4.2 the PFN fields read as 0 without `CAP_SYS_ADMIN`;
//! [`Verifier::open`] reads the PFN of a page of its own and refuses with
//! that reason when it is 0, and the cache then runs unchecked and says
//! why ([`crate::Cache::verify_error`]).
//!
//! Off (the default), the hit path pays nothing: a verifying cache has no
//! deferred-release tables and never fills the hint table, so its hits all
//! take the slow lookup, where they are checked; the fast path has no
//! check to make.

use super::Cache;
use super::slot::Slot;
use crate::Registrar;
use crate::stats::add;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use umn::AddrRange;

const PRESENT: u64 = 1 << 63;
const PFN_MASK: u64 = (1 << 55) - 1;

/// What the region's pages were at registration.
struct Record {
    incarnation: u32,
    start: u64,
    pfns: Vec<u64>,
}

/// The PFN records and the pagemap they come from.
pub(super) struct Verifier {
    pagemap: File,
    page_shift: u32,
    records: Mutex<HashMap<u32, Record>>,
    /// Ranges already reported on stderr (each once).
    reported: Mutex<HashSet<(u64, u64)>>,
}

impl Verifier {
    /// Open `/proc/self/pagemap` and check that it shows PFNs.
    ///
    /// # Errors
    /// The reason in words: the file cannot be read, or PFNs read as 0
    /// (no `CAP_SYS_ADMIN`).
    pub(super) fn open() -> Result<Self, String> {
        let pagemap = File::open("/proc/self/pagemap")
            .map_err(|e| format!("verify=pfn: cannot open /proc/self/pagemap: {e}"))?;
        let v = Verifier {
            pagemap,
            page_shift: umn::page_size().trailing_zeros(),
            records: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashSet::new()),
        };
        // A page of our own, touched so that it is present.
        let probe = Box::new([1u8; 64]);
        let at = std::hint::black_box(probe.as_ptr()) as u64;
        let r = AddrRange::from_start_len(at, 1).map_err(|e| e.to_string())?;
        let pfns = v
            .pfns(r)
            .map_err(|e| format!("verify=pfn: reading /proc/self/pagemap: {e}"))?;
        drop(probe);
        if pfns.first().is_none_or(|&p| p == 0) {
            return Err("verify=pfn needs CAP_SYS_ADMIN: without it /proc/self/pagemap shows every \
                        physical frame number as 0 (Linux 4.2+), so hits cannot be checked"
                .into());
        }
        Ok(v)
    }

    /// The PFN of every page of `r` (0 for a page not present).
    fn pfns(&self, r: AddrRange) -> std::io::Result<Vec<u64>> {
        let first = r.start() >> self.page_shift;
        let last = (r.end() - 1) >> self.page_shift;
        let n = (last - first + 1) as usize;
        let mut raw = vec![0u8; n * 8];
        self.pagemap.read_exact_at(&mut raw, first * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| {
                let e = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                if e & PRESENT != 0 { e & PFN_MASK } else { 0 }
            })
            .collect())
    }

    /// Record the pages of `slot`'s freshly registered `range`.
    pub(super) fn record(&self, slot: u32, incarnation: u32, range: AddrRange) {
        match self.pfns(range) {
            Ok(pfns) => {
                let rec = Record {
                    incarnation,
                    start: range.start() >> self.page_shift,
                    pfns,
                };
                self.records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(slot, rec);
            }
            Err(e) => log::warn!("verify=pfn: cannot read the pages of {range}: {e}"),
        }
    }

    /// `Some(true)` when `req`'s pages are those `slot` registered,
    /// `Some(false)` when one differs, `None` when it cannot tell (no
    /// record, or pagemap unreadable).
    pub(super) fn check(&self, slot: u32, incarnation: u32, req: AddrRange) -> Option<bool> {
        let now = self.pfns(req).ok()?;
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let rec = records.get(&slot).filter(|r| r.incarnation == incarnation)?;
        let off = usize::try_from((req.start() >> self.page_shift).checked_sub(rec.start)?).ok()?;
        let then = rec.pfns.get(off..off + now.len())?;
        Some(then == now.as_slice())
    }

    /// Report a mismatch on `range` on stderr, once per range.
    pub(super) fn report(&self, range: AddrRange, req: AddrRange) {
        let first = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((range.start(), range.end()));
        if first {
            eprintln!(
                "regcache: verify=pfn: stale registration {range}: the pages under {req} changed \
                 since it was registered (an unmap the invalidation source missed); invalidated \
                 and registered afresh"
            );
        }
    }
}

impl<R: Registrar> Cache<R> {
    /// `true` when the hit on `idx` (a reference held) may be returned:
    /// verify mode is off, or the request's pages are those registered (or
    /// it cannot tell). On a mismatch the region is invalidated, the
    /// reference dropped (retiring it) and `false` returned: the caller
    /// goes on as if it had missed. No lock may be held by the caller.
    #[inline(always)]
    pub(super) fn verify_ok(&self, idx: u32, req: &AddrRange) -> bool {
        match &self.verifier {
            None => true,
            Some(v) => self.verified(v, idx, self.slab.slot(idx), req),
        }
    }

    /// The check of [`Cache::verify_ok`].
    #[cold]
    #[inline(never)]
    pub(super) fn verified(&self, v: &Verifier, idx: u32, slot: &Slot<R>, req: &AddrRange) -> bool {
        add(&self.counters.verify_checks, 1);
        let incarnation = slot.state.load(std::sync::atomic::Ordering::Acquire).incarnation();
        if v.check(idx, incarnation, *req) != Some(false) {
            return true;
        }
        add(&self.counters.verify_mismatches, 1);
        let range = slot.range();
        v.report(range, *req);
        self.invalidate(range);
        self.drop_ref(idx);
        false
    }
}
