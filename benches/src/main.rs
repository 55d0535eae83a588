//! `regcache-bench`: replay registration traces through the real cache and
//! a real registrar, and compare the cache's hit rate with the optimum.
//!
//! ```text
//! regcache-bench                      # the built-in (synthetic) workloads
//! regcache-bench replay FILE...       # traces in the docs/TRACES.md format
//! regcache-bench mrc FILE -o mrc.svg  # miss-ratio curve: each merge mode vs the references
//! regcache-bench policies [FILE...]   # merge on/off/adaptive x lru/cost at 16384/64/16 regions
//! regcache-bench --compare ucx [replay FILE...]  # side by side with UCX's rcache
//! regcache-bench intranode-plot CSV -o intranode.svg  # keyed DMA vs memcpy vs vader
//! ```

use anyhow::Context;
use clap::{Parser, Subcommand};
use regcache::{AnyRegistrar, Config, RegistrarKind, open_registrar};
use regcache_bench::{intranode, mrc, replay, trace::Trace, ucx, workloads};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "regcache-bench",
    version,
    about = "Registration-cache hit rates and costs on real and synthetic workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Args, Debug, Clone)]
struct Opts {
    /// Most regions the cache keeps (default: REGCACHE_MAX_REGIONS, else 16384).
    #[arg(long, global = true)]
    max_regions: Option<usize>,
    /// Most bytes the cache keeps registered, e.g. 512M (default:
    /// REGCACHE_MAX_BYTES, else a quarter of physical memory).
    #[arg(long, global = true, value_parser = parse_bytes)]
    max_bytes: Option<u64>,
    /// Do not merge overlapping and adjacent regions (`--merge off`).
    #[arg(long, global = true)]
    no_merge: bool,
    /// Merging on a miss: on, off or adaptive (default: REGCACHE_MERGE,
    /// else on).
    #[arg(long, global = true, value_parser = parse_merge)]
    merge: Option<regcache::Merge>,
    /// Eviction order: lru or cost (default: REGCACHE_EVICTION, else lru).
    #[arg(long, global = true, value_parser = parse_eviction)]
    eviction: Option<regcache::Eviction>,
    /// Invalidation source (default: REGCACHE_MONITOR, else auto). With
    /// uffd or kernel, `U` records really replace the pages and the source
    /// reports it.
    #[arg(long, global = true, value_parser = parse_monitor)]
    monitor: Option<regcache::MonitorKind>,
    /// Which registrar registers memory: auto (verbs when an RDMA device is
    /// here, else pin), pin (mlock), verbs (ibv_reg_mr; fails without a
    /// device).
    #[arg(long, global = true, default_value = "auto")]
    registrar: RegistrarKind,
    /// RDMA device for the verbs registrar (default: the closest one).
    #[arg(long, global = true)]
    device: Option<String>,
    /// Print JSON (one array of per-rank reports) instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Built-in workloads at a tenth of their iterations (same patterns).
    #[arg(long, global = true)]
    quick: bool,
    /// Refuse traces whose compacted footprint exceeds this many bytes.
    #[arg(long, global = true, value_parser = parse_bytes, default_value = "4G")]
    max_footprint: u64,
    /// With no command: also write each built-in trace and its miss-ratio
    /// curve (SVG) into this directory.
    #[arg(long, global = true)]
    out_dir: Option<PathBuf>,
    /// With no command: run only these built-in workloads (repeatable;
    /// pingpong, halo, collective, many-rr, many-random).
    #[arg(long = "workload", global = true)]
    workloads: Vec<String>,
    /// Replay each trace (built-in or `replay` files) through regcache and
    /// through another cache, side by side: `ucx` = UCX 1.13's ucs_rcache
    /// (needs libucx-dev at build time). Prints hit rates and each cache's
    /// time per operation (registrar time excluded), medians of `--rounds`
    /// interleaved rounds.
    #[arg(long, global = true, value_parser = ["ucx"])]
    compare: Option<String>,
    /// Interleaved rounds for `--compare`.
    #[arg(long, global = true, default_value_t = 5)]
    rounds: usize,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay trace files; one report per rank of each file.
    Replay {
        /// Trace files (docs/TRACES.md format).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Compare the policies on traces (the built-in workloads when none is
    /// given): every merge mode (on, off, adaptive) and eviction order
    /// (lru, cost) at 16384, 64 and 16 regions, rank by rank. Prints hit
    /// rate, registrations, bytes registered and modelled registrar time.
    Policies {
        /// Trace files (docs/TRACES.md format).
        files: Vec<PathBuf>,
    },
    /// Draw the miss-ratio curve of one trace as SVG: the cache in each
    /// merge mode (three replays per capacity) against the references,
    /// each named for what it is.
    Mrc {
        /// Trace file.
        file: PathBuf,
        /// Rank to draw (default: the first in the file).
        #[arg(long)]
        rank: Option<u32>,
        /// Output SVG path.
        #[arg(short, long, default_value = "mrc.svg")]
        output: PathBuf,
    },
    /// Draw intra-node bandwidth against message size (keyed DMA, memcpy,
    /// Open MPI vader) from the CSV of regcache-transport's `intranode`
    /// bench (`RC_BENCH_ONLY=report RC_BENCH_CSV=FILE`) as SVG.
    IntranodePlot {
        /// The bench's CSV (`series,bytes,gb_per_s`).
        csv: PathBuf,
        /// Output SVG path.
        #[arg(short, long, default_value = "intranode-bandwidth.svg")]
        output: PathBuf,
    },
}

fn parse_monitor(s: &str) -> Result<regcache::MonitorKind, String> {
    regcache::MonitorKind::parse(s)
        .ok_or_else(|| format!("{s:?}: expected auto, kernel, patch, uffd, external or none"))
}

fn parse_merge(s: &str) -> Result<regcache::Merge, String> {
    regcache::Merge::parse(s).ok_or_else(|| format!("{s:?}: expected on, off or adaptive"))
}

fn parse_eviction(s: &str) -> Result<regcache::Eviction, String> {
    regcache::Eviction::parse(s).ok_or_else(|| format!("{s:?}: expected lru or cost"))
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    regcache::parse_size(s)
        .ok_or_else(|| format!("{s:?}: expected bytes, e.g. 4096, 64K, 512M, 2G"))
}

fn config(opts: &Opts) -> anyhow::Result<Config> {
    let mut c = Config::from_env()?;
    if let Some(n) = opts.max_regions {
        anyhow::ensure!(n >= 1, "--max-regions must be at least 1");
        c.max_regions = n;
    }
    if let Some(b) = opts.max_bytes {
        anyhow::ensure!(b >= 1, "--max-bytes must be at least 1");
        c.max_bytes = b;
    }
    if let Some(m) = opts.merge {
        c.merge = m;
    }
    if opts.no_merge {
        c.merge = regcache::Merge::Off;
    }
    if let Some(e) = opts.eviction {
        c.eviction = e;
    }
    if let Some(m) = opts.monitor {
        c.monitor = m;
    }
    Ok(c)
}

/// The built-in workloads `--workload` selects (all without it),
/// generating only those.
fn builtins(opts: &Opts) -> anyhow::Result<Vec<regcache_bench::trace::Trace>> {
    let scale = if opts.quick {
        workloads::Scale::Quick
    } else {
        workloads::Scale::Full
    };
    for w in &opts.workloads {
        anyhow::ensure!(
            workloads::NAMES.contains(&w.as_str()),
            "--workload {w:?}: no such built-in workload (there are: {})",
            workloads::NAMES.join(", ")
        );
    }
    Ok(workloads::NAMES
        .iter()
        .filter(|n| opts.workloads.is_empty() || opts.workloads.iter().any(|w| w == *n))
        .filter_map(|n| workloads::by_name(n, scale))
        .collect())
}

/// `--compare ucx`: every trace of the command (the built-ins without
/// one) through both caches.
fn compare_ucx(
    cli: &Cli,
    cfg: &Config,
    make: &dyn Fn() -> anyhow::Result<AnyRegistrar>,
) -> anyhow::Result<()> {
    let opts = &cli.opts;
    if let Some(why) = ucx::unavailable() {
        anyhow::bail!("--compare ucx: {why}");
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "regcache-bench: note: a debug build; regcache's time per operation is not \
             comparable with UCX's optimised library (build with --release)"
        );
    }
    let traces = match &cli.command {
        Some(Command::Replay { files }) => files
            .iter()
            .map(|f| Trace::read(f))
            .collect::<anyhow::Result<Vec<_>>>()?,
        Some(Command::Mrc { .. } | Command::Policies { .. } | Command::IntranodePlot { .. }) => {
            anyhow::bail!("--compare applies to replay and the built-ins only")
        }
        None => builtins(opts)?,
    };
    let mut rows = Vec::new();
    for t in &traces {
        rows.extend(ucx::compare(make, t, cfg, opts.max_footprint, opts.rounds)?);
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("regcache vs UCX 1.13's ucs_rcache, config: {cfg}");
        ucx::print_table(&rows);
    }
    Ok(())
}

fn make_registrar(
    kind: RegistrarKind,
    device: Option<String>,
) -> impl Fn() -> anyhow::Result<AnyRegistrar> {
    move || Ok(open_registrar(kind, device.as_deref())?)
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let opts = &cli.opts;
    let cfg = config(opts)?;
    let make = make_registrar(opts.registrar, opts.device.clone());
    if opts.compare.is_some() {
        return compare_ucx(&cli, &cfg, &make);
    }
    let mut reports = Vec::new();
    match &cli.command {
        Some(Command::Replay { files }) => {
            for f in files {
                let t = Trace::read(f)?;
                reports.extend(replay::replay(&make, &t, &cfg, opts.max_footprint)?);
            }
        }
        Some(Command::Policies { files }) => {
            let traces: Vec<Trace> = if files.is_empty() {
                // The many-region built-ins measure the hit path, not the
                // policy (12 replays of 10⁶ acquires each): only by name.
                builtins(opts)?
                    .into_iter()
                    .filter(|t| !opts.workloads.is_empty() || !t.name.starts_with("builtin:many-"))
                    .collect()
            } else {
                files
                    .iter()
                    .map(|f| Trace::read(f))
                    .collect::<Result<_, _>>()?
            };
            let rows = policies(&make, &traces, &cfg, opts.max_footprint)?;
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_policies(&rows);
            }
            return Ok(());
        }
        Some(Command::IntranodePlot { csv, output }) => {
            let text = std::fs::read_to_string(csv)
                .with_context(|| format!("reading {}", csv.display()))?;
            let series = intranode::parse(&text).with_context(|| csv.display().to_string())?;
            intranode::draw(
                output,
                "Intra-node bandwidth (ping-pong; memcpy: one thread)",
                &series,
            )?;
            println!("intra-node bandwidth plot written to {}", output.display());
            return Ok(());
        }
        Some(Command::Mrc { file, rank, output }) => {
            let t = Trace::read(file)?;
            let rank = rank
                .or_else(|| t.ranks.keys().next().copied())
                .context("trace has no records")?;
            let (points, refs) = mrc::curve(&make, &t, rank, &cfg, opts.max_footprint)?;
            mrc::draw(output, &format!("{} rank {rank}", t.name), &points, &refs)?;
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&points)?);
            } else {
                println!(
                    "capacity  adaptive  merge on  merge off  Belady MIN (exact ranges, no merging)  registrar ms, modelled: merge {} / MIN's schedule",
                    cfg.merge.name()
                );
                for p in &points {
                    println!(
                        "{:>8}  {:>7.1}%  {:>7.1}%  {:>8.1}%  {:>6.1}%  {:>10.1} / {:.1}",
                        p.capacity,
                        100.0 * p.merge_adaptive,
                        100.0 * p.merge_on,
                        100.0 * p.merge_off,
                        100.0 * p.optimal,
                        p.registrar_model_ns / 1e6,
                        p.optimal_registrar_model_ns / 1e6
                    );
                }
                println!(
                    "references: bound for merging caches (page coverage, any capacity; none tighter computed) {:.1}%, \
                     containment floor at unlimited capacity {:.1}%, exact-range repeats at unlimited capacity {:.1}%",
                    100.0 * refs.merging_bound,
                    100.0 * refs.containment,
                    100.0 * refs.unlimited_exact
                );
                println!(
                    "(merging serves requests from larger regions, so it can score above exact-range MIN; it cannot exceed the page-coverage bound)"
                );
                println!("miss-ratio curve written to {}", output.display());
            }
            return Ok(());
        }
        None => {
            if !opts.json {
                println!("Built-in workloads (synthetic; see regcache-bench docs), config: {cfg}");
            }
            for t in builtins(opts)? {
                reports.extend(replay::replay(&make, &t, &cfg, opts.max_footprint)?);
                if let Some(dir) = &opts.out_dir {
                    std::fs::create_dir_all(dir)?;
                    let stem = t.name.replace(':', "-");
                    std::fs::write(dir.join(format!("{stem}.trace")), t.to_text())?;
                    if t.name.starts_with("builtin:many-") {
                        // They measure the hit path, not the policy: below
                        // capacity every acquire of a round-robin sweep
                        // misses, and the curve's ~20 replays of 10⁶
                        // registrations would take the main job minutes.
                        if !opts.json {
                            println!(
                                "{}: trace in {} (no miss-ratio curve)",
                                t.name,
                                dir.display()
                            );
                        }
                        continue;
                    }
                    let (points, refs) = mrc::curve(&make, &t, 0, &cfg, opts.max_footprint)?;
                    let svg = dir.join(format!("{stem}-mrc.svg"));
                    mrc::draw(&svg, &t.name, &points, &refs)?;
                    if !opts.json {
                        println!(
                            "{}: trace and miss-ratio curve in {}",
                            t.name,
                            dir.display()
                        );
                    }
                }
            }
        }
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            replay::print_human(r);
        }
    }
    Ok(())
}

/// Capacities `policies` compares: the default limit, and two that press.
const POLICY_CAPACITIES: [usize; 3] = [16384, 64, 16];

/// One replay of `policies`.
fn policies(
    make: &dyn Fn() -> anyhow::Result<AnyRegistrar>,
    traces: &[Trace],
    cfg: &Config,
    footprint: u64,
) -> anyhow::Result<Vec<replay::RankReport>> {
    use regcache::{Eviction, Merge};
    let mut rows = Vec::new();
    for t in traces {
        for cap in POLICY_CAPACITIES {
            for eviction in [Eviction::Lru, Eviction::Cost] {
                for merge in [Merge::On, Merge::Off, Merge::Adaptive] {
                    let c = Config {
                        max_regions: cap,
                        merge,
                        eviction,
                        ..cfg.clone()
                    };
                    rows.extend(replay::replay(make, t, &c, footprint)?);
                }
            }
        }
    }
    Ok(rows)
}

fn print_policies(rows: &[replay::RankReport]) {
    println!(
        "{:<28} {:>4} {:>6} {:>5} {:>8} {:>7} {:>12} {:>10} {:>8} {:>8} {:>8}",
        "trace",
        "rank",
        "cap",
        "evict",
        "merge",
        "hit%",
        "bytes reg",
        "model ms",
        "MIN%",
        "contain%",
        "bound%"
    );
    for r in rows {
        println!(
            "{:<28} {:>4} {:>6} {:>5} {:>8} {:>7.2} {:>12} {:>10.1} {:>8.2} {:>8.2} {:>8.2}",
            r.trace,
            r.rank,
            r.capacity_regions,
            r.eviction,
            r.merge,
            100.0 * r.hit_rate,
            r.bytes_registered,
            r.registrar_model_ns / 1e6,
            100.0 * r.optimal_hit_rate,
            100.0 * r.containment_hit_rate,
            100.0 * r.merging_bound_hit_rate
        );
    }
    println!(
        "MIN% = Belady MIN over exact page ranges without merging (not a bound for merging caches); \
         contain% = containment floor at unlimited capacity; bound% = upper bound for merging caches \
         (page coverage, any capacity; no tighter bound at a limited capacity is computed); \
         model ms = registrations x (16 us + 0.06 ns/B), modelled, not measured."
    );
}
