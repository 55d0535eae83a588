//! # regcache-pmpi — `libregcache_pmpi.so`
//!
//! A PMPI interposition library for Open MPI programs. Preload it:
//!
//! ```text
//! mpirun -x LD_PRELOAD=/prefix/lib/libregcache_pmpi.so -np 2 ./app
//! ```
//!
//! and every point-to-point, collective and one-sided buffer of at least
//! `REGCACHE_PMPI_MIN_BYTES` (default 16384) is obtained from a
//! registration cache for the duration of the operation, as an RDMA MPI
//! does for its rendezvous protocol; nonblocking operations (nonblocking
//! collectives, each `MPI_Start` of a persistent request) keep their
//! registration until `MPI_Wait`/`MPI_Test` (and friends) complete them,
//! windows keep theirs until `MPI_Win_free`, RMA origin buffers until the
//! flush, unlock or fence that completes them. docs/C-API.md has the
//! table of what is registered when.
//! Fortran programs (`mpif.h`, `use mpi`) are covered too: Open MPI's
//! Fortran bindings call the `PMPI_` C functions directly, so the library
//! also defines the Fortran entry points (`mpi_send_` and the other
//! manglings, the `fortran!` list below). `use mpi_f08` is not covered.
//! At `MPI_Finalize` each rank prints one line of statistics to stderr,
//! with its hit rate; with `REGCACHE_TRACE_DIR` set, each rank writes its
//! trace there (`trace.<rank>.txt`, the format of DESIGN.md).
//!
//! The cache is configured by the usual `REGCACHE_*` variables
//! (`REGCACHE_REGISTRAR` defaults to `pin` here: `mlock`, no device
//! needed). A malformed variable disables the cache with one message; the
//! application runs unchanged.
//!
//! ## How it is put together
//! A Rust cdylib exports only Rust symbols, so the `MPI_*` entry points are
//! defined here and forward to `rc_MPI_*` in `src/shim.c`, compiled with
//! `mpicc`, which knows the MPI types (spans from the datatype's true
//! extent, so holes and negative lower bounds are covered; a span more
//! than 16 times the bytes moved is skipped) and calls back into the
//! `rcpmpi_*` functions below. Registrations that outlive their call are
//! kept under a key (request, window, window + target) until the call
//! that completes them. The library also defines `shmdt`/`shmat` and friends
//! (`umn::interpose_shm!`) so that SysV detaches invalidate.
//!
//! ## Thread safety
//! Handles in flight live in a mutex-protected map: MPI calls take
//! microseconds, the map is not the bottleneck. `MPI_THREAD_MULTIPLE` is
//! fine.

use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, Config, RawHandle, Registrar, RegistrarKind,
};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::io::Write;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, OnceLock};

umn::interpose_shm!();

type Raw = RawHandle<AnyRegistrar>;

/// A rank's trace file: `A` records written by [`rcpmpi_acquire`], `U`
/// records by the cache's invalidation observer (see [`trace_unmapped`]).
/// Every record carries the rank column of DESIGN.md's format, so a
/// replay names the rank without relying on the file name.
struct Trace {
    out: std::io::BufWriter<std::fs::File>,
    rank: c_int,
}

struct State {
    cache: Cache<AnyRegistrar>,
    min_bytes: usize,
    /// Registrations in flight, by token.
    held: Mutex<HashMap<u64, Raw>>,
    /// Tokens kept past the call that took them, by what releases them:
    /// `(KIND_REQUEST, request, 0)`, `(KIND_WINDOW, window, base)` and
    /// `(KIND_ORIGIN, window, target rank)`.
    kept: Mutex<HashMap<(c_int, usize, usize), Vec<u64>>>,
    /// The buffer of each persistent request, registered at each
    /// `MPI_Start`.
    persistent: Mutex<HashMap<usize, (usize, usize)>>,
    next: AtomicUsize,
    trace: Mutex<Option<Trace>>,
    rank: AtomicUsize,
    below_min: AtomicUsize,
    failed: AtomicUsize,
}

static STATE: OnceLock<Option<State>> = OnceLock::new();
static PENDING: AtomicUsize = AtomicUsize::new(0);
static SKIPPED: AtomicUsize = AtomicUsize::new(0);
/// Tokens handed out and given back: equal at `MPI_Finalize` when every
/// operation that took a registration released it.
static ACQUIRED: AtomicUsize = AtomicUsize::new(0);
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// Kinds of [`rcpmpi_keep`] keys (the shim's `KIND_*`).
const KIND_REQUEST: c_int = 0;

const ACCESS: AccessFlags = AccessFlags::LOCAL_WRITE
    .union(AccessFlags::REMOTE_READ)
    .union(AccessFlags::REMOTE_WRITE);

fn eprint_line(s: &str) {
    // One write(2) per line, so ranks' lines do not interleave.
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

fn setup() -> Result<State, String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let min_bytes = match std::env::var("REGCACHE_PMPI_MIN_BYTES") {
        Ok(v) => regcache::parse_size(&v).ok_or_else(|| {
            format!("REGCACHE_PMPI_MIN_BYTES={v:?} is not valid: expected a size like 16384 or 16K")
        })? as usize,
        Err(_) => 16384,
    };
    let kind = match std::env::var("REGCACHE_REGISTRAR") {
        Ok(v) => v.trim().parse::<RegistrarKind>()?,
        Err(_) => RegistrarKind::Pin,
    };
    let device = std::env::var("REGCACHE_RDMA_DEVICE").ok();
    let registrar = regcache::open_registrar(kind, device.as_deref()).map_err(|e| e.to_string())?;
    Ok(State {
        cache: Cache::new(registrar, config),
        min_bytes,
        held: Mutex::new(HashMap::new()),
        kept: Mutex::new(HashMap::new()),
        persistent: Mutex::new(HashMap::new()),
        next: AtomicUsize::new(1),
        trace: Mutex::new(None),
        rank: AtomicUsize::new(0),
        below_min: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    })
}

fn state() -> Option<&'static State> {
    STATE
        .get_or_init(|| match setup() {
            Ok(s) => Some(s),
            Err(e) => {
                eprint_line(&format!(
                    "regcache-pmpi: cache disabled: {e}; the application runs unchanged\n"
                ));
                None
            }
        })
        .as_ref()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called by the shim after `MPI_Init`/`MPI_Init_thread` succeeded.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_init(rank: c_int) {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        s.rank.store(rank.max(0) as usize, Relaxed);
        if let Ok(dir) = std::env::var("REGCACHE_TRACE_DIR") {
            let path = std::path::Path::new(&dir).join(format!("trace.{rank}.txt"));
            let made = std::fs::create_dir_all(&dir).and_then(|_| std::fs::File::create(&path));
            match made {
                Ok(f) => {
                    let mut w = std::io::BufWriter::new(f);
                    let _ = writeln!(
                        w,
                        "# regcache-pmpi trace, rank {rank}, min_bytes {}",
                        s.min_bytes
                    );
                    *lock(&s.trace) = Some(Trace { out: w, rank });
                    s.cache.set_invalidation_observer(trace_unmapped);
                }
                Err(e) => eprint_line(&format!(
                    "regcache-pmpi: rank {rank}: no trace: {}: {e}\n",
                    path.display()
                )),
            }
        }
    });
}

/// A registration of `[addr, addr+len)` for the duration of an MPI
/// operation: a nonzero token, or 0 when below the threshold or failed.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_acquire(addr: *const c_void, len: usize) -> u64 {
    std::panic::catch_unwind(|| {
        let Some(s) = state() else { return 0 };
        if len < s.min_bytes {
            s.below_min.fetch_add(1, Relaxed);
            return 0;
        }
        let Ok(range) = AddrRange::from_buffer(addr.cast(), len) else {
            return 0;
        };
        let got = s.cache.get_raw(range, ACCESS);
        if let Some(t) = lock(&s.trace).as_mut() {
            trace_get(t, range);
        }
        match got {
            Ok(raw) => {
                let token = s.next.fetch_add(1, Relaxed) as u64;
                lock(&s.held).insert(token, raw);
                ACQUIRED.fetch_add(1, Relaxed);
                token
            }
            Err(_) => {
                s.failed.fetch_add(1, Relaxed);
                0
            }
        }
    })
    .unwrap_or(0)
}

/// Append the `A` record of one get. Any `U` records the get's pending
/// invalidations produce were written before, by [`trace_unmapped`],
/// while the get applied them.
fn trace_get(t: &mut Trace, range: AddrRange) {
    let _ = writeln!(t.out, "{} A {:x} {}", t.rank, range.start(), range.len());
}

/// The cache's invalidation observer while a trace is open: a `U` record
/// for the part of a cached region that was unmapped or changed, exactly
/// as the invalidation source reported it (the munmap's range cut to the
/// region with userfaultfd). Runs inside the cache call that applies the
/// event, never with the trace lock already held (a get takes it only
/// after it returns).
fn trace_unmapped(r: AddrRange) {
    let Some(Some(s)) = STATE.get() else { return };
    if let Some(t) = lock(&s.trace).as_mut() {
        let _ = writeln!(t.out, "{} U {:x} {}", t.rank, r.start(), r.len());
    }
}

/// Release a token from [`rcpmpi_acquire`] (0 is ignored).
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_release(token: u64) {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        let raw = lock(&s.held).remove(&token);
        if let Some(raw) = raw {
            RELEASED.fetch_add(1, Relaxed);
            // SAFETY: every held raw handle came from `s.cache`.
            unsafe { s.cache.release_raw(raw) };
        }
    });
}

/// Keep `token` (0 is ignored) until [`rcpmpi_complete`] or
/// [`rcpmpi_complete_all`] names its key: a nonblocking request
/// (`KIND_REQUEST`, request handle, 0), window memory (`KIND_WINDOW`,
/// window, base) or an RMA origin buffer (`KIND_ORIGIN`, window, target).
/// Several tokens may share a key (a collective's two buffers, the origin
/// buffers of every `MPI_Put` to one target before the next flush); a
/// request handle that is reused while it still holds tokens (the
/// application never completed it) keeps the old ones until it completes.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_keep(kind: c_int, key: usize, sub: usize, token: u64) {
    if token == 0 {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        let mut kept = lock(&s.kept);
        let v = kept.entry((kind, key, sub)).or_default();
        if v.is_empty() && kind == KIND_REQUEST {
            PENDING.fetch_add(1, Relaxed);
        }
        v.push(token);
    });
}

fn release_all(tokens: Vec<Vec<u64>>) {
    for t in tokens.into_iter().flatten() {
        rcpmpi_release(t);
    }
}

/// The operation kept under `(kind, key, sub)` completed (or the request
/// was freed, the window flushed or freed): release its registrations.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_complete(kind: c_int, key: usize, sub: usize) {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        let tokens = lock(&s.kept).remove(&(kind, key, sub));
        if let Some(t) = tokens {
            if kind == KIND_REQUEST {
                PENDING.fetch_sub(1, Relaxed);
            }
            release_all(vec![t]);
        }
    });
}

/// [`rcpmpi_complete`] for every `sub` of `(kind, key)`: all targets of a
/// window at a fence, `MPI_Win_flush_all`, `MPI_Win_unlock_all`,
/// `MPI_Win_complete`; all memory of a window at `MPI_Win_free`.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_complete_all(kind: c_int, key: usize) {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        let mut kept = lock(&s.kept);
        let keys: Vec<_> = kept
            .keys()
            .filter(|k| k.0 == kind && k.1 == key)
            .copied()
            .collect();
        let tokens: Vec<Vec<u64>> = keys.iter().filter_map(|k| kept.remove(k)).collect();
        drop(kept);
        if kind == KIND_REQUEST {
            PENDING.fetch_sub(tokens.len(), Relaxed);
        }
        release_all(tokens);
    });
}

/// Persistent request `request` moves `[addr, addr+len)` at every
/// `MPI_Start` (len 0: nothing to register).
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_persist(request: usize, addr: *const c_void, len: usize) {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        lock(&s.persistent).insert(request, (addr as usize, len));
    });
}

/// `MPI_Start` replaced persistent request `old` with `new` (Open MPI's
/// ob1 does when the previous start is still in the PML's hands): the
/// buffer goes with it.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_moved(old: usize, new: usize) {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        let mut p = lock(&s.persistent);
        if let Some(buf) = p.remove(&old) {
            p.insert(new, buf);
        }
    });
}

/// `MPI_Start` of persistent request `request` succeeded: register its
/// buffer until the completing `MPI_Wait`/`MPI_Test` (or `Request_free`).
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_start(request: usize) {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        let buf = lock(&s.persistent).get(&request).copied();
        if let Some((addr, len)) = buf.filter(|b| b.1 > 0) {
            let t = rcpmpi_acquire(addr as *const c_void, len);
            rcpmpi_keep(KIND_REQUEST, request, 0, t);
        }
    });
}

/// Request `request` was freed: release what it holds and forget its
/// persistent buffer.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_freed(request: usize) {
    rcpmpi_complete(KIND_REQUEST, request, 0);
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        lock(&s.persistent).remove(&request);
    });
}

/// Registrations taken so far (an accessor for tests; also on the
/// statistics line as `acquired`). Stays 0 while the cache is disabled.
#[unsafe(no_mangle)]
pub extern "C" fn regcache_pmpi_acquired() -> usize {
    ACQUIRED.load(Relaxed)
}

/// Registrations taken and not yet released (an accessor for tests; also
/// on the statistics line as `held`).
#[unsafe(no_mangle)]
pub extern "C" fn regcache_pmpi_held() -> usize {
    ACQUIRED
        .load(Relaxed)
        .saturating_sub(RELEASED.load(Relaxed))
}

/// Nonblocking requests holding a registration (the shim skips its
/// bookkeeping when 0).
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_pending() -> usize {
    PENDING.load(Relaxed)
}

/// A buffer the shim would not range (a datatype with a negative extent,
/// a span more than 16 times the bytes it moves).
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_skipped() {
    SKIPPED.fetch_add(1, Relaxed);
}

/// Called before `PMPI_Finalize`: print this rank's statistics line and
/// close the trace.
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_finalize() {
    let _ = std::panic::catch_unwind(|| {
        let Some(s) = state() else { return };
        let rank = s.rank.load(Relaxed);
        // Registrations still held by unfinished requests stay held: the
        // application may never have waited on them.
        s.cache.quiesce();
        let st = s.cache.stats();
        if let Some(mut t) = lock(&s.trace).take() {
            let _ = t.out.flush();
        }
        eprint_line(&format!(
            "regcache-pmpi: rank {rank}: gets {} hits {} misses {} hit_rate {:.2}% \
             registrations {} invalidations {} evictions {} regions {} peak_bytes {} \
             below_min {} skipped {} failed {} acquired {} released {} held {} \
             registrar {} monitor {} min_bytes {}\n",
            st.gets,
            st.hits,
            st.misses,
            st.hit_rate() * 100.0,
            st.registrations,
            st.invalidations_idle + st.invalidations_in_use,
            st.evictions,
            st.regions,
            st.peak_bytes,
            s.below_min.load(Relaxed),
            SKIPPED.load(Relaxed),
            s.failed.load(Relaxed),
            ACQUIRED.load(Relaxed),
            RELEASED.load(Relaxed),
            regcache_pmpi_held(),
            s.cache.registrar().name(),
            s.cache.monitor().name(),
            s.min_bytes,
        ));
    });
}

/// Define `MPI_<name>` forwarding to the shim's `rc_MPI_<name>`.
macro_rules! forward {
    ($( $name:ident => $shim:ident ( $($arg:ident : $ty:ty),* ); )*) => {
        unsafe extern "C" {
            $( fn $shim($($arg: $ty),*) -> c_int; )*
        }
        $(
            /// Interposed MPI entry point: see the crate docs.
            ///
            /// # Safety
            /// As the MPI standard's function of the same name.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
                // SAFETY: same arguments, same contract; the shim calls
                // the PMPI_ function with them.
                unsafe { $shim($($arg),*) }
            }
        )*
    };
}

type P = *mut c_void;
type I = c_int;
type Ints = *const c_int;
/// `MPI_Aint` (Open MPI: `ptrdiff_t`).
type A = isize;

forward! {
    MPI_Init => rc_MPI_Init(argc: *mut c_int, argv: *mut *mut *mut c_char);
    MPI_Init_thread => rc_MPI_Init_thread(argc: *mut c_int, argv: *mut *mut *mut c_char, required: I, provided: *mut c_int);
    MPI_Finalize => rc_MPI_Finalize();
    MPI_Send => rc_MPI_Send(buf: P, count: I, dt: P, dest: I, tag: I, comm: P);
    MPI_Ssend => rc_MPI_Ssend(buf: P, count: I, dt: P, dest: I, tag: I, comm: P);
    MPI_Rsend => rc_MPI_Rsend(buf: P, count: I, dt: P, dest: I, tag: I, comm: P);
    MPI_Bsend => rc_MPI_Bsend(buf: P, count: I, dt: P, dest: I, tag: I, comm: P);
    MPI_Recv => rc_MPI_Recv(buf: P, count: I, dt: P, src: I, tag: I, comm: P, st: P);
    MPI_Sendrecv => rc_MPI_Sendrecv(sbuf: P, scount: I, sdt: P, dest: I, stag: I, rbuf: P, rcount: I, rdt: P, src: I, rtag: I, comm: P, st: P);
    MPI_Sendrecv_replace => rc_MPI_Sendrecv_replace(buf: P, count: I, dt: P, dest: I, stag: I, src: I, rtag: I, comm: P, st: P);
    MPI_Isend => rc_MPI_Isend(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Issend => rc_MPI_Issend(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Irsend => rc_MPI_Irsend(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Ibsend => rc_MPI_Ibsend(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Irecv => rc_MPI_Irecv(buf: P, count: I, dt: P, src: I, tag: I, comm: P, req: P);
    MPI_Wait => rc_MPI_Wait(req: P, st: P);
    MPI_Test => rc_MPI_Test(req: P, flag: *mut c_int, st: P);
    MPI_Request_free => rc_MPI_Request_free(req: P);
    MPI_Waitall => rc_MPI_Waitall(n: I, reqs: P, sts: P);
    MPI_Testall => rc_MPI_Testall(n: I, reqs: P, flag: *mut c_int, sts: P);
    MPI_Waitany => rc_MPI_Waitany(n: I, reqs: P, idx: *mut c_int, st: P);
    MPI_Testany => rc_MPI_Testany(n: I, reqs: P, idx: *mut c_int, flag: *mut c_int, st: P);
    MPI_Waitsome => rc_MPI_Waitsome(n: I, reqs: P, outn: *mut c_int, idx: *mut c_int, sts: P);
    MPI_Testsome => rc_MPI_Testsome(n: I, reqs: P, outn: *mut c_int, idx: *mut c_int, sts: P);
    MPI_Bcast => rc_MPI_Bcast(buf: P, count: I, dt: P, root: I, comm: P);
    MPI_Reduce => rc_MPI_Reduce(sbuf: P, rbuf: P, count: I, dt: P, op: P, root: I, comm: P);
    MPI_Allreduce => rc_MPI_Allreduce(sbuf: P, rbuf: P, count: I, dt: P, op: P, comm: P);
    MPI_Scan => rc_MPI_Scan(sbuf: P, rbuf: P, count: I, dt: P, op: P, comm: P);
    MPI_Exscan => rc_MPI_Exscan(sbuf: P, rbuf: P, count: I, dt: P, op: P, comm: P);
    MPI_Reduce_scatter_block => rc_MPI_Reduce_scatter_block(sbuf: P, rbuf: P, rcount: I, dt: P, op: P, comm: P);
    MPI_Reduce_scatter => rc_MPI_Reduce_scatter(sbuf: P, rbuf: P, rcounts: Ints, dt: P, op: P, comm: P);
    MPI_Gather => rc_MPI_Gather(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, root: I, comm: P);
    MPI_Gatherv => rc_MPI_Gatherv(sbuf: P, scount: I, sdt: P, rbuf: P, rcounts: Ints, displs: Ints, rdt: P, root: I, comm: P);
    MPI_Scatter => rc_MPI_Scatter(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, root: I, comm: P);
    MPI_Scatterv => rc_MPI_Scatterv(sbuf: P, scounts: Ints, displs: Ints, sdt: P, rbuf: P, rcount: I, rdt: P, root: I, comm: P);
    MPI_Allgather => rc_MPI_Allgather(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P);
    MPI_Allgatherv => rc_MPI_Allgatherv(sbuf: P, scount: I, sdt: P, rbuf: P, rcounts: Ints, displs: Ints, rdt: P, comm: P);
    MPI_Alltoall => rc_MPI_Alltoall(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P);
    MPI_Alltoallv => rc_MPI_Alltoallv(sbuf: P, scounts: Ints, sdispls: Ints, sdt: P, rbuf: P, rcounts: Ints, rdispls: Ints, rdt: P, comm: P);
    MPI_Alltoallw => rc_MPI_Alltoallw(sbuf: P, scounts: Ints, sdispls: Ints, sdts: P, rbuf: P, rcounts: Ints, rdispls: Ints, rdts: P, comm: P);
    // Matched probe receives.
    MPI_Mrecv => rc_MPI_Mrecv(buf: P, count: I, dt: P, msg: P, st: P);
    MPI_Imrecv => rc_MPI_Imrecv(buf: P, count: I, dt: P, msg: P, req: P);
    // Persistent requests.
    MPI_Send_init => rc_MPI_Send_init(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Ssend_init => rc_MPI_Ssend_init(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Rsend_init => rc_MPI_Rsend_init(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Bsend_init => rc_MPI_Bsend_init(buf: P, count: I, dt: P, dest: I, tag: I, comm: P, req: P);
    MPI_Recv_init => rc_MPI_Recv_init(buf: P, count: I, dt: P, src: I, tag: I, comm: P, req: P);
    MPI_Start => rc_MPI_Start(req: P);
    MPI_Startall => rc_MPI_Startall(n: I, reqs: P);
    // Nonblocking collectives (Open MPI 4.1).
    MPI_Ibcast => rc_MPI_Ibcast(buf: P, count: I, dt: P, root: I, comm: P, req: P);
    MPI_Ireduce => rc_MPI_Ireduce(sbuf: P, rbuf: P, count: I, dt: P, op: P, root: I, comm: P, req: P);
    MPI_Iallreduce => rc_MPI_Iallreduce(sbuf: P, rbuf: P, count: I, dt: P, op: P, comm: P, req: P);
    MPI_Iscan => rc_MPI_Iscan(sbuf: P, rbuf: P, count: I, dt: P, op: P, comm: P, req: P);
    MPI_Iexscan => rc_MPI_Iexscan(sbuf: P, rbuf: P, count: I, dt: P, op: P, comm: P, req: P);
    MPI_Ireduce_scatter_block => rc_MPI_Ireduce_scatter_block(sbuf: P, rbuf: P, rcount: I, dt: P, op: P, comm: P, req: P);
    MPI_Ireduce_scatter => rc_MPI_Ireduce_scatter(sbuf: P, rbuf: P, rcounts: Ints, dt: P, op: P, comm: P, req: P);
    MPI_Igather => rc_MPI_Igather(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, root: I, comm: P, req: P);
    MPI_Igatherv => rc_MPI_Igatherv(sbuf: P, scount: I, sdt: P, rbuf: P, rcounts: Ints, displs: Ints, rdt: P, root: I, comm: P, req: P);
    MPI_Iscatter => rc_MPI_Iscatter(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, root: I, comm: P, req: P);
    MPI_Iscatterv => rc_MPI_Iscatterv(sbuf: P, scounts: Ints, displs: Ints, sdt: P, rbuf: P, rcount: I, rdt: P, root: I, comm: P, req: P);
    MPI_Iallgather => rc_MPI_Iallgather(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P, req: P);
    MPI_Iallgatherv => rc_MPI_Iallgatherv(sbuf: P, scount: I, sdt: P, rbuf: P, rcounts: Ints, displs: Ints, rdt: P, comm: P, req: P);
    MPI_Ialltoall => rc_MPI_Ialltoall(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P, req: P);
    MPI_Ialltoallv => rc_MPI_Ialltoallv(sbuf: P, scounts: Ints, sdispls: Ints, sdt: P, rbuf: P, rcounts: Ints, rdispls: Ints, rdt: P, comm: P, req: P);
    MPI_Ialltoallw => rc_MPI_Ialltoallw(sbuf: P, scounts: Ints, sdispls: Ints, sdts: P, rbuf: P, rcounts: Ints, rdispls: Ints, rdts: P, comm: P, req: P);
    // Neighborhood collectives.
    MPI_Neighbor_allgather => rc_MPI_Neighbor_allgather(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P);
    MPI_Ineighbor_allgather => rc_MPI_Ineighbor_allgather(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P, req: P);
    MPI_Neighbor_allgatherv => rc_MPI_Neighbor_allgatherv(sbuf: P, scount: I, sdt: P, rbuf: P, rcounts: Ints, displs: Ints, rdt: P, comm: P);
    MPI_Ineighbor_allgatherv => rc_MPI_Ineighbor_allgatherv(sbuf: P, scount: I, sdt: P, rbuf: P, rcounts: Ints, displs: Ints, rdt: P, comm: P, req: P);
    MPI_Neighbor_alltoall => rc_MPI_Neighbor_alltoall(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P);
    MPI_Ineighbor_alltoall => rc_MPI_Ineighbor_alltoall(sbuf: P, scount: I, sdt: P, rbuf: P, rcount: I, rdt: P, comm: P, req: P);
    MPI_Neighbor_alltoallv => rc_MPI_Neighbor_alltoallv(sbuf: P, scounts: Ints, sdispls: Ints, sdt: P, rbuf: P, rcounts: Ints, rdispls: Ints, rdt: P, comm: P);
    MPI_Ineighbor_alltoallv => rc_MPI_Ineighbor_alltoallv(sbuf: P, scounts: Ints, sdispls: Ints, sdt: P, rbuf: P, rcounts: Ints, rdispls: Ints, rdt: P, comm: P, req: P);
    MPI_Neighbor_alltoallw => rc_MPI_Neighbor_alltoallw(sbuf: P, scounts: Ints, sdispls: P, sdts: P, rbuf: P, rcounts: Ints, rdispls: P, rdts: P, comm: P);
    MPI_Ineighbor_alltoallw => rc_MPI_Ineighbor_alltoallw(sbuf: P, scounts: Ints, sdispls: P, sdts: P, rbuf: P, rcounts: Ints, rdispls: P, rdts: P, comm: P, req: P);
    // One-sided: window memory and origin buffers.
    MPI_Win_create => rc_MPI_Win_create(base: P, size: A, disp_unit: I, info: P, comm: P, win: P);
    MPI_Win_allocate => rc_MPI_Win_allocate(size: A, disp_unit: I, info: P, comm: P, baseptr: P, win: P);
    MPI_Win_attach => rc_MPI_Win_attach(win: P, base: P, size: A);
    MPI_Win_detach => rc_MPI_Win_detach(win: P, base: P);
    MPI_Win_free => rc_MPI_Win_free(win: P);
    MPI_Win_fence => rc_MPI_Win_fence(assert: I, win: P);
    MPI_Win_complete => rc_MPI_Win_complete(win: P);
    MPI_Win_unlock => rc_MPI_Win_unlock(target: I, win: P);
    MPI_Win_unlock_all => rc_MPI_Win_unlock_all(win: P);
    MPI_Win_flush => rc_MPI_Win_flush(target: I, win: P);
    MPI_Win_flush_all => rc_MPI_Win_flush_all(win: P);
    MPI_Win_flush_local => rc_MPI_Win_flush_local(target: I, win: P);
    MPI_Win_flush_local_all => rc_MPI_Win_flush_local_all(win: P);
    MPI_Put => rc_MPI_Put(obuf: P, ocount: I, odt: P, target: I, tdisp: A, tcount: I, tdt: P, win: P);
    MPI_Get => rc_MPI_Get(obuf: P, ocount: I, odt: P, target: I, tdisp: A, tcount: I, tdt: P, win: P);
    MPI_Accumulate => rc_MPI_Accumulate(obuf: P, ocount: I, odt: P, target: I, tdisp: A, tcount: I, tdt: P, op: P, win: P);
    MPI_Get_accumulate => rc_MPI_Get_accumulate(obuf: P, ocount: I, odt: P, rbuf: P, rcount: I, rdt: P, target: I, tdisp: A, tcount: I, tdt: P, op: P, win: P);
    MPI_Rput => rc_MPI_Rput(obuf: P, ocount: I, odt: P, target: I, tdisp: A, tcount: I, tdt: P, win: P, req: P);
    MPI_Rget => rc_MPI_Rget(obuf: P, ocount: I, odt: P, target: I, tdisp: A, tcount: I, tdt: P, win: P, req: P);
    MPI_Raccumulate => rc_MPI_Raccumulate(obuf: P, ocount: I, odt: P, target: I, tdisp: A, tcount: I, tdt: P, op: P, win: P, req: P);
    MPI_Rget_accumulate => rc_MPI_Rget_accumulate(obuf: P, ocount: I, odt: P, rbuf: P, rcount: I, rdt: P, target: I, tdisp: A, tcount: I, tdt: P, op: P, win: P, req: P);
}

/// Define the Fortran entry points `mpi_<name>_`, `mpi_<name>`,
/// `mpi_<name>__` and `MPI_<NAME>` (every mangling Open MPI's
/// `libmpi_mpifh` exports) forwarding to the shim's `rcf_<name>`. Fortran
/// passes every argument by reference, so each is a pointer; the shim calls
/// Open MPI's `pmpi_<name>_`.
macro_rules! fortran {
    ($( $shim:ident ( $lower:literal, $upper:literal ) ( $($arg:ident),* ); )*) => {
        unsafe extern "C" {
            $( fn $shim($($arg: P),*); )*
        }
        $(
            // Each mangling in its own anonymous scope, so that the four
            // functions need no names of their own.
            const _: () = {
                #[unsafe(export_name = concat!($lower, "_"))]
                unsafe extern "C" fn underscore($($arg: P),*) {
                    // SAFETY: the Fortran caller's arguments, passed on
                    // unchanged to the shim, which calls pmpi_<name>_.
                    unsafe { $shim($($arg),*) }
                }
                #[unsafe(export_name = $lower)]
                unsafe extern "C" fn plain($($arg: P),*) {
                    // SAFETY: as above.
                    unsafe { $shim($($arg),*) }
                }
                #[unsafe(export_name = concat!($lower, "__"))]
                unsafe extern "C" fn double($($arg: P),*) {
                    // SAFETY: as above.
                    unsafe { $shim($($arg),*) }
                }
                #[unsafe(export_name = $upper)]
                unsafe extern "C" fn upper($($arg: P),*) {
                    // SAFETY: as above.
                    unsafe { $shim($($arg),*) }
                }
            };
        )*
    };
}

// The Fortran bindings (mpif.h and `use mpi`): Open MPI's call the PMPI_ C
// functions directly, so the C entry points above never see them.
fortran! {
    rcf_init("mpi_init", "MPI_INIT")(ierr);
    rcf_init_thread("mpi_init_thread", "MPI_INIT_THREAD")(required, provided, ierr);
    rcf_finalize("mpi_finalize", "MPI_FINALIZE")(ierr);
    rcf_send("mpi_send", "MPI_SEND")(buf, count, dt, dest, tag, comm, ierr);
    rcf_ssend("mpi_ssend", "MPI_SSEND")(buf, count, dt, dest, tag, comm, ierr);
    rcf_rsend("mpi_rsend", "MPI_RSEND")(buf, count, dt, dest, tag, comm, ierr);
    rcf_bsend("mpi_bsend", "MPI_BSEND")(buf, count, dt, dest, tag, comm, ierr);
    rcf_recv("mpi_recv", "MPI_RECV")(buf, count, dt, src, tag, comm, st, ierr);
    rcf_sendrecv("mpi_sendrecv", "MPI_SENDRECV")(sbuf, scount, sdt, dest, stag, rbuf, rcount, rdt, src, rtag, comm, st, ierr);
    rcf_sendrecv_replace("mpi_sendrecv_replace", "MPI_SENDRECV_REPLACE")(buf, count, dt, dest, stag, src, rtag, comm, st, ierr);
    rcf_isend("mpi_isend", "MPI_ISEND")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_issend("mpi_issend", "MPI_ISSEND")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_irsend("mpi_irsend", "MPI_IRSEND")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_ibsend("mpi_ibsend", "MPI_IBSEND")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_irecv("mpi_irecv", "MPI_IRECV")(buf, count, dt, src, tag, comm, req, ierr);
    rcf_mrecv("mpi_mrecv", "MPI_MRECV")(buf, count, dt, msg, st, ierr);
    rcf_imrecv("mpi_imrecv", "MPI_IMRECV")(buf, count, dt, msg, req, ierr);
    rcf_send_init("mpi_send_init", "MPI_SEND_INIT")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_ssend_init("mpi_ssend_init", "MPI_SSEND_INIT")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_rsend_init("mpi_rsend_init", "MPI_RSEND_INIT")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_bsend_init("mpi_bsend_init", "MPI_BSEND_INIT")(buf, count, dt, dest, tag, comm, req, ierr);
    rcf_recv_init("mpi_recv_init", "MPI_RECV_INIT")(buf, count, dt, src, tag, comm, req, ierr);
    rcf_start("mpi_start", "MPI_START")(req, ierr);
    rcf_startall("mpi_startall", "MPI_STARTALL")(n, reqs, ierr);
    rcf_wait("mpi_wait", "MPI_WAIT")(req, st, ierr);
    rcf_test("mpi_test", "MPI_TEST")(req, flag, st, ierr);
    rcf_waitall("mpi_waitall", "MPI_WAITALL")(n, reqs, sts, ierr);
    rcf_testall("mpi_testall", "MPI_TESTALL")(n, reqs, flag, sts, ierr);
    rcf_waitany("mpi_waitany", "MPI_WAITANY")(n, reqs, idx, st, ierr);
    rcf_testany("mpi_testany", "MPI_TESTANY")(n, reqs, idx, flag, st, ierr);
    rcf_waitsome("mpi_waitsome", "MPI_WAITSOME")(n, reqs, outn, idx, sts, ierr);
    rcf_testsome("mpi_testsome", "MPI_TESTSOME")(n, reqs, outn, idx, sts, ierr);
    rcf_request_free("mpi_request_free", "MPI_REQUEST_FREE")(req, ierr);
    rcf_bcast("mpi_bcast", "MPI_BCAST")(buf, count, dt, root, comm, ierr);
    rcf_reduce("mpi_reduce", "MPI_REDUCE")(sbuf, rbuf, count, dt, op, root, comm, ierr);
    rcf_allreduce("mpi_allreduce", "MPI_ALLREDUCE")(sbuf, rbuf, count, dt, op, comm, ierr);
    rcf_scan("mpi_scan", "MPI_SCAN")(sbuf, rbuf, count, dt, op, comm, ierr);
    rcf_exscan("mpi_exscan", "MPI_EXSCAN")(sbuf, rbuf, count, dt, op, comm, ierr);
    rcf_reduce_scatter_block("mpi_reduce_scatter_block", "MPI_REDUCE_SCATTER_BLOCK")(sbuf, rbuf, rcount, dt, op, comm, ierr);
    rcf_reduce_scatter("mpi_reduce_scatter", "MPI_REDUCE_SCATTER")(sbuf, rbuf, rcounts, dt, op, comm, ierr);
    rcf_gather("mpi_gather", "MPI_GATHER")(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, ierr);
    rcf_gatherv("mpi_gatherv", "MPI_GATHERV")(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm, ierr);
    rcf_scatter("mpi_scatter", "MPI_SCATTER")(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, ierr);
    rcf_scatterv("mpi_scatterv", "MPI_SCATTERV")(sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm, ierr);
    rcf_allgather("mpi_allgather", "MPI_ALLGATHER")(sbuf, scount, sdt, rbuf, rcount, rdt, comm, ierr);
    rcf_allgatherv("mpi_allgatherv", "MPI_ALLGATHERV")(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, ierr);
    rcf_alltoall("mpi_alltoall", "MPI_ALLTOALL")(sbuf, scount, sdt, rbuf, rcount, rdt, comm, ierr);
    rcf_alltoallv("mpi_alltoallv", "MPI_ALLTOALLV")(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm, ierr);
    rcf_alltoallw("mpi_alltoallw", "MPI_ALLTOALLW")(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm, ierr);
    // Nonblocking collectives.
    rcf_ibcast("mpi_ibcast", "MPI_IBCAST")(buf, count, dt, root, comm, req, ierr);
    rcf_ireduce("mpi_ireduce", "MPI_IREDUCE")(sbuf, rbuf, count, dt, op, root, comm, req, ierr);
    rcf_iallreduce("mpi_iallreduce", "MPI_IALLREDUCE")(sbuf, rbuf, count, dt, op, comm, req, ierr);
    rcf_iscan("mpi_iscan", "MPI_ISCAN")(sbuf, rbuf, count, dt, op, comm, req, ierr);
    rcf_iexscan("mpi_iexscan", "MPI_IEXSCAN")(sbuf, rbuf, count, dt, op, comm, req, ierr);
    rcf_ireduce_scatter_block("mpi_ireduce_scatter_block", "MPI_IREDUCE_SCATTER_BLOCK")(sbuf, rbuf, rcount, dt, op, comm, req, ierr);
    rcf_ireduce_scatter("mpi_ireduce_scatter", "MPI_IREDUCE_SCATTER")(sbuf, rbuf, rcounts, dt, op, comm, req, ierr);
    rcf_igather("mpi_igather", "MPI_IGATHER")(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, req, ierr);
    rcf_igatherv("mpi_igatherv", "MPI_IGATHERV")(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm, req, ierr);
    rcf_iscatter("mpi_iscatter", "MPI_ISCATTER")(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, req, ierr);
    rcf_iscatterv("mpi_iscatterv", "MPI_ISCATTERV")(sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm, req, ierr);
    rcf_iallgather("mpi_iallgather", "MPI_IALLGATHER")(sbuf, scount, sdt, rbuf, rcount, rdt, comm, req, ierr);
    rcf_iallgatherv("mpi_iallgatherv", "MPI_IALLGATHERV")(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, req, ierr);
    rcf_ialltoall("mpi_ialltoall", "MPI_IALLTOALL")(sbuf, scount, sdt, rbuf, rcount, rdt, comm, req, ierr);
    rcf_ialltoallv("mpi_ialltoallv", "MPI_IALLTOALLV")(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm, req, ierr);
    rcf_ialltoallw("mpi_ialltoallw", "MPI_IALLTOALLW")(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm, req, ierr);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bookkeeping without MPI: a persistent buffer registered at each
    /// start, following its request when `MPI_Start` replaces it; origin
    /// buffers released per target and all at once; balance at the end.
    #[test]
    fn keep_complete_persist() {
        // SAFETY: set before the state is first built, in this process only.
        unsafe { std::env::set_var("REGCACHE_PMPI_MIN_BYTES", "1") };
        let buf = vec![0u8; 1 << 16];
        let p = buf.as_ptr().cast::<c_void>();
        let base = regcache_pmpi_held();
        rcpmpi_persist(1, p, buf.len());
        rcpmpi_start(1);
        assert_eq!(regcache_pmpi_held(), base + 1);
        assert_eq!(rcpmpi_pending(), 1);
        rcpmpi_complete(KIND_REQUEST, 1, 0);
        assert_eq!((regcache_pmpi_held(), rcpmpi_pending()), (base, 0));
        rcpmpi_moved(1, 2);
        rcpmpi_start(1);
        assert_eq!(regcache_pmpi_held(), base, "the buffer moved to request 2");
        rcpmpi_start(2);
        assert_eq!(regcache_pmpi_held(), base + 1);
        rcpmpi_freed(2);
        assert_eq!((regcache_pmpi_held(), rcpmpi_pending()), (base, 0));
        rcpmpi_start(2);
        assert_eq!(regcache_pmpi_held(), base, "freed: forgotten");

        // Origin buffers of window 7: two to target 0, one to target 1.
        for target in [0, 0, 1] {
            rcpmpi_keep(2, 7, target, rcpmpi_acquire(p, 4096));
        }
        assert_eq!(regcache_pmpi_held(), base + 3);
        rcpmpi_complete(2, 7, 0);
        assert_eq!(regcache_pmpi_held(), base + 1);
        rcpmpi_keep(2, 7, 0, rcpmpi_acquire(p, 4096));
        rcpmpi_complete_all(2, 7);
        assert_eq!(regcache_pmpi_held(), base);
        assert_eq!(rcpmpi_pending(), 0);
    }
}
