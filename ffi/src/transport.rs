//! `regcache_dma_*`, `regcache_shm_signal_*`: the intra-node transport
//! (`regcache-transport`'s keyed DMA and shm_signal doorbells).
//!
//! Two chapters: [`dma`] (keys, registries, receivers: single-copy
//! messages between processes) and [`shm_signal`] (doorbells). What they
//! share is here: the size limits the header publishes, the mapping of
//! the transport's errors onto `regcache_result`, and the C timeout
//! convention.
//!
//! Their objects (`regcache_dma_registry`, `regcache_dma_receiver`,
//! `regcache_shm_signal`) are objects of the FFI object layer
//! (`object.rs`), like a cache or a notifier: the C pointer names a
//! tombstone, so destroying twice or using a destroyed object answers
//! `REGCACHE_ERR_DESTROYED`. Their teardown verb is `_destroy`; the
//! first names (`_close`, `regcache_dma_receiver_unbind`) stay as
//! aliases of the same functions.

use crate::result::Error;
use crate::result::regcache_result::*;
use std::time::Duration;

mod dma;
mod shm_signal;

pub use dma::*;
pub use shm_signal::*;

/// Size in bytes of a shm_signal descriptor in shared memory (place it at
/// a 64-byte aligned offset of zero-filled memory).
pub const REGCACHE_SHM_SIGNAL_SIZE: usize = 192;
/// Most registered ranges per `regcache_dma_bind`.
pub const REGCACHE_DMA_MAX_RANGES: usize = 4;
/// Most buffers (descriptors) per `regcache_dma_bind`.
pub const REGCACHE_DMA_MAX_BUFFERS: usize = 32;
/// Most sections per buffer.
pub const REGCACHE_DMA_MAX_SECTIONS: usize = 8;
/// Most source pieces per `regcache_dma_send` (`IOV_MAX`).
pub const REGCACHE_DMA_MAX_SOURCES: usize = 1024;

const _: () = {
    assert!(REGCACHE_SHM_SIGNAL_SIZE == regcache_transport::ShmSignal::SIZE);
    assert!(REGCACHE_DMA_MAX_RANGES == regcache_transport::dma::MAX_RANGES);
    assert!(REGCACHE_DMA_MAX_BUFFERS == regcache_transport::dma::MAX_DESCS);
    assert!(REGCACHE_DMA_MAX_SECTIONS == regcache_transport::dma::MAX_SECTIONS);
};

impl From<regcache_transport::Error> for Error {
    fn from(e: regcache_transport::Error) -> Self {
        use regcache_transport::Error as E;
        let code = match &e {
            E::BadName(_) | E::InvalidBind(_) => REGCACHE_ERR_INVALID_ARGUMENT,
            E::Open(io) => match io.raw_os_error() {
                Some(libc::EEXIST) => REGCACHE_ERR_EXISTS,
                Some(libc::ENOENT) => REGCACHE_ERR_NOT_FOUND,
                _ => REGCACHE_ERR_SHM,
            },
            E::Truncate(_) | E::Map(_) => REGCACHE_ERR_SHM,
            E::SegmentTooSmall => REGCACHE_ERR_SEGMENT_TOO_SMALL,
            E::BadSignal { .. } | E::BadRegistry { .. } => REGCACHE_ERR_BAD_SHARED_LAYOUT,
            E::Key(_) => REGCACHE_ERR_KEY,
            E::NotShared { .. } => REGCACHE_ERR_NOT_SHARED,
            E::KeyInUse(_) => REGCACHE_ERR_KEY_IN_USE,
            E::RegistryFull => REGCACHE_ERR_REGISTRY_FULL,
            E::NoReceiver(_) => REGCACHE_ERR_NO_RECEIVER,
            E::NoFreeDescriptor(_) => REGCACHE_ERR_NO_FREE_DESCRIPTOR,
            E::EmptySend => REGCACHE_ERR_INVALID_RANGE,
            E::CorruptDescriptor { .. } => REGCACHE_ERR_CORRUPT_DESCRIPTOR,
            E::CutOff { .. } => REGCACHE_ERR_CUT_OFF,
            E::ProcessVmWritev { .. } => REGCACHE_ERR_COPY_FAILED,
            E::UnbindBusy(_) => REGCACHE_ERR_UNBIND_BUSY,
            // As a malformed `REGCACHE_*` cache variable.
            E::Config(_) => REGCACHE_ERR_CONFIG_ENV,
            _ => REGCACHE_ERR_TRANSPORT,
        };
        Error::new(code, e.to_string())
    }
}

/// The C timeout convention, `timeout_ns`: < 0 forever, else that long.
pub(crate) fn timeout_of(timeout_ns: i64) -> Option<Duration> {
    u64::try_from(timeout_ns).ok().map(Duration::from_nanos)
}

/// A doorbell wait's outcome as the C API reports it: `Ok` when it was
/// rung, else `REGCACHE_ERR_TIMED_OUT` saying which doorbell was not.
pub(crate) fn rung_or_timed_out(rung: bool, doorbell: &str) -> Result<(), Error> {
    if rung {
        Ok(())
    } else {
        Err(Error::new(
            REGCACHE_ERR_TIMED_OUT,
            format!("{doorbell} was not rung"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::regcache_result;
    use regcache_transport::DmaKey;
    use regcache_transport::Error as E;

    fn code(e: E) -> regcache_result {
        Error::from(e).code
    }

    #[test]
    fn every_transport_error_has_its_code() {
        let k = DmaKey {
            dev: 1,
            ino: 2,
            offset: 3,
        };
        let io = |n| std::io::Error::from_raw_os_error(n);
        let cases = [
            (E::BadName("a/b".into()), REGCACHE_ERR_INVALID_ARGUMENT),
            (E::Open(io(libc::EEXIST)), REGCACHE_ERR_EXISTS),
            (E::Open(io(libc::ENOENT)), REGCACHE_ERR_NOT_FOUND),
            (E::Open(io(libc::EACCES)), REGCACHE_ERR_SHM),
            (E::Truncate(io(libc::ENOSPC)), REGCACHE_ERR_SHM),
            (E::Map(io(libc::ENOMEM)), REGCACHE_ERR_SHM),
            (E::SegmentTooSmall, REGCACHE_ERR_SEGMENT_TOO_SMALL),
            (
                E::BadSignal {
                    magic: 0,
                    version: 0,
                },
                REGCACHE_ERR_BAD_SHARED_LAYOUT,
            ),
            (
                E::BadRegistry {
                    magic: 0,
                    version: 0,
                },
                REGCACHE_ERR_BAD_SHARED_LAYOUT,
            ),
            (E::Key(io(libc::EBADF)), REGCACHE_ERR_KEY),
            (E::NotShared { addr: 1 }, REGCACHE_ERR_NOT_SHARED),
            (E::InvalidBind("x"), REGCACHE_ERR_INVALID_ARGUMENT),
            (
                E::Config(regcache_transport::dma::ConfigError {
                    variable: "REGCACHE_TRANSPORT_FORCE_BOUNCE",
                    value: "2".into(),
                    expected: "0 or 1",
                }),
                REGCACHE_ERR_CONFIG_ENV,
            ),
            (E::KeyInUse(k), REGCACHE_ERR_KEY_IN_USE),
            (E::RegistryFull, REGCACHE_ERR_REGISTRY_FULL),
            (E::NoReceiver(k), REGCACHE_ERR_NO_RECEIVER),
            (E::NoFreeDescriptor(k), REGCACHE_ERR_NO_FREE_DESCRIPTOR),
            (E::EmptySend, REGCACHE_ERR_INVALID_RANGE),
            (
                E::CorruptDescriptor {
                    key: k,
                    index: 0,
                    reason: "x",
                    sender_pid: 0,
                },
                REGCACHE_ERR_CORRUPT_DESCRIPTOR,
            ),
            (
                E::CutOff {
                    key: k,
                    reason: "x",
                },
                REGCACHE_ERR_CUT_OFF,
            ),
            (
                E::ProcessVmWritev {
                    pid: 1,
                    source: io(libc::ESRCH),
                },
                REGCACHE_ERR_COPY_FAILED,
            ),
            (E::UnbindBusy(k), REGCACHE_ERR_UNBIND_BUSY),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            assert_eq!(code(e), want, "{text}");
        }
    }
}
