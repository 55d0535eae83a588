//! Finding the VMA (mapping) that covers an address, without allocating.
//!
//! The userfaultfd source registers whole VMAs (10,000 page-sized
//! registrations split VMAs into ~20,000 and hit `vm.max_map_count`), and
//! the `shmdt` hook needs the extent of a SysV segment before it detaches
//! it. Both ask "which mapping covers `addr`?":
//! - `PROCMAP_QUERY` (Linux 6.11+, `ioctl` on `/proc/self/maps`): one
//!   system call, no text;
//! - else a streaming parse of `/proc/self/maps` through a stack buffer.
//!
//! Both paths are allocation-free, so the hook may use them.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::range::AddrRange;
use crate::sys;

/// One mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vma {
    pub(crate) range: AddrRange,
    pub(crate) inode: u64,
}

/// `struct procmap_query` (include/uapi/linux/fs.h, Linux 6.11).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `PROCMAP_QUERY = _IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: u32 = crate::abi::ioc(3, b'f' as u32, 17, std::mem::size_of::<ProcmapQuery>());

/// 0 = not probed, 1 = works, 2 = absent (ENOTTY/EINVAL).
static HAVE_QUERY: AtomicU8 = AtomicU8::new(0);

/// `true` when this kernel answers `PROCMAP_QUERY` (Linux 6.11+); else
/// VMA lookups parse `/proc/self/maps`.
pub fn have_procmap_query() -> bool {
    if HAVE_QUERY.load(Ordering::Relaxed) == 0 {
        // Probe with a stack address: always mapped.
        let probe = 0u8;
        let _ = find(&probe as *const u8 as u64);
    }
    HAVE_QUERY.load(Ordering::Relaxed) == 1
}

fn open_maps() -> io::Result<RawFd> {
    sys::open(c"/proc/self/maps", libc::O_RDONLY)
}

/// The VMA covering `addr`, `Ok(None)` when `addr` is not mapped.
pub(crate) fn find(addr: u64) -> io::Result<Option<Vma>> {
    let fd = open_maps()?;
    let r = find_in(fd, addr);
    sys::close(fd);
    r
}

fn find_in(fd: RawFd, addr: u64) -> io::Result<Option<Vma>> {
    if HAVE_QUERY.load(Ordering::Relaxed) != 2 {
        let mut q = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_addr: addr,
            ..Default::default()
        };
        // SAFETY: `q` is a live procmap_query with size set and no name or
        // build-id buffers (sizes 0), as PROCMAP_QUERY expects.
        match unsafe { sys::ioctl(fd, PROCMAP_QUERY, &mut q) } {
            Ok(_) => {
                HAVE_QUERY.store(1, Ordering::Relaxed);
                let range = AddrRange::new(q.vma_start, q.vma_end)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return Ok(Some(Vma {
                    range,
                    inode: q.inode,
                }));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                HAVE_QUERY.store(1, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                HAVE_QUERY.store(2, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    find_by_parsing(fd, addr)
}

/// Parse `start-end perms offset dev inode` at the head of a maps line.
fn parse_line(line: &[u8]) -> Option<Vma> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let span = fields.next()?;
    let dash = span.iter().position(|&b| b == b'-')?;
    let hex = |s: &[u8]| u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok();
    let start = hex(&span[..dash])?;
    let end = hex(&span[dash + 1..])?;
    let _perms = fields.next()?;
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some(Vma {
        range: AddrRange::new(start, end).ok()?,
        inode,
    })
}

fn find_by_parsing(fd: RawFd, addr: u64) -> io::Result<Option<Vma>> {
    // SAFETY: rewinding a descriptor we own.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    let mut have = 0usize;
    let mut skipping = false; // inside an over-long line
    loop {
        let n = sys::read(fd, &mut buf[have..])?;
        let eof = n == 0;
        have += n;
        let mut pos = 0;
        while let Some(nl) = buf[pos..have].iter().position(|&b| b == b'\n') {
            let line = &buf[pos..pos + nl];
            if !skipping {
                if let Some(v) = parse_line(line) {
                    if v.range.contains_addr(addr) {
                        return Ok(Some(v));
                    }
                    if v.range.start() > addr {
                        return Ok(None);
                    }
                }
            }
            skipping = false;
            pos += nl + 1;
        }
        if eof {
            return Ok(if skipping {
                None
            } else {
                parse_line(&buf[pos..have])
            }
            .filter(|v| v.range.contains_addr(addr)));
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if have == buf.len() {
            // A line longer than the buffer: its head is parsed, the rest
            // (a path) skipped.
            if let Some(v) = parse_line(&buf[..128]) {
                if v.range.contains_addr(addr) {
                    return Ok(Some(v));
                }
            }
            skipping = true;
            have = 0;
        }
    }
}

/// The extent of the object mapped at `addr`: the VMA covering it plus
/// following adjacent VMAs of the same inode (a SysV segment split by
/// `mprotect`).
pub(crate) fn object_extent(addr: u64) -> io::Result<Option<AddrRange>> {
    let fd = open_maps()?;
    let r = (|| {
        let Some(first) = find_in(fd, addr)? else {
            return Ok(None);
        };
        let mut range = first.range;
        while let Some(next) = find_in(fd, range.end())? {
            if next.inode != first.inode || next.range.start() != range.end() {
                break;
            }
            range = range.hull(&next.range);
        }
        Ok(Some(range))
    })();
    sys::close(fd);
    r
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn query_and_parse_agree() {
        let x = 0u64;
        let stack = &x as *const u64 as u64;
        let code = query_and_parse_agree as *const () as u64;
        let fd = open_maps().unwrap();
        for a in [stack, code] {
            let q = find_in(fd, a).unwrap().unwrap();
            let p = find_by_parsing(fd, a).unwrap().unwrap();
            assert_eq!(q, p);
            assert!(q.range.contains_addr(a));
        }
        assert_eq!(find_by_parsing(fd, 8).unwrap(), None);
        assert_eq!(find_in(fd, 8).unwrap(), None);
        sys::close(fd);
        if !have_procmap_query() {
            println!("NOTE: PROCMAP_QUERY absent; only the parser was compared");
        }
    }
}
