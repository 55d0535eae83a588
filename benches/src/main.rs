//! `regcache-bench`: replay registration traces through the real cache and
//! a real registrar, and compare the cache's hit rate with the optimum.
//!
//! ```text
//! regcache-bench                      # the built-in (synthetic) workloads
//! regcache-bench replay FILE...       # traces in the docs/TRACES.md format
//! regcache-bench mrc FILE -o mrc.svg  # miss-ratio curve, cache vs optimal
//! regcache-bench intranode-plot CSV -o intranode.svg  # keyed DMA vs memcpy vs vader
//! ```

use anyhow::Context;
use clap::{Parser, Subcommand};
use regcache::{AnyRegistrar, Config, RegistrarKind, open_registrar};
use regcache_bench::{intranode, mrc, replay, trace::Trace, workloads};
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
        .ok_or_else(|| format!("{s:?}: expected auto, kernel, uffd, external or none"))
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
    let mut reports = Vec::new();
    match &cli.command {
        Some(Command::Replay { files }) => {
            for f in files {
                let t = Trace::read(f)?;
                reports.extend(replay::replay(&make, &t, &cfg, opts.max_footprint)?);
            }
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
            let scale = if opts.quick {
                workloads::Scale::Quick
            } else {
                workloads::Scale::Full
            };
            for t in workloads::all(scale) {
                reports.extend(replay::replay(&make, &t, &cfg, opts.max_footprint)?);
                if let Some(dir) = &opts.out_dir {
                    std::fs::create_dir_all(dir)?;
                    let stem = t.name.replace(':', "-");
                    std::fs::write(dir.join(format!("{stem}.trace")), t.to_text())?;
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
