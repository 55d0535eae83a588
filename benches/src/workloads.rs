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

/// Every built-in workload.
pub fn all(scale: Scale) -> Vec<Trace> {
    vec![pingpong(scale), halo(scale), collective(scale)]
}
