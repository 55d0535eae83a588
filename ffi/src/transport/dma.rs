//! `regcache_dma_*`: keyed DMA between the processes of a node.
//!
//! A receiver binds buffers under a key (`regcache_dma_key`: a byte of a
//! shared file, the same in every process that maps it) in a registry
//! (`/dev/shm/<name>`); a sender names the key and the library copies
//! with one `process_vm_writev` into the bound buffer, or through a
//! bounce segment where single copy is refused. The protocol (descriptor
//! states, the receiver-assisted split of large copies, cut-off after
//! corruption) lives in `regcache_transport::dma`; this module converts
//! C arguments and results and nothing else.
//!
//! Objects: `regcache_dma_registry` (thread-safe: any thread sends) and
//! `regcache_dma_receiver` (owned by one thread at a time, hence
//! [`object::live_mut`]). A receiver's `_destroy` is its unbind: it waits
//! for in-flight sends, and is the destroy even when that wait times out
//! (`REGCACHE_ERR_UNBIND_BUSY`: the object is gone, the buffers must stay
//! valid).

use super::{REGCACHE_DMA_MAX_SOURCES, rung_or_timed_out, timeout_of};
use crate::object::{self, Kind, Out, array, ffi_guard, name_of, write_out};
use crate::result::{Error, regcache_result};
use regcache_result::*;
use regcache_transport::DmaKey;
use regcache_transport::Wake;
use regcache_transport::dma::{self, Config, DmaBuffer, Receiver, Registry};
use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

mod types;

pub use types::*;
use types::{config_of, path_of, range_of};

// A registry is shared by every sending thread (`object::live`: shared
// borrows only); a receiver is used by one thread at a time
// (`object::live_mut`: the `&mut` is unique by that contract).
const REGISTRY: Kind = Kind {
    live: 0x6463_7265_6769_7374, // "dcregist"
    what: "registry",
};
const RECEIVER: Kind = Kind {
    live: 0x6463_7265_6376_7278, // "dcrecvrx"
    what: "receiver",
};

// ---------------------------------------------------------------------
// Keys.

/// The key of byte `offset` of the file behind `fd` (`fstat`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT` (`fd` <
/// 0), `REGCACHE_ERR_KEY` (`fstat` failed, e.g. a closed descriptor).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_key_from_fd(
    fd: c_int,
    offset: u64,
    out: *mut regcache_dma_key,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        if fd < 0 {
            return Err(Error::new(
                REGCACHE_ERR_INVALID_ARGUMENT,
                format!("negative file descriptor {fd}"),
            ));
        }
        let k = DmaKey::from_fd(fd, offset)?;
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(k.into()) }
    })
}

/// The key of the byte at `addr` in this process (looked up in
/// `/proc/self/maps`): the mapping must be shared and file-backed.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`out`, or `addr` NULL),
/// `REGCACHE_ERR_NOT_SHARED` (unmapped, private or anonymous memory),
/// `REGCACHE_ERR_KEY`.
///
/// # Safety
/// `out` is NULL or valid for a write. `addr` is only looked up, never
/// dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_key_from_addr(
    addr: *const c_void,
    out: *mut regcache_dma_key,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        if addr.is_null() {
            return Err(Error::null("addr"));
        }
        let k = DmaKey::from_addr(addr as u64)?;
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(k.into()) }
    })
}

// ---------------------------------------------------------------------
// Registry.

/// A handle on a keyed-DMA registry (opaque): a 0600 file in `/dev/shm`
/// shared by the processes of a job. Thread-safe: any thread may send
/// through it concurrently (but not while it is being closed).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct regcache_dma_registry {
    _private: [u8; 0],
}

/// A bound receiver (opaque). **Owned by one thread**: its calls must not
/// run concurrently with each other (hand it over between threads only
/// with your own synchronisation).
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct regcache_dma_receiver {
    _private: [u8; 0],
}

/// Fill `out` with the default registry tunables, environment included
/// (`REGCACHE_TRANSPORT_FORCE_BOUNCE`, `REGCACHE_TRANSPORT_CMA_MIN_BYTES`,
/// `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES`; README).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`; `REGCACHE_ERR_CONFIG_ENV` when a
/// `REGCACHE_TRANSPORT_*` variable is malformed (the detail names it and
/// the accepted values).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_config_default(
    out: *mut regcache_dma_config,
) -> regcache_result {
    ffi_guard(|| {
        let c = regcache_dma_config::from(
            &Config::from_env().map_err(regcache_transport::Error::from)?,
        );
        // SAFETY: NULL-checked by write_out; writable (contract).
        unsafe { write_out(out, "out", c) }
    })
}

/// Open the registry `/dev/shm/<name>` (`mode`: a `regcache_dma_open_mode`)
/// with `config` (NULL: `regcache_dma_config_default`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT` (bad
/// name: empty, with `/`, over 200 bytes or not UTF-8; unknown mode; bad
/// config), `REGCACHE_ERR_CONFIG_ENV` (NULL `config` and a malformed
/// `REGCACHE_TRANSPORT_*` variable), `REGCACHE_ERR_EXISTS`,
/// `REGCACHE_ERR_NOT_FOUND`, `REGCACHE_ERR_SHM`, `REGCACHE_ERR_SEGMENT_TOO_SMALL`,
/// `REGCACHE_ERR_BAD_SHARED_LAYOUT` (not a registry of this build).
///
/// # Safety
/// `name` is NULL or NUL-terminated; `config` NULL or readable; `out`
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_registry_open(
    name: *const c_char,
    mode: u32,
    config: *const regcache_dma_config,
    out: *mut *mut regcache_dma_registry,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        // SAFETY: contract.
        let name = unsafe { name_of(name) }?;
        let config = if config.is_null() {
            Config::from_env().map_err(regcache_transport::Error::from)?
        } else {
            // SAFETY: non-NULL and readable (contract).
            config_of(unsafe { &*config })?
        };
        let reg = match mode {
            0 => Registry::create_with(name, config)?,
            1 => Registry::open_with(name, config)?,
            2 => open_or_create(name, config)?,
            _ => {
                return Err(Error::new(
                    REGCACHE_ERR_INVALID_ARGUMENT,
                    format!("not a regcache_dma_open_mode: {mode}"),
                ));
            }
        };
        let p = object::make::<Registry, regcache_dma_registry>(&REGISTRY, reg);
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(p) }
    })
}

/// `Registry::open_or_create` with a config.
fn open_or_create(name: &str, config: Config) -> Result<Registry, regcache_transport::Error> {
    use regcache_transport::Error as E;
    match Registry::create_with(name, config.clone()) {
        Err(E::Open(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
            let mut last = None;
            for _ in 0..1000 {
                match Registry::open_with(name, config.clone()) {
                    Ok(r) => return Ok(r),
                    // A creator between O_EXCL and its header store.
                    Err(e @ (E::BadRegistry { .. } | E::SegmentTooSmall)) => {
                        last = Some(e);
                        std::thread::yield_now();
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last.unwrap_or(E::SegmentTooSmall))
        }
        r => r,
    }
}

/// Destroy a registry handle. Receivers bound through it stay valid (they
/// keep the mapping); the file stays until `regcache_dma_registry_unlink`.
/// Using the handle afterwards returns `REGCACHE_ERR_DESTROYED`. Not
/// concurrently with other calls on it.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `registry` is NULL or from `regcache_dma_registry_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_registry_destroy(
    registry: *mut regcache_dma_registry,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        drop(unsafe { object::destroy::<Registry, _>(registry, &REGISTRY) }?);
        Ok(())
    })
}

/// The first name of `regcache_dma_registry_destroy` (the same function),
/// kept because an exported symbol is never removed.
///
/// # Errors
/// As `regcache_dma_registry_destroy`.
///
/// # Safety
/// As `regcache_dma_registry_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_registry_close(
    registry: *mut regcache_dma_registry,
) -> regcache_result {
    // SAFETY: the same contract.
    unsafe { regcache_dma_registry_destroy(registry) }
}

/// Remove the registry file `/dev/shm/<name>` (open handles stay valid).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_ARGUMENT` (bad
/// name), `REGCACHE_ERR_NOT_FOUND`, `REGCACHE_ERR_SHM`.
///
/// # Safety
/// `name` is NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_registry_unlink(name: *const c_char) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let name = unsafe { name_of(name) }?;
        Ok(Registry::unlink(name)?)
    })
}

/// This handle's counters.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `registry` as for `regcache_dma_registry_destroy`; `out` NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_registry_stats(
    registry: *const regcache_dma_registry,
    out: *mut regcache_dma_stats,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let r = unsafe { object::live::<Registry, _>(registry, &REGISTRY) }?;
        // SAFETY: NULL-checked by write_out; writable (contract).
        unsafe { write_out(out, "out", r.stats().into()) }
    })
}

/// Bind `buffers` as this process's receive descriptors for `key`.
///
/// `ranges` (1 to `REGCACHE_DMA_MAX_RANGES`) are the memory the sections
/// live in; every section of every buffer (1 to `REGCACHE_DMA_MAX_BUFFERS`
/// buffers of 1 to `REGCACHE_DMA_MAX_SECTIONS` sections) must lie inside
/// one of them. A message fills the sections of one buffer in order. The
/// receiver is owned by the calling thread (see `regcache_dma_receiver`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_RANGE` (a NULL,
/// empty or overflowing range or section), `REGCACHE_ERR_INVALID_ARGUMENT`
/// (counts out of limits, a section outside the ranges),
/// `REGCACHE_ERR_KEY_IN_USE`, `REGCACHE_ERR_REGISTRY_FULL`,
/// `REGCACHE_ERR_SHM` (the bounce segment), `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// The arrays are readable for their counts. Every section must stay
/// mapped, writable and unmoved until the receiver is unbound (other
/// processes write into it). Read a buffer only between the delivery that
/// names it and its restock.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_bind(
    registry: *const regcache_dma_registry,
    key: regcache_dma_key,
    ranges: *const regcache_iovec,
    nranges: usize,
    buffers: *const regcache_dma_buffer,
    nbuffers: usize,
    out: *mut *mut regcache_dma_receiver,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let r = unsafe { object::live::<Registry, _>(registry, &REGISTRY) }?;
        let out = Out::new(out, "out")?;
        // SAFETY: readable for the counts (contract).
        let ranges = unsafe { array(ranges, nranges, dma::MAX_RANGES, "ranges") }?;
        // SAFETY: as above.
        let buffers = unsafe { array(buffers, nbuffers, dma::MAX_DESCS, "buffers") }?;
        let ranges = ranges.iter().map(range_of).collect::<Result<Vec<_>, _>>()?;
        let mut bufs = Vec::with_capacity(buffers.len());
        for b in buffers {
            // SAFETY: readable for the count (contract).
            let secs = unsafe { array(b.sections, b.nsections, dma::MAX_SECTIONS, "sections") }?;
            bufs.push(DmaBuffer::new(
                secs.iter().map(range_of).collect::<Result<Vec<_>, _>>()?,
            ));
        }
        // SAFETY: the caller keeps the sections valid until unbind
        // (contract, forwarded from `Registry::bind`).
        let rx = unsafe { r.bind(key.into(), &ranges, &bufs) }?;
        let p = object::make::<Receiver, regcache_dma_receiver>(&RECEIVER, rx);
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(p) }
    })
}

/// Send the concatenation of `src[0..nsrc]` to the receiver bound to
/// `key` (in another process). Copies `min(total, buffer capacity)` bytes.
/// Pieces of length 0 are skipped (their `base` may be NULL).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_INVALID_RANGE` (a NULL or
/// overflowing piece, or nothing to send), `REGCACHE_ERR_INVALID_ARGUMENT`
/// (`nsrc` over `REGCACHE_DMA_MAX_SOURCES`), `REGCACHE_ERR_NO_RECEIVER`,
/// `REGCACHE_ERR_NO_FREE_DESCRIPTOR`, `REGCACHE_ERR_CUT_OFF`,
/// `REGCACHE_ERR_CORRUPT_DESCRIPTOR`, `REGCACHE_ERR_COPY_FAILED`,
/// `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// `src` readable for `nsrc` entries, each piece readable for its length;
/// `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_send(
    registry: *const regcache_dma_registry,
    key: regcache_dma_key,
    src: *const regcache_iovec,
    nsrc: usize,
    out: *mut regcache_dma_send_report,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let r = unsafe { object::live::<Registry, _>(registry, &REGISTRY) }?;
        let out = Out::new(out, "out")?;
        // SAFETY: readable for the count (contract).
        let src = unsafe { array(src, nsrc, REGCACHE_DMA_MAX_SOURCES, "src") }?;
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(src.len());
        for v in src {
            if v.len == 0 {
                continue;
            }
            let rg = range_of(v)?;
            if rg.end() > isize::MAX as u64 {
                return Err(Error::new(
                    REGCACHE_ERR_INVALID_RANGE,
                    format!("source piece {rg:?} is not addressable"),
                ));
            }
            // SAFETY: non-NULL, in the address space, readable for `len`
            // bytes (contract); only read during this call.
            pieces.push(unsafe { std::slice::from_raw_parts(v.base.cast::<u8>(), v.len) });
        }
        let rep = r.send(key.into(), &pieces)?;
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(rep.into()) }
    })
}

/// Wait for a message: `timeout_ns` < 0 waits forever, 0 only checks,
/// > 0 waits that long (spinning first, then sleeping on the doorbell).
///
/// # Errors
/// `REGCACHE_ERR_TIMED_OUT` (nothing arrived; `out` untouched),
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_CUT_OFF` (unbind and bind again),
/// `REGCACHE_ERR_CORRUPT_DESCRIPTOR` (a descriptor was repaired and freed;
/// the receiver keeps working).
///
/// # Safety
/// `receiver` NULL or from `regcache_dma_bind`, used by one thread at a
/// time; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_receiver_recv(
    receiver: *mut regcache_dma_receiver,
    timeout_ns: i64,
    out: *mut regcache_dma_delivery,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let rx = unsafe { object::live_mut::<Receiver, _>(receiver, &RECEIVER) }?;
        let out = Out::new(out, "out")?;
        let got = if timeout_ns == 0 {
            rx.try_recv()?
        } else {
            rx.recv(timeout_of(timeout_ns))?
        };
        let Some(d) = got else {
            return Err(Error::new(
                REGCACHE_ERR_TIMED_OUT,
                "no message arrived before the timeout",
            ));
        };
        let d = regcache_dma_delivery {
            len: d.len,
            index: d.index,
            sender_pid: d.sender_pid,
            path: path_of(d.path),
            reserved: 0,
        };
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(d) }
    })
}

/// Hand buffer `index` (from a delivery) back for the next message.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_INVALID_ARGUMENT` (index out of range).
///
/// # Safety
/// As for `regcache_dma_receiver_recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_receiver_restock(
    receiver: *mut regcache_dma_receiver,
    index: u32,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let rx = unsafe { object::live_mut::<Receiver, _>(receiver, &RECEIVER) }?;
        Ok(rx.restock(index)?)
    })
}

/// Whether a sender found no free buffer since the last call (then
/// restock what you can). Writes 1 or 0 to `out`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// As for `regcache_dma_receiver_recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_receiver_restock_requested(
    receiver: *mut regcache_dma_receiver,
    out: *mut u32,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let rx = unsafe { object::live_mut::<Receiver, _>(receiver, &RECEIVER) }?;
        let out = Out::new(out, "out")?;
        let v = u32::from(rx.restock_requested());
        // SAFETY: NULL-checked; writable (contract).
        unsafe { out.write(v) }
    })
}

/// Wait on the receiver's doorbell without taking a delivery (for loops
/// that also watch `regcache_dma_receiver_restock_requested`):
/// `timeout_ns` < 0 forever, 0 only checks, > 0 that long. `REGCACHE_OK`
/// when rung (then call `regcache_dma_receiver_recv` with timeout 0).
///
/// # Errors
/// `REGCACHE_ERR_TIMED_OUT`, `REGCACHE_ERR_NULL_ARGUMENT`,
/// `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// As for `regcache_dma_receiver_recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_receiver_wait(
    receiver: *mut regcache_dma_receiver,
    timeout_ns: i64,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let rx = unsafe { object::live_mut::<Receiver, _>(receiver, &RECEIVER) }?;
        // A zero timeout polls once (no spin: the futex wait returns at
        // once, after which the doorbell is checked again).
        let t = if timeout_ns == 0 {
            Some(Duration::ZERO)
        } else {
            timeout_of(timeout_ns)
        };
        rung_or_timed_out(rx.wait(t) == Wake::Signalled, "the receiver's doorbell")
    })
}

/// The key this receiver is bound to.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`.
///
/// # Safety
/// As for `regcache_dma_receiver_recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_receiver_key(
    receiver: *mut regcache_dma_receiver,
    out: *mut regcache_dma_key,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let rx = unsafe { object::live_mut::<Receiver, _>(receiver, &RECEIVER) }?;
        // SAFETY: NULL-checked by write_out; writable (contract).
        unsafe { write_out(out, "out", rx.key().into()) }
    })
}

/// Destroy the receiver, which unbinds it: no new send finds it;
/// in-flight sends are waited for (up to `unbind_wait_ns`); its bounce
/// segment is removed. The receiver is destroyed even on error; using it
/// again returns `REGCACHE_ERR_DESTROYED`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`, `REGCACHE_ERR_DESTROYED`,
/// `REGCACHE_ERR_UNBIND_BUSY` (sends still in flight: the buffers must
/// stay valid).
///
/// # Safety
/// As for `regcache_dma_receiver_recv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_receiver_destroy(
    receiver: *mut regcache_dma_receiver,
) -> regcache_result {
    ffi_guard(|| {
        // SAFETY: contract.
        let rx = unsafe { object::destroy::<Receiver, _>(receiver, &RECEIVER) }?;
        Ok(rx.unbind()?)
    })
}

/// The first name of `regcache_dma_receiver_destroy` (the same function),
/// kept because an exported symbol is never removed.
///
/// # Errors
/// As `regcache_dma_receiver_destroy`.
///
/// # Safety
/// As `regcache_dma_receiver_destroy`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_receiver_unbind(
    receiver: *mut regcache_dma_receiver,
) -> regcache_result {
    // SAFETY: the same contract.
    unsafe { regcache_dma_receiver_destroy(receiver) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_objects_are_tombstones() {
        let name = format!("regcache-ffi-unit-{}", std::process::id());
        let mut reg = std::ptr::null_mut();
        // SAFETY: valid C string and out pointer.
        let rc = unsafe {
            regcache_dma_registry_open(c"x".as_ptr().cast(), 9, std::ptr::null(), &raw mut reg)
        };
        assert_eq!(rc, REGCACHE_ERR_INVALID_ARGUMENT);
        assert!(reg.is_null());
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: as above.
        let rc = unsafe {
            regcache_dma_registry_open(cname.as_ptr(), 0, std::ptr::null(), &raw mut reg)
        };
        assert_eq!(rc, REGCACHE_OK);
        // SAFETY: `reg` came from open; the calls are sequential.
        unsafe {
            assert_eq!(regcache_dma_registry_destroy(reg), REGCACHE_OK);
            assert_eq!(regcache_dma_registry_destroy(reg), REGCACHE_ERR_DESTROYED);
            // The old name is the same function.
            assert_eq!(regcache_dma_registry_close(reg), REGCACHE_ERR_DESTROYED);
            let mut st = regcache_dma_stats::default();
            assert_eq!(
                regcache_dma_registry_stats(reg, &raw mut st),
                REGCACHE_ERR_DESTROYED
            );
            assert_eq!(regcache_dma_registry_unlink(cname.as_ptr()), REGCACHE_OK);
        }
    }
}
