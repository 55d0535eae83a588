//! Child processes: tests of fork behaviour (a child must not use its
//! parent's registrations; the parent must keep its own) run a closure in
//! a forked child and look at how it ended.

/// Fork; run `f` in the child and `_exit` with its code (101 if it
/// panicked; no destructors of the parent's objects run in the child);
/// return the child's wait status.
///
/// `f` runs in a copy of a multi-threaded process: it may make system
/// calls and use the library under test (which is built for fork), and
/// may allocate — the test binaries run one test per thread and nothing
/// here holds the allocator lock across fork in practice.
pub fn in_child(f: impl FnOnce() -> i32) -> libc::c_int {
    // SAFETY: the child runs `f` (see above), then _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // A panic must not unwind into the parent's test code running on
        // in the child: it is the child's failure, exit code 101.
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

/// Whether a wait status is a normal exit with code 0.
pub fn exited_ok(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// The process's memory map to one test at a time (a guard; tests that do
/// not take it still run alongside), for the tests that assert exact
/// generations, counters, events or cache statistics. Every invalidation
/// source watches the whole process — the kernel device through its MMU
/// notifier, userfaultfd through the one uffd that every umn notifier (so
/// every cache) of the process shares, the hooks by reporting to every
/// notifier — so under plain `cargo test`, whose tests are threads of one
/// process, another test's munmap moves this test's generation, and its
/// reuse of an address this test unmapped, or the uffd's address-reuse
/// window (munmap releases the address before its event is read), can hit
/// this test's registrations. `cargo nextest` runs each test in a process
/// of its own anyway.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static MAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MAP.lock().unwrap_or_else(|p| p.into_inner())
}
