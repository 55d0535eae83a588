//! The cache with its invalidation source, on real memory and real kernel
//! events: a registration never outlives the memory it was made for.
//!
//! The registrar is the real `pin` registrar wrapped to number each
//! registration (the testkit's `CheckingRegistrar::pinned`: the number is
//! its lkey), so a test can tell a fresh registration from a stale one.
//!
//! Each test asserts exact statistics, and the invalidation source watches
//! the whole process (with userfaultfd: one uffd for every cache of the
//! process), so each takes the process's memory map to itself
//! (`regcache_testkit::process::exclusive`).

use regcache::{AccessFlags, AddrRange, Cache, Config, MonitorKind};
use regcache_testkit::CheckingRegistrar;
use regcache_testkit::mem::{self, NotAt, unmap};
use regcache_testkit::process::{exclusive, exited_ok, in_child};
use regcache_testkit::registrar::id;
use std::sync::atomic::{AtomicBool, Ordering};

const LEN: u64 = 64 << 10;

/// Map LEN bytes anywhere.
fn map() -> AddrRange {
    mem::map(LEN)
}

/// Map LEN bytes again at `at`, a freed address; `None` when something
/// else took it (another thread's allocation can land in a freed hole).
fn map_again(at: u64) -> Option<AddrRange> {
    match mem::try_map_at(at, LEN) {
        Ok(r) => {
            mem::fill(r, mem::FILL);
            Some(r)
        }
        Err(NotAt::Refused(e)) => {
            eprintln!("mmap at {at:#x}: {e}");
            None
        }
        Err(NotAt::Elsewhere(p)) => {
            panic!("kernel placed the new mapping elsewhere: {p:#x}, not {at:#x}")
        }
    }
}

/// Run `scenario` until the freed address could be mapped again (it
/// returns `false` when something else took it first), at most 5 times.
fn until_address_reused(mut scenario: impl FnMut() -> bool) {
    for _ in 0..5 {
        if scenario() {
            return;
        }
        eprintln!("the freed address was taken by another mapping; trying again");
    }
    panic!("could not map new memory at a freed address in 5 tries");
}

/// The source these tests run against: `REGCACHE_TEST_MONITOR` (the VM
/// tier sets `kernel` with the module loaded), else userfaultfd.
fn source() -> MonitorKind {
    std::env::var("REGCACHE_TEST_MONITOR")
        .ok()
        .map(|v| {
            MonitorKind::parse(&v).expect("REGCACHE_TEST_MONITOR: auto|kernel|uffd|external|none")
        })
        .unwrap_or(MonitorKind::Uffd)
}

fn cache() -> Option<Cache<CheckingRegistrar>> {
    cache_with(Config::default())
}

/// As [`cache`], with `config` (its `monitor` replaced by [`source`]).
fn cache_with(config: Config) -> Option<Cache<CheckingRegistrar>> {
    let kind = source();
    match Cache::try_new(
        CheckingRegistrar::pinned(),
        Config {
            monitor: kind,
            ..config
        },
    ) {
        Ok(c) => {
            assert_eq!(c.monitor(), kind);
            Some(c)
        }
        Err(e) if std::env::var_os("REGCACHE_REQUIRE_DEVICE").is_none() => {
            // A sandbox that forbids userfaultfd, or no /dev/ummunotify.
            println!(
                "SKIPPED: invalidation source {} unavailable here ({e}); the VM tier runs these tests",
                kind.name()
            );
            None
        }
        Err(e) => panic!(
            "invalidation source {} required but unavailable: {e}",
            kind.name()
        ),
    }
}

/// Get, munmap, map new memory at the same address, get: a miss and a new
/// registration, never the stale one.
fn stale_scenario(unmap_on_other_thread: bool) {
    until_address_reused(|| stale_once(unmap_on_other_thread));
}

fn stale_once(unmap_on_other_thread: bool) -> bool {
    let Some(cache) = cache() else { return true };
    let r = map();
    let first = {
        let h = cache.get(r, AccessFlags::LOCAL_WRITE).unwrap();
        id(&h)
    };
    // A hit while the memory is unchanged.
    assert_eq!(id(&cache.get(r, AccessFlags::LOCAL_WRITE).unwrap()), first);
    if unmap_on_other_thread {
        std::thread::spawn(move || unmap(r)).join().unwrap();
    } else {
        unmap(r);
    }
    let Some(again) = map_again(r.start()) else {
        return false;
    };
    let h = cache.get(again, AccessFlags::LOCAL_WRITE).unwrap();
    assert_ne!(
        id(&h),
        first,
        "the stale registration was returned for new memory"
    );
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (1, 2), "{s:?}");
    assert!(s.monitor_invalidations >= 1, "{s:?}");
    drop(h);
    unmap(again);
    true
}

#[test]
fn munmap_then_remap_is_a_miss_never_the_stale_registration() {
    let _only = exclusive();
    stale_scenario(false);
}

#[test]
fn munmap_on_another_thread_then_remap_is_a_miss() {
    let _only = exclusive();
    stale_scenario(true);
}

/// Two caches in one process over the same buffer, as Open MPI makes one
/// rcache per device: both cache it (with userfaultfd the process's one
/// uffd watches it for both: neither is refused with EBUSY and served
/// uncached), and one munmap, on a third thread, invalidates it in both:
/// new memory at the address is a miss in each, never its stale
/// registration.
#[test]
fn two_caches_over_one_buffer_both_invalidated_by_one_munmap() {
    let _only = exclusive();
    until_address_reused(two_caches_once);
}

fn two_caches_once() -> bool {
    let (Some(a), Some(b)) = (cache(), cache()) else {
        return true;
    };
    let r = map();
    // Each cache from its own thread, as two devices' progress threads.
    let (first_a, first_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| id(&a.get(r, AccessFlags::LOCAL_WRITE).unwrap()));
        let tb = s.spawn(|| id(&b.get(r, AccessFlags::LOCAL_WRITE).unwrap()));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    for (name, c, first) in [("a", &a, first_a), ("b", &b, first_b)] {
        let h = c.get(r, AccessFlags::LOCAL_WRITE).unwrap();
        assert!(h.is_cached(), "cache {name} served the buffer uncached");
        assert_eq!(id(&h), first, "cache {name}: not a hit");
        let s = c.stats();
        assert_eq!(
            (s.hits, s.misses, s.unwatched),
            (1, 1, 0),
            "cache {name}: {s:?}"
        );
    }
    std::thread::spawn(move || unmap(r)).join().unwrap();
    let Some(again) = map_again(r.start()) else {
        return false;
    };
    for (name, c, first) in [("a", &a, first_a), ("b", &b, first_b)] {
        let h = c.get(again, AccessFlags::LOCAL_WRITE).unwrap();
        assert_ne!(
            id(&h),
            first,
            "cache {name} returned the stale registration"
        );
        assert!(h.is_cached(), "cache {name} served new memory uncached");
        assert_eq!(c.stats().monitor_invalidations, 1, "cache {name}");
    }
    unmap(again);
    true
}

// madvise(DONTNEED/FREE) is refused (EINVAL) on mlock'ed memory, so it
// cannot be shown with the pin registrar; umn's own tests show the event on
// unpinned memory, and the VM tier's verbs tests cover it with ibv_reg_mr.

#[test]
fn in_use_region_unmapped_is_deregistered_on_last_release() {
    let _only = exclusive();
    let Some(cache) = cache() else { return };
    let r = map();
    let h = cache.get(r, AccessFlags::LOCAL_WRITE).unwrap();
    unmap(r);
    let other = map();
    // Any get applies the pending event.
    drop(cache.get(other, AccessFlags::LOCAL_WRITE).unwrap());
    // (The new mapping may reuse the address: compare registrations.)
    assert!(
        cache
            .regions()
            .iter()
            .all(|i| i.keys.unwrap().lkey.0 != id(&h)),
        "left the index at once"
    );
    let s = cache.stats();
    assert_eq!(s.invalidations_in_use, 1, "{s:?}");
    let before = s.deregistrations;
    drop(h);
    assert_eq!(cache.stats().deregistrations, before + 1);
    unmap(other);
}

/// An application thread holds the cache's index lock (the registrar's
/// `keys()` runs under it) and unmaps registered memory. munmap blocks until
/// the userfaultfd monitor reads the event; the monitor takes no cache lock,
/// so this completes. (A watchdog turns a deadlock into a failure.)
#[test]
fn unmap_while_holding_the_cache_lock_completes() {
    let _only = exclusive();
    let Some(cache) = cache() else { return };
    let victim = map();
    drop(cache.get(victim, AccessFlags::LOCAL_WRITE).unwrap());
    cache.registrar().unmap_in_keys(victim);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..200 {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            eprintln!("deadlock: munmap under the cache lock did not return in 10 s");
            std::process::abort();
        });
        let other = map();
        drop(cache.get(other, AccessFlags::LOCAL_WRITE).unwrap()); // keys() unmaps `victim`
        done.store(true, Ordering::SeqCst);
        assert!(
            !cache.registrar().unmap_in_keys_pending(),
            "keys() did not run"
        );
        // The victim's region is invalidated by the next get.
        drop(cache.get(other, AccessFlags::LOCAL_WRITE).unwrap());
        assert!(cache.regions().iter().all(|i| !i.range.overlaps(&victim)));
        unmap(other);
    });
}

/// fork with registrations alive: the child uses the cache, unmaps and
/// exits; the parent keeps its regions and still sees its own unmaps.
#[test]
fn fork_child_unmaps_and_exits_parent_keeps_working() {
    let _only = exclusive();
    until_address_reused(fork_once);
}

fn fork_once() -> bool {
    let Some(cache) = cache() else { return true };
    let shared = map();
    let first = id(&cache.get(shared, AccessFlags::LOCAL_WRITE).unwrap());
    // The child only calls the cache (no locks held by other threads: the
    // monitor thread holds none), munmap and _exit.
    let status = in_child(|| {
        (|| {
            let h = cache.get(shared, AccessFlags::LOCAL_WRITE).ok()?;
            // In the child nothing is cached: a one-off registration.
            if h.is_cached() {
                return None;
            }
            drop(h);
            unmap(shared);
            Some(0)
        })()
        .unwrap_or(1)
    });
    assert!(exited_ok(status), "child failed: {status:#x}");
    // The child's munmap was of its own copy: the parent's region is intact.
    assert_eq!(
        id(&cache.get(shared, AccessFlags::LOCAL_WRITE).unwrap()),
        first
    );
    // And the parent still gets events for its own unmaps.
    unmap(shared);
    let Some(again) = map_again(shared.start()) else {
        return false;
    };
    assert_ne!(
        id(&cache.get(again, AccessFlags::LOCAL_WRITE).unwrap()),
        first
    );
    unmap(again);
    true
}

#[test]
fn notify_unmapped_from_the_host_invalidates() {
    let _only = exclusive();
    let cache = Cache::try_new(
        CheckingRegistrar::pinned(),
        Config {
            monitor: MonitorKind::External,
            ..Config::default()
        },
    )
    .expect("the external source needs no kernel support");
    assert_eq!(cache.monitor(), MonitorKind::External);
    let r = map();
    let first = id(&cache.get(r, AccessFlags::LOCAL_WRITE).unwrap());
    assert_eq!(id(&cache.get(r, AccessFlags::LOCAL_WRITE).unwrap()), first);
    cache
        .notify_unmapped(AddrRange::from_start_len(r.start() + 4096, 1).unwrap())
        .unwrap();
    assert_ne!(id(&cache.get(r, AccessFlags::LOCAL_WRITE).unwrap()), first);
    assert_eq!(cache.stats().monitor_invalidations, 1);
    unmap(r);
}

#[test]
fn explicit_source_that_cannot_open_is_an_error_and_new_says_why() {
    let _only = exclusive();
    if std::path::Path::new(umn::DEVICE_PATH).exists() {
        println!("SKIPPED: /dev/ummunotify is present; this test is about its absence");
        return;
    }
    let cfg = Config {
        monitor: MonitorKind::Kernel,
        ..Config::default()
    };
    assert!(Cache::try_new(CheckingRegistrar::pinned(), cfg.clone()).is_err());
    let c = Cache::new(CheckingRegistrar::pinned(), cfg);
    assert_eq!(c.monitor(), MonitorKind::None);
    assert!(
        c.monitor_error().unwrap().contains("ummunotify"),
        "{:?}",
        c.monitor_error()
    );
}

/// fork with no kernel-backed source at all: the child is still detected
/// (the cache's pthread_atfork epoch) and caches nothing.
#[test]
fn fork_child_is_detected_without_a_kernel_source() {
    let _only = exclusive();
    let cache = Cache::try_new(
        CheckingRegistrar::pinned(),
        Config {
            monitor: MonitorKind::External,
            ..Config::default()
        },
    )
    .unwrap();
    let r = map();
    let first = id(&cache.get(r, AccessFlags::LOCAL_WRITE).unwrap());
    // The child only uses the cache and _exit.
    let status = in_child(|| {
        let ok = cache
            .get(r, AccessFlags::LOCAL_WRITE)
            .map(|h| !h.is_cached() && id(&h) != first)
            .unwrap_or(false);
        if ok { 0 } else { 1 }
    });
    assert!(exited_ok(status), "the child got the parent's registration");
    assert_eq!(
        id(&cache.get(r, AccessFlags::LOCAL_WRITE).unwrap()),
        first,
        "the parent keeps its region"
    );
    unmap(r);
}

/// Rounds of the address-reuse race: `REGCACHE_RACE_ROUNDS`, else 200
/// (CI); `REGCACHE_RACE_ROUNDS=10000` for the on-demand run.
fn race_rounds() -> usize {
    std::env::var("REGCACHE_RACE_ROUNDS")
        .ok()
        .map(|v| v.parse().expect("REGCACHE_RACE_ROUNDS: a round count"))
        .unwrap_or(200)
}

/// The address-reuse race on `cache`, `rounds` times: thread A unmaps a
/// cached region while thread B maps new memory at the same address as
/// soon as it is free and asks the cache for it at once. Returns (stale,
/// raced): the rounds B got the old registration, and the rounds B got the
/// address at all.
fn reuse_race(cache: &Cache<CheckingRegistrar>, rounds: usize) -> (usize, usize) {
    let (mut stale, mut raced) = (0, 0);
    for _ in 0..rounds {
        let r = map();
        let old = id(&cache.get(r, AccessFlags::LOCAL_WRITE).unwrap());
        // B must be running before A unmaps: a starting thread maps its
        // signal stack, which could otherwise land in the freed range.
        let ready = std::sync::Barrier::new(2);
        let got = std::thread::scope(|s| {
            let b = s.spawn(|| {
                ready.wait();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                let again = loop {
                    if let Ok(m) = mem::try_map_at(r.start(), LEN) {
                        break Some(m);
                    }
                    if std::time::Instant::now() > deadline {
                        break None; // something else took the address
                    }
                    std::hint::spin_loop();
                };
                again.map(|again| {
                    (
                        id(&cache.get(again, AccessFlags::LOCAL_WRITE).unwrap()),
                        again,
                    )
                })
            });
            ready.wait();
            unmap(r);
            b.join().unwrap()
        });
        match got {
            Some((new, again)) => {
                raced += 1;
                if new == old {
                    stale += 1;
                }
                unmap(again);
            }
            None => continue,
        }
    }
    assert!(
        raced >= rounds / 2,
        "the freed address was reused in only {raced} of {rounds} rounds"
    );
    (stale, raced)
}

/// The address-reuse race on the test's source. With the kernel device
/// (MMU notifier: the counter moves before the pages go, under the mmap
/// lock) and the libc patch (the generation is busy from before the
/// system call until after it) B never gets the stale registration. With
/// userfaultfd, A's munmap waits for the monitor only after releasing the
/// mmap lock, so B can get there first: the documented hole. There the
/// test counts stale results and asserts nothing.
#[test]
fn address_reuse_race_between_threads() {
    let _only = exclusive();
    let Some(cache) = cache() else { return };
    let (stale, raced) = reuse_race(&cache, race_rounds());
    println!(
        "address reuse race, {} source: {stale} stale of {raced} raced rounds",
        cache.monitor().name()
    );
    if matches!(cache.monitor(), MonitorKind::Kernel | MonitorKind::Patch) {
        assert_eq!(
            stale,
            0,
            "the {} source let a stale registration through",
            cache.monitor().name()
        );
    }
}

/// The same race with the default source (`auto`) on a host without the
/// module: the libc patch, synchronous, so no stale registration ever.
#[test]
fn address_reuse_race_with_the_default_source() {
    let _only = exclusive();
    let cache = Cache::try_new(CheckingRegistrar::pinned(), Config::default()).unwrap();
    let (stale, raced) = reuse_race(&cache, race_rounds());
    println!(
        "address reuse race, default source ({}): {stale} stale of {raced} raced rounds",
        cache.monitor().name()
    );
    match cache.monitor() {
        MonitorKind::Kernel | MonitorKind::Patch => assert_eq!(stale, 0),
        other => println!(
            "SKIPPED assertion: the default source here is {} (patch fallbacks: {})",
            other.name(),
            umn::patch::fallbacks()
        ),
    }
}

/// The invalidation observer (what the PMPI library's trace writes as `U`
/// records) hears of exactly the unmapped part of each region the real
/// munmap hit, once, and of nothing else; `Cache::invalidate` reports its
/// range cut to each region.
#[test]
fn observer_hears_the_unmapped_part_of_each_region_hit() {
    let _only = exclusive();
    let kind = source();
    let Some(cache) = cache_with(Config {
        merge: regcache::Merge::Off,
        ..Config::default()
    }) else {
        return;
    };
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h2 = heard.clone();
    assert!(cache.set_invalidation_observer(move |r| h2.lock().unwrap().push(r)));
    assert!(
        !cache.set_invalidation_observer(|_| {}),
        "a second observer must be refused"
    );
    let page = regcache::page_size();
    let r = map();
    let half = r.len() / 2;
    let lo = AddrRange::from_start_len(r.start(), half).unwrap();
    let hi = AddrRange::from_start_len(r.start() + half, half).unwrap();
    drop(cache.get(lo, AccessFlags::LOCAL_WRITE).unwrap());
    drop(cache.get(hi, AccessFlags::LOCAL_WRITE).unwrap());
    assert_eq!(cache.regions().len(), 2);

    // Two pages inside the low region, for real.
    let hole = AddrRange::from_start_len(r.start() + page, 2 * page).unwrap();
    unmap(hole);
    let other = map();
    drop(cache.get(other, AccessFlags::LOCAL_WRITE).unwrap());
    {
        let heard = heard.lock().unwrap();
        if kind == MonitorKind::Uffd {
            // UFFD_EVENT_UNMAP carries the munmap's exact range.
            assert_eq!(*heard, vec![hole], "after munmap");
        } else {
            // The kernel device's hint is the MMU notifier's range, which
            // the kernel may widen (or drop, when a registration is hit
            // twice before the read): within the region, covering the hole.
            assert!(
                heard.len() == 1 && heard[0].contains(&hole) && lo.contains(&heard[0]),
                "after munmap: {heard:?}"
            );
        }
    }
    assert_eq!(cache.stats().monitor_invalidations, 1);

    // An explicit invalidation straddling the high region's end.
    let wide = AddrRange::from_start_len(hi.end() - page, 4 * page).unwrap();
    heard.lock().unwrap().clear();
    assert_eq!(cache.invalidate(wide), 1);
    assert_eq!(
        *heard.lock().unwrap(),
        vec![AddrRange::from_start_len(hi.end() - page, page).unwrap()],
        "after invalidate"
    );

    // Eviction is not an invalidation.
    heard.lock().unwrap().clear();
    cache.flush();
    assert!(heard.lock().unwrap().is_empty());
    unmap(AddrRange::new(r.start(), hole.start()).unwrap());
    unmap(AddrRange::new(hole.end(), r.end()).unwrap());
    unmap(other);
}

/// Per-region words (the kernel device's `UMMUNOTIFY_FEATURE_REGION_WORDS`):
/// an unmap of region B does not make a hit on region A drain the events
/// (B's invalidation is applied only by the next get that misses), while
/// an unmap of A itself refuses the next hit on A. Without words (every
/// other source, or `REGCACHE_REGION_WORDS=off`), the hit on A drains B's
/// event first, as before; the test asserts whichever the cache says is in
/// force, and that the kernel device has the words unless they are off.
#[test]
fn region_words_spare_hits_on_untouched_regions() {
    let _only = exclusive();
    // Not merged: A and B may be mapped side by side.
    let Some(cache) = cache_with(Config {
        merge: regcache::Merge::Off,
        ..Config::default()
    }) else {
        return;
    };
    let words_off = std::env::var("REGCACHE_REGION_WORDS").is_ok_and(|v| v == "off");
    assert_eq!(
        cache.region_words(),
        cache.monitor() == MonitorKind::Kernel && !words_off,
        "per-region words in force with the {} source",
        cache.monitor().name()
    );
    println!(
        "region words, {} source: {}",
        cache.monitor().name(),
        if cache.region_words() { "on" } else { "off" }
    );
    let (a, b) = (map(), map());
    let first = id(&cache.get(a, AccessFlags::LOCAL_WRITE).unwrap());
    drop(cache.get(b, AccessFlags::LOCAL_WRITE).unwrap());
    std::thread::spawn(move || unmap(b)).join().unwrap();
    // A is untouched: a hit, the same registration.
    assert_eq!(id(&cache.get(a, AccessFlags::LOCAL_WRITE).unwrap()), first);
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (1, 2), "{s:?}");
    let drained = if cache.region_words() { 0 } else { 1 };
    assert_eq!(
        s.monitor_invalidations,
        drained,
        "B's event applied by a hit on A (words {}): {s:?}",
        cache.region_words()
    );
    // A unmapped: its word refuses the hit; the slow path drains both
    // events, finds nothing and fails to register unmapped memory.
    unmap(a);
    assert!(
        cache.get(a, AccessFlags::LOCAL_WRITE).is_err(),
        "a get of unmapped memory succeeded (stale hit?)"
    );
    let s = cache.stats();
    assert_eq!(s.hits, 1, "{s:?}");
    assert_eq!(s.monitor_invalidations, 2, "{s:?}");
    assert_eq!(cache.regions().len(), 0, "{s:?}");
}
