//! The rendezvous across two "nodes": two VMs joined by a qemu socket
//! network, each with rxe on that NIC (`cargo xtask vm --two-nodes`).
//! `RDMA_NODE_ROLE` is `listen` or `connect`, `RDMA_NODE_ADDR` the
//! listener's `ip:port`. Anywhere else the test prints why it did not run.

use regcache::{AccessFlags, AddrRange, ProtectionDomain, Registrar, VerbsRegistrar};
use regcache_testkit::skip::{note, skipped};
use regcache_transport::rdma::{RdmaConfig, Rendezvous};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const SIZES: &[usize] = &[1, 4095, 4096 + 3, 1 << 20, (2 << 20) + 17];

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn rdma_two_nodes_put_and_get_verify_every_byte() {
    let name = "rdma_two_nodes_put_and_get_verify_every_byte";
    let (Ok(role), Ok(addr)) = (
        std::env::var("RDMA_NODE_ROLE"),
        std::env::var("RDMA_NODE_ADDR"),
    ) else {
        skipped(name, "not on a node (runs in `cargo xtask vm --two-nodes`)");
        return;
    };
    let pd = ProtectionDomain::open(None).expect("RDMA device");
    let reg = VerbsRegistrar::new(pd.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    let stream = if role == "listen" {
        let l = TcpListener::bind(&addr).expect("bind");
        l.accept().expect("accept").0
    } else {
        // The other VM may still be booting.
        loop {
            match TcpStream::connect(&addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("connect {addr}: {e}"),
            }
        }
    };
    let peer = stream.peer_addr().unwrap();
    let mut rv = Rendezvous::connect(&pd, stream, RdmaConfig::default()).expect("connect QPs");
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ;
    let max = *SIZES.iter().max().unwrap();
    let mut buf = vec![0u8; max];
    let range = AddrRange::from_buffer(buf.as_mut_ptr(), max).unwrap();
    let mr = reg.register(range, access).expect("ibv_reg_mr");
    let keys = mr.keys();
    let t0 = Instant::now();
    for (i, &len) in SIZES.iter().enumerate() {
        let r = AddrRange::from_buffer(buf.as_mut_ptr(), len).unwrap();
        if role == "listen" {
            // Put to the other node, then get its transformed copy back.
            buf[..len].copy_from_slice(&pattern(i as u8, len));
            // SAFETY: `buf` is alive and unreferenced during each call.
            unsafe { rv.send_write(r, keys.lkey) }.expect("send_write");
            buf.fill(0);
            // SAFETY: as above.
            let n = unsafe { rv.recv_read(range, keys.lkey) }.expect("recv_read");
            assert_eq!(n, len as u64);
            let want: Vec<u8> = pattern(i as u8, len).iter().map(|b| !b).collect();
            assert!(buf[..len] == want[..], "get of {len} bytes differs");
        } else {
            buf.fill(0);
            // SAFETY: as above.
            let n = unsafe { rv.recv_write(range, keys.rkey) }.expect("recv_write");
            assert_eq!(n, len as u64);
            assert!(
                buf[..len] == pattern(i as u8, len)[..],
                "put of {len} bytes differs"
            );
            for b in &mut buf[..len] {
                *b = !*b;
            }
            // SAFETY: as above.
            unsafe { rv.send_read(r, keys.rkey) }.expect("send_read");
        }
    }
    note(&format!(
        "{name}: {role} side, peer {peer}, GID {:02x?}: {} puts and gets verified in {:?}",
        rv.connection().local().gid,
        SIZES.len(),
        t0.elapsed()
    ));
    drop(rv);
    reg.deregister(mr).unwrap();
}
