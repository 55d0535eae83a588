//! Capability checks: a test that needs what this host lacks says so by
//! name and returns.
//!
//! The line is `<test>: SKIPPED: <why>`, written to the real standard
//! error with [`note`]: `eprintln!` goes through the test harness's
//! capture, which hides the output of passing tests, and a skip must never
//! look like a silent pass. The VM tier, where the capability exists, sets
//! `REGCACHE_REQUIRE_RDMA=1` (or `REGCACHE_REQUIRE_UNPRIVILEGED=1`), and
//! there the same absence is a failure instead.

use std::io::Write;

/// Write `msg` and a newline to the real standard error, past the test
/// harness's capture.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Say that `test` did not run and why: `<test>: SKIPPED: <why>`.
pub fn skipped(test: &str, why: &str) {
    note(&format!("{test}: SKIPPED: {why}"));
}

/// `true` when the environment variable `var` is `1`: the VM tier asks
/// for a capability to be present.
pub fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

/// `true` when the process is not root; otherwise says `test` is skipped
/// (root's `CAP_IPC_LOCK` bypasses `RLIMIT_MEMLOCK`, the thing tested), or
/// panics under `REGCACHE_REQUIRE_UNPRIVILEGED=1` (the VM tier runs these
/// tests as `nobody`).
pub fn unprivileged_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return true;
    }
    if required("REGCACHE_REQUIRE_UNPRIVILEGED") {
        panic!("{test}: running as root, but the VM tier must run it unprivileged");
    }
    skipped(
        test,
        "running as root (CAP_IPC_LOCK bypasses RLIMIT_MEMLOCK)",
    );
    false
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`RLIM_INFINITY` when unlimited).
pub fn memlock_cur() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    lim.rlim_cur
}

/// The soft `RLIMIT_MEMLOCK` in bytes, `None` when unlimited.
pub fn memlock_limit() -> Option<u64> {
    Some(memlock_cur()).filter(|&l| l != libc::RLIM_INFINITY)
}

/// Open an RDMA resource with `open(REGCACHE_RDMA_DEVICE)`; on a host
/// without an RDMA device say `test` is skipped (or panic under
/// `REGCACHE_REQUIRE_RDMA=1`) and return `None`. Any other error fails
/// the test.
#[cfg(all(feature = "regcache", not(loom)))]
pub fn rdma_or_skip<T>(
    test: &str,
    open: impl FnOnce(Option<&str>) -> Result<T, regcache::RegistrarError>,
) -> Option<T> {
    let device = std::env::var("REGCACHE_RDMA_DEVICE").ok();
    match open(device.as_deref()) {
        Ok(v) => Some(v),
        Err(regcache::RegistrarError::Unavailable { reason, .. }) => {
            if required("REGCACHE_REQUIRE_RDMA") {
                panic!("{test}: REGCACHE_REQUIRE_RDMA=1 but no RDMA device: {reason}");
            }
            skipped(
                test,
                &format!("no RDMA device (runs in the VM tier): {reason}"),
            );
            None
        }
        Err(e) => panic!("{test}: opening the RDMA device failed: {e}"),
    }
}

/// The ibverbs registrar on `REGCACHE_RDMA_DEVICE`, or a skip (see
/// [`rdma_or_skip`]).
#[cfg(all(feature = "regcache", not(loom)))]
pub fn verbs_or_skip(test: &str) -> Option<regcache::VerbsRegistrar> {
    rdma_or_skip(test, regcache::VerbsRegistrar::open)
}

/// A protection domain on `REGCACHE_RDMA_DEVICE`, or a skip (see
/// [`rdma_or_skip`]).
#[cfg(all(feature = "regcache", not(loom)))]
pub fn pd_or_skip(test: &str) -> Option<regcache::ProtectionDomain> {
    rdma_or_skip(test, regcache::ProtectionDomain::open)
}

/// A cache over the checking `pin` registrar with verify mode on
/// (`Verify::Pfn`, the rest of `config` as given), or a skip naming why
/// verify mode cannot run here (no `CAP_SYS_ADMIN` to read PFNs).
#[cfg(all(feature = "regcache", not(loom)))]
pub fn verified_or_skip(
    config: regcache::Config,
    test: &str,
) -> Option<regcache::Cache<crate::CheckingRegistrar>> {
    let c = regcache::Cache::new(
        crate::CheckingRegistrar::pinned(),
        regcache::Config {
            verify: regcache::Verify::Pfn,
            ..config
        },
    );
    match c.verify_error() {
        Some(why) => {
            skipped(test, why);
            None
        }
        None => Some(c),
    }
}
