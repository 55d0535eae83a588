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
//! manglings). `use mpi_f08` is not covered.
//! At `MPI_Finalize` each rank prints one line of statistics to stderr,
//! with its hit rate; with `REGCACHE_TRACE_DIR` set, each rank writes its
//! trace there (`trace.<rank>.txt`, the format of docs/TRACES.md).
//!
//! The cache is configured by the usual `REGCACHE_*` variables
//! (`REGCACHE_REGISTRAR` defaults to `pin` here: `mlock`, no device
//! needed). A malformed variable disables the cache with one message; the
//! application runs unchanged.
//!
//! ## How it is put together
//! The MPI entry points are C, and only C: `src/mpi_functions.def` is the
//! one list of the wrapped functions (an X-macro table: name, Fortran
//! names, shape of the wrapper, what it registers, parameters), from which
//! the C preprocessor makes the C entry points `MPI_*` (`src/pmpi_c.c`),
//! the Fortran ones (`src/pmpi_fortran.c`) and their export list
//! (`src/exports.h`); `src/pmpi_common.c` has the helpers both languages
//! share. The C side knows the MPI types (`mpi.h` declares every
//! `MPI_*`/`PMPI_*` prototype, so the compiler checks the table against
//! it; spans come from the datatype's true extent, so holes and negative
//! lower bounds are covered; a span more than 16 times the bytes moved is
//! skipped) and calls the `rcpmpi_*` functions below, which take plain C
//! types only (pointers, sizes, integers, tokens): Rust keeps the cache,
//! the per-request bookkeeping, the statistics and the traces, and knows
//! nothing of Open MPI's ABI. Registrations that outlive their call are
//! kept under a key (request, window, window + target) until the call
//! that completes them. The library also defines `shmdt`/`shmat` and
//! friends (`umn::interpose_shm!`) so that SysV detaches invalidate.
//!
//! Getting C symbols out of a Rust cdylib takes two steps (build.rs).
//! rustc links a cdylib with a version script that exports the Rust
//! `#[no_mangle]` functions and makes every other symbol local, those of
//! a C archive linked into it included, `+whole-archive` or not (which
//! only decides whether the archive's unreferenced objects are linked at
//! all: nothing in Rust calls `MPI_Send`, so they need it). So build.rs
//! also passes a second version script listing the MPI names, made from
//! the table; the linker merges the two, and a name listed exactly wins
//! over rustc's `local: *`. That takes rust-lld, rustc's default linker on
//! x86_64 Linux since Rust 1.90: GNU ld refuses to combine two anonymous
//! version scripts ("anonymous version tag cannot be combined with other
//! version tags"). Linking the final `.so` with `mpicc` from a Rust
//! staticlib would avoid the linker question, but `cargo build` would then
//! no longer produce the library.
//!
//! ## Thread safety
//! Handles in flight live in a mutex-protected map: MPI calls take
//! microseconds, the map is not the bottleneck. `MPI_THREAD_MULTIPLE` is
//! fine.

use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, Config, RawHandle, Registrar, RegistrarKind,
};
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::io::Write;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, OnceLock};

umn::interpose_shm!();

type Raw = RawHandle<AnyRegistrar>;

/// A rank's trace file: `A` records written by [`rcpmpi_acquire`], `U`
/// records by the cache's invalidation observer (see [`trace_unmapped`]).
/// Every record carries the rank column of docs/TRACES.md's format, so a
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

/// Kinds of [`rcpmpi_keep`] keys (`KIND_*` in `src/pmpi_common.h`).
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

/// Called by the C wrappers after `MPI_Init`/`MPI_Init_thread` succeeded.
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

/// Nonblocking requests holding a registration (the C wrappers skip their
/// bookkeeping when 0).
#[unsafe(no_mangle)]
pub extern "C" fn rcpmpi_pending() -> usize {
    PENDING.load(Relaxed)
}

/// A buffer the C wrappers would not range (a datatype with a negative extent,
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
             registrar {} monitor {} min_bytes {} verified {} mismatches {}\n",
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
            st.verify_checks,
            st.verify_mismatches,
        ));
    });
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
