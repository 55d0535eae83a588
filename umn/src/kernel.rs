//! The kernel-device client: `/dev/ummunotify`.
//!
//! Open the device, `UMMUNOTIFY_EXCHANGE_FEATURES`, mmap the counter page
//! at offset 0 (read-only; the kernel bumps the 64-bit counter at its start
//! once per event that hits a registration), register and unregister with
//! the ABI ioctls, `read()` `struct ummunotify_event` records.
//!
//! The device is not built yet (umn/kmod is a later issue): on a host
//! without it, `open` returns [`Error::DeviceAbsent`]. The client compiles
//! against [`crate::abi`] and its tests name themselves SKIPPED when the
//! node is missing.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use crate::abi::{self, ummunotify_event, ummunotify_register_ioctl};
use crate::error::{Error, Result};
use crate::generation::Generation;
use crate::queue::{Cookie, Event, Invalidation};
use crate::range::{AddrRange, page_size};
use crate::sys;

/// Path of the device node.
pub const DEVICE_PATH: &str = "/dev/ummunotify";

/// An open device.
#[derive(Debug)]
pub(crate) struct KernelDev {
    pub(crate) fd: RawFd,
    page: *mut libc::c_void,
    page_len: usize,
    /// Features the device granted in EXCHANGE_FEATURES.
    pub(crate) features: u32,
    /// Cookies registered through this handle: the same duplicate/unknown
    /// errors as every other source, whatever errno the module picks.
    cookies: Mutex<HashSet<Cookie>>,
    /// Records read but not yet handed out (a short caller buffer).
    carry: Mutex<Vec<Event>>,
}

// SAFETY: `page` is a read-only shared mapping that lives as long as the
// KernelDev; it is only read through an AtomicU64 (`counter`). The rest is
// a descriptor and Mutex-protected state.
unsafe impl Send for KernelDev {}
// SAFETY: as above.
unsafe impl Sync for KernelDev {}

fn dev_err(call: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Device { call, source }
}

impl KernelDev {
    pub(crate) fn open() -> Result<Self> {
        let fd = match sys::open(c"/dev/ummunotify", libc::O_RDWR | libc::O_NONBLOCK) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(Error::DeviceAbsent),
            Err(e) => return Err(Error::DeviceOpen(e)),
        };
        let mut features: u32 = 0;
        // SAFETY: EXCHANGE_FEATURES reads and writes one u32.
        if let Err(e) = unsafe { sys::ioctl(fd, abi::UMMUNOTIFY_EXCHANGE_FEATURES, &mut features) }
        {
            sys::close(fd);
            return Err(dev_err("ioctl(UMMUNOTIFY_EXCHANGE_FEATURES)")(e));
        }
        let page_len = page_size() as usize;
        let page = match sys::mmap_ro_page(fd, page_len) {
            Ok(p) => p,
            Err(e) => {
                sys::close(fd);
                return Err(dev_err("mmap(counter page)")(e));
            }
        };
        Ok(Self {
            fd,
            page,
            page_len,
            features,
            cookies: Mutex::new(HashSet::new()),
            carry: Mutex::new(Vec::new()),
        })
    }

    /// The counter word at the start of the mmap'd page. The kernel is the
    /// producer (it bumps the counter before queueing the event); we load it
    /// with Acquire.
    pub(crate) fn counter(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped for the lifetime of `self`, page
        // aligned (so aligned for u64), and the kernel only ever updates it
        // atomically.
        unsafe { &*(self.page as *const AtomicU64) }
    }

    pub(crate) fn register(&self, range: AddrRange, cookie: Cookie) -> Result<()> {
        let mut cookies = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
        if cookies.contains(&cookie) {
            return Err(Error::DuplicateCookie(cookie));
        }
        let mut r = ummunotify_register_ioctl {
            start: range.start(),
            end: range.end(),
            user_cookie: cookie.0,
            flags: 0,
            reserved: 0,
        };
        // SAFETY: REGISTER_REGION reads one ummunotify_register_ioctl.
        unsafe { sys::ioctl(self.fd, abi::UMMUNOTIFY_REGISTER_REGION, &mut r) }
            .map_err(dev_err("ioctl(UMMUNOTIFY_REGISTER_REGION)"))?;
        cookies.insert(cookie);
        Ok(())
    }

    pub(crate) fn unregister(&self, cookie: Cookie) -> Result<()> {
        let mut cookies = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
        if !cookies.remove(&cookie) {
            return Err(Error::UnknownCookie(cookie));
        }
        let mut c = cookie.0;
        // SAFETY: UNREGISTER_REGION reads one u64.
        unsafe { sys::ioctl(self.fd, abi::UMMUNOTIFY_UNREGISTER_REGION, &mut c) }
            .map_err(dev_err("ioctl(UMMUNOTIFY_UNREGISTER_REGION)"))?;
        Ok(())
    }

    pub(crate) fn read(&self, out: &mut [Event]) -> Result<usize> {
        let mut carry = self.carry.lock().unwrap_or_else(|p| p.into_inner());
        if carry.is_empty() {
            let mut raw = [ummunotify_event::default(); 64];
            match sys::read_records(self.fd, &mut raw) {
                Ok(n) => carry.extend(raw[..n].iter().filter_map(from_abi)),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    let c = self.counter().load(std::sync::atomic::Ordering::Acquire);
                    carry.push(Event::Last {
                        counter: c,
                        generation: Generation(c),
                    });
                }
                Err(e) => return Err(dev_err("read(/dev/ummunotify)")(e)),
            }
        }
        let n = out.len().min(carry.len());
        for (o, e) in out.iter_mut().zip(carry.drain(..n)) {
            *o = e;
        }
        Ok(n)
    }
}

/// Convert one ABI record (the one place the device's inclusive/exclusive
/// question is answered: `hint_end` is exclusive, as in the seed).
pub(crate) fn from_abi(e: &ummunotify_event) -> Option<Event> {
    match e.type_ {
        abi::UMMUNOTIFY_EVENT_TYPE_INVAL => Some(Event::Inval(Invalidation {
            cookie: Cookie(e.user_cookie_counter),
            range: if e.flags & abi::UMMUNOTIFY_EVENT_FLAG_HINT != 0 {
                AddrRange::new(e.hint_start, e.hint_end).ok()
            } else {
                None
            },
        })),
        abi::UMMUNOTIFY_EVENT_TYPE_LAST => Some(Event::Last {
            counter: e.user_cookie_counter,
            generation: Generation(e.user_cookie_counter),
        }),
        _ => None,
    }
}

impl Drop for KernelDev {
    fn drop(&mut self) {
        // SAFETY: `page` is our mapping and nothing borrows it past `self`
        // (GenerationWatch holds the Arc that owns this KernelDev).
        unsafe { sys::munmap(self.page, self.page_len) };
        sys::close(self.fd);
    }
}
