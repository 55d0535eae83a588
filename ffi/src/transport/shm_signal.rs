//! `regcache_shm_signal_*`: shm_signal doorbells between two processes.
//!
//! A 192-byte descriptor in shared memory holds two doorbell records,
//! `north` and `south`; each endpoint owns one (waits on it) and rings the
//! other. The protocol (a pending word, one `futex_wake` per 0→1
//! transition, modelled with loom in `regcache-transport`) lives in
//! `regcache_transport::shm_signal`; this module converts C arguments and
//! results. An endpoint is an object of the FFI object layer
//! (`object.rs`), torn down by `regcache_shm_signal_destroy`
//! (`regcache_shm_signal_close` is its first name, kept as an alias).

use super::{rung_or_timed_out, timeout_of};
use crate::object::{self, Kind, Out, ffi_guard, name_of, write_out};
use crate::result::{Error, regcache_result};
use regcache_result::*;
use regcache_transport::shm_signal::IrqStats;
use regcache_transport::{Segment, ShmSignal, Side, Wake};
use std::ffi::{c_char, c_int};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

const SIGNAL: Kind = Kind {
    live: 0x6463_7368_6d73_6967, // "dcshmsig"
    what: "shm_signal",
};

/// Counters of one doorbell (irq) record of a shm_signal
/// (`regcache_shm_signal_stats`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct regcache_irq_stats {
    /// `notify` calls aimed at this record.
    pub notifies: u64,
    /// Real `futex_wake` calls issued for it.
    pub wakes_sent: u64,
    /// Wake-ups its owner consumed.
    pub wakes_taken: u64,
    /// Times its owner slept in `futex_wait`.
    pub sleeps: u64,
}

impl From<IrqStats> for regcache_irq_stats {
    fn from(s: IrqStats) -> Self {
        Self {
            notifies: s.notifies,
            wakes_sent: s.wakes_sent,
            wakes_taken: s.wakes_taken,
            sleeps: s.sleeps,
        }
    }
}

/// Which record of a shm_signal an endpoint owns (waits on); it rings the
/// other one.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_shm_signal_side {
    /// Owns `north`, rings `south`.
    REGCACHE_SHM_SIGNAL_NORTH = 0,
    /// Owns `south`, rings `north`.
    REGCACHE_SHM_SIGNAL_SOUTH = 1,
}

fn side_of(side: u32) -> Result<Side, Error> {
    match side {
        0 => Ok(Side::North),
        1 => Ok(Side::South),
        _ => Err(Error::new(
            REGCACHE_ERR_INVALID_ARGUMENT,
            format!("not a regcache_shm_signal_side: {side}"),
        )),
    }
}

/// How to open a shm_signal endpoint.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_shm_signal_mode {
    /// Initialise the descriptor (zero-filled memory) and open an endpoint.
    REGCACHE_SHM_SIGNAL_CREATE = 0,
    /// Attach to a descriptor initialised by a peer.
    REGCACHE_SHM_SIGNAL_ATTACH = 1,
}

/// One endpoint of a shm_signal doorbell pair (opaque). Waited on by one
/// thread, notified by any.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct regcache_shm_signal {
    _private: [u8; 0],
}

fn open_signal(
    seg: Segment,
    offset: usize,
    side: u32,
    mode: u32,
) -> Result<*mut regcache_shm_signal, Error> {
    let side = side_of(side)?;
    let seg = Arc::new(seg);
    let sig = match mode {
        0 => ShmSignal::create(seg, offset, side)?,
        1 => ShmSignal::attach(seg, offset, side)?,
        _ => {
            return Err(Error::new(
                REGCACHE_ERR_INVALID_ARGUMENT,
                format!("not a regcache_shm_signal_mode: {mode}"),
            ));
        }
    };
    Ok(object::make::<ShmSignal, regcache_shm_signal>(&SIGNAL, sig))
}

/// Open the `side` endpoint of the descriptor at `offset` (64-byte
/// aligned; `REGCACHE_SHM_SIGNAL_SIZE` bytes) of the file behind `fd` (a
/// memfd, a `/dev/shm` file; the library maps its own duplicate, so `fd`
/// may be closed afterwards). `mode`: a `regcache_shm_signal_mode`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT` (`fd` <
/// 0, unknown side or mode), `REGCACHE_ERR_SHM` (`dup`, `fstat`, `mmap`;
/// an empty file), `REGCACHE_ERR_SEGMENT_TOO_SMALL` (out of bounds or
/// misaligned), `REGCACHE_ERR_BAD_SHARED_LAYOUT` (attach: not
/// initialised).
///
/// # Safety
/// `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_shm_signal_open_fd(
    fd: c_int,
    offset: usize,
    side: u32,
    mode: u32,
    out: *mut *mut regcache_shm_signal,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        if fd < 0 {
            return Err(Error::new(
                REGCACHE_ERR_INVALID_ARGUMENT,
                format!("negative file descriptor {fd}"),
            ));
        }
        side_of(side)?;
        // SAFETY: plain syscall; the result is a new descriptor we own.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(Error::new(
                REGCACHE_ERR_SHM,
                format!("dup of fd {fd} failed: {}", std::io::Error::last_os_error()),
            ));
        }
        // SAFETY: `dup` was just returned by fcntl and is owned by no one.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        let p = open_signal(Segment::map_fd(owned)?, offset, side, mode)?;
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(p) }
    })
}

/// As `regcache_shm_signal_open_fd` on the existing shared segment
/// `/dev/shm/<name>` (`shm_open("/<name>")`).
///
/// # Errors
/// Those of `regcache_shm_signal_open_fd`, `REGCACHE_ERR_NOT_FOUND`.
///
/// # Safety
/// `name` NULL or NUL-terminated; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_shm_signal_open_named(
    name: *const c_char,
    offset: usize,
    side: u32,
    mode: u32,
    out: *mut *mut regcache_shm_signal,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        // SAFETY: contract.
        let name = unsafe { name_of(name) }?;
        side_of(side)?;
        let p = open_signal(Segment::open(name)?, offset, side, mode)?;
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(p) }
    })
}

/// Destroy an endpoint (unmaps its segment when it was the last user).
/// Using it afterwards returns `REGCACHE_ERR_DESTROYED`. Not concurrently
/// with other calls on it.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `signal` NULL or from `regcache_shm_signal_open_*`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_shm_signal_destroy(
    signal: *mut regcache_shm_signal,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        drop(unsafe { object::destroy::<ShmSignal, _>(signal, &SIGNAL) }?);
        Ok(())
    })
}

/// The first name of `regcache_shm_signal_destroy` (the same function),
/// kept because an exported symbol is never removed.
///
/// # Errors
/// As `regcache_shm_signal_destroy`.
///
/// # Safety
/// As `regcache_shm_signal_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_shm_signal_close(
    signal: *mut regcache_shm_signal,
) -> regcache_result {
    // SAFETY: the same contract.
    unsafe { regcache_shm_signal_destroy(signal) }
}

/// Ring the other side. `woke` (may be NULL) receives 1 when a real
/// wake-up (`futex_wake`) was issued, 0 when it was suppressed (the peer
/// was awake or a wake-up was already pending). Any thread may notify.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `signal` as for `regcache_shm_signal_destroy`; `woke` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_shm_signal_notify(
    signal: *const regcache_shm_signal,
    woke: *mut u32,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let s = unsafe { object::live::<ShmSignal, _>(signal, &SIGNAL) }?;
        let w = u32::from(s.notify());
        if !woke.is_null() {
            // SAFETY: non-NULL and writable (contract).
            unsafe { woke.write(w) };
        }
        Ok(())
    })
}

/// Wait until our side is rung: `timeout_ns` < 0 forever, 0 only checks
/// (consuming the doorbell), > 0 that long. One waiting thread per
/// endpoint.
///
/// # Errors
/// `REGCACHE_ERR_TIMED_OUT` (not rung), `REGCACHE_ERR_NULL_ARGUMENT`,
/// `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// As for `regcache_shm_signal_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_shm_signal_wait(
    signal: *const regcache_shm_signal,
    timeout_ns: i64,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let s = unsafe { object::live::<ShmSignal, _>(signal, &SIGNAL) }?;
        let rung = if timeout_ns == 0 {
            s.try_take()
        } else {
            s.wait(timeout_of(timeout_ns)) == Wake::Signalled
        };
        rung_or_timed_out(rung, "the doorbell")
    })
}

/// Counters of the record owned by `side` (a `regcache_shm_signal_side`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT`,
/// `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// As for `regcache_shm_signal_destroy`; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_shm_signal_stats(
    signal: *const regcache_shm_signal,
    side: u32,
    out: *mut regcache_irq_stats,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let s = unsafe { object::live::<ShmSignal, _>(signal, &SIGNAL) }?;
        let side = side_of(side)?;
        // SAFETY: NULL-checked by write_out; writable (contract).
        unsafe { write_out(out, "out", s.stats(side).into()) }
    })
}
