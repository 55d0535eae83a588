//! Criterion benches of the cache with the real `pin` registrar.
//!
//! - `hit/hot/N`: get + release of one buffer while N regions are cached
//!   (the MPI case: a hot rendezvous buffer among many registrations).
//! - `hit/rotating/N`: get + release cycling through all N cached regions
//!   in a shuffled order (every hit touches a different region; at 10⁵ the
//!   slots no longer fit in cache, so this measures memory latency too).
//! - `many/{round_robin,random}/N`: issue 17's "hits on many live
//!   regions": get + release visiting N cached regions (10², 10⁴, 10⁵) in
//!   address order, round-robin, or choosing one uniformly at random
//!   (seeded xorshift) each time. The regions are the adjacent one-page
//!   regions below, so eight start pages share each hint-table bucket
//!   (the densest case for its scan); `regcache-bench --workload many-rr`
//!   replays the same pattern on 10⁴ separate 64 KiB buffers.
//! - `miss/pin`: every get misses (a cyclic pattern over 4× the capacity),
//!   registers with mlock and evicts the LRU region (munlock).
//! - `invalidate/10000`: invalidation of one idle region among 10⁴
//!   (including its munlock), re-registered between iterations.
//! - `hit_registrar/{builtin,caller}`: `hit/hot/100` on a
//!   `Cache<AnyRegistrar>` whose registrar is the built-in `pin` or a
//!   caller's registrar (`AnyRegistrar::User`, as the C API's
//!   `regcache_cache_new_with_ops` makes): issue 12's target is the second
//!   within 2 ns of the first, measured in the same run; and
//!   `builtin_verify_pfn`, the same hit with `REGCACHE_VERIFY=pfn` (a
//!   pagemap read per hit; issue 15 asks for its cost beside the plain hit).
//!
//! Regions are one page each, adjacent, with merging off (so they stay
//! separate regions). Run: `cargo bench -p regcache-bench --bench cache`.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, Config, Keys, PinRegistrar, PinnedRegion,
    Registrar, RegistrarError, UserRegion,
};
use std::hint::black_box;

struct Arena {
    base: u64,
    len: usize,
}

impl Arena {
    fn new(pages: usize) -> Self {
        let len = pages * regcache::page_size() as usize;
        // SAFETY: fresh anonymous private mapping; aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Arena {
            base: p as u64,
            len,
        }
    }
    /// Region i: page i. Regions are adjacent, so the caches here run
    /// with merging off; adjacent locked pages also share one VMA (one-page
    /// regions with gaps would split a VMA per mlock and hit
    /// vm.max_map_count near 32 000 regions).
    fn region(&self, i: usize) -> AddrRange {
        let page = regcache::page_size();
        AddrRange::from_start_len(self.base + i as u64 * page, page).unwrap()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`, after its cache is gone.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

fn cache_with(arena: &Arena, n: usize) -> Cache<PinRegistrar> {
    cache_over(PinRegistrar::new(), arena, n)
}

fn cache_over<R: Registrar>(registrar: R, arena: &Arena, n: usize) -> Cache<R> {
    let cache = Cache::new(
        registrar,
        Config {
            max_regions: n.max(1),
            max_bytes: 1 << 40,
            merge: regcache::Merge::Off,
            ..Config::default()
        },
    );
    for i in 0..n {
        drop(
            cache
                .get(arena.region(i), AccessFlags::LOCAL_WRITE)
                .unwrap(),
        );
    }
    assert_eq!(cache.stats().regions, n as u64);
    cache
}

fn hits(c: &mut Criterion) {
    let mut g = c.benchmark_group("hit");
    for n in [100usize, 10_000, 100_000] {
        let arena = Arena::new(n);
        let cache = cache_with(&arena, n);
        let hot = arena.region(n / 2);
        g.bench_with_input(BenchmarkId::new("hot", n), &n, |b, _| {
            b.iter(|| {
                drop(black_box(
                    cache.get(black_box(hot), AccessFlags::LOCAL_WRITE).unwrap(),
                ))
            })
        });
        // A fixed shuffled order (xorshift), precomputed.
        let mut order: Vec<AddrRange> = (0..n).map(|i| arena.region(i)).collect();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut k = 0;
        g.bench_with_input(BenchmarkId::new("rotating", n), &n, |b, _| {
            b.iter(|| {
                k = if k + 1 == order.len() { 0 } else { k + 1 };
                drop(black_box(
                    cache.get(order[k], AccessFlags::LOCAL_WRITE).unwrap(),
                ))
            })
        });
        let s = cache.stats();
        assert_eq!(s.misses, n as u64, "benchmark iterations must all be hits");
        drop(cache);
    }
    g.finish();
}

fn many(c: &mut Criterion) {
    let mut g = c.benchmark_group("many");
    for n in [100usize, 10_000, 100_000] {
        let arena = Arena::new(n);
        let cache = cache_with(&arena, n);
        let regions: Vec<AddrRange> = (0..n).map(|i| arena.region(i)).collect();
        let mut k = 0;
        g.bench_with_input(BenchmarkId::new("round_robin", n), &n, |b, _| {
            b.iter(|| {
                k = if k + 1 == n { 0 } else { k + 1 };
                drop(black_box(
                    cache.get(regions[k], AccessFlags::LOCAL_WRITE).unwrap(),
                ))
            })
        });
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        g.bench_with_input(BenchmarkId::new("random", n), &n, |b, _| {
            b.iter(|| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = regions[(x % n as u64) as usize];
                drop(black_box(cache.get(r, AccessFlags::LOCAL_WRITE).unwrap()))
            })
        });
        let s = cache.stats();
        assert_eq!(s.misses, n as u64, "benchmark iterations must all be hits");
        drop(cache);
    }
    g.finish();
}

fn misses(c: &mut Criterion) {
    let cap = 256;
    let arena = Arena::new(4 * cap);
    let cache = cache_with(&arena, cap);
    let mut k = 0;
    c.bench_function("miss/pin", |b| {
        b.iter(|| {
            k = (k + 1) % (4 * cap);
            drop(black_box(
                cache
                    .get(arena.region(k), AccessFlags::LOCAL_WRITE)
                    .unwrap(),
            ))
        })
    });
    let s = cache.stats();
    assert!(s.misses > s.hits * 100, "{s:?}");
}

fn invalidation(c: &mut Criterion) {
    let n = 10_000;
    let arena = Arena::new(n);
    let cache = cache_with(&arena, n);
    let mut k = 0;
    c.bench_function("invalidate/10000", |b| {
        b.iter_batched(
            || {
                k = (k + 1) % n;
                drop(
                    cache
                        .get(arena.region(k), AccessFlags::LOCAL_WRITE)
                        .unwrap(),
                );
                arena.region(k)
            },
            |r| black_box(cache.invalidate(r)),
            BatchSize::SmallInput,
        )
    });
}

/// A caller's registrar, as an MPI library writes one: mlock, and a boxed
/// record per registration handed to the cache as user data.
struct CallerPin(PinRegistrar);

impl Registrar for CallerPin {
    type Region = UserRegion;
    fn name(&self) -> &'static str {
        "caller-pin"
    }
    fn register(&self, r: AddrRange, a: AccessFlags) -> Result<UserRegion, RegistrarError> {
        let pinned = Box::new(self.0.register(r, a)?);
        Ok(UserRegion {
            user_data: Box::into_raw(pinned) as usize,
            keys: None,
        })
    }
    fn keys(&self, region: &UserRegion) -> Option<Keys> {
        region.keys
    }
    fn user_data(&self, region: &UserRegion) -> usize {
        region.user_data
    }
    fn deregister(&self, region: UserRegion) -> Result<(), RegistrarError> {
        // SAFETY: from Box::into_raw in `register`, deregistered once.
        let pinned = unsafe { Box::from_raw(region.user_data as *mut PinnedRegion) };
        self.0.deregister(*pinned)
    }
}

fn hit_registrar(c: &mut Criterion) {
    let mut g = c.benchmark_group("hit_registrar");
    let n = 100;
    let (arena_b, arena_c) = (Arena::new(n), Arena::new(n));
    let builtin = cache_over(AnyRegistrar::Pin(PinRegistrar::new()), &arena_b, n);
    let user = AnyRegistrar::User(Box::new(CallerPin(PinRegistrar::new())));
    let caller = cache_over(user, &arena_c, n);
    let arena_v = Arena::new(n);
    let verified = {
        let c = Cache::new(
            AnyRegistrar::Pin(PinRegistrar::new()),
            Config {
                max_regions: n,
                max_bytes: 1 << 40,
                merge: regcache::Merge::Off,
                verify: regcache::Verify::Pfn,
                ..Config::default()
            },
        );
        for i in 0..n {
            drop(c.get(arena_v.region(i), AccessFlags::LOCAL_WRITE).unwrap());
        }
        c
    };
    let (hot_b, hot_c, hot_v) = (
        arena_b.region(n / 2),
        arena_c.region(n / 2),
        arena_v.region(n / 2),
    );
    let mut cases = vec![("builtin", &builtin, hot_b), ("caller", &caller, hot_c)];
    match verified.verify_error() {
        None => cases.push(("builtin_verify_pfn", &verified, hot_v)),
        Some(why) => eprintln!("hit_registrar/builtin_verify_pfn SKIPPED: {why}"),
    }
    for (name, cache, hot) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                drop(black_box(
                    cache.get(black_box(hot), AccessFlags::LOCAL_WRITE).unwrap(),
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hits, many, misses, invalidation, hit_registrar);
criterion_main!(benches);
