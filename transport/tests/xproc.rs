//! Cross-process tests: real fork/exec (the test binary re-executes
//! itself), real shared memory, real futexes, real `process_vm_writev`.
//! Tests assert behaviour (bytes, counters, errors), never timings;
//! timeouts only turn a hang into a failure.

mod common;

use common::*;
use regcache_transport::dma::{Config, CopyPath, DmaBuffer, Receiver, Registry};
use regcache_transport::shm_signal::IrqStats;
use regcache_transport::{DmaKey, Error, Segment, ShmSignal, Side, SpinPolicy, Wake};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use umn::AddrRange;

const LONG: Option<Duration> = Some(Duration::from_secs(60));

/// Not a test: the entry point of child roles, run only by the tests
/// themselves (`--include-ignored --exact child_dispatch`, `RC_ROLE` set).
#[test]
#[ignore = "child-process entry point, started by the cross-process tests"]
fn child_dispatch() {
    let Ok(role) = std::env::var("RC_ROLE") else {
        return;
    };
    match role.as_str() {
        "sig_pong" => role_sig_pong(),
        "sig_sleep_once" => role_sig_sleep_once(),
        "key" => role_key(),
        "rx" => role_rx(),
        "tx_nocap" => role_tx_nocap(),
        "hostile" => role_hostile(),
        "rx_survivor" => role_rx_survivor(),
        "rx_die" => role_rx_die(),
        "tx_nodump" => role_tx_nodump(),
        "tx_stuck" => role_tx_stuck(),
        "tx_cmd" => role_tx_cmd(),
        "idle" => role_idle(),
        other => panic!("unknown role {other}"),
    }
}

fn inherited_segment() -> Arc<Segment> {
    let fd: i32 = env("RC_FD").parse().unwrap();
    // SAFETY: the parent left this memfd open across exec for us.
    Arc::new(Segment::map_fd(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap())
}

fn mailbox(seg: &Segment, off: usize) -> &AtomicU64 {
    assert!(off + 8 <= seg.len() && off % 8 == 0);
    // SAFETY: in bounds, aligned, shared memory accessed only atomically.
    unsafe { &*seg.as_ptr().add(off).cast::<AtomicU64>() }
}

// ---------------------------------------------------------------- shm_signal

fn role_sig_pong() {
    let seg = inherited_segment();
    let sig = ShmSignal::attach(seg.clone(), 0, Side::South)
        .unwrap()
        .with_spin(SpinPolicy { iters: 0 });
    let rounds: u64 = env("RC_ROUNDS").parse().unwrap();
    let (ping, pong) = (mailbox(&seg, 256), mailbox(&seg, 264));
    tell("READY");
    let mut next = 1;
    while next <= rounds {
        assert_eq!(sig.wait(LONG), Wake::Signalled, "lost wake-up at {next}");
        // Drain: the doorbell carries no data, the mailbox does.
        while ping.load(Ordering::Acquire) >= next {
            pong.store(next, Ordering::Release);
            sig.notify();
            next += 1;
        }
    }
    tell("DONE");
}

#[test]
fn shm_signal_ping_pong_across_processes_counts_wakeups() {
    let seg = Arc::new(Segment::memfd(4096).unwrap());
    let sig = ShmSignal::create(seg.clone(), 0, Side::North).unwrap();
    let rounds = 2000u64;
    let mut child = spawn(
        "sig_pong",
        &[
            ("RC_FD", seg.raw_fd().to_string()),
            ("RC_ROUNDS", rounds.to_string()),
        ],
    );
    child.expect("READY");
    let (ping, pong) = (mailbox(&seg, 256), mailbox(&seg, 264));
    for i in 1..=rounds {
        ping.store(i, Ordering::Release);
        sig.notify();
        while pong.load(Ordering::Acquire) < i {
            assert_eq!(sig.wait(LONG), Wake::Signalled, "lost wake-up at {i}");
        }
        assert_eq!(pong.load(Ordering::Acquire), i);
    }
    child.expect("DONE");
    child.finish();
    let south: IrqStats = sig.stats(Side::South);
    let north: IrqStats = sig.stats(Side::North);
    eprintln!("south {south:?}\nnorth {north:?}");
    assert_eq!(south.notifies, rounds);
    assert_eq!(north.notifies, rounds);
    // The child never spins, so it really slept and was really woken.
    assert!(south.sleeps >= 1 && south.wakes_sent >= 1, "{south:?}");
    // At most one wake-up in flight per direction.
    for s in [south, north] {
        assert!(s.wakes_sent <= s.wakes_taken + 1, "{s:?}");
        assert!(s.wakes_sent <= s.notifies, "{s:?}");
    }
}

fn role_sig_sleep_once() {
    let seg = inherited_segment();
    let sig = ShmSignal::attach(seg, 0, Side::South)
        .unwrap()
        .with_spin(SpinPolicy { iters: 0 });
    tell("READY");
    assert_eq!(sig.wait(LONG), Wake::Signalled);
    tell("WOKE");
    assert_eq!(hear(), "BYE");
}

#[test]
fn shm_signal_suppresses_redundant_wakeups() {
    let seg = Arc::new(Segment::memfd(4096).unwrap());
    let sig = ShmSignal::create(seg.clone(), 0, Side::North).unwrap();
    let mut child = spawn("sig_sleep_once", &[("RC_FD", seg.raw_fd().to_string())]);
    child.expect("READY");
    // Wait until the child has entered its sleep (behaviour, not time).
    while sig.stats(Side::South).sleeps == 0 {
        std::thread::yield_now();
    }
    for _ in 0..1000 {
        sig.notify();
    }
    child.expect("WOKE");
    let s = sig.stats(Side::South);
    child.say("BYE");
    child.finish();
    assert_eq!(s.notifies, 1000);
    assert_eq!(
        s.wakes_sent, 1,
        "999 redundant wake-ups must be suppressed: {s:?}"
    );
}

// ---------------------------------------------------------------- keys

fn role_key() {
    // Map something first so the segment lands elsewhere than in the parent.
    let _spacer = Segment::memfd(1 << 20).unwrap();
    let seg = inherited_segment();
    let off = 4096 + 123;
    let addr = seg.as_ptr() as u64 + off;
    let a = DmaKey::from_addr(addr).unwrap();
    let f = DmaKey::from_fd(seg.raw_fd(), off).unwrap();
    assert_eq!(a, f);
    tell(&format!(
        "KEY {} {} {} {:#x}",
        a.dev,
        a.ino,
        a.offset,
        seg.as_ptr() as u64
    ));
}

#[test]
fn dma_keys_match_across_processes_at_different_addresses() {
    let seg = Segment::memfd(16384).unwrap();
    let mut child = spawn("key", &[("RC_FD", seg.raw_fd().to_string())]);
    let l = child.expect("KEY");
    child.finish();
    let f: Vec<&str> = l.split(' ').collect();
    let theirs = DmaKey {
        dev: f[1].parse().unwrap(),
        ino: f[2].parse().unwrap(),
        offset: f[3].parse().unwrap(),
    };
    let their_base = u64::from_str_radix(f[4].trim_start_matches("0x"), 16).unwrap();
    assert_ne!(their_base, seg.as_ptr() as u64, "want different addresses");
    let ours = DmaKey::from_addr(seg.as_ptr() as u64 + 4096 + 123).unwrap();
    assert_eq!(ours, theirs);
    assert_eq!(ours, DmaKey::from_fd(seg.raw_fd(), 4096 + 123).unwrap());
    // Private memory names no shared location.
    let private = [0u8; 64];
    assert!(matches!(
        DmaKey::from_addr(private.as_ptr() as u64),
        Err(Error::NotShared { .. })
    ));
}

// ---------------------------------------------------------------- receiver role

/// `RC_LAYOUT`: descriptors separated by `;`, sections `off+len` by `,`,
/// offsets into one buffer of `RC_BUFSZ` bytes (default 64 KiB).
fn parse_layout(base: u64, s: &str) -> Vec<DmaBuffer> {
    s.split(';')
        .map(|d| {
            DmaBuffer::new(
                d.split(',')
                    .map(|sec| {
                        let (o, l) = sec.split_once('+').unwrap();
                        AddrRange::from_start_len(
                            base + o.parse::<u64>().unwrap(),
                            l.parse().unwrap(),
                        )
                        .unwrap()
                    })
                    .collect(),
            )
        })
        .collect()
}

fn verify(buf_base: *const u8, bufs: &[DmaBuffer], index: u32, len: u64, seed: u64) {
    let mut i = 0u64;
    for s in &bufs[index as usize].sections {
        let k = s.len().min(len - i);
        // SAFETY: the section lies inside our own live buffer.
        let bytes = unsafe { std::slice::from_raw_parts(s.start() as *const u8, k as usize) };
        for (j, &b) in bytes.iter().enumerate() {
            assert_eq!(
                b,
                pat(seed, i + j as u64),
                "msg {seed} byte {}",
                i + j as u64
            );
        }
        i += k;
        if i == len {
            break;
        }
    }
    assert_eq!(i, len);
    let _ = buf_base;
}

fn rx_bind(reg: &Registry, key: DmaKey, buf: &mut [u8], bufs: &[DmaBuffer]) -> Receiver {
    let whole = AddrRange::from_buffer(buf.as_mut_ptr(), buf.len()).unwrap();
    // SAFETY: `buf` outlives the receiver (both live until the role returns;
    // the receiver is dropped first).
    unsafe { reg.bind(key, &[whole], bufs) }.unwrap()
}

fn role_rx() {
    if std::env::var("RC_NONDUMPABLE").is_ok() {
        // SAFETY: plain prctl.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }
    let reg = Registry::open(&env("RC_REG")).unwrap();
    let seg = inherited_segment();
    let key =
        DmaKey::from_addr(seg.as_ptr() as u64 + env("RC_KEYOFF").parse::<u64>().unwrap()).unwrap();
    if std::env::var("RC_NOCAP").is_ok() {
        drop_cap_sys_ptrace();
    }
    let size = std::env::var("RC_BUFSZ").map_or(65536, |v| v.parse().unwrap());
    let mut buf = vec![0u8; size];
    let bufs = parse_layout(buf.as_mut_ptr() as u64, &env("RC_LAYOUT"));
    let mode = env("RC_MODE");
    let count: u64 = env("RC_COUNT").parse().unwrap();
    let mut rx = rx_bind(&reg, key, &mut buf, &bufs);
    tell("READY");
    let mut got = 0u64;
    let mut held = Vec::new();
    while got < count {
        while let Some(d) = rx.try_recv().unwrap() {
            got += 1;
            verify(buf.as_ptr(), &bufs, d.index, d.len, got);
            let path = if d.path == CopyPath::Cma {
                "cma"
            } else {
                "bounce"
            };
            tell(&format!("GOT {got} {} {path}", d.len));
            match mode.as_str() {
                "normal" => rx.restock(d.index).unwrap(),
                _ => held.push(d.index),
            }
        }
        if mode == "restock-on-request" && rx.restock_requested() {
            tell(&format!("RESTOCK {}", held.len()));
            for i in held.drain(..) {
                rx.restock(i).unwrap();
            }
        }
        if got < count {
            let _ = rx.wait(LONG);
        }
    }
    assert_eq!(hear(), "BYE");
    tell(&format!(
        "RXSTATS assist_chunks={}",
        reg.stats().assist_chunks
    ));
    drop(rx);
}

/// Child side: the key the parent passed with [`spawn_sender`].
fn key_from_env() -> DmaKey {
    DmaKey {
        dev: env("RC_DEV").parse().unwrap(),
        ino: env("RC_INO").parse().unwrap(),
        offset: env("RC_KEYOFF").parse().unwrap(),
    }
}

/// Start a sender role on the fixture's registry, aimed at `key`.
fn spawn_sender(role: &str, fx: &Fixture, key: DmaKey) -> Peer {
    spawn(
        role,
        &[
            ("RC_REG", fx.reg_name.clone()),
            ("RC_DEV", key.dev.to_string()),
            ("RC_INO", key.ino.to_string()),
            ("RC_KEYOFF", key.offset.to_string()),
        ],
    )
}

struct Fixture {
    reg_name: String,
    reg: Registry,
    place: Segment,
}

impl Fixture {
    fn new(name: &str, config: Config) -> Self {
        let reg_name = unique(name);
        let reg = Registry::create_with(&reg_name, config).unwrap();
        Self {
            reg_name,
            reg,
            place: Segment::memfd(1 << 16).unwrap(),
        }
    }

    fn key(&self, off: u64) -> DmaKey {
        DmaKey::from_fd(self.place.raw_fd(), off).unwrap()
    }

    fn rx(
        &self,
        keyoff: u64,
        layout: &str,
        mode: &str,
        count: u64,
        extra: &[(&str, String)],
    ) -> Peer {
        let mut env = vec![
            ("RC_REG", self.reg_name.clone()),
            ("RC_FD", self.place.raw_fd().to_string()),
            ("RC_KEYOFF", keyoff.to_string()),
            ("RC_LAYOUT", layout.to_owned()),
            ("RC_MODE", mode.to_owned()),
            ("RC_COUNT", count.to_string()),
        ];
        env.extend(extra.iter().cloned());
        let mut p = spawn("rx", &env);
        p.expect("READY");
        p
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Registry::unlink(&self.reg_name);
    }
}

fn message(seed: u64, pieces: &[usize]) -> Vec<Vec<u8>> {
    let mut base = 0u64;
    pieces
        .iter()
        .map(|&n| {
            let mut v = vec![0u8; n];
            fill(seed, &mut v, base);
            base += n as u64;
            v
        })
        .collect()
}

fn send(
    reg: &Registry,
    key: DmaKey,
    seed: u64,
    pieces: &[usize],
) -> Result<regcache_transport::dma::SendReport, Error> {
    let m = message(seed, pieces);
    let refs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
    reg.send(key, &refs)
}

// ---------------------------------------------------------------- DMA tests

#[test]
fn dma_scatter_gather_with_different_boundaries_single_copy() {
    let fx = Fixture::new(
        "sg",
        Config {
            force_bounce: false,
            cma_min_bytes: 0,
            eager_max_bytes: 0,
            ..Config::default()
        },
    );
    let key = fx.key(64);
    let mut rx = fx.rx(
        64,
        "0+3,100+1000,5000+7,6000+10000;20000+4096",
        "normal",
        3,
        &[],
    );
    // Source sections of 5, 777, 1, 20000 bytes into destination sections
    // of 3, 1000, 7, 10000: truncated to the 11010 the descriptor holds.
    let r = send(&fx.reg, key, 1, &[5, 777, 1, 20000]).unwrap();
    assert_eq!(
        (r.copied, r.truncated, r.path),
        (11010, true, CopyPath::Cma)
    );
    assert_eq!(rx.expect("GOT 1"), "GOT 1 11010 cma");
    let r = send(&fx.reg, key, 2, &[50, 1, 49]).unwrap();
    assert_eq!((r.copied, r.truncated, r.index), (100, false, 1));
    assert_eq!(rx.expect("GOT 2"), "GOT 2 100 cma");
    // The cursor wrapped to descriptor 0, which was restocked.
    let r = send(&fx.reg, key, 3, &[4000, 4000, 4000]).unwrap();
    assert_eq!((r.copied, r.index), (11010, 0));
    rx.expect("GOT 3 11010 cma");
    rx.say("BYE");
    rx.finish();
    let s = fx.reg.stats();
    assert_eq!((s.cma_sends, s.bounce_sends, s.cma_refusals), (3, 0, 0));
    // Never delivers to ourselves; nothing bound under another key.
    assert!(matches!(
        send(&fx.reg, fx.key(65), 9, &[1]),
        Err(Error::NoReceiver(_))
    ));
}

#[test]
fn dma_never_sends_to_itself() {
    let fx = Fixture::new("self", Config::default());
    let key = fx.key(0);
    let mut buf = vec![0u8; 4096];
    let bufs = [DmaBuffer::new(vec![
        AddrRange::from_buffer(buf.as_mut_ptr(), 4096).unwrap(),
    ])];
    let rx = rx_bind(&fx.reg, key, &mut buf, &bufs);
    assert!(matches!(
        send(&fx.reg, key, 1, &[10]),
        Err(Error::NoReceiver(_))
    ));
    // A second live binding of the same key is refused.
    let mut buf2 = vec![0u8; 4096];
    let whole = AddrRange::from_buffer(buf2.as_mut_ptr(), 4096).unwrap();
    // SAFETY: never reached as a live binding (bind fails).
    let dup = unsafe { fx.reg.bind(key, &[whole], &[DmaBuffer::new(vec![whole])]) };
    assert!(matches!(dup, Err(Error::KeyInUse(_))));
    rx.unbind().unwrap();
}

#[test]
fn dma_eager_sends_deliver_every_byte_and_validate_once_per_binding() {
    let fx = Fixture::new("eager", Config::default());
    let key = fx.key(128);
    // Inline sizes (1..=24, some in several pieces), the first sizes past
    // the inline area, and up to the eager limit; a descriptor of three
    // uneven sections so copy-out crosses section boundaries.
    let sizes: Vec<Vec<usize>> = (1..=24)
        .map(|n| vec![n])
        .chain([
            vec![3, 0, 9, 12],
            vec![1, 1, 1],
            vec![25],
            vec![13, 20],
            vec![1000, 3096],
        ])
        .collect();
    let count = sizes.len() as u64;
    let layout = "0+7,100+17,200+4072;5000+4096";
    let mut rx = fx.rx(128, layout, "normal", count, &[]);
    for (k, pieces) in sizes.iter().enumerate() {
        let seed = k as u64 + 1;
        let total: usize = pieces.iter().sum();
        let r = loop {
            match send(&fx.reg, key, seed, pieces) {
                Err(Error::NoFreeDescriptor(_)) => continue,
                r => break r.unwrap(),
            }
        };
        assert_eq!((r.copied, r.path), (total as u64, CopyPath::Bounce));
        rx.expect(&format!("GOT {seed} {total} bounce"));
    }
    rx.say("BYE");
    rx.finish();
    let s = fx.reg.stats();
    assert_eq!(
        (s.eager_sends, s.bounce_sends, s.cma_sends),
        (count, count, 0)
    );
    // One validation for all the sends to one binding generation.
    assert_eq!(s.binding_validations, 1);

    // A new binding of the same key (a new generation, other buffers): the
    // cached validation is not used; an inline message longer than the
    // descriptor is cut to its 8 bytes, across both sections.
    let mut rx = fx.rx(128, "0+5,10+3;64+64", "normal", 1, &[]);
    let r = send(&fx.reg, key, 1, &[20]).unwrap();
    assert_eq!((r.copied, r.truncated, r.index), (8, true, 0));
    rx.expect("GOT 1 8 bounce");
    rx.say("BYE");
    rx.finish();
    assert_eq!(fx.reg.stats().binding_validations, 2);
}

#[test]
fn dma_pipelined_bounce_delivers_every_byte() {
    let fx = Fixture::new(
        "piped",
        Config {
            force_bounce: true,
            ..Config::default()
        },
    );
    let key = fx.key(0);
    // One descriptor of two uneven sections: every message reuses it, so
    // what the receiver copied early of one must not leak into the next.
    let mut rx = fx.rx(
        0,
        "0+300001,300001+700000",
        "normal",
        3,
        &[("RC_BUFSZ", "1048576".to_owned())],
    );
    for (seed, pieces) in [
        (1, vec![3, 999_000, 997]),
        (2, vec![100]),
        (3, vec![65_536, 1, 200_000, 734_464]),
    ] {
        let r = send(&fx.reg, key, seed, &pieces).unwrap();
        let n = pieces.iter().sum::<usize>().min(1_000_001);
        assert_eq!((r.copied, r.path), (n as u64, CopyPath::Bounce));
        rx.expect(&format!("GOT {seed} {n} bounce"));
    }
    rx.say("BYE");
    rx.finish();
    let s = fx.reg.stats();
    assert_eq!((s.piped_sends, s.eager_sends, s.bounce_sends), (2, 1, 3));
}

#[test]
fn dma_forced_bounce_path() {
    let fx = Fixture::new(
        "bounce",
        Config {
            force_bounce: true,
            ..Config::default()
        },
    );
    let key = fx.key(0);
    let mut rx = fx.rx(0, "0+10,40000+20000", "normal", 1, &[]);
    let r = send(&fx.reg, key, 1, &[3, 20000, 4]).unwrap();
    assert_eq!((r.copied, r.path), (20007, CopyPath::Bounce));
    rx.expect("GOT 1 20007 bounce");
    rx.say("BYE");
    rx.finish();
    let s = fx.reg.stats();
    assert_eq!((s.cma_sends, s.bounce_sends), (0, 1));
}

/// Drop `CAP_SYS_PTRACE` from our effective/permitted sets (a no-op for an
/// unprivileged user), so ptrace access to a non-dumpable peer is refused.
fn drop_cap_sys_ptrace() {
    #[repr(C)]
    struct Hdr {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Hdr {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget with a v3 header and two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
    assert_eq!(r, 0);
    let bit = 1u32 << 19; // CAP_SYS_PTRACE
    d[0].effective &= !bit;
    d[0].permitted &= !bit;
    d[0].inheritable &= !bit;
    // SAFETY: capset with the structs capget filled, one bit cleared.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
    assert_eq!(r, 0);
}

fn role_tx_nocap() {
    drop_cap_sys_ptrace();
    let reg = Registry::open_with(
        &env("RC_REG"),
        Config {
            force_bounce: false,
            cma_min_bytes: 0,
            eager_max_bytes: 0,
            ..Config::default()
        },
    )
    .unwrap();
    let key = key_from_env();
    let r = send(&reg, key, 1, &[1000, 3000]).unwrap();
    let s = reg.stats();
    tell(&format!(
        "SENT {} {:?} refusals={} cma={} bounce={}",
        r.copied, r.path, s.cma_refusals, s.cma_sends, s.bounce_sends
    ));
}

#[test]
fn dma_real_cma_refusal_falls_back_to_bounce() {
    let fx = Fixture::new("refuse", Config::default());
    let key = fx.key(8);
    let mut rx = fx.rx(8, "0+4096", "normal", 1, &[("RC_NONDUMPABLE", "1".into())]);
    let mut tx = spawn_sender("tx_nocap", &fx, key);
    let l = tx.expect("SENT");
    tx.finish();
    assert_eq!(
        l, "SENT 4000 Bounce refusals=1 cma=0 bounce=1",
        "kernel did not refuse CMA"
    );
    rx.expect("GOT 1 4000 bounce");
    rx.say("BYE");
    rx.finish();
}

#[test]
fn dma_receiver_out_of_descriptors_sender_gives_up_after_one_retry() {
    let fx = Fixture::new(
        "nofree",
        Config {
            restock_wait: Duration::from_millis(50),
            ..Config::default()
        },
    );
    let key = fx.key(0);
    let mut rx = fx.rx(0, "0+100;100+100", "hold", 2, &[]);
    send(&fx.reg, key, 1, &[100]).unwrap();
    send(&fx.reg, key, 2, &[100]).unwrap();
    rx.expect("GOT 1");
    rx.expect("GOT 2");
    assert!(matches!(
        send(&fx.reg, key, 3, &[100]),
        Err(Error::NoFreeDescriptor(_))
    ));
    assert_eq!(fx.reg.stats().no_free_first_try, 1);
    rx.say("BYE");
    rx.finish();
}

#[test]
fn dma_receiver_out_of_descriptors_restocks_when_signalled_and_retry_succeeds() {
    let fx = Fixture::new(
        "restock",
        Config {
            restock_wait: Duration::from_secs(60),
            ..Config::default()
        },
    );
    let key = fx.key(0);
    let mut rx = fx.rx(0, "0+100;100+100", "restock-on-request", 3, &[]);
    assert!(!send(&fx.reg, key, 1, &[100]).unwrap().retried);
    assert!(!send(&fx.reg, key, 2, &[100]).unwrap().retried);
    // Both descriptors are held: the first attempt fails, the receiver is
    // rung, restocks, rings back, and the one retry succeeds.
    let r = send(&fx.reg, key, 3, &[100]).unwrap();
    assert!(r.retried);
    rx.expect("GOT 1");
    rx.expect("GOT 2");
    rx.expect("RESTOCK 2");
    rx.expect("GOT 3 100");
    rx.say("BYE");
    rx.finish();
    assert_eq!(fx.reg.stats().no_free_first_try, 1);
}

// ---------------------------------------------------------------- hostile peer

fn role_hostile() {
    use rand::RngCore;
    let reg = Registry::open(&env("RC_REG")).unwrap();
    let key = key_from_env();
    let (p, len) = reg.slot_bytes(key).expect("victim slot");
    let mut rng = rand::rng();
    let descs_at = 384;
    let mut junk = vec![0u8; len - descs_at];
    rng.fill_bytes(&mut junk);
    match env("RC_HOW").as_str() {
        // Random bytes over the whole descriptor table.
        "table" => {
            // Descriptor 0's used_len is made a published delivery
            // (nonzero, claim bit clear): with all-random words, each
            // descriptor has a 1 in 2 chance of looking like a sender's
            // claim in progress, which a receiver rightly waits out, and
            // the run would find nothing to reject 1 time in 16.
            let used0 = (u64::from_ne_bytes(junk[..8].try_into().unwrap()) & !(1 << 63)).max(1);
            junk[..8].copy_from_slice(&used0.to_ne_bytes());
            // SAFETY: inside the mapped registry slot; racing writes to
            // shared memory are exactly what this role simulates.
            unsafe { std::ptr::copy_nonoverlapping(junk.as_ptr(), p.add(descs_at), junk.len()) };
        }
        // Random sections, but used_len left 0 so senders claim them.
        "sections" => {
            for d in 0..((len - descs_at) / 192) {
                let at = descs_at + d * 192;
                // SAFETY: as above; skips the 8-byte used_len.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        junk.as_ptr().add(at - descs_at + 8),
                        p.add(at + 8),
                        184,
                    )
                };
            }
        }
        // Inline deliveries the receiver must refuse: descriptor 0 says
        // 1000 bytes inline (its buffer holds 1000, the inline area 24),
        // descriptor 1 says inline and bounced at once.
        "inline" => {
            // SAFETY: as above: used_len and flags of descriptors 0 and 1.
            unsafe {
                p.add(descs_at + 8).cast::<u32>().write_volatile(2);
                p.add(descs_at).cast::<u64>().write_volatile(1000);
                p.add(descs_at + 384 + 8).cast::<u32>().write_volatile(3);
                p.add(descs_at + 384).cast::<u64>().write_volatile(16);
                // Descriptor 2: "claimed" by a process that does not
                // exist, in a pipelined bounce claiming u64::MAX bytes
                // copied (at 192 + 56: the job's `piped` word): the
                // receiver copies at most its own 1000 bytes, early, and
                // delivers nothing.
                let d2 = descs_at + 2 * 384;
                p.add(d2 + 192 + 56).cast::<u64>().write_volatile(u64::MAX);
                p.add(d2 + 8).cast::<u32>().write_volatile(4);
                p.add(d2)
                    .cast::<u64>()
                    .write_volatile((1 << 63) | 0x7fff_ffff);
                // Descriptor 3: published "pipelined" without "bounced".
                let d3 = descs_at + 3 * 384;
                p.add(d3 + 8).cast::<u32>().write_volatile(4);
                p.add(d3).cast::<u64>().write_volatile(16);
            }
        }
        // A peer posing as a sender publishes an impossible length.
        "used" => {
            let me = std::process::id();
            // SAFETY: as above: descriptor 0's used_len and sender_pid.
            unsafe {
                p.add(descs_at).cast::<u64>().write_volatile(1 << 40);
                p.add(descs_at + 12).cast::<u32>().write_volatile(me);
            }
            tell("DONE");
            assert_eq!(hear(), "TRY");
            match send(&reg, key, 7, &[10]) {
                Err(Error::CutOff { .. }) => tell("CUTOFF"),
                other => tell(&format!("NOT CUT OFF {other:?}")),
            }
            return;
        }
        h => panic!("{h}"),
    }
    tell("DONE");
}

fn role_rx_survivor() {
    let reg = Registry::open(&env("RC_REG")).unwrap();
    let seg = inherited_segment();
    let key = DmaKey::from_fd(seg.raw_fd(), env("RC_KEYOFF").parse().unwrap()).unwrap();
    let mut buf = vec![0u8; 65536];
    let bufs = parse_layout(
        buf.as_mut_ptr() as u64,
        "0+1000;1000+1000;2000+1000;3000+1000",
    );
    let mut rx = Some(rx_bind(&reg, key, &mut buf, &bufs));
    tell("READY");
    loop {
        let cmd = hear();
        let r = rx.as_mut().unwrap();
        match cmd.split(' ').collect::<Vec<_>>().as_slice() {
            ["DRAIN"] => {
                let (mut corrupt, mut cut, mut ok) = (0, 0, 0);
                loop {
                    match r.try_recv() {
                        Ok(None) => break,
                        Ok(Some(d)) => {
                            ok += 1;
                            r.restock(d.index).unwrap();
                        }
                        Err(Error::CorruptDescriptor { .. }) => corrupt += 1,
                        Err(Error::CutOff { .. }) => {
                            cut += 1;
                            break;
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                tell(&format!("DRAINED ok={ok} corrupt={corrupt} cut={cut}"));
            }
            ["EXPECT", seed] => {
                let seed: u64 = seed.parse().unwrap();
                let d = r.recv(LONG).unwrap().expect("a delivery");
                verify(buf.as_ptr(), &bufs, d.index, d.len, seed);
                r.restock(d.index).unwrap();
                tell(&format!("GOT {seed}"));
            }
            ["REBIND"] => {
                let old = rx.take().unwrap();
                // The slot was cut off; unbinding it must still work.
                old.unbind().unwrap();
                rx = Some(rx_bind(&reg, key, &mut buf, &bufs));
                tell("REBOUND");
            }
            ["BYE"] => break,
            c => panic!("bad command {c:?}"),
        }
    }
}

#[test]
fn dma_hostile_peer_scribbling_descriptors_cannot_crash_the_receiver() {
    // Single copy even for small messages: the dangerous path (writes
    // into the receiver at addresses read from shared memory).
    hostile_scenario(
        "hostile",
        Config {
            cma_min_bytes: 0,
            eager_max_bytes: 0,
            ..Config::default()
        },
        &[700, 300],
    );
}

#[test]
fn dma_hostile_peer_scribbling_descriptors_cannot_crash_an_eager_receiver() {
    // Every message eager, the 16-byte ones inline in the descriptor
    // (layout version 4): the same scribbles, against the sender's cached
    // validation and the receiver's inline copy-out.
    hostile_scenario(
        "hostile-eager",
        Config {
            eager_max_bytes: u64::MAX,
            ..Config::default()
        },
        &[5, 11],
    );
}

/// The hostile-peer scenario of the two tests above: round trips of
/// messages cut into `pieces` to a victim and a bystander binding, with
/// scribbles on the victim's slot in between.
fn hostile_scenario(name: &str, config: Config, pieces: &'static [usize]) {
    let fx = Fixture::new(name, config);
    let (k1, k2) = (fx.key(0), fx.key(4096));
    let survivor_env = |off: u64| {
        vec![
            ("RC_REG", fx.reg_name.clone()),
            ("RC_FD", fx.place.raw_fd().to_string()),
            ("RC_KEYOFF", off.to_string()),
            ("RC_ROLE2", "survivor".to_owned()),
        ]
    };
    let mut victim = spawn("rx_survivor", &survivor_env(0));
    victim.expect("READY");
    let mut bystander = spawn("rx_survivor", &survivor_env(4096));
    bystander.expect("READY");
    let hostile_peer = |how: &str| {
        spawn(
            "hostile",
            &[
                ("RC_REG", fx.reg_name.clone()),
                ("RC_DEV", k1.dev.to_string()),
                ("RC_INO", k1.ino.to_string()),
                ("RC_KEYOFF", k1.offset.to_string()),
                ("RC_HOW", how.to_owned()),
            ],
        )
    };
    let hostile = |how: &str| {
        let mut h = hostile_peer(how);
        h.expect("DONE");
        h.finish();
    };
    let mut seed = 0;
    let mut roundtrip = |p: &mut Peer, key: DmaKey| {
        seed += 1;
        send(&fx.reg, key, seed, pieces).unwrap();
        p.say(&format!("EXPECT {seed}"));
        p.expect(&format!("GOT {seed}"));
    };
    roundtrip(&mut victim, k1);
    roundtrip(&mut bystander, k2);

    // 1. Random bytes over the victim's whole descriptor table: the
    //    receiver finds garbage "deliveries", rejects and repairs each.
    hostile("table");
    victim.say("DRAIN");
    let l = victim.expect("DRAINED");
    assert!(
        l.starts_with("DRAINED ok=0 corrupt=") && l.ends_with("cut=0"),
        "{l}"
    );
    assert_ne!(l, "DRAINED ok=0 corrupt=0 cut=0");
    // Repaired: the victim works again; the bystander never stopped.
    roundtrip(&mut victim, k1);
    roundtrip(&mut bystander, k2);

    // 2. Random sections behind free descriptors: the sender's validation
    //    rejects them and cuts the binding off; the receiver learns it.
    hostile("sections");
    assert!(matches!(
        send(&fx.reg, k1, 99, &[10]),
        Err(Error::CorruptDescriptor { .. })
    ));
    assert!(matches!(
        send(&fx.reg, k1, 99, &[10]),
        Err(Error::CutOff { .. })
    ));
    assert!(fx.reg.stats().cutoffs >= 1);
    roundtrip(&mut bystander, k2);
    victim.say("DRAIN");
    assert_eq!(victim.expect("DRAINED"), "DRAINED ok=0 corrupt=0 cut=1");
    victim.say("REBIND");
    victim.expect("REBOUND");
    roundtrip(&mut victim, k1);
    roundtrip(&mut bystander, k2);

    // 3. A peer publishes an impossible length as if it had sent: the
    //    receiver rejects it, repairs the descriptor and bans that pid;
    //    its next send is refused; everyone else carries on.
    let mut liar = hostile_peer("used");
    liar.expect("DONE");
    victim.say("DRAIN");
    assert_eq!(victim.expect("DRAINED"), "DRAINED ok=0 corrupt=1 cut=0");
    liar.say("TRY");
    assert_eq!(liar.line(), "CUTOFF");
    liar.finish();
    roundtrip(&mut victim, k1);
    roundtrip(&mut bystander, k2);

    // 4. Deliveries that misuse the inline area (layout version 4): more
    //    bytes than it holds, and inline and bounced at once; a pipelined
    //    bounce "in progress" past the buffer's end, and one published
    //    without its bounce. The three deliveries are rejected and
    //    repaired; nothing is read past the inline words or copied past
    //    the buffer (the claimed descriptor stays claimed).
    hostile("inline");
    victim.say("DRAIN");
    assert_eq!(victim.expect("DRAINED"), "DRAINED ok=0 corrupt=3 cut=0");
    roundtrip(&mut victim, k1);
    roundtrip(&mut bystander, k2);

    for mut p in [victim, bystander] {
        p.say("BYE");
        p.finish();
    }
}

// ---------------------------------------------------------------- dead peers

fn role_rx_die() {
    let reg = Registry::open(&env("RC_REG")).unwrap();
    let seg = inherited_segment();
    let key = DmaKey::from_fd(seg.raw_fd(), 0).unwrap();
    let mut buf = vec![0u8; 4096];
    let bufs = [DmaBuffer::new(vec![
        AddrRange::from_buffer(buf.as_mut_ptr(), 4096).unwrap(),
    ])];
    let rx = rx_bind(&reg, key, &mut buf, &bufs);
    std::mem::forget(rx); // die bound: no unbind, as after a crash
    tell("BOUND");
    std::process::exit(0);
}

#[test]
fn dma_binding_of_a_dead_receiver_is_reaped() {
    let fx = Fixture::new(
        "dead",
        Config {
            cma_min_bytes: 0,
            eager_max_bytes: 0,
            ..Config::default()
        },
    );
    let key = fx.key(0);
    let mut p = spawn(
        "rx_die",
        &[
            ("RC_REG", fx.reg_name.clone()),
            ("RC_FD", fx.place.raw_fd().to_string()),
        ],
    );
    p.expect("BOUND");
    p.finish();
    // Single copy to a dead pid fails cleanly (ESRCH), no crash.
    assert!(matches!(
        send(&fx.reg, key, 1, &[100]),
        Err(Error::ProcessVmWritev { .. })
    ));
    // The next bind reaps the dead binding and takes the key.
    let mut buf = vec![0u8; 4096];
    let bufs = [DmaBuffer::new(vec![
        AddrRange::from_buffer(buf.as_mut_ptr(), 4096).unwrap(),
    ])];
    let rx = rx_bind(&fx.reg, key, &mut buf, &bufs);
    rx.unbind().unwrap();
    // The reaper removed the dead receiver's bounce segment.
    assert!(!std::path::Path::new(&format!("/dev/shm/{}-b0-1", fx.reg_name)).exists());
}

// ------------------------------------------------- receiver-assisted copy

/// A 4 MiB receive buffer: descriptor 0 in three sections whose boundaries
/// differ from the sources', descriptor 1 in one.
const BIG_LAYOUT: &str = "0+700001,700001+1000000,1700001+399999;2100000+2000000";
const BIG: &str = "4194304";

fn assist_config(sender_idle: bool) -> Config {
    Config {
        force_bounce: false,
        cma_min_bytes: 0,
        eager_max_bytes: 0,
        assist_min_bytes: 256 << 10,
        assist_sender_idle: sender_idle,
        assist_wait: Duration::from_secs(60),
        ..Config::default()
    }
}

#[test]
fn dma_receiver_assisted_copy_delivers_every_byte() {
    // The sender copies nothing itself, so every chunk is the receiver's
    // `process_vm_readv` from the sender's five source slices into its own
    // three sections: the receiver's side of the protocol, deterministic.
    let fx = Fixture::new("assist", assist_config(true));
    let key = fx.key(128);
    let mut rx = fx.rx(128, BIG_LAYOUT, "normal", 3, &[("RC_BUFSZ", BIG.into())]);
    let pieces = [5, 300_000, 1, 1_200_000, 599_994];
    let r = send(&fx.reg, key, 1, &pieces).unwrap();
    assert_eq!(
        (r.copied, r.truncated, r.path),
        (2_100_000, false, CopyPath::Cma)
    );
    // 2 100 000 bytes: 16 chunks of 132 KiB (n/16 rounded up to pages),
    // all the receiver's.
    assert_eq!(r.receiver_chunks, 16);
    rx.expect("GOT 1 2100000 cma");
    // Truncation: 3 MB of source into the 2 MB descriptor 1.
    let r = send(&fx.reg, key, 2, &[1_000_000, 2_000_000]).unwrap();
    assert_eq!((r.copied, r.truncated, r.index), (2_000_000, true, 1));
    // 2 000 000 bytes: n/16 is under the 128 KiB minimum chunk, so 16
    // chunks of 128 KiB (the last one short).
    assert_eq!(r.receiver_chunks, 16);
    rx.expect("GOT 2 2000000 cma");
    // Under the threshold: one process_vm_writev, no job.
    let r = send(&fx.reg, key, 3, &[100_000]).unwrap();
    assert_eq!((r.copied, r.receiver_chunks), (100_000, 0));
    rx.expect("GOT 3 100000 cma");
    rx.say("BYE");
    assert_eq!(rx.expect("RXSTATS"), "RXSTATS assist_chunks=32");
    rx.finish();
    let s = fx.reg.stats();
    assert_eq!((s.cma_sends, s.assisted_sends, s.bounce_sends), (3, 2, 0));
}

#[test]
fn dma_assisted_copy_with_both_sides_copying_delivers_every_byte() {
    // The default split: both sides take chunks; who takes how many is up
    // to the scheduler, the bytes are not.
    let fx = Fixture::new("assist2", assist_config(false));
    let key = fx.key(192);
    let mut rx = fx.rx(192, BIG_LAYOUT, "normal", 20, &[("RC_BUFSZ", BIG.into())]);
    let mut theirs = 0;
    for seed in 1..=20u64 {
        let pieces: &[usize] = if seed % 2 == 0 {
            &[2_000_000]
        } else {
            &[4096, 1_000_000, 7, 1_095_897]
        };
        let r = send(&fx.reg, key, seed, pieces).unwrap();
        assert_eq!(r.copied, pieces.iter().sum::<usize>().min(2_100_000) as u64);
        theirs += r.receiver_chunks;
        rx.expect(&format!("GOT {seed} "));
    }
    rx.say("BYE");
    let l = rx.expect("RXSTATS");
    rx.finish();
    assert_eq!(l, format!("RXSTATS assist_chunks={theirs}"));
}

fn role_tx_nodump() {
    // SAFETY: plain prctl: nobody without CAP_SYS_PTRACE may now read us.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }, 0);
    let reg = Registry::open_with(&env("RC_REG"), assist_config(true)).unwrap();
    let key = key_from_env();
    let r = send(&reg, key, 1, &[600_000]).unwrap();
    tell(&format!(
        "SENT {} {:?} receiver_chunks={} assisted={}",
        r.copied,
        r.path,
        r.receiver_chunks,
        reg.stats().assisted_sends
    ));
}

#[test]
fn dma_assist_refused_by_the_kernel_is_redone_by_the_sender() {
    // The sender is not dumpable and the receiver has no CAP_SYS_PTRACE:
    // the receiver's process_vm_readv gets EPERM for every chunk it takes
    // and flags it; the sender (which may write to the receiver) redoes
    // them. The bytes arrive; no chunk counts as the receiver's.
    let fx = Fixture::new("assist-eperm", Config::default());
    let key = fx.key(256);
    let mut rx = fx.rx(
        256,
        BIG_LAYOUT,
        "normal",
        1,
        &[("RC_BUFSZ", BIG.into()), ("RC_NOCAP", "1".into())],
    );
    let mut tx = spawn_sender("tx_nodump", &fx, key);
    let l = tx.expect("SENT");
    tx.finish();
    assert_eq!(
        l, "SENT 600000 Cma receiver_chunks=0 assisted=0",
        "the kernel let a capability-less receiver read a non-dumpable sender"
    );
    rx.expect("GOT 1 600000 cma");
    rx.say("BYE");
    assert_eq!(rx.expect("RXSTATS"), "RXSTATS assist_chunks=0");
    rx.finish();
}

fn role_tx_stuck() {
    // An assisted send whose receiver never helps: it waits in `send`
    // with its pid announced until the parent kills it.
    let reg = Registry::open_with(&env("RC_REG"), assist_config(true)).unwrap();
    let key = key_from_env();
    tell("SENDING");
    let r = send(&reg, key, 1, &[600_000]);
    tell(&format!("UNEXPECTED {r:?}"));
}

#[test]
fn dma_sender_killed_mid_send_does_not_hold_up_unbind() {
    let fx = Fixture::new(
        "killed",
        Config {
            unbind_wait: Duration::from_secs(5),
            ..Config::default()
        },
    );
    let key = fx.key(320);
    let mut buf = vec![0u8; 1 << 20];
    let whole = AddrRange::from_buffer(buf.as_mut_ptr(), buf.len()).unwrap();
    let rx = rx_bind(&fx.reg, key, &mut buf, &[DmaBuffer::new(vec![whole])]);
    let mut tx = spawn_sender("tx_stuck", &fx, key);
    tx.expect("SENDING");
    let pid = tx.child.id();
    let mut waited = 0;
    while !rx.senders_in_flight().contains(&pid) {
        assert!(waited < 60_000, "the sender never announced its send");
        std::thread::sleep(Duration::from_millis(1));
        waited += 1;
    }
    tx.child.kill().unwrap();
    tx.child.wait().unwrap();
    // The dead sender's announcement does not count: unbind completes
    // (before this, a crashed sender kept unbind busy for `unbind_wait`).
    rx.unbind().unwrap();
    drop(buf);
}

// ------------------------------------------ issue 15: the transport's weak spots

/// A sender that sends on command: `SEND <seed> <len>` answers
/// `SENT <seed> ok <copied>` or `SENT <seed> err <error>`; `STATS` answers
/// `STATS taken_over=<claims_taken_over>`; `BYE` ends it.
/// `RC_RESTOCK_MS` is its restock wait; it never spins before sleeping.
fn role_tx_cmd() {
    let reg = Registry::open_with(
        &env("RC_REG"),
        Config {
            restock_wait: Duration::from_millis(env("RC_RESTOCK_MS").parse().unwrap()),
            spin: SpinPolicy { iters: 0 },
            ..Config::default()
        },
    )
    .unwrap();
    let key = key_from_env();
    tell("READY");
    loop {
        let cmd = hear();
        match cmd.split(' ').collect::<Vec<_>>().as_slice() {
            ["SEND", seed, len] => {
                let seed: u64 = seed.parse().unwrap();
                match send(&reg, key, seed, &[len.parse().unwrap()]) {
                    Ok(r) => tell(&format!("SENT {seed} ok {}", r.copied)),
                    Err(e) => tell(&format!("SENT {seed} err {e:?}")),
                }
            }
            ["STATS"] => tell(&format!(
                "STATS taken_over={}",
                reg.stats().claims_taken_over
            )),
            ["BYE"] => break,
            c => panic!("bad command {c:?}"),
        }
    }
}

/// A live process that has nothing to do with the registry.
fn role_idle() {
    tell("READY");
    assert_eq!(hear(), "BYE");
}

fn spawn_tx_cmd(fx: &Fixture, key: DmaKey, restock_ms: u64) -> Peer {
    let mut p = spawn(
        "tx_cmd",
        &[
            ("RC_REG", fx.reg_name.clone()),
            ("RC_DEV", key.dev.to_string()),
            ("RC_INO", key.ino.to_string()),
            ("RC_KEYOFF", key.offset.to_string()),
            ("RC_RESTOCK_MS", restock_ms.to_string()),
        ],
    );
    p.expect("READY");
    p
}

/// `used_len` of descriptor `j` of the binding of `key`, read raw (the
/// first word of each 384-byte descriptor, from byte 384 of the slot).
fn raw_used_len(reg: &Registry, key: DmaKey, j: usize) -> &AtomicU64 {
    let (p, len) = reg.slot_bytes(key).expect("a binding of the key");
    let at = 384 + 384 * j;
    assert!(at + 8 <= len);
    // SAFETY: inside the mapped registry slot (checked above), 8-aligned;
    // the field is an atomic shared with other processes; the registry
    // outlives the returned borrow.
    unsafe { &*p.add(at).cast::<AtomicU64>() }
}

#[test]
fn dma_descriptor_claimed_by_a_killed_sender_is_taken_over() {
    // Issue 15, item 5a. One descriptor; sender A claims it (an assisted
    // copy the receiver never helps with keeps it in the middle of its
    // send) and is killed with SIGKILL. Before the fix the descriptor
    // stayed claimed for the binding's life: every later send found no
    // free descriptor.
    let fx = Fixture::new("deadclaim", Config::default());
    let key = fx.key(448);
    let mut buf = vec![0u8; 1 << 20];
    let bufs = [DmaBuffer::new(vec![
        AddrRange::from_buffer(buf.as_mut_ptr(), buf.len()).unwrap(),
    ])];
    let mut rx = rx_bind(&fx.reg, key, &mut buf, &bufs);
    let mut a = spawn_sender("tx_stuck", &fx, key);
    a.expect("SENDING");
    let claim = raw_used_len(&fx.reg, key, 0);
    let mut waited = 0;
    while claim.load(Ordering::Acquire) == 0 {
        assert!(waited < 60_000, "sender A never claimed the descriptor");
        std::thread::sleep(Duration::from_millis(1));
        waited += 1;
    }
    // While A lives, its claim stands: B finds no descriptor.
    let mut b = spawn_tx_cmd(&fx, key, 200);
    b.say("SEND 6 1000");
    let l = b.expect("SENT 6");
    assert!(l.starts_with("SENT 6 err NoFreeDescriptor"), "{l}");
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();

    b.say("SEND 7 1000");
    assert_eq!(
        b.expect("SENT 7"),
        "SENT 7 ok 1000",
        "the descriptor claimed by the killed sender was never freed"
    );
    let d = rx.recv(LONG).unwrap().expect("B's message");
    assert_eq!((d.index, d.len, d.sender_pid), (0, 1000, b.child.id()));
    verify(buf.as_ptr(), &bufs, d.index, d.len, 7);
    rx.restock(d.index).unwrap();
    b.say("STATS");
    assert_eq!(b.expect("STATS"), "STATS taken_over=1");
    b.say("BYE");
    b.finish();
    rx.unbind().unwrap();
    drop(buf);
}

/// Stop `pid` with SIGSTOP and wait until it is stopped.
fn stop(pid: u32) {
    let p = pid as libc::pid_t;
    // SAFETY: plain kill(2) to our own child.
    assert_eq!(unsafe { libc::kill(p, libc::SIGSTOP) }, 0);
    let mut st = 0;
    // SAFETY: waitpid(2) on our own child; `st` is a valid out pointer.
    assert_eq!(unsafe { libc::waitpid(p, &mut st, libc::WUNTRACED) }, p);
    assert!(libc::WIFSTOPPED(st), "child {pid} did not stop: {st:#x}");
}

/// Continue `pid` after [`stop`].
fn cont(pid: u32) {
    // SAFETY: plain kill(2) to our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) }, 0);
}

#[test]
fn dma_two_senders_waiting_for_restock_both_get_a_restocked_descriptor() {
    // Issue 15, item 5b. Two descriptors, both held by the receiver; two
    // senders wait for a restock (restock wait: 10 minutes, so a missed
    // ring is a hang, turned into a failure by the receive timeout). The
    // receiver restocks both while the senders are stopped, then lets them
    // run one after the other. Before the fix the restock doorbell was a
    // single-owner doorbell shared by every sender: the first sender
    // consumed the one coalesced ring and the second went back to sleep
    // with a free descriptor in front of it.
    let fx = Fixture::new("restock2", Config::default());
    let key = fx.key(512);
    let mut buf = vec![0u8; 8192];
    let base = buf.as_mut_ptr() as u64;
    let bufs = parse_layout(base, "0+4096;4096+4096");
    let mut rx = rx_bind(&fx.reg, key, &mut buf, &bufs);
    let mut s1 = spawn_tx_cmd(&fx, key, 600_000);
    let mut s2 = spawn_tx_cmd(&fx, key, 600_000);
    s1.say("SEND 1 100");
    assert_eq!(s1.expect("SENT 1"), "SENT 1 ok 100");
    s2.say("SEND 2 100");
    assert_eq!(s2.expect("SENT 2"), "SENT 2 ok 100");
    let held: Vec<u32> = (0..2)
        .map(|_| rx.recv(LONG).unwrap().expect("a delivery").index)
        .collect();
    // Both wait for a restock now: each went to sleep on the doorbell.
    s1.say("SEND 3 100");
    s2.say("SEND 4 100");
    let mut waited = 0;
    while rx.signal_stats(Side::South).sleeps < 2 {
        assert!(waited < 60_000, "the senders never slept on the doorbell");
        std::thread::sleep(Duration::from_millis(1));
        waited += 1;
    }
    let (p1, p2) = (s1.child.id(), s2.child.id());
    stop(p1);
    stop(p2);
    for i in held {
        rx.restock(i).unwrap();
    }
    cont(p1);
    assert_eq!(s1.expect("SENT 3"), "SENT 3 ok 100");
    let d = rx.recv(LONG).unwrap().expect("S1's message");
    assert_eq!((d.len, d.sender_pid), (100, p1));
    verify(buf.as_ptr(), &bufs, d.index, d.len, 3);
    cont(p2);
    let Some(d) = rx.recv(Some(Duration::from_secs(30))).unwrap() else {
        let _ = s2.child.kill();
        panic!("the second waiting sender missed the restock ring (lost wake-up)");
    };
    assert_eq!((d.len, d.sender_pid), (100, p2));
    verify(buf.as_ptr(), &bufs, d.index, d.len, 4);
    assert_eq!(s2.expect("SENT 4"), "SENT 4 ok 100");
    for mut s in [s1, s2] {
        s.say("BYE");
        s.finish();
    }
    rx.unbind().unwrap();
    drop(buf);
}

/// `starttime` of `pid`: field 22 of `/proc/<pid>/stat`, in clock ticks
/// since boot (proc(5)).
fn proc_start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends at the last ')': field 3
    // is the first of them.
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace()
        .nth(22 - 3)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn dma_registry_lock_of_a_dead_holder_whose_pid_was_reused_is_stolen() {
    // Issue 15, item 5c. A process died holding the registry lock and its
    // pid now names another, live process that has nothing to do with the
    // registry (started later: a different start time). Before the fix
    // the lock was stolen only when `kill(pid, 0)` failed, so every bind
    // and unbind waited forever.
    let fx = Fixture::new("lockreuse", Config::default());
    let mut other = spawn("idle", &[]);
    other.expect("READY");
    let pid = other.child.id();
    let start = proc_start_ticks(pid);
    // The dead holder started 10 s (1000 ticks at 100 Hz) before the
    // process that has its pid now.
    fx.reg.plant_lock_record(pid, start.wrapping_sub(1000));
    let (tx, done) = std::sync::mpsc::channel();
    let reg = fx.reg.clone();
    let key = fx.key(576);
    std::thread::spawn(move || {
        let buf: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let whole = AddrRange::from_buffer(buf.as_mut_ptr(), buf.len()).unwrap();
        // SAFETY: the buffer is leaked: valid for the life of the process.
        let rx = unsafe { reg.bind(key, &[whole], &[DmaBuffer::new(vec![whole])]) };
        let _ = tx.send(rx.and_then(Receiver::unbind).is_ok());
    });
    match done.recv_timeout(Duration::from_secs(30)) {
        Ok(ok) => {
            assert!(ok, "bind after stealing the lock failed");
            assert_eq!(fx.reg.stats().lock_steals, 1);
        }
        Err(_) => panic!(
            "bind still waits for a registry lock whose dead holder's pid names a live, unrelated process"
        ),
    }
    other.say("BYE");
    other.finish();
}
