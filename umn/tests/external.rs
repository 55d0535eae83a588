//! The external source: a host with its own memory hooks pushes
//! `notify_unmapped`; the events are the same as the kernel-reported ones.

mod common;

use common::*;
use umn::{AddrRange, Cookie, Error, Notifier, Source};

fn open() -> Notifier {
    common::open(Source::External)
}

#[test]
fn notify_middle_page_whole_range_and_generation() {
    let n = open();
    let r = map(5);
    n.register(r, Cookie(1)).unwrap();
    let (_, c0, g0) = drain(&n);
    assert_eq!(c0, 0);
    assert_eq!(n.generation(), g0);
    let mid = pages(r, 2, 1);
    n.notify_unmapped(mid).unwrap();
    assert_ne!(n.generation(), g0, "notify returned, generation unchanged");
    let (ev, c, g) = drain(&n);
    assert_eq!(ev, vec![inval(1, Some(mid))]);
    assert_eq!(c, 1);
    assert_eq!(g, n.generation());
    assert!(g.is_settled());
    // A miss changes the generation (raw events are matched at read) but
    // produces no event and no counter bump.
    n.notify_unmapped(AddrRange::from_start_len(8 << 40, 4096).unwrap())
        .unwrap();
    let (ev, c2, _) = drain(&n);
    assert!(ev.is_empty());
    assert_eq!(c2, 1);
    unmap(r);
}

#[test]
fn overlapping_twice_unregister_duplicate() {
    let n = open();
    let r = map(6);
    n.register(pages(r, 0, 4), Cookie(1)).unwrap();
    n.register(pages(r, 2, 4), Cookie(2)).unwrap();
    assert!(matches!(
        n.register(r, Cookie(2)),
        Err(Error::DuplicateCookie(Cookie(2)))
    ));
    n.notify_unmapped(pages(r, 3, 1)).unwrap();
    assert_eq!(
        sorted(drain(&n).0),
        vec![
            inval(1, Some(pages(r, 3, 1))),
            inval(2, Some(pages(r, 3, 1)))
        ]
    );
    // Twice before read: once, without hint.
    n.notify_unmapped(pages(r, 0, 1)).unwrap();
    n.notify_unmapped(pages(r, 1, 1)).unwrap();
    let (ev, c, _) = drain(&n);
    assert_eq!(ev, vec![inval(1, None)]);
    assert_eq!(c, 3);
    // Unregister drops the pending event.
    n.notify_unmapped(pages(r, 5, 1)).unwrap();
    n.unregister(Cookie(2)).unwrap();
    let (ev, c, _) = drain(&n);
    assert!(ev.is_empty());
    assert_eq!(c, 4, "the event hit cookie 2 while it was live");
    unmap(r);
}

#[test]
fn notify_from_another_thread() {
    let n = std::sync::Arc::new(open());
    let r = map(2);
    n.register(r, Cookie(3)).unwrap();
    let g0 = n.generation();
    let n2 = n.clone();
    std::thread::spawn(move || n2.notify_unmapped(r).unwrap())
        .join()
        .unwrap();
    assert_ne!(n.generation(), g0);
    assert_eq!(drain(&n).0, vec![inval(3, Some(r))]);
    unmap(r);
}

#[test]
fn kernel_source_refuses_notify() {
    match Notifier::open(Source::Kernel) {
        Ok(n) => assert!(matches!(
            n.notify_unmapped(AddrRange::from_start_len(4096, 4096).unwrap()),
            Err(Error::Unsupported(_))
        )),
        Err(Error::DeviceAbsent) => {
            println!("SKIPPED: /dev/ummunotify absent (kernel device tests run in the VM tier)")
        }
        Err(e) => panic!("unexpected: {e}"),
    }
}

#[test]
fn drain_with_reports_all_then_last() {
    let n = open();
    let r = map(4);
    for i in 0..4 {
        n.register(pages(r, i, 1), Cookie(i)).unwrap();
    }
    n.notify_unmapped(r).unwrap();
    let mut seen = Vec::new();
    let (counter, g) = n.drain_with(|i| seen.push(i)).unwrap();
    assert_eq!(
        seen,
        (0..4)
            .map(|i| inval(i, Some(pages(r, i, 1))))
            .collect::<Vec<_>>()
    );
    assert_eq!(counter, 1);
    assert_eq!(g, n.generation());
    unmap(r);
}

/// The shared address-reuse race (common/suite.rs), the host pushing
/// `notify_unmapped` before each `munmap`.
#[test]
fn address_reuse_race() {
    let _only = exclusive();
    common::suite::address_reuse_race(Source::External);
}
