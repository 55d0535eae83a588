//! Built-in workloads. **Synthetic**: generated here from a fixed seed to
//! resemble common MPI buffer patterns, not recorded from applications.
//! Real traces come from the PMPI library (`REGCACHE_TRACE_DIR`).
//!
//! Addresses imitate glibc on x86-64: allocations at or above the mmap
//! threshold (128 KiB) get their own mapping in the mmap area and are
//! unmapped on free (a `U` record); smaller ones come from the heap, and
//! freed heap memory is reused without unmapping.

use crate::trace::{Kind, Record, Trace};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use umn::AddrRange;

const MMAP_THRESHOLD: u64 = 128 << 10;
const PAGE: u64 = 4096;

/// A toy allocator with glibc's shape: a bump heap with exact-size free
/// lists, and an mmap area that hands out the lowest free gap (so a freed
/// mapping's address is reused by the next allocation of that size, as the
/// kernel's top-down allocator tends to do).
struct Alloc {
    heap_top: u64,
    heap_free: BTreeMap<u64, Vec<u64>>,
    mmaps: BTreeMap<u64, u64>,
    records: Vec<Record>,
}

impl Alloc {
    fn new() -> Self {
        Self {
            heap_top: 0x5555_5555_0000,
            heap_free: BTreeMap::new(),
            mmaps: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    fn malloc(&mut self, len: u64) -> u64 {
        if len >= MMAP_THRESHOLD {
            let size = len.next_multiple_of(PAGE) + PAGE;
            // Lowest gap at or above the mmap base that fits.
            let mut at = 0x7f00_0000_0000u64;
            for (&s, &l) in &self.mmaps {
                if s >= at + size {
                    break;
                }
                at = at.max(s + l);
            }
            self.mmaps.insert(at, size);
            at + 16 // glibc's chunk header
        } else {
            let size = (len + 16).next_multiple_of(16);
            if let Some(a) = self.heap_free.get_mut(&size).and_then(|v| v.pop()) {
                return a;
            }
            let a = self.heap_top;
            self.heap_top += size;
            a
        }
    }

    fn free(&mut self, addr: u64, len: u64) {
        if len >= MMAP_THRESHOLD {
            let base = addr - 16;
            let size = self.mmaps.remove(&base).expect("allocated");
            self.records.push(Record {
                kind: Kind::Unmap,
                range: AddrRange::from_start_len(base, size).unwrap(),
            });
        } else {
            self.heap_free
                .entry((len + 16).next_multiple_of(16))
                .or_default()
                .push(addr);
        }
    }

    fn acquire(&mut self, addr: u64, len: u64) {
        self.records.push(Record {
            kind: Kind::Acquire,
            range: AddrRange::from_start_len(addr, len).unwrap(),
        });
    }
}

/// Ping-pong with a rotating set of 16 long-lived buffers (64 KiB–2 MiB):
/// each message picks the next buffer of the rotation, and now and then a
/// random one. 20,000 messages.
pub fn pingpong(scale: Scale) -> Trace {
    let mut rng = StdRng::seed_from_u64(1);
    let mut a = Alloc::new();
    let bufs: Vec<(u64, u64)> = (0..16)
        .map(|_| {
            let len = 64 << (10 + rng.random_range(0..6)); // 64 KiB .. 2 MiB
            (a.malloc(len), len)
        })
        .collect();
    for i in 0..scale.of(20_000) {
        let (addr, len) = if rng.random_ratio(1, 10) {
            bufs[rng.random_range(0..bufs.len())]
        } else {
            bufs[i % bufs.len()]
        };
        a.acquire(addr, len);
    }
    finish("builtin:pingpong", a)
}

/// Halo exchange, 2-D, with per-iteration malloc/free of the halo buffers
/// (as codes that allocate exchange buffers inside the time-step loop do):
/// 4 faces of 256 KiB (mmap'd, unmapped on free) and 4 corners of 8 KiB
/// (heap, reused), 2,000 iterations, plus a long-lived 1 MiB field buffer
/// sent every 10 iterations.
pub fn halo(scale: Scale) -> Trace {
    let mut a = Alloc::new();
    let field = a.malloc(1 << 20);
    for it in 0..scale.of(2_000) {
        let faces: Vec<u64> = (0..4).map(|_| a.malloc(256 << 10)).collect();
        let corners: Vec<u64> = (0..4).map(|_| a.malloc(8 << 10)).collect();
        for &f in &faces {
            a.acquire(f, 256 << 10);
        }
        for &c in &corners {
            a.acquire(c, 8 << 10);
        }
        if it % 10 == 0 {
            a.acquire(field, 1 << 20);
        }
        for f in faces {
            a.free(f, 256 << 10);
        }
        for c in corners {
            a.free(c, 8 << 10);
        }
    }
    finish("builtin:halo", a)
}

/// A collective with temporary buffers: 1,000 allreduce calls, each on one
/// of 4 long-lived user buffers (1–8 MiB) with a temporary buffer of the
/// same size malloc'd and freed inside the call (as reduction algorithms
/// do), registered in 4 pipeline chunks.
pub fn collective(scale: Scale) -> Trace {
    let mut rng = StdRng::seed_from_u64(3);
    let mut a = Alloc::new();
    let users: Vec<(u64, u64)> = (0..4)
        .map(|i| (1u64 << (20 + i), 0))
        .map(|(len, _)| (a.malloc(len), len))
        .collect();
    for _ in 0..scale.of(1_000) {
        let (ua, ul) = users[rng.random_range(0..users.len())];
        let tmp = a.malloc(ul);
        let chunk = ul / 4;
        for c in 0..4 {
            a.acquire(ua + c * chunk, chunk);
            a.acquire(tmp + c * chunk, chunk);
        }
        a.free(tmp, ul);
    }
    finish("builtin:collective", a)
}

/// The order in which [`many_regions`] visits its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Buffer 0, 1, …, n−1, 0, 1, …: every acquire a different region,
    /// each region reused once per round (the worst case for a small
    /// lookup cache, the best for a prefetcher).
    RoundRobin,
    /// A uniformly random buffer each time (seeded): no locality at all.
    Random,
}

/// Hits on many live regions (issue 17, item 6): `n` distinct 64 KiB
/// buffers, each page-aligned with a free page after it (so no two merge
/// or touch), acquired `acquires` times in `order`. After the first
/// acquire of each buffer every acquire is a hit in any cache holding `n`
/// regions: the workload measures the hit path's lookup among `n` live
/// regions, which a hot-buffer loop never does.
pub fn many_regions(n: usize, order: Order, acquires: usize) -> Trace {
    const LEN: u64 = 64 << 10;
    let base = 0x7f00_0000_0000u64;
    let addr = |i: usize| base + i as u64 * (LEN + PAGE);
    let mut rng = StdRng::seed_from_u64(6);
    let records = (0..acquires)
        .map(|k| {
            let i = match order {
                Order::RoundRobin => k % n,
                Order::Random => rng.random_range(0..n),
            };
            Record {
                kind: Kind::Acquire,
                range: AddrRange::from_start_len(addr(i), LEN).unwrap(),
            }
        })
        .collect();
    let tag = match order {
        Order::RoundRobin => "rr",
        Order::Random => "random",
    };
    Trace {
        name: format!("builtin:many-{tag}"),
        ranks: BTreeMap::from([(0, records)]),
    }
}

fn finish(name: &str, a: Alloc) -> Trace {
    Trace {
        name: name.into(),
        ranks: BTreeMap::from([(0, a.records)]),
    }
}

/// How many iterations the built-in workloads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The documented iteration counts.
    Full,
    /// A tenth of them (`--quick`): the same patterns, for slow machines
    /// such as the emulated SoftRoCE VM.
    Quick,
}

impl Scale {
    fn of(self, n: usize) -> usize {
        match self {
            Scale::Full => n,
            Scale::Quick => n / 10,
        }
    }
}

/// Every built-in workload: the three MPI patterns, then 10,000 live
/// 64 KiB regions hit round-robin and in random order, 10⁶ acquires each
/// (`many-rr`, `many-random`; with [`Scale::Quick`], 1,000 regions and
/// 10⁵ acquires, so that a quick run pins 64 MiB, not 640 MiB).
pub fn all(scale: Scale) -> Vec<Trace> {
    NAMES.iter().filter_map(|n| by_name(n, scale)).collect()
}

/// The built-in workloads' names (their traces are named `builtin:NAME`),
/// in the order [`all`] runs them.
pub const NAMES: [&str; 5] = ["pingpong", "halo", "collective", "many-rr", "many-random"];

/// The built-in workload `name` (one of [`NAMES`]), generated only when
/// asked for.
pub fn by_name(name: &str, scale: Scale) -> Option<Trace> {
    Some(match name {
        "pingpong" => pingpong(scale),
        "halo" => halo(scale),
        "collective" => collective(scale),
        "many-rr" => many_regions(scale.of(10_000), Order::RoundRobin, scale.of(1_000_000)),
        "many-random" => many_regions(scale.of(10_000), Order::Random, scale.of(1_000_000)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The many-regions workload: `n` distinct 64 KiB buffers, no two of
    /// which overlap or touch once widened to pages (so no cache merges
    /// them), visited in the order asked for.
    #[test]
    fn many_regions_buffers_are_separate() {
        for order in [Order::RoundRobin, Order::Random] {
            let t = many_regions(100, order, 1000);
            let recs = &t.ranks[&0];
            assert_eq!(recs.len(), 1000);
            assert!(
                recs.iter()
                    .all(|r| r.kind == Kind::Acquire && r.range.len() == 64 << 10)
            );
            let mut starts: Vec<AddrRange> = recs.iter().map(|r| r.range).collect();
            starts.sort();
            starts.dedup();
            for w in starts.windows(2) {
                let (a, b) = (w[0].page_align().unwrap(), w[1].page_align().unwrap());
                assert!(!a.touches(&b), "{a} and {b} touch");
            }
            if order == Order::RoundRobin {
                assert_eq!(starts.len(), 100);
                assert_eq!(recs[0].range, recs[100].range);
                assert_eq!(t.name, "builtin:many-rr");
            } else {
                assert_eq!(t.name, "builtin:many-random");
            }
        }
        assert!(NAMES.iter().all(|n| by_name(n, Scale::Quick).is_some()));
        assert!(by_name("nope", Scale::Quick).is_none());
    }
}
