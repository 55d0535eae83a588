//! `cargo xtask`: the project's tasks, so that green locally means green in
//! CI. `.ci/run` calls `cargo xtask ci`, which is exactly `cargo xtask test`.
//!
//! Tasks install what they need themselves (see [`deps`]), because CI runs
//! on a fresh machine where nothing installed by hand survives.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

mod capi;
mod fuzz;
mod kmod;
mod ompi;
mod openib;
mod vm;

#[derive(Parser, Debug)]
#[command(about = "regcache project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Everything CI runs: identical to `test`.
    Ci,
    /// Install dependencies, then fmt --check, clippy -D warnings, all tests.
    Test,
    /// The main job: `regcache-bench` on its workloads, then (with no
    /// arguments) hpcc and the intra-node table and plot; results under out/.
    Bench {
        /// Instead of the main job: NetPIPE over Open MPI's openib BTL on
        /// SoftRoCE in the VM, with regcache and with grdma as the rcache,
        /// interleaved rounds, and the side-by-side table.
        #[arg(long)]
        rdma: bool,
        /// With `--rdma`: 1 (both ranks in one VM) or 2 (two VMs).
        #[arg(long, default_value_t = 1, requires = "rdma")]
        nodes: u8,
        /// With `--rdma`: NetPIPE runs per rcache.
        #[arg(long, default_value_t = 3, requires = "rdma")]
        rounds: u32,
        /// With `--rdma`: the largest message in bytes.
        #[arg(long, default_value_t = 4 << 20, requires = "rdma")]
        max_bytes: u64,
        /// Extra arguments passed to `regcache-bench`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Install the system packages and tools the tasks need.
    Deps,
    /// Regenerate ffi/include/regcache.h with the pinned cbindgen.
    Codegen {
        /// Fail if the committed header differs instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Only the C API and MPI tiers of `test` (header drift, C tests under
    /// ASan and valgrind, mpirun tests).
    TestCapi,
    /// Only the Open MPI rcache component tier of `test` (ompi_info, the
    /// component under mpirun with and without Open MPI's memory patcher,
    /// bad input, running uncached, a component built for another release).
    TestOmpi,
    /// Install libregcache.so, libregcache_pmpi.so, regcache.h, regcache.pc
    /// and Open MPI's rcache component (lib/openmpi/mca_rcache_regcache.so).
    Install {
        /// Installation prefix (lib/, include/, lib/pkgconfig/ below it).
        #[arg(long)]
        prefix: PathBuf,
    },
    /// Coverage-guided fuzzing (libFuzzer, stable toolchain): run TARGET
    /// (or every target) for `--time` seconds each; `--list` names them.
    Fuzz {
        /// Name the targets and what each drives.
        #[arg(long)]
        list: bool,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// The target (`--list`); all of them when omitted.
        target: Option<String>,
        /// Extra libFuzzer flags, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Boot the SoftRoCE VM and run CMD in it (default: the VM test tier).
    Vm {
        /// Timeout in seconds for CMD inside the VM (boot not included).
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
        /// Two VMs joined by a qemu socket network: the two-node RDMA test.
        #[arg(long)]
        two_nodes: bool,
        /// The command to run inside the VM, from the workspace root.
        #[arg(trailing_var_arg = true)]
        cmd: Vec<String>,
    },
    /// Open MPI's own RDMA path in the VM: pml ob1 over btl openib (rebuilt
    /// from Debian's source with rdmacm, cached under target/openib/) on
    /// SoftRoCE, 2 ranks: the stale-buffer program, NetPIPE, hpcc, one-sided
    /// Put/Get (mpi-tests/openib-suite.sh).
    /// Any MPI program over RDMA with regcache: 2 ranks over Open MPI's
    /// openib on SoftRoCE in the VM (or two), printing its output and each
    /// rank's rcache statistics. PROGRAM: a `.c` file, a host executable,
    /// or a command on the VM's PATH.
    MpirunRdma {
        /// grdma, regcache or both (default regcache).
        #[arg(long, value_enum, default_value = "regcache")]
        rcache: openib::Rcache,
        /// 1: one VM; 2: two VMs, one rank each.
        #[arg(long, default_value_t = 1)]
        nodes: u8,
        /// PROGRAM [ARGS...]
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    Openib {
        /// The rcache openib uses (default: REGCACHE_OPENIB_RCACHE, else
        /// both: regcache then grdma in the same VM); regcache's component
        /// is built by `cargo xtask install`.
        #[arg(long, value_enum)]
        rcache: Option<openib::Rcache>,
        /// 1: one VM, both ranks over the rxe loopback; 2: two VMs.
        #[arg(long, default_value_t = 1)]
        nodes: u8,
        /// The long runs (more exchanges, NetPIPE to 8 MiB, hpcc N=2000).
        #[arg(long)]
        long: bool,
        /// Only build (or find cached) the openib plugin, on the host.
        #[arg(long)]
        build_only: bool,
    },
    /// Build the kernel device (umn/kmod) for the VM kernel, load it in the
    /// VM and run the device tests, timings, unload and dmesg checks.
    Kmod {
        /// Timeout in seconds for the run inside the VM (boot not included).
        #[arg(long, default_value_t = 1500)]
        timeout: u64,
        /// Only build the module on the host.
        #[arg(long)]
        build_only: bool,
        /// Install the module in the VM with DKMS (umn/kmod/dkms-install.sh)
        /// and run the tier on it; `dkms remove` at the end.
        #[arg(long)]
        dkms: bool,
        /// Also time hits on untouched regions while another thread unmaps,
        /// region words off and on (regcache/tests/region_words_bench.rs).
        #[arg(long)]
        bench_words: bool,
        /// Install the module on this machine with DKMS, for the running
        /// kernel (needs root or sudo, dkms and the kernel's headers); no VM.
        #[arg(long, conflicts_with_all = ["build_only", "dkms", "bench_words"])]
        install: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Ci | Task::Test => test(&root),
        Task::Bench {
            rdma: true,
            nodes,
            rounds,
            max_bytes,
            ..
        } => openib::bench(&root, nodes, rounds, max_bytes),
        Task::Bench { args, .. } => bench(&root, &args),
        Task::Deps => deps().and_then(|()| openib::deps()),
        Task::Codegen { check } => capi::codegen(&root, check),
        Task::Install { prefix } => capi::install(&root, &prefix),
        Task::TestCapi => capi::test(&root),
        Task::TestOmpi => ompi::test(&root),
        Task::Fuzz {
            list,
            time,
            target,
            args,
        } => {
            if !list {
                deps()?;
            }
            fuzz::fuzz(&root, list, target.as_deref(), time, &args)
        }
        Task::Vm {
            timeout,
            two_nodes,
            cmd,
        } => vm::vm(&root, timeout, two_nodes, &cmd),
        Task::Kmod {
            timeout,
            build_only,
            dkms,
            bench_words,
            install,
        } => {
            if install {
                kmod::install_here(&root)
            } else {
                kmod::kmod(
                    &root,
                    timeout,
                    kmod::KmodOptions {
                        build_only,
                        dkms,
                        bench_words,
                    },
                )
            }
        }
        Task::MpirunRdma { rcache, nodes, cmd } => {
            deps()?;
            openib::mpirun_rdma(&root, rcache, nodes, &cmd)
        }
        Task::Openib {
            rcache,
            nodes,
            long,
            build_only,
        } => {
            if build_only {
                return openib::plugin(&root).map(|_| ());
            }
            let rcache = match rcache {
                Some(r) => r,
                None => openib::Rcache::from_env()?,
            };
            openib::run_suite(&root, rcache, nodes, long)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Run a command, echoing it; fail with its exit status.
fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian packages the host tier needs. Installed only when missing.
const HOST_PACKAGES: &[(&str, &str)] = &[
    // rdma-mummy-sys' build script (cmake, bindgen); no RDMA packages.
    ("cmake", "/usr/bin/cmake"),
    ("libclang-dev", "/usr/lib/llvm-14/lib/libclang.so"),
    // MPI tests (Open MPI's mpirun and mpicc); umn's ABI test needs cc.
    ("openmpi-bin", "/usr/bin/mpirun"),
    ("libopenmpi-dev", "/usr/bin/mpicc"),
    // mpif90 for the Fortran PMPI test (libopenmpi-dev depends on it, but
    // a --no-install-recommends host may lack it).
    ("gfortran", "/usr/bin/gfortran"),
    ("gcc", "/usr/bin/gcc"),
    // libfuzzer-sys compiles libFuzzer's C++ sources (xtask/src/fuzz.rs).
    ("g++", "/usr/bin/g++"),
    // C API and PMPI tiers (xtask/src/capi.rs).
    ("pkg-config", "/usr/bin/pkg-config"),
    ("valgrind", "/usr/bin/valgrind"),
    ("hpcc", "/usr/bin/hpcc"),
    ("netpipe-openmpi", "/usr/bin/NPopenmpi"),
    // regcache-bench --compare ucx (UCX 1.13's rcache headers and libucs;
    // benches/build.rs builds the shim only when they are here).
    ("libucx-dev", "/usr/include/ucs/memory/rcache.h"),
];

fn deps() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !have("cargo-nextest") {
        run(cargo().args(["install", "--locked", "cargo-nextest"]))?;
    }
    Ok(())
}

fn test(_root: &Path) -> Result<()> {
    let mut t = Timings::default();
    t.step("deps", deps)?;
    t.step("fmt", || run(cargo().args(["fmt", "--all", "--check"])))?;
    t.step("clippy", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    t.step("host tests (nextest)", || {
        run(cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-fail-fast",
        ]))
    })?;
    t.step("doctests", || {
        run(cargo().args(["test", "--workspace", "--doc", "--locked"]))
    })?;
    t.step("loom models", loom_all)?;
    t.step("C API (ASan, valgrind, PMPI)", || capi::test(_root))?;
    t.step("keyed DMA C test", || capi::keyed_dma_test(_root))?;
    t.step("Open MPI rcache component", || ompi::test(_root))?;
    // A short run of every fuzz target (committed corpus first).
    t.step("fuzz smoke", || fuzz::smoke(_root))?;
    if std::env::var("REGCACHE_SKIP_VM").as_deref() == Ok("1") {
        eprintln!("VM tier SKIPPED: REGCACHE_SKIP_VM=1");
    } else {
        t.step("SoftRoCE VM tier", || vm::test_tier(_root))?;
        t.step("openib VM tier", || openib::test_tier(_root))?;
        if std::env::var("REGCACHE_SKIP_KMOD").as_deref() == Ok("1") {
            eprintln!("kernel device tier SKIPPED: REGCACHE_SKIP_KMOD=1");
        } else {
            t.step("kernel device tier", || {
                kmod::kmod(_root, 1500, kmod::KmodOptions::default())
            })?;
        }
    }
    Ok(())
}

/// Wall time of each step of `cargo xtask test`, printed as each ends
/// and as a table when the run ends (passed or not): CI has a time budget
/// (~45 min on a fresh machine), and this is where it goes.
#[derive(Default)]
struct Timings {
    steps: Vec<(&'static str, std::time::Duration, bool)>,
}

impl Timings {
    fn step(&mut self, name: &'static str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let start = std::time::Instant::now();
        let r = f();
        let took = start.elapsed();
        eprintln!(
            "[xtask test] {name}: {} in {:.0} s",
            if r.is_ok() { "passed" } else { "FAILED" },
            took.as_secs_f64()
        );
        self.steps.push((name, took, r.is_ok()));
        r
    }
}

impl Drop for Timings {
    fn drop(&mut self) {
        let total: f64 = self.steps.iter().map(|s| s.1.as_secs_f64()).sum();
        eprintln!("[xtask test] wall time per step:");
        for (name, took, ok) in &self.steps {
            eprintln!(
                "[xtask test]   {:>7.0} s  {name}{}",
                took.as_secs_f64(),
                if *ok { "" } else { " (FAILED)" }
            );
        }
        eprintln!("[xtask test]   {total:>7.0} s  total");
    }
}

/// The loom models (`cargo xtask test`'s loom step).
fn loom_all() -> Result<()> {
    // Loom models of the cross-thread protocols: umn's generation seqlock,
    // the transport's protocols, and the C handle table's generations
    // (`loom_handles`); each in its own target directory (`--cfg loom`
    // rebuilds everything).
    run(cargo()
        .args([
            "test",
            "--locked",
            "-p",
            "umn",
            "--lib",
            "--release",
            "loom",
        ])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", "target/loom"))?;
    // ... and the transport's shm_signal and assisted-copy protocols
    // (without the rdma feature: verbs has no loom model).
    run(cargo()
        .args([
            "test",
            "--locked",
            "-p",
            "regcache-transport",
            "--no-default-features",
            "--release",
            "--test",
            "loom_shm_signal",
        ])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", "target/loom"))?;
    // ... and the cache's slot state word and deferred release, and the C
    // handle table's generations: the models must pass, and each must fail
    // with its protocol step deliberately broken (else it would not be
    // checking anything).
    loom_models(
        "regcache",
        "target/loom",
        "loom_",
        &[
            ("state", "loom_state_word"),
            ("deferred", "loom_deferred_release"),
        ],
    )?;
    loom_models(
        "regcache-ffi",
        "target/loom-ffi",
        "loom",
        &[("handles", "loom_publish_then_release_on_another_thread")],
    )?;
    Ok(())
}

/// A crate's loom models (`regcache/src/cache/loom_models.rs`,
/// `ffi/src/generation.rs`): those matching `filter` must pass under
/// `--cfg loom` in `target`; then each `(break, model)` twin, built with
/// `--cfg regcache_loom_break="break"` (one protocol step deliberately
/// broken in the real code) in a target directory of its own (the flag
/// rebuilds everything), must fail — else the model checks nothing.
fn loom_models(pkg: &str, target: &str, filter: &str, broken: &[(&str, &str)]) -> Result<()> {
    let test = |rustflags: &str, target: &str, filter: &str| {
        let mut cmd = cargo();
        cmd.args(["test", "--locked", "-p", pkg, "--lib", "--release", filter])
            .env("RUSTFLAGS", rustflags)
            .env("CARGO_TARGET_DIR", target);
        cmd
    };
    run(&mut test("--cfg loom", target, filter))?;
    for (broken, model) in broken {
        let flags = format!("--cfg loom --cfg regcache_loom_break=\"{broken}\"");
        let target = format!("target/loom-break-{broken}");
        // Build first, so that a build failure is not taken for the model
        // failing.
        run(test(&flags, &target, model).arg("--no-run"))?;
        let mut cmd = test(&flags, &target, model);
        eprintln!("$ {cmd:?} (must fail)");
        let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() || !stdout.contains(&format!("{model} ... FAILED")) {
            bail!(
                "loom model {model} did not fail with regcache_loom_break=\"{broken}\":\n{stdout}"
            );
        }
        eprintln!("loom model {model} fails as it must with regcache_loom_break=\"{broken}\"");
    }
    Ok(())
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    deps()?;
    let out = root.join("out");
    std::fs::create_dir_all(&out)?;
    run(cargo().args(["build", "--release", "--locked", "-p", "regcache-bench"]))?;
    let bin = root.join("target/release/regcache-bench");
    let mut cmd = Command::new(&bin);
    if args.is_empty() {
        cmd.args(["--out-dir", out.to_str().context("utf-8 path")?]);
    } else {
        cmd.args(args);
    }
    run(&mut cmd)?;
    if args.is_empty() {
        let mut traces = capi::bench_hpcc(root, &out)?;
        traces.extend(capi::bench_netpipe_invalidate(root, &out)?);
        // The real traces side by side with UCX's rcache (issue 17): hit
        // rates and the caches' time per operation, interleaved rounds.
        let cmp = Command::new(&bin)
            .args(["--registrar", "pin", "--compare", "ucx", "replay"])
            .args(&traces)
            .output()
            .context("running regcache-bench --compare ucx")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&cmp.stdout),
            String::from_utf8_lossy(&cmp.stderr)
        );
        eprint!("{text}");
        std::fs::write(out.join("compare-ucx.txt"), &text)?;
        if !cmp.status.success() && !text.contains("unavailable") {
            bail!("regcache-bench --compare ucx failed: see out/compare-ucx.txt");
        }
        bench_intranode(root, &out, &bin)?;
    }
    Ok(())
}

/// The intra-node comparison (issue 14): regcache-transport's `intranode`
/// bench in its report mode prints the copy-path calibration and the table
/// keyed DMA vs memcpy vs Open MPI vader (same run) and writes the curves
/// to `out/intranode.csv`; `regcache-bench intranode-plot` draws them to
/// `out/intranode-bandwidth.svg`. `RC_BENCH_REPS` sets the repetitions
/// (default 3).
fn bench_intranode(root: &Path, out: &Path, bench_bin: &Path) -> Result<()> {
    let csv = out.join("intranode.csv");
    let svg = out.join("intranode-bandwidth.svg");
    run(cargo()
        .args([
            "bench",
            "--locked",
            "-p",
            "regcache-transport",
            "--bench",
            "intranode",
        ])
        .env("RC_BENCH_ONLY", "report")
        .env("RC_BENCH_CSV", &csv)
        .current_dir(root))?;
    run(Command::new(bench_bin)
        .arg("intranode-plot")
        .arg(&csv)
        .arg("-o")
        .arg(&svg))?;
    Ok(())
}
