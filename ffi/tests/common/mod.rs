//! Shared by the ffi integration tests.

use regcache_ffi::*;
use regcache_result::*;

/// A new cache through the C API: default config, `pin` registrar.
pub(crate) fn new_pin_cache() -> *mut regcache_cache {
    let mut cfg = std::mem::MaybeUninit::<regcache_config>::uninit();
    let mut c: *mut regcache_cache = std::ptr::null_mut();
    // SAFETY: valid out pointers.
    unsafe {
        assert_eq!(regcache_config_default(cfg.as_mut_ptr()), REGCACHE_OK);
        let mut cfg = cfg.assume_init();
        cfg.registrar = regcache_registrar::REGCACHE_REGISTRAR_PIN as u32;
        assert_eq!(regcache_cache_new(&cfg, &mut c), REGCACHE_OK);
    }
    c
}
