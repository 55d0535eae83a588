//! The process's one userfaultfd: opened by the first `Uffd` notifier,
//! shared by the others, closed with its monitor thread by the last one.
//!
//! It counts userfaultfd descriptors (`/proc/self/fd`) and monitor threads
//! (`/proc/self/task/*/comm`) of the whole process, so it is the only test
//! of this binary (a test binary is one process).

use umn::{Cookie, Notifier, Source};

mod common;
use common::{drain, inval, map, unmap};

/// Descriptors of this process that are userfaultfds.
fn uffd_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy() == "anon_inode:[userfaultfd]")
        .count()
}

/// Threads of this process named `umn-monitor`.
fn monitors() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim_end() == "umn-monitor")
        .count()
}

#[test]
fn one_uffd_and_one_monitor_per_process_closed_with_the_last_notifier() {
    assert_eq!((uffd_fds(), monitors()), (0, 0), "before any notifier");
    let a = common::open(Source::Uffd);
    // The hub's descriptor and the monitor's duplicate.
    assert_eq!((uffd_fds(), monitors()), (2, 1), "one notifier");
    let b = common::open(Source::Uffd);
    let c = common::open(Source::Uffd);
    assert_eq!(
        (uffd_fds(), monitors()),
        (2, 1),
        "three notifiers share one uffd and one monitor"
    );
    let ext = common::open(Source::External);
    assert_eq!((uffd_fds(), monitors()), (2, 1), "External opens no uffd");
    drop(a);
    drop(b);
    assert_eq!((uffd_fds(), monitors()), (2, 1), "one notifier left");
    let r = map(2);
    c.register(r, Cookie(1)).unwrap();
    unmap(r);
    assert_eq!(drain(&c).0, vec![inval(1, Some(r))]);
    drop(c);
    assert_eq!(
        (uffd_fds(), monitors()),
        (0, 0),
        "the last uffd notifier closed the uffd and joined the monitor"
    );
    drop(ext);
    // A new notifier opens a new hub.
    let d = Notifier::open(Source::Uffd).unwrap();
    assert_eq!((uffd_fds(), monitors()), (2, 1), "reopened");
    let r = map(1);
    d.register(r, Cookie(2)).unwrap();
    unmap(r);
    assert_eq!(drain(&d).0, vec![inval(2, Some(r))]);
}
