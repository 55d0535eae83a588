//! shm_signal descriptors written by a hostile peer: a doorbell pair in a
//! memfd segment, both ends attached in this process, and the input
//! scribbling the 192-byte descriptor (magic, version, the irq records'
//! `dirty`/`enabled`/`pending` words and counters) between notifies,
//! takes, zero-timeout waits, stats, and attaches at arbitrary offsets.
//!
//! Oracle: no crash, hang or panic; an attach outside the segment, or to
//! a descriptor whose magic or version is wrong, is an error.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use regcache_transport::{Segment, ShmSignal, Side, SpinPolicy};
use std::sync::Arc;
use std::time::Duration;

const DESC: usize = 192;

#[derive(Arbitrary, Debug)]
enum Op {
    Scribble { off: u8, bytes: Vec<u8> },
    Notify { north: bool },
    TryTake { north: bool },
    Wait { north: bool, spin: u8 },
    Stats { north: bool },
    Attach { offset: u32, north: bool },
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let seg = Arc::new(Segment::memfd(8192).expect("memfd"));
    let base = seg.as_ptr();
    let n = ShmSignal::create(seg.clone(), 0, Side::North).expect("create");
    let s = ShmSignal::attach(seg.clone(), 0, Side::South).expect("attach");
    let end = |north: bool| if north { &n } else { &s };
    let mut steps = 0;
    while let Ok(op) = u.arbitrary::<Op>() {
        steps += 1;
        if steps > 64 {
            break;
        }
        match op {
            Op::Scribble { off, bytes } => {
                let off = off as usize % DESC;
                for (i, b) in bytes.iter().take(DESC - off).enumerate() {
                    // SAFETY: inside the mapped segment.
                    unsafe { base.add(off + i).write_volatile(*b) };
                }
            }
            Op::Notify { north } => {
                let _ = end(north).notify();
            }
            Op::TryTake { north } => {
                let _ = end(north).try_take();
            }
            Op::Wait { north, spin } => {
                let _ = end(north).wait(Some(Duration::ZERO));
                let w = ShmSignal::attach(
                    seg.clone(),
                    0,
                    if north { Side::North } else { Side::South },
                );
                if let Ok(w) = w {
                    let _ = w
                        .with_spin(SpinPolicy { iters: spin as u32 })
                        .wait(Some(Duration::from_micros(10)));
                }
            }
            Op::Stats { north } => {
                let _ = n.stats(if north { Side::North } else { Side::South });
            }
            Op::Attach { offset, north } => {
                let side = if north { Side::North } else { Side::South };
                let r = ShmSignal::attach(seg.clone(), offset as usize, side);
                if offset as usize + DESC > seg.len() {
                    assert!(r.is_err(), "attach past the segment's end accepted");
                }
                if let Ok(a) = r {
                    let _ = a.notify();
                    let _ = a.try_take();
                }
            }
        }
    }
});
