//! `cargo xtask openib`: Open MPI's own RDMA path (pml ob1, btl openib)
//! over SoftRoCE, in the VM tier (issue 16).
//!
//! Debian's Open MPI 4.1.4 ships btl/openib without the rdmacm connection
//! method: its `openmpi` source package does not build-depend on
//! `librdmacm-dev`, so `ompi_info` lists `udcm` as the only
//! `btl_openib_cpc_include` value, and udcm serves InfiniBand link layers
//! only. SoftRoCE (rxe) is RoCE, Ethernet link layer: without rdmacm,
//! openib cannot connect over it at all.
//!
//! So [`plugin`] rebuilds that one plugin, `mca_btl_openib.so`, from
//! Debian's own source package of the installed Open MPI
//! (`apt-get source openmpi=<version>`, after adding a `deb-src` entry for
//! bookworm main when apt has none), configured with Debian's flags from
//! its `debian/rules` and `librdmacm-dev` present; it compiles only the
//! objects of `opal/mca/btl/openib` and links them against the *system's*
//! `libopen-pal.so.40` and `libmca_common_verbs.so.40` (the tree's own
//! libtool archives are never built), with `-lrdmacm -libverbs`. The rest
//! of Open MPI stays Debian's. The result is cached under
//! `target/openib/openmpi-<source version>/plugins/`, so a rebuild happens
//! only when the installed package's source version changes; the source
//! tree is deleted once the plugin is verified.
//!
//! The plugin is put *first* in `mca_base_component_path` (which replaces
//! the default path, so the system folder is listed after it): Open MPI
//! loads the first `mca_btl_openib.so` it finds. The variable must be in
//! the environment (`OMPI_MCA_mca_base_component_path`): `ompi_info`
//! ignores `--mca mca_base_component_path` on its command line. The build
//! is verified by `ompi_info` listing `rdmacm` among the valid values of
//! `btl_openib_cpc_include`.
//!
//! [`run`] then boots the VM (or two) and runs `mpi-tests/openib-suite.sh`
//! (the stale-buffer program, NetPIPE, hpcc, one-sided Put/Get; see the
//! script) with the rcache chosen by `--rcache` or `REGCACHE_OPENIB_RCACHE`:
//! Open MPI's own `grdma`, or `regcache`, the component of issue 12, which
//! `cargo xtask install` puts in `<prefix>/lib/openmpi/` (added to the
//! component path after the openib plugin). Two nodes: Open MPI starts its
//! `orted` on node 2 through `plm_rsh_agent`; the VMs have no sshd, so
//! `mpi-tests/vm-rsh.py` stands in for ssh on the private socket network.
//!
//! Facts found on the way (and what failed) are in
//! `docs/notes-openib-rxe.md`.

use crate::vm::{self, VmOptions, shell_quote};
use crate::{capi, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's Open MPI library folder (multiarch amd64).
const SYSTEM_LIBDIR: &str = "/usr/lib/x86_64-linux-gnu/openmpi/lib";
/// Debian's Open MPI plugin folder (`pkglibdir`).
pub(crate) const SYSTEM_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3";

/// What building the plugin needs beyond the host tier's packages, each
/// with a file that shows it is installed: `debian/rules`' build
/// dependencies that its configure flags probe (`--with-ucx`,
/// `--with-libfabric`, `--with-pmix`, ...), `librdmacm-dev` (the point),
/// and `dpkg-dev` for `apt-get source`.
const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("librdmacm-dev", "/usr/include/rdma/rdma_cma.h"),
    ("libibverbs-dev", "/usr/include/infiniband/verbs.h"),
    ("libfabric-dev", "/usr/include/rdma/fabric.h"),
    ("libucx-dev", "/usr/include/ucp/api/ucp.h"),
    (
        "libpmix-dev",
        "/usr/lib/x86_64-linux-gnu/pmix2/include/pmix.h",
    ),
    ("libevent-dev", "/usr/include/event2/event.h"),
    ("libhwloc-dev", "/usr/include/hwloc.h"),
    ("zlib1g-dev", "/usr/include/zlib.h"),
    ("dpkg-dev", "/usr/bin/dpkg-source"),
    ("xz-utils", "/usr/bin/xz"),
    ("make", "/usr/bin/make"),
    ("gcc", "/usr/bin/gcc"),
    // The runs: hpcc, NetPIPE's Open MPI binary, the two-node rsh.
    ("hpcc", "/usr/bin/hpcc"),
    ("netpipe-openmpi", "/usr/bin/NPopenmpi"),
    ("python3", "/usr/bin/python3"),
];

/// A `deb-src` entry for bookworm main, written when apt knows no source
/// for `openmpi` (Debian images ship binary entries only).
const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/regcache-deb-src.sources";
const DEB_SRC: &str = "Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// Longest time for configure (measured ~3 min on a loaded 2-vCPU host).
const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(1800);
/// Longest time for an apt step or compiling the plugin's objects.
const STEP_TIMEOUT: Duration = Duration::from_secs(900);

/// The registration cache the openib BTL is told to use
/// (`--mca btl_openib_rcache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Rcache {
    /// Open MPI's own `rcache/grdma`.
    Grdma,
    /// regcache's `mca_rcache_regcache.so` (issue 12), from
    /// `cargo xtask install`.
    Regcache,
    /// regcache, then grdma, in the same VM (their numbers compare within
    /// one run): the VM tier's default.
    Both,
}

impl Rcache {
    fn name(self) -> &'static str {
        match self {
            Rcache::Grdma => "grdma",
            Rcache::Regcache => "regcache",
            Rcache::Both => "regcache grdma",
        }
    }

    /// From `REGCACHE_OPENIB_RCACHE` (default both).
    pub(crate) fn from_env() -> Result<Self> {
        match std::env::var("REGCACHE_OPENIB_RCACHE").as_deref() {
            Err(_) | Ok("") | Ok("both") => Ok(Rcache::Both),
            Ok("grdma") => Ok(Rcache::Grdma),
            Ok("regcache") => Ok(Rcache::Regcache),
            Ok(other) => {
                bail!("REGCACHE_OPENIB_RCACHE must be grdma, regcache or both, not {other:?}")
            }
        }
    }
}

/// Run `cmd` with a deadline, its output to `log`; on failure show the
/// log's tail.
fn logged(cmd: &mut Command, log: &Path, timeout: Duration, what: &str) -> Result<()> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(file.try_clone()?).stderr(file);
    let t0 = Instant::now();
    let r = vm::run_with_timeout(cmd, timeout, what);
    eprintln!("{what}: {:.0} s", t0.elapsed().as_secs_f64());
    if r.is_err() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!(
            "last lines of {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    r
}

fn dpkg_field(pkg: &str, field: &str) -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", &format!("-f=${{{field}}}"), pkg])
        .output()
        .context("dpkg-query")?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || v.is_empty() {
        bail!("{pkg} is not installed (dpkg-query: {field})");
    }
    Ok(v)
}

/// Install what building the plugin and the runs need, and make sure apt
/// can fetch Open MPI's source package.
pub(crate) fn deps() -> Result<()> {
    let missing: Vec<&str> = BUILD_PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    let apt = || {
        let mut c = Command::new("apt-get");
        c.args(["-o", "DPkg::Lock::Timeout=300"]);
        c
    };
    let mut updated = false;
    if !missing.is_empty() {
        vm::run_with_timeout(
            apt().args(["update", "-qq"]),
            STEP_TIMEOUT,
            "apt-get update",
        )?;
        updated = true;
        vm::run_with_timeout(
            apt()
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            STEP_TIMEOUT,
            "apt-get install (openib plugin build)",
        )?;
    }
    let has_source = || {
        Command::new("apt-cache")
            .args(["showsrc", "--only-source", "openmpi"])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    };
    if !has_source() {
        if !Path::new(DEB_SRC_FILE).exists() {
            eprintln!("apt has no source for openmpi: adding {DEB_SRC_FILE}");
            std::fs::write(DEB_SRC_FILE, DEB_SRC)
                .with_context(|| format!("writing {DEB_SRC_FILE} (needs root)"))?;
            updated = false;
        }
        if !updated {
            vm::run_with_timeout(
                apt().args(["update", "-qq"]),
                STEP_TIMEOUT,
                "apt-get update",
            )?;
        }
        if !has_source() {
            bail!("apt-get update did not make the openmpi source package known");
        }
    }
    Ok(())
}

/// Debian's configure flags for the main (gfortran) build, from
/// `debian/rules` of openmpi 4.1.4-3 on amd64, less what does not touch
/// `opal_config.h` as the openib BTL sees it: Fortran (off, it adds
/// minutes), Java, PSM/PSM2 (their headers are not installed; they only
/// add MTLs) and the usnic unit tests. `--with-devel-headers` keeps the
/// layout of the installed headers.
fn configure_args() -> Vec<String> {
    let multi = "x86_64-linux-gnu";
    let cflags = "-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -O3";
    [
        "--prefix=/usr".to_owned(),
        format!("--libdir=/usr/lib/{multi}/openmpi/lib"),
        format!("--includedir=/usr/lib/{multi}/openmpi/include"),
        "--sysconfdir=/etc/openmpi".to_owned(),
        "--with-package-string=Debian OpenMPI".to_owned(),
        "--disable-silent-rules".to_owned(),
        "--disable-wrapper-runpath".to_owned(),
        "--with-verbs".to_owned(),
        "--with-libfabric".to_owned(),
        "--with-ucx".to_owned(),
        format!("--with-pmix=/usr/lib/{multi}/pmix2"),
        "--with-libevent=external".to_owned(),
        "--with-hwloc=external".to_owned(),
        "--enable-ipv6".to_owned(),
        "--with-devel-headers".to_owned(),
        "--with-slurm".to_owned(),
        "--with-sge".to_owned(),
        "--without-tm".to_owned(),
        "--disable-mpi-fortran".to_owned(),
        format!("CFLAGS={cflags}"),
        "LDFLAGS=-Wl,-z,relro".to_owned(),
    ]
    .into()
}

/// The openib plugin with rdmacm for the installed Open MPI: build it if
/// `target/openib/openmpi-<source version>/plugins/` has none; return that
/// folder (to put first in `mca_base_component_path`).
pub(crate) fn plugin(root: &Path) -> Result<PathBuf> {
    let src_version = dpkg_field("libopenmpi3", "source:Version")?;
    let bin_version = dpkg_field("libopenmpi3", "Version")?;
    let cache = root
        .join("target/openib")
        .join(format!("openmpi-{src_version}"));
    let plugins = cache.join("plugins");
    let so = plugins.join("mca_btl_openib.so");
    if so.exists() {
        verify(&plugins)?;
        eprintln!(
            "openib plugin with rdmacm: cached {} (Open MPI {bin_version})",
            so.display()
        );
        return Ok(plugins);
    }
    deps()?;
    let t0 = Instant::now();
    let src = cache.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    logged(
        Command::new("apt-get")
            .args(["source", "--only-source"])
            .arg(format!("openmpi={src_version}"))
            .current_dir(&src),
        &cache.join("apt-source.log"),
        STEP_TIMEOUT,
        "apt-get source openmpi",
    )?;
    let tree = std::fs::read_dir(&src)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("configure").exists())
        .with_context(|| format!("no unpacked openmpi tree in {}", src.display()))?;
    logged(
        Command::new("./configure")
            .args(configure_args())
            .current_dir(&tree),
        &cache.join("configure.log"),
        CONFIGURE_TIMEOUT,
        "configure (Debian's flags, with librdmacm-dev)",
    )?;
    let config_h = std::fs::read_to_string(tree.join("opal/include/opal_config.h"))?;
    if !config_h.contains("#define OPAL_HAVE_RDMACM 1") {
        bail!(
            "configure did not enable rdmacm (OPAL_HAVE_RDMACM); see {}",
            cache.join("configure.log").display()
        );
    }
    let dir = tree.join("opal/mca/btl/openib");
    // dpkg-source's patches leave configure.ac newer than the generated
    // files; the autotools are not needed (Debian's patches do not touch
    // the openib BTL) and may be absent.
    let no_autotools = [
        "ACLOCAL=true",
        "AUTOMAKE=true",
        "AUTOCONF=true",
        "AUTOHEADER=true",
    ];
    // The plugin's objects, as automake lists them (not its libtool
    // archive, whose LIBADD wants the tree's libopen-pal.la).
    let mut list = Command::new("make");
    list.args(["-s", "-f", "Makefile", "-f", "-"])
        .args(no_autotools)
        .arg("print-objects")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = list.spawn().context("make print-objects")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("make stdin")?;
        stdin.write_all(b"print-objects:\n\t@echo $(am_mca_btl_openib_la_OBJECTS)\n")?;
    }
    let out = child.wait_with_output()?;
    let objects: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !out.status.success() || objects.is_empty() {
        bail!(
            "could not list the openib BTL's objects in {}",
            dir.display()
        );
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    logged(
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .args(no_autotools)
            .args(&objects)
            .current_dir(&dir),
        &cache.join("make.log"),
        STEP_TIMEOUT,
        "compiling the openib BTL's objects",
    )?;
    std::fs::create_dir_all(&plugins)?;
    let tmp = plugins.join("mca_btl_openib.so.tmp");
    let mut link = Command::new("gcc");
    link.args(["-shared", "-fPIC", "-o"]).arg(&tmp);
    for o in &objects {
        // libtool's PIC object of `x.lo` is `.libs/x.o`, next to it.
        let lo = Path::new(o);
        let name = lo.with_extension("o");
        let name = name.file_name().context("object name")?;
        let parent = lo.parent().unwrap_or(Path::new(""));
        link.arg(dir.join(parent).join(".libs").join(name));
    }
    link.args(["-Wl,-z,relro", "-Wl,--no-undefined"])
        .arg(format!("-L{SYSTEM_LIBDIR}"))
        .arg(format!("-Wl,-rpath,{SYSTEM_LIBDIR}"))
        .args([
            "-lopen-pal",
            "-lmca_common_verbs",
            "-lrdmacm",
            "-libverbs",
            "-lhwloc",
            "-levent_core",
            "-levent_pthreads",
            "-lm",
            "-lz",
        ]);
    run(&mut link)?;
    verify_file(&tmp, &plugins)?;
    std::fs::rename(&tmp, &so)?;
    std::fs::write(
        cache.join("built-for"),
        format!(
            "openmpi source {src_version}, libopenmpi3 {bin_version}, cold build {:.0} s\n",
            t0.elapsed().as_secs_f64()
        ),
    )?;
    let _ = std::fs::remove_dir_all(&src);
    eprintln!(
        "openib plugin with rdmacm: built {} in {:.0} s (cold, apt-get source + configure + \
         compile + link)",
        so.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(plugins)
}

/// `ompi_info` with `dir` first in the component path must list rdmacm.
fn verify(dir: &Path) -> Result<()> {
    let out = Command::new("ompi_info")
        .args(["--param", "btl", "openib", "--level", "9"])
        .env(
            "OMPI_MCA_mca_base_component_path",
            format!("{}:{SYSTEM_PLUGINS}", dir.display()),
        )
        .output()
        .context("ompi_info")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .skip_while(|l| !l.contains("\"btl_openib_cpc_include\""))
        .nth(1)
        .unwrap_or_default();
    if !line.contains("rdmacm") {
        bail!(
            "ompi_info with {} first in the component path does not list rdmacm for \
             btl_openib_cpc_include: {line:?}",
            dir.display()
        );
    }
    Ok(())
}

/// [`verify`] on a freshly linked file before it takes its cached name.
fn verify_file(tmp: &Path, plugins: &Path) -> Result<()> {
    let probe = plugins.join("verify");
    let _ = std::fs::remove_dir_all(&probe);
    std::fs::create_dir_all(&probe)?;
    std::fs::copy(tmp, probe.join("mca_btl_openib.so"))?;
    let r = verify(&probe);
    let _ = std::fs::remove_dir_all(&probe);
    r
}

/// Everything the suite needs on the host, ready for the VM.
struct Inputs {
    env: Vec<(String, String)>,
}

/// Build the plugin, the test programs and (for regcache) the installed
/// tree; return the suite's environment.
fn inputs(root: &Path, rcache: Rcache, long: bool) -> Result<Inputs> {
    let plugins = plugin(root)?;
    let bin = root.join("target/openib/bin");
    std::fs::create_dir_all(&bin)?;
    for prog in ["rdma_reuse", "osc_reuse", "rdma_badinput"] {
        run(Command::new("mpicc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-g"])
            .arg(root.join(format!("mpi-tests/c/{prog}.c")))
            .arg("-o")
            .arg(bin.join(prog)))?;
    }
    // hpcc's input with a smaller problem for the short runs (TCG).
    let hpccinf = std::fs::read_to_string(root.join("mpi-tests/hpcc/hpccinf.txt"))?;
    let n = if long { "2000" } else { "200" };
    let hpccinf: String = hpccinf
        .lines()
        .map(|l| {
            if l.ends_with(" Ns") {
                format!("{n:<13}Ns")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let hpcc_path = bin.join("hpccinf.txt");
    std::fs::write(&hpcc_path, hpccinf + "\n")?;
    let mut path = plugins.display().to_string();
    let mut env = vec![];
    if rcache != Rcache::Grdma {
        let prefix = capi::test_prefix(root);
        capi::install(root, &prefix)?;
        let component = prefix.join("lib/openmpi/mca_rcache_regcache.so");
        if !component.exists() {
            bail!(
                "--rcache regcache: {} does not exist; `cargo xtask install` builds it once \
                 the rcache component (issue 12) is merged",
                component.display()
            );
        }
        path.push(':');
        path.push_str(&prefix.join("lib/openmpi").display().to_string());
        env.push((
            "OPENIB_LIBDIR".into(),
            prefix.join("lib").display().to_string(),
        ));
    }
    let p = |x: &Path| x.display().to_string();
    env.extend([
        ("OPENIB_PLUGINS".into(), path),
        ("OPENIB_RCACHE".into(), rcache.name().into()),
        ("OPENIB_BIN".into(), p(&bin)),
        ("OPENIB_HPCCINF".into(), p(&hpcc_path)),
        ("OPENIB_LONG".into(), if long { "1" } else { "0" }.into()),
        ("REGCACHE_REQUIRE_RDMA".into(), "1".into()),
    ]);
    Ok(Inputs { env })
}

/// The suite's summary lines (`== openib: ...`) of one VM's output.
fn summary(output: &str) -> String {
    output
        .lines()
        .filter(|l| l.starts_with("== openib"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `cargo xtask openib`: the suite on one node (one VM, 2 ranks over the
/// rxe loopback) or two (two VMs, one rank each).
pub(crate) fn run_suite(root: &Path, rcache: Rcache, nodes: u8, long: bool) -> Result<()> {
    let inputs = inputs(root, rcache, long)?;
    run_with(root, rcache, nodes, long, inputs)
}

/// `cargo xtask mpirun-rdma [--rcache R] [--nodes N] -- PROGRAM [ARGS...]`:
/// any MPI program with 2 ranks over openib on rxe (one VM, or two), with
/// the suite's settings and the chosen rcache(s); prints its output and
/// each rank's rcache statistics. `PROGRAM` is a `.c` file (built here
/// with `mpicc -O2`), a path to an executable built on this host (the VM
/// shares its filesystem and userland), or a command on the VM's `PATH`
/// (`NPopenmpi`).
pub(crate) fn mpirun_rdma(root: &Path, rcache: Rcache, nodes: u8, cmd: &[String]) -> Result<()> {
    let Some((prog, args)) = cmd.split_first() else {
        bail!("mpirun-rdma needs a program: cargo xtask mpirun-rdma -- PROGRAM [ARGS...]");
    };
    let path = Path::new(prog);
    let exe = if prog.ends_with(".c") {
        let src = path
            .canonicalize()
            .with_context(|| format!("no such source file {prog}"))?;
        let stem = src.file_stem().and_then(|s| s.to_str()).context("name")?;
        let out = root.join("target/openib/bin").join(stem);
        std::fs::create_dir_all(root.join("target/openib/bin"))?;
        run(Command::new("mpicc")
            .args(["-O2", "-g"])
            .arg(&src)
            .arg("-o")
            .arg(&out))?;
        out.display().to_string()
    } else if path.exists() {
        path.canonicalize()?.display().to_string()
    } else {
        prog.clone()
    };
    let line = std::iter::once(exe.as_str())
        .chain(args.iter().map(String::as_str))
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut inputs = inputs(root, rcache, false)?;
    inputs.env.push(("OPENIB_RUN".into(), line));
    // Passed through: the suite's knobs for a user's run.
    for k in ["OPENIB_UNPRIV", "OPENIB_RQ", "OPENIB_RUN_TIMEOUT"] {
        if let Ok(v) = std::env::var(k) {
            inputs.env.push((k.into(), v));
        }
    }
    run_with(root, rcache, nodes, false, inputs)
}

/// `cargo xtask bench --rdma [--nodes N] [--rounds R] [--max-bytes B]`:
/// NetPIPE (`NPopenmpi`, 2 ranks) over openib on rxe with regcache and
/// with grdma as the rcache, `rounds` rounds each, interleaved in one VM
/// run (or across two VMs), then the table of median throughput (Mbps)
/// per message size with the ratio, and each rcache's registrations and
/// hits per run. Under TCG only the ratios mean anything.
pub(crate) fn bench(root: &Path, nodes: u8, rounds: u32, max_bytes: u64) -> Result<()> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let mut inputs = inputs(root, Rcache::Both, false)?;
    let order = vec!["regcache grdma"; rounds as usize].join(" ");
    inputs.env.retain(|(k, _)| k != "OPENIB_RCACHE");
    inputs.env.extend([
        ("OPENIB_RCACHE".into(), order),
        ("OPENIB_BENCH".into(), max_bytes.to_string()),
    ]);
    run_with(root, Rcache::Both, nodes, false, inputs)
}

/// Run the suite script (or `OPENIB_RUN`) with `inputs` on `nodes` VMs.
fn run_with(root: &Path, rcache: Rcache, nodes: u8, long: bool, inputs: Inputs) -> Result<()> {
    let suite = shell_quote(&root.join("mpi-tests/openib-suite.sh").display().to_string());
    let timeout = Duration::from_secs(if long { 14400 } else { 2400 });
    match nodes {
        1 => {
            let opts = VmOptions {
                timeout,
                env: inputs.env,
            };
            let (st, output) = vm::run_in_vm(root, &format!("sh {suite}"), &opts)?;
            print!("{output}");
            eprintln!("{}", summary(&output));
            if st != 0 {
                bail!(
                    "openib suite ({}, one node) failed (status {st})",
                    rcache.name()
                );
            }
            Ok(())
        }
        2 => {
            let mut inputs = inputs;
            if !long {
                // hpcc takes minutes under TCG; the one-node run has it.
                inputs.env.push(("OPENIB_HPCC".into(), "0".into()));
            }
            two_nodes(root, rcache, inputs, &suite, timeout)
        }
        n => bail!("--nodes must be 1 or 2, not {n}"),
    }
}

/// The suite across two VMs: node 1 runs mpirun (one rank here, one on
/// node 2), node 2 serves `vm-rsh.py` until node 1 shuts it down.
fn two_nodes(
    root: &Path,
    rcache: Rcache,
    inputs: Inputs,
    suite: &str,
    timeout: Duration,
) -> Result<()> {
    let rsh = shell_quote(&root.join("mpi-tests/vm-rsh.py").display().to_string());
    let (a_addr, b_addr) = vm::PAIR_ADDRS;
    let mut env1 = inputs.env.clone();
    env1.push(("OPENIB_HOSTS".into(), format!("{a_addr},{b_addr}")));
    // Executable (#!/usr/bin/python3): plm_rsh_agent is split on spaces
    // by the suite's shell.
    env1.push((
        "OPENIB_RSH".into(),
        root.join("mpi-tests/vm-rsh.py").display().to_string(),
    ));
    let script1 = format!(
        "hostname node1\nsh {suite}\nst=$?\n/usr/bin/python3 {rsh} {b_addr} __shutdown__\nexit $st"
    );
    // Node 2 serves until node 1 says so (or the VM's timeout).
    let script2 = format!(
        "hostname node2\nmkdir -p /tmp/openib-suite\nexport OMPI_ALLOW_RUN_AS_ROOT=1 \
         OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n/usr/bin/python3 {rsh} serve {b_addr}"
    );
    let (a, b) = vm::spawn_pair(
        root,
        (&script1, &VmOptions { timeout, env: env1 }),
        (
            &script2,
            &VmOptions {
                timeout,
                env: inputs.env,
            },
        ),
    )?;
    let rb = vm::wait_vm(b);
    let ra = vm::wait_vm(a);
    let mut failed = false;
    for (name, r) in [("node 1", ra), ("node 2", rb)] {
        match r {
            Ok((st, output)) => {
                println!("== {name} (status {st})\n{output}");
                if name == "node 1" {
                    eprintln!("{}", summary(&output));
                }
                failed |= st != 0;
            }
            Err(e) => {
                println!("== {name}: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("openib suite ({}, two nodes) failed", rcache.name());
    }
    Ok(())
}

/// The VM tier's part: the suite on one node, then (unless
/// `REGCACHE_SKIP_TWO_NODES=1`) on two, short runs, with the rcache from
/// `REGCACHE_OPENIB_RCACHE` (default both on one node, regcache alone on
/// two; `both` named explicitly runs both on two as well). `REGCACHE_SKIP_OPENIB=1` leaves it out.
pub(crate) fn test_tier(root: &Path) -> Result<()> {
    if std::env::var("REGCACHE_SKIP_OPENIB").as_deref() == Ok("1") {
        eprintln!("openib VM tier SKIPPED: REGCACHE_SKIP_OPENIB=1");
        return Ok(());
    }
    let rcache = Rcache::from_env()?;
    run_suite(root, rcache, 1, false)?;
    if std::env::var("REGCACHE_SKIP_TWO_NODES").as_deref() == Ok("1") {
        eprintln!("two-node openib tier SKIPPED: REGCACHE_SKIP_TWO_NODES=1");
        return Ok(());
    }
    // CI's time budget: across two VMs regcache alone unless both were
    // asked for by name (the one-node run above compares with grdma;
    // `cargo xtask openib --nodes 2` runs both).
    let two = match std::env::var("REGCACHE_OPENIB_RCACHE").as_deref() {
        Ok("both") => Rcache::Both,
        _ if rcache == Rcache::Both => {
            eprintln!(
                "two-node openib tier: regcache only (REGCACHE_OPENIB_RCACHE=both for grdma too)"
            );
            Rcache::Regcache
        }
        _ => rcache,
    };
    run_suite(root, two, 2, false)
}
