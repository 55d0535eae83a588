//! The token API ([`Cache::get_token`], [`Cache::release_token`]): a
//! cached hit as an 8-byte `Copy` value, what it reports, and what a stale
//! release is detected as.

use regcache::{AccessFlags, AddrRange, Cache, Config, Got, MonitorKind, PinRegistrar, Token};

fn cache() -> Cache<PinRegistrar> {
    let cfg = Config {
        monitor: MonitorKind::None,
        ..Config::default()
    };
    Cache::new(PinRegistrar::new(), cfg)
}

fn token(g: Got<PinRegistrar>) -> Token {
    match g {
        Got::Cached(t) => t,
        Got::Uncached(r) => panic!("expected a cached registration, got {r:?}"),
    }
}

#[test]
fn token_is_small_and_reports_the_region() {
    assert_eq!(std::mem::size_of::<Token>(), 8);
    let buf = vec![7u8; 3 * 4096];
    let r = AddrRange::from_buffer(buf.as_ptr(), buf.len()).unwrap();
    let c = cache();
    let t = token(c.get_token(r, AccessFlags::LOCAL_WRITE).unwrap());
    assert_eq!(Token::from_bits(t.to_bits()), t);
    // SAFETY: `t` is held.
    let (range, keys) = unsafe { c.token_info(t) };
    assert!(range.start() <= r.start() && range.end() >= r.end());
    assert_eq!(keys, None, "the pin registrar has no keys");
    let t2 = token(c.get_token(r, AccessFlags::LOCAL_WRITE).unwrap());
    assert_eq!(t2, t, "a hit on the same region names the same slot");
    assert_eq!(c.regions()[0].refs, 2);
    // SAFETY: both tokens are held, each released once.
    unsafe {
        assert!(c.release_token(t));
        assert!(c.release_token(t2));
    }
    c.quiesce();
    assert_eq!(c.regions()[0].refs, 0);
    let s = c.stats();
    assert_eq!((s.gets, s.hits, s.misses), (2, 1, 1));
}

#[test]
fn release_of_a_dead_region_token_is_refused_and_changes_nothing() {
    let buf = vec![7u8; 4096 * 2];
    let r = AddrRange::from_buffer(buf.as_ptr(), buf.len()).unwrap();
    let c = cache();
    let t = token(c.get_token(r, AccessFlags::LOCAL_WRITE).unwrap());
    // SAFETY: `t` is held; the second release is the duplicate under test,
    // made after its region left the cache (so it is detectable).
    unsafe {
        assert!(c.release_token(t));
        c.quiesce();
        assert_eq!(c.flush(), 1);
        assert!(!c.release_token(t), "the region is gone: stale");
    }
    // A new region, possibly in the same slot, is unaffected.
    let t2 = token(c.get_token(r, AccessFlags::LOCAL_WRITE).unwrap());
    assert_ne!(t2, t, "a recycled slot has a new incarnation");
    // SAFETY: `t` is stale (refused without effect); `t2` is held.
    unsafe {
        assert!(!c.release_token(t));
        assert_eq!(c.regions()[0].refs, 1);
        assert!(c.release_token(t2));
    }
    // SAFETY: a token no get returned: refused.
    assert!(!unsafe { c.release_token(Token::from_bits(u64::MAX)) });
}

#[test]
fn on_this_thread_variants_match_the_plain_ones() {
    let buf = vec![7u8; 4096 * 2];
    let r = AddrRange::from_buffer(buf.as_ptr(), buf.len()).unwrap();
    let c = cache();
    let me = regcache::this_thread();
    assert_eq!(me.index(), regcache::thread_stripe());
    let t = token(c.get_token_on(me, r, AccessFlags::LOCAL_WRITE).unwrap());
    let t2 = token(c.get_token(r, AccessFlags::LOCAL_WRITE).unwrap());
    assert_eq!(t, t2);
    // SAFETY: both held, each released once.
    unsafe {
        assert!(c.release_token_on(me, t));
        assert!(c.release_token(t2));
    }
    c.quiesce();
    assert_eq!(c.regions()[0].refs, 0);
    // Another thread has another index.
    let other = std::thread::spawn(|| regcache::this_thread().index())
        .join()
        .unwrap();
    assert_ne!(other, me.index());
}
