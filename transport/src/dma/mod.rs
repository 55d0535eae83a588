//! # Keyed DMA (after lguest's `bind_dma` / `send_dma`)
//!
//! A receiver *binds* an array of receive buffers to a [`DmaKey`] (a
//! location in shared memory both sides can name); a sender *sends* to the
//! key; the library finds the bound receiver in a shared registry, takes
//! its next free descriptor, copies by the path its size calls for
//! (`config`, "Choosing a copy path by size": small messages through shared
//! memory, inline in the descriptor up to [`INLINE_BYTES`]; larger ones
//! with one `process_vm_writev`, split with the receiver when large, or
//! bounced through shared memory when the kernel refuses), publishes the
//! length with Release ordering and rings the receiver's doorbell.
//!
//! One shared segment per job (`/dev/shm/<name>`, created `O_EXCL` mode
//! 0600) holds a [`RegistryHeader`] and [`NSLOTS`] [`BindingSlot`]s. A
//! binding is a slot: the receiver's pid, the key, up to [`MAX_RANGES`]
//! registered ranges, up to [`MAX_DESCS`] [`DmaDesc`]s of up to
//! [`MAX_SECTIONS`] `{addr, len}` sections each, a checksum over all of
//! that, and two doorbells: `arrived`, which only the receiver waits on,
//! and `restocked`, which any number of senders wait on.
//!
//! The chapters of the protocol live with their code:
//!
//! - `layout`: the fixed-width records in shared memory, their size and
//!   offset assertions, the checksums, the orderings of every shared field
//!   ("Atomics"), and the typed slot index and cut-off reason read from
//!   shared memory.
//! - `proc_id`: a process named by pid and start time, so that a reused
//!   pid does not pass for a dead holder of the lock or of a descriptor.
//! - `registry`: the [`Registry`] handle (create, open, the lock), keys
//!   to bindings, announced sends against unbind, and "Validation and
//!   cutting off".
//! - `receiver`: bind, the [`Receiver`] (receive, restock, unbind).
//! - `send`: "A send": the sender's claim, copy and publish path, its
//!   cache of validated bindings and the eager path for small messages.
//! - `assisted`: "Receiver-assisted copy": large single copies split
//!   between sender and a waiting receiver.
//! - `cma`: the only caller of `process_vm_writev`/`process_vm_readv`.
//! - `config`: [`Config`] and its `REGCACHE_TRANSPORT_*` variables.
//!
//! Everything in the registry can be scribbled on by any process that maps
//! it, so nothing read from it is trusted: see `registry`, "Validation
//! and cutting off".

mod assisted;
mod cma;
mod config;
mod layout;
mod proc_id;
mod receiver;
mod registry;
mod send;

pub use config::{ASSIST_MIN_BYTES, Config, ConfigError, EAGER_MAX_BYTES, PathChoice};
pub use layout::{
    AssistJob, BindingSlot, DmaDesc, INLINE_BYTES, MAX_BANNED, MAX_DESCS, MAX_RANGES, MAX_SECTIONS,
    MAX_SENDERS, NSLOTS, REGISTRY_BYTES, RegistryHeader, SharedSection,
};
pub use receiver::{Delivery, DmaBuffer, Receiver};
pub use registry::{DmaStats, Registry};
pub use send::{CopyPath, SendReport};

#[cfg(doc)]
use crate::key::DmaKey;
