//! DMA keys: a location in shared memory, named the same in every process.
//!
//! lguest keyed its DMA by the *physical* address of a guest page, so that
//! two guests sharing a page met on the same key (and its futexes matched
//! by the kernel's `get_futex_key`, i.e. inode + offset for a shared
//! file page). A process has no physical addresses, so a [`DmaKey`] is the
//! same triple the kernel uses: the device and inode of the backing file
//! (a memfd, a tmpfs file under `/dev/shm`, any shared file) and the byte
//! offset in it. Two processes mapping the same file at different
//! addresses compute the same key, by `fstat` on their fd
//! ([`DmaKey::from_fd`]) or by looking their address up in
//! `/proc/self/maps` ([`DmaKey::from_addr`]).

use crate::Error;
use std::os::fd::RawFd;

/// `(device, inode, offset)` of a byte of a shared file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmaKey {
    /// `st_dev` of the backing file, as `makedev(major, minor)`.
    pub dev: u64,
    /// `st_ino` of the backing file.
    pub ino: u64,
    /// Byte offset in the file.
    pub offset: u64,
}

pub(crate) fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is a writable `struct stat`; fstat fills it on success.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so the struct is initialised (and it was
    // zeroed before anyway).
    Ok(unsafe { st.assume_init() })
}

impl DmaKey {
    /// The key of byte `offset` of the file behind `fd`.
    ///
    /// # Errors
    /// [`Error::Key`] when `fstat` fails.
    pub fn from_fd(fd: RawFd, offset: u64) -> Result<Self, Error> {
        let st = fstat(fd).map_err(Error::Key)?;
        Ok(Self {
            dev: st.st_dev,
            ino: st.st_ino,
            offset,
        })
    }

    /// The key of the byte at `addr` in this process, found in
    /// `/proc/self/maps`. The mapping must be shared (`s`) and file-backed
    /// (inode ≠ 0): private or anonymous memory names no shared location.
    ///
    /// # Errors
    /// [`Error::Key`] when the maps file cannot be read,
    /// [`Error::NotShared`] when `addr` is unmapped, private or anonymous.
    pub fn from_addr(addr: u64) -> Result<Self, Error> {
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(Error::Key)?;
        for line in maps.lines() {
            if let Some(k) = parse_maps_line(line, addr) {
                return k;
            }
        }
        Err(Error::NotShared { addr })
    }
}

/// `start-end perms offset maj:min inode [path]`; `Some` when `addr` falls
/// in this line's range.
fn parse_maps_line(line: &str, addr: u64) -> Option<Result<DmaKey, Error>> {
    let mut f = line.split_ascii_whitespace();
    let (range, perms, off, dev, ino) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let (s, e) = range.split_once('-')?;
    let start = u64::from_str_radix(s, 16).ok()?;
    let end = u64::from_str_radix(e, 16).ok()?;
    let range = umn::AddrRange::new(start, end).ok()?;
    if !range.contains_addr(addr) {
        return None;
    }
    let parsed = (|| {
        let off = u64::from_str_radix(off, 16).ok()?;
        let (maj, min) = dev.split_once(':')?;
        let maj = u32::from_str_radix(maj, 16).ok()?;
        let min = u32::from_str_radix(min, 16).ok()?;
        let ino: u64 = ino.parse().ok()?;
        let offset = off.checked_add(addr - start)?;
        Some((
            perms.as_bytes().get(3) == Some(&b's'),
            maj,
            min,
            ino,
            offset,
        ))
    })();
    Some(match parsed {
        Some((true, maj, min, ino, offset)) if ino != 0 => Ok(DmaKey {
            dev: libc::makedev(maj, min),
            ino,
            offset,
        }),
        _ => Err(Error::NotShared { addr }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_line_parses() {
        let l = "7f0000001000-7f0000003000 rw-s 00002000 00:01 4242 /memfd:x (deleted)";
        let k = parse_maps_line(l, 0x7f00_0000_1010).unwrap().unwrap();
        assert_eq!(k.ino, 4242);
        assert_eq!(k.offset, 0x2010);
        assert_eq!(k.dev, libc::makedev(0, 1));
        assert!(parse_maps_line(l, 0x7f00_0000_3000).is_none());
        let p = "7f0000001000-7f0000003000 rw-p 00000000 00:00 0";
        assert!(matches!(
            parse_maps_line(p, 0x7f00_0000_1000),
            Some(Err(Error::NotShared { .. }))
        ));
    }
}
