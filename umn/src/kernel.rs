//! The kernel-device client: `/dev/ummunotify`.
//!
//! Open the device, `UMMUNOTIFY_EXCHANGE_FEATURES`, mmap the counter page
//! at offset 0 (read-only; the kernel bumps the 64-bit counter at its start
//! once per event that hits a registration), register and unregister with
//! the ABI ioctls, `read()` `struct ummunotify_event` records.
//!
//! The module is `umn/kmod` (docs/KERNEL.md). On a host without it, `open`
//! returns [`Error::DeviceAbsent`] and the device tests say SKIPPED by
//! name; the VM tier (`cargo xtask kmod`) loads it and runs them.
//!
//! Extension: `open` asks for `UMMUNOTIFY_FEATURE_REGION_WORDS`. When the
//! device grants it, the whole area (`UMMUNOTIFY_GET_AREA`) is mapped and
//! every registration has a word there that is 0 until an event hits it:
//! [`RegionWord::is_valid`] is the one-load check of a cache hit. A
//! device without the extension grants nothing and only the counter page
//! is mapped, as in the 2010 ABI.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Registrations the file accepts (`GET_AREA`; 0 if unknown).
    max_regions: u32,
    /// Cookies registered through this handle, with the index of their
    /// region word (0: none): the same duplicate/unknown errors as every
    /// other source, whatever errno the module picks.
    cookies: Mutex<HashMap<Cookie, u32>>,
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
        let mut features: u32 = abi::UMMUNOTIFY_FEATURE_REGION_WORDS;
        // SAFETY: EXCHANGE_FEATURES reads and writes one u32.
        if let Err(e) = unsafe { sys::ioctl(fd, abi::UMMUNOTIFY_EXCHANGE_FEATURES, &mut features) }
        {
            sys::close(fd);
            return Err(dev_err("ioctl(UMMUNOTIFY_EXCHANGE_FEATURES)")(e));
        }
        let mut area = abi::ummunotify_area::default();
        // SAFETY: GET_AREA writes one ummunotify_area.
        let page_len = match unsafe { sys::ioctl(fd, abi::UMMUNOTIFY_GET_AREA, &mut area) } {
            Ok(_) => area.length as usize,
            // A device without the extension: the 2010 counter page.
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => page_size() as usize,
            Err(e) => {
                sys::close(fd);
                return Err(dev_err("ioctl(UMMUNOTIFY_GET_AREA)")(e));
            }
        };
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
            max_regions: area.max_regions,
            cookies: Mutex::new(HashMap::new()),
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

    /// Word `index` (in `u64`) of the mapping, if inside it.
    fn word(&self, index: u32) -> Option<*const AtomicU64> {
        let off = (index as usize).checked_mul(8)?;
        if index == 0 || off >= self.page_len {
            return None;
        }
        // SAFETY: `off` is inside our mapping (checked above); the area is
        // a whole number of u64 words, page aligned.
        let p = unsafe { self.page.cast::<u8>().add(off) };
        Some(p.cast::<AtomicU64>().cast_const())
    }

    pub(crate) fn register(&self, range: AddrRange, cookie: Cookie) -> Result<()> {
        let mut cookies = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
        if cookies.contains_key(&cookie) {
            return Err(Error::DuplicateCookie(cookie));
        }
        let mut r = ummunotify_register_ioctl {
            start: range.start(),
            end: range.end(),
            user_cookie: cookie.0,
            flags: 0,
            reserved: 0,
        };
        // SAFETY: REGISTER_REGION reads one ummunotify_register_ioctl; with
        // REGION_WORDS the device also writes its `reserved` back.
        match unsafe { sys::ioctl(self.fd, abi::UMMUNOTIFY_REGISTER_REGION, &mut r) } {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                return Err(Error::DeviceFull {
                    limit: self.max_regions,
                });
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(Error::DuplicateCookie(cookie));
            }
            // The file belongs to the mm that opened it: a fork child.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Err(Error::Forked),
            Err(e) => return Err(dev_err("ioctl(UMMUNOTIFY_REGISTER_REGION)")(e)),
        }
        let slot = if self.features & abi::UMMUNOTIFY_FEATURE_REGION_WORDS != 0 {
            r.reserved
        } else {
            0
        };
        cookies.insert(cookie, slot);
        Ok(())
    }

    pub(crate) fn unregister(&self, cookie: Cookie) -> Result<()> {
        let mut cookies = self.cookies.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slot) = cookies.remove(&cookie) else {
            return Err(Error::UnknownCookie(cookie));
        };
        let mut c = cookie.0;
        // SAFETY: UNREGISTER_REGION reads one u64.
        match unsafe { sys::ioctl(self.fd, abi::UMMUNOTIFY_UNREGISTER_REGION, &mut c) } {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                cookies.insert(cookie, slot);
                Err(Error::Forked)
            }
            Err(e) => Err(dev_err("ioctl(UMMUNOTIFY_UNREGISTER_REGION)")(e)),
        }
    }

    pub(crate) fn read(&self, out: &mut [Event]) -> Result<usize> {
        let mut carry = self.carry.lock().unwrap_or_else(|p| p.into_inner());
        if carry.is_empty() {
            let mut raw = [ummunotify_event::default(); 64];
            // Load the counter *before* read(): the device bumps it and
            // queues the event under one lock, so an empty queue after
            // this load means every event it counts was read. Loading
            // after EAGAIN could count an event queued in between and
            // report it as seen.
            let c = self.counter().load(Ordering::Acquire);
            match sys::read_records(self.fd, &mut raw) {
                Ok(n) => carry.extend(raw[..n].iter().filter_map(from_abi)),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
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

/// A registration's word in the device's mmap'd area
/// (`UMMUNOTIFY_FEATURE_REGION_WORDS`): 0 from registration until an event
/// hits the range; the device increments it (under its lock, before the
/// event is queued and before the unmapping call returns). Keeps the
/// device's mapping alive. The word is reused by a later registration
/// after `unregister`, so drop the `RegionWord` with the registration.
#[derive(Clone)]
pub struct RegionWord {
    word: *const AtomicU64,
    _owner: Arc<KernelDev>,
}

// SAFETY: `word` points into the mapping `_owner` keeps alive; it is only
// loaded atomically.
unsafe impl Send for RegionWord {}
// SAFETY: as above.
unsafe impl Sync for RegionWord {}

impl std::fmt::Debug for RegionWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RegionWord").field(&self.load()).finish()
    }
}

impl RegionWord {
    pub(crate) fn new(dev: &Arc<KernelDev>, cookie: Cookie) -> Option<Self> {
        let slot = *dev
            .cookies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cookie)?;
        Some(Self {
            word: dev.word(slot)?,
            _owner: dev.clone(),
        })
    }

    /// Events that hit the registration since it was made (one `Acquire`
    /// load; the device is the only writer).
    #[inline]
    pub fn load(&self) -> u64 {
        // SAFETY: `_owner` keeps the mapping alive; atomic access only.
        unsafe { &*self.word }.load(Ordering::Acquire)
    }

    /// `true` while no event has hit the registration: a cache hit on it is
    /// good without a system call.
    #[inline]
    pub fn is_valid(&self) -> bool {
        self.load() == 0
    }

    /// The word itself, for a cache that keeps one pointer per region
    /// instead of a `RegionWord` (regcache's slots do: a bare pointer is
    /// one atomic field, loadable on the lock-free hit path).
    ///
    /// The pointer stays valid (dereferenceable, aligned, only ever
    /// accessed atomically) while this `RegionWord`, any clone of it, or
    /// the [`crate::Notifier`] it came from lives: it points into the
    /// device's mapping, which those keep. After the registration is
    /// unregistered the device may give the word to another registration
    /// (reset to 0), so its value then describes that one.
    #[inline]
    pub fn as_ptr(&self) -> *const AtomicU64 {
        self.word
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
