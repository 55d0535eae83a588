//! The C API's cost on the hit path: `regcache_cache_get` +
//! `regcache_handle_release` against `Cache::get` + drop on the same kind
//! of cache (`AnyRegistrar::Pin`, default config: the userfaultfd source,
//! merge on; one hot 64 KiB buffer).
//!
//! Run: `cargo bench -p regcache-ffi --bench hit`. The difference of the
//! two medians is what the C boundary adds (the handle table, the
//! `catch_unwind` frame, argument checks); numbers in docs/RESULTS.md.

use criterion::{Criterion, criterion_group, criterion_main};
use regcache::{AccessFlags, AddrRange, AnyRegistrar, Cache, Config, PinRegistrar};
use regcache_ffi::*;
use std::hint::black_box;

fn hit(c: &mut Criterion) {
    let buf = vec![1u8; 64 << 10];
    let mut g = c.benchmark_group("hit_path");

    let cache = Cache::new(AnyRegistrar::Pin(PinRegistrar::new()), Config::default());
    let range = AddrRange::from_buffer(buf.as_ptr(), buf.len()).unwrap();
    drop(cache.get(range, AccessFlags::LOCAL_WRITE).unwrap());
    g.bench_function("rust", |b| {
        b.iter(|| {
            let h = cache
                .get(black_box(range), AccessFlags::LOCAL_WRITE)
                .unwrap();
            black_box(h.range());
        })
    });
    drop(cache);

    let mut cfg = regcache_config {
        max_regions: 0,
        max_bytes: 0,
        merge: 0,
        registrar: 0,
        monitor: 0,
        verify: 0,
    };
    let mut cc: *mut regcache_cache = std::ptr::null_mut();
    // SAFETY: valid out pointers; the cache is destroyed below.
    unsafe {
        assert_eq!(
            regcache_config_default(&mut cfg),
            regcache_result::REGCACHE_OK
        );
        cfg.registrar = regcache_registrar::REGCACHE_REGISTRAR_PIN as u32;
        assert_eq!(
            regcache_cache_new(&cfg, &mut cc),
            regcache_result::REGCACHE_OK
        );
    }
    let p = buf.as_ptr().cast();
    g.bench_function("c_api", |b| {
        b.iter(|| {
            let mut h: *mut regcache_handle = std::ptr::null_mut();
            // SAFETY: cc is a live cache, buf is mapped, h is released once.
            unsafe {
                let r = regcache_cache_get(cc, black_box(p), black_box(buf.len()), 1, &mut h);
                debug_assert_eq!(r, regcache_result::REGCACHE_OK);
                black_box(h);
                regcache_handle_release(h);
            }
        })
    });
    // SAFETY: cc is live and no handle is out.
    unsafe { regcache_cache_destroy(cc) };
    g.finish();
}

criterion_group!(benches, hit);
criterion_main!(benches);
