//! Intra-node transport benchmarks (reported, not tests).
//!
//! `cargo bench -p regcache-transport --bench intranode` prints:
//! - single-thread `memcpy` bandwidth at 64 KiB, 1, 4, 16 MiB (the
//!   reference);
//! - keyed-DMA streaming and ping-pong bandwidth at the same sizes to a
//!   receiver in another process: on the size-aware default path
//!   (`Config::path_for`) and forced receiver-assisted, single copy
//!   (`process_vm_writev`) and bounce;
//! - 8-byte ping-pong half round-trip latency through `shm_signal` alone
//!   and through keyed DMA (send + receive + restock; eager, inline);
//! - Open MPI's vader in the same run (NetPIPE) and the targets of
//!   issue 14.
//!
//! `RC_BENCH_ONLY=calibrate` measures ping-pong bandwidth of every forced
//! path from 1 B to 64 MiB and prints the crossovers and the
//! `REGCACHE_TRANSPORT_*` variables that set them; `RC_BENCH_ONLY=report`
//! (what `cargo xtask bench` runs) adds the intra-node table (keyed DMA,
//! memcpy, vader at every size) and, with `RC_BENCH_CSV=<file>`, writes the
//! curves for the plot.
//!
//! The receiver is this binary re-executed with `RC_BENCH_ROLE`. Compare
//! with Open MPI's shared-memory path with NetPIPE (`NPmpi`, see
//! `transport/benches/README.md`). Numbers are wall-clock on a
//! shared machine: run several times.
#![allow(missing_docs)]

use regcache_transport::dma::{Config, DmaBuffer, Registry};
use regcache_transport::{DmaKey, Segment, ShmSignal, Side, SpinPolicy, Wake};
use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use umn::AddrRange;

const MIB: usize = 1 << 20;
const SIZES: [usize; 4] = [64 << 10, MIB, 4 * MIB, 16 * MIB];

fn main() {
    match std::env::var("RC_BENCH_ROLE").as_deref() {
        Ok("rx") => return role_rx(),
        Ok("pong") => return role_pong(),
        Ok("echo") => return role_echo(),
        _ => {}
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probing: nothing to list.
    }
    println!(
        "# regcache-transport intra-node benchmarks (pid {})",
        std::process::id()
    );
    match std::env::var("RC_BENCH_ONLY").as_deref() {
        Ok("stream") => {
            for &s in &SIZES {
                println!("memcpy {}: {:.2} GB/s", human(s), memcpy_bw(s));
                dma_bw(s, Mode::Default);
            }
        }
        Ok("latency") => {
            let (sig_ns, dma_ns) = latency();
            println!(
                "8-byte ping-pong, half round trip: shm_signal {sig_ns:.0} ns | keyed DMA {dma_ns:.0} ns"
            );
        }
        Ok("calibrate") => {
            calibrate(reps());
        }
        Ok("report") => report(reps()),
        _ => full(reps()),
    }
}

/// `64 KiB`, `4 MiB`, `8 B`.
fn human(n: usize) -> String {
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// The default run: streaming and ping-pong at [`SIZES`] in every mode,
/// 8-byte latency, Open MPI in the same run, the targets of issue 14.
fn full(reps: usize) {
    println!(
        "# best of {reps} interleaved runs each (RC_BENCH_REPS); keyed DMA = the size-aware default path \
         (Config::path_for); assisted = receiver-assisted single copy, single = one process_vm_writev per send"
    );
    let mut stream = Vec::new();
    for &s in &SIZES {
        let mut best = [0f64; 5];
        for _ in 0..reps {
            let r = [
                memcpy_bw(s),
                dma_bw(s, Mode::Default),
                dma_bw(s, Mode::Assisted),
                dma_bw(s, Mode::Single),
                dma_bw(s, Mode::Bounce),
            ];
            for (b, v) in best.iter_mut().zip(r) {
                *b = b.max(v);
            }
        }
        let [memcpy, dflt, assisted, single, bounce] = best;
        println!(
            "size {:>6} streaming: memcpy {memcpy:6.2} GB/s | keyed DMA {dflt:6.2} GB/s ({:.2}x memcpy) | assisted {assisted:6.2} ({:.2}x) | single {single:6.2} ({:.2}x) | bounce {bounce:6.2} ({:.2}x)",
            human(s),
            dflt / memcpy,
            assisted / memcpy,
            single / memcpy,
            bounce / memcpy
        );
        stream.push((memcpy, dflt));
    }
    let mut pp = Vec::new();
    for &s in &SIZES {
        let mut best = [0f64; 4];
        for _ in 0..reps {
            let r = [
                pingpong_bw(s, Mode::Default),
                pingpong_bw(s, Mode::Assisted),
                pingpong_bw(s, Mode::Single),
                pingpong_bw(s, Mode::Bounce),
            ];
            for (b, v) in best.iter_mut().zip(r) {
                *b = b.max(v);
            }
        }
        let [dflt, assisted, single, bounce] = best;
        println!(
            "size {:>6} ping-pong (NetPIPE method, one message in flight): keyed DMA {dflt:6.2} GB/s | assisted {assisted:6.2} | single {single:6.2} | bounce {bounce:6.2}",
            human(s),
        );
        pp.push(dflt);
    }
    println!(
        "# single-copy sends with receiver help: {} of {} (all modes; only `assisted` and the default can)",
        ASSISTED.load(Ordering::Relaxed),
        SENDS.load(Ordering::Relaxed)
    );
    let (sig_ns, dma_ns) = best_latency(reps);
    println!(
        "8-byte ping-pong, half round trip (spin {} iters then futex): shm_signal {sig_ns:.0} ns | keyed DMA {dma_ns:.0} ns",
        spin().iters
    );

    // Open MPI's shared-memory path in the same run, and the targets.
    let sizes: Vec<usize> = std::iter::once(8).chain(SIZES).collect();
    let Some(np) = netpipe(reps, &sizes) else {
        println!("# NetPIPE (NPopenmpi + mpirun) not found: no Open MPI comparison");
        return;
    };
    let np_lat = np.lat_ns(8);
    println!(
        "# Open MPI vader (CMA single copy), NetPIPE NPopenmpi, best of {reps}: 8 B {np_lat:.0} ns; {}",
        SIZES
            .iter()
            .map(|&s| format!("{} {:.2} GB/s", human(s), np.bw(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("# targets (issue 14)");
    for (k, &s) in SIZES.iter().enumerate() {
        let (memcpy, dflt) = stream[k];
        let r = dflt / memcpy;
        let v = np.bw(s);
        println!(
            "{:>6}: streaming {r:.2}x memcpy (target >= 0.90: {}) | ping-pong {:.2} GB/s vs Open MPI {v:.2} GB/s = {:.2}x (target >= 1: {})",
            human(s),
            verdict(r >= 0.9),
            pp[k],
            pp[k] / v,
            verdict(pp[k] >= v)
        );
    }
    println!(
        "8 B latency: keyed DMA {dma_ns:.0} ns vs Open MPI {np_lat:.0} ns = {:.2}x (target <= 1.0: {}); shm_signal {sig_ns:.0} ns = {:.2}x (target <= 0.5: {})",
        dma_ns / np_lat,
        verdict(dma_ns <= np_lat),
        sig_ns / np_lat,
        verdict(sig_ns <= 0.5 * np_lat)
    );
}

fn best_latency(reps: usize) -> (f64, f64) {
    let mut lat = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let (a, b) = latency();
        lat = (lat.0.min(a), lat.1.min(b));
    }
    lat
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Ping-pong bandwidth of every forced path over the sweep, the best of
/// `reps`; prints the table, the crossovers and the variables that set
/// them. Returns `(size, [eager, bounce, single, assisted])` (GB/s; 0 where
/// a path was not run: eager past 1 MiB, assisted under 64 KiB).
fn calibrate(reps: usize) -> Vec<(usize, [f64; 4])> {
    const PATHS: [Mode; 4] = [Mode::Eager, Mode::Bounce, Mode::Single, Mode::Assisted];
    println!("# calibration: ping-pong GB/s per forced path, best of {reps}");
    println!("#      size      eager     bounce     single   assisted");
    let mut rows = Vec::new();
    for s in sweep_sizes() {
        let mut best = [0f64; 4];
        for _ in 0..reps {
            for (b, m) in best.iter_mut().zip(PATHS) {
                let run = match m {
                    Mode::Eager => s <= MIB,
                    Mode::Assisted => s >= 64 << 10,
                    _ => true,
                };
                if run {
                    *b = b.max(pingpong_bw_n(s, m, sweep_iters(s)));
                }
            }
        }
        println!(
            "{:>11} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            human(s),
            best[0],
            best[1],
            best[2],
            best[3]
        );
        rows.push((s, best));
    }
    let (eager_max, cma_min, assist_min) = crossovers(&rows);
    let show = |v: Option<usize>| v.map_or("none in the sweep".to_owned(), human);
    println!(
        "# crossovers: copy through shared memory wins up to {}; single copy from {}; receiver-assisted from {}",
        show(eager_max),
        show(cma_min),
        show(assist_min)
    );
    println!(
        "# to use them: REGCACHE_TRANSPORT_EAGER_MAX_BYTES={} REGCACHE_TRANSPORT_CMA_MIN_BYTES={} REGCACHE_TRANSPORT_ASSIST_MIN_BYTES={}",
        eager_max.unwrap_or(0),
        cma_min.unwrap_or(usize::MAX),
        assist_min.map_or("off".to_owned(), |v| v.to_string())
    );
    rows
}

/// From calibration rows: the largest size up to which copying through
/// shared memory (eager or bounce) beats the single copy at every size,
/// the size from which the single copy (or assisted) wins at every larger
/// size, and the size from which the assisted copy beats the single copy
/// at every larger size.
fn crossovers(rows: &[(usize, [f64; 4])]) -> (Option<usize>, Option<usize>, Option<usize>) {
    let shm = |r: &[f64; 4]| r[0].max(r[1]);
    let cma = |r: &[f64; 4]| r[2].max(r[3]);
    let from = |wins: &dyn Fn(&[f64; 4]) -> bool| {
        let k = rows
            .iter()
            .rposition(|(_, r)| !wins(r))
            .map_or(0, |k| k + 1);
        rows.get(k).map(|(s, _)| *s)
    };
    let cma_min = from(&|r| cma(r) > shm(r));
    let eager_max = rows
        .iter()
        .take_while(|(_, r)| shm(r) >= cma(r))
        .last()
        .map(|(s, _)| *s);
    let assist_min = from(&|r| r[3] > r[2]);
    (eager_max, cma_min, assist_min)
}

/// The report `cargo xtask bench` prints: the calibration, then the
/// intra-node table at every sweep size (keyed DMA on its default path,
/// single-thread memcpy, Open MPI vader, same run), 8-byte latency, and,
/// when `RC_BENCH_CSV` names a file, the bandwidth curves as CSV
/// (`series,bytes,gb_per_s`) for the plot.
fn report(reps: usize) {
    let cal = calibrate(reps);
    let sizes = sweep_sizes();
    let mut dma = vec![0f64; sizes.len()];
    let mut mem = vec![0f64; sizes.len()];
    for _ in 0..reps {
        for (k, &s) in sizes.iter().enumerate() {
            dma[k] = dma[k].max(pingpong_bw_n(s, Mode::Default, sweep_iters(s)));
            mem[k] = mem[k].max(memcpy_bw(s));
        }
    }
    let (sig_ns, dma_ns) = best_latency(reps);
    let np = netpipe(reps, &sizes);
    println!(
        "# intra-node, best of {reps}: keyed DMA = ping-pong on the default path; memcpy = one thread; vader = Open MPI 4 ob1/vader with CMA (NetPIPE NPopenmpi)"
    );
    println!(
        "| size | keyed DMA (GB/s) | memcpy (GB/s) | Open MPI vader (GB/s) | keyed DMA / vader |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for (k, &s) in sizes.iter().enumerate() {
        let v = np.as_ref().map(|n| n.bw(s));
        println!(
            "| {} | {:.3} | {:.3} | {} | {} |",
            human(s),
            dma[k],
            mem[k],
            v.map_or("n/a".to_owned(), |v| format!("{v:.3}")),
            v.map_or("n/a".to_owned(), |v| format!("{:.2}x", dma[k] / v)),
        );
    }
    let np_lat = np.as_ref().map(|n| n.lat_ns(8));
    println!(
        "| 8 B half round trip | {dma_ns:.0} ns | shm_signal alone {sig_ns:.0} ns | {} | {} |",
        np_lat.map_or("n/a".to_owned(), |v| format!("{v:.0} ns")),
        np_lat.map_or("n/a".to_owned(), |v| format!("{:.2}x", dma_ns / v)),
    );
    if np.is_none() {
        println!("# NetPIPE (NPopenmpi + mpirun) not found: no Open MPI column");
    }
    if let Ok(path) = std::env::var("RC_BENCH_CSV") {
        let mut csv = String::from("series,bytes,gb_per_s\n");
        for (k, &s) in sizes.iter().enumerate() {
            csv += &format!("keyed DMA,{s},{}\n", dma[k]);
            csv += &format!("memcpy,{s},{}\n", mem[k]);
        }
        for (s, r) in &cal {
            for (name, v) in ["eager", "bounce", "single copy", "assisted"].iter().zip(r) {
                if *v > 0.0 {
                    csv += &format!("keyed DMA {name},{s},{v}\n");
                }
            }
        }
        if let Some(n) = &np {
            for &(s, bw, _) in &n.points {
                csv += &format!("Open MPI vader,{s},{bw}\n");
            }
        }
        std::fs::write(&path, csv).unwrap();
        println!("# bandwidth curves written to {path}");
    }
}

/// NetPIPE over Open MPI's vader BTL with CMA single copy: its points,
/// best of the runs.
struct NetPipe {
    /// `(bytes, GB/s, half round trip in ns)`, by size.
    points: Vec<(usize, f64, f64)>,
}

impl NetPipe {
    /// The point nearest `size` (NetPIPE picks its own sizes).
    fn at(&self, size: usize) -> (usize, f64, f64) {
        let dist = |s: usize| ((s.max(1) as f64).ln() - (size.max(1) as f64).ln()).abs();
        self.points
            .iter()
            .copied()
            .min_by(|a, b| dist(a.0).total_cmp(&dist(b.0)))
            .unwrap_or((size, f64::NAN, f64::NAN))
    }
    /// Bandwidth at (the point nearest) `size` (GB/s).
    fn bw(&self, size: usize) -> f64 {
        self.at(size).1
    }
    /// Half round trip at (the point nearest) `size` (ns).
    fn lat_ns(&self, size: usize) -> f64 {
        self.at(size).2
    }
}

/// Run `NPopenmpi` `reps` times from the smallest to the largest of
/// `sizes` under `mpirun` with 2 ranks and keep the best of each point;
/// `None` when Open MPI or NetPIPE is missing. NetPIPE's output columns:
/// bytes, Mbit/s, seconds per transfer.
fn netpipe(reps: usize, sizes: &[usize]) -> Option<NetPipe> {
    let dir = std::env::temp_dir().join(format!("rc-netpipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let run = |lo: usize, hi: usize, out: &str| -> Option<Vec<(usize, f64, f64)>> {
        let mut c = Command::new("mpirun");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            c.arg("--allow-run-as-root");
        }
        let st = c
            .args(["--oversubscribe", "-np", "2", "NPopenmpi", "-p", "0"])
            .args(["-l", &lo.to_string(), "-u", &hi.to_string(), "-o", out])
            .env("OMPI_MCA_pml", "ob1")
            .env("OMPI_MCA_btl", "self,vader")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "cma")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !st.success() {
            return None;
        }
        let text = std::fs::read_to_string(dir.join(out)).ok()?;
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.parse().ok()?,
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.parse().ok()?,
                ))
            })
            .collect()
    };
    let lo = sizes.iter().copied().min()?;
    let hi = sizes.iter().copied().max()?;
    let mut best: Vec<(usize, f64, f64)> = Vec::new();
    for _ in 0..reps {
        for (s, mbps, secs) in run(lo, hi, "np.out")? {
            let (bw, ns) = (mbps / 8000.0, secs * 1e9);
            match best.iter_mut().find(|p| p.0 == s) {
                Some(p) => {
                    p.1 = p.1.max(bw);
                    p.2 = p.2.min(ns);
                }
                None => best.push((s, bw, ns)),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    best.sort_by_key(|p| p.0);
    (!best.is_empty()).then_some(NetPipe { points: best })
}

/// `RC_BENCH_SPIN` overrides the receivers' spin policy (iterations).
fn spin() -> SpinPolicy {
    std::env::var("RC_BENCH_SPIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or_else(SpinPolicy::default, |iters| SpinPolicy { iters })
}

static SENDS: AtomicU64 = AtomicU64::new(0);
static ASSISTED: AtomicU64 = AtomicU64::new(0);

fn count_assists(reg: &Registry) {
    let s = reg.stats();
    SENDS.fetch_add(s.cma_sends, Ordering::Relaxed);
    ASSISTED.fetch_add(s.assisted_sends, Ordering::Relaxed);
}

/// `RC_BENCH_REPS`: interleaved repetitions, best kept (default 3).
fn reps() -> usize {
    std::env::var("RC_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Copy path under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// The size-aware choice of the default configuration
    /// (`Config::path_for`, with `REGCACHE_TRANSPORT_*` overrides).
    Default,
    /// Every message eager (copied in and out through shared memory on the
    /// cached fast path; inline up to 24 bytes).
    Eager,
    /// Receiver-assisted single copy at every size.
    Assisted,
    /// One `process_vm_writev` per send at every size (assist off).
    Single,
    /// Forced bounce through the shared segment.
    Bounce,
}

impl Mode {
    fn env(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Eager => "eager",
            Mode::Assisted => "assisted",
            Mode::Single => "single",
            Mode::Bounce => "bounce",
        }
    }
    fn from_env() -> Self {
        match std::env::var("RC_MODE").as_deref() {
            Ok("eager") => Mode::Eager,
            Ok("assisted") => Mode::Assisted,
            Ok("single") => Mode::Single,
            Ok("bounce") => Mode::Bounce,
            _ => Mode::Default,
        }
    }
}

fn cfg(mode: Mode) -> Config {
    let d = Config::default();
    let base = Config {
        restock_wait: Duration::from_secs(10),
        spin: spin(),
        ..d
    };
    match mode {
        Mode::Default => base,
        Mode::Eager => Config {
            eager_max_bytes: u64::MAX,
            ..base
        },
        Mode::Assisted => Config {
            eager_max_bytes: 0,
            cma_min_bytes: 0,
            assist_min_bytes: 0,
            ..base
        },
        Mode::Single => Config {
            eager_max_bytes: 0,
            cma_min_bytes: 0,
            assist_min_bytes: u64::MAX,
            ..base
        },
        Mode::Bounce => Config {
            eager_max_bytes: 0,
            force_bounce: true,
            ..base
        },
    }
}

/// Sizes of the sweeps (calibration, report, plot): 1 B to 64 MiB in
/// steps of 4.
fn sweep_sizes() -> Vec<usize> {
    (0..14).map(|k| 1usize << (2 * k)).collect()
}

/// Ping-pong round trips at `size`: enough to move ~256 MiB each way, at
/// least 16 and at most 20 000 (`RC_BENCH_ROUNDS` caps it too).
fn sweep_iters(size: usize) -> usize {
    (256 * MIB / size).clamp(16, 20_000).min(rounds() as usize)
}

/// NetPIPE's method: one message of `size` each way, time / 2 per message.
fn pingpong_bw(size: usize, mode: Mode) -> f64 {
    pingpong_bw_n(size, mode, (1024 * MIB / size).max(4))
}

/// [`pingpong_bw`] with `iters` round trips (GB/s).
fn pingpong_bw_n(size: usize, mode: Mode, iters: usize) -> f64 {
    let name = format!("rc-bench-{}-pp{size}-{}", std::process::id(), mode.env());
    let reg = Registry::create_with(&name, cfg(mode)).unwrap();
    let place = Segment::memfd(4096).unwrap();
    let mut child = spawn(
        "echo",
        &[
            ("RC_REG", name.clone()),
            ("RC_FD", place.raw_fd().to_string()),
            ("RC_SIZE", size.to_string()),
            ("RC_COUNT", (iters + 1).to_string()),
            ("RC_MODE", mode.env().to_owned()),
        ],
    );
    let mut buf = vec![0u8; size];
    let r = AddrRange::from_buffer(buf.as_mut_ptr(), size).unwrap();
    // SAFETY: `buf` outlives `rx` (dropped first below).
    let mut rx = unsafe {
        reg.bind(
            DmaKey::from_fd(place.raw_fd(), 0).unwrap(),
            &[r],
            &[DmaBuffer::new(vec![r])],
        )
    }
    .unwrap();
    assert_eq!(read_line(&mut child), "READY");
    let to = DmaKey::from_fd(place.raw_fd(), 64).unwrap();
    let src = vec![3u8; size];
    let mut one = || {
        while let Err(e) = reg.send(to, &[&src]) {
            assert!(
                matches!(e, regcache_transport::Error::NoFreeDescriptor(_)),
                "{e}"
            );
        }
        let d = rx.recv(None).unwrap().unwrap();
        rx.restock(d.index).unwrap();
    };
    one();
    let t = Instant::now();
    for _ in 0..iters {
        one();
    }
    let bw = (size * iters * 2) as f64 / t.elapsed().as_secs_f64() / 1e9;
    count_assists(&reg);
    child.wait().unwrap();
    drop(rx);
    drop(buf);
    let _ = Registry::unlink(&name);
    bw
}

fn role_echo() {
    let reg =
        Registry::open_with(&std::env::var("RC_REG").unwrap(), cfg(Mode::from_env())).unwrap();
    let fd: i32 = std::env::var("RC_FD").unwrap().parse().unwrap();
    // SAFETY: inherited across exec for us.
    let place = Segment::map_fd(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap();
    let size: usize = std::env::var("RC_SIZE").unwrap().parse().unwrap();
    let count: u64 = std::env::var("RC_COUNT").unwrap().parse().unwrap();
    let mut buf = vec![0u8; size];
    let r = AddrRange::from_buffer(buf.as_mut_ptr(), size).unwrap();
    // SAFETY: `buf` outlives `rx` (dropped first below).
    let mut rx = unsafe {
        reg.bind(
            DmaKey::from_fd(place.raw_fd(), 64).unwrap(),
            &[r],
            &[DmaBuffer::new(vec![r])],
        )
    }
    .unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    let back = DmaKey::from_fd(place.raw_fd(), 0).unwrap();
    for _ in 0..count {
        let d = rx.recv(None).unwrap().unwrap();
        // Echo our receive buffer back (its address is stable).
        // SAFETY: the delivered bytes lie in our own live buffer.
        let data = unsafe { std::slice::from_raw_parts(r.start() as *const u8, d.len as usize) };
        while let Err(e) = reg.send(back, &[data]) {
            assert!(
                matches!(e, regcache_transport::Error::NoFreeDescriptor(_)),
                "{e}"
            );
        }
        rx.restock(d.index).unwrap();
    }
    drop(rx);
    drop(buf);
}

fn memcpy_bw(size: usize) -> f64 {
    let src = vec![1u8; size];
    let mut dst = vec![0u8; size];
    let iters = (1024 * MIB / size).clamp(8, 10_000_000);
    for _ in 0..2 {
        dst.copy_from_slice(&src);
    }
    let t = Instant::now();
    for _ in 0..iters {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    (size * iters) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn spawn(role: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.env("RC_BENCH_ROLE", role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn read_line(c: &mut std::process::Child) -> String {
    let mut l = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut l)
        .unwrap();
    l.trim().to_owned()
}

fn dma_bw(size: usize, mode: Mode) -> f64 {
    let name = format!("rc-bench-{}-{size}-{}", std::process::id(), mode.env());
    let reg = Registry::create_with(&name, cfg(mode)).unwrap();
    let place = Segment::memfd(4096).unwrap();
    let key = DmaKey::from_fd(place.raw_fd(), 0).unwrap();
    let iters = (2048 * MIB / size).max(8);
    let mut rx = spawn(
        "rx",
        &[
            ("RC_REG", name.clone()),
            ("RC_FD", place.raw_fd().to_string()),
            ("RC_SIZE", size.to_string()),
            ("RC_COUNT", (iters + 2).to_string()),
            ("RC_MODE", mode.env().to_owned()),
        ],
    );
    assert_eq!(read_line(&mut rx), "READY");
    let src = vec![7u8; size];
    for _ in 0..2 {
        reg.send(key, &[&src]).unwrap(); // warm-up (page faults)
    }
    let t = Instant::now();
    for _ in 0..iters {
        while let Err(e) = reg.send(key, &[&src]) {
            assert!(
                matches!(e, regcache_transport::Error::NoFreeDescriptor(_)),
                "{e}"
            );
        }
    }
    assert_eq!(read_line(&mut rx), "DONE");
    let bw = (size * iters) as f64 / t.elapsed().as_secs_f64() / 1e9;
    if std::env::var("RC_BENCH_VERBOSE").is_ok() {
        let st = reg.stats();
        eprintln!(
            "stream {size} {}: {bw:.2} GB/s, {} of {} single-copy sends assisted",
            mode.env(),
            st.assisted_sends,
            st.cma_sends
        );
    }
    count_assists(&reg);
    rx.wait().unwrap();
    let _ = Registry::unlink(&name);
    bw
}

fn role_rx() {
    let reg =
        Registry::open_with(&std::env::var("RC_REG").unwrap(), cfg(Mode::from_env())).unwrap();
    let fd: i32 = std::env::var("RC_FD").unwrap().parse().unwrap();
    // SAFETY: inherited across exec for us.
    let place = Segment::map_fd(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap();
    let key = DmaKey::from_fd(place.raw_fd(), 0).unwrap();
    let size: usize = std::env::var("RC_SIZE").unwrap().parse().unwrap();
    let count: u64 = std::env::var("RC_COUNT").unwrap().parse().unwrap();
    let mut buf = vec![0u8; 2 * size];
    let whole = AddrRange::from_buffer(buf.as_mut_ptr(), buf.len()).unwrap();
    let halves: Vec<DmaBuffer> = (0..2)
        .map(|k| {
            DmaBuffer::new(vec![
                AddrRange::from_start_len(whole.start() + (k * size) as u64, size as u64).unwrap(),
            ])
        })
        .collect();
    // SAFETY: `buf` outlives `rx` (dropped at the end of this function first).
    let mut rx = unsafe { reg.bind(key, &[whole], &halves) }.unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    for _ in 0..count {
        let d = rx.recv(None).unwrap().unwrap();
        rx.restock(d.index).unwrap();
    }
    println!("DONE");
    std::io::stdout().flush().unwrap();
    drop(rx);
    drop(buf);
}

fn mailbox(seg: &Segment, off: usize) -> &AtomicU64 {
    // SAFETY: in bounds (4096-byte segment), aligned, atomics only.
    unsafe { &*seg.as_ptr().add(off).cast::<AtomicU64>() }
}

/// Round trips per latency run (`RC_BENCH_ROUNDS`, default 100 000).
fn rounds() -> u64 {
    std::env::var("RC_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn latency() -> (f64, f64) {
    // shm_signal alone: 8-byte payload in a shared mailbox + doorbell.
    let seg = Arc::new(Segment::memfd(4096).unwrap());
    let sig = ShmSignal::create(seg.clone(), 0, Side::North)
        .unwrap()
        .with_spin(spin());
    // keyed DMA: 8-byte messages both ways.
    let name = format!("rc-bench-{}-lat", std::process::id());
    let reg = Registry::create_with(&name, cfg(Mode::Default)).unwrap();
    let mut child = spawn(
        "pong",
        &[
            ("RC_FD", seg.raw_fd().to_string()),
            ("RC_REG", name.clone()),
        ],
    );
    assert_eq!(read_line(&mut child), "READY");
    let (ping, pong) = (mailbox(&seg, 256), mailbox(&seg, 264));
    let t = Instant::now();
    for i in 1..=rounds() {
        ping.store(i, Ordering::Release);
        sig.notify();
        while pong.load(Ordering::Acquire) < i {
            assert_eq!(sig.wait(None), Wake::Signalled);
        }
    }
    let sig_ns = t.elapsed().as_nanos() as f64 / rounds() as f64 / 2.0;

    let place_key = |off| DmaKey::from_fd(seg.raw_fd(), off).unwrap();
    let mut buf = [0u8; 64];
    let r = AddrRange::from_buffer(buf.as_mut_ptr(), 64).unwrap();
    // SAFETY: `buf` outlives `rx` (dropped below before `buf`).
    let mut rx = unsafe { reg.bind(place_key(1024), &[r], &[DmaBuffer::new(vec![r])]) }.unwrap();
    child.stdin.as_mut().unwrap().write_all(b"DMA\n").unwrap();
    assert_eq!(read_line(&mut child), "BOUND");
    let msg = 42u64.to_le_bytes();
    let t = Instant::now();
    for _ in 0..rounds() {
        reg.send(place_key(2048), &[&msg]).unwrap();
        let d = rx.recv(None).unwrap().unwrap();
        rx.restock(d.index).unwrap();
    }
    let dma_ns = t.elapsed().as_nanos() as f64 / rounds() as f64 / 2.0;
    child.wait().unwrap();
    drop(rx);
    let _ = Registry::unlink(&name);
    (sig_ns, dma_ns)
}

fn role_pong() {
    let fd: i32 = std::env::var("RC_FD").unwrap().parse().unwrap();
    // SAFETY: inherited across exec for us.
    let seg = Arc::new(Segment::map_fd(unsafe { OwnedFd::from_raw_fd(fd) }).unwrap());
    let sig = ShmSignal::attach(seg.clone(), 0, Side::South)
        .unwrap()
        .with_spin(spin());
    let reg = Registry::open_with(&std::env::var("RC_REG").unwrap(), cfg(Mode::Default)).unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    let (ping, pong) = (mailbox(&seg, 256), mailbox(&seg, 264));
    let mut next = 1;
    while next <= rounds() {
        assert_eq!(sig.wait(None), Wake::Signalled);
        while ping.load(Ordering::Acquire) >= next {
            pong.store(next, Ordering::Release);
            sig.notify();
            next += 1;
        }
    }
    let mut l = String::new();
    std::io::stdin().read_line(&mut l).unwrap();
    let key = |off| DmaKey::from_fd(seg.raw_fd(), off).unwrap();
    let mut buf = [0u8; 64];
    let r = AddrRange::from_buffer(buf.as_mut_ptr(), 64).unwrap();
    // SAFETY: `buf` outlives `rx`.
    let mut rx = unsafe { reg.bind(key(2048), &[r], &[DmaBuffer::new(vec![r])]) }.unwrap();
    println!("BOUND");
    std::io::stdout().flush().unwrap();
    for _ in 0..rounds() {
        let d = rx.recv(None).unwrap().unwrap();
        let v = u64::from_le_bytes(buf[..8].try_into().unwrap());
        assert_eq!((d.len, v), (8, 42));
        rx.restock(d.index).unwrap();
        reg.send(key(1024), &[&v.to_le_bytes()]).unwrap();
    }
    drop(rx);
}
