//! Replaying a trace through the real cache and a real registrar.

use crate::layout::Layout;
use crate::optimal;
use crate::trace::{Kind, Trace};
use regcache::{AccessFlags, AddrRange, Cache, Config, MonitorKind, Registrar};
use serde::Serialize;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Access flags every replayed acquire asks for: what a rendezvous buffer
/// needs on either side.
pub const REPLAY_ACCESS: AccessFlags = AccessFlags::LOCAL_WRITE
    .union(AccessFlags::REMOTE_WRITE)
    .union(AccessFlags::REMOTE_READ);

/// Results of replaying one rank of one trace.
#[derive(Debug, Clone, Serialize)]
pub struct RankReport {
    /// Trace name.
    pub trace: String,
    /// Rank within the trace.
    pub rank: u32,
    /// Registrar used (`pin`, `verbs`).
    pub registrar: String,
    /// Invalidation source in force (`uffd`, `kernel`, `external`,
    /// `none`). With `uffd`/`kernel`, `U` records replace the pages with
    /// `mmap(MAP_FIXED)` and the source reports it; with `external` they go
    /// through `notify_unmapped`; with `none` through `invalidate`.
    pub monitor: String,
    /// Records replayed (A + U).
    pub ops: u64,
    /// `A` records.
    pub acquires: u64,
    /// `U` records.
    pub unmaps: u64,
    /// Cache hits.
    pub hits: u64,
    /// Cache misses.
    pub misses: u64,
    /// hits / acquires.
    pub hit_rate: f64,
    /// Merge mode replayed (`on`, `off`, `adaptive`).
    pub merge: String,
    /// Eviction order replayed (`lru`, `cost`).
    pub eviction: String,
    /// Capacity (regions) the optimum was computed for.
    pub capacity_regions: usize,
    /// Belady MIN hit rate at that capacity over exact page ranges,
    /// without merging: the optimum for a cache that hits only on the very
    /// range it registered. Not a bound for regcache, which serves
    /// requests from larger (merged or earlier) regions.
    pub optimal_hit_rate: f64,
    /// Exact-range repeats at unlimited capacity (a request hits when the
    /// same page range was requested before, no overlapping `U` since).
    pub unlimited_hit_rate: f64,
    /// The containment floor at unlimited capacity: a hit whenever an
    /// earlier missed range, not invalidated since, covers the request
    /// (what a non-merging cache with no limit scores).
    pub containment_hit_rate: f64,
    /// Upper bound for merging caches, at any capacity: every page of the
    /// request requested before and none unmapped since. No tighter bound
    /// for merging caches at a limited capacity is computed.
    pub merging_bound_hit_rate: f64,
    /// Registrations of Belady MIN's schedule at `capacity_regions`
    /// (exact ranges, no merging).
    pub optimal_registrations: u64,
    /// Bytes MIN's schedule registers.
    pub optimal_bytes_registered: u64,
    /// Modelled registrar time of MIN's schedule, ns
    /// ([`regcache::registration_cost_ns`] per registration). MIN
    /// minimises misses, not this: not the cheapest schedule.
    pub optimal_registrar_model_ns: f64,
    /// Distinct page-aligned ranges requested.
    pub distinct_ranges: usize,
    /// Registrar registrations.
    pub registrations: u64,
    /// Bytes registered over the replay (every successful registration,
    /// page-aligned; not the peak).
    pub bytes_registered: u64,
    /// Modelled registrar time, ns: each registration costs
    /// [`regcache::registration_cost_ns`] (16 µs + 0.06 ns/byte,
    /// `ibv_reg_mr` on ConnectX-class NICs); deterministic, unlike
    /// `registrar_ns`, which is measured.
    pub registrar_model_ns: f64,
    /// Registrar deregistrations.
    pub deregistrations: u64,
    /// LRU evictions.
    pub evictions: u64,
    /// Regions merged into larger ones.
    pub merges: u64,
    /// Invalidated regions (idle + in use).
    pub invalidations: u64,
    /// Gets served uncached.
    pub uncached: u64,
    /// Retries after ENOMEM/EAGAIN.
    pub enomem_retries: u64,
    /// Most regions cached at once.
    pub peak_regions: u64,
    /// Most bytes registered at once.
    pub peak_bytes: u64,
    /// Bytes of memory mapped for the replay.
    pub footprint_bytes: u64,
    /// The cache's own cost: (replay wall time − time inside the
    /// registrar − time in the invalidation source − time replacing pages
    /// for `U`) / ops, in ns.
    pub cache_ns_per_op: f64,
    /// Time in the invalidation source's calls (watching ranges, draining
    /// events), ns; excluded from `cache_ns_per_op`.
    pub monitor_ns: u64,
    /// Time in the kernel replacing pages for `U` records (uffd/kernel
    /// sources), ns; excluded from `cache_ns_per_op`.
    pub unmap_ns: u64,
    /// Time inside the registrar (register + deregister), ns, measured
    /// (wall clock; noisy on a loaded machine).
    pub registrar_ns: u64,
    /// registrar_ns / (registrations + deregistrations), ns.
    pub registrar_ns_per_call: f64,
}

/// Replay every rank of `trace`, each with its own cache (as each MPI
/// rank has its own), on registrars from `make`.
///
/// # Errors
/// The footprint is above `footprint_limit`, memory cannot be mapped, or a
/// get fails (the error names the trace, rank and record).
pub fn replay<R: Registrar>(
    make: &dyn Fn() -> anyhow::Result<R>,
    trace: &Trace,
    config: &Config,
    footprint_limit: u64,
) -> anyhow::Result<Vec<RankReport>> {
    let mut out = Vec::new();
    for (&rank, records) in &trace.ranks {
        let layout = Layout::map(records, footprint_limit)?;
        let ops: Vec<(Kind, AddrRange)> = records
            .iter()
            .map(|r| (r.kind, layout.translate(&r.range)))
            .collect();
        // Touch every page once so registration pins resident memory and
        // first-touch faults are not charged to the cache.
        touch(&ops);
        let cache = Cache::new(Metered::new(make()?), config.clone());
        if let Some(e) = cache.monitor_error() {
            anyhow::bail!(
                "invalidation source {} cannot be opened: {e}",
                config.monitor.name()
            );
        }
        let mut unmap_ns = 0u64;
        let t0 = Instant::now();
        for (i, (kind, r)) in ops.iter().enumerate() {
            match kind {
                Kind::Acquire => {
                    let h = cache.get(*r, REPLAY_ACCESS).map_err(|e| {
                        anyhow::anyhow!(
                            "{} rank {rank} record {}: get {r} failed: {e}",
                            trace.name,
                            i + 1
                        )
                    })?;
                    drop(h);
                }
                Kind::Unmap => {
                    let t = Instant::now();
                    match cache.monitor() {
                        // The kernel tells the cache, as for an application.
                        MonitorKind::Uffd | MonitorKind::Kernel | MonitorKind::Patch => {
                            layout.replace(r)?
                        }
                        MonitorKind::External => cache.notify_unmapped(*r)?,
                        _ => {
                            cache.invalidate(*r);
                        }
                    }
                    if matches!(
                        cache.monitor(),
                        MonitorKind::Uffd | MonitorKind::Kernel | MonitorKind::Patch
                    ) {
                        unmap_ns += t.elapsed().as_nanos() as u64;
                    }
                }
            }
        }
        let wall = t0.elapsed().as_nanos() as u64;
        let s = cache.stats();
        let acquires = records.iter().filter(|r| r.kind == Kind::Acquire).count() as u64;
        let capacity = config.max_regions;
        let rate = |h: u64| {
            if acquires == 0 {
                0.0
            } else {
                h as f64 / acquires as f64
            }
        };
        let calls = (s.registrations + s.deregistrations).max(1);
        let min = optimal::min_schedule(records, capacity);
        let metered = cache.registrar();
        let bytes_registered = metered.bytes.load(Relaxed);
        out.push(RankReport {
            trace: trace.name.clone(),
            rank,
            registrar: cache.registrar().name().to_string(),
            monitor: cache.monitor().name().to_string(),
            ops: ops.len() as u64,
            acquires,
            unmaps: ops.len() as u64 - acquires,
            hits: s.hits,
            misses: s.misses,
            hit_rate: rate(s.hits),
            merge: config.merge.name().to_string(),
            eviction: config.eviction.name().to_string(),
            capacity_regions: capacity,
            optimal_hit_rate: rate(min.hits),
            unlimited_hit_rate: rate(optimal::unlimited_hits(records)),
            containment_hit_rate: rate(optimal::containment_hits(records)),
            merging_bound_hit_rate: rate(optimal::coverage_bound_hits(records)),
            optimal_registrations: min.registrations,
            optimal_bytes_registered: min.bytes_registered,
            optimal_registrar_model_ns: model_ns(min.registrations, min.bytes_registered),
            distinct_ranges: optimal::distinct_keys(records),
            registrations: s.registrations,
            bytes_registered,
            registrar_model_ns: model_ns(metered.calls.load(Relaxed), bytes_registered),
            deregistrations: s.deregistrations,
            evictions: s.evictions,
            merges: s.merges,
            invalidations: s.invalidations_idle + s.invalidations_in_use,
            uncached: s.uncached,
            enomem_retries: s.enomem_retries,
            peak_regions: s.peak_regions,
            peak_bytes: s.peak_bytes,
            footprint_bytes: layout.footprint(),
            cache_ns_per_op: wall.saturating_sub(s.registrar_ns + unmap_ns + s.monitor_ns) as f64
                / ops.len().max(1) as f64,
            monitor_ns: s.monitor_ns,
            unmap_ns,
            registrar_ns: s.registrar_ns,
            registrar_ns_per_call: s.registrar_ns as f64 / calls as f64,
        });
        drop(cache);
        drop(layout);
    }
    Ok(out)
}

/// Modelled registrar time of `registrations` covering `bytes` in all, ns
/// (the cost model is affine, so the sum needs only the two totals).
pub fn model_ns(registrations: u64, bytes: u64) -> f64 {
    registrations as f64 * regcache::registration_cost_ns(0)
        + (regcache::registration_cost_ns(bytes) - regcache::registration_cost_ns(0))
}

/// The replay's registrar, counting what it registers: the real
/// registrar underneath does the work.
#[derive(Debug)]
pub struct Metered<R> {
    inner: R,
    calls: AtomicU64,
    bytes: AtomicU64,
}

impl<R> Metered<R> {
    /// Count what `inner` registers.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

impl<R: Registrar> Registrar for Metered<R> {
    type Region = R::Region;

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Self::Region, regcache::RegistrarError> {
        let r = self.inner.register(range, access)?;
        self.calls.fetch_add(1, Relaxed);
        self.bytes.fetch_add(range.len(), Relaxed);
        Ok(r)
    }

    fn keys(&self, region: &Self::Region) -> Option<regcache::Keys> {
        self.inner.keys(region)
    }

    fn user_data(&self, region: &Self::Region) -> usize {
        self.inner.user_data(region)
    }

    fn deregister(&self, region: Self::Region) -> Result<(), regcache::RegistrarError> {
        self.inner.deregister(region)
    }
}

/// Touch every page of `ops` once (first-touch faults are not the
/// cache's cost).
pub(crate) fn touch(ops: &[(Kind, AddrRange)]) {
    let page = umn::page_size();
    let mut seen = std::collections::HashSet::new();
    for (_, r) in ops {
        let a = r.page_align().expect("translated inside the mapping");
        let mut p = a.start();
        while p < a.end() {
            if seen.insert(p) {
                // SAFETY: `p` lies inside the replay's private anonymous
                // mapping (Layout::translate), which is readable and
                // writable and not referenced elsewhere.
                unsafe { std::ptr::write_volatile(p as *mut u8, 1) };
            }
            p += page;
        }
    }
}

/// Human-readable report lines.
pub fn print_human(r: &RankReport) {
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    println!(
        "== {} rank {} ({} registrar, {} invalidation source)",
        r.trace, r.rank, r.registrar, r.monitor
    );
    println!(
        "  ops {} (A {}, U {})  hits {}  misses {}  hit rate {}",
        r.ops,
        r.acquires,
        r.unmaps,
        r.hits,
        r.misses,
        pct(r.hit_rate)
    );
    println!("  merge {}  eviction {}", r.merge, r.eviction);
    println!(
        "  references: Belady MIN over exact page ranges without merging ({} regions) {}  exact repeats at unlimited capacity {}  distinct ranges {}",
        r.capacity_regions,
        pct(r.optimal_hit_rate),
        pct(r.unlimited_hit_rate),
        r.distinct_ranges
    );
    println!(
        "              containment floor at unlimited capacity {}  upper bound for merging caches (page coverage, any capacity) {}; no tighter bound for merging caches at {} regions is computed",
        pct(r.containment_hit_rate),
        pct(r.merging_bound_hit_rate),
        r.capacity_regions
    );
    if r.hit_rate > r.optimal_hit_rate + 1e-9 {
        println!(
            "  note: above exact-range Belady MIN, which is no bound here: larger (merged or earlier) regions served requests MIN counts as misses"
        );
    }
    println!(
        "  registered {} bytes in {} registrations: registrar {:.1} ms modelled (16 µs + 0.06 ns/B each), {:.1} ms measured; MIN's schedule: {} registrations, {} bytes, {:.1} ms modelled",
        r.bytes_registered,
        r.registrations,
        r.registrar_model_ns / 1e6,
        r.registrar_ns as f64 / 1e6,
        r.optimal_registrations,
        r.optimal_bytes_registered,
        r.optimal_registrar_model_ns / 1e6
    );
    println!(
        "  registrations {}  deregistrations {}  evictions {}  merges {}  invalidations {}  uncached {}  enomem retries {}",
        r.registrations,
        r.deregistrations,
        r.evictions,
        r.merges,
        r.invalidations,
        r.uncached,
        r.enomem_retries
    );
    println!(
        "  peak regions {}  peak bytes {}  footprint {} bytes",
        r.peak_regions, r.peak_bytes, r.footprint_bytes
    );
    println!(
        "  cache {:.1} ns/op (excluding registrar and source)  registrar {:.0} ns/call ({} ns total)  source {} ns total",
        r.cache_ns_per_op, r.registrar_ns_per_call, r.registrar_ns, r.monitor_ns
    );
}
