//! Cross-memory attach: the one module that calls `process_vm_writev(2)`
//! and `process_vm_readv(2)`.
//!
//! Both sides of a transfer are lists of `(addr, len)` pieces: ours (the
//! sender's source slices, or the receiver's own bound sections) and the
//! peer's (the receiver's sections, or the sender's source slices). A
//! transfer of bytes `[off, off + len)` of the concatenation cuts the same
//! window out of both lists ([`iov_slice`]) and hands the two iovec arrays
//! to one system call. The kernel checks the remote addresses (`EFAULT`);
//! the local ones are valid by the caller's contract.
//!
//! A short transfer means a remote piece stopped being mapped part way: it
//! is reported as `EFAULT`, like a refusal of the first byte, so callers
//! see one error for "the peer's memory is not there". `EPERM` (no ptrace
//! permission over the peer) is passed through unchanged: the sender falls
//! back to the bounce path, a helping receiver leaves the chunk to the
//! sender.

use super::layout::MAX_SECTIONS;
use umn::AddrRange;

/// The first `n` bytes of the concatenation of `pieces` as `(addr, len)`.
pub(super) fn trim_slices(pieces: impl Iterator<Item = (u64, u64)>, n: u64) -> Vec<(u64, u64)> {
    let mut left = n;
    let mut out = Vec::with_capacity(MAX_SECTIONS);
    for (a, l) in pieces {
        if left == 0 {
            break;
        }
        let k = l.min(left);
        if k > 0 {
            out.push((a, k));
        }
        left -= k;
    }
    out
}

/// The first `n` bytes of the slices `src` as `(addr, len)`.
pub(super) fn trim_bytes(src: &[&[u8]], n: u64) -> Vec<(u64, u64)> {
    trim_slices(src.iter().map(|p| (p.as_ptr() as u64, p.len() as u64)), n)
}

/// The first `n` bytes of the ranges `dst` as `(addr, len)`.
pub(super) fn trim_ranges(dst: &[AddrRange], n: u64) -> Vec<(u64, u64)> {
    trim_slices(dst.iter().map(|r| (r.start(), r.len())), n)
}

/// Bytes `[off, off + len)` of the concatenation of `secs`, as iovecs.
/// Addresses do not overflow: every `(a, l)` is a valid range or a slice.
fn iov_slice(secs: &[(u64, u64)], mut off: u64, mut len: u64) -> Vec<libc::iovec> {
    let mut out = Vec::with_capacity(secs.len());
    for &(a, l) in secs {
        if len == 0 {
            break;
        }
        if off >= l {
            off -= l;
            continue;
        }
        let k = (l - off).min(len);
        out.push(libc::iovec {
            iov_base: (a + off) as *mut libc::c_void,
            iov_len: k as usize,
        });
        off = 0;
        len -= k;
    }
    out
}

/// Which way bytes move.
#[derive(Clone, Copy)]
pub(super) enum Dir {
    /// From us into the peer (`process_vm_writev`).
    Write,
    /// From the peer into us (`process_vm_readv`).
    Read,
}

/// One system call moving bytes `[off, off + len)` of the concatenation
/// of `local` (ours: source slices for a write, our own bound sections for
/// a read) to or from the same bytes of `remote` (in `pid`). A short
/// transfer is `EFAULT`.
pub(super) fn transfer(
    dir: Dir,
    pid: u32,
    local: &[(u64, u64)],
    remote: &[(u64, u64)],
    off: u64,
    len: u64,
) -> std::io::Result<()> {
    let local = iov_slice(local, off, len);
    let remote = iov_slice(remote, off, len);
    if local.len() > 1024 || remote.len() > 1024 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let f = match dir {
        Dir::Write => libc::process_vm_writev,
        Dir::Read => libc::process_vm_readv,
    };
    // SAFETY: the local iovecs describe memory of ours that is valid for
    // the call (readable source slices, or our own bound sections for a
    // read); the remote ones are addresses in `pid`, checked by the kernel
    // (EFAULT).
    let r = unsafe {
        f(
            pid as libc::pid_t,
            local.as_ptr(),
            local.len() as libc::c_ulong,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r as u64 != len {
        // A partial transfer means a remote section stopped being mapped.
        return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

/// One `process_vm_writev` of the first `n` bytes of `src` into `dst`.
pub(super) fn write(pid: u32, src: &[&[u8]], dst: &[AddrRange], n: u64) -> std::io::Result<()> {
    transfer(
        Dir::Write,
        pid,
        &trim_bytes(src, n),
        &trim_ranges(dst, n),
        0,
        n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iov_slice_cuts_a_window_across_pieces() {
        let secs = [(0x1000, 10), (0x2000, 5), (0x3000, 20)];
        let v: Vec<(u64, usize)> = iov_slice(&secs, 8, 10)
            .iter()
            .map(|i| (i.iov_base as u64, i.iov_len))
            .collect();
        assert_eq!(v, [(0x1008, 2), (0x2000, 5), (0x3000, 3)]);
        assert_eq!(
            trim_slices(secs.into_iter(), 12),
            [(0x1000, 10), (0x2000, 2)]
        );
    }
}
