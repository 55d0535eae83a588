//! `regcache-bench`: replay registration traces through the real cache and
//! a real registrar, and compare the cache's hit rate with the optimum.
//!
//! ```text
//! regcache-bench                      # the built-in (synthetic) workloads
//! regcache-bench replay FILE...       # traces in the docs/TRACES.md format
//! regcache-bench mrc FILE -o mrc.svg  # miss-ratio curve, cache vs optimal
//! regcache-bench --compare ucx [replay FILE...]  # side by side with UCX's rcache
//! ```

use anyhow::Context;
use clap::{Parser, Subcommand};
use regcache::{AnyRegistrar, Config, RegistrarKind, open_registrar};
use regcache_bench::{mrc, replay, trace::Trace, ucx, workloads};
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
    /// Do not merge overlapping and adjacent regions.
    #[arg(long, global = true)]
    no_merge: bool,
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
    /// Draw the miss-ratio curve of one trace (cache vs Belady MIN) as SVG.
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
}

fn parse_monitor(s: &str) -> Result<regcache::MonitorKind, String> {
    regcache::MonitorKind::parse(s)
        .ok_or_else(|| format!("{s:?}: expected auto, kernel, patch, uffd, external or none"))
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
    if opts.no_merge {
        c.merge = false;
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
        Some(Command::Mrc { .. }) => {
            anyhow::bail!("--compare applies to replay and the built-ins, not mrc")
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
        Some(Command::Mrc { file, rank, output }) => {
            let t = Trace::read(file)?;
            let rank = rank
                .or_else(|| t.ranks.keys().next().copied())
                .context("trace has no records")?;
            let (points, ceiling) = mrc::curve(&make, &t, rank, &cfg, opts.max_footprint)?;
            mrc::draw(output, &format!("{} rank {rank}", t.name), &points, ceiling)?;
            if opts.json {
                println!("{}", serde_json::to_string_pretty(&points)?);
            } else {
                println!("capacity  cache    optimal");
                for p in &points {
                    println!(
                        "{:>8}  {:>6.1}%  {:>6.1}%",
                        p.capacity,
                        100.0 * p.cache,
                        100.0 * p.optimal
                    );
                }
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
                    let (points, ceiling) = mrc::curve(&make, &t, 0, &cfg, opts.max_footprint)?;
                    let svg = dir.join(format!("{stem}-mrc.svg"));
                    mrc::draw(&svg, &t.name, &points, ceiling)?;
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
