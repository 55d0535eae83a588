//! Verify mode (`REGCACHE_VERIFY=pfn`): every hit is checked against the
//! physical pages it registered, an oracle independent of the
//! invalidation source.
//!
//! The broken source is a real one: [`MonitorKind::None`], which never
//! reports the munmap. The buffer is unmapped and mapped again at the same
//! address (new pages); the next get must not return the old registration:
//! the check sees the new PFNs, invalidates, registers afresh and counts
//! the mismatch. With a working source the same sequence yields no
//! mismatch. Reading PFNs needs `CAP_SYS_ADMIN`: without it each test says
//! so by name (the cache reports it in `verify_error`).

use regcache::{AccessFlags, AddrRange, Cache, Config, MonitorKind};
use regcache_testkit::CheckingRegistrar;
use regcache_testkit::mem::{self, NotAt};
use regcache_testkit::process::exclusive;
use regcache_testkit::registrar::id;
use regcache_testkit::skip::{skipped, verified_or_skip};

const LEN: u64 = 64 << 10;
const RW: AccessFlags = AccessFlags::LOCAL_WRITE;

fn cache(monitor: MonitorKind, test: &str) -> Option<Cache<CheckingRegistrar>> {
    verified_or_skip(
        Config {
            monitor,
            ..Config::default()
        },
        test,
    )
}

/// Unmap `r` and map fresh pages at the same address; `None` when another
/// mapping took the hole.
fn remap(r: AddrRange) -> Option<AddrRange> {
    mem::unmap(r);
    match mem::try_map_at(r.start(), r.len()) {
        Ok(n) => {
            mem::fill(n, 0x5a);
            Some(n)
        }
        Err(NotAt::Refused(e)) => panic!("mmap at {:#x}: {e}", r.start()),
        Err(NotAt::Elsewhere(p)) => {
            mem::unmap(AddrRange::from_start_len(p, r.len()).unwrap());
            None
        }
    }
}

#[test]
fn verify_catches_a_stale_hit_the_source_missed() {
    let test = "verify_catches_a_stale_hit_the_source_missed";
    // Re-maps at a fixed address: no other test of this process may map
    // or unmap meanwhile (plain `cargo test` runs them on threads).
    let _only = exclusive();
    let Some(c) = cache(MonitorKind::None, test) else {
        return;
    };
    let buf = mem::map(LEN);
    mem::fill(buf, 1);
    let first = id(&c.get(buf, RW).unwrap());
    let again = id(&c.get(buf, RW).unwrap());
    assert_eq!(first, again, "an untouched buffer is a hit");
    let s = c.stats();
    assert!(s.verify_checks >= 1 && s.verify_mismatches == 0, "{s:?}");
    let Some(buf) = remap(buf) else {
        skipped(test, "the freed address was taken by another mapping");
        return;
    };
    let h = c.get(buf, RW).unwrap();
    assert_ne!(id(&h), first, "the stale registration was not handed out");
    drop(h);
    let s = c.stats();
    assert_eq!(s.verify_mismatches, 1, "{s:?}");
    // The fresh registration checks clean from now on.
    drop(c.get(buf, RW).unwrap());
    assert_eq!(c.stats().verify_mismatches, 1);
    assert!(c.registrar().violations().is_empty());
    drop(c);
    mem::unmap(buf);
}

#[test]
fn verify_finds_nothing_with_a_working_source() {
    let test = "verify_finds_nothing_with_a_working_source";
    let _only = exclusive();
    let Some(c) = cache(MonitorKind::Auto, test) else {
        return;
    };
    if c.monitor() == MonitorKind::None {
        skipped(test, "no invalidation source opens here");
        return;
    }
    let mut buf = mem::map(LEN);
    mem::fill(buf, 1);
    for _ in 0..20 {
        drop(c.get(buf, RW).unwrap());
        drop(c.get(buf, RW).unwrap());
        match remap(buf) {
            Some(b) => buf = b,
            None => {
                buf = mem::map(LEN);
                mem::fill(buf, 1);
            }
        }
    }
    let s = c.stats();
    assert!(s.verify_checks >= 20, "{s:?}");
    assert_eq!(s.verify_mismatches, 0, "{s:?}");
    drop(c);
    mem::unmap(buf);
}
