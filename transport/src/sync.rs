//! The `sync` shim: atomics and the futex, real or modelled by loom.
//!
//! Every atomic that another *process* touches lives in shared memory and
//! goes through this module, so that the same protocol code runs both for
//! real (std atomics + the Linux `futex(2)` system call) and under the loom
//! model checker (`RUSTFLAGS="--cfg loom"`), where the futex is modelled by
//! a loom `Mutex` + `Condvar` with exactly the kernel's guarantee: the
//! value check in `wait` and the sleep are atomic with respect to `wake`.
//!
//! The real [`FutexU32`] is `#[repr(transparent)]` over `AtomicU32`, so it
//! can sit in a `#[repr(C)]` shared-memory layout; zeroed memory is a valid
//! value. The loom one carries its own mutex and condvar and has no
//! layout guarantee (layout asserts are `cfg(not(loom))`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Spin-loop hint (a `pause` on x86); under loom, a yield so the model
/// checker can schedule the thread we are waiting for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// How a futex wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// The word did not hold the expected value: no sleep happened.
    ValueChanged,
    /// Slept and was woken (or woke spuriously, which the kernel allows).
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// A 32-bit word usable as a *shared* (not `FUTEX_PRIVATE_FLAG`) futex.
///
/// Without the private flag the kernel keys a futex on the backing page
/// (inode + offset for a shared file mapping, as lguest's futex keys), so
/// two processes that map the same segment at different addresses wait
/// and wake on the same queue.
#[cfg(not(loom))]
#[repr(transparent)]
#[derive(Debug, Default)]
pub(crate) struct FutexU32(AtomicU32);

#[cfg(not(loom))]
impl FutexU32 {
    pub(crate) fn load(&self, o: Ordering) -> u32 {
        self.0.load(o)
    }

    pub(crate) fn fetch_add(&self, v: u32, o: Ordering) -> u32 {
        self.0.fetch_add(v, o)
    }

    pub(crate) fn store(&self, v: u32, o: Ordering) {
        self.0.store(v, o)
    }

    pub(crate) fn swap(&self, v: u32, o: Ordering) -> u32 {
        self.0.swap(v, o)
    }

    /// `futex(FUTEX_WAIT)`: sleep while the word holds `expected`.
    pub(crate) fn wait(&self, expected: u32, timeout: Option<std::time::Duration>) -> WaitOutcome {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: the word is a valid, aligned u32 for the lifetime of
        // `self`; FUTEX_WAIT only reads it. The timespec outlives the call.
        // No FUTEX_PRIVATE_FLAG: the futex must match across processes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.0.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        if r == 0 {
            return WaitOutcome::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => WaitOutcome::ValueChanged,
            Some(libc::ETIMEDOUT) => WaitOutcome::TimedOut,
            // EINTR: a signal; the caller re-checks its condition anyway.
            _ => WaitOutcome::Woken,
        }
    }

    /// `futex(FUTEX_WAKE)`: wake up to `n` waiters; returns how many woke.
    pub(crate) fn wake(&self, n: u32) -> u32 {
        // SAFETY: as in `wait`; FUTEX_WAKE does not access the word's value.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.0.as_ptr(),
                libc::FUTEX_WAKE,
                n.min(i32::MAX as u32),
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        u32::try_from(r).unwrap_or(0)
    }
}

/// Loom model of the shared futex: the value check and the sleep happen
/// under `lock`, and `wake` bumps a sequence number under the same lock,
/// which is the kernel's hash-bucket guarantee.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct FutexU32 {
    word: AtomicU32,
    seq: loom::sync::Mutex<u64>,
    cv: loom::sync::Condvar,
}

#[cfg(loom)]
impl Default for FutexU32 {
    fn default() -> Self {
        Self::new(0)
    }
}

#[cfg(loom)]
impl FutexU32 {
    pub(crate) fn new(v: u32) -> Self {
        Self {
            word: AtomicU32::new(v),
            seq: loom::sync::Mutex::new(0),
            cv: loom::sync::Condvar::new(),
        }
    }

    pub(crate) fn load(&self, o: Ordering) -> u32 {
        self.word.load(o)
    }

    pub(crate) fn fetch_add(&self, v: u32, o: Ordering) -> u32 {
        self.word.fetch_add(v, o)
    }

    pub(crate) fn store(&self, v: u32, o: Ordering) {
        self.word.store(v, o)
    }

    pub(crate) fn swap(&self, v: u32, o: Ordering) -> u32 {
        self.word.swap(v, o)
    }

    /// Timeouts are not modelled: a model wait either returns at once or
    /// sleeps until woken, so a lost wake-up is a loom deadlock.
    pub(crate) fn wait(&self, expected: u32, _timeout: Option<std::time::Duration>) -> WaitOutcome {
        let mut g = self.seq.lock().unwrap();
        if self.word.load(Ordering::SeqCst) != expected {
            return WaitOutcome::ValueChanged;
        }
        let start = *g;
        while *g == start {
            g = self.cv.wait(g).unwrap();
        }
        WaitOutcome::Woken
    }

    pub(crate) fn wake(&self, _n: u32) -> u32 {
        let mut g = self.seq.lock().unwrap();
        *g += 1;
        self.cv.notify_all();
        1
    }
}
