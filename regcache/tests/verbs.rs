//! The ibverbs registrar against a real device (SoftRoCE in the VM tier).
//!
//! On a host without an RDMA device each test prints
//! `SKIPPED: no RDMA device (runs in the VM tier)` with its name; with
//! `REGCACHE_REQUIRE_RDMA=1` (set by `cargo xtask vm`) absence is a failure.
//! The memlock test needs an unprivileged process (root has CAP_IPC_LOCK);
//! the VM tier runs this binary as `nobody`.

use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, CallerPd, Config, RangeError, RdmaDevice,
    Registrar, RegistrarError, RegistrarKind, VerbsRegistrar, open_registrar,
};
use regcache_testkit::mem::Mapping;
use regcache_testkit::skip::{
    memlock_cur, note, pd_or_skip, skipped, unprivileged_or_skip, verbs_or_skip,
};

const RW: AccessFlags = AccessFlags::LOCAL_WRITE
    .union(AccessFlags::REMOTE_WRITE)
    .union(AccessFlags::REMOTE_READ);

#[test]
fn verbs_register_gives_keys_and_deregisters() {
    let Some(v) = verbs_or_skip("verbs_register_gives_keys_and_deregisters") else {
        return;
    };
    assert_eq!(v.name(), "verbs");
    let m = Mapping::new(1 << 20, libc::PROT_READ | libc::PROT_WRITE);
    let a = v.register(m.range(), RW).expect("register 1 MiB");
    let b = v
        .register(m.range(), AccessFlags::LOCAL_WRITE)
        .expect("register again");
    let (ka, kb) = (v.keys(&a).unwrap(), v.keys(&b).unwrap());
    assert_eq!(a.range(), m.range());
    assert_ne!(ka.rkey, kb.rkey, "two registrations, two rkeys");
    v.deregister(a).expect("ibv_dereg_mr");
    v.deregister(b).expect("ibv_dereg_mr");
}

/// An MPI library's protection domain, known to us only as a `struct
/// ibv_pd *`: the cache's MRs are made in it (`ibv_mr.pd` is that
/// pointer), so the library's queue pairs can use their keys.
#[test]
fn verbs_on_the_callers_pd_registers_in_that_domain() {
    let Some(pd) = pd_or_skip("verbs_on_the_callers_pd_registers_in_that_domain") else {
        return;
    };
    // SAFETY: the raw pointer of a domain `pd` keeps allocated for the
    // whole test (the cache is dropped first).
    let raw = unsafe { pd.as_sideway().pd() }
        .as_ptr()
        .cast::<libc::c_void>();
    // SAFETY: a live struct ibv_pd * from ibv_alloc_pd, kept alive by `pd`.
    let caller = unsafe { CallerPd::from_raw(raw) }.expect("a live PD");
    let v = VerbsRegistrar::on_caller_pd(caller);
    assert!(v.protection_domain().is_none(), "not ours");
    let m = Mapping::new(256 << 10, libc::PROT_READ | libc::PROT_WRITE);
    let r = v
        .register(m.range(), RW)
        .expect("ibv_reg_mr in the caller's PD");
    assert_eq!(r.pd_ptr(), raw, "registered in the caller's domain");
    v.deregister(r).expect("ibv_dereg_mr");
    let cache = Cache::new(AnyRegistrar::Verbs(v), Config::default());
    let h = cache
        .get(m.range(), RW)
        .expect("a cached MR in the caller's PD");
    assert!(h.keys().is_some());
    drop(h);
    drop(cache);
    // SAFETY: NULL is refused, not dereferenced.
    assert!(unsafe { CallerPd::from_raw(std::ptr::null_mut()) }.is_err());
}

#[test]
fn verbs_region_keeps_protection_domain_alive() {
    let Some(v) = verbs_or_skip("verbs_region_keeps_protection_domain_alive") else {
        return;
    };
    let m = Mapping::new(64 << 10, libc::PROT_READ | libc::PROT_WRITE);
    let r = v.register(m.range(), RW).unwrap();
    drop(v); // the region still holds the PD
    assert!(
        !r.protection_domain()
            .expect("own PD")
            .device()
            .name
            .is_empty()
    );
    drop(r); // Drop deregisters, then the PD goes
}

#[test]
fn verbs_bad_input_is_a_clear_error() {
    let Some(v) = verbs_or_skip("verbs_bad_input_is_a_clear_error") else {
        return;
    };
    let m = Mapping::new(4 << 20, libc::PROT_READ | libc::PROT_WRITE);

    // Zero length.
    let empty = AddrRange::new(m.range().start(), m.range().start()).unwrap();
    let e = v.register(empty, RW).unwrap_err();
    assert!(matches!(e, RegistrarError::NotMapped { .. }), "{e}");

    // Overflowing range: refused when the range is built.
    assert!(matches!(
        AddrRange::from_start_len(u64::MAX - 4095, 8192),
        Err(RangeError::Overflow { .. })
    ));

    // Unmapped memory: unmap the middle of a mapping, register across it.
    let page = regcache::page_size();
    let hole = m.range().start() + 2 * page;
    // SAFETY: the page is part of our mapping and nothing refers to it.
    let rc = unsafe { libc::munmap(hole as *mut libc::c_void, page as usize) };
    assert_eq!(rc, 0);
    let e = v.register(m.range(), RW).unwrap_err();
    assert!(matches!(e, RegistrarError::NotMapped { .. }), "{e}");
    let e = v
        .register(AddrRange::from_start_len(hole, page).unwrap(), RW)
        .unwrap_err();
    assert!(matches!(e, RegistrarError::NotMapped { .. }), "{e}");

    // Access flags the device refuses: remote write without local write.
    let ok = AddrRange::from_start_len(m.range().start(), page).unwrap();
    let e = v.register(ok, AccessFlags::REMOTE_WRITE).unwrap_err();
    assert!(matches!(e, RegistrarError::AccessRefused { .. }), "{e}");
    let e = v.register(ok, AccessFlags::REMOTE_ATOMIC).unwrap_err();
    assert!(matches!(e, RegistrarError::AccessRefused { .. }), "{e}");

    // Write access to read-only memory.
    let ro = Mapping::new(64 << 10, libc::PROT_READ);
    let e = v.register(ro.range(), RW).unwrap_err();
    assert!(
        matches!(
            e,
            RegistrarError::NotMapped { .. } | RegistrarError::AccessRefused { .. }
        ),
        "{e}"
    );
    // ... while read-only access to it is fine.
    let r = v.register(ro.range(), AccessFlags::REMOTE_READ).unwrap();
    v.deregister(r).unwrap();

    // Unknown device name.
    let e = VerbsRegistrar::open(Some("no-such-device")).unwrap_err();
    assert!(matches!(e, RegistrarError::Unavailable { .. }), "{e}");
}

/// Above `RLIMIT_MEMLOCK` (8 MiB in the VM) an unprivileged process gets
/// ENOMEM from ibv_reg_mr, reported as `NoResources`; releasing a
/// registration lets the next one succeed.
#[test]
fn verbs_memlock_limit_is_no_resources() {
    let name = "verbs_memlock_limit_is_no_resources";
    let Some(v) = verbs_or_skip(name) else {
        return;
    };
    if !unprivileged_or_skip(name) {
        return;
    }
    let limit = memlock_cur();
    if limit == libc::RLIM_INFINITY || limit > 256 << 20 {
        skipped(name, &format!("RLIMIT_MEMLOCK is {limit} bytes"));
        return;
    }
    let chunk = 1usize << 20;
    let n = (limit as usize / chunk) * 2 + 2;
    let maps: Vec<Mapping> = (0..n)
        .map(|_| Mapping::new(chunk, libc::PROT_READ | libc::PROT_WRITE))
        .collect();
    let mut live = Vec::new();
    let mut refused = None;
    for m in &maps {
        match v.register(m.range(), RW) {
            Ok(r) => live.push(r),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("registering twice RLIMIT_MEMLOCK must fail");
    assert!(e.is_resource_exhausted(), "expected NoResources, got {e}");
    note(&format!(
        "{name}: {} x 1 MiB registered under a {} byte limit, then: {e}",
        live.len(),
        limit
    ));
    assert!(!live.is_empty());
    // Release one; the next registration fits again.
    v.deregister(live.pop().unwrap()).unwrap();
    let again = v
        .register(maps[n - 1].range(), RW)
        .expect("fits after release");
    v.deregister(again).unwrap();
    for r in live {
        v.deregister(r).unwrap();
    }
}

/// SoftRoCE has no PCI parent: its locality comes through its netdev.
#[test]
fn verbs_devices_are_located() {
    let name = "verbs_devices_are_located";
    let Some(v) = verbs_or_skip(name) else {
        return;
    };
    let devices = RdmaDevice::list().expect("list");
    note(&format!(
        "{name}: {devices:?}; opened {:?}",
        v.protection_domain().expect("own PD").device()
    ));
    assert!(devices.contains(v.protection_domain().expect("own PD").device()));
    for d in &devices {
        if d.name.starts_with("rxe") {
            assert!(d.netdev.is_some(), "rxe device without its netdev: {d:?}");
        }
    }
}

#[test]
fn auto_registrar_falls_back_or_uses_verbs() {
    let r = open_registrar(RegistrarKind::Auto, None).expect("auto never fails for absence");
    match verbs_or_skip("auto_registrar_falls_back_or_uses_verbs") {
        Some(_) => assert_eq!(r.name(), "verbs"),
        None => assert_eq!(r.name(), "pin"),
    }
    let pin = open_registrar(RegistrarKind::Pin, None).unwrap();
    assert_eq!(pin.name(), "pin");
}
