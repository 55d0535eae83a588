//! One connected RC queue pair and its completion queue.
//!
//! Set-up follows the verbs state machine (IBTA vol. 1, ch. 10.3; the
//! `ibv_modify_qp(3)` man page): RESET → INIT (port, pkey, remote access)
//! → RTR (path MTU, destination QPN, receive PSN, address vector with the
//! peer's GID, responder resources for RDMA READ) → RTS (send PSN, ACK
//! timeout and retries, initiator depth). Each side sends its
//! [`ConnectionInfo`] on the control stream before reading the peer's, so
//! the exchange cannot deadlock (the 32-byte record fits any socket
//! buffer).

use super::wire;
use super::{RdmaConfig, RdmaError};
use regcache::{AddrRange, LKey, ProtectionDomain, RKey};
use sideway::ibverbs::AccessFlags as SwAccess;
use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::{
    BasicCompletionQueue, GenericCompletionQueue, PollCompletionQueueError, WorkCompletionStatus,
};
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState,
    SetScatterGatherEntry, WorkRequestFlags,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one side tells the other to connect: queue pair number, first
/// packet sequence number, port LID (0 on RoCE) and GID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Queue pair number (24 bits).
    pub qpn: u32,
    /// First packet sequence number (24 bits).
    pub psn: u32,
    /// Port LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Port GID at the chosen index.
    pub gid: [u8; 16],
}

/// Largest single work request: RC messages may be up to 2^31 bytes.
const MAX_WR: u64 = 1 << 30;

/// A connected RC queue pair. See the module docs of [`crate::rdma`].
pub struct RcConnection {
    // Field order is drop order: the QP before the CQ it uses, both
    // before the protection domain.
    qp: BasicQueuePair,
    cq: Arc<BasicCompletionQueue>,
    pd: ProtectionDomain,
    local: ConnectionInfo,
    remote: ConnectionInfo,
    cfg: RdmaConfig,
    next_wr_id: u64,
    broken: bool,
    /// The control stream watched for end-of-stream during a wait.
    watch: Option<RawFd>,
}

/// How often a waiting transfer looks at the control stream.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// `true` when the peer closed (or reset) the stream `fd`: a
/// non-blocking `MSG_PEEK` sees end-of-stream or a connection error.
/// Pending data (the peer's next control message) is left in place.
fn peer_closed(fd: RawFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv writes at most 1 byte into `b`; MSG_PEEK leaves the
    // data queued and MSG_DONTWAIT never blocks. `fd` is the caller's open
    // socket, borrowed for the duration of the transfer.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 {
        return true;
    }
    if n < 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        return !matches!(e, Some(libc::EAGAIN) | Some(libc::EINTR));
    }
    false
}

impl std::fmt::Debug for RcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RcConnection")
            .field("device", &self.pd.device().name)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

fn verbs_err(call: &'static str, e: &(dyn std::error::Error + 'static)) -> RdmaError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return RdmaError::Verbs {
                    call,
                    source: std::io::Error::from_raw_os_error(code),
                };
            }
        }
        cur = err.source();
    }
    RdmaError::Verbs {
        call,
        // sideway's error kinds are `#[error(transparent)]` around the
        // io::Error, hiding it from `source()`; Debug keeps the OS code.
        source: std::io::Error::other(format!("{e:?}")),
    }
}

fn random_psn() -> u32 {
    // Any 24-bit value works; vary it per connection so a stale packet of
    // an earlier connection is not taken for a fresh one.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (t ^ std::process::id().rotate_left(12)) & 0x00ff_ffff
}

fn is_ipv4_mapped(g: &[u8; 16]) -> bool {
    g[..10].iter().all(|&b| b == 0) && g[10] == 0xff && g[11] == 0xff
}

impl RcConnection {
    /// Create an RC queue pair in `pd`, exchange [`ConnectionInfo`] with
    /// the peer over `control`, and bring the queue pair to RTS.
    /// Both sides call this (it is symmetric).
    ///
    /// # Errors
    /// [`RdmaError::Verbs`] naming the failing verb; control-stream errors
    /// ([`RdmaError::PeerDisconnected`], [`RdmaError::Control`]);
    /// [`RdmaError::Protocol`] for a malformed peer record.
    pub fn connect<S: Read + Write>(
        pd: &ProtectionDomain,
        control: &mut S,
        cfg: RdmaConfig,
    ) -> Result<RcConnection, RdmaError> {
        let ctx = pd.context();
        let port_attr = ctx
            .query_port(cfg.port)
            .map_err(|e| verbs_err("ibv_query_port", &e))?;
        let gid_index = match cfg.gid_index {
            Some(i) => i,
            None => {
                let len = u8::try_from(port_attr.gid_tbl_len().clamp(0, 255)).unwrap_or(0);
                (0..len)
                    .find(|&i| {
                        ctx.query_gid(cfg.port, u32::from(i))
                            .is_ok_and(|g| is_ipv4_mapped(&g.raw))
                    })
                    .unwrap_or(0)
            }
        };
        let gid = ctx
            .query_gid(cfg.port, u32::from(gid_index))
            .map_err(|e| verbs_err("ibv_query_gid", &e))?;

        let cq = ctx
            .create_cq_builder()
            .setup_cqe(64)
            .build()
            .map_err(|e| verbs_err("ibv_create_cq", &e))?;
        let mut qp = pd
            .as_sideway()
            .create_qp_builder()
            .setup_send_cq(GenericCompletionQueue::from(Arc::clone(&cq)))
            .setup_recv_cq(GenericCompletionQueue::from(Arc::clone(&cq)))
            .setup_max_send_wr(16)
            .setup_max_recv_wr(1)
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .build()
            .map_err(|e| verbs_err("ibv_create_qp", &e))?;

        let access = SwAccess::LocalWrite | SwAccess::RemoteWrite | SwAccess::RemoteRead;
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::Init)
            .setup_pkey_index(0)
            .setup_port(cfg.port)
            .setup_access_flags(access);
        qp.modify(&attr)
            .map_err(|e| verbs_err("ibv_modify_qp(INIT)", &e))?;

        let local = ConnectionInfo {
            qpn: qp.qp_number(),
            psn: random_psn(),
            lid: port_attr.lid(),
            gid: gid.raw,
        };
        wire::send(
            control,
            &wire::encode_connect(local.qpn, local.psn, local.lid, local.gid),
            "connection set-up",
        )?;
        let (qpn, psn, lid, rgid) =
            wire::decode_connect(&wire::recv(control, "connection set-up")?)?;
        let remote = ConnectionInfo {
            qpn,
            psn,
            lid,
            gid: rgid,
        };

        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::ReadyToReceive)
            .setup_path_mtu(port_attr.active_mtu())
            .setup_dest_qp_num(remote.qpn)
            .setup_rq_psn(remote.psn)
            .setup_max_dest_read_atomic(1)
            .setup_min_rnr_timer(12);
        let mut ah = AddressHandleAttribute::new();
        ah.setup_dest_lid(remote.lid)
            .setup_port(cfg.port)
            .setup_service_level(0)
            .setup_grh_src_gid_index(gid_index)
            .setup_grh_dest_gid(&Gid { raw: remote.gid })
            .setup_grh_hop_limit(1);
        attr.setup_address_vector(&ah);
        qp.modify(&attr)
            .map_err(|e| verbs_err("ibv_modify_qp(RTR)", &e))?;

        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::ReadyToSend)
            .setup_sq_psn(local.psn)
            .setup_timeout(cfg.ack_timeout)
            .setup_retry_cnt(cfg.retry_cnt)
            .setup_rnr_retry(7)
            .setup_max_read_atomic(1);
        qp.modify(&attr)
            .map_err(|e| verbs_err("ibv_modify_qp(RTS)", &e))?;

        Ok(RcConnection {
            qp,
            cq,
            pd: pd.clone(),
            local,
            remote,
            cfg,
            next_wr_id: 1,
            broken: false,
            watch: None,
        })
    }

    /// The protection domain the queue pair lives in: register buffers
    /// here (or in a cache whose registrar uses it).
    pub fn protection_domain(&self) -> &ProtectionDomain {
        &self.pd
    }

    /// This side's connection record.
    pub fn local(&self) -> ConnectionInfo {
        self.local
    }

    /// The peer's connection record.
    pub fn remote(&self) -> ConnectionInfo {
        self.remote
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &RdmaConfig {
        &self.cfg
    }

    /// RDMA WRITE `local` (registered under `lkey`) to the peer's
    /// `[remote_addr, remote_addr + local.len())` under `rkey`, and wait
    /// for the completion.
    ///
    /// # Safety
    /// `local` must stay mapped and valid for reads of `local.len()` bytes
    /// until this call returns, and must lie inside the registration
    /// `lkey` names. (The call waits for completion or flushes the queue
    /// pair, so no DMA outlives it.)
    ///
    /// # Errors
    /// See [`RdmaError`]: a peer gone mid-transfer is
    /// [`RdmaError::Completion`] (retries exceeded) or
    /// [`RdmaError::Timeout`]; the connection is then broken.
    pub unsafe fn rdma_write(
        &mut self,
        local: AddrRange,
        lkey: LKey,
        remote_addr: u64,
        rkey: RKey,
    ) -> Result<(), RdmaError> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.transfer(Op::Write, local, lkey, remote_addr, rkey) }
    }

    /// RDMA READ the peer's `[remote_addr, remote_addr + local.len())`
    /// under `rkey` into `local` (registered under `lkey` with
    /// `LOCAL_WRITE`), and wait for the completion.
    ///
    /// # Safety
    /// `local` must stay mapped and valid for writes of `local.len()`
    /// bytes until this call returns, with no Rust reference to it alive
    /// (the NIC writes it), and must lie inside the registration `lkey`
    /// names.
    ///
    /// # Errors
    /// As [`RcConnection::rdma_write`].
    pub unsafe fn rdma_read(
        &mut self,
        local: AddrRange,
        lkey: LKey,
        remote_addr: u64,
        rkey: RKey,
    ) -> Result<(), RdmaError> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.transfer(Op::Read, local, lkey, remote_addr, rkey) }
    }

    /// [`RcConnection::rdma_write`] or [`RcConnection::rdma_read`] (`op`)
    /// that also watches `control` while it waits for the completion.
    ///
    /// # Safety
    /// As [`RcConnection::rdma_write`] / [`RcConnection::rdma_read`].
    pub(crate) unsafe fn transfer_watched(
        &mut self,
        op: Op,
        local: AddrRange,
        lkey: LKey,
        remote_addr: u64,
        rkey: RKey,
        control: &TcpStream,
    ) -> Result<(), RdmaError> {
        self.watch = Some(control.as_raw_fd());
        // SAFETY: forwarded from this function's contract.
        let r = unsafe { self.transfer(op, local, lkey, remote_addr, rkey) };
        self.watch = None;
        r
    }

    /// # Safety
    /// As [`RcConnection::rdma_write`] / [`RcConnection::rdma_read`].
    unsafe fn transfer(
        &mut self,
        op: Op,
        local: AddrRange,
        lkey: LKey,
        remote_addr: u64,
        rkey: RKey,
    ) -> Result<(), RdmaError> {
        if self.broken {
            return Err(RdmaError::Protocol(
                "connection is in the error state after an earlier failure".into(),
            ));
        }
        if local.is_empty() {
            return Err(RdmaError::BadBuffer("empty local buffer".into()));
        }
        if remote_addr.checked_add(local.len()).is_none() {
            return Err(RdmaError::BadBuffer(format!(
                "remote range {remote_addr:#x}+{} overflows",
                local.len()
            )));
        }
        let mut off = 0;
        while off < local.len() {
            let n = (local.len() - off).min(MAX_WR);
            let id = self.next_wr_id;
            self.next_wr_id += 1;
            let mut guard = self.qp.start_post_send();
            let wr = guard.construct_wr(id, WorkRequestFlags::Signaled);
            let wr = match op {
                Op::Write => wr.setup_write(rkey.0, remote_addr + off),
                Op::Read => wr.setup_read(rkey.0, remote_addr + off),
            };
            // SAFETY: the caller guarantees [local.start()+off, +n) is
            // mapped, covered by `lkey`, and stays so until we return; we
            // wait for this request's completion (or flush it) below.
            unsafe { wr.setup_sge(lkey.0, local.start() + off, n as u32) };
            if let Err(e) = guard.post() {
                let err = verbs_err("ibv_post_send", &e);
                self.break_connection();
                return Err(err);
            }
            if let Err(e) = self.wait(id, op.name()) {
                self.break_connection();
                return Err(e);
            }
            off += n;
        }
        Ok(())
    }

    /// Poll until the completion of `id` arrives or the timeout passes.
    /// While a control stream is watched, a peer that closed it (exited,
    /// crashed) ends the wait at once with [`RdmaError::PeerDisconnected`]
    /// instead of after the RC retries run out.
    fn wait(&mut self, id: u64, op: &'static str) -> Result<(), RdmaError> {
        let deadline = Instant::now() + self.cfg.cq_timeout;
        let mut spins = 0u32;
        let mut next_watch = Instant::now() + WATCH_EVERY;
        loop {
            match self.cq.start_poll() {
                Ok(poller) => {
                    for wc in poller {
                        let status = wc.status();
                        if status != WorkCompletionStatus::Success as u32 {
                            return Err(RdmaError::Completion {
                                op,
                                status,
                                name: status_name(status),
                                vendor_err: wc.vendor_err(),
                            });
                        }
                        if wc.wr_id() == id {
                            return Ok(());
                        }
                    }
                }
                Err(PollCompletionQueueError::CompletionQueueEmpty) => {}
                Err(e) => return Err(verbs_err("ibv_poll_cq", &e)),
            }
            let now = Instant::now();
            if let Some(fd) = self.watch.filter(|_| now >= next_watch) {
                next_watch = now + WATCH_EVERY;
                if peer_closed(fd) {
                    return Err(RdmaError::PeerDisconnected { during: op });
                }
            }
            if now >= deadline {
                return Err(RdmaError::Timeout {
                    op,
                    timeout: self.cfg.cq_timeout,
                });
            }
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                // Software RDMA (rxe) runs in kernel threads that need the CPU.
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// Move the QP to ERROR (flushing every outstanding request) and drain
    /// the CQ, bounded, so no DMA into the caller's memory is pending.
    pub(crate) fn break_connection(&mut self) {
        if self.broken {
            return;
        }
        self.broken = true;
        let mut attr = QueuePairAttribute::new();
        attr.setup_state(QueuePairState::Error);
        if let Err(e) = self.qp.modify(&attr) {
            log::error!("ibv_modify_qp(ERR) failed: {e}");
        }
        // Flushed completions arrive asynchronously (rxe completes them
        // from a work queue): drain until the CQ stays empty for 100 ms.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match self.cq.start_poll() {
                Ok(poller) => {
                    poller.for_each(drop);
                    quiet_since = Instant::now();
                }
                Err(PollCompletionQueueError::CompletionQueueEmpty) => {
                    if quiet_since.elapsed() >= Duration::from_millis(100) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
    }

    /// `true` after an error: the connection cannot be used again.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

/// Which RDMA operation a transfer posts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Write,
    Read,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Write => "RDMA WRITE",
            Op::Read => "RDMA READ",
        }
    }
}

/// Names of `enum ibv_wc_status` (rdma-core `verbs.h`).
fn status_name(s: u32) -> &'static str {
    const NAMES: [&str; 23] = [
        "SUCCESS",
        "LOC_LEN_ERR",
        "LOC_QP_OP_ERR",
        "LOC_EEC_OP_ERR",
        "LOC_PROT_ERR",
        "WR_FLUSH_ERR",
        "MW_BIND_ERR",
        "BAD_RESP_ERR",
        "LOC_ACCESS_ERR",
        "REM_INV_REQ_ERR",
        "REM_ACCESS_ERR",
        "REM_OP_ERR",
        "RETRY_EXC_ERR",
        "RNR_RETRY_EXC_ERR",
        "LOC_RDD_VIOL_ERR",
        "REM_INV_RD_REQ_ERR",
        "REM_ABORT_ERR",
        "INV_EECN_ERR",
        "INV_EEC_STATE_ERR",
        "FATAL_ERR",
        "RESP_TIMEOUT_ERR",
        "GENERAL_ERR",
        "TM_ERR",
    ];
    NAMES.get(s as usize).copied().unwrap_or("unknown")
}
