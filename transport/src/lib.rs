//! # regcache-transport — moving bytes
//!
//! Between nodes, [`rdma`]: a rendezvous over RC queue pairs (RDMA WRITE and
//! RDMA READ) whose buffers' registrations come from the cache. On one node,
//! two parts after the lguest seeds (`drivers/lguest`, 2007–2008):
//!
//! - [`shm_signal`]: doorbells in shared memory. A 192-byte descriptor with
//!   two interrupt records; a sender sets the remote `dirty` bit and issues
//!   a real wake-up (a *shared* futex) only when the remote is asleep and
//!   no wake-up is already pending. No wake-up is lost; redundant ones are
//!   suppressed. Proved by a loom model, shown by cross-process tests.
//! - [`dma`]: keyed DMA. A receiver [`binds`](dma::Registry::bind) an array
//!   of descriptors (buffers as up to [`dma::MAX_SECTIONS`] sections) to a
//!   [`DmaKey`] naming a location in shared memory; a sender
//!   [`sends`](dma::Registry::send) to the key; the library finds the bound
//!   receiver in a shared registry, takes its next free descriptor, copies
//!   with one `process_vm_writev` (single-copy cross-memory attach; from
//!   256 KiB split with a receiver waiting in `recv`, which pulls chunks
//!   with `process_vm_readv`: see [`dma`] and its `assisted` module) or
//!   bounces through shared memory when the kernel refuses, publishes the
//!   length with Release ordering and rings the receiver's doorbell.
//!
//! ## Quick start
//!
//! ```no_run
//! use regcache_transport::dma::{DmaBuffer, Registry};
//! use regcache_transport::{DmaKey, Segment};
//! use umn::AddrRange;
//!
//! // Both processes open the job's registry (a 0600 file in /dev/shm) and
//! // compute the same key from a shared file: (dev, inode, offset).
//! fn key() -> Result<DmaKey, regcache_transport::Error> {
//!     let place = Segment::open("my-job-place")?; // created by one of them
//!     DmaKey::from_fd(place.raw_fd(), 0)
//! }
//!
//! // Receiver process: bind one 64 KiB buffer, wait, consume, restock.
//! fn receiver() -> Result<(), regcache_transport::Error> {
//!     let reg = Registry::open_or_create("my-job-dma")?;
//!     let mut buf = vec![0u8; 65536];
//!     let range = AddrRange::from_buffer(buf.as_mut_ptr(), buf.len()).unwrap();
//!     // SAFETY: `buf` stays alive and unmoved until `rx` is dropped.
//!     let mut rx = unsafe { reg.bind(key()?, &[range], &[DmaBuffer::new(vec![range])])? };
//!     if let Some(d) = rx.recv(None)? {
//!         assert_eq!(&buf[..d.len as usize], b"hello");
//!         rx.restock(d.index)?;
//!     }
//!     Ok(())
//! }
//!
//! // Sender process (never the receiver's own process):
//! fn sender() -> Result<(), regcache_transport::Error> {
//!     let reg = Registry::open_or_create("my-job-dma")?;
//!     let report = reg.send(key()?, &[b"hel", b"lo"])?;
//!     assert_eq!(report.copied, 5);
//!     Ok(())
//! }
//! # let _ = (receiver, sender);
//! ```
//!
//! ## Features
//! None. `--cfg loom` swaps the shared atomics and the futex for loom's
//! models (see [`shm_signal`] and `tests/loom_shm_signal.rs`).
//!
//! ## System requirements
//! Linux (futex, `process_vm_writev`, memfd, `/dev/shm`), little-endian.
//! Single-copy needs ptrace permission over the receiver (same user and a
//! dumpable receiver, or `CAP_SYS_PTRACE`; Yama `ptrace_scope` ≤ 0 or a
//! parent/child relation); otherwise every send bounces.
//!
//! ## Thread safety
//! [`dma::Registry`] is `Send + Sync`; a [`dma::Receiver`] is owned by one
//! thread (its descriptors are its own); a [`ShmSignal`] endpoint is
//! waited on by one thread and notified by any.
//!
//! ## Resource cleanup
//! Dropping a receiver unbinds it (waiting for in-flight sends) and
//! removes its bounce segment. Registry files persist until
//! [`dma::Registry::unlink`]; bindings of dead processes are reaped on the
//! next bind.

#[doc(hidden)]
pub mod assist;
pub mod dma;
pub mod key;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod shm;
pub mod shm_signal;
mod sync;

pub use key::DmaKey;
pub use shm::Segment;
pub use shm_signal::{ShmSignal, Side, SpinPolicy, Wake};

/// Errors of the transport. One variant per failing verb or check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A shared-segment name was empty, contained `/`, or was too long.
    #[error("bad shared segment name {0:?}")]
    BadName(String),
    /// `open(2)`/`memfd_create(2)`/`unlink(2)` of a shared segment failed.
    #[error("open of shared segment failed: {0}")]
    Open(#[source] std::io::Error),
    /// `ftruncate(2)` of a new segment failed.
    #[error("ftruncate of shared segment failed: {0}")]
    Truncate(#[source] std::io::Error),
    /// `fstat(2)` or `mmap(2)` of a segment failed.
    #[error("mmap of shared segment failed: {0}")]
    Map(#[source] std::io::Error),
    /// A record does not fit in the segment or is misaligned.
    #[error("shared segment too small or record misaligned")]
    SegmentTooSmall,
    /// A shm_signal descriptor has the wrong magic or version.
    #[error("bad shm_signal descriptor: magic {magic:#x}, version {version}")]
    BadSignal {
        /// Found magic.
        magic: u32,
        /// Found version.
        version: u32,
    },
    /// A registry segment has the wrong magic, version or geometry.
    #[error("bad DMA registry header (magic {magic:#x}, version {version})")]
    BadRegistry {
        /// Found magic.
        magic: u32,
        /// Found version.
        version: u32,
    },
    /// `fstat(2)` or reading `/proc/self/maps` failed while computing a key.
    #[error("computing a DMA key failed: {0}")]
    Key(#[source] std::io::Error),
    /// The address is not in a shared, file-backed mapping.
    #[error("address {addr:#x} is not in a shared file mapping")]
    NotShared {
        /// The address looked up.
        addr: u64,
    },
    /// `bind` arguments are out of limits (counts, empty or overflowing
    /// sections, sections outside the registered ranges).
    #[error("invalid bind: {0}")]
    InvalidBind(&'static str),
    /// Another live process already bound this key.
    #[error("key {0:?} is already bound")]
    KeyInUse(DmaKey),
    /// All binding slots of the registry are taken.
    #[error("DMA registry is full")]
    RegistryFull,
    /// No process other than the sender has this key bound.
    #[error("no receiver bound to {0:?}")]
    NoReceiver(DmaKey),
    /// The receiver had no free descriptor, even after being signalled to
    /// restock and one retry (lguest's behaviour).
    #[error("receiver of {0:?} has no free descriptor")]
    NoFreeDescriptor(DmaKey),
    /// A zero-length send (`used_len == 0` means "free").
    #[error("zero-length send")]
    EmptySend,
    /// A descriptor read from shared memory failed validation. The
    /// binding is cut off (sender side) or the descriptor repaired
    /// (receiver side).
    #[error("corrupt DMA descriptor {index} of {key:?}: {reason}")]
    CorruptDescriptor {
        /// Binding key.
        key: DmaKey,
        /// Descriptor index (or `u32::MAX` for the binding header).
        index: u32,
        /// Which check failed.
        reason: &'static str,
        /// The pid recorded as the writer, when known (receiver side).
        sender_pid: u32,
    },
    /// The binding (or this sender) was cut off after corruption.
    #[error("binding of {key:?} is cut off: {reason}")]
    CutOff {
        /// Binding key.
        key: DmaKey,
        /// Why.
        reason: &'static str,
    },
    /// `process_vm_writev(2)` failed with something other than `EPERM`.
    #[error("process_vm_writev to pid {pid} failed: {source}")]
    ProcessVmWritev {
        /// The receiver.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Unbind waited too long for in-flight sends to finish.
    #[error("unbind of {0:?} timed out waiting for in-flight sends")]
    UnbindBusy(DmaKey),
    /// A `REGCACHE_TRANSPORT_*` environment variable is malformed (from the
    /// registry constructors that read the environment).
    #[error("transport configuration: {0}")]
    Config(#[from] dma::ConfigError),
}
