//! # regcache-ffi — the C API
//!
//! Skeleton. `libregcache.so`, `regcache.h` (cbindgen) and `regcache.pc`
//! land with the C API issue; nothing is exported yet.
