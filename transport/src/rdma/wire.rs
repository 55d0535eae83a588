//! The control stream's records: fixed 32 bytes, little-endian, explicit
//! offsets, so both sides agree whatever their compiler or architecture.

use super::RdmaError;
use std::io::{ErrorKind, Read, Write};

/// Size of every record on the control stream.
pub(crate) const RECORD: usize = 32;

/// Magic of the connection record: `"RCQP"`.
const CONNECT_MAGIC: u32 = u32::from_le_bytes(*b"RCQP");

/// Control message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Clear to send: "RDMA WRITE into this buffer".
    Cts = 1,
    /// Ready to send: "RDMA READ from this buffer".
    Rts = 2,
    /// Done: the transfer of `len` bytes is complete.
    Fin = 3,
}

/// One control message. Layout: kind u32 @0, rkey u32 @4, addr u64 @8,
/// len u64 @16, seq u64 @24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Control {
    pub(crate) kind: Kind,
    pub(crate) rkey: u32,
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) seq: u64,
}

impl Control {
    pub(crate) fn encode(&self) -> [u8; RECORD] {
        let mut b = [0u8; RECORD];
        b[0..4].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b[4..8].copy_from_slice(&self.rkey.to_le_bytes());
        b[8..16].copy_from_slice(&self.addr.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; RECORD]) -> Result<Control, RdmaError> {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let kind = match u32_at(0) {
            1 => Kind::Cts,
            2 => Kind::Rts,
            3 => Kind::Fin,
            k => return Err(RdmaError::Protocol(format!("unknown control type {k}"))),
        };
        Ok(Control {
            kind,
            rkey: u32_at(4),
            addr: u64_at(8),
            len: u64_at(16),
            seq: u64_at(24),
        })
    }
}

/// The connection record: magic u32 @0, qpn u32 @4, psn u32 @8, lid u16
/// @12, gid [u8; 16] @16.
pub(crate) fn encode_connect(qpn: u32, psn: u32, lid: u16, gid: [u8; 16]) -> [u8; RECORD] {
    let mut b = [0u8; RECORD];
    b[0..4].copy_from_slice(&CONNECT_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&qpn.to_le_bytes());
    b[8..12].copy_from_slice(&psn.to_le_bytes());
    b[12..14].copy_from_slice(&lid.to_le_bytes());
    b[16..32].copy_from_slice(&gid);
    b
}

/// Decode a connection record: (qpn, psn, lid, gid).
pub(crate) fn decode_connect(b: &[u8; RECORD]) -> Result<(u32, u32, u16, [u8; 16]), RdmaError> {
    let magic = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
    if magic != CONNECT_MAGIC {
        return Err(RdmaError::Protocol(format!(
            "bad connection record magic {magic:#x}"
        )));
    }
    let qpn = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    let psn = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if qpn >= 1 << 24 || psn >= 1 << 24 {
        return Err(RdmaError::Protocol(format!(
            "QPN {qpn:#x} or PSN {psn:#x} exceeds 24 bits"
        )));
    }
    let lid = u16::from_le_bytes(b[12..14].try_into().expect("2 bytes"));
    let gid: [u8; 16] = b[16..32].try_into().expect("16 bytes");
    Ok((qpn, psn, lid, gid))
}

pub(crate) fn send(
    s: &mut impl Write,
    rec: &[u8; RECORD],
    during: &'static str,
) -> Result<(), RdmaError> {
    s.write_all(rec)
        .and_then(|()| s.flush())
        .map_err(|source| match source.kind() {
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                RdmaError::PeerDisconnected { during }
            }
            _ => RdmaError::Control { during, source },
        })
}

pub(crate) fn recv(s: &mut impl Read, during: &'static str) -> Result<[u8; RECORD], RdmaError> {
    let mut b = [0u8; RECORD];
    s.read_exact(&mut b).map_err(|source| match source.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            RdmaError::PeerDisconnected { during }
        }
        _ => RdmaError::Control { during, source },
    })?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trips() {
        let c = Control {
            kind: Kind::Rts,
            rkey: 0xdead_beef,
            addr: 0x7f00_0000_1000,
            len: 1 << 20,
            seq: 42,
        };
        assert_eq!(Control::decode(&c.encode()).unwrap(), c);
        let mut bad = c.encode();
        bad[0] = 9;
        assert!(Control::decode(&bad).is_err());
    }

    #[test]
    fn connect_round_trips_and_checks() {
        let gid = [7u8; 16];
        let b = encode_connect(0x11, 0x22_3344, 5, gid);
        assert_eq!(decode_connect(&b).unwrap(), (0x11, 0x22_3344, 5, gid));
        let b = encode_connect(1 << 24, 0, 0, gid);
        assert!(decode_connect(&b).is_err());
        let mut b = encode_connect(1, 1, 1, gid);
        b[0] ^= 1;
        assert!(decode_connect(&b).is_err());
    }

    #[test]
    fn eof_is_peer_disconnected() {
        let mut short: &[u8] = &[1, 2, 3];
        assert!(matches!(
            recv(&mut short, "test"),
            Err(RdmaError::PeerDisconnected { .. })
        ));
    }
}
