//! The C API tasks: `codegen` (regcache.h with the pinned cbindgen),
//! `install` (lib + header + pkg-config file), and the C and MPI test
//! steps `cargo xtask test` runs.

use crate::{cargo, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const HEADER: &str = "ffi/include/regcache.h";
const SONAME: &str = "libregcache.so.0";

/// The Rust source of the `regcache_result` enum, made from the one table
/// of result codes, `ffi/src/result/codes.rs`: cbindgen does not expand
/// macros, and the ffi crate makes the enum with one (`result_codes!` in
/// `ffi/src/result.rs`, over the same table). This `result_codes!` reads
/// the table with the same grammar and writes the enum as plain source:
/// the docs and numbers as they are, the texts dropped (the header has no
/// strings; `regcache_strerror` gives them).
macro_rules! result_codes {
    (
        $(#[doc = $edoc:literal])*
        pub enum regcache_result {
            $( $(#[doc = $doc:literal])* $name:ident = $num:literal => $text:literal, )*
        }
    ) => {
        concat!(
            $("#[doc = ", stringify!($edoc), "]\n",)*
            "#[repr(C)]\npub enum regcache_result {\n",
            $( $("#[doc = ", stringify!($doc), "]\n",)* stringify!($name), " = ", stringify!($num), ",\n", )*
            "}\n"
        )
    };
}

const RESULT_ENUM: &str = include!("../../ffi/src/result/codes.rs");

/// The Rust source of the `regcache_stats` struct, from the one list of
/// its fields, `ffi/src/stats_fields.rs` (the ffi crate makes the struct
/// with `stats_fields!` in `ffi/src/config.rs` over the same list): every
/// field a `uint64_t`, in the list's order, with its doc.
macro_rules! stats_fields {
    (
        $(#[doc = $sdoc:literal])*
        pub struct regcache_stats {
            $( $(#[doc = $doc:literal])* $field:ident, )*
        }
    ) => {
        concat!(
            $("#[doc = ", stringify!($sdoc), "]\n",)*
            "#[repr(C)]\npub struct regcache_stats {\n",
            $( $("#[doc = ", stringify!($doc), "]\n",)* "pub ", stringify!($field), ": u64,\n", )*
            "}\n"
        )
    };
}

const STATS_STRUCT: &str = include!("../../ffi/src/stats_fields.rs");

/// Generate `regcache.h` from `ffi/src` with cbindgen. With `check`, fail
/// when the committed header differs instead of writing it.
pub(crate) fn codegen(root: &Path, check: bool) -> Result<()> {
    let crate_dir = root.join("ffi");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .map_err(|e| anyhow::anyhow!("ffi/cbindgen.toml: {e}"))?;
    // The enum's source, for cbindgen to read before the crate (so that it
    // comes first in the header, as the crate's first item it opens).
    let dir = root.join("target/xtask-codegen");
    std::fs::create_dir_all(&dir)?;
    let result_enum = dir.join("regcache_result.rs");
    std::fs::write(&result_enum, RESULT_ENUM)?;
    let stats_struct = dir.join("regcache_stats.rs");
    std::fs::write(&stats_struct, STATS_STRUCT)?;
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_src(&result_enum)
        .with_src(&stats_struct)
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .context("cbindgen on ffi/")?
        .write(&mut out);
    let path = root.join(HEADER);
    if check {
        let committed = std::fs::read(&path).unwrap_or_default();
        if committed != out {
            bail!("{HEADER} is out of date with ffi/src: run `cargo xtask codegen` and commit it");
        }
        eprintln!("{HEADER} is up to date");
    } else {
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, out)?;
        eprintln!("wrote {HEADER}");
    }
    Ok(())
}

/// Build (release) and install `lib/libregcache.so*`,
/// `lib/libregcache_pmpi.so`, `include/regcache.h`,
/// `lib/pkgconfig/regcache.pc` and, where Open MPI's development files are
/// installed, Open MPI's rcache component `lib/openmpi/mca_rcache_regcache.so`
/// (see [`crate::ompi`]) under `prefix`.
/// `regcache-pmpi` is not a default workspace member (its build needs
/// `mpicc`), so it is named here: every step that preloads the PMPI library
/// (the MPI tests, hpcc and NetPIPE, the VM tier) installs it this way.
pub(crate) fn install(root: &Path, prefix: &Path) -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "-p",
        "regcache-ffi",
        "-p",
        "regcache-pmpi",
    ]))?;
    let prefix = std::path::absolute(prefix)?;
    let (lib, inc, pc) = (
        prefix.join("lib"),
        prefix.join("include"),
        prefix.join("lib/pkgconfig"),
    );
    for d in [&lib, &inc, &pc] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let version = env!("CARGO_PKG_VERSION");
    let real = format!("libregcache.so.{version}");
    let rel = root.join("target/release");
    copy(&rel.join("libregcache_ffi.so"), &lib.join(&real))?;
    for link in [SONAME, "libregcache.so"] {
        let l = lib.join(link);
        let _ = std::fs::remove_file(&l);
        std::os::unix::fs::symlink(&real, &l)?;
    }
    copy(
        &rel.join("libregcache_pmpi.so"),
        &lib.join("libregcache_pmpi.so"),
    )?;
    copy(&root.join(HEADER), &inc.join("regcache.h"))?;
    let tmpl = std::fs::read_to_string(root.join("ffi/regcache.pc.in"))?;
    let prefix_s = prefix.to_str().context("utf-8 prefix")?;
    std::fs::write(
        pc.join("regcache.pc"),
        tmpl.replace("@PREFIX@", prefix_s)
            .replace("@VERSION@", version),
    )?;
    crate::ompi::install_component(root, &prefix)?;
    eprintln!("installed regcache {version} under {prefix_s}");
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The installed tree the tests use.
pub(crate) fn test_prefix(root: &Path) -> PathBuf {
    root.join("target/capi-prefix")
}

/// `pkg-config --cflags --libs regcache` against the installed tree.
fn pkg_config(prefix: &Path) -> Result<Vec<String>> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "regcache"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .context("running pkg-config")?;
    if !out.status.success() {
        bail!(
            "pkg-config regcache: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// The C API tier: header drift check, install, then every C test program
/// compiled against the installed header and `.pc`, run under
/// AddressSanitizer and under valgrind.
pub(crate) fn test(root: &Path) -> Result<()> {
    codegen(root, true)?;
    let prefix = test_prefix(root);
    install(root, &prefix)?;
    let flags = pkg_config(&prefix)?;
    let bin = root.join("target/capi-tests");
    std::fs::create_dir_all(&bin)?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("ffi/tests/c"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    let libdir = prefix.join("lib");
    for src in &sources {
        let stem = src.file_stem().and_then(|s| s.to_str()).context("name")?;
        let asan = bin.join(format!("{stem}-asan"));
        let plain = bin.join(stem);
        run(Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
            .args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"])
            .arg(src)
            .arg("-o")
            .arg(&asan)
            // A test that only dlopens the library must not also load it
            // at startup (dlopen_test.c).
            .arg("-Wl,--as-needed")
            .args(&flags))?;
        run(Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
            .arg(src)
            .arg("-o")
            .arg(&plain)
            .arg("-Wl,--as-needed")
            .args(&flags))?;
        run(Command::new(&asan)
            .env("LD_LIBRARY_PATH", &libdir)
            // LeakSanitizer cannot run under ptrace-restricted sandboxes;
            // valgrind below checks leaks.
            .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
            .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"))?;
        run(Command::new("valgrind")
            .args([
                "--error-exitcode=1",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite,possible",
                "--quiet",
            ])
            .arg(&plain)
            .env("LD_LIBRARY_PATH", &libdir)
            // valgrind holds its global lock across munmap, so a
            // userfaultfd monitor thread can never answer: the programs
            // skip their uffd parts (run under ASan above).
            .env("REGCACHE_TEST_NO_UFFD", "1"))?;
    }
    eprintln!(
        "C API tests: {} program(s) passed under ASan+UBSan and valgrind",
        sources.len()
    );
    mpi_test(root, &prefix, &flags)
}

/// `mpirun` with the settings of this host (root, 2 cores, shared memory).
pub(crate) fn mpirun(np: u32) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "600",
        "mpirun",
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
    ])
    .arg(np.to_string())
    .env("OMPI_MCA_btl", "self,vader");
    c
}

/// Run, echo and return combined stdout + stderr; fail on a nonzero exit.
pub(crate) fn run_capture(cmd: &mut Command) -> Result<String> {
    eprintln!("$ {cmd:?}");
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{text}");
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    Ok(text)
}

/// Each of `ranks` ranks printed its statistics line with a hit rate;
/// returns the hit rates (percent) by rank.
pub(crate) fn pmpi_stats(output: &str, ranks: u32) -> Result<Vec<f64>> {
    (0..ranks)
        .map(|r| {
            let line = pmpi_line(output, r)?;
            line.split_whitespace()
                .skip_while(|w| *w != "hit_rate")
                .nth(1)
                .and_then(|v| v.trim_end_matches('%').parse::<f64>().ok())
                .with_context(|| format!("no hit_rate in {line:?}"))
        })
        .collect()
}

/// Rank `rank`'s statistics line (from `regcache-pmpi: rank N: ` on).
fn pmpi_line(output: &str, rank: u32) -> Result<&str> {
    let prefix = format!("regcache-pmpi: rank {rank}: ");
    output
        .lines()
        .find_map(|l| l.find(&prefix).map(|i| &l[i..]))
        .with_context(|| format!("rank {rank} printed no regcache-pmpi statistics line"))
}

/// The numeric field `name` of rank `rank`'s statistics line.
fn pmpi_field(output: &str, rank: u32, name: &str) -> Result<u64> {
    let line = pmpi_line(output, rank)?;
    line.split_whitespace()
        .skip_while(|w| *w != name)
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("no {name} in {line:?}"))
}

/// Each of `ranks` ranks released every registration it acquired: its
/// statistics line has `acquired N released N held 0`.
pub(crate) fn pmpi_balanced(output: &str, ranks: u32) -> Result<()> {
    for r in 0..ranks {
        let field = |name: &str| pmpi_field(output, r, name);
        let (acquired, released, held) = (field("acquired")?, field("released")?, field("held")?);
        if acquired != released || held != 0 {
            bail!(
                "rank {r} leaked registrations: acquired {acquired} released {released} \
                 held {held}"
            );
        }
        if acquired == 0 {
            bail!("rank {r} registered nothing: is the PMPI library preloaded?");
        }
    }
    Ok(())
}

/// Each of `ranks` ranks ran with verify mode on and checked hits against
/// their pages (`verified N` with N > 0) without a mismatch: the oracle of
/// issue 15 on a real application.
pub(crate) fn pmpi_verified(output: &str, ranks: u32) -> Result<()> {
    for r in 0..ranks {
        let checks = pmpi_field(output, r, "verified")?;
        let bad = pmpi_field(output, r, "mismatches")?;
        if checks == 0 {
            bail!("rank {r} checked no hit (verified 0): is REGCACHE_VERIFY=pfn in force?");
        }
        if bad != 0 {
            bail!("rank {r}: {bad} of {checks} checked hits were stale registrations");
        }
        eprintln!("rank {r}: verify=pfn checked {checks} hits, 0 mismatches");
    }
    Ok(())
}

/// Run hpcc (2 ranks, `mpi-tests/hpcc/hpccinf.txt`) in `dir` with the PMPI
/// library preloaded; check that hpcc passed and every rank printed its
/// statistics. `extra` are more `VAR=value` settings passed with `-x`.
pub(crate) fn run_hpcc(root: &Path, prefix: &Path, dir: &Path, extra: &[String]) -> Result<String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    copy(
        &root.join("mpi-tests/hpcc/hpccinf.txt"),
        &dir.join("hpccinf.txt"),
    )?;
    let pmpi = prefix.join("lib/libregcache_pmpi.so");
    let mut cmd = mpirun(2);
    cmd.current_dir(dir)
        .arg("-x")
        .arg(format!("LD_PRELOAD={}", pmpi.display()));
    for e in extra {
        cmd.args(["-x", e]);
    }
    let text = run_capture(cmd.arg("hpcc"))?;
    let outf = dir.join("hpccoutf.txt");
    let out = std::fs::read_to_string(&outf).context("hpccoutf.txt")?;
    for want in [
        "End of HPL section.",
        "Success=1",
        "End of Summary section.",
    ] {
        if !out.contains(want) {
            bail!("hpcc output ({}) lacks {want:?}", outf.display());
        }
    }
    if out.contains("FAILED") || !out.contains("PASSED") {
        bail!("hpcc reports a failed check: see {}", outf.display());
    }
    pmpi_stats(&text, 2)?;
    Ok(text)
}

/// The MPI tier: the stale-registration C program with 2 ranks against the
/// installed library, then hpcc and NetPIPE under the PMPI library.
/// Compile `mpi-tests/c/stale_registration.c` with `mpicc` against the
/// installed C API (`flags` from pkg-config).
fn build_stale(root: &Path, flags: &[String]) -> Result<PathBuf> {
    let work = root.join("target/mpi-tests");
    std::fs::create_dir_all(&work)?;
    let stale = work.join("stale_registration");
    run(Command::new("mpicc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg(root.join("mpi-tests/c/stale_registration.c"))
        .arg("-o")
        .arg(&stale)
        .args(flags))?;
    Ok(stale)
}

/// The keyed-DMA rendezvous between MPI ranks (issue 6): 1 B to 64 MiB
/// both ways, byte for byte, through `process_vm_writev` (with the
/// receiver-assisted copy from 256 KiB) and again forced through the
/// bounce segment.
pub(crate) fn keyed_dma_test(root: &Path) -> Result<()> {
    for bounce in ["0", "1"] {
        let text = run_capture(
            Command::new("timeout")
                .args(["900", "sh"])
                .arg(root.join("mpi-tests/run-keyed-dma.sh"))
                .env("REGCACHE_TRANSPORT_FORCE_BOUNCE", bounce),
        )?;
        if !text.contains("keyed_dma: PASS") {
            bail!("keyed DMA under mpirun (REGCACHE_TRANSPORT_FORCE_BOUNCE={bounce}) did not pass");
        }
    }
    Ok(())
}

/// What the VM tier needs of the C API: the installed tree (library,
/// PMPI library) and the stale-registration MPI program built against it.
pub(crate) fn vm_inputs(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let prefix = test_prefix(root);
    install(root, &prefix)?;
    let stale = build_stale(root, &pkg_config(&prefix)?)?;
    Ok((prefix, stale))
}

fn mpi_test(root: &Path, prefix: &Path, flags: &[String]) -> Result<()> {
    let work = root.join("target/mpi-tests");
    let libdir = prefix.join("lib");
    let stale = build_stale(root, flags)?;
    for monitor in ["auto", "external", "none"] {
        let text = run_capture(
            mpirun(2)
                .arg("-x")
                .arg(format!("LD_LIBRARY_PATH={}", libdir.display()))
                .arg("-x")
                .arg(format!("REGCACHE_MONITOR={monitor}"))
                .arg(&stale),
        )?;
        if !text.contains("stale_registration: PASSED (2 ranks)") {
            bail!("stale_registration (REGCACHE_MONITOR={monitor}) did not pass");
        }
    }

    // Edge cases and coverage of every wrapped call through the PMPI
    // library, every buffer through the cache; each rank must give back
    // every registration it took.
    for (name, libs) in [("pmpi_edge", &[][..]), ("pmpi_coverage", &["-ldl"][..])] {
        let exe = work.join(name);
        run(Command::new("mpicc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
            .arg(root.join(format!("mpi-tests/c/{name}.c")))
            .arg("-o")
            .arg(&exe)
            .args(libs))?;
        let text = run_pmpi_test(prefix, &exe, name)?;
        pmpi_stats(&text, 2)?;
        pmpi_balanced(&text, 2)?;
    }

    pmpi_fortran_test(root, prefix)?;

    let verify = ["REGCACHE_VERIFY=pfn".to_string()];
    let text = run_hpcc(root, prefix, &work.join("hpcc"), &verify)?;
    pmpi_balanced(&text, 2)?;
    pmpi_verified(&text, 2)?;
    eprintln!(
        "hpcc under regcache-pmpi: passed; hit rates by rank {:?} %",
        pmpi_stats(&text, 2)?
    );

    let np = work.join("netpipe");
    let _ = std::fs::remove_dir_all(&np);
    std::fs::create_dir_all(&np)?;
    let upper = 1 << 20;
    let text = run_capture(
        mpirun(2)
            .current_dir(&np)
            .arg("-x")
            .arg(format!(
                "LD_PRELOAD={}",
                prefix.join("lib/libregcache_pmpi.so").display()
            ))
            .args(["-x", "REGCACHE_VERIFY=pfn"])
            .args(["NPopenmpi", "-u", &upper.to_string(), "-p", "0"]),
    )?;
    netpipe_reached(&np, upper, "NetPIPE")?;
    eprintln!(
        "NetPIPE under regcache-pmpi: completed; hit rates by rank {:?} %",
        pmpi_stats(&text, 2)?
    );
    pmpi_balanced(&text, 2)?;
    pmpi_verified(&text, 2)?;
    Ok(())
}

/// NetPIPE (`what`, run in `dir`) completed its run up to `upper` bytes,
/// by its own record (np.out: bytes, Mbps, seconds per size; the console
/// line can be interleaved with the ranks' statistics lines).
fn netpipe_reached(dir: &Path, upper: u64, what: &str) -> Result<()> {
    let record = std::fs::read_to_string(dir.join("np.out")).context("NetPIPE np.out")?;
    let done = record
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .max();
    if done != Some(upper) {
        bail!("{what} did not complete its run up to {upper} bytes (np.out reaches {done:?})");
    }
    Ok(())
}

/// The main job's capacity-stressing real trace: NetPIPE with `-I`
/// ("invalidate cache": every repetition uses another part of a large
/// buffer pool, so the registration cache sees thousands of distinct
/// buffers) on 2 ranks to 1 MiB under the PMPI library with
/// `REGCACHE_TRACE_DIR`, then `regcache-bench replay` of the per-rank
/// traces at the default capacity and at 64 and 16 regions (the
/// capacities of issue 17), and the miss-ratio curve of rank 0. Results
/// under `out/`; returns the trace files.
pub(crate) fn bench_netpipe_invalidate(root: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let prefix = test_prefix(root);
    install(root, &prefix)?;
    let dir = root.join("target/mpi-tests/netpipe-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let traces = out.join("netpipe-I-traces");
    let _ = std::fs::remove_dir_all(&traces);
    let upper = 1 << 20;
    let text = run_capture(
        mpirun(2)
            .current_dir(&dir)
            .arg("-x")
            .arg(format!(
                "LD_PRELOAD={}",
                prefix.join("lib/libregcache_pmpi.so").display()
            ))
            .arg("-x")
            .arg(format!("REGCACHE_TRACE_DIR={}", traces.display()))
            .args(["NPopenmpi", "-I", "-u", &upper.to_string(), "-p", "0"]),
    )?;
    netpipe_reached(&dir, upper, "NetPIPE -I")?;
    let rates = pmpi_stats(&text, 2)?;
    pmpi_balanced(&text, 2)?;
    let bin = root.join("target/release/regcache-bench");
    let files: Vec<PathBuf> = (0..2)
        .map(|r| traces.join(format!("trace.{r}.txt")))
        .collect();
    for (tag, extra) in [
        ("", &[][..]),
        ("-64", &["--max-regions", "64"][..]),
        ("-16", &["--max-regions", "16"][..]),
    ] {
        let replay = run_capture(Command::new(&bin).args(extra).arg("replay").args(&files))?;
        std::fs::write(out.join(format!("netpipe-I-replay{tag}.txt")), &replay)?;
        let json = run_capture(
            Command::new(&bin)
                .args(extra)
                .args(["--json", "replay"])
                .args(&files),
        )?;
        std::fs::write(out.join(format!("netpipe-I-replay{tag}.json")), &json)?;
    }
    let svg = out.join("netpipe-I-mrc-rank0.svg");
    run(Command::new(&bin)
        .args(["mrc"])
        .arg(&files[0])
        .arg("-o")
        .arg(&svg))?;
    eprintln!(
        "NetPIPE -I under regcache-pmpi: live hit rates by rank {rates:?} %; replays in {}, \
         miss-ratio curve {}",
        out.join("netpipe-I-replay*.txt").display(),
        svg.display()
    );
    Ok(files)
}

/// Run test program `exe` on 2 ranks with the PMPI library preloaded and
/// every buffer registered (`REGCACHE_PMPI_MIN_BYTES=1`); its output, once
/// it said `<name>: PASSED (2 ranks)`.
fn run_pmpi_test(prefix: &Path, exe: &Path, name: &str) -> Result<String> {
    let text = run_capture(
        mpirun(2)
            .arg("-x")
            .arg(format!(
                "LD_PRELOAD={}",
                prefix.join("lib/libregcache_pmpi.so").display()
            ))
            .args(["-x", "REGCACHE_PMPI_MIN_BYTES=1"])
            .arg(exe),
    )?;
    if !text.contains(&format!("{name}: PASSED (2 ranks)")) {
        bail!("{name} did not pass under the PMPI library");
    }
    Ok(text)
}

/// A Fortran MPI program (`mpi-tests/f/pmpi_fortran.f90`, mpif.h and
/// `use mpi`, built with `mpif90`) under the PMPI library: Open MPI's
/// Fortran bindings bypass the C wrappers, so this fails when the Fortran
/// entry points are missing. The program checks its results and the
/// library's counters itself; here every rank must also be balanced, have
/// had its buffers through the cache (hits + misses > 0) and have had no
/// failed registration (a Fortran MPI_IN_PLACE or MPI_BOTTOM taken for a
/// buffer would be ranged from a common block's address).
fn pmpi_fortran_test(root: &Path, prefix: &Path) -> Result<()> {
    let work = root.join("target/mpi-tests");
    let src = root.join("mpi-tests/f");
    let helper = work.join("pmpi_counters.o");
    let exe = work.join("pmpi_fortran");
    run(Command::new("mpicc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-c"])
        .arg(src.join("pmpi_counters.c"))
        .arg("-o")
        .arg(&helper))?;
    run(Command::new("mpif90")
        .args(["-Wall", "-Werror", "-g"])
        // gfortran writes the module file of pmpi_fortran.f90 here.
        .arg("-J")
        .arg(&work)
        .arg(src.join("pmpi_fortran.f90"))
        .arg(&helper)
        .arg("-o")
        .arg(&exe)
        .arg("-ldl"))?;
    let text = run_pmpi_test(prefix, &exe, "pmpi_fortran")?;
    pmpi_balanced(&text, 2)?;
    for r in 0..2 {
        let (hits, misses, failed) = (
            pmpi_field(&text, r, "hits")?,
            pmpi_field(&text, r, "misses")?,
            pmpi_field(&text, r, "failed")?,
        );
        if hits + misses == 0 {
            bail!("pmpi_fortran rank {r}: no buffer went through the cache (hits 0 misses 0)");
        }
        if failed != 0 {
            bail!("pmpi_fortran rank {r}: {failed} registration(s) failed");
        }
    }
    eprintln!("pmpi_fortran under regcache-pmpi: passed");
    Ok(())
}

/// The main job on real input: hpcc (2 ranks) under the PMPI library with
/// `REGCACHE_TRACE_DIR`, then `regcache-bench replay` of the per-rank
/// traces and the miss-ratio curve of rank 0. Results under `out/`.
pub(crate) fn bench_hpcc(root: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let prefix = test_prefix(root);
    install(root, &prefix)?;
    let traces = out.join("hpcc-traces");
    let _ = std::fs::remove_dir_all(&traces);
    let text = run_hpcc(
        root,
        &prefix,
        &root.join("target/mpi-tests/hpcc-bench"),
        &[format!("REGCACHE_TRACE_DIR={}", traces.display())],
    )?;
    let rates = pmpi_stats(&text, 2)?;
    let bin = root.join("target/release/regcache-bench");
    let files: Vec<PathBuf> = (0..2)
        .map(|r| traces.join(format!("trace.{r}.txt")))
        .collect();
    let replay = run_capture(Command::new(&bin).arg("replay").args(&files))?;
    std::fs::write(out.join("hpcc-replay.txt"), &replay)?;
    let json = run_capture(Command::new(&bin).args(["--json", "replay"]).args(&files))?;
    std::fs::write(out.join("hpcc-replay.json"), &json)?;
    let svg = out.join("hpcc-mrc-rank0.svg");
    run(Command::new(&bin)
        .args(["mrc"])
        .arg(&files[0])
        .arg("-o")
        .arg(&svg))?;
    eprintln!(
        "hpcc under regcache-pmpi: live hit rates by rank {rates:?} %; replay in {}, \
         miss-ratio curve {}",
        out.join("hpcc-replay.txt").display(),
        svg.display()
    );
    Ok(files)
}
