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

use super::{REGCACHE_DMA_MAX_SOURCES, timeout_of};
use crate::object::{self, Kind, Out, array, ffi_guard, name_of, write_out};
use crate::result::{Error, regcache_result};
use regcache::AddrRange;
use regcache_result::*;
use regcache_transport::DmaKey;
use regcache_transport::dma::{
    self, Config, CopyPath, DmaBuffer, DmaStats, Receiver, Registry, SendReport,
};
use regcache_transport::{SpinPolicy, Wake};
use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

const REGISTRY: Kind = Kind {
    live: 0x6463_7265_6769_7374, // "dcregist"
    what: "registry",
};
const RECEIVER: Kind = Kind {
    live: 0x6463_7265_6376_7278, // "dcrecvrx"
    what: "receiver",
};

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

fn path_of(p: CopyPath) -> u32 {
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

fn config_of(c: &regcache_dma_config) -> Result<Config, Error> {
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

fn range_of(v: &regcache_iovec) -> Result<AddrRange, Error> {
    Ok(AddrRange::from_buffer(
        v.base.cast_const().cast::<u8>(),
        v.len,
    )?)
}

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

/// # Safety
/// As for [`object::live`].
unsafe fn registry_ref<'a>(r: *const regcache_dma_registry) -> Result<&'a Registry, Error> {
    // SAFETY: forwarded contract. The pointer is live until destroy,
    // which does not run concurrently; only shared borrows are made
    // (senders on many threads).
    unsafe { object::live(r, &REGISTRY) }
}

/// Fill `out` with the default registry tunables (environment included:
/// `REGCACHE_TRANSPORT_FORCE_BOUNCE=1`, `REGCACHE_TRANSPORT_CMA_MIN_BYTES`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_dma_config_default(
    out: *mut regcache_dma_config,
) -> regcache_result {
    ffi_guard(|| {
        let c = regcache_dma_config::from(&Config::default());
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
/// config), `REGCACHE_ERR_EXISTS`, `REGCACHE_ERR_NOT_FOUND`,
/// `REGCACHE_ERR_SHM`, `REGCACHE_ERR_SEGMENT_TOO_SMALL`,
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
            Config::default()
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
        let r = unsafe { registry_ref(registry) }?;
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
        let r = unsafe { registry_ref(registry) }?;
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
        let r = unsafe { registry_ref(registry) }?;
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

/// # Safety
/// As for [`object::live_mut`].
unsafe fn receiver_mut<'a>(rx: *mut regcache_dma_receiver) -> Result<&'a mut Receiver, Error> {
    // SAFETY: forwarded contract. Live until destroy; one thread at a
    // time uses a receiver (contract), so the `&mut` is unique.
    unsafe { object::live_mut(rx, &RECEIVER) }
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
        let rx = unsafe { receiver_mut(receiver) }?;
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
        let rx = unsafe { receiver_mut(receiver) }?;
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
        let rx = unsafe { receiver_mut(receiver) }?;
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
        let rx = unsafe { receiver_mut(receiver) }?;
        // A zero timeout polls once (no spin: the futex wait returns at
        // once, after which the doorbell is checked again).
        let t = if timeout_ns == 0 {
            Some(Duration::ZERO)
        } else {
            timeout_of(timeout_ns)
        };
        match rx.wait(t) {
            Wake::Signalled => Ok(()),
            Wake::TimedOut => Err(Error::new(
                REGCACHE_ERR_TIMED_OUT,
                "the receiver's doorbell was not rung",
            )),
        }
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
        let rx = unsafe { receiver_mut(receiver) }?;
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
