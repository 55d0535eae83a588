//! Helpers shared by the integration tests: real mappings, opening a
//! source (or saying why not), draining.
#![allow(dead_code, unreachable_pub)]

pub mod suite;

use umn::{AddrRange, Cookie, Error, Event, Generation, Invalidation, Notifier, Source, page_size};

#[allow(unused_imports)] // each test binary uses some
pub use regcache_testkit::mem::{madvise, map_fixed, mremap, unmap};
#[allow(unused_imports)]
pub use regcache_testkit::process::{exclusive, in_child};

pub fn pg() -> u64 {
    page_size()
}

/// A fresh anonymous read-write mapping of `pages` pages, touched.
pub fn map(pages: u64) -> AddrRange {
    regcache_testkit::mem::map_pages(pages)
}

/// Page `i` (0-based) of `r`, `n` pages long.
pub fn pages(r: AddrRange, i: u64, n: u64) -> AddrRange {
    AddrRange::from_start_len(r.start() + i * pg(), n * pg()).unwrap()
}

/// What a device test prints when there is no device.
pub const SKIP: &str = "SKIPPED: /dev/ummunotify absent (kernel device tests run in the VM tier)";

/// The VM tier loaded the module and wants the device tests to run:
/// absence is a failure there.
pub fn required() -> bool {
    regcache_testkit::skip::required("REGCACHE_REQUIRE_DEVICE")
}

/// The device is absent: fail under `REGCACHE_REQUIRE_DEVICE=1`, else
/// say the test is skipped.
pub fn device_absent() {
    assert!(
        !required(),
        "REGCACHE_REQUIRE_DEVICE=1 but /dev/ummunotify is absent"
    );
    println!("{SKIP}");
}

/// A notifier on `source`, which must open on this host.
pub fn open(source: Source) -> Notifier {
    let n = Notifier::open(source)
        .unwrap_or_else(|e| panic!("the {source:?} source must open on this host: {e}"));
    assert_eq!(n.source(), source);
    n
}

/// The kernel device, or `None` (and SKIPPED) when the module is not loaded.
pub fn device() -> Option<Notifier> {
    match Notifier::open(Source::Kernel) {
        Ok(n) => {
            assert_eq!(n.source(), Source::Kernel);
            Some(n)
        }
        Err(Error::DeviceAbsent) => {
            assert!(!std::path::Path::new(umn::DEVICE_PATH).exists());
            device_absent();
            None
        }
        Err(e) => panic!("opening the device failed otherwise: {e}"),
    }
}

/// Everything pending, the LAST counter, and the LAST generation.
pub fn drain(n: &Notifier) -> (Vec<Invalidation>, u64, Generation) {
    let mut buf = [Event::default(); 2]; // small: exercises batching
    let mut v = Vec::new();
    loop {
        let k = n.read(&mut buf).unwrap();
        assert!(k > 0, "read returned 0 records with room for 2");
        for e in &buf[..k] {
            match *e {
                Event::Inval(i) => v.push(i),
                Event::Last {
                    counter,
                    generation,
                } => return (v, counter, generation),
            }
        }
    }
}

/// The set of invalidations, sorted by cookie.
pub fn sorted(mut v: Vec<Invalidation>) -> Vec<Invalidation> {
    v.sort_by_key(|i| i.cookie);
    v
}

pub fn inval(c: u64, r: Option<AddrRange>) -> Invalidation {
    Invalidation {
        cookie: Cookie(c),
        range: r,
    }
}
