//! The eviction-on-ENOMEM path, for real: a child process whose
//! `RLIMIT_MEMLOCK` is far below its working set replays that working set
//! through the cache with the `pin` registrar (`mlock`). Every `mlock` past
//! the limit fails with ENOMEM; the cache must evict least recently used
//! idle regions, retry, and complete every get.
//!
//! Root has CAP_IPC_LOCK, which bypasses the limit: the child drops it from
//! its capability bounding set before exec, so the limit binds root too.

use regcache::{AccessFlags, AddrRange, Cache, Config, PinRegistrar};
use std::os::unix::process::CommandExt;
use std::process::Command;

const LIMIT: u64 = 256 << 10;
const BUFFERS: usize = 64;
const BUF_LEN: usize = 64 << 10;
const ROLE: &str = "REGCACHE_MEMLOCK_CHILD";

#[test]
fn working_set_above_memlock_limit_completes_with_evictions() {
    if std::env::var_os(ROLE).is_some() {
        return child();
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "working_set_above_memlock_limit_completes_with_evictions",
        "--nocapture",
    ])
    .env(ROLE, "1");
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe system calls (prctl, setrlimit).
    unsafe {
        cmd.pre_exec(|| {
            // CAP_IPC_LOCK = 14. Fails with EPERM when we are not
            // privileged, in which case we never had the capability.
            libc::prctl(libc::PR_CAPBSET_DROP, 14, 0, 0, 0);
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("spawn child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed: {}\n{text}", out.status);
    assert!(
        text.contains("CHILD-OK"),
        "child did not run its role:\n{text}"
    );
}

fn child() {
    // First prove the limit binds (else this test would show nothing).
    let probe = vec![1u8; 2 * LIMIT as usize];
    // SAFETY: mlock only changes residency of `probe`'s pages.
    let rc = unsafe { libc::mlock(probe.as_ptr().cast(), probe.len()) };
    assert_ne!(
        rc, 0,
        "mlock of 2× RLIMIT_MEMLOCK succeeded: CAP_IPC_LOCK was not dropped"
    );
    drop(probe);

    let bufs: Vec<Vec<u8>> = (0..BUFFERS).map(|i| vec![i as u8; BUF_LEN]).collect();
    let cache = Cache::new(
        PinRegistrar::new(),
        Config {
            merge: regcache::Merge::Off,
            ..Config::default()
        },
    );
    for round in 0..3 {
        for (i, b) in bufs.iter().enumerate() {
            let r = AddrRange::from_buffer(b.as_ptr(), b.len()).unwrap();
            let h = cache
                .get(r, AccessFlags::LOCAL_WRITE)
                .unwrap_or_else(|e| panic!("round {round} buffer {i}: get failed: {e}"));
            assert!(
                h.is_cached(),
                "served uncached: eviction should have made room"
            );
            assert_eq!(b[BUF_LEN / 2], i as u8);
        }
    }
    let s = cache.stats();
    println!("{s:?}");
    assert_eq!(s.gets, (3 * BUFFERS) as u64);
    assert!(
        s.enomem_retries > 0 && s.evictions > 0,
        "no ENOMEM-driven eviction: {s:?}"
    );
    assert_eq!(s.uncached, 0);
    assert!(
        s.peak_bytes <= LIMIT + BUF_LEN as u64,
        "registered beyond the limit: {s:?}"
    );
    println!("CHILD-OK");
}
