//! The rendezvous protocols (put with RDMA WRITE, get with RDMA READ) on
//! one [`RcConnection`] plus its TCP control stream.

use super::qp::Op;
use super::wire::{self, Control, Kind};
use super::{RcConnection, RdmaConfig, RdmaError};
use regcache::{AddrRange, LKey, ProtectionDomain, RKey};
use std::net::TcpStream;

/// A peer's registered buffer as announced in a CTS or RTS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteBuffer {
    /// Start address in the peer's address space.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Remote key of the registration covering it.
    pub rkey: RKey,
}

/// A connected queue pair with its control stream. Each transfer is one
/// message; every step is bounded in time (see the module docs).
#[derive(Debug)]
pub struct Rendezvous {
    conn: RcConnection,
    control: TcpStream,
    seq: u64,
}

impl Rendezvous {
    /// Connect an RC queue pair in `pd` with the peer at the other end of
    /// `control` (both sides call this), and set the control stream's read
    /// timeout to [`RdmaConfig::control_timeout`].
    ///
    /// # Errors
    /// As [`RcConnection::connect`]; [`RdmaError::Control`] if the socket
    /// options cannot be set.
    pub fn connect(
        pd: &ProtectionDomain,
        mut control: TcpStream,
        cfg: RdmaConfig,
    ) -> Result<Rendezvous, RdmaError> {
        let during = "setting socket options";
        control
            .set_read_timeout(Some(cfg.control_timeout))
            .and_then(|()| control.set_write_timeout(Some(cfg.control_timeout)))
            .and_then(|()| control.set_nodelay(true))
            .map_err(|source| RdmaError::Control { during, source })?;
        let conn = RcConnection::connect(pd, &mut control, cfg)?;
        Ok(Rendezvous {
            conn,
            control,
            seq: 0,
        })
    }

    /// The queue pair.
    pub fn connection(&self) -> &RcConnection {
        &self.conn
    }

    fn send_ctl(
        &mut self,
        kind: Kind,
        buf: RemoteBuffer,
        during: &'static str,
    ) -> Result<(), RdmaError> {
        let c = Control {
            kind,
            rkey: buf.rkey.0,
            addr: buf.addr,
            len: buf.len,
            seq: self.seq,
        };
        wire::send(&mut self.control, &c.encode(), during)
    }

    fn recv_ctl(&mut self, want: Kind, during: &'static str) -> Result<Control, RdmaError> {
        let c = Control::decode(&wire::recv(&mut self.control, during)?)?;
        if c.kind != want {
            return Err(RdmaError::Protocol(format!(
                "expected {want:?}, got {:?} during {during}",
                c.kind
            )));
        }
        if c.seq != self.seq {
            return Err(RdmaError::Protocol(format!(
                "message sequence {} where {} was expected",
                c.seq, self.seq
            )));
        }
        Ok(c)
    }

    /// Announce our buffer `buf` (under `rkey`) in a `kind` message (CTS
    /// for a put, RTS for a get) and wait for the peer's FIN.
    fn announce(&mut self, kind: Kind, buf: AddrRange, rkey: RKey) -> Result<Control, RdmaError> {
        let during = if kind == Kind::Cts {
            ["put: sending CTS", "put: waiting for FIN"]
        } else {
            ["get: sending RTS", "get: waiting for FIN"]
        };
        let ours = RemoteBuffer {
            addr: buf.start(),
            len: buf.len(),
            rkey,
        };
        self.send_ctl(kind, ours, during[0])?;
        self.recv_ctl(Kind::Fin, during[1])
    }

    /// Send FIN for `len` bytes; returns `len`.
    fn send_fin(&mut self, len: u64, during: &'static str) -> Result<u64, RdmaError> {
        let fin = RemoteBuffer {
            addr: 0,
            len,
            rkey: RKey(0),
        };
        self.send_ctl(Kind::Fin, fin, during)?;
        Ok(len)
    }

    /// RDMA `op` between `local` (under `lkey`) and the peer's buffer
    /// announced in `peer`, watching the control stream.
    ///
    /// # Safety
    /// As [`RcConnection::rdma_write`] / [`RcConnection::rdma_read`] for
    /// `local`.
    unsafe fn transfer(
        &mut self,
        op: Op,
        local: AddrRange,
        lkey: LKey,
        peer: &Control,
    ) -> Result<(), RdmaError> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.conn
                .transfer_watched(op, local, lkey, peer.addr, RKey(peer.rkey), &self.control)
        }
    }

    /// Run `f`; on error move the queue pair to the error state so no DMA
    /// can still target our memory, and return the error.
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, RdmaError>,
    ) -> Result<T, RdmaError> {
        if self.conn.is_broken() {
            return Err(RdmaError::Protocol(
                "connection is in the error state after an earlier failure".into(),
            ));
        }
        let r = f(self);
        match r {
            Ok(v) => {
                self.seq += 1;
                Ok(v)
            }
            Err(e) => {
                self.conn.break_connection();
                Err(e)
            }
        }
    }

    /// Put, sender side: wait for the receiver's CTS, RDMA WRITE `src`
    /// into it, send FIN. Returns the bytes moved (`src.len()`).
    ///
    /// # Safety
    /// `src` must be mapped and readable for the whole call and lie inside
    /// the registration `lkey` names.
    ///
    /// # Errors
    /// [`RdmaError::Protocol`] if the receiver's buffer is smaller than
    /// `src`; the others as [`RcConnection::rdma_write`].
    pub unsafe fn send_write(&mut self, src: AddrRange, lkey: LKey) -> Result<u64, RdmaError> {
        self.guarded(|s| {
            let cts = s.recv_ctl(Kind::Cts, "put: waiting for CTS")?;
            if cts.len < src.len() {
                return Err(RdmaError::Protocol(format!(
                    "receiver buffer of {} bytes is smaller than the {} byte message",
                    cts.len,
                    src.len()
                )));
            }
            // SAFETY: forwarded from this function's contract.
            unsafe { s.transfer(Op::Write, src, lkey, &cts) }?;
            s.send_fin(src.len(), "put: sending FIN")
        })
    }

    /// Put, receiver side: announce `dst` (registered with remote write
    /// under `rkey`) in a CTS and wait for the sender's FIN. Returns the
    /// number of bytes the sender wrote.
    ///
    /// # Safety
    /// `dst` must stay mapped and writable, with no Rust reference to it,
    /// until this call returns (the peer's NIC writes it). While its
    /// registration lives, a misbehaving peer can write it at any time:
    /// that is RDMA's trust model, not this function's.
    ///
    /// # Errors
    /// [`RdmaError::PeerDisconnected`] if the sender goes away,
    /// [`RdmaError::Control`] on a timeout, [`RdmaError::Protocol`] if the
    /// FIN claims more than `dst` holds.
    pub unsafe fn recv_write(&mut self, dst: AddrRange, rkey: RKey) -> Result<u64, RdmaError> {
        self.guarded(|s| {
            let fin = s.announce(Kind::Cts, dst, rkey)?;
            if fin.len > dst.len() {
                return Err(RdmaError::Protocol(format!(
                    "FIN for {} bytes into a {} byte buffer",
                    fin.len,
                    dst.len()
                )));
            }
            Ok(fin.len)
        })
    }

    /// Get, sender side: announce `src` (registered with remote read under
    /// `rkey`) in an RTS and wait for the receiver's FIN, after which
    /// `src` may be reused.
    ///
    /// # Safety
    /// `src` must stay mapped until this call returns.
    ///
    /// # Errors
    /// As [`Rendezvous::recv_write`].
    pub unsafe fn send_read(&mut self, src: AddrRange, rkey: RKey) -> Result<u64, RdmaError> {
        self.guarded(|s| {
            let fin = s.announce(Kind::Rts, src, rkey)?;
            Ok(fin.len)
        })
    }

    /// Get, receiver side: wait for the sender's RTS, RDMA READ it into
    /// `dst` (registered with local write under `lkey`), send FIN. Returns
    /// the message length.
    ///
    /// # Safety
    /// `dst` must stay mapped and writable, with no Rust reference to it,
    /// until this call returns, and lie inside the registration `lkey`
    /// names.
    ///
    /// # Errors
    /// [`RdmaError::Protocol`] if the message is longer than `dst`; the
    /// others as [`RcConnection::rdma_read`].
    pub unsafe fn recv_read(&mut self, dst: AddrRange, lkey: LKey) -> Result<u64, RdmaError> {
        self.guarded(|s| {
            let rts = s.recv_ctl(Kind::Rts, "get: waiting for RTS")?;
            if rts.len > dst.len() || rts.len == 0 {
                return Err(RdmaError::Protocol(format!(
                    "RTS for {} bytes into a {} byte buffer",
                    rts.len,
                    dst.len()
                )));
            }
            let into = AddrRange::from_start_len(dst.start(), rts.len)
                .map_err(|e| RdmaError::BadBuffer(e.to_string()))?;
            // SAFETY: `into` is a prefix of `dst`: forwarded from this
            // function's contract.
            unsafe { s.transfer(Op::Read, into, lkey, &rts) }?;
            s.send_fin(rts.len, "get: sending FIN")
        })
    }
}
