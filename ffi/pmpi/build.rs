//! Compile the MPI wrappers (`src/shim.c`) with Open MPI's `mpicc`
//! (`libopenmpi-dev`; `cargo xtask deps` installs it) and link `libmpi`.

use std::process::Command;

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
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=build.rs");
    let mut build = cc::Build::new();
    build.file("src/shim.c").warnings(true).extra_warnings(true);
    for f in showme("compile") {
        if let Some(dir) = f.strip_prefix("-I") {
            build.include(dir);
        }
    }
    build.compile("regcache_pmpi_shim");
    for f in showme("link") {
        if let Some(dir) = f.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = f.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
