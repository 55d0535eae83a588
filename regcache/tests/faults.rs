//! Fault injection: the cache over a registrar that fails on command
//! (the testkit's [`FaultyRegistrar`] around the real `pin` registrar)
//! and over an invalidation source that falls behind (more unmaps than
//! its event ring holds before anyone drains it).
//!
//! Whatever is injected, the cache must keep its invariants: no
//! registration a caller holds is deregistered (the checking registrar
//! records any), no stale hit after an unmap, and its counters balance —
//! registrations − successful deregistrations = what the registrar still
//! has registered; and its statistics must say what happened.

use regcache::{AccessFlags, AddrRange, Cache, CacheError, Config, MonitorKind, RegistrarError};
use regcache_testkit::CheckingRegistrar;
use regcache_testkit::faults::{Fault, FaultyRegistrar};
use regcache_testkit::mem;

const PAGE: u64 = 4096;

fn cache(monitor: MonitorKind) -> Cache<FaultyRegistrar> {
    Cache::try_new(
        FaultyRegistrar::new(CheckingRegistrar::pinned()),
        Config {
            merge: regcache::Merge::Off,
            monitor,
            max_regions: 16384,
            ..Config::default()
        },
    )
    .expect("cache")
}

fn id(h: &regcache::Handle<'_, FaultyRegistrar>) -> u32 {
    h.keys().expect("the checking registrar gives keys").lkey.0
}

/// The books balance: the registrar's live registrations are exactly
/// those registered and not successfully deregistered; and no held
/// registration was deregistered.
fn assert_invariants(c: &Cache<FaultyRegistrar>) {
    let s = c.stats();
    let r = c.registrar();
    assert_eq!(
        r.checking().violations(),
        Vec::<String>::new(),
        "the cache deregistered a held registration"
    );
    assert_eq!(
        s.registrations - (s.deregistrations - s.deregistration_failures),
        r.checking().live_count() as u64,
        "registrations − successful deregistrations ≠ live registrations: {s:?}"
    );
    assert_eq!(s.gets, s.hits + s.misses, "{s:?}");
}

fn pages(base: AddrRange, i: u64) -> AddrRange {
    AddrRange::from_start_len(base.start() + i * PAGE, PAGE).unwrap()
}

#[test]
fn enomem_and_eagain_storms_evict_retry_and_then_fail_cleanly() {
    for fault in [Fault::NoMem, Fault::Again] {
        let c = cache(MonitorKind::None);
        let mem = mem::map(16 * PAGE);
        // Four idle regions, and one held throughout.
        for i in 0..4 {
            drop(c.get(pages(mem, i), AccessFlags::LOCAL_WRITE).unwrap());
        }
        let held = c.get(pages(mem, 4), AccessFlags::LOCAL_WRITE).unwrap();
        c.registrar().checking().hold(id(&held));
        c.quiesce();

        // A short storm: the cache evicts idle regions and retries until
        // the registrar answers.
        c.registrar().fail_registrations(fault, 2);
        let h = c
            .get(pages(mem, 8), AccessFlags::LOCAL_WRITE)
            .unwrap_or_else(|e| panic!("{fault:?}: a 2-call storm should be retried past: {e}"));
        let s = c.stats();
        assert_eq!(s.registration_failures, 2, "{fault:?}: {s:?}");
        assert!(s.enomem_retries >= 2, "{fault:?}: no retry counted: {s:?}");
        assert!(
            s.evictions >= 1,
            "{fault:?}: nothing evicted to retry: {s:?}"
        );
        drop(h);
        assert_invariants(&c);

        // A storm that does not end: the get fails with NoResources (an
        // error, not a panic, not an uncached hit of nothing), the held
        // region stays registered.
        c.registrar().fail_registrations(fault, u64::MAX);
        match c.get(pages(mem, 9), AccessFlags::LOCAL_WRITE) {
            Err(CacheError::Registrar(RegistrarError::NoResources { .. })) => {}
            other => panic!("{fault:?}: endless storm gave {other:?}"),
        }
        assert!(c.registrar().checking().is_live(id(&held)));
        assert_invariants(&c);

        // The storm ends: the cache works again, and the held region
        // still hits.
        c.registrar().fail_registrations(fault, 0);
        let again = c.get(pages(mem, 4), AccessFlags::LOCAL_WRITE).unwrap();
        assert_eq!(id(&again), id(&held), "{fault:?}: the held region was lost");
        drop(again);
        drop(c.get(pages(mem, 9), AccessFlags::LOCAL_WRITE).unwrap());
        c.registrar().checking().release(id(&held));
        drop(held);
        c.quiesce();
        c.flush();
        assert_invariants(&c);
        assert_eq!(
            c.registrar().checking().live_count(),
            0,
            "{fault:?}: leaked"
        );
        mem::unmap(mem);
    }
}

#[test]
fn efault_is_reported_and_nothing_is_cached() {
    let c = cache(MonitorKind::None);
    let mem = mem::map(4 * PAGE);
    c.registrar().fail_registrations(Fault::Efault, 1);
    match c.get(pages(mem, 0), AccessFlags::LOCAL_WRITE) {
        Err(CacheError::Registrar(RegistrarError::NotMapped { .. })) => {}
        other => panic!("EFAULT gave {other:?}"),
    }
    let s = c.stats();
    assert_eq!(
        (s.registration_failures, s.enomem_retries, s.regions),
        (1, 0, 0),
        "EFAULT is not retried and caches nothing: {s:?}"
    );
    // The next get registers afresh.
    let h = c.get(pages(mem, 0), AccessFlags::LOCAL_WRITE).unwrap();
    assert!(c.registrar().checking().is_live(id(&h)));
    drop(h);
    assert_invariants(&c);
    mem::unmap(mem);
}

#[test]
fn failing_deregistration_is_counted_and_leaves_no_stale_region() {
    let c = cache(MonitorKind::None);
    let mem = mem::map(4 * PAGE);
    let a = c.get(pages(mem, 0), AccessFlags::LOCAL_WRITE).unwrap();
    let old = id(&a);
    drop(a);
    drop(c.get(pages(mem, 1), AccessFlags::LOCAL_WRITE).unwrap());
    c.quiesce();
    c.registrar().fail_deregistrations(1);
    assert_eq!(c.flush(), 2);
    let s = c.stats();
    assert_eq!(
        (s.deregistrations, s.deregistration_failures, s.regions),
        (2, 1, 0),
        "{s:?}"
    );
    assert_eq!(c.registrar().injected().1, 1);
    // The failed one stays registered (as after a real ibv_dereg_mr
    // failure), outside the cache: the books still balance.
    assert_eq!(c.registrar().leaked(), 1);
    assert_eq!(c.registrar().checking().live_count(), 1);
    assert_invariants(&c);
    // The cache does not hand it out again: a get registers anew.
    let b = c.get(pages(mem, 0), AccessFlags::LOCAL_WRITE).unwrap();
    assert_ne!(id(&b), old);
    drop(b);
    assert_invariants(&c);
    mem::unmap(mem);
}

/// More unmaps than the source's event ring holds (4096 raw events by
/// default, `umn::Options::ring_capacity`) arrive before any get drains
/// it: the ring overflows, the source invalidates everything, and the
/// cache must not serve one stale region — and must not deregister the
/// one a caller still holds until it is released.
#[test]
fn event_ring_overflow_invalidates_everything_and_never_serves_stale() {
    let c = match Cache::try_new(
        FaultyRegistrar::new(CheckingRegistrar::pinned()),
        Config {
            merge: regcache::Merge::Off,
            monitor: MonitorKind::Uffd,
            max_regions: 16384,
            ..Config::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            regcache_testkit::skip::skipped(
                "event_ring_overflow_invalidates_everything_and_never_serves_stale",
                &format!("userfaultfd: {e}"),
            );
            return;
        }
    };
    const N: u64 = 4096 + 512;
    let mem = mem::map(N * PAGE);
    for i in 0..N {
        drop(c.get(pages(mem, i), AccessFlags::LOCAL_WRITE).unwrap());
    }
    let last_before = c
        .registrar()
        .checking()
        .live()
        .keys()
        .max()
        .copied()
        .unwrap();
    let held = c.get(pages(mem, 0), AccessFlags::LOCAL_WRITE).unwrap();
    let held_id = id(&held);
    c.registrar().checking().hold(held_id);
    let before = c.stats();
    assert_eq!(before.regions, N);
    // One unmap per page, no get in between: N events for a ring of
    // 4096. Each munmap waits for the monitor thread to read its event,
    // so they all reach the ring.
    for i in 1..N {
        mem::unmap(pages(mem, i));
    }
    // Pages 1.. are gone; map new memory at page 1 to tempt a stale hit.
    let again = mem::try_map_at(pages(mem, 1).start(), PAGE).ok();
    // The next get drains: everything is invalidated. Page 0 was never
    // unmapped, so only the overflow (invalidate all, without hint) can
    // make this get miss: that is the proof the ring did overflow.
    let h = c.get(pages(mem, 0), AccessFlags::LOCAL_WRITE).unwrap();
    assert_ne!(
        id(&h),
        held_id,
        "page 0 still hit: the ring did not overflow, or the overflow did not invalidate"
    );
    let s = c.stats();
    assert!(
        s.monitor_invalidations >= N,
        "overflow did not invalidate every region: {} of {N}: {s:?}",
        s.monitor_invalidations
    );
    assert!(s.invalidations_in_use >= 1, "{s:?}");
    // The held region is invalidated but still registered.
    assert!(c.registrar().checking().is_live(held_id));
    if let Some(r) = again {
        let fresh = c.get(r, AccessFlags::LOCAL_WRITE).unwrap();
        assert!(id(&fresh) > last_before, "stale hit after unmap and re-map");
    }
    drop(h);
    c.registrar().checking().release(held_id);
    drop(held);
    c.quiesce();
    assert!(
        !c.registrar().checking().is_live(held_id),
        "an invalidated region outlived its last release"
    );
    assert_invariants(&c);
    mem::unmap(pages(mem, 0));
    if let Some(r) = again {
        mem::unmap(r);
    }
}

/// A monitor kept busy: one thread unmaps a thousand registered pages one
/// by one while another holds a registration on the same mapping and
/// keeps getting (each get drains what the monitor queued so far). Then
/// the pages are mapped again: not one get may return a registration made
/// before the unmap, and the held one is deregistered only after its
/// release.
#[test]
fn munmap_storm_while_another_thread_holds_and_drains() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = match Cache::try_new(
        FaultyRegistrar::new(CheckingRegistrar::pinned()),
        Config {
            merge: regcache::Merge::Off,
            monitor: MonitorKind::Uffd,
            ..Config::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            regcache_testkit::skip::skipped(
                "munmap_storm_while_another_thread_holds_and_drains",
                &format!("userfaultfd: {e}"),
            );
            return;
        }
    };
    const N: u64 = 1024;
    let mem = mem::map(N * PAGE);
    let other = mem::map(PAGE);
    let mut old = BTreeSet::new();
    for i in 0..N {
        old.insert(id(&c.get(pages(mem, i), AccessFlags::LOCAL_WRITE).unwrap()));
    }
    let held = c.get(pages(mem, 0), AccessFlags::LOCAL_WRITE).unwrap();
    let held_id = id(&held);
    c.registrar().checking().hold(held_id);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let drainer = s.spawn(|| {
            let mut gets = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let h = c.get(other, AccessFlags::LOCAL_WRITE).unwrap();
                // The held region is never taken away while held.
                assert!(c.registrar().checking().is_live(held_id));
                drop(h);
                gets += 1;
            }
            c.quiesce();
            gets
        });
        for i in 1..N {
            mem::unmap(pages(mem, i));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(drainer.join().unwrap() > 0);
    });
    let rest = AddrRange::from_start_len(pages(mem, 1).start(), (N - 1) * PAGE).unwrap();
    match mem::try_map_at(rest.start(), rest.len()) {
        Ok(r) => {
            for i in 1..N {
                let h = c.get(pages(mem, i), AccessFlags::LOCAL_WRITE).unwrap();
                assert!(
                    !old.contains(&id(&h)),
                    "page {i}: a registration from before its unmap was served"
                );
            }
            mem::unmap(r);
        }
        Err(_) => eprintln!("the unmapped range was taken by another mapping; no re-map check"),
    }
    // Page 0 was never unmapped: still the same registration, still live.
    assert!(c.registrar().checking().is_live(held_id));
    c.registrar().checking().release(held_id);
    drop(held);
    c.quiesce();
    c.flush();
    let s = c.stats();
    assert!(s.monitor_invalidations >= N - 1, "{s:?}");
    assert_invariants(&c);
    assert_eq!(c.registrar().checking().live_count(), 0, "{s:?}");
    mem::unmap(pages(mem, 0));
    mem::unmap(other);
}
