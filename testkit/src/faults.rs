//! A registrar that fails on command, for fault-injection tests.
//!
//! [`FaultyRegistrar`] wraps the [`CheckingRegistrar`] (itself wrapping
//! the real `pin` registrar, or the capacity model), so every check that
//! one makes — no deregistration of a held registration, no double
//! deregistration, live registrations by number — still holds, and adds
//! failures a real registrar produces:
//!
//! - [`Fault::NoMem`] / [`Fault::Again`]: `ENOMEM` / `EAGAIN` from
//!   `ibv_reg_mr` (or `mlock` past `RLIMIT_MEMLOCK`), reported as
//!   [`RegistrarError::NoResources`], on which the cache evicts and
//!   retries; a *storm* is many of them in a row
//!   ([`FaultyRegistrar::fail_registrations`]);
//! - [`Fault::Efault`]: `EFAULT`, part of the range not mapped
//!   ([`RegistrarError::NotMapped`]), which the cache reports and does not
//!   retry;
//! - a failing deregistration ([`FaultyRegistrar::fail_deregistrations`]):
//!   `ibv_dereg_mr` answering `EBUSY` (a memory window still bound). As
//!   with the real verb, the registration then stays registered: the
//!   wrapper keeps it (counted by [`FaultyRegistrar::leaked`]) and the
//!   inner registrar still lists it as live.
//!
//! The commands are counters, so a test says "the next N registrations
//! fail" and then asserts on what the cache did and said (its
//! statistics); every failure injected is counted here too
//! ([`FaultyRegistrar::injected`]).

use std::sync::Mutex;

use regcache::{AccessFlags, AddrRange, Keys, Registrar, RegistrarError};

use crate::registrar::{CheckingRegistrar, Registration};

/// What an injected registration failure looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `ENOMEM` (as [`RegistrarError::NoResources`]).
    NoMem,
    /// `EAGAIN` (as [`RegistrarError::NoResources`]).
    Again,
    /// `EFAULT` (as [`RegistrarError::NotMapped`]).
    Efault,
}

#[derive(Debug, Default)]
struct Plan {
    /// Registrations still to fail, and how.
    register: Option<(Fault, u64)>,
    /// Deregistrations still to fail.
    deregister: u64,
    /// Faults injected so far: registrations, deregistrations.
    injected: (u64, u64),
    /// Registrations whose deregistration "failed": still registered.
    leaked: Vec<Registration>,
}

/// A [`CheckingRegistrar`] that fails on command; see the [module
/// docs](self).
#[derive(Debug)]
pub struct FaultyRegistrar {
    inner: CheckingRegistrar,
    plan: Mutex<Plan>,
}

impl FaultyRegistrar {
    /// Wrap `inner`; no failure planned yet.
    pub fn new(inner: CheckingRegistrar) -> Self {
        Self {
            inner,
            plan: Mutex::default(),
        }
    }

    /// The checking registrar inside (live registrations, violations,
    /// hold/release).
    pub fn checking(&self) -> &CheckingRegistrar {
        &self.inner
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap()
    }

    /// The next `n` registrations fail with `fault` (replacing what was
    /// planned; `n = 0` stops a storm).
    pub fn fail_registrations(&self, fault: Fault, n: u64) {
        self.plan().register = (n > 0).then_some((fault, n));
    }

    /// Registrations still planned to fail.
    pub fn registrations_to_fail(&self) -> u64 {
        self.plan().register.map_or(0, |(_, n)| n)
    }

    /// The next `n` deregistrations fail with `EBUSY` and leave the
    /// registration registered.
    pub fn fail_deregistrations(&self, n: u64) {
        self.plan().deregister = n;
    }

    /// Failures injected so far: `(registrations, deregistrations)`.
    pub fn injected(&self) -> (u64, u64) {
        self.plan().injected
    }

    /// Registrations left registered by a failed deregistration.
    pub fn leaked(&self) -> usize {
        self.plan().leaked.len()
    }
}

impl Drop for FaultyRegistrar {
    fn drop(&mut self) {
        // What a failed deregistration left behind is given back now (the
        // process would on exit), so that a test's pins do not outlive it.
        let leaked = std::mem::take(&mut self.plan().leaked);
        for r in leaked {
            let _ = self.inner.deregister(r);
        }
    }
}

fn os(errno: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

impl Registrar for FaultyRegistrar {
    type Region = Registration;

    fn name(&self) -> &'static str {
        "faulty"
    }

    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<Self::Region, RegistrarError> {
        {
            let mut p = self.plan();
            if let Some((fault, n)) = p.register {
                p.register = (n > 1).then_some((fault, n - 1));
                p.injected.0 += 1;
                return Err(match fault {
                    Fault::NoMem => RegistrarError::NoResources {
                        call: "faulty_reg",
                        source: os(libc::ENOMEM),
                    },
                    Fault::Again => RegistrarError::NoResources {
                        call: "faulty_reg",
                        source: os(libc::EAGAIN),
                    },
                    Fault::Efault => RegistrarError::NotMapped {
                        call: "faulty_reg",
                        range,
                        source: os(libc::EFAULT),
                    },
                });
            }
        }
        self.inner.register(range, access)
    }

    fn keys(&self, r: &Self::Region) -> Option<Keys> {
        self.inner.keys(r)
    }

    fn deregister(&self, r: Self::Region) -> Result<(), RegistrarError> {
        let mut p = self.plan();
        if p.deregister > 0 {
            p.deregister -= 1;
            p.injected.1 += 1;
            p.leaked.push(r);
            return Err(RegistrarError::Os {
                call: "faulty_dereg",
                source: os(libc::EBUSY),
            });
        }
        drop(p);
        self.inner.deregister(r)
    }
}
