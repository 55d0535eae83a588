//! Open MPI's rcache component, `mca_rcache_regcache.so` (`ffi/ompi/`):
//! its build and install (a step of `cargo xtask install`) and its tests
//! (`cargo xtask test-ompi`, part of `cargo xtask test`).
//!
//! The component is C compiled against the *installed* Open MPI's
//! internal headers (`opal_config.h`, `opal/mca/rcache/rcache.h`): the
//! registration layout depends on how that Open MPI was configured, so
//! the include directories come from `mpicc --showme:incdirs` and the
//! library directory from `mpicc --showme:libdirs`, never from a fixed
//! path; the system's own component folder (which
//! `mca_base_component_path` must keep listing, since the variable
//! replaces the default) from `ompi_info --path pkglibdir --parsable`.
//! It is not part of `cargo build`: Rust builds must not need Open MPI.
//!
//! The tests are real MPI jobs: `ffi/ompi/tests/rcache_component_test.c`
//! acts as a BTL (its `register_mem` mlocks) and creates the rcache
//! through Open MPI's framework under `mpirun`; each run is checked both
//! by the program's own PASSED line and by the component's per-rank
//! statistics line (`rcache_regcache_verbose 1`), which says which
//! invalidation source kept the cache true.

use crate::capi::{mpirun, run_capture};
use crate::run;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "ffi/ompi/rcache_regcache.c";
const TEST_SOURCE: &str = "ffi/ompi/tests/rcache_component_test.c";
/// The component's file name: Open MPI loads `mca_<framework>_<name>.so`.
const COMPONENT: &str = "mca_rcache_regcache.so";

/// Where the installed Open MPI keeps what the component is built with.
struct OpenMpi {
    /// `mpicc --showme:incdirs`: one of them has `opal_config.h`.
    incdirs: Vec<PathBuf>,
    /// `mpicc --showme:libdirs` (`libopen-pal.so`).
    libdirs: Vec<PathBuf>,
    /// `ompi_info --path pkglibdir`: the system's component folder.
    pkglibdir: PathBuf,
}

fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Query the installed Open MPI. `Ok(None)` (with the reason) when there
/// is no `mpicc`/`ompi_info` or no internal headers (Open MPI built
/// without `--with-devel-headers`).
fn open_mpi() -> Result<std::result::Result<OpenMpi, String>> {
    if !crate::have("mpicc") || !crate::have("ompi_info") {
        return Ok(Err("no mpicc/ompi_info (Open MPI's libopenmpi-dev)".into()));
    }
    let paths = |arg: &str| -> Result<Vec<PathBuf>> {
        Ok(stdout_of(Command::new("mpicc").arg(arg))?
            .split_whitespace()
            .map(PathBuf::from)
            .collect())
    };
    let incdirs = paths("--showme:incdirs")?;
    let libdirs = paths("--showme:libdirs")?;
    let pkglibdir =
        stdout_of(Command::new("ompi_info").args(["--path", "pkglibdir", "--parsable"]))?
            .lines()
            .find_map(|l| l.strip_prefix("path:pkglibdir:"))
            .map(PathBuf::from)
            .context("ompi_info --path pkglibdir --parsable printed no path:pkglibdir:")?;
    let rcache_h = incdirs
        .iter()
        .map(|d| d.join("opal/mca/rcache/rcache.h"))
        .find(|h| h.exists());
    if rcache_h.is_none() || !incdirs.iter().any(|d| d.join("opal_config.h").exists()) {
        return Ok(Err(format!(
            "Open MPI's internal headers (opal_config.h, opal/mca/rcache/rcache.h) are in none \
             of mpicc's include directories {incdirs:?} (an Open MPI built without \
             --with-devel-headers)"
        )));
    }
    Ok(Ok(OpenMpi {
        incdirs,
        libdirs,
        pkglibdir,
    }))
}

/// Compile the component into `out` against `prefix`'s installed
/// `regcache.h` and `libregcache.so`, with `defines` (`-D...`). The
/// library is found at run time through `$ORIGIN/..` (the component lives
/// in `<prefix>/lib/openmpi/`, the library in `<prefix>/lib/`).
fn build_component(
    root: &Path,
    ompi: &OpenMpi,
    prefix: &Path,
    out: &Path,
    defines: &[String],
) -> Result<()> {
    let mut cmd = Command::new("cc");
    cmd.args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-g", "-O2"])
        .args(["-fPIC", "-shared", "-fvisibility=hidden"])
        .args(defines)
        .arg(format!("-I{}", prefix.join("include").display()));
    for d in &ompi.incdirs {
        cmd.arg(format!("-I{}", d.display()));
    }
    cmd.arg(root.join(SOURCE)).arg("-o").arg(out);
    cmd.arg(format!("-L{}", prefix.join("lib").display()))
        .arg("-lregcache")
        .arg("-Wl,-rpath,$ORIGIN/..")
        .arg("-Wl,--no-undefined");
    for d in &ompi.libdirs {
        cmd.arg(format!("-L{}", d.display()));
    }
    cmd.args(["-lopen-pal", "-lpthread"]);
    run(&mut cmd)
}

/// The install step: `<prefix>/lib/openmpi/mca_rcache_regcache.so`, after
/// `libregcache.so` and `regcache.h` are installed under `prefix`. Skipped,
/// by name, when this host has no Open MPI development files.
pub(crate) fn install_component(root: &Path, prefix: &Path) -> Result<()> {
    let ompi = match open_mpi()? {
        Ok(o) => o,
        Err(why) => {
            eprintln!("Open MPI rcache component SKIPPED: {why}");
            return Ok(());
        }
    };
    let dir = prefix.join("lib/openmpi");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(COMPONENT);
    let _ = std::fs::remove_file(&out);
    build_component(root, &ompi, prefix, &out, &[])?;
    eprintln!("installed the Open MPI rcache component {}", out.display());
    Ok(())
}

/// One statistics line per rank (`rcache/regcache: rank N: ...`): rank
/// `rank`'s, from its `rank N:` on.
fn stats_line(output: &str, rank: u32) -> Result<&str> {
    let prefix = format!("rcache/regcache: rank {rank}: cache rcache_component_test ");
    output
        .lines()
        .find_map(|l| l.find(&prefix).map(|i| &l[i..]))
        .with_context(|| format!("rank {rank} printed no rcache/regcache statistics line"))
}

/// Field `name` (the word after it) of rank `rank`'s statistics line.
fn stats_field<'a>(output: &'a str, rank: u32, name: &str) -> Result<&'a str> {
    let line = stats_line(output, rank)?;
    line.split_whitespace()
        .skip_while(|w| *w != name)
        .nth(1)
        .with_context(|| format!("no {name} in {line:?}"))
}

fn stats_num(output: &str, rank: u32, name: &str) -> Result<u64> {
    stats_field(output, rank, name)?
        .parse()
        .with_context(|| format!("{name} of rank {rank} is not a number"))
}

/// `cargo xtask test-ompi`: install (library + component) into the test
/// prefix, then `ompi_info` must list the component, and the test program
/// must pass under `mpirun` in each mode below.
pub(crate) fn test(root: &Path) -> Result<()> {
    let ompi = open_mpi()?.map_err(|why| anyhow::anyhow!("Open MPI rcache tests: {why}"))?;
    let prefix = crate::capi::test_prefix(root);
    crate::capi::install(root, &prefix)?;
    let component_dir = prefix.join("lib/openmpi");
    if !component_dir.join(COMPONENT).exists() {
        bail!(
            "{} was not installed",
            component_dir.join(COMPONENT).display()
        );
    }
    let path = format!("{}:{}", component_dir.display(), ompi.pkglibdir.display());

    // ompi_info lists the component and its MCA variables. (ompi_info
    // reads the component path before its `--mca` arguments: the
    // environment variable it is.)
    let info = run_capture(
        Command::new("ompi_info")
            .env("OMPI_MCA_mca_base_component_path", &path)
            .args(["--param", "rcache", "regcache", "--level", "9"]),
    )?;
    for want in [
        "MCA rcache: regcache",
        "rcache_regcache_verbose",
        "rcache_regcache_monitor",
        "rcache_regcache_max_regions",
        "rcache_regcache_max_bytes",
        "rcache_regcache_merge",
    ] {
        if !info.contains(want) {
            bail!("ompi_info with the component's folder does not list {want:?}");
        }
    }
    let all =
        run_capture(Command::new("ompi_info").env("OMPI_MCA_mca_base_component_path", &path))?;
    if !all.lines().any(|l| l.contains("MCA rcache: regcache")) {
        bail!("ompi_info does not list \"MCA rcache: regcache\"");
    }
    eprintln!("ompi_info lists the regcache rcache component");

    let work = root.join("target/ompi-tests");
    std::fs::create_dir_all(&work)?;
    let exe = work.join("rcache_component_test");
    let mut cc = Command::new("mpicc");
    cc.args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-g"]);
    for d in &ompi.incdirs {
        cc.arg(format!("-I{}", d.display()));
    }
    cc.arg(root.join(TEST_SOURCE)).arg("-o").arg(&exe);
    for d in &ompi.libdirs {
        cc.arg(format!("-L{}", d.display()));
    }
    run(cc.arg("-lopen-pal"))?;

    // One job: `mode` of the program with MCA settings `mca` (pairs) and
    // environment `env`; it must pass, and its output is returned.
    let job = |mode: &str, mca: &[(&str, &str)], env: &[&str]| -> Result<String> {
        let mut cmd = mpirun(2);
        cmd.current_dir(&work)
            .args(["--mca", "mca_base_component_path", &path])
            .args(["--mca", "rcache_regcache_verbose", "1"]);
        for (k, v) in mca {
            cmd.args(["--mca", k, v]);
        }
        for e in env {
            cmd.args(["-x", e]);
        }
        let text = run_capture(cmd.arg(&exe).arg(mode))?;
        let want = format!("rcache_component_test {mode}: PASSED (2 ranks)");
        if !text.contains(&want) {
            bail!("rcache_component_test {mode} ({mca:?} {env:?}) did not print {want:?}");
        }
        // Every registration the BTL made through the component was
        // deregistered by the end of rcache finalize.
        for r in 0..2 {
            let tag = format!("rcache/regcache: rank {r}: finalize: ");
            match text.lines().find_map(|l| l.find(&tag).map(|i| &l[i..])) {
                Some(l) if l.ends_with(": balanced") => {}
                Some(l) => bail!("{mode} ({mca:?}): rank {r}: registrations not balanced: {l}"),
                None => bail!("{mode} ({mca:?}): rank {r} printed no finalize balance line"),
            }
        }
        Ok(text)
    };
    let mode_is = |text: &str, want: &str| -> Result<()> {
        for r in 0..2 {
            let mode = stats_field(text, r, "mode")?;
            if mode != want {
                bail!("rank {r}: the component ran in mode {mode}, not {want}");
            }
        }
        Ok(())
    };

    // 1. Open MPI's memory patcher alone keeps the cache true: regcache
    // has no source of its own (monitor external), so the fresh
    // registration after munmap + re-map came from invalidate_range.
    let text = job("basic", &[("rcache_regcache_monitor", "external")], &[])?;
    mode_is(&text, "cached(source=ompi-hooks)")?;
    for r in 0..2 {
        if stats_num(&text, r, "hook_calls")? == 0 || stats_num(&text, r, "hook_failures")? != 0 {
            bail!("rank {r}: Open MPI's hooks did not reach invalidate_range cleanly");
        }
        if stats_num(&text, r, "monitor_invalidations")? == 0 {
            bail!("rank {r}: no region was invalidated through notify_unmapped");
        }
    }
    eprintln!("rcache regcache, Open MPI's memory patcher as the only source: passed");

    // 2. The default: patcher on and regcache's own source.
    let text = job("basic", &[], &[])?;
    let own = stats_field(&text, 0, "mode")?.to_owned();
    if own != "cached(source=uffd)" && own != "cached(source=kernel)" {
        bail!("default run: regcache's own source did not open (mode {own})");
    }
    mode_is(&text, &own)?;
    eprintln!("rcache regcache, patcher and {own}: passed");

    // 3. No Open MPI hooks at all: regcache's own source alone (and the
    // component declared hook support, else the rcache base would have
    // refused leave-pinned; the program asks for it below too).
    let text = job(
        "basic",
        &[("memory", "^patcher"), ("mpi_leave_pinned", "1")],
        &[],
    )?;
    mode_is(&text, &own)?;
    for r in 0..2 {
        if stats_num(&text, r, "hook_calls")? != 0 {
            bail!("rank {r}: invalidate_range was called with the patcher disabled");
        }
    }
    // grdma is loaded too, and the declared hook support leaves it
    // without invalidation: the component says so; selected alone, it
    // does not.
    const GRDMA_WARNING: &str = "rcache component \"grdma\" is loaded too";
    if !text.contains(GRDMA_WARNING) {
        bail!("--mca memory ^patcher with grdma loaded: no warning {GRDMA_WARNING:?}");
    }
    let text = job(
        "basic",
        &[
            ("memory", "^patcher"),
            ("mpi_leave_pinned", "1"),
            ("rcache", "regcache"),
        ],
        &[],
    )?;
    mode_is(&text, &own)?;
    if text.contains("warning:") {
        bail!("--mca memory ^patcher --mca rcache regcache: a warning");
    }
    eprintln!("rcache regcache, --mca memory ^patcher, {own} alone: passed");

    // 3a. Verify mode (regcache_config.verify): every hit checked against
    // its pages. Needs CAP_SYS_ADMIN (pagemap frame numbers).
    if stdout_of(Command::new("id").arg("-u"))?.trim() == "0" {
        let text = job("basic", &[("rcache_regcache_verify", "pfn")], &[])?;
        for r in 0..2 {
            if stats_num(&text, r, "verify_checks")? == 0 {
                bail!("rank {r}: rcache_regcache_verify pfn checked no hit");
            }
        }
        eprintln!("rcache regcache, rcache_regcache_verify pfn: passed");
    } else {
        eprintln!(
            "rcache regcache, rcache_regcache_verify pfn: SKIPPED (not root: no CAP_SYS_ADMIN)"
        );
    }

    // 3a'. Two modules in one process (one per device in Open MPI) on one
    // invalidation source, with and without Open MPI's hooks.
    for mca in [
        &[][..],
        &[("memory", "^patcher"), ("rcache", "regcache")][..],
    ] {
        let text = job("two", mca, &[])?;
        // Two statistics lines per rank, both cached, no hook failure.
        let cached = text.matches(" mode cached(source=").count();
        let clean = text.matches(" hook_failures 0 ").count();
        if cached != 4 || clean != 4 {
            bail!(
                "two modules {mca:?}: {cached} cached statistics lines and {clean} without hook \
                 failures (want 4 of each)"
            );
        }
    }
    eprintln!("rcache regcache, two modules per process on one source: passed");

    // 3b. Four threads per rank registering, finding, deregistering and
    // evicting overlapping ranges at once: every reference comes back.
    job("threads", &[], &[])?;
    eprintln!("rcache regcache, 4 threads per rank: passed");

    // 4. Bad input: clear errors, no abort, nothing leaked.
    let text = job("bad", &[], &[])?;
    for want in [
        "refused: access flags 0x11 include bits 0x10",
        "refused: flags 0x80 include 0x80",
        "which is not a registration of rcache",
    ] {
        if !text.contains(want) {
            bail!("bad input: no message {want:?}");
        }
    }
    for r in 0..2 {
        if stats_num(&text, r, "register_mem_no_resources")? == 0
            || stats_num(&text, r, "register_mem_failed")? == 0
        {
            bail!("rank {r}: the out-of-resources and hard-failure paths were not taken");
        }
    }
    eprintln!("rcache regcache, bad input: passed");

    // 5. No cache can be made, or none would be true: the job runs
    // uncached, saying why.
    for (mca, env, message, mode) in [
        (
            &[("rcache_regcache_monitor", "bogus")][..],
            &[][..],
            "rcache_regcache_monitor=\"bogus\" is not valid",
            "uncached(bad-monitor)",
        ),
        (
            &[][..],
            &["REGCACHE_MAX_BYTES=12Q"][..],
            "cannot configure regcache",
            "uncached(bad-config)",
        ),
        (
            &[("rcache_regcache_merge", "7")][..],
            &[][..],
            "rcache_regcache_merge=7 is not valid",
            "uncached(bad-config)",
        ),
        (
            &[("rcache_regcache_verify", "bogus")][..],
            &[][..],
            "rcache_regcache_verify=\"bogus\" is not valid",
            "uncached(bad-config)",
        ),
        (
            &[("mpi_leave_pinned", "0")][..],
            &[][..],
            "uncached(mpi_leave_pinned=0)",
            "uncached(mpi_leave_pinned=0)",
        ),
        (
            &[
                ("memory", "^patcher"),
                ("rcache_regcache_monitor", "external"),
            ][..],
            &[][..],
            "no invalidation source",
            "uncached(no-source)",
        ),
    ] {
        let text = job("uncached", mca, env)?;
        if !text.contains(message) {
            bail!("uncached run {mca:?} {env:?}: no message {message:?}");
        }
        mode_is(&text, mode)?;
    }
    eprintln!("rcache regcache, runs without a cache: passed");

    // 6. A component built for another Open MPI release refuses to open,
    // by name, and the job runs on.
    // (Next to the real one, so that `$ORIGIN/..` finds libregcache.so.)
    let other = prefix.join("lib/openmpi-other-release");
    std::fs::create_dir_all(&other)?;
    let release = ompi_release()?;
    build_component(
        root,
        &ompi,
        &prefix,
        &other.join(COMPONENT),
        &[format!("-DRR_BUILT_RELEASE={}", release + 1)],
    )?;
    let mut cmd = mpirun(2);
    cmd.current_dir(&work).args([
        "--mca",
        "mca_base_component_path",
        &format!("{}:{}", other.display(), ompi.pkglibdir.display()),
    ]);
    let text = run_capture(cmd.arg(&exe).arg("absent"))?;
    if !text.contains("rcache_component_test absent: PASSED (2 ranks)")
        || !text.contains("refusing to open")
    {
        bail!("a component built for another Open MPI release was not refused cleanly");
    }
    eprintln!("rcache regcache, built for another release: refused by name, job ran");

    // 7. Under valgrind: no memory error and no definite leak with a frame
    // in the component or libregcache. Open MPI itself reports plenty
    // (MPI_Init's allocations), so only records naming ours count; the
    // component is preloaded so that Open MPI's dlclose does not unload it
    // and its frames keep their names at exit (Open MPI 4.1 has no switch
    // to keep components loaded). Monitor
    // `external`: valgrind holds its lock across munmap, so a userfaultfd
    // monitor thread could never answer.
    for mode in ["basic", "bad"] {
        let mut cmd = mpirun(2);
        cmd.current_dir(&work)
            .args(["--mca", "mca_base_component_path", &path])
            .arg("-x")
            .arg(format!(
                "LD_PRELOAD={}",
                component_dir.join(COMPONENT).display()
            ))
            .args(["--mca", "rcache_regcache_monitor", "external"])
            .args([
                "valgrind",
                "--quiet",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--num-callers=40",
            ]);
        let supp = Path::new("/usr/share/openmpi/openmpi-valgrind.supp");
        if supp.exists() {
            cmd.arg(format!("--suppressions={}", supp.display()));
        }
        let text = run_capture(cmd.arg(&exe).arg(mode))?;
        if !text.contains(&format!("rcache_component_test {mode}: PASSED (2 ranks)")) {
            bail!("rcache_component_test {mode} under valgrind did not pass");
        }
        let ours = valgrind_records(&text)
            .into_iter()
            .filter(|r| r.contains("rcache_regcache.c") || r.contains("libregcache"))
            .collect::<Vec<_>>();
        if !ours.is_empty() {
            bail!(
                "valgrind reports {} record(s) in the component or libregcache:\n{}",
                ours.len(),
                ours.join("\n")
            );
        }
    }
    eprintln!("rcache regcache under valgrind: no error or leak of its own");
    eprintln!("Open MPI rcache component tests: passed");
    Ok(())
}

/// valgrind's records (an error, or a leak record of
/// `--leak-check=full`): the runs of `==PID==` lines between blank
/// `==PID== ` lines, each as one string.
fn valgrind_records(output: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut current = String::new();
    for line in output.lines() {
        let Some(rest) = line
            .strip_prefix("==")
            .and_then(|l| l.split_once("== "))
            .map(|(_, r)| r)
            .or_else(|| {
                line.strip_prefix("==")
                    .and_then(|l| l.strip_suffix("=="))
                    .map(|_| "")
            })
        else {
            continue;
        };
        if rest.trim().is_empty() {
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.is_empty() {
        records.push(current);
    }
    records
}

/// The installed Open MPI's release number (`4.1.4` -> 4).
fn ompi_release() -> Result<u32> {
    let text = stdout_of(Command::new("ompi_info").args(["--parsable", "--version"]))?;
    // "Open MPI v4.1.4"
    let v = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .context("ompi_info --version printed no vX.Y.Z")?;
    v.split('.')
        .nth(2)
        .and_then(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .with_context(|| format!("no release number in {v:?}"))
}
