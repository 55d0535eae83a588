//! One checking registrar for the cache's tests.
//!
//! The cache's tests want to see through the registrar: which
//! registration a handle is (to tell a fresh one from a stale one after an
//! unmap), which registrations are alive (to find leaks), and whether the
//! cache ever deregisters one while a test still uses it (the one thing a
//! registration cache must never do: the NIC would DMA into freed pages).
//! [`CheckingRegistrar`] is that window, configured per test:
//!
//! - [`CheckingRegistrar::model`]: registers nothing for real (the
//!   addresses need not be mapped) and fails with ENOMEM, like a NIC or
//!   `RLIMIT_MEMLOCK`, past a byte capacity — the property tests of the
//!   cache's logic above the registrar;
//! - [`CheckingRegistrar::pinned`]: wraps the real `pin` registrar
//!   (mlock), for tests on real memory and real kernel events.
//!
//! Every registration gets a number, from 1, which is both its lkey and
//! its rkey ([`id`] reads it back from a handle). A test brackets its use
//! of a registration with [`hold`](CheckingRegistrar::hold) and
//! [`release`](CheckingRegistrar::release); a deregistration of a held or
//! already deregistered number is recorded as a violation, which the test
//! asserts is absent ([`violations`](CheckingRegistrar::violations)). The
//! checks take one mutex: the registrar is off the hit path, which never
//! calls it, so it costs the tests nothing they measure.

use std::collections::BTreeMap;
use std::sync::Mutex;

use regcache::{
    AccessFlags, AddrRange, Handle, Keys, LKey, PinRegistrar, PinnedRegion, RKey, Registrar,
    RegistrarError,
};

/// What the registrar knows, under one lock.
#[derive(Debug, Default)]
struct Books {
    /// The last number handed out.
    next: u32,
    /// Number → range of every registration not yet deregistered.
    live: BTreeMap<u32, AddrRange>,
    /// Number → uses the test says it has in flight.
    held: BTreeMap<u32, usize>,
    /// What the cache did wrong, in words.
    violations: Vec<String>,
}

/// A registrar that numbers, counts and checks; see the [module
/// docs](self).
#[derive(Debug)]
pub struct CheckingRegistrar {
    name: &'static str,
    pin: Option<PinRegistrar>,
    capacity: u64,
    books: Mutex<Books>,
    /// When set, `keys()` (which the cache calls under its index lock)
    /// unmaps this range first.
    unmap_in_keys: Mutex<Option<AddrRange>>,
}

/// A registration: its number, its range, and the pinned pages when the
/// registrar pins.
#[derive(Debug)]
pub struct Registration {
    id: u32,
    range: AddrRange,
    pinned: Option<PinnedRegion>,
}

impl CheckingRegistrar {
    /// A registrar that registers nothing for real and refuses (ENOMEM,
    /// as `NoResources`) a registration that would take the live bytes
    /// above `capacity`.
    pub fn model(capacity: u64) -> Self {
        Self::new("checking", None, capacity)
    }

    /// The real `pin` registrar (mlock), numbered and checked.
    pub fn pinned() -> Self {
        Self::new("checking-pin", Some(PinRegistrar::default()), u64::MAX)
    }

    fn new(name: &'static str, pin: Option<PinRegistrar>, capacity: u64) -> Self {
        CheckingRegistrar {
            name,
            pin,
            capacity,
            books: Mutex::default(),
            unmap_in_keys: Mutex::default(),
        }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap()
    }

    /// The test starts using registration `id`: deregistering it now is a
    /// violation.
    pub fn hold(&self, id: u32) {
        *self.books().held.entry(id).or_default() += 1;
    }

    /// The test stopped using registration `id` (once per [`hold`](Self::hold)).
    pub fn release(&self, id: u32) {
        let mut b = self.books();
        let n = b
            .held
            .get_mut(&id)
            .unwrap_or_else(|| panic!("released id {id}, never held"));
        *n -= 1;
    }

    /// Uses of `id` the test has in flight.
    pub fn held(&self, id: u32) -> usize {
        self.books().held.get(&id).copied().unwrap_or(0)
    }

    /// Whether `id` is registered (not yet deregistered).
    pub fn is_live(&self, id: u32) -> bool {
        self.books().live.contains_key(&id)
    }

    /// The range `id` was registered for, while it is live.
    pub fn live_range(&self, id: u32) -> Option<AddrRange> {
        self.books().live.get(&id).copied()
    }

    /// Every live registration: number → range.
    pub fn live(&self) -> BTreeMap<u32, AddrRange> {
        self.books().live.clone()
    }

    /// How many registrations are live.
    pub fn live_count(&self) -> usize {
        self.books().live.len()
    }

    /// The cache's mistakes so far (deregistration of a held or of an
    /// already deregistered registration), in words; empty when none.
    pub fn violations(&self) -> Vec<String> {
        self.books().violations.clone()
    }

    /// Make the next `keys()` call unmap `r` first: an application thread
    /// unmapping memory while the cache holds its index lock.
    pub fn unmap_in_keys(&self, r: AddrRange) {
        *self.unmap_in_keys.lock().unwrap() = Some(r);
    }

    /// Whether the unmap asked for with [`unmap_in_keys`](Self::unmap_in_keys)
    /// has yet to happen.
    pub fn unmap_in_keys_pending(&self) -> bool {
        self.unmap_in_keys.lock().unwrap().is_some()
    }
}

impl Registrar for CheckingRegistrar {
    type Region = Registration;

    fn name(&self) -> &'static str {
        self.name
    }

    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Self::Region, RegistrarError> {
        // Pin outside the lock: threads register concurrently, as they
        // would with a real registrar.
        let pinned = match &self.pin {
            Some(pin) => Some(pin.register(range, access)?),
            None => None,
        };
        let mut b = self.books();
        let used: u64 = b.live.values().map(|r| r.len()).sum();
        if used.saturating_add(range.len()) > self.capacity {
            drop(b);
            if let (Some(pin), Some(p)) = (&self.pin, pinned) {
                pin.deregister(p)?;
            }
            return Err(RegistrarError::NoResources {
                call: "checking_reg",
                source: std::io::Error::from_raw_os_error(libc::ENOMEM),
            });
        }
        b.next += 1;
        let id = b.next;
        b.live.insert(id, range);
        Ok(Registration { id, range, pinned })
    }

    fn keys(&self, r: &Self::Region) -> Option<Keys> {
        if let Some(victim) = self.unmap_in_keys.lock().unwrap().take() {
            crate::mem::unmap(victim);
        }
        Some(Keys {
            lkey: LKey(r.id),
            rkey: RKey(r.id),
        })
    }

    fn deregister(&self, r: Self::Region) -> Result<(), RegistrarError> {
        let id = r.id;
        {
            let mut b = self.books();
            if b.held.get(&id).copied().unwrap_or(0) != 0 {
                b.violations
                    .push(format!("deregistered id {id} while held"));
            }
            if b.live.remove(&id).is_none() {
                b.violations
                    .push(format!("double deregistration of id {id}"));
            }
        }
        match (&self.pin, r.pinned) {
            (Some(pin), Some(p)) => pin.deregister(p),
            _ => Ok(()),
        }
    }
}

impl Registration {
    /// The registration's number (its lkey and rkey).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The range registered.
    pub fn range(&self) -> AddrRange {
        self.range
    }
}

/// The number of the registration behind a handle.
pub fn id(h: &Handle<'_, CheckingRegistrar>) -> u32 {
    h.keys().expect("the checking registrar gives keys").lkey.0
}
