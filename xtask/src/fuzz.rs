//! `cargo xtask fuzz`: coverage-guided fuzzing on the stable toolchain.
//!
//! ## Which fuzzer, and why this one
//!
//! `cargo fuzz` needs nightly (`-Zsanitizer`, and it passes `-Z` flags
//! even with `-s none`). What works here, offline, on stable:
//! **libFuzzer through the `libfuzzer-sys` crate** (from crates.io; its
//! build script compiles libFuzzer's C++ sources, so it needs only `g++`),
//! with the instrumentation `cargo fuzz` asks for spelled as stable
//! codegen options: `-Cpasses=sancov-module` and
//! `-Cllvm-args=-sanitizer-coverage-{level=4,inline-8bit-counters,pc-table,trace-compares}`.
//! What it lacks without nightly is AddressSanitizer; the targets are
//! Rust, so the oracle is Rust's own checks (debug assertions and
//! overflow checks are on in this build), each target's asserts, and
//! canary pages where a hostile input could make the code write.
//!
//! Two details: the flags go in `RUSTFLAGS` with an explicit `--target`,
//! so that build scripts and proc macros are built without them (else
//! their links fail on the `__sanitizer_cov_*` symbols); and the build
//! has its own target directory (`target/fuzz`), since the flags rebuild
//! everything.
//!
//! Not tried (no time in the session that set this up): AFL++ (Debian's
//! `afl++` with the `afl` crate / `cargo afl`, whose runtime `cargo afl`
//! builds from source) and honggfuzz (the `honggfuzz` crate, which builds
//! its runtime from source too). libFuzzer needed nothing but `g++`.
//!
//! ## Corpus
//!
//! Seeds are kept small in the repository (`fuzz/corpus/TARGET/`); what a
//! run finds goes to `target/fuzz/corpus/TARGET/` (libFuzzer adds new
//! inputs to its first corpus directory), crashes to
//! `target/fuzz/artifacts/TARGET/`. Reproduce one with
//! `target/fuzz/x86_64-unknown-linux-gnu/release/TARGET ARTIFACT`.

use crate::{cargo, run};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};

/// The targets: `fuzz/fuzz_targets/NAME.rs`, and what each drives.
pub(crate) const TARGETS: &[(&str, &str)] = &[
    (
        "trace",
        "regcache-bench's trace parser (docs/TRACES.md) on arbitrary text",
    ),
    (
        "capi",
        "sequences of regcache_* C API calls with arbitrary handles, lengths, addresses, double releases, destroyed caches",
    ),
    (
        "dma",
        "keyed-DMA binding slot, descriptors and assist-job records scribbled by a hostile peer, against the receiver",
    ),
    (
        "dma_send",
        "keyed-DMA sends to a receiver process whose binding slot a hostile peer scribbled; its canary pages must stay untouched",
    ),
    (
        "shm_signal",
        "shm_signal doorbell descriptors scribbled by a hostile peer; attach at arbitrary offsets",
    ),
];

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// SanitizerCoverage as `cargo fuzz` passes it, in stable spelling, plus
/// the checks that are the oracle without a sanitizer.
const RUSTFLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions -Coverflow-checks -Cdebuginfo=1";

/// `cargo xtask fuzz`: list, or run one target (or all) for `secs` each.
pub(crate) fn fuzz(
    root: &Path,
    list: bool,
    target: Option<&str>,
    secs: u64,
    extra: &[String],
) -> Result<()> {
    if list {
        for (name, what) in TARGETS {
            println!("{name:<12} {what}");
        }
        return Ok(());
    }
    let names: Vec<&str> = match target {
        None | Some("all") => TARGETS.iter().map(|t| t.0).collect(),
        Some(t) if TARGETS.iter().any(|x| x.0 == t) => vec![t],
        Some(t) => bail!("no fuzz target {t:?}; `cargo xtask fuzz --list` names them"),
    };
    build(&names)?;
    let mut report = Vec::new();
    for t in names {
        report.push(run_target(root, t, secs, extra)?);
    }
    for line in report {
        eprintln!("{line}");
    }
    Ok(())
}

/// The short run of every target that `cargo xtask test` does:
/// `REGCACHE_FUZZ_SECONDS` each (default 10), committed corpus first.
pub(crate) fn smoke(root: &Path) -> Result<()> {
    let secs = std::env::var("REGCACHE_FUZZ_SECONDS")
        .ok()
        .map(|v| v.parse::<u64>().context("REGCACHE_FUZZ_SECONDS"))
        .transpose()?
        .unwrap_or(10);
    fuzz(root, false, None, secs, &[])
}

fn build(names: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--locked",
        "--release",
        "-p",
        "regcache-fuzz",
        "--target",
        TRIPLE,
    ])
    .env("RUSTFLAGS", RUSTFLAGS)
    .env("CARGO_TARGET_DIR", "target/fuzz");
    for n in names {
        cmd.args(["--bin", n]);
    }
    run(&mut cmd)
}

/// Run one target for `secs` seconds; its summary line (executions,
/// executions per second, corpus size). A crash, hang (10 s per input)
/// or out-of-memory fails with the log's tail and the artifact's path.
fn run_target(root: &Path, t: &str, secs: u64, extra: &[String]) -> Result<String> {
    let bin = root.join(format!("target/fuzz/{TRIPLE}/release/{t}"));
    let work = root.join(format!("target/fuzz/corpus/{t}"));
    let seeds = root.join(format!("fuzz/corpus/{t}"));
    let artifacts = root.join(format!("target/fuzz/artifacts/{t}"));
    let logs = root.join("target/fuzz/logs");
    for d in [&work, &artifacts, &logs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log_path = logs.join(format!("{t}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("-max_total_time={secs}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=4096")
        .arg("-max_len=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(extra)
        .arg(&work);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    // The panic message, not a backtrace, ends the log.
    cmd.env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(log);
    eprintln!("$ {cmd:?} 2> {}", log_path.display());
    let status = cmd
        .status()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {t} failed ({status}); log {}; artifacts in {}:\n{}",
            log_path.display(),
            artifacts.display(),
            tail.join("\n")
        );
    }
    let stat = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{key}:")))
            .map_or("?".to_owned(), |v| v.trim().to_owned())
    };
    let corpus = std::fs::read_dir(&work).map_or(0, |d| d.count());
    Ok(format!(
        "fuzz {t}: {} executions in {secs} s, {} exec/s, {corpus} inputs in {}, no crash",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        work.display()
    ))
}
