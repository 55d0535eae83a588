//! RDMA rendezvous between two processes over RC queue pairs (SoftRoCE in
//! the VM tier). The test binary re-runs itself as the peer: the parent
//! spawns `<this binary> --exact rdma_peer --nocapture` with
//! `RDMA_PEER_ROLE` and `RDMA_PEER_PORT` set; `rdma_peer` does nothing
//! when they are not.
//!
//! Without an RDMA device each test prints `SKIPPED: no RDMA device (runs
//! in the VM tier)`; with `REGCACHE_REQUIRE_RDMA=1` absence fails.

use regcache::{
    AccessFlags, AddrRange, Cache, Config, MemoryRegion, ProtectionDomain, Registrar,
    VerbsRegistrar,
};
use regcache_testkit::skip::{note, pd_or_skip};
use regcache_transport::rdma::{RdmaConfig, RdmaError, Rendezvous};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ALL: AccessFlags = AccessFlags::LOCAL_WRITE
    .union(AccessFlags::REMOTE_WRITE)
    .union(AccessFlags::REMOTE_READ);

/// Message sizes: odd ones to catch off-by-one and page-boundary bugs.
const SIZES: &[usize] = &[1, 4095, 4096 + 3, 1 << 20, (3 << 20) + 17];

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

struct Buf {
    data: Vec<u8>,
    mr: MemoryRegion,
}

impl Buf {
    fn new(reg: &VerbsRegistrar, len: usize) -> Buf {
        let mut data = vec![0u8; len];
        let range = AddrRange::from_buffer(data.as_mut_ptr(), len).unwrap();
        let mr = reg.register(range, ALL).expect("ibv_reg_mr");
        Buf { data, mr }
    }
    fn range(&mut self, len: usize) -> AddrRange {
        AddrRange::from_buffer(self.data.as_mut_ptr(), len).unwrap()
    }
}

fn spawn_peer(role: &str, port: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rdma_peer", "--nocapture", "--test-threads=1"])
        .env("RDMA_PEER_ROLE", role)
        .env("RDMA_PEER_PORT", port.to_string())
        .spawn()
        .expect("spawn peer")
}

fn listen() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "peer never connected");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn wait_child(mut c: Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("peer did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The peer process. Roles:
/// - `echo`: for each size, receive a put (verify), then serve the
///   transformed message for a get.
/// - `cache-echo`: receive puts into 8 rotating buffers registered
///   through a cache, verifying each.
/// - `cts-then-expect-hangup`: offer 1 MiB, expect the sender to hang up.
/// - `vanish-after-connect`: connect, then exit without a word.
/// - `vanish-after-cts`: connect, send a CTS for a put, then exit.
#[test]
fn rdma_peer() {
    let (Ok(role), Ok(port)) = (
        std::env::var("RDMA_PEER_ROLE"),
        std::env::var("RDMA_PEER_PORT"),
    ) else {
        return; // not spawned as a peer: nothing to do
    };
    let pd = ProtectionDomain::open(std::env::var("REGCACHE_RDMA_DEVICE").ok().as_deref())
        .expect("peer: RDMA device");
    let reg = VerbsRegistrar::new(pd.clone());
    let stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    let mut rv = Rendezvous::connect(&pd, stream, RdmaConfig::default()).expect("peer: connect");
    match role.as_str() {
        "echo" => {
            let max = *SIZES.iter().max().unwrap();
            let mut buf = Buf::new(&reg, max);
            for (i, &len) in SIZES.iter().enumerate() {
                let keys = buf.mr.keys();
                let r = buf.range(max);
                // SAFETY: `buf` lives across the call and is not accessed
                // through a reference while the peer writes it.
                let got = unsafe { rv.recv_write(r, keys.rkey) }.expect("peer: recv_write");
                assert_eq!(got, len as u64);
                let want = pattern(i as u8, len);
                if let Some(at) = first_difference(&buf.data[..len], &want) {
                    panic!("peer: put of {len} bytes differs at byte {at}");
                }
                for b in &mut buf.data[..len] {
                    *b = !*b;
                }
                let r = buf.range(len);
                // SAFETY: as above; the peer only reads it.
                let n = unsafe { rv.send_read(r, keys.rkey) }.expect("peer: send_read");
                assert_eq!(n, len as u64);
            }
        }
        "cache-echo" => {
            let cache = Cache::new(reg, no_merge());
            let mut bufs: Vec<Vec<u8>> = (0..ROTATING).map(|_| vec![0u8; ROT_LEN]).collect();
            for seq in 0..ROT_MESSAGES {
                let b = &mut bufs[seq % ROTATING];
                let r = AddrRange::from_buffer(b.as_mut_ptr(), ROT_LEN).unwrap();
                let h = cache.get(r, ALL).expect("peer: cache get");
                let rkey = h.keys().unwrap().rkey;
                // SAFETY: `b` is alive and not accessed while the NIC writes.
                let n = unsafe { rv.recv_write(r, rkey) }.expect("peer: recv_write");
                drop(h);
                assert_eq!(n, ROT_LEN as u64);
                if let Some(at) = first_difference(b, &pattern(seq as u8, ROT_LEN)) {
                    panic!("peer: message {seq} differs at byte {at}");
                }
            }
            let s = cache.stats();
            assert_eq!(s.registrations, ROTATING as u64, "{s:?}");
            assert_eq!(s.hits, (ROT_MESSAGES - ROTATING) as u64, "{s:?}");
        }
        "cts-then-expect-hangup" => {
            let mut buf = Buf::new(&reg, 1 << 20);
            let keys = buf.mr.keys();
            let r = buf.range(1 << 20);
            // SAFETY: `buf` is alive and unreferenced for the call.
            let e = unsafe { rv.recv_write(r, keys.rkey) }.unwrap_err();
            assert!(
                matches!(e, RdmaError::PeerDisconnected { .. }),
                "peer: expected the sender to hang up, got {e}"
            );
        }
        "vanish-after-connect" => std::process::exit(0),
        "vanish-after-cts" => {
            let mut buf = Buf::new(&reg, 1 << 20);
            let keys = buf.mr.keys();
            let r = buf.range(1 << 20);
            // Send the CTS by hand: start a put and abandon it at once.
            let t = std::thread::spawn(move || {
                // SAFETY: the process exits while the thread waits; the
                // buffer is never touched again.
                let _ = unsafe { rv.recv_write(r, keys.rkey) };
            });
            std::thread::sleep(Duration::from_millis(200));
            drop(t);
            std::process::exit(0)
        }
        other => panic!("unknown peer role {other}"),
    }
}

#[test]
fn rdma_put_and_get_between_processes_verify_every_byte() {
    let name = "rdma_put_and_get_between_processes_verify_every_byte";
    let Some(pd) = pd_or_skip(name) else { return };
    let reg = VerbsRegistrar::new(pd.clone());
    let (l, port) = listen();
    let child = spawn_peer("echo", port);
    let mut rv = Rendezvous::connect(&pd, accept(&l), RdmaConfig::default()).unwrap();
    let local = rv.connection().local();
    let remote = rv.connection().remote();
    assert_ne!(local.qpn, remote.qpn);
    let max = *SIZES.iter().max().unwrap();
    let mut src = Buf::new(&reg, max);
    let mut dst = Buf::new(&reg, max);
    let t0 = Instant::now();
    for (i, &len) in SIZES.iter().enumerate() {
        src.data[..len].copy_from_slice(&pattern(i as u8, len));
        let r = src.range(len);
        // SAFETY: `src` is alive and unborrowed for the call.
        let n = unsafe { rv.send_write(r, src.mr.keys().lkey) }.expect("send_write");
        assert_eq!(n, len as u64);
        dst.data.fill(0);
        let r = dst.range(max);
        // SAFETY: `dst` is alive and unborrowed while the NIC writes it.
        let n = unsafe { rv.recv_read(r, dst.mr.keys().lkey) }.expect("recv_read");
        assert_eq!(n, len as u64);
        let want: Vec<u8> = pattern(i as u8, len).iter().map(|b| !b).collect();
        if let Some(at) = first_difference(&dst.data[..len], &want) {
            panic!("get of {len} bytes differs at byte {at}");
        }
        assert!(dst.data[len..].iter().all(|&b| b == 0), "wrote past {len}");
    }
    note(&format!(
        "{name}: {} puts and gets verified in {:?} (QPN {:#x} <-> {:#x})",
        SIZES.len(),
        t0.elapsed(),
        local.qpn,
        remote.qpn
    ));
    assert!(wait_child(child, 120).success(), "peer failed");
}

/// Merging off: heap buffers may be adjacent, and merged regions would
/// make the registration count depend on the allocator's layout.
fn no_merge() -> Config {
    Config {
        merge: regcache::Merge::Off,
        ..Config::default()
    }
}

const ROTATING: usize = 8;
const ROT_LEN: usize = 256 << 10;
const ROT_MESSAGES: usize = 3 * ROTATING;

/// The rendezvous path of the design: both sides take their buffers'
/// registrations from a `Cache<VerbsRegistrar>` in the queue pair's
/// protection domain; 8 rotating buffers are registered once per side and
/// every later message is a hit. Every byte is verified by the receiver.
#[test]
fn rdma_put_with_cached_registrations_rotating_buffers() {
    let name = "rdma_put_with_cached_registrations_rotating_buffers";
    let Some(pd) = pd_or_skip(name) else { return };
    let cache = Cache::new(VerbsRegistrar::new(pd.clone()), no_merge());
    let (l, port) = listen();
    let child = spawn_peer("cache-echo", port);
    let mut rv = Rendezvous::connect(&pd, accept(&l), RdmaConfig::default()).unwrap();
    let mut bufs: Vec<Vec<u8>> = (0..ROTATING).map(|_| vec![0u8; ROT_LEN]).collect();
    let t0 = Instant::now();
    for seq in 0..ROT_MESSAGES {
        let b = &mut bufs[seq % ROTATING];
        b.copy_from_slice(&pattern(seq as u8, ROT_LEN));
        let r = AddrRange::from_buffer(b.as_ptr(), ROT_LEN).unwrap();
        let h = cache.get(r, ALL).expect("cache get");
        // SAFETY: the buffer is alive and unmodified during the call.
        let n = unsafe { rv.send_write(r, h.keys().unwrap().lkey) }.expect("send_write");
        assert_eq!(n, ROT_LEN as u64);
    }
    let s = cache.stats();
    note(&format!(
        "{name}: {ROT_MESSAGES} messages over {ROTATING} buffers in {:?}: \
         {} registrations, {} hits on this side",
        t0.elapsed(),
        s.registrations,
        s.hits
    ));
    assert_eq!(s.registrations, ROTATING as u64, "{s:?}");
    assert_eq!(s.hits, (ROT_MESSAGES - ROTATING) as u64, "{s:?}");
    assert!(wait_child(child, 300).success(), "peer failed");
}

#[test]
fn rdma_peer_gone_before_fin_is_an_error_not_a_hang() {
    let name = "rdma_peer_gone_before_fin_is_an_error_not_a_hang";
    let Some(pd) = pd_or_skip(name) else { return };
    let reg = VerbsRegistrar::new(pd.clone());
    let (l, port) = listen();
    let child = spawn_peer("vanish-after-connect", port);
    let mut rv = Rendezvous::connect(&pd, accept(&l), RdmaConfig::default()).unwrap();
    let mut dst = Buf::new(&reg, 1 << 20);
    let r = dst.range(1 << 20);
    let t0 = Instant::now();
    // SAFETY: `dst` is alive and unborrowed for the call.
    let e = unsafe { rv.recv_write(r, dst.mr.keys().rkey) }.unwrap_err();
    assert!(
        matches!(e, RdmaError::PeerDisconnected { .. }),
        "expected PeerDisconnected, got {e}"
    );
    assert!(rv.connection().is_broken());
    note(&format!("{name}: {e} after {:?}", t0.elapsed()));
    wait_child(child, 60);
}

#[test]
fn rdma_write_to_vanished_peer_is_an_error_not_a_hang() {
    let name = "rdma_write_to_vanished_peer_is_an_error_not_a_hang";
    let Some(pd) = pd_or_skip(name) else { return };
    let reg = VerbsRegistrar::new(pd.clone());
    let (l, port) = listen();
    let child = spawn_peer("vanish-after-cts", port);
    let cfg = RdmaConfig {
        cq_timeout: Duration::from_secs(60),
        ..RdmaConfig::default()
    };
    let mut rv = Rendezvous::connect(&pd, accept(&l), cfg).unwrap();
    // Let the peer send its CTS and die: its QP is destroyed with it.
    wait_child(child, 60);
    let mut src = Buf::new(&reg, 1 << 20);
    src.data.fill(0x5a);
    let r = src.range(1 << 20);
    let t0 = Instant::now();
    // SAFETY: `src` is alive and unborrowed for the call.
    let e = unsafe { rv.send_write(r, src.mr.keys().lkey) }.unwrap_err();
    assert!(
        matches!(
            e,
            RdmaError::Completion { .. }
                | RdmaError::Timeout { .. }
                | RdmaError::PeerDisconnected { .. }
        ),
        "unexpected error {e}"
    );
    assert!(rv.connection().is_broken());
    note(&format!("{name}: {e} after {:?}", t0.elapsed()));
    // SAFETY: as above.
    let again = unsafe { rv.send_write(r, src.mr.keys().lkey) };
    assert!(again.is_err(), "a broken connection must refuse work");
}

#[test]
fn rdma_bad_buffers_are_refused() {
    let name = "rdma_bad_buffers_are_refused";
    let Some(pd) = pd_or_skip(name) else { return };
    let reg = VerbsRegistrar::new(pd.clone());
    let (l, port) = listen();
    let child = spawn_peer("cts-then-expect-hangup", port);
    let mut rv = Rendezvous::connect(&pd, accept(&l), RdmaConfig::default()).unwrap();
    // The peer offers a CTS for a 1 MiB buffer; a larger message is a
    // protocol error, raised before any byte moves.
    let big = (1 << 20) + 4096;
    let mut src = Buf::new(&reg, big);
    let r = src.range(big);
    // SAFETY: `src` is alive and unborrowed for the call.
    let e = unsafe { rv.send_write(r, src.mr.keys().lkey) }.unwrap_err();
    assert!(matches!(e, RdmaError::Protocol(_)), "{e}");
    assert!(rv.connection().is_broken());
    // SAFETY: as above.
    let e = unsafe { rv.send_write(r, src.mr.keys().lkey) }.unwrap_err();
    assert!(matches!(e, RdmaError::Protocol(_)), "{e}");
    drop(rv); // the peer must see the hang-up as PeerDisconnected
    assert!(wait_child(child, 60).success(), "peer failed");
}
