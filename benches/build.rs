//! Builds the UCX comparison shim (`ucx/rcache_shim.c`) for
//! `regcache-bench --compare ucx` when UCX's headers are installed
//! (Debian 12: `libucx-dev`, UCX 1.13; `cargo xtask deps` installs it),
//! and then sets `cfg(regcache_bench_ucx)`. Without the headers nothing is
//! built and the mode says plainly that it is unavailable.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(regcache_bench_ucx)");
    println!("cargo::rerun-if-changed=ucx/rcache_shim.c");
    // UCX installs its headers under the include root; the shim needs the
    // rcache API and UCM's external-event API.
    let include = std::env::var("REGCACHE_UCX_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    println!("cargo::rerun-if-env-changed=REGCACHE_UCX_INCLUDE");
    let have = ["ucs/memory/rcache.h", "ucm/api/ucm.h"]
        .iter()
        .all(|h| Path::new(&include).join(h).exists());
    if !have {
        // (A missing path in rerun-if-changed would rerun this script on
        // every build; after installing libucx-dev, `cargo clean -p
        // regcache-bench` picks the shim up.)
        return;
    }
    for h in ["ucs/memory/rcache.h", "ucm/api/ucm.h"] {
        println!("cargo::rerun-if-changed={include}/{h}");
    }
    cc::Build::new()
        .file("ucx/rcache_shim.c")
        .include(&include)
        .warnings(true)
        .extra_warnings(true)
        .compile("regcache_bench_ucx");
    println!("cargo::rustc-link-lib=dylib=ucs");
    println!("cargo::rustc-link-lib=dylib=ucm");
    println!("cargo::rustc-cfg=regcache_bench_ucx");
}
