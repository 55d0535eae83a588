//! Compile the MPI entry points (`src/pmpi_c.c`, `src/pmpi_fortran.c`,
//! `src/pmpi_common.c`, all made from the table `src/mpi_functions.def`)
//! with Open MPI's `mpicc` flags (`libopenmpi-dev`; `cargo xtask deps`
//! installs it), link them whole into the cdylib, export them with the
//! version script `src/exports.h` makes from the same table, and link
//! `libmpi`. The crate docs (src/lib.rs) say why it takes all three.

use std::process::Command;

const SOURCES: [&str; 3] = ["src/pmpi_common.c", "src/pmpi_c.c", "src/pmpi_fortran.c"];
const HEADERS: [&str; 3] = [
    "src/pmpi_common.h",
    "src/mpi_functions.def",
    "src/exports.h",
];

fn showme(what: &str) -> Vec<String> {
    let out = Command::new("mpicc")
        .arg(format!("--showme:{what}"))
        .output()
        .unwrap_or_else(|e| {
            panic!("regcache-pmpi needs Open MPI's mpicc (apt install libopenmpi-dev): {e}")
        });
    assert!(out.status.success(), "mpicc --showme:{what} failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    for f in SOURCES.iter().chain(&HEADERS).chain(&["build.rs"]) {
        println!("cargo:rerun-if-changed={f}");
    }
    let mut build = cc::Build::new();
    build.warnings(true).extra_warnings(true);
    for f in showme("compile") {
        if let Some(dir) = f.strip_prefix("-I") {
            build.include(dir);
        }
    }
    // Nothing in Rust calls the MPI entry points: without whole-archive
    // the linker would leave their objects out of the cdylib.
    build
        .clone()
        .files(SOURCES)
        .link_lib_modifier("+whole-archive")
        .compile("regcache_pmpi_c");

    // The export list: the table through the preprocessor.
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let map = out_dir.join("exports.map");
    let text = build.file("src/exports.h").flag("-P").expand();
    std::fs::write(&map, text).expect("writing exports.map");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        map.display()
    );

    for f in showme("link") {
        if let Some(dir) = f.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = f.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
