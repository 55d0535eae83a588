//! The cache over the ibverbs registrar: a working set well above
//! `RLIMIT_MEMLOCK` replayed as an unprivileged user. `ibv_reg_mr` fails
//! with ENOMEM past the limit; the cache must evict idle regions, retry,
//! and complete every get. Runs in the VM tier as `nobody` (8 MiB limit).

use regcache::{AccessFlags, AddrRange, Cache, Config, RegistrarError, VerbsRegistrar};

fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn verbs_or_skip(test: &str) -> Option<VerbsRegistrar> {
    let device = std::env::var("REGCACHE_RDMA_DEVICE").ok();
    match VerbsRegistrar::open(device.as_deref()) {
        Ok(v) => Some(v),
        Err(RegistrarError::Unavailable { reason, .. }) => {
            if std::env::var("REGCACHE_REQUIRE_RDMA").as_deref() == Ok("1") {
                panic!("{test}: REGCACHE_REQUIRE_RDMA=1 but no RDMA device: {reason}");
            }
            note(&format!(
                "{test}: SKIPPED: no RDMA device (runs in the VM tier): {reason}"
            ));
            None
        }
        Err(e) => panic!("{test}: opening the RDMA device failed: {e}"),
    }
}

fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

#[test]
fn verbs_cache_working_set_above_memlock_evicts_on_enomem() {
    let name = "verbs_cache_working_set_above_memlock_evicts_on_enomem";
    let Some(v) = verbs_or_skip(name) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        if std::env::var("REGCACHE_REQUIRE_UNPRIVILEGED").as_deref() == Ok("1") {
            panic!("{name}: running as root, but the VM tier must run it unprivileged");
        }
        note(&format!(
            "{name}: SKIPPED: running as root (CAP_IPC_LOCK bypasses RLIMIT_MEMLOCK)"
        ));
        return;
    }
    let Some(limit) = memlock_limit().filter(|&l| l <= 64 << 20) else {
        note(&format!(
            "{name}: SKIPPED: RLIMIT_MEMLOCK unlimited or large"
        ));
        return;
    };
    // Four times the limit in 1 MiB buffers, separated by unmapped guard
    // pages so merging cannot fuse them into one region.
    let chunk = 1usize << 20;
    let page = regcache::page_size() as usize;
    let n = (4 * limit as usize) / chunk;
    let stride = chunk + page;
    // SAFETY: a fresh anonymous mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            n * stride,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let base = base as u64;
    for i in 0..n {
        let guard = base + (i * stride + chunk) as u64;
        // SAFETY: the guard page is inside our mapping; nothing uses it.
        let rc = unsafe { libc::munmap(guard as *mut libc::c_void, page) };
        assert_eq!(rc, 0);
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
    drop(cache);
    // SAFETY: the cache (and every registration) is gone; the mapping is ours.
    unsafe { libc::munmap(base as *mut libc::c_void, n * stride) };
}
