//! Keyed-DMA shared records written by a hostile peer: a receiver binds
//! four buffers (with canary pages around them) in a fresh registry, then
//! the input scribbles arbitrary bytes over its binding slot (state
//! words, ranges, descriptors, their sections and assist-job records,
//! sender table, doorbells; all but the owner pid, which would make the
//! slot another process's) between receiver calls: receive, restock of
//! any index, restock requests, a zero-timeout wait, the in-flight
//! senders, and finally unbind.
//!
//! Oracle: no crash, hang or panic; every delivery names one of the four
//! buffers and at most its capacity; the canaries are untouched (nothing
//! was written outside the registered buffers); a send to our own
//! binding is refused.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use regcache_fuzz::Arena;
use regcache_transport::dma::{Config, DmaBuffer, Registry};
use regcache_transport::{DmaKey, Segment};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use umn::AddrRange;

/// Buffers bound, each one page, between canary pages: arena pages 1, 3,
/// 5, 7 (canaries 0, 2, 4, 6, 8).
const NBUF: u32 = 4;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Write `bytes` at `off` (mod the slot size) in our slot.
    Scribble {
        off: u16,
        bytes: Vec<u8>,
    },
    /// Write a u64 at an 8-byte aligned offset (descriptor words).
    Word {
        at: u16,
        value: u64,
    },
    TryRecv,
    Restock {
        index: u32,
    },
    RestockRequested,
    Wait,
    SendersInFlight,
    SendToSelf {
        len: u8,
    },
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let name = format!(
        "regcache-fuzz-dma-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let config = Config {
        cma_min_bytes: 0,
        restock_wait: Duration::ZERO,
        unbind_wait: Duration::from_millis(1),
        ..Config::default()
    };
    let reg = Registry::create_with(&name, config).expect("registry");
    Registry::unlink(&name).expect("unlink");
    let place = Segment::memfd(4096).expect("memfd");
    let key = DmaKey::from_fd(place.raw_fd(), 0).expect("key");
    let arena = Arena::new(2 * NBUF as usize + 1);
    let page = arena.len() / (2 * NBUF as usize + 1);
    let canary = |i: usize| arena.at(2 * i * page);
    let buf = |i: usize| AddrRange::from_buffer(arena.at((2 * i + 1) * page), page).unwrap();
    let whole = AddrRange::from_buffer(arena.at(page), (2 * NBUF as usize - 1) * page).unwrap();
    let bufs: Vec<DmaBuffer> = (0..NBUF as usize)
        .map(|i| DmaBuffer::new(vec![buf(i)]))
        .collect();
    // SAFETY: the arena outlives the receiver (unbound below, before the
    // arena drops) and is not unmapped meanwhile.
    let mut rx = unsafe { reg.bind(key, &[whole], &bufs) }.expect("bind");
    let (slot, slot_len) = reg.slot_bytes(key).expect("our slot");
    let mut steps = 0;
    while let Ok(op) = u.arbitrary::<Op>() {
        steps += 1;
        if steps > 32 {
            break;
        }
        match op {
            Op::Scribble { off, bytes } => {
                let off = off as usize % slot_len;
                for (i, b) in bytes.iter().enumerate().take(slot_len - off) {
                    // The owner pid (bytes 4..8) stays ours.
                    if (4..8).contains(&(off + i)) {
                        continue;
                    }
                    // SAFETY: inside the mapped slot; a peer's racing
                    // writes are what this simulates.
                    unsafe { slot.add(off + i).write_volatile(*b) };
                }
            }
            Op::Word { at, value } => {
                let at = (at as usize * 8) % slot_len;
                if at == 0 {
                    continue; // state and pid
                }
                // SAFETY: 8-aligned, inside the slot.
                unsafe { slot.add(at).cast::<u64>().write_volatile(value) };
            }
            Op::TryRecv => {
                if let Ok(Some(d)) = rx.try_recv() {
                    assert!(
                        d.index < NBUF,
                        "delivery names buffer {} of {NBUF}",
                        d.index
                    );
                    assert!(
                        d.len <= page as u64,
                        "delivery of {} bytes > capacity {page}",
                        d.len
                    );
                }
            }
            Op::Restock { index } => {
                let _ = rx.restock(index);
            }
            Op::RestockRequested => {
                let _ = rx.restock_requested();
            }
            Op::Wait => {
                let _ = rx.wait(Some(Duration::ZERO));
            }
            Op::SendersInFlight => {
                let _ = rx.senders_in_flight();
            }
            Op::SendToSelf { len } => {
                let msg = vec![0x5au8; len as usize + 1];
                assert!(
                    reg.send(key, &[&msg]).is_err(),
                    "a send to our own binding was accepted"
                );
            }
        }
        for i in 0..=NBUF as usize {
            // SAFETY: canary pages are mapped and only read here.
            let c = unsafe { std::slice::from_raw_parts(canary(i), page) };
            assert!(c.iter().all(|&b| b == 0xa5), "canary page {i} was written");
        }
    }
    let _ = rx.unbind();
    drop(reg);
});
