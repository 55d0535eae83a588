//! Versioned SONAME for the C library: `libregcache.so.0` (ABI major 0);
//! and the cfg that breaks the handle table's loom model on purpose
//! (`--cfg regcache_loom_break="handles"`, see `src/generation.rs`).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libregcache.so.0");
    println!("cargo::rustc-check-cfg=cfg(regcache_loom_break, values(\"handles\"))");
    println!("cargo:rerun-if-changed=build.rs");
}
