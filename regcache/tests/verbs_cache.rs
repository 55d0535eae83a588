//! The cache over the ibverbs registrar: a working set well above
//! `RLIMIT_MEMLOCK` replayed as an unprivileged user. `ibv_reg_mr` fails
//! with ENOMEM past the limit; the cache must evict idle regions, retry,
//! and complete every get. Runs in the VM tier as `nobody` (8 MiB limit).

use regcache::{AccessFlags, AddrRange, Cache, Config};
use regcache_testkit::mem::{self, Mapping};
use regcache_testkit::skip::{memlock_limit, note, skipped, unprivileged_or_skip, verbs_or_skip};

#[test]
fn verbs_cache_working_set_above_memlock_evicts_on_enomem() {
    let name = "verbs_cache_working_set_above_memlock_evicts_on_enomem";
    let Some(v) = verbs_or_skip(name) else {
        return;
    };
    if !unprivileged_or_skip(name) {
        return;
    }
    let Some(limit) = memlock_limit().filter(|&l| l <= 64 << 20) else {
        skipped(name, "RLIMIT_MEMLOCK unlimited or large");
        return;
    };
    // Four times the limit in 1 MiB buffers, separated by unmapped guard
    // pages so merging cannot fuse them into one region.
    let chunk = 1usize << 20;
    let page = regcache::page_size() as usize;
    let n = (4 * limit as usize) / chunk;
    let stride = chunk + page;
    let all = Mapping::new(n * stride, libc::PROT_READ | libc::PROT_WRITE);
    let base = all.range().start();
    for i in 0..n {
        let guard = base + (i * stride + chunk) as u64;
        mem::unmap(AddrRange::from_start_len(guard, page as u64).unwrap());
    }
    let cache = Cache::new(v, Config::default());
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ;
    let rounds = 3;
    for _ in 0..rounds {
        for i in 0..n {
            let r = AddrRange::from_start_len(base + (i * stride) as u64, chunk as u64).unwrap();
            let h = cache.get(r, access).expect("get must succeed by evicting");
            let keys = h.keys().expect("verbs regions have keys");
            assert!(h.range().contains(&r));
            assert_ne!(keys.rkey.0, 0);
        }
    }
    let s = cache.stats();
    note(&format!(
        "{name}: {} gets of 1 MiB under a {limit} byte limit: {} registrations, {} evictions, \
         {} ENOMEM retries, {} uncached, peak {} bytes",
        s.gets, s.registrations, s.evictions, s.enomem_retries, s.uncached, s.peak_bytes
    ));
    assert_eq!(s.gets, (rounds * n) as u64);
    assert!(
        s.enomem_retries > 0,
        "ibv_reg_mr never hit the limit: {s:?}"
    );
    assert!(s.evictions > 0, "{s:?}");
    assert!(s.peak_bytes <= limit, "{s:?}");
    // The cache (and every registration) goes before the memory.
    drop(cache);
    drop(all);
}
