//! # regcache-transport — moving bytes
//!
//! Skeleton. Nothing is implemented yet; the intra-node path (shm_signal,
//! keyed DMA) and the inter-node RDMA rendezvous over RC queue pairs are
//! described in `../shared/DESIGN.md` and land with their issues.
pub mod rdma;
