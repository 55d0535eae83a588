//! The C API tasks: `codegen` (regcache.h with the pinned cbindgen),
//! `install` (lib + header + pkg-config file), and the C and MPI test
//! steps `cargo xtask test` runs.

use crate::{cargo, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

const HEADER: &str = "ffi/include/regcache.h";
const SONAME: &str = "libregcache.so.0";

/// Generate `regcache.h` from `ffi/src` with cbindgen. With `check`, fail
/// when the committed header differs instead of writing it.
pub(crate) fn codegen(root: &Path, check: bool) -> Result<()> {
    let crate_dir = root.join("ffi");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .map_err(|e| anyhow::anyhow!("ffi/cbindgen.toml: {e}"))?;
    let mut out = Vec::new();
    cbindgen::Builder::new()
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
/// `lib/libregcache_pmpi.so`, `include/regcache.h` and
/// `lib/pkgconfig/regcache.pc` under `prefix`.
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
            .args(&flags))?;
        run(Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
            .arg(src)
            .arg("-o")
            .arg(&plain)
            .args(&flags))?;
        run(Command::new(&asan)
            .env("LD_LIBRARY_PATH", &libdir)
            // LeakSanitizer cannot run under ptrace-restricted sandboxes;
            // valgrind below checks leaks.
            .env("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1")
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
    Ok(())
}
