//! The one module that makes raw system calls (ioctl, read, poll, mmap,
//! close, eventfd, userfaultfd). Everything else calls these wrappers.
//!
//! None of these allocate; the monitor thread and the hooks use them.

use std::io;
use std::os::fd::RawFd;

/// `Err(last_os_error)` when `r < 0`.
fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `ioctl(fd, req, arg)` with a pointer argument.
///
/// # Safety
/// `arg` must point to a live object of the type the request `req`
/// expects on `fd`, valid for reads and writes for the call's duration.
pub(crate) unsafe fn ioctl<T>(fd: RawFd, req: u32, arg: *mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller guarantees `arg` matches `req` (see # Safety).
    let r = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg) };
    check(r as libc::c_long)
}

/// `read(fd, buf)`; `Ok(0)` on end of file.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    check(r as libc::c_long).map(|n| n as usize)
}

/// `read` into a slice of plain-data records; returns whole records read.
pub(crate) fn read_records<T: Copy>(fd: RawFd, buf: &mut [T]) -> io::Result<usize> {
    let bytes = std::mem::size_of_val(buf);
    // SAFETY: `buf` is valid for writes of `bytes` bytes and `T` is plain
    // data (the ABI records and `uffd_msg`), valid for any bit pattern.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), bytes) };
    check(r as libc::c_long).map(|n| n as usize / std::mem::size_of::<T>())
}

/// `write(fd, &v)` of an 8-byte value (eventfd).
pub(crate) fn write_u64(fd: RawFd, v: u64) -> io::Result<()> {
    let b = v.to_ne_bytes();
    // SAFETY: `b` is valid for reads of 8 bytes.
    let r = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    check(r as libc::c_long).map(drop)
}

/// `poll` on `fds`, `timeout_ms` < 0 waits forever. EINTR is retried.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    loop {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd records.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        match check(r as libc::c_long) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(|n| n as usize),
        }
    }
}

/// `close(fd)`, ignoring errors (there is nothing to do about them).
pub(crate) fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closing a descriptor this crate owns; callers never use
        // `fd` afterwards.
        unsafe { libc::close(fd) };
    }
}

/// `open(path, flags | O_CLOEXEC)`.
pub(crate) fn open(path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<RawFd> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let r = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    check(r as libc::c_long).map(|fd| fd as RawFd)
}

/// `eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)`.
pub(crate) fn eventfd() -> io::Result<RawFd> {
    // SAFETY: no memory arguments.
    let r = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    check(r as libc::c_long).map(|fd| fd as RawFd)
}

/// The `userfaultfd(2)` system call with `flags`.
pub(crate) fn userfaultfd(flags: libc::c_int) -> io::Result<RawFd> {
    // SAFETY: no memory arguments.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    check(r).map(|fd| fd as RawFd)
}

/// `dup(fd)` with `O_CLOEXEC`.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: no memory arguments.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    check(r as libc::c_long).map(|fd| fd as RawFd)
}

/// A shared read-only mapping of `len` bytes of `fd` at offset 0.
pub(crate) fn mmap_ro_page(fd: RawFd, len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh mapping chosen by the kernel; no existing memory is
    // affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p)
    }
}

/// Unmap a mapping made by [`mmap_ro_page`].
///
/// # Safety
/// `p`/`len` must be exactly a mapping returned by [`mmap_ro_page`] that
/// nothing references any more.
pub(crate) unsafe fn munmap(p: *mut libc::c_void, len: usize) {
    // SAFETY: per the contract above.
    unsafe { libc::munmap(p, len) };
}

/// Pin the calling thread to one CPU (best effort).
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the given size; 0 = this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    check(r as libc::c_long).map(drop)
}
