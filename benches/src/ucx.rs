//! `--compare ucx`: the same trace through UCX's registration cache.
//!
//! UCX's `ucs_rcache` (UCX 1.13, Debian 12's `libucx-dev`) is the cache
//! UCX-based MPI stacks use; a user deciding between the two wants both on
//! *their* trace, side by side. The C shim `ucx/rcache_shim.c` (built by
//! `build.rs` only when UCX's headers are installed) wraps UCX's public
//! rcache API; this module replays a trace through it exactly as
//! [`crate::replay`] replays it through regcache:
//!
//! - the same memory: [`Layout::map`] of the trace, every page touched
//!   before the timed loop;
//! - `A` = get + put back (`ucs_rcache_get`, `ucs_rcache_region_put`);
//!   a get during which the registrar ran is a miss;
//! - `U` = `ucm_vm_munmap`, UCX's documented external unmap event (UCX
//!   queues the range and invalidates on its next get); its time counts
//!   as the cache's;
//! - the registrar: `mlock`/`munlock`, as regcache's `pin` registrar; its
//!   time (measured inside the shim's callbacks) is excluded from
//!   `cache_ns_per_op`, as regcache's registrar time is;
//! - the limits: regcache's `max_regions` and `max_bytes` become UCX's
//!   `max_regions` and `max_size` (UCX evicts least recently used).
//!
//! UCX always merges overlapping requests into one region (it has no
//! switch), and invalidates only on its next get; regcache's figures are
//! those of [`crate::replay`] with the configuration given.
//!
//! **Interleaving.** Timings on a shared machine drift by tens of percent
//! within a minute, so [`compare`] runs `rounds` rounds, each replaying
//! the trace through regcache and then through UCX (alternating which
//! goes first), and reports the median of each cache's `cache_ns_per_op`
//! and the median of the per-round ratios.

use crate::layout::Layout;
use crate::replay::{self, RankReport};
use crate::trace::{Kind, Trace};
use regcache::{AddrRange, Config, Registrar};
use serde::Serialize;

/// One rank of one trace through UCX's cache.
#[derive(Debug, Clone, Serialize)]
pub struct UcxReport {
    /// Trace name.
    pub trace: String,
    /// Rank within the trace.
    pub rank: u32,
    /// Records replayed (A + U).
    pub ops: u64,
    /// `A` records.
    pub acquires: u64,
    /// Gets the registrar did not run for.
    pub hits: u64,
    /// Gets the registrar ran for.
    pub misses: u64,
    /// hits / acquires.
    pub hit_rate: f64,
    /// Registrar registrations (`mlock`).
    pub registrations: u64,
    /// Registrar deregistrations (`munlock`).
    pub deregistrations: u64,
    /// Time inside the registrar, ns.
    pub registrar_ns: u64,
    /// (replay wall time − registrar time) / ops, in ns.
    pub cache_ns_per_op: f64,
}

/// One rank of one trace through both caches: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Trace name.
    pub trace: String,
    /// Rank within the trace.
    pub rank: u32,
    /// Records replayed per round (A + U).
    pub ops: u64,
    /// Rounds run (each replays the trace through both caches).
    pub rounds: usize,
    /// regcache's hit rate (the same every round).
    pub regcache_hit_rate: f64,
    /// UCX's hit rate (the same every round).
    pub ucx_hit_rate: f64,
    /// Median over the rounds of regcache's `cache_ns_per_op`, ns.
    pub regcache_ns_per_op: f64,
    /// Median over the rounds of UCX's `cache_ns_per_op`, ns.
    pub ucx_ns_per_op: f64,
    /// Median over the rounds of (regcache / UCX) `cache_ns_per_op`.
    pub ratio: f64,
    /// regcache's registrar time in the median round, ns.
    pub regcache_registrar_ns: u64,
    /// UCX's registrar time in the median round, ns.
    pub ucx_registrar_ns: u64,
    /// Every round's (regcache, UCX) `cache_ns_per_op`, in run order.
    pub per_round: Vec<(f64, f64)>,
}

/// Why `--compare ucx` cannot run in this build, if it cannot.
pub fn unavailable() -> Option<&'static str> {
    if cfg!(regcache_bench_ucx) {
        None
    } else {
        Some(
            "the UCX comparison is unavailable: this regcache-bench was built without UCX's \
             headers (ucs/memory/rcache.h, ucm/api/ucm.h; Debian: libucx-dev, installed by \
             `cargo xtask deps`). Install them, then `cargo clean -p regcache-bench` and rebuild",
        )
    }
}

#[cfg(regcache_bench_ucx)]
mod sys {
    //! The shim's C functions (`ucx/rcache_shim.c`).
    use std::os::raw::{c_char, c_int};

    /// The shim's cache (opaque).
    #[repr(C)]
    pub(super) struct RbUcx {
        _private: [u8; 0],
    }

    /// `rb_ucx_stats` in the shim.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct RbUcxStats {
        pub(super) registrations: u64,
        pub(super) deregistrations: u64,
        pub(super) registration_failures: u64,
        pub(super) registrar_ns: u64,
    }

    unsafe extern "C" {
        pub(super) fn rb_ucx_open(
            max_regions: u64,
            max_bytes: u64,
            pin: c_int,
            err: *mut c_char,
            errlen: usize,
        ) -> *mut RbUcx;
        pub(super) fn rb_ucx_acquire(u: *mut RbUcx, addr: u64, len: u64) -> c_int;
        pub(super) fn rb_ucx_unmap(u: *mut RbUcx, addr: u64, len: u64);
        pub(super) fn rb_ucx_stats_of(u: *const RbUcx, out: *mut RbUcxStats);
        pub(super) fn rb_ucx_close(u: *mut RbUcx);
    }
}

/// Replay every rank of `trace` through UCX's cache with `config`'s
/// limits, registering with `mlock`.
///
/// # Errors
/// The comparison is [`unavailable`]; the footprint is above
/// `footprint_limit` or memory cannot be mapped; UCX's cache cannot be
/// created; a get fails (naming the trace, rank and record).
pub fn replay_ucx(
    trace: &Trace,
    config: &Config,
    footprint_limit: u64,
) -> anyhow::Result<Vec<UcxReport>> {
    if let Some(why) = unavailable() {
        anyhow::bail!("{why}");
    }
    let mut out = Vec::new();
    for (&rank, records) in &trace.ranks {
        let layout = Layout::map(records, footprint_limit)?;
        let ops: Vec<(Kind, AddrRange)> = records
            .iter()
            .map(|r| (r.kind, layout.translate(&r.range)))
            .collect();
        replay::touch(&ops);
        out.push(replay_rank(trace, rank, &ops, config)?);
        drop(layout);
    }
    Ok(out)
}

#[cfg(regcache_bench_ucx)]
fn replay_rank(
    trace: &Trace,
    rank: u32,
    ops: &[(Kind, AddrRange)],
    config: &Config,
) -> anyhow::Result<UcxReport> {
    use std::time::Instant;
    let mut err = [0 as std::os::raw::c_char; 256];
    // SAFETY: `err` is writable for its length; the shim writes at most
    // that many bytes, NUL-terminated.
    let u = unsafe {
        sys::rb_ucx_open(
            config.max_regions as u64,
            config.max_bytes,
            1,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if u.is_null() {
        // SAFETY: the shim NUL-terminated `err` when it returned NULL.
        let why = unsafe { std::ffi::CStr::from_ptr(err.as_ptr()) };
        anyhow::bail!("UCX's rcache cannot be created: {}", why.to_string_lossy());
    }
    let mut hits = 0u64;
    let mut failed = None;
    let t0 = Instant::now();
    for (i, (kind, r)) in ops.iter().enumerate() {
        match kind {
            Kind::Acquire => {
                // SAFETY: `u` is open; `r` lies inside the replay's
                // mapping, which outlives the cache (closed below).
                match unsafe { sys::rb_ucx_acquire(u, r.start(), r.len()) } {
                    1 => hits += 1,
                    0 => {}
                    _ => {
                        failed = Some((i, *r));
                        break;
                    }
                }
            }
            // SAFETY: `u` is open; UCX only reads the range's bounds.
            Kind::Unmap => unsafe { sys::rb_ucx_unmap(u, r.start(), r.len()) },
        }
    }
    let wall = t0.elapsed().as_nanos() as u64;
    let mut s = sys::RbUcxStats::default();
    // SAFETY: `u` is open; `s` is writable.
    unsafe { sys::rb_ucx_stats_of(u, &mut s) };
    // SAFETY: `u` is open and not used after this.
    unsafe { sys::rb_ucx_close(u) };
    if let Some((i, r)) = failed {
        anyhow::bail!(
            "{} rank {rank} record {}: UCX's ucs_rcache_get {r} failed",
            trace.name,
            i + 1
        );
    }
    let acquires = ops.iter().filter(|o| o.0 == Kind::Acquire).count() as u64;
    Ok(UcxReport {
        trace: trace.name.clone(),
        rank,
        ops: ops.len() as u64,
        acquires,
        hits,
        misses: acquires - hits,
        hit_rate: if acquires == 0 {
            0.0
        } else {
            hits as f64 / acquires as f64
        },
        registrations: s.registrations,
        deregistrations: s.deregistrations,
        registrar_ns: s.registrar_ns,
        cache_ns_per_op: wall.saturating_sub(s.registrar_ns) as f64 / ops.len().max(1) as f64,
    })
}

#[cfg(not(regcache_bench_ucx))]
fn replay_rank(
    _trace: &Trace,
    _rank: u32,
    _ops: &[(Kind, AddrRange)],
    _config: &Config,
) -> anyhow::Result<UcxReport> {
    anyhow::bail!("{}", unavailable().unwrap_or("unavailable"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Replay `trace` through regcache (registrars from `make`) and UCX,
/// `rounds` interleaved rounds; one [`Comparison`] per rank.
///
/// # Errors
/// As [`replay::replay`] and [`replay_ucx`]; `make`'s registrar is not
/// `pin` (the UCX side registers with `mlock`, and the comparison is only
/// fair with the same registrar on both sides).
pub fn compare<R: Registrar>(
    make: &dyn Fn() -> anyhow::Result<R>,
    trace: &Trace,
    config: &Config,
    footprint_limit: u64,
    rounds: usize,
) -> anyhow::Result<Vec<Comparison>> {
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    if let Some(why) = unavailable() {
        anyhow::bail!("{why}");
    }
    let name = make()?.name().to_string();
    anyhow::ensure!(
        name == "pin",
        "--compare ucx registers with mlock on the UCX side, so regcache must use the pin \
         registrar too (this run's is {name}); pass --registrar pin"
    );
    let mut ours: Vec<Vec<RankReport>> = Vec::new();
    let mut theirs: Vec<Vec<UcxReport>> = Vec::new();
    for round in 0..rounds {
        if round % 2 == 0 {
            ours.push(replay::replay(make, trace, config, footprint_limit)?);
            theirs.push(replay_ucx(trace, config, footprint_limit)?);
        } else {
            theirs.push(replay_ucx(trace, config, footprint_limit)?);
            ours.push(replay::replay(make, trace, config, footprint_limit)?);
        }
    }
    let mut out = Vec::new();
    for (k, first) in ours[0].iter().enumerate() {
        let per_round: Vec<(f64, f64)> = (0..rounds)
            .map(|i| (ours[i][k].cache_ns_per_op, theirs[i][k].cache_ns_per_op))
            .collect();
        let mut a: Vec<f64> = per_round.iter().map(|p| p.0).collect();
        let mut b: Vec<f64> = per_round.iter().map(|p| p.1).collect();
        let mut q: Vec<f64> = per_round.iter().map(|p| p.0 / p.1).collect();
        // The round whose regcache time is the median, for the registrar
        // figures.
        let mut order: Vec<usize> = (0..rounds).collect();
        order.sort_by(|&i, &j| per_round[i].0.total_cmp(&per_round[j].0));
        let mid = order[rounds / 2];
        out.push(Comparison {
            trace: first.trace.clone(),
            rank: first.rank,
            ops: first.ops,
            rounds,
            regcache_hit_rate: first.hit_rate,
            ucx_hit_rate: theirs[0][k].hit_rate,
            regcache_ns_per_op: median(&mut a),
            ucx_ns_per_op: median(&mut b),
            ratio: median(&mut q),
            regcache_registrar_ns: ours[mid][k].registrar_ns,
            ucx_registrar_ns: theirs[mid][k].registrar_ns,
            per_round,
        });
    }
    Ok(out)
}

/// The side-by-side table, one line per rank.
pub fn print_table(rows: &[Comparison]) {
    let w = rows.iter().map(|c| c.trace.len()).max().unwrap_or(0).max(5);
    println!(
        "{:<w$} {:>4}  {:>9} {:>9}  {:>12} {:>12} {:>7}",
        "trace", "rank", "hit rc", "hit UCX", "rc ns/op", "UCX ns/op", "rc/UCX"
    );
    for c in rows {
        println!(
            "{:<w$} {:>4}  {:>8.1}% {:>8.1}%  {:>12.1} {:>12.1} {:>6.2}x",
            c.trace,
            c.rank,
            100.0 * c.regcache_hit_rate,
            100.0 * c.ucx_hit_rate,
            c.regcache_ns_per_op,
            c.ucx_ns_per_op,
            c.ratio
        );
    }
    if let Some(c) = rows.first() {
        println!(
            "(cache time per op = replay wall time minus registrar time, and for regcache \
             minus invalidation-source and page-replacement time; median of {} interleaved \
             rounds; rc/UCX is the median of the per-round ratios)",
            c.rounds
        );
    }
}
