//! Where a trace's addresses land in the replaying process.
//!
//! A trace records addresses of another process. The replay needs real
//! memory with the same *shape*: the same page offsets, the same overlaps
//! and adjacencies between ranges (they decide merging and invalidation),
//! and nothing else. The mapping, which another tool can reproduce:
//!
//! 1. Widen every record's range (A and U) to page boundaries.
//! 2. Join ranges that overlap or touch into *clusters*, sorted by address.
//! 3. Reserve one anonymous private mapping holding every cluster in
//!    address order, each followed by one unmapped-in-spirit guard page (it
//!    is mapped but never referenced by any record), so clusters that were
//!    apart in the trace never become adjacent and merge.
//! 4. A trace address `a` in cluster `c` maps to
//!    `base + offset(c) + (a - start(c))`: page offsets are preserved.
//!
//! The mapping is `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`; pages are
//! touched (so registration pins real pages) and stay mapped for the whole
//! replay. This module is the only place the bench calls `mmap`/`munmap`.

use crate::trace::Record;
use umn::AddrRange;

/// A trace's clusters and the real memory backing them.
#[derive(Debug)]
pub struct Layout {
    base: u64,
    len: usize,
    /// (trace cluster, offset from base), sorted by cluster start.
    clusters: Vec<(AddrRange, u64)>,
}

impl Layout {
    /// Map memory for `records`. Refuses footprints above `limit` bytes.
    ///
    /// # Errors
    /// The footprint is over `limit`, or `mmap` failed.
    pub fn map(records: &[Record], limit: u64) -> anyhow::Result<Layout> {
        let page = umn::page_size();
        let mut ranges: Vec<AddrRange> = records
            .iter()
            .map(|r| r.range.page_align().expect("validated by the parser"))
            .collect();
        ranges.sort();
        let mut clusters: Vec<(AddrRange, u64)> = Vec::new();
        let mut total = 0u64;
        for r in ranges {
            match clusters.last_mut() {
                Some((c, _)) if c.touches(&r) => *c = c.hull(&r),
                _ => clusters.push((r, 0)),
            }
        }
        for (c, off) in &mut clusters {
            *off = total;
            total = total
                .checked_add(c.len() + page)
                .ok_or_else(|| anyhow::anyhow!("trace footprint overflows"))?;
        }
        anyhow::ensure!(
            total <= limit,
            "trace footprint is {total} bytes after compaction, above the replay limit of {limit} bytes \
             (--max-footprint)"
        );
        let len = total.max(page) as usize;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // it aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        anyhow::ensure!(
            p != libc::MAP_FAILED,
            "mmap of {len} bytes failed: {}",
            std::io::Error::last_os_error()
        );
        Ok(Layout {
            base: p as u64,
            len,
            clusters,
        })
    }

    /// The replay address range of a trace range.
    pub fn translate(&self, r: &AddrRange) -> AddrRange {
        let i = self
            .clusters
            .partition_point(|(c, _)| c.start() <= r.start())
            - 1;
        let (c, off) = self.clusters[i];
        debug_assert!(c.contains(r));
        AddrRange::from_start_len(self.base + off + (r.start() - c.start()), r.len())
            .expect("inside the mapping")
    }

    /// Replace the pages of `r` (a translated range, widened to pages) with
    /// fresh zeroed anonymous pages by `mmap(MAP_FIXED)` over them: the
    /// kernel unmaps the old pages (an unmap event for any invalidation
    /// source watching them) and the range never becomes a hole another
    /// mapping could take.
    ///
    /// # Errors
    /// The range is outside the mapping, or `mmap` failed.
    pub fn replace(&self, r: &AddrRange) -> anyhow::Result<()> {
        let r = r.page_align()?;
        let own = AddrRange::from_start_len(self.base, self.len as u64)?;
        anyhow::ensure!(own.contains(&r), "{r} is outside the replay mapping {own}");
        // SAFETY: MAP_FIXED over pages of this layout's own mapping (checked
        // above), which no Rust reference points into.
        let p = unsafe {
            libc::mmap(
                r.start() as *mut libc::c_void,
                r.len() as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        anyhow::ensure!(
            p as u64 == r.start(),
            "mmap(MAP_FIXED) over {r} failed: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// Bytes mapped.
    pub fn footprint(&self) -> u64 {
        self.len as u64
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; the cache that
        // registered parts of it has been dropped before the layout.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Kind;

    #[test]
    fn preserves_offsets_overlaps_and_separation() {
        let rec = |s: u64, l: u64| Record {
            kind: Kind::Acquire,
            range: AddrRange::from_start_len(s, l).unwrap(),
        };
        let page = umn::page_size();
        let recs = [
            rec(0x7f00_0000_0010, 100),
            rec(0x7f00_0000_0000 + page, page),
            rec(0x5555_0000_0000, 3),
        ];
        let l = Layout::map(&recs, 1 << 30).unwrap();
        let t: Vec<AddrRange> = recs.iter().map(|r| l.translate(&r.range)).collect();
        assert_eq!(t[0].start() % page, 0x10);
        assert_eq!(t[0].len(), 100);
        // Adjacent pages in the trace stay adjacent...
        assert_eq!(t[1].start(), t[0].page_align().unwrap().end());
        // ...separate clusters do not touch.
        assert!(
            !t[2]
                .page_align()
                .unwrap()
                .touches(&t[0].page_align().unwrap())
        );
        assert!(Layout::map(&recs, page).is_err());
    }
}
