//! Access flags and keys, in the ibverbs vocabulary.

bitflags::bitflags! {
    /// What a registration allows, with the numeric values of
    /// `enum ibv_access_flags` (rdma-core `verbs.h`) so the verbs registrar
    /// passes them through unchanged.
    ///
    /// A cached region satisfies a request when its flags are a superset of
    /// the requested ones ([`AccessFlags::satisfies`]).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AccessFlags: u32 {
        /// `IBV_ACCESS_LOCAL_WRITE`: the NIC may write the memory locally
        /// (receives, RDMA READ destinations).
        const LOCAL_WRITE = 1;
        /// `IBV_ACCESS_REMOTE_WRITE`: a peer may RDMA WRITE into it.
        const REMOTE_WRITE = 1 << 1;
        /// `IBV_ACCESS_REMOTE_READ`: a peer may RDMA READ from it.
        const REMOTE_READ = 1 << 2;
        /// `IBV_ACCESS_REMOTE_ATOMIC`: a peer may do atomics on it.
        const REMOTE_ATOMIC = 1 << 3;
    }
}

impl AccessFlags {
    /// `true` when a region registered with `self` may serve a request
    /// for `wanted`.
    pub const fn satisfies(self, wanted: AccessFlags) -> bool {
        self.bits() & wanted.bits() == wanted.bits()
    }
}

/// A local key (`lkey`) of a memory region: names it in local work requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LKey(pub u32);

/// A remote key (`rkey`) of a memory region: what a peer puts in RDMA
/// READ/WRITE work requests to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RKey(pub u32);

/// The keys of a registration, where the registrar has them (the `pin`
/// registrar has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keys {
    /// Local key.
    pub lkey: LKey,
    /// Remote key.
    pub rkey: RKey,
}
