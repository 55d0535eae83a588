//! The handle table under threads: concurrent gets and releases through
//! the C API, handles released on another thread than the one that got
//! them, and stale detection afterwards.

mod common;

use regcache_ffi::*;
use regcache_result::*;
use std::ffi::c_void;
use std::sync::mpsc;

struct SendCache(*mut regcache_cache);
// SAFETY: the C API's `const regcache_cache *` functions are thread-safe;
// the cache is destroyed only after every thread is joined.
unsafe impl Send for SendCache {}
// SAFETY: as above.
unsafe impl Sync for SendCache {}

fn new_cache() -> SendCache {
    SendCache(common::new_pin_cache())
}

#[test]
fn concurrent_get_release_and_cross_thread_release() {
    let cache = new_cache();
    let shared = vec![7u8; 1 << 16];
    let (tx, rx) = mpsc::channel::<usize>();
    let threads = 4;
    let per = 20_000;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (cache, shared, tx) = (&cache, &shared, tx.clone());
            s.spawn(move || {
                let own = vec![t as u8; 3 << 12];
                for i in 0..per {
                    let (p, len) = if i % 3 == 0 {
                        (shared.as_ptr(), shared.len())
                    } else {
                        (own.as_ptr(), own.len())
                    };
                    let mut h: *mut regcache_handle = std::ptr::null_mut();
                    // SAFETY: live cache, mapped buffer, valid out pointer.
                    let r =
                        unsafe { regcache_cache_get(cache.0, p.cast::<c_void>(), len, 1, &mut h) };
                    assert_eq!(r, REGCACHE_OK);
                    if i % 100 == 0 {
                        // Released by the main thread.
                        tx.send(h as usize).unwrap();
                    } else {
                        // SAFETY: h is live and released once.
                        assert_eq!(unsafe { regcache_handle_release(h) }, REGCACHE_OK);
                    }
                }
                // SAFETY: live cache.
                unsafe { regcache_cache_quiesce(cache.0) };
            });
        }
        drop(tx);
        let mut released = Vec::new();
        for h in rx {
            // SAFETY: handle values from regcache_cache_get, released once.
            assert_eq!(unsafe { regcache_handle_release(h as *mut _) }, REGCACHE_OK);
            released.push(h);
        }
        assert_eq!(released.len(), threads * per / 100);
        for h in released {
            // SAFETY: a released handle value; the library must detect it.
            let r = unsafe { regcache_handle_release(h as *mut _) };
            assert_eq!(r, REGCACHE_ERR_STALE_HANDLE);
        }
    });
    let mut st = regcache_stats::default();
    // SAFETY: live cache, valid out pointer.
    unsafe {
        assert_eq!(regcache_cache_stats(cache.0, &mut st), REGCACHE_OK);
        assert_eq!(st.gets, (threads * per) as u64);
        assert_eq!(st.gets, st.hits + st.misses);
        assert_eq!(regcache_cache_destroy(cache.0), REGCACHE_OK);
        assert_eq!(regcache_cache_destroy(cache.0), REGCACHE_ERR_DESTROYED);
    }
}
