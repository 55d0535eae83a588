//! The sender side of keyed DMA against a binding slot scribbled by a
//! hostile peer. A send never delivers to a binding of its own process,
//! so the receiver is a child process (this binary again, in the
//! receiver role chosen by `REGCACHE_FUZZ_DMA_RX`): it binds four
//! one-page buffers between canary pages and then only waits. Before
//! every input the parent puts the slot back as the child bound it; the
//! input then scribbles the slot (all but its owner pid, which would aim
//! the copies at another process) between sends of 1 byte to 16 KiB and
//! small sends of 1 to 32 bytes. Sends of up to 4 KiB take the eager path
//! (layout version 4: inline in the descriptor up to 24 bytes, else the
//! bounce area) on the sender's cached validation of the binding, which
//! outlives an input (the slot is put back as bound, same generation);
//! larger ones a single copy.
//!
//! Oracle: no crash, hang or panic in the sender; after every step the
//! child's canary pages (read with `process_vm_readv`) are untouched —
//! whatever the slot says, the sender writes only into the registered
//! buffers; a send that succeeds copies at most what was sent.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use regcache_fuzz::Arena;
use regcache_transport::DmaKey;
use regcache_transport::dma::{Config, DmaBuffer, Registry};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use umn::AddrRange;

const NBUF: usize = 4;
const ROLE: &str = "REGCACHE_FUZZ_DMA_RX";

struct Peer {
    reg: Registry,
    key: DmaKey,
    child: Child,
    /// Canary pages in the child: (address, length).
    canaries: Vec<(u64, usize)>,
    /// The slot as the child bound it.
    pristine: Vec<u8>,
    /// Where the slot is in our mapping of the registry (found once: a
    /// scribbled key or state hides it from `slot_bytes`).
    slot: usize,
}

static PEER: OnceLock<Mutex<Peer>> = OnceLock::new();

/// The receiver role: bind, report, wait for stdin to close.
fn receiver(name: &str) -> ! {
    let reg = Registry::open(name).expect("open registry");
    let place = regcache_transport::Segment::memfd(4096).expect("memfd");
    let key = DmaKey::from_fd(place.raw_fd(), 0).expect("key");
    let arena = Arena::new(2 * NBUF + 1);
    let page = arena.len() / (2 * NBUF + 1);
    let whole = AddrRange::from_buffer(arena.at(page), (2 * NBUF - 1) * page).unwrap();
    let bufs: Vec<DmaBuffer> = (0..NBUF)
        .map(|i| {
            DmaBuffer::new(vec![
                AddrRange::from_buffer(arena.at((2 * i + 1) * page), page).unwrap(),
            ])
        })
        .collect();
    // SAFETY: the arena lives until this process exits.
    let rx = unsafe { reg.bind(key, &[whole], &bufs) }.expect("bind");
    let canaries: Vec<String> = (0..=NBUF)
        .map(|i| format!("{:x}", arena.at(2 * i * page) as u64))
        .collect();
    println!(
        "{} {} {} {} {}",
        key.dev,
        key.ino,
        key.offset,
        page,
        canaries.join(",")
    );
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(rx);
    std::process::exit(0);
}

fn start() -> Peer {
    let name = format!("regcache-fuzz-dma-send-{}", std::process::id());
    let config = Config {
        cma_min_bytes: 0,
        restock_wait: Duration::ZERO,
        ..Config::default()
    };
    let reg = Registry::create_with(&name, config).expect("registry");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, &name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the receiver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the receiver's line");
    Registry::unlink(&name).expect("unlink");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 5, "receiver said {line:?}");
    let key = DmaKey {
        dev: f[0].parse().unwrap(),
        ino: f[1].parse().unwrap(),
        offset: f[2].parse().unwrap(),
    };
    let page: usize = f[3].parse().unwrap();
    let canaries = f[4]
        .split(',')
        .map(|a| (u64::from_str_radix(a, 16).unwrap(), page))
        .collect();
    let (p, len) = reg.slot_bytes(key).expect("the child's slot");
    // SAFETY: the slot is mapped for `len` bytes.
    let pristine = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
    Peer {
        reg,
        key,
        child,
        canaries,
        pristine,
        slot: p as usize,
    }
}

/// Read `len` bytes at `addr` in process `pid`.
fn peek(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: reads into our own buffer of `len` bytes.
    let n = unsafe { libc::process_vm_readv(pid as i32, &local, 1, &remote, 1, 0) };
    assert_eq!(
        n,
        len as isize,
        "process_vm_readv: {}",
        std::io::Error::last_os_error()
    );
    buf
}

#[derive(Arbitrary, Debug)]
enum Op {
    Scribble {
        off: u16,
        bytes: Vec<u8>,
    },
    Word {
        at: u16,
        value: u64,
    },
    Send {
        a: u16,
        b: u16,
    },
    /// 1 to 32 bytes: inline (up to 24) or just past it.
    Small {
        n: u8,
    },
}

fuzz_target!(
    init: {
        if let Ok(name) = std::env::var(ROLE) {
            receiver(&name);
        }
        let _ = PEER.set(Mutex::new(start()));
    },
    |data: &[u8]| {
        let mut peer = PEER.get().unwrap().lock().unwrap();
        let Peer { reg, key, child, canaries, pristine, slot } = &mut *peer;
        let pid = child.id();
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the receiver exited: {st}");
        }
        let (slot, len) = (*slot as *mut u8, pristine.len());
        // SAFETY: the slot is mapped for `len` bytes; the child is idle.
        unsafe { std::ptr::copy_nonoverlapping(pristine.as_ptr(), slot, len) };
        let mut u = Unstructured::new(data);
        let mut steps = 0;
        let mut scribbled = false;
        while let Ok(op) = u.arbitrary::<Op>() {
            steps += 1;
            if steps > 16 {
                break;
            }
            match op {
                Op::Scribble { off, bytes } => {
                    scribbled = true;
                    let off = off as usize % len;
                    for (i, b) in bytes.iter().enumerate().take(len - off) {
                        if (4..8).contains(&(off + i)) {
                            continue; // the owner pid
                        }
                        // SAFETY: inside the mapped slot.
                        unsafe { slot.add(off + i).write_volatile(*b) };
                    }
                }
                Op::Word { at, value } => {
                    let at = (at as usize * 8) % len;
                    if at == 0 {
                        continue;
                    }
                    scribbled = true;
                    // SAFETY: 8-aligned, inside the slot.
                    unsafe { slot.add(at).cast::<u64>().write_volatile(value) };
                }
                Op::Small { n } => {
                    let n = n as usize % 32 + 1;
                    match reg.send(*key, &[&vec![0x69u8; n]]) {
                        Ok(r) => assert!(r.copied <= n as u64, "copied {} of {n}", r.copied),
                        Err(e) if !scribbled && steps <= 4 => {
                            panic!("a send to the slot as bound failed: {e}")
                        }
                        Err(_) => {}
                    }
                }
                Op::Send { a, b } => {
                    let (a, b) = (a as usize % 8192 + 1, b as usize % 8192);
                    let x = vec![0x5au8; a];
                    let y = vec![0x3cu8; b];
                    match reg.send(*key, &[&x, &y]) {
                        Ok(r) => {
                            assert!(r.copied <= (a + b) as u64, "copied {} of {}", r.copied, a + b)
                        }
                        // Four descriptors, never drained: the fifth
                        // send finds none free.
                        Err(e) if !scribbled && steps <= 4 => {
                            panic!("a send to the slot as bound failed: {e}")
                        }
                        Err(_) => {}
                    }
                }
            }
            for &(addr, n) in canaries.iter() {
                assert!(
                    peek(pid, addr, n).iter().all(|&c| c == 0xa5),
                    "the sender wrote into the receiver's canary page at {addr:#x}"
                );
            }
        }
    }
);
