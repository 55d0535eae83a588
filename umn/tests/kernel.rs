//! The kernel-device client (`/dev/ummunotify`). The module is a later
//! issue: on hosts without it these tests check the named error and say
//! SKIPPED by name for the parts that need the device.

mod common;

use common::*;
use umn::{Cookie, Error, Notifier, Source};

const SKIP: &str = "SKIPPED: /dev/ummunotify absent (kernel device tests run in the VM tier)";

fn device() -> Option<Notifier> {
    match Notifier::open(Source::Kernel) {
        Ok(n) => {
            assert_eq!(n.source(), Source::Kernel);
            Some(n)
        }
        Err(Error::DeviceAbsent) => {
            assert!(!std::path::Path::new(umn::DEVICE_PATH).exists());
            println!("{SKIP}");
            None
        }
        Err(e) => panic!("opening the device failed otherwise: {e}"),
    }
}

#[test]
fn absent_device_is_a_named_error() {
    if std::path::Path::new(umn::DEVICE_PATH).exists() {
        println!("SKIPPED: /dev/ummunotify present; absence not testable here");
        return;
    }
    let e = Notifier::open(Source::Kernel).unwrap_err();
    assert!(matches!(e, Error::DeviceAbsent));
    assert_eq!(e.to_string(), "/dev/ummunotify not present");
}

#[test]
fn device_munmap_middle_page() {
    let Some(n) = device() else { return };
    let r = map(4);
    n.register(r, Cookie(1)).unwrap();
    let g0 = drain(&n).2;
    unmap(pages(r, 1, 1));
    assert_ne!(n.generation(), g0);
    let (ev, c, g) = drain(&n);
    assert_eq!(ev, vec![inval(1, Some(pages(r, 1, 1)))]);
    assert_eq!(g, n.generation());
    assert!(c >= 1);
    assert!(matches!(
        n.register(r, Cookie(1)),
        Err(Error::DuplicateCookie(_))
    ));
    unmap(pages(r, 0, 1));
    unmap(pages(r, 2, 2));
}
