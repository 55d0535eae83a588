//! Shared segments: the one module that calls `mmap`, `munmap`,
//! `ftruncate` and `shm`-style `open`/`unlink` for the transport.
//!
//! A [`Segment`] is a `MAP_SHARED` mapping of a file on tmpfs
//! (`/dev/shm/<name>`, created `O_EXCL` with mode 0600 so only the same
//! user can attach) or of any file descriptor handed in by the caller (a
//! memfd inherited across `exec`). Mappings are page-aligned, so every
//! `#[repr(C)]` record placed at an aligned offset is aligned in every
//! process, whatever address each one maps the segment at.

use crate::Error;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// A `MAP_SHARED`, read-write mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    name: Option<String>,
}

// SAFETY: the mapping is process-wide memory; `Segment` only hands out raw
// pointers and shared references to atomics / `#[repr(C)]` records whose
// cross-thread use is governed by the protocols documented where they live.
unsafe impl Send for Segment {}
// SAFETY: as for `Send`: no `&mut` into the mapping is ever created.
unsafe impl Sync for Segment {}

fn shm_path(name: &str) -> Result<CString, Error> {
    if name.is_empty() || name.contains('/') || name.len() > 200 {
        return Err(Error::BadName(name.to_owned()));
    }
    CString::new(format!("/dev/shm/{name}")).map_err(|_| Error::BadName(name.to_owned()))
}

impl Segment {
    /// Create `/dev/shm/<name>` (mode 0600, must not exist), size it to
    /// `len` bytes (zero-filled) and map it.
    ///
    /// # Errors
    /// [`Error::BadName`], [`Error::Open`] (e.g. `EEXIST`),
    /// [`Error::Truncate`], [`Error::Map`].
    pub fn create(name: &str, len: usize) -> Result<Self, Error> {
        let path = shm_path(name)?;
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(Error::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by open and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: `path` is valid; best-effort cleanup of our own file.
            unsafe { libc::unlink(path.as_ptr()) };
            return Err(Error::Truncate(e));
        }
        let mut s = Self::map_fd(fd)?;
        s.name = Some(name.to_owned());
        Ok(s)
    }

    /// Open and map an existing `/dev/shm/<name>` (its whole length).
    ///
    /// # Errors
    /// [`Error::BadName`], [`Error::Open`], [`Error::Map`].
    pub fn open(name: &str) -> Result<Self, Error> {
        let path = shm_path(name)?;
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(Error::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by open and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut s = Self::map_fd(fd)?;
        s.name = Some(name.to_owned());
        Ok(s)
    }

    /// A fresh anonymous memfd of `len` bytes, mapped. Its fd is *not*
    /// close-on-exec, so a child started with `exec` can map it too.
    ///
    /// # Errors
    /// [`Error::Open`], [`Error::Truncate`], [`Error::Map`].
    pub fn memfd(len: usize) -> Result<Self, Error> {
        // SAFETY: the name is a valid NUL-terminated literal.
        let fd = unsafe { libc::memfd_create(c"regcache-transport".as_ptr(), 0) };
        if fd < 0 {
            return Err(Error::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by memfd_create.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscall on an fd we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(Error::Truncate(std::io::Error::last_os_error()));
        }
        Self::map_fd(fd)
    }

    /// Map the whole file behind `fd` shared and read-write.
    ///
    /// # Errors
    /// [`Error::Map`] when `fstat` or `mmap` fails or the file is empty.
    pub fn map_fd(fd: OwnedFd) -> Result<Self, Error> {
        let len = crate::key::fstat(fd.as_raw_fd())
            .map_err(Error::Map)?
            .st_size;
        let len =
            usize::try_from(len).map_err(|_| Error::Map(std::io::ErrorKind::InvalidData.into()))?;
        if len == 0 {
            return Err(Error::Map(std::io::ErrorKind::InvalidData.into()));
        }
        // SAFETY: a fresh mapping chosen by the kernel; it aliases no Rust
        // object. MAP_SHARED so other processes see our stores.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Map(std::io::Error::last_os_error()));
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or(Error::Map(std::io::ErrorKind::Other.into()))?;
        Ok(Self {
            ptr,
            len,
            fd,
            name: None,
        })
    }

    /// Remove `/dev/shm/<name>`; mappings stay valid until dropped.
    ///
    /// # Errors
    /// [`Error::BadName`], [`Error::Open`] with the `unlink` error.
    pub fn unlink(name: &str) -> Result<(), Error> {
        let path = shm_path(name)?;
        // SAFETY: `path` is a valid NUL-terminated string.
        if unsafe { libc::unlink(path.as_ptr()) } != 0 {
            return Err(Error::Open(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// First byte of the mapping in this process.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: empty files are refused at map time.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file descriptor behind the mapping.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The `/dev/shm` name, when the segment has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A reference to a `T` at `offset`, checked for bounds and alignment.
    ///
    /// `T` must be a type for which any bit pattern is valid and which is
    /// only accessed through atomics or copied out before validation
    /// (the `#[repr(C)]` shared records of this crate).
    pub(crate) fn record<T: SharedRecord>(&self, offset: usize) -> Result<&T, Error> {
        let end = offset
            .checked_add(std::mem::size_of::<T>())
            .ok_or(Error::SegmentTooSmall)?;
        if end > self.len || offset % std::mem::align_of::<T>() != 0 {
            return Err(Error::SegmentTooSmall);
        }
        // SAFETY: in bounds and aligned (checked above; the base is
        // page-aligned); `T: SharedRecord` promises every bit pattern is
        // valid and that all mutation goes through interior atomics, so a
        // shared reference is sound even while other processes write.
        Ok(unsafe { &*self.ptr.as_ptr().add(offset).cast::<T>() })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map_fd`;
        // all references handed out borrow `self`, so none outlive this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Marker for `#[repr(C)]` records that live in shared memory.
///
/// # Safety
/// Implementors must be valid for every bit pattern (zeroed included) and
/// must only be mutated through atomics (another process may write any
/// byte at any time).
pub(crate) unsafe trait SharedRecord {}
