//! # Inter-node RDMA: rendezvous over RC queue pairs
//!
//! Two processes, each with an ibverbs protection domain
//! ([`regcache::ProtectionDomain`]), connect one reliable-connection (RC)
//! queue pair each and move large messages with one-sided RDMA:
//!
//! - **put** ([`Rendezvous::send_write`] / [`Rendezvous::recv_write`]): the
//!   receiver sends a clear-to-send `CTS {addr, len, rkey}` for its
//!   registered buffer; the sender RDMA WRITEs its buffer there, waits for
//!   the completion (the data is then placed at the responder: RC
//!   acknowledges after placement), and sends `FIN {len}`.
//! - **get** ([`Rendezvous::send_read`] / [`Rendezvous::recv_read`]): the
//!   sender sends ready-to-send `RTS {addr, len, rkey}`; the receiver RDMA
//!   READs from it and sends `FIN {len}`, after which the sender may reuse
//!   its buffer.
//!
//! The control messages, and the connection set-up (QPN, PSN, GID, port
//! LID), travel over a TCP stream the caller connects (loopback, the VM's
//! own address, or a second node): see [`RcConnection::connect`]. Each
//! control message is a fixed 32-byte little-endian record (`wire`).
//!
//! ## Where the keys come from
//!
//! The transport does not register memory: the caller passes lkeys and
//! rkeys, taken from a `regcache::Cache<VerbsRegistrar>` handle (the
//! rendezvous path the design asks for) or, for comparison, from a
//! registration made per message. The registrar must register in the same
//! protection domain as the queue pair ([`RcConnection::protection_domain`]).
//!
//! ## Never a hang
//!
//! Every wait is bounded: completions are polled until
//! [`RdmaConfig::cq_timeout`], control messages are read with a socket
//! timeout, and an end-of-stream is [`RdmaError::PeerDisconnected`]. A peer
//! that vanishes mid-transfer makes its queue pair stop acknowledging; the
//! local RC queue pair retries (`timeout`/`retry_cnt`) and completes the
//! request with `IBV_WC_RETRY_EXC_ERR`, reported as
//! [`RdmaError::Completion`]. After any error the connection is moved to
//! the error state, which flushes outstanding requests, so no DMA into the
//! caller's memory can still be pending when the error is returned; the
//! connection cannot be used again.
//!
//! ## GID
//!
//! RoCE needs a GID per side. Unless [`RdmaConfig::gid_index`] says
//! otherwise the first IPv4-mapped GID (`::ffff:a.b.c.d`) of the port is
//! used — index 1 on SoftRoCE in the VM tier.

mod qp;
mod rendezvous;
mod wire;

pub use qp::{ConnectionInfo, RcConnection};
pub use rendezvous::{RemoteBuffer, Rendezvous};

use std::time::Duration;

/// Why an RDMA operation failed. One variant per failing step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RdmaError {
    /// A verb failed (`ibv_create_cq`, `ibv_create_qp`, `ibv_modify_qp`,
    /// `ibv_query_port`, `ibv_query_gid`, `ibv_post_send`, `ibv_poll_cq`).
    #[error("{call} failed: {source}")]
    Verbs {
        /// The C call.
        call: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A work request completed with an error status (`ibv_wc_status`),
    /// e.g. 12 = `IBV_WC_RETRY_EXC_ERR` when the peer is gone, 10 =
    /// `IBV_WC_REM_ACCESS_ERR` for a bad rkey or range.
    #[error("{op} completed with status {status} ({name}), vendor error {vendor_err:#x}")]
    Completion {
        /// `"RDMA WRITE"` or `"RDMA READ"`.
        op: &'static str,
        /// The `ibv_wc_status` value.
        status: u32,
        /// Its name.
        name: &'static str,
        /// The provider's vendor error.
        vendor_err: u32,
    },
    /// No completion arrived within [`RdmaConfig::cq_timeout`].
    #[error("{op}: no completion within {timeout:?}")]
    Timeout {
        /// The operation waited for.
        op: &'static str,
        /// How long was waited.
        timeout: Duration,
    },
    /// The control stream ended: the peer closed or died.
    #[error("peer disconnected during {during}")]
    PeerDisconnected {
        /// What was going on.
        during: &'static str,
    },
    /// The control stream failed (including a read timeout).
    #[error("control stream, {during}: {source}")]
    Control {
        /// What was going on.
        during: &'static str,
        /// The socket error.
        source: std::io::Error,
    },
    /// The peer sent something this protocol does not allow (wrong message
    /// type, a buffer too small, a bad connection record).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A local buffer given by the caller is unusable (empty, or longer
    /// than the remote buffer).
    #[error("bad buffer: {0}")]
    BadBuffer(String),
}

/// Connection parameters.
#[derive(Debug, Clone)]
pub struct RdmaConfig {
    /// The HCA port (1-based).
    pub port: u8,
    /// The GID index; `None` = the first IPv4-mapped GID, else 0.
    pub gid_index: Option<u8>,
    /// Longest wait for one completion.
    pub cq_timeout: Duration,
    /// Longest wait for one control message.
    pub control_timeout: Duration,
    /// RC local ACK timeout exponent (4.096 µs × 2^n), `ibv_qp_attr.timeout`.
    pub ack_timeout: u8,
    /// RC retry count before `IBV_WC_RETRY_EXC_ERR`.
    pub retry_cnt: u8,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            port: 1,
            gid_index: None,
            // Generous: TCG emulation is 10-50x slower than hardware.
            cq_timeout: Duration::from_secs(30),
            control_timeout: Duration::from_secs(60),
            // 4.096 µs × 2^14 ≈ 67 ms per try, 7 tries: a dead peer is
            // detected in about half a second of device time.
            ack_timeout: 14,
            retry_cnt: 7,
        }
    }
}
