//! Several threads get, release and invalidate overlapping ranges of real
//! memory through the real `pin` registrar (mlock). The testkit's checking
//! wrapper (`CheckingRegistrar::pinned`) gives each registration an id (as
//! its lkey) and records a registration deregistered while any thread says
//! it is using it; the test fails on any such record.

use regcache::{AccessFlags, AddrRange, Cache, Config};
use regcache_testkit::CheckingRegistrar;
use regcache_testkit::registrar::id;
use std::sync::Arc;

#[test]
fn threads_never_see_a_region_deregistered_under_them() {
    let page = regcache::page_size() as usize;
    let pages = 64;
    // Real memory, mapped for the whole test.
    let buf = vec![0u8; (pages + 1) * page];
    let base = (buf.as_ptr() as usize).next_multiple_of(page) as u64;
    let cache = Arc::new(Cache::new(
        CheckingRegistrar::pinned(),
        Config {
            max_regions: 8,
            max_bytes: (24 * page) as u64,
            merge: regcache::Merge::On,
            ..Config::default()
        },
    ));
    let threads = 4;
    let iters = 4000;
    std::thread::scope(|s| {
        for t in 0..threads {
            let cache = Arc::clone(&cache);
            s.spawn(move || {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ t as u64;
                let mut next = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                for i in 0..iters {
                    let p = next() % (pages as u64 - 4);
                    let len = (1 + next() % 3) * page as u64;
                    let r = AddrRange::from_start_len(base + p * page as u64, len).unwrap();
                    if t == 0 && i % 7 == 0 {
                        cache.invalidate(r);
                        continue;
                    }
                    let access = if next() % 2 == 0 {
                        AccessFlags::LOCAL_WRITE
                    } else {
                        AccessFlags::REMOTE_READ
                    };
                    let h = cache.get(r, access).expect("get");
                    assert!(h.range().contains(&r));
                    let id = id(&h);
                    cache.registrar().hold(id);
                    // "Use" the registration: the pages must be locked now.
                    std::hint::black_box(&h);
                    std::thread::yield_now();
                    cache.registrar().release(id);
                    drop(h);
                }
                cache.quiesce();
            });
        }
    });
    let reg = cache.registrar();
    assert!(
        reg.violations().is_empty(),
        "a registration was deregistered while in use: {:?}",
        reg.violations()
    );
    let s = cache.stats();
    assert_eq!(s.gets, s.hits + s.misses);
    assert!(s.hits > 0 && s.misses > 0, "{s:?}");
    assert!(s.invalidations_idle + s.invalidations_in_use > 0, "{s:?}");
    // Everything left is cached and idle; the registrar agrees.
    let regions = cache.regions();
    assert!(regions.iter().all(|r| r.refs == 0));
    assert_eq!(reg.live_count(), regions.len());
    assert_eq!(s.registrations - s.deregistrations, regions.len() as u64);
    drop(cache);
    drop(buf);
}
