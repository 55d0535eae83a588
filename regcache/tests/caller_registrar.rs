//! The caller's registrar (issue 12): a registrar of the caller's own
//! behind `AnyRegistrar::User`, as an MPI library plugs its registration
//! calls in, on real memory with real `mlock` pinning.
//!
//! The registrar here is what an MPI library writes: its `register` makes
//! an "MR object" of its own (a heap record holding the pinned region and
//! its range) and hands the cache a pointer to it as the user data; its
//! `deregister` frees it. The tests check that every hit returns that
//! pointer, that `find` never registers, that `evict` frees idle
//! registrations least recently used first, that "out of resources" from
//! the registrar is evict-and-retry, and that a callback may call back
//! into the cache (it runs under none of the cache's locks).

use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, Config, Keys, LKey, MonitorKind, PinRegistrar,
    PinnedRegion, RKey, Registrar, RegistrarError, UserRegion,
};
use regcache_testkit::mem;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The caller's MR object.
struct MrObject {
    range: AddrRange,
    serial: u32,
    _pinned: PinnedRegion,
}

type Hook = Box<dyn Fn(&Cache<AnyRegistrar>) + Send + Sync>;

/// What the test sees of its registrar.
#[derive(Default)]
struct Books {
    regs: AtomicUsize,
    deregs: AtomicUsize,
    live: AtomicUsize,
    /// Registrations allowed alive at once; beyond, `NoResources`.
    cap: AtomicUsize,
    /// Set after the cache is built: the registrar calls into it.
    cache: OnceLock<Weak<Cache<AnyRegistrar>>>,
    /// Called on every deregister with the cache (re-entrancy test).
    on_dereg: Mutex<Option<Hook>>,
}

/// A caller's registrar: mlock, an MR object per registration.
struct Mpi {
    pin: PinRegistrar,
    books: Arc<Books>,
}

impl Registrar for Mpi {
    type Region = UserRegion;
    fn name(&self) -> &'static str {
        "mpi"
    }
    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<UserRegion, RegistrarError> {
        if self.books.live.load(SeqCst) >= self.books.cap.load(SeqCst) {
            return Err(RegistrarError::NoResources {
                call: "test reg",
                source: std::io::Error::from_raw_os_error(libc::ENOMEM),
            });
        }
        let pinned = self.pin.register(range, access)?;
        let serial = self.books.regs.fetch_add(1, SeqCst) as u32 + 1;
        self.books.live.fetch_add(1, SeqCst);
        let mr = Box::new(MrObject {
            range,
            serial,
            _pinned: pinned,
        });
        Ok(UserRegion {
            user_data: Box::into_raw(mr) as usize,
            keys: Some(Keys {
                lkey: LKey(serial),
                rkey: RKey(serial),
            }),
        })
    }
    fn keys(&self, region: &UserRegion) -> Option<Keys> {
        region.keys
    }
    fn user_data(&self, region: &UserRegion) -> usize {
        region.user_data
    }
    fn deregister(&self, region: UserRegion) -> Result<(), RegistrarError> {
        if let Some(cache) = self.books.cache.get().and_then(Weak::upgrade) {
            if let Some(hook) = &*self.books.on_dereg.lock().unwrap() {
                hook(&cache);
            }
        }
        // SAFETY: made by Box::into_raw in `register`; the cache
        // deregisters each registration once.
        let mr = unsafe { Box::from_raw(region.user_data as *mut MrObject) };
        drop(mr); // munlock
        self.books.deregs.fetch_add(1, SeqCst);
        self.books.live.fetch_sub(1, SeqCst);
        Ok(())
    }
}

fn cache(cap: usize, monitor: MonitorKind) -> (Arc<Cache<AnyRegistrar>>, Arc<Books>) {
    let books = Arc::new(Books::default());
    books.cap.store(cap, SeqCst);
    let reg = Mpi {
        pin: PinRegistrar::new(),
        books: books.clone(),
    };
    let cache = Arc::new(Cache::new(
        AnyRegistrar::User(Box::new(reg)),
        Config {
            merge: regcache::Merge::Off,
            monitor,
            ..Config::default()
        },
    ));
    let _ = books.cache.set(Arc::downgrade(&cache));
    (cache, books)
}

/// The MR object behind a user-data word.
fn mr(user_data: usize) -> &'static MrObject {
    assert_ne!(user_data, 0, "a caller's registration has user data");
    // SAFETY: a live MR object (the test holds a handle on it).
    unsafe { &*(user_data as *const MrObject) }
}

const RW: AccessFlags = AccessFlags::LOCAL_WRITE;

#[test]
fn every_hit_returns_the_callers_mr_object() {
    let (c, books) = cache(64, MonitorKind::None);
    let buf = mem::map_pages(4);
    let h = c.get(buf, RW).unwrap();
    let first = h.user_data();
    assert_eq!(mr(first).range, h.range());
    assert_eq!(h.keys().unwrap().lkey.0, mr(first).serial);
    drop(h);
    let sub = AddrRange::from_start_len(buf.start() + 100, 1000).unwrap();
    for _ in 0..3 {
        let h = c.get(sub, RW).unwrap();
        assert_eq!(h.user_data(), first, "a hit returns the region's user data");
        assert!(mr(h.user_data()).range.contains(&sub));
    }
    let s = c.stats();
    assert_eq!((s.misses, s.hits), (1, 3));
    assert_eq!(books.regs.load(SeqCst), 1);
    drop(c);
    assert_eq!(
        books.deregs.load(SeqCst),
        1,
        "dropping the cache deregisters"
    );
    mem::unmap(buf);
}

#[test]
fn find_never_registers() {
    let (c, books) = cache(64, MonitorKind::None);
    let buf = mem::map_pages(2);
    assert!(c.find(buf, RW).unwrap().is_none());
    assert_eq!(books.regs.load(SeqCst), 0, "find registered nothing");
    assert_eq!(c.stats().gets, 0, "a find that finds nothing is not a get");
    let u = c.get(buf, RW).unwrap().user_data();
    let found = c.find(buf, RW).unwrap().expect("cached now");
    assert_eq!(found.user_data(), u);
    drop(found);
    // More access than registered: not a covering registration.
    assert!(
        c.find(buf, RW | AccessFlags::REMOTE_WRITE)
            .unwrap()
            .is_none()
    );
    let outside = AddrRange::from_start_len(buf.end() + 4096, 1).unwrap();
    assert!(c.find(outside, RW).unwrap().is_none());
    assert_eq!(books.regs.load(SeqCst), 1);
    assert!(
        c.find(AddrRange::from_start_len(0, 0).unwrap(), RW)
            .is_err()
    );
    // Invalidated: find no longer returns it.
    c.invalidate(buf);
    assert!(c.find(buf, RW).unwrap().is_none());
    drop(c);
    mem::unmap(buf);
}

#[test]
fn evict_frees_idle_registrations_lru_first() {
    let (c, books) = cache(64, MonitorKind::None);
    let bufs: Vec<AddrRange> = (0..3).map(|_| mem::map_pages(1)).collect();
    let serials: Vec<u32> = bufs
        .iter()
        .map(|b| mr(c.get(*b, RW).unwrap().user_data()).serial)
        .collect();
    assert_eq!(serials, [1, 2, 3]);
    c.quiesce(); // give back this thread's deferred references
    let held = c.get(bufs[0], RW).unwrap(); // in use, and now most recent
    assert_eq!(c.evict(0), 0);
    assert_eq!(c.evict(1), 1);
    let mut left: Vec<u32> = c.regions().iter().map(|r| r.keys.unwrap().lkey.0).collect();
    left.sort();
    assert_eq!(left, [1, 3], "the least recently used idle region (2) went");
    assert_eq!(c.evict(10), 1, "only idle regions are evicted");
    assert_eq!(c.regions().len(), 1);
    assert_eq!(mr(held.user_data()).serial, 1, "the one in use stays");
    drop(held);
    assert_eq!(
        c.evict(10),
        1,
        "this thread's deferred reference is given back"
    );
    assert_eq!(books.live.load(SeqCst), 0);
    assert_eq!(books.deregs.load(SeqCst), 3);
    drop(c);
    bufs.into_iter().for_each(mem::unmap);
}

#[test]
fn no_resources_from_the_registrar_is_evict_and_retry() {
    let (c, books) = cache(2, MonitorKind::None);
    let bufs: Vec<AddrRange> = (0..4).map(|_| mem::map_pages(1)).collect();
    for b in &bufs {
        let h = c.get(*b, RW).unwrap();
        assert!(h.is_cached());
    }
    let s = c.stats();
    assert!(s.enomem_retries >= 2, "{s:?}");
    assert!(books.live.load(SeqCst) <= 2);
    // Everything in use: nothing to evict, the get fails with the
    // registrar's error (not a crash, nothing leaked).
    let a = c.get(bufs[0], RW).unwrap();
    let b = c.get(bufs[1], RW).expect("a second region fits");
    match c.get(bufs[2], RW) {
        Err(regcache::CacheError::Registrar(e)) => assert!(e.is_resource_exhausted(), "{e}"),
        other => panic!("expected out of resources, got {other:?}"),
    }
    drop((a, b));
    drop(c);
    assert_eq!(books.live.load(SeqCst), 0, "nothing leaked");
    bufs.into_iter().for_each(mem::unmap);
}

#[test]
fn a_callback_may_call_into_the_cache() {
    let (c, books) = cache(64, MonitorKind::Auto);
    let other = mem::map_pages(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let k = calls.clone();
    *books.on_dereg.lock().unwrap() = Some(Box::new(move |cache| {
        // A get, a find and the statistics from inside deregister.
        drop(cache.get(other, RW).unwrap());
        let _ = cache.find(other, RW).unwrap();
        let _ = cache.stats();
        k.fetch_add(1, SeqCst);
    }));
    let buf = mem::map_pages(4);
    drop(c.get(buf, RW).unwrap());
    c.quiesce();
    // Invalidation by a real munmap, applied by the next get (the drain).
    mem::unmap(buf);
    if c.monitor() != MonitorKind::None {
        drop(c.get(other, RW).unwrap());
        assert!(calls.load(SeqCst) >= 1, "the munmap's deregistration ran");
    }
    // Eviction and flush deregister too.
    let buf2 = mem::map_pages(2);
    drop(c.get(buf2, RW).unwrap());
    c.quiesce();
    let before = calls.load(SeqCst);
    assert!(c.evict(64) >= 1);
    assert!(calls.load(SeqCst) > before);
    *books.on_dereg.lock().unwrap() = None;
    drop(c);
    mem::unmap(buf2);
    mem::unmap(other);
}
