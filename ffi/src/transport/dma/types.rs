//! The plain C types of keyed DMA (`regcache_dma_key`, `regcache_iovec`,
//! buffers, configuration, statistics, reports, deliveries) and their
//! conversions to and from `regcache_transport::dma`'s. Every C value
//! that becomes a Rust one goes through a function here that refuses what
//! the Rust type cannot hold (`config_of`, `range_of`): C enums and flags
//! are plain integers, anything can arrive.

use crate::result::{Error, regcache_result::*};
use regcache::AddrRange;
use regcache_transport::DmaKey;
use regcache_transport::SpinPolicy;
use regcache_transport::dma::{Config, CopyPath, DmaStats, SendReport};
use std::ffi::c_void;
use std::time::Duration;

/// A DMA key: `(st_dev, st_ino, offset)` of a byte of a shared file. Two
/// processes mapping the same file (at any addresses) compute the same
/// key.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct regcache_dma_key {
    /// `st_dev` of the backing file.
    pub dev: u64,
    /// `st_ino` of the backing file.
    pub ino: u64,
    /// Byte offset in the file.
    pub offset: u64,
}

impl From<DmaKey> for regcache_dma_key {
    fn from(k: DmaKey) -> Self {
        Self {
            dev: k.dev,
            ino: k.ino,
            offset: k.offset,
        }
    }
}

impl From<regcache_dma_key> for DmaKey {
    fn from(k: regcache_dma_key) -> Self {
        Self {
            dev: k.dev,
            ino: k.ino,
            offset: k.offset,
        }
    }
}

/// A piece of memory, laid out as `struct iovec`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct regcache_iovec {
    /// First byte.
    pub base: *mut c_void,
    /// Length in bytes.
    pub len: usize,
}

/// A receive buffer for `regcache_dma_bind`: `nsections` (1 to
/// `REGCACHE_DMA_MAX_SECTIONS`) non-empty sections, filled in order.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct regcache_dma_buffer {
    /// The sections.
    pub sections: *const regcache_iovec,
    /// How many.
    pub nsections: usize,
}

/// How to open a registry (`regcache_dma_registry_open`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_dma_open_mode {
    /// Create `/dev/shm/<name>` (0600); `REGCACHE_ERR_EXISTS` if present.
    REGCACHE_DMA_CREATE = 0,
    /// Open an existing registry; `REGCACHE_ERR_NOT_FOUND` if absent.
    REGCACHE_DMA_OPEN = 1,
    /// Open, or create when absent (racing creators are safe).
    REGCACHE_DMA_OPEN_OR_CREATE = 2,
}

/// The copy path of a message (`regcache_dma_delivery.path`,
/// `regcache_dma_send_report.path`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_dma_path {
    /// One `process_vm_writev` into the receiver's buffer (single copy).
    REGCACHE_DMA_PATH_CMA = 0,
    /// Through the receiver's bounce segment (two copies).
    REGCACHE_DMA_PATH_BOUNCE = 1,
}

pub(super) fn path_of(p: CopyPath) -> u32 {
    match p {
        CopyPath::Cma => regcache_dma_path::REGCACHE_DMA_PATH_CMA as u32,
        CopyPath::Bounce => regcache_dma_path::REGCACHE_DMA_PATH_BOUNCE as u32,
    }
}

/// Registry tunables. Fill with `regcache_dma_config_default` (which
/// reads `REGCACHE_TRANSPORT_FORCE_BOUNCE`,
/// `REGCACHE_TRANSPORT_CMA_MIN_BYTES` and
/// `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES`), then adjust.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct regcache_dma_config {
    /// Never try `process_vm_writev`; always bounce (0 or 1).
    pub force_bounce: u32,
    /// Polls of the doorbell before a receiver sleeps in `recv`.
    pub spin_iters: u32,
    /// Messages shorter than this take the bounce path even when single
    /// copy is permitted (0: always try single copy). Default 8192.
    pub cma_min_bytes: u64,
    /// How long a sender with no free descriptor waits for a restock
    /// before its one retry, in ns (≥ 1). Default 100 ms.
    pub restock_wait_ns: u64,
    /// How long unbind waits for in-flight sends, in ns (≥ 1). Default
    /// 10 s.
    pub unbind_wait_ns: u64,
    /// Single-copy sends of at least this many bytes are split with a
    /// receiver waiting in `recv` (the receiver-assisted copy; see
    /// docs/C-API.md). Default 262144; `UINT64_MAX` turns it off (exactly
    /// one `process_vm_writev` per send).
    pub assist_min_bytes: u64,
    /// How long a sender waits for a live receiver to finish the chunks it
    /// took before cutting the binding off, in ns (≥ 1). Default 10 s.
    pub assist_wait_ns: u64,
    /// Reserved for tunables to come; must be 0.
    pub reserved: [u64; 2],
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl From<&Config> for regcache_dma_config {
    fn from(c: &Config) -> Self {
        Self {
            force_bounce: u32::from(c.force_bounce),
            spin_iters: c.spin.iters,
            cma_min_bytes: c.cma_min_bytes,
            restock_wait_ns: ns(c.restock_wait),
            unbind_wait_ns: ns(c.unbind_wait),
            assist_min_bytes: c.assist_min_bytes,
            assist_wait_ns: ns(c.assist_wait),
            reserved: [0; 2],
        }
    }
}

pub(super) fn config_of(c: &regcache_dma_config) -> Result<Config, Error> {
    if c.force_bounce > 1 || c.reserved != [0; 2] {
        return Err(Error::new(
            REGCACHE_ERR_INVALID_ARGUMENT,
            format!(
                "force_bounce must be 0 or 1 (is {}), reserved must be 0",
                c.force_bounce
            ),
        ));
    }
    if c.restock_wait_ns == 0 || c.unbind_wait_ns == 0 || c.assist_wait_ns == 0 {
        return Err(Error::new(
            REGCACHE_ERR_INVALID_ARGUMENT,
            "restock_wait_ns, unbind_wait_ns and assist_wait_ns must be at least 1",
        ));
    }
    Ok(Config {
        force_bounce: c.force_bounce == 1,
        // Not a field of the C struct (yet): the environment's value
        // (`REGCACHE_TRANSPORT_EAGER_MAX_BYTES`) or the default.
        eager_max_bytes: Config::default().eager_max_bytes,
        spin: SpinPolicy {
            iters: c.spin_iters,
        },
        cma_min_bytes: c.cma_min_bytes,
        restock_wait: Duration::from_nanos(c.restock_wait_ns),
        unbind_wait: Duration::from_nanos(c.unbind_wait_ns),
        assist_min_bytes: c.assist_min_bytes,
        assist_wait: Duration::from_nanos(c.assist_wait_ns),
        assist_sender_idle: false,
    })
}

/// Counters of one registry handle (this process's sends through it).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct regcache_dma_stats {
    /// Sends completed with `process_vm_writev`.
    pub cma_sends: u64,
    /// Sends completed through a bounce segment.
    pub bounce_sends: u64,
    /// `process_vm_writev` calls refused with `EPERM`.
    pub cma_refusals: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Sends that found no free descriptor on the first attempt.
    pub no_free_first_try: u64,
    /// Bindings this process cut off after failed validation.
    pub cutoffs: u64,
    /// Sends whose receiver copied at least one chunk (assisted copy).
    pub assisted_sends: u64,
    /// Chunks this process copied as a receiver, for senders.
    pub assist_chunks: u64,
    /// Reserved for counters to come; written as 0.
    pub reserved: [u64; 2],
}

impl From<DmaStats> for regcache_dma_stats {
    fn from(s: DmaStats) -> Self {
        Self {
            cma_sends: s.cma_sends,
            bounce_sends: s.bounce_sends,
            cma_refusals: s.cma_refusals,
            bytes_sent: s.bytes_sent,
            no_free_first_try: s.no_free_first_try,
            cutoffs: s.cutoffs,
            assisted_sends: s.assisted_sends,
            assist_chunks: s.assist_chunks,
            reserved: [0; 2],
        }
    }
}

/// What a successful `regcache_dma_send` did.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct regcache_dma_send_report {
    /// Bytes delivered: `min(source, destination buffer)`.
    pub copied: u64,
    /// Descriptor index used at the receiver.
    pub index: u32,
    /// A `regcache_dma_path` value.
    pub path: u32,
    /// 1 when the source was longer than the destination buffer.
    pub truncated: u32,
    /// 1 when the first attempt found no free descriptor and the retry
    /// after the restock request succeeded.
    pub retried: u32,
    /// Chunks the receiver copied itself (assisted copy); 0 when it did
    /// not help or the send was not split.
    pub receiver_chunks: u32,
    /// Reserved for fields to come; written as 0.
    pub reserved: u32,
}

impl From<SendReport> for regcache_dma_send_report {
    fn from(r: SendReport) -> Self {
        Self {
            copied: r.copied,
            index: r.index,
            path: path_of(r.path),
            truncated: u32::from(r.truncated),
            retried: u32::from(r.retried),
            receiver_chunks: r.receiver_chunks,
            reserved: 0,
        }
    }
}

/// A message delivered to a receiver.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, Default)]
pub struct regcache_dma_delivery {
    /// Bytes written into the buffer's sections, in order.
    pub len: u64,
    /// Buffer (descriptor) index, as in `regcache_dma_bind`'s array; pass
    /// it to `regcache_dma_receiver_restock` when done with the bytes.
    pub index: u32,
    /// The sender's pid.
    pub sender_pid: u32,
    /// A `regcache_dma_path` value.
    pub path: u32,
    /// Reserved; written as 0.
    pub reserved: u32,
}

pub(super) fn range_of(v: &regcache_iovec) -> Result<AddrRange, Error> {
    Ok(AddrRange::from_buffer(
        v.base.cast_const().cast::<u8>(),
        v.len,
    )?)
}
