//! The hint table: a set-associative software TLB laid out like a page
//! table, so that hits on many live regions stay cheap.
//!
//! **What it is for.** After this thread's deferred table (`deferred.rs`),
//! the hit path asks the hint table which slot last served a request
//! starting at this page. The answer is only a guess: the hit path checks
//! the slot (LIVE, covers the request, access suffices) and takes its
//! reference with one CAS that fails if the slot was recycled, exactly as
//! before this table existed (`Slot::try_acquire`). So nothing here is
//! part of the correctness argument — a wrong, stale or torn-looking
//! answer costs a trip through the index, never a wrong hit — and every
//! access is a Relaxed load or store of one `u64`.
//!
//! **Why this shape** (issue 17, "hits on many live regions"). The first
//! table was direct-mapped and indexed by a multiplicative hash of the
//! page. With 10,000 live 64 KiB buffers visited round-robin every hit
//! then loaded a hint from a random cache line of a 256 KiB table before
//! it could even find the slot: one dependent cache miss per hit, which
//! made the hit ~50 ns of CPU against UCX's ~37 (UCX walks a radix page
//! table, `ucs_pgtable`, whose nodes a round-robin sweep visits in address
//! order, so the hardware prefetcher has them ready). Indexing the same
//! table by the plain page number cut that to ~36 ns — but a plain page
//! index collides badly for power-of-two strides (buffers 1 MiB apart all
//! land in 1/256 of the table), and a direct-mapped table evicts on every
//! collision, which a round-robin sweep turns into a miss on every visit.
//!
//! So: **buckets of [`WAYS`] entries, one cache line each; bucket =
//! page / [`WAYS`], plus a per-window offset**. Within a *window* of
//! `buckets × WAYS` contiguous pages (128 MiB for the default 16,384
//! regions) the mapping is the identity, like a page table: every page of
//! the window has its own entry, neighbouring pages share a line, and a
//! sweep in address order walks the table in order. Windows are placed at
//! an offset given by a multiplicative hash of the window number, so
//! distant working sets do not pile onto the same buckets; power-of-two
//! strides spread across buckets through that offset and the ways. Each
//! entry holds a *tag* (the low 32 bits of the page number) and the slot
//! (+1; 0 = empty): a lookup scans one line for its tag. A tag can only
//! falsely match a page 2³² pages (16 TiB) away in the same bucket; the
//! slot check then fails and the get takes the index path.
//!
//! **Replacement** (on the miss path only, in [`Hints::remember`]): the
//! entry with the same tag, else an empty one or one whose slot is no
//! longer LIVE, else the way the tag picks. Two threads remembering the
//! same page at once may leave it in two ways; lookups take the first,
//! which is checked like any other guess.
//!
//! The hit path runs through here, so the module holds to the hit path's
//! rules: no indexing, no `unwrap`/`expect`/`panic!`.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

/// Entries per bucket: one 64-byte cache line of `u64`s.
pub(super) const WAYS: usize = 8;
const WAY_BITS: u32 = WAYS.trailing_zeros();

/// One bucket: `WAYS` entries of `(tag << 32) | (slot + 1)`, 0 = empty.
#[repr(align(64))]
#[derive(Debug)]
struct Bucket([AtomicU64; WAYS]);

/// The hint table; see the module docs.
#[derive(Debug)]
pub(super) struct Hints {
    buckets: Box<[Bucket]>,
    /// `buckets.len() - 1` (a power of two minus one).
    mask: u64,
    /// log2 of the pages in a window (`buckets.len() × WAYS`).
    window_shift: u32,
}

impl Hints {
    /// A table of at least `entries` entries (rounded up to a power of
    /// two, at least one bucket).
    pub(super) fn new(entries: usize) -> Self {
        let buckets = (entries / WAYS).max(1).next_power_of_two();
        Self {
            buckets: (0..buckets)
                .map(|_| Bucket(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            mask: buckets as u64 - 1,
            window_shift: buckets.trailing_zeros() + WAY_BITS,
        }
    }

    /// The bucket of page number `page`: the identity within a window,
    /// shifted by a hash of the window number.
    #[inline(always)]
    fn bucket(&self, page: u64) -> Option<&Bucket> {
        let window = page.wrapping_shr(self.window_shift);
        let offset = window.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_shr(32);
        let b = page.wrapping_shr(WAY_BITS).wrapping_add(offset) & self.mask;
        self.buckets.get(b as usize)
    }

    /// The tag of page number `page`, in an entry's high half.
    #[inline(always)]
    fn tag(page: u64) -> u64 {
        page.wrapping_shl(32)
    }

    /// The slot last remembered for requests starting at page number
    /// `page`, if any (a guess: the caller checks the slot).
    #[inline(always)]
    pub(super) fn lookup(&self, page: u64) -> Option<u32> {
        let tag = Self::tag(page);
        let b = self.bucket(page)?;
        let hit = b.0.iter().map(|e| e.load(Relaxed)).find(|&v| (v ^ tag) >> 32 == 0)?;
        (hit as u32).checked_sub(1)
    }

    /// Remember that `slot` served a request starting at page number
    /// `page`, replacing (in this order) the page's own entry, an empty
    /// one, one whose slot `dead` says is no longer LIVE, or the way the
    /// page's number picks.
    pub(super) fn remember(&self, page: u64, slot: u32, dead: impl Fn(u32) -> bool) {
        let Some(b) = self.bucket(page) else {
            return;
        };
        let tag = Self::tag(page);
        let new = tag | u64::from(slot.wrapping_add(1));
        let mut free = None;
        for e in &b.0 {
            let v = e.load(Relaxed);
            if v & !0xFFFF_FFFF == tag && v as u32 != 0 {
                e.store(new, Relaxed);
                return;
            }
            if free.is_none() && (v as u32 == 0 || dead((v as u32).wrapping_sub(1))) {
                free = Some(e);
            }
        }
        let way = (page as usize) % WAYS;
        if let Some(e) = free.or_else(|| b.0.get(way)) {
            e.store(new, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every page of a window has its own entry: a contiguous working set
    /// as large as the table is remembered whole, whatever the stride.
    #[test]
    fn a_window_never_evicts() {
        let h = Hints::new(1 << 10);
        // A window-aligned page number.
        let base = (0x7f12_3456u64 << 10) & !((1u64 << h.window_shift) - 1);
        for stride in [1u64, 2, 17, 64, 256] {
            let pages: Vec<u64> = (0..(1 << 10) / stride).map(|i| base + i * stride).collect();
            for (i, &p) in pages.iter().enumerate() {
                h.remember(p, i as u32, |_| false);
            }
            for (i, &p) in pages.iter().enumerate() {
                assert_eq!(h.lookup(p), Some(i as u32), "stride {stride}, page {p:#x}");
            }
        }
    }

    /// Pages 2³² apart share a tag; at worst a lookup names the other
    /// page's slot (which the hit path then rejects), never garbage.
    #[test]
    fn lookups_only_return_remembered_slots() {
        let h = Hints::new(64);
        assert_eq!(h.lookup(5), None);
        h.remember(5, 7, |_| false);
        assert_eq!(h.lookup(5), Some(7));
        h.remember(5, 9, |_| false);
        assert_eq!(h.lookup(5), Some(9), "the page's own entry is replaced");
        let far = 5 + (1u64 << 32);
        if let Some(s) = h.lookup(far) {
            assert_eq!(s, 9);
        }
        // A full bucket: the dead entry goes first.
        let h = Hints::new(WAYS);
        for p in 0..WAYS as u64 {
            h.remember(p, p as u32, |_| false);
        }
        h.remember(100, 100, |s| s == 3);
        assert_eq!(h.lookup(3), None);
        assert_eq!(h.lookup(100), Some(100));
        for p in (0..WAYS as u64).filter(|&p| p != 3) {
            assert_eq!(h.lookup(p), Some(p as u32));
        }
    }
}
