//! Rendezvous with and without the registration cache.
//!
//! Two processes (this program re-runs itself as the receiver) move
//! `--messages` messages of `--size` bytes with RDMA WRITE (put), the
//! sender cycling through `--buffers` buffers and the receiver through as
//! many. Each side gets its buffer's registration per message either from
//! a `Cache<VerbsRegistrar>` (`cache`) or by `ibv_reg_mr` + `ibv_dereg_mr`
//! around each message (`none`). Prints registrations per message and
//! throughput for both, and the cost of `ibv_reg_mr`+`ibv_dereg_mr` next
//! to a cache hit (`get`+release).
//!
//! ```text
//! cargo build --release -p regcache-transport --example rdma_bench
//! cargo xtask vm -- target/release/examples/rdma_bench --messages 400
//! ```
//! Under TCG only ratios mean anything.

use regcache::{
    AccessFlags, AddrRange, Cache, Config, Keys, ProtectionDomain, Registrar, VerbsRegistrar,
};
use regcache_transport::rdma::{RdmaConfig, Rendezvous};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

const ACCESS: AccessFlags = AccessFlags::LOCAL_WRITE
    .union(AccessFlags::REMOTE_WRITE)
    .union(AccessFlags::REMOTE_READ);

#[derive(Debug, Clone, Copy)]
struct Args {
    messages: usize,
    buffers: usize,
    size: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        messages: 400,
        buffers: 8,
        size: 1 << 20,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let v = it.next().and_then(|v| v.parse().ok());
        match (k.as_str(), v) {
            ("--messages", Some(v)) => a.messages = v,
            ("--buffers", Some(v)) => a.buffers = v,
            ("--size", Some(v)) => a.size = v,
            _ => {
                eprintln!("usage: rdma_bench [--messages N] [--buffers N] [--size BYTES]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// `buffers` separate mappings (not adjacent, so the cache cannot merge
/// them into one registration).
struct Buffers {
    ranges: Vec<AddrRange>,
    span: (u64, usize),
}

impl Buffers {
    fn new(count: usize, size: usize) -> Buffers {
        let page = regcache::page_size() as usize;
        let stride = size.div_ceil(page) * page + page;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                count * stride,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        let base = base as u64;
        let ranges = (0..count)
            .map(|i| {
                let start = base + (i * stride) as u64;
                let guard = start + stride as u64 - page as u64;
                // SAFETY: the guard page is in our mapping and unused.
                unsafe { libc::munmap(guard as *mut libc::c_void, page) };
                AddrRange::from_start_len(start, size as u64).unwrap()
            })
            .collect();
        Buffers {
            ranges,
            span: (base, count * stride),
        }
    }

    fn stamp(&self, i: usize, seq: u64) {
        let r = self.ranges[i];
        for at in [r.start(), r.end() - 8] {
            // SAFETY: inside our mapping; no reference to it exists and no
            // transfer is in flight (called between messages).
            unsafe { std::ptr::write_unaligned(at as *mut u64, seq) };
        }
    }

    fn check(&self, i: usize, seq: u64) -> bool {
        let r = self.ranges[i];
        [r.start(), r.end() - 8].iter().all(|&at| {
            // SAFETY: as in `stamp`; the transfer completed (FIN received).
            unsafe { std::ptr::read_unaligned(at as *const u64) == seq }
        })
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: our mapping; every registration of it is gone by now.
        unsafe { libc::munmap(self.span.0 as *mut libc::c_void, self.span.1) };
    }
}

/// Where a side gets its registrations.
enum Source {
    Cache(Box<Cache<VerbsRegistrar>>),
    None(VerbsRegistrar, u64),
}

impl Source {
    fn new(mode: &str, pd: &ProtectionDomain) -> Source {
        let reg = VerbsRegistrar::new(pd.clone());
        match mode {
            "cache" => Source::Cache(Box::new(Cache::new(reg, Config::default()))),
            _ => Source::None(reg, 0),
        }
    }

    /// Run `f` with keys for `r`, from the cache or a per-message registration.
    fn with_keys<T>(&mut self, r: AddrRange, f: impl FnOnce(Keys) -> T) -> T {
        match self {
            Source::Cache(c) => {
                let h = c.get(r, ACCESS).expect("cache get");
                f(h.keys().expect("keys"))
            }
            Source::None(reg, n) => {
                let mr = reg.register(r, ACCESS).expect("ibv_reg_mr");
                *n += 1;
                let out = f(mr.keys());
                reg.deregister(mr).expect("ibv_dereg_mr");
                out
            }
        }
    }

    fn registrations(&self) -> u64 {
        match self {
            Source::Cache(c) => c.stats().registrations,
            Source::None(_, n) => *n,
        }
    }
}

fn receiver(port: u16, mode: &str, a: Args) {
    let pd = ProtectionDomain::open(None).expect("RDMA device");
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut rv = Rendezvous::connect(&pd, stream, RdmaConfig::default()).expect("connect");
    let bufs = Buffers::new(a.buffers, a.size);
    let mut src = Source::new(mode, &pd);
    for seq in 0..a.messages as u64 {
        let i = seq as usize % a.buffers;
        let r = bufs.ranges[i];
        let n = src.with_keys(r, |k| {
            // SAFETY: the buffer is mapped, unreferenced, and covered by the
            // registration whose rkey is used, until recv_write returns.
            unsafe { rv.recv_write(r, k.rkey) }.expect("recv_write")
        });
        assert_eq!(n, a.size as u64);
        assert!(bufs.check(i, seq), "message {seq}: wrong bytes");
    }
    println!("PEER registrations={}", src.registrations());
}

fn sender(mode: &str, a: Args) -> (f64, f64) {
    let exe = std::env::current_exe().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let child = Command::new(exe)
        .args(std::env::args().skip(1))
        .env("RDMA_BENCH_PEER", format!("{port}:{mode}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = l.accept().unwrap();
    let pd = ProtectionDomain::open(None).expect("RDMA device");
    let mut rv = Rendezvous::connect(&pd, stream, RdmaConfig::default()).expect("connect");
    let bufs = Buffers::new(a.buffers, a.size);
    let mut src = Source::new(mode, &pd);
    let t0 = Instant::now();
    for seq in 0..a.messages as u64 {
        let i = seq as usize % a.buffers;
        bufs.stamp(i, seq);
        let r = bufs.ranges[i];
        src.with_keys(r, |k| {
            // SAFETY: the buffer is mapped and covered by the registration
            // whose lkey is used, until send_write returns.
            unsafe { rv.send_write(r, k.lkey) }.expect("send_write")
        });
    }
    let secs = t0.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "receiver failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let peer: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("PEER registrations="))
        .and_then(|v| v.trim().parse().ok())
        .expect("receiver's count");
    let regs = (src.registrations() + peer) as f64 / a.messages as f64;
    let mib_s = (a.messages * a.size) as f64 / secs / (1 << 20) as f64;
    println!(
        "{mode:>5}: {} messages x {} bytes over {} rotating buffers: {regs:.3} registrations/message \
         (both sides), {mib_s:.1} MiB/s, {:.1} us/message",
        a.messages,
        a.size,
        a.buffers,
        secs * 1e6 / a.messages as f64
    );
    (regs, mib_s)
}

/// Mean ns of `f` over `n` runs.
fn time_ns(n: usize, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        f();
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let a = parse_args();
    if let Ok(peer) = std::env::var("RDMA_BENCH_PEER") {
        let (port, mode) = peer.split_once(':').expect("port:mode");
        return receiver(port.parse().unwrap(), mode, a);
    }
    let pd = ProtectionDomain::open(None).expect("RDMA device");
    println!("device {}", pd.device().name);
    let reg = VerbsRegistrar::new(pd.clone());
    let cache = Cache::new(VerbsRegistrar::new(pd.clone()), Config::default());
    for size in [4 << 10, 64 << 10, 1 << 20, 4 << 20] {
        let bufs = Buffers::new(1, size);
        let r = bufs.ranges[0];
        let regdereg = time_ns(50, || {
            let mr = reg.register(r, ACCESS).unwrap();
            reg.deregister(mr).unwrap();
        });
        drop(cache.get(r, ACCESS).unwrap());
        let hit = time_ns(100_000, || drop(cache.get(r, ACCESS).unwrap()));
        println!(
            "{size:>8} bytes: ibv_reg_mr+ibv_dereg_mr {:>8.1} us; cache hit (get+release) {hit:>5.0} ns; \
             ratio {:.0}x",
            regdereg / 1e3,
            regdereg / hit
        );
        cache.flush();
    }
    drop(cache);
    let (r0, t0) = sender("none", a);
    let (r1, t1) = sender("cache", a);
    println!(
        "cache vs none: registrations/message {r1:.3} vs {r0:.3}; throughput {:.2}x",
        t1 / t0
    );
}
