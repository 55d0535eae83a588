//! Property tests of the cache against a naive model.
//!
//! The registrar is the testkit's checking stand-in,
//! `CheckingRegistrar::model` (a unit test of the cache's logic above the
//! registrar): it hands out unique ids as lkeys, keeps an
//! optional byte capacity that makes it fail with ENOMEM like a NIC or
//! `RLIMIT_MEMLOCK`, and fails the test if the cache ever deregisters a
//! registration a handle still holds.

use proptest::prelude::*;
use regcache::{AccessFlags, AddrRange, Cache, CacheError, Config, Eviction, Merge, MonitorKind};
use regcache_testkit::CheckingRegistrar;
use regcache_testkit::registrar::id;
use std::collections::BTreeSet;

#[derive(Debug, Clone)]
enum Op {
    Get {
        page: u64,
        pages: u64,
        offset: u64,
        access: u32,
    },
    Release(usize),
    Invalidate {
        page: u64,
        pages: u64,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..48, 1u64..6, 0u64..4096, 0u32..4).prop_map(|(page, pages, offset, access)| Op::Get { page, pages, offset, access }),
        4 => any::<usize>().prop_map(Op::Release),
        1 => (0u64..48, 1u64..4).prop_map(|(page, pages)| Op::Invalidate { page, pages }),
        1 => Just(Op::Flush),
    ]
}

fn run(
    ops: Vec<Op>,
    quiesce: bool,
    merge: Merge,
    max_regions: usize,
    max_pages: u64,
    cap_pages: u64,
) -> Result<(), TestCaseError> {
    let page = regcache::page_size();
    let config = Config {
        max_regions,
        max_bytes: max_pages * page,
        merge,
        monitor: MonitorKind::None,
        ..Config::default()
    };
    run_with(ops, quiesce, config, max_pages, cap_pages)
}

fn run_with(
    ops: Vec<Op>,
    quiesce: bool,
    config: Config,
    max_pages: u64,
    cap_pages: u64,
) -> Result<(), TestCaseError> {
    let page = regcache::page_size();
    let base = 0x1000_0000u64;
    let registrar = CheckingRegistrar::model(cap_pages * page);
    let (merge, max_regions) = (config.merge, config.max_regions);
    let cache = Cache::new(registrar, config);
    let mut handles = Vec::new();
    let mut dead: BTreeSet<u32> = BTreeSet::new();
    let access_of = |a: u32| {
        [
            AccessFlags::empty(),
            AccessFlags::LOCAL_WRITE,
            AccessFlags::REMOTE_READ,
            AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE,
        ][a as usize]
    };

    for op in ops {
        match op {
            Op::Get {
                page: p,
                pages,
                offset,
                access,
            } => {
                let access = access_of(access);
                let start = base + p * page + offset.min(page - 1);
                let req =
                    AddrRange::from_start_len(start, pages * page - offset.min(page - 1)).unwrap();
                let aligned = req.page_align().unwrap();
                let before = cache.stats();
                let expect_hit = cache
                    .regions()
                    .iter()
                    .any(|i| i.range.contains(&aligned) && i.access.satisfies(access));
                match cache.get(req, access) {
                    Ok(h) => {
                        let after = cache.stats();
                        prop_assert!(
                            h.range().contains(&aligned),
                            "{:?} does not cover {:?}",
                            h.range(),
                            aligned
                        );
                        let id = id(&h);
                        prop_assert!(
                            !dead.contains(&id),
                            "invalidated registration {id} returned"
                        );
                        prop_assert_eq!(
                            after.hits - before.hits,
                            expect_hit as u64,
                            "hit iff a cached region covers"
                        );
                        prop_assert!(cache.registrar().is_live(id));
                        cache.registrar().hold(id);
                        handles.push(h);
                    }
                    Err(CacheError::Registrar(e)) => {
                        prop_assert!(e.is_resource_exhausted());
                        prop_assert!(!expect_hit);
                        // Nothing idle may be left to evict.
                        prop_assert!(cache.regions().iter().all(|i| i.refs > 0));
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Op::Release(k) => {
                if !handles.is_empty() {
                    let h = handles.swap_remove(k % handles.len());
                    cache.registrar().release(id(&h));
                    drop(h);
                }
            }
            Op::Invalidate { page: p, pages } => {
                let r = AddrRange::from_start_len(base + p * page, pages * page).unwrap();
                // Every registration overlapping r is dead for later gets;
                // uncached ones are never shared, so they do not matter.
                for (id, lr) in cache.registrar().live().iter() {
                    if lr.overlaps(&r) {
                        dead.insert(*id);
                    }
                }
                cache.invalidate(r);
                prop_assert!(cache.regions().iter().all(|i| !i.range.overlaps(&r)));
            }
            Op::Flush => {
                cache.flush();
                prop_assert!(cache.regions().iter().all(|i| i.refs > 0));
            }
        }
        // Invariants after every step. Deferred references (this thread's
        // released handles kept for reuse) count as references: give them
        // back first so refcounts equal the handles the test holds.
        if quiesce {
            cache.quiesce();
        }
        let regions = cache.regions();
        prop_assert!(regions.len() <= max_regions);
        prop_assert!(regions.iter().map(|i| i.range.len()).sum::<u64>() <= max_pages * page);
        // (Adaptive merging may leave neighbours apart on purpose.)
        if merge == Merge::On && cache.stats().merge_fallbacks == 0 {
            for w in regions.windows(2) {
                prop_assert!(
                    !w[0].range.touches(&w[1].range),
                    "merge on, yet {:?} and {:?} touch",
                    w[0].range,
                    w[1].range
                );
            }
        }
        let registrar = cache.registrar();
        let violations = registrar.violations();
        prop_assert!(violations.is_empty(), "{:?}", violations);
        let mut deferred = 0;
        for info in &regions {
            // Every cached region is a live, never-invalidated registration
            // whose refcount is exactly the handles the test holds on it.
            let id = info.keys.unwrap().lkey.0;
            prop_assert_eq!(
                registrar.live_range(id),
                Some(info.range),
                "cached {:?} is not registered",
                info.range
            );
            prop_assert!(!dead.contains(&id));
            let held = registrar.held(id);
            if quiesce {
                prop_assert_eq!(held, info.refs as usize);
            } else {
                prop_assert!(held <= info.refs as usize);
                deferred += info.refs as usize - held;
            }
        }
        // The thread keeps at most DEFERRED released references.
        prop_assert!(
            deferred <= regcache::DEFERRED,
            "{deferred} deferred references"
        );
        let s = cache.stats();
        prop_assert_eq!(s.gets, s.hits + s.misses);
    }
    // Release everything; the registrar's live set is then exactly the
    // cache's regions, all idle.
    for h in handles.drain(..) {
        cache.registrar().release(id(&h));
    }
    cache.quiesce();
    let regions = cache.regions();
    prop_assert!(regions.iter().all(|i| i.refs == 0));
    let live = cache.registrar().live();
    prop_assert_eq!(
        live.len(),
        regions.len(),
        "leaked registrations: {:?}",
        live
    );
    let s = cache.stats();
    prop_assert_eq!(s.registrations - s.deregistrations, regions.len() as u64);
    prop_assert_eq!(
        s.bytes_registered,
        regions.iter().map(|i| i.range.len()).sum::<u64>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn merge_on_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops.clone(), true, Merge::On, 6, 24, u64::MAX / 1_000_000)?;
        run(ops, false, Merge::On, 6, 24, u64::MAX / 1_000_000)?;
    }

    #[test]
    fn merge_off_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops.clone(), true, Merge::Off, 6, 24, u64::MAX / 1_000_000)?;
        run(ops, false, Merge::Off, 6, 24, u64::MAX / 1_000_000)?;
    }

    /// Adaptive merging with cost-aware eviction keeps every invariant of
    /// the model (coverage, limits, registrar balance).
    #[test]
    fn adaptive_merge_and_cost_eviction_match_model(ops in prop::collection::vec(op(), 1..120)) {
        let config = Config {
            max_regions: 6,
            max_bytes: 24 * regcache::page_size(),
            merge: Merge::Adaptive,
            eviction: Eviction::Cost,
            monitor: MonitorKind::None,
            ..Config::default()
        };
        run_with(ops.clone(), true, config.clone(), 24, u64::MAX / 1_000_000)?;
        run_with(ops, false, config, 24, 10)?;
    }

    /// A registrar with less capacity than the cache's limits: the
    /// ENOMEM-evict-retry path.
    #[test]
    fn registrar_exhaustion_evicts_and_retries(ops in prop::collection::vec(op(), 1..120), merge in any::<bool>()) {
        let merge = Merge::from(merge);
        run(ops.clone(), true, merge, 64, 1024, 10)?;
        run(ops, false, merge, 64, 1024, 10)?;
    }
}

/// A cache with `config` and no invalidation source over a model registrar
/// of unlimited capacity.
fn unlimited(config: Config) -> Cache<CheckingRegistrar> {
    Cache::new(
        CheckingRegistrar::model(u64::MAX),
        Config {
            monitor: MonitorKind::None,
            ..config
        },
    )
}

#[test]
fn lru_evicts_least_recently_released() {
    let page = regcache::page_size();
    let cache = unlimited(Config {
        max_regions: 3,
        max_bytes: 1 << 40,
        merge: Merge::Off,
        ..Config::default()
    });
    let r = |i: u64| AddrRange::from_start_len(0x2000_0000 + i * 4 * page, page).unwrap();
    for i in 0..3 {
        drop(cache.get(r(i), AccessFlags::empty()).unwrap());
    }
    // Touch 0 and 1; 2 is now least recently used.
    drop(cache.get(r(0), AccessFlags::empty()).unwrap());
    drop(cache.get(r(1), AccessFlags::empty()).unwrap());
    drop(cache.get(r(3), AccessFlags::empty()).unwrap());
    let cached: Vec<AddrRange> = cache.regions().into_iter().map(|i| i.range).collect();
    assert_eq!(cached, vec![r(0), r(1), r(3)]);
    // An in-use region is never the victim even when it is the oldest.
    let held = cache.get(r(0), AccessFlags::empty()).unwrap();
    drop(cache.get(r(1), AccessFlags::empty()).unwrap());
    drop(cache.get(r(3), AccessFlags::empty()).unwrap());
    drop(cache.get(r(4), AccessFlags::empty()).unwrap());
    let cached: Vec<AddrRange> = cache.regions().into_iter().map(|i| i.range).collect();
    assert_eq!(cached, vec![r(0), r(3), r(4)]);
    drop(held);
    assert_eq!(cache.stats().evictions, 2);
}

#[test]
fn invalidation_of_in_use_region_defers_deregistration() {
    let page = regcache::page_size();
    let cache = unlimited(Config::default());
    let r = AddrRange::from_start_len(0x3000_0000, 2 * page).unwrap();
    let h = cache.get(r, AccessFlags::LOCAL_WRITE).unwrap();
    let first = id(&h);
    assert_eq!(cache.invalidate(r), 1);
    assert!(cache.regions().is_empty(), "left the index at once");
    assert!(
        cache.registrar().is_live(first),
        "still registered while held"
    );
    let h2 = cache.get(r, AccessFlags::LOCAL_WRITE).unwrap();
    assert_ne!(
        id(&h2),
        first,
        "a new registration, never the invalidated one"
    );
    drop(h);
    assert!(
        !cache.registrar().is_live(first),
        "deregistered on last release"
    );
    let s = cache.stats();
    assert_eq!(
        (s.invalidations_in_use, s.invalidations_idle, s.misses),
        (1, 0, 2)
    );
    drop(h2);
}

#[test]
fn bad_ranges_are_errors_and_change_nothing() {
    let cache = unlimited(Config::default());
    let empty = AddrRange::new(0x1000, 0x1000).unwrap();
    assert!(matches!(
        cache.get(empty, AccessFlags::empty()),
        Err(CacheError::Range(_))
    ));
    let top = AddrRange::new(u64::MAX - 10, u64::MAX).unwrap();
    assert!(matches!(
        cache.get(top, AccessFlags::empty()),
        Err(CacheError::Range(_))
    ));
    assert_eq!(cache.stats().registrations, 0);
    assert!(cache.regions().is_empty());
}

/// Adaptive merging, step by step (docs/ARCHITECTURE.md, "Adaptive
/// merging"): a long-lived buffer `l` and a temporary `t` next to it. The
/// first time, `t` is merged with `l` as with merging on, and `t`'s unmap
/// takes `l` down. The cache learns from that invalidation: the next `t`
/// at the same place is registered alone, its unmap leaves `l` cached, and
/// `l` hits. With merging on, `l` is lost every time; with it off, never.
#[test]
fn adaptive_merging_stops_merging_across_a_learned_boundary() {
    let page = regcache::page_size();
    let base = 0x3000_0000u64;
    let l = AddrRange::from_start_len(base, 4 * page).unwrap();
    let t = AddrRange::from_start_len(base + 4 * page, 4 * page).unwrap();
    let hits_of_l = |merge: Merge| {
        let cache = unlimited(Config {
            merge,
            ..Config::default()
        });
        let mut l_hits = 0;
        for round in 0..3 {
            let before = cache.stats().hits;
            drop(cache.get(l, AccessFlags::LOCAL_WRITE).unwrap());
            if round > 0 && cache.stats().hits > before {
                l_hits += 1;
            }
            drop(cache.get(t, AccessFlags::LOCAL_WRITE).unwrap());
            let merged = cache
                .regions()
                .iter()
                .any(|i| i.range.contains(&l) && i.range.contains(&t));
            assert_eq!(
                merged,
                merge == Merge::On || (merge == Merge::Adaptive && round == 0),
                "{merge:?} round {round}: {:?}",
                cache.regions()
            );
            cache.invalidate(t);
        }
        assert!(cache.registrar().violations().is_empty());
        l_hits
    };
    assert_eq!(hits_of_l(Merge::On), 0);
    assert_eq!(hits_of_l(Merge::Off), 2);
    assert_eq!(hits_of_l(Merge::Adaptive), 1);
}

/// Adaptive merging still merges what never dies apart: neighbours with no
/// invalidation between them end up in one registration, as with merging
/// on.
#[test]
fn adaptive_merging_merges_neighbours_nothing_has_separated() {
    let page = regcache::page_size();
    let cache = unlimited(Config {
        merge: Merge::Adaptive,
        ..Config::default()
    });
    let r = |i: u64| AddrRange::from_start_len(0x3800_0000 + i * page, page).unwrap();
    for i in 0..4 {
        drop(cache.get(r(i), AccessFlags::LOCAL_WRITE).unwrap());
    }
    let regions = cache.regions();
    assert_eq!(regions.len(), 1, "{regions:?}");
    assert_eq!(regions[0].range, r(0).hull(&r(3)));
}
