//! Versioned SONAME for the C library: `libregcache.so.0` (ABI major 0);
//! `-z nodelete` (DF_1_NODELETE), so a `dlclose` never unmaps the library:
//! the process-wide userfaultfd source's monitor thread runs its code for
//! the rest of the process, and Open MPI dlcloses its rcache component
//! (and so the last reference to this library) at `MPI_Finalize` — hpcc
//! over openib died with SIGSEGV in both ranks at exit before this
//! (`ffi/tests/c/dlclose_test.c`);
//! and the cfg that breaks the handle table's loom model on purpose
//! (`--cfg regcache_loom_break="handles"`, see `src/generation.rs`).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libregcache.so.0");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo::rustc-check-cfg=cfg(regcache_loom_break, values(\"handles\"))");
    println!("cargo:rerun-if-changed=build.rs");
}
