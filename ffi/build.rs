//! Versioned SONAME for the C library: `libregcache.so.0` (ABI major 0).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libregcache.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
