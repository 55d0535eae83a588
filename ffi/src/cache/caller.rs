//! The caller's registrar: `regcache_registrar_ops` (C callbacks) and
//! `regcache_cache_new_with_ops`, and the verbs registrar on the caller's
//! protection domain, `regcache_cache_new_with_pd`.
//!
//! An MPI library registers in its own protection domain with its own
//! verbs, so the cache it links must be driven by its callbacks, as UCX's
//! `ucs_rcache_ops_t`, libfabric's `add_region`/`delete_region` and Open
//! MPI's `register_mem`/`deregister_mem` drive theirs (docs/DESIGN.md,
//! "The registrar belongs to the caller"). [`OpsRegistrar`] is a
//! `regcache::Registrar` over the C callbacks; the cache holds it as
//! `AnyRegistrar::User`, so a cache with callbacks is the same Rust type as
//! one with a built-in registrar and the hit path is the same code.
//!
//! ## What a callback may rely on
//!
//! The cache calls `reg` and `dereg` in the thread that called get, find,
//! release, evict, flush, invalidate or destroy; never in a monitor thread,
//! never while holding one of its locks (so a callback may call back into
//! the cache, and may block). `reg` may run on several threads at once.
//! `dereg` runs exactly once per successful `reg`, never while a handle on
//! the registration is out. In a `fork` child the parent's registrations
//! are forgotten without `dereg` (they are the parent's).
//!
//! ## What a callback returns
//!
//! `reg` returns a `regcache_reg_status`: `OK` (it wrote `*user_data` and,
//! unless the registrar has no keys, `*lkey` and `*rkey`), `NO_RESOURCES`
//! (what ENOMEM/EAGAIN from `ibv_reg_mr` mean: the cache evicts idle
//! regions and calls again, and fails the get with
//! `REGCACHE_ERR_NO_RESOURCES` only when nothing is left to evict) or
//! `FAILED` (nothing registered; the get fails with
//! `REGCACHE_ERR_REGISTRAR`). Any other value is taken as `FAILED` and the
//! error's detail names the value: whatever the callback may have written
//! is ignored, so a callback must never return another value after
//! registering something. Keys are the callback's: the cache hands them
//! out as given and cannot tell a garbage key from a good one.

use super::{CACHE, Inner};
use crate::config::{checked, env_config, regcache_config};
use crate::object::{self, Out, ffi_guard};
use crate::result::{Error, regcache_result};
use regcache::{
    AccessFlags, AddrRange, AnyRegistrar, Cache, Keys, LKey, RKey, Registrar, RegistrarError,
    UserRegion,
};
use regcache_result::*;
use std::ffi::{c_int, c_void};

/// What a registrar's `reg` callback returns
/// (`regcache_registrar_ops.reg`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_reg_status {
    /// Registered: `*user_data` is set, and `*lkey`, `*rkey` unless the
    /// registrar has no keys (`REGCACHE_OPS_NO_KEYS`).
    REGCACHE_REG_OK = 0,
    /// Out of registration resources (ENOMEM/EAGAIN, a memlock limit):
    /// nothing registered; the cache evicts idle regions and calls again.
    REGCACHE_REG_NO_RESOURCES = 1,
    /// Failed for good: nothing registered; the get fails with
    /// `REGCACHE_ERR_REGISTRAR`.
    REGCACHE_REG_FAILED = 2,
}

/// The `regcache_registrar_ops.version` this library understands.
pub const REGCACHE_REGISTRAR_OPS_VERSION: u32 = 1;

/// `regcache_registrar_ops.flags`: the registrar has no lkey/rkey
/// (`regcache_handle_lkey` then returns `REGCACHE_ERR_NO_KEYS`).
pub const REGCACHE_OPS_NO_KEYS: u32 = 1;

/// The `reg` callback: register `[addr, addr + len)` (page-aligned; the
/// cache widens requests to pages and may merge neighbours) for `access`
/// (`regcache_access` bits, the values of `enum ibv_access_flags`); on
/// success write the caller's word for the registration to `*user_data`
/// (returned by every hit: `regcache_handle_user_data`) and the keys, and
/// return `REGCACHE_REG_OK`. Returns a `regcache_reg_status`.
#[allow(non_camel_case_types)]
pub type regcache_reg_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        addr: *mut c_void,
        len: usize,
        access: u32,
        user_data: *mut *mut c_void,
        lkey: *mut u32,
        rkey: *mut u32,
    ) -> c_int,
>;

/// The `dereg` callback: deregister the registration `user_data` names.
/// Returns 0 on success; anything else is counted
/// (`regcache_stats.deregistration_failures`) and logged, and the cache
/// forgets the registration all the same.
#[allow(non_camel_case_types)]
pub type regcache_dereg_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, user_data: *mut c_void) -> c_int>;

/// A caller's registrar (`regcache_cache_new_with_ops`). The callbacks run
/// in the thread that called `regcache_cache_get` (or find, release,
/// evict, flush, invalidate, destroy), never in a monitor thread and never
/// under a lock of the cache's: they may block and may call into the
/// cache. `reg` may run on several threads at once; `dereg` runs once per
/// successful `reg`, never while a handle on that registration is out.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct regcache_registrar_ops {
    /// `REGCACHE_REGISTRAR_OPS_VERSION`.
    pub version: u32,
    /// 0, or `REGCACHE_OPS_NO_KEYS`.
    pub flags: u32,
    /// Register (required).
    pub reg: regcache_reg_fn,
    /// Deregister (required).
    pub dereg: regcache_dereg_fn,
    /// Passed as the first argument of every callback.
    pub ctx: *mut c_void,
}

/// A `regcache::Registrar` over a caller's C callbacks.
#[derive(Debug)]
struct OpsRegistrar {
    /// The caller's context, passed to every callback.
    ctx: *mut c_void,
    /// `false` with `REGCACHE_OPS_NO_KEYS`.
    has_keys: bool,
    reg: unsafe extern "C" fn(
        *mut c_void,
        *mut c_void,
        usize,
        u32,
        *mut *mut c_void,
        *mut u32,
        *mut u32,
    ) -> c_int,
    dereg: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
}

// SAFETY: the caller of `regcache_cache_new_with_ops` promises callbacks
// callable from any thread with its `ctx` (the documented contract); we
// only copy the pointers.
unsafe impl Send for OpsRegistrar {}
// SAFETY: as above.
unsafe impl Sync for OpsRegistrar {}

impl OpsRegistrar {
    /// Check the caller's ops.
    fn new(ops: regcache_registrar_ops) -> Result<Self, Error> {
        let bad = |what: String| Error::new(REGCACHE_ERR_INVALID_ARGUMENT, what);
        if ops.version != REGCACHE_REGISTRAR_OPS_VERSION {
            return Err(bad(format!(
                "regcache_registrar_ops.version is {}; this library understands {} (REGCACHE_REGISTRAR_OPS_VERSION)",
                ops.version, REGCACHE_REGISTRAR_OPS_VERSION
            )));
        }
        if ops.flags & !REGCACHE_OPS_NO_KEYS != 0 {
            return Err(bad(format!(
                "unknown regcache_registrar_ops.flags bits {:#x}",
                ops.flags & !REGCACHE_OPS_NO_KEYS
            )));
        }
        let (Some(reg), Some(dereg)) = (ops.reg, ops.dereg) else {
            return Err(bad(
                "regcache_registrar_ops.reg and .dereg are required (one is NULL)".into(),
            ));
        };
        Ok(Self {
            ctx: ops.ctx,
            has_keys: ops.flags & REGCACHE_OPS_NO_KEYS == 0,
            reg,
            dereg,
        })
    }
}

impl Registrar for OpsRegistrar {
    type Region = UserRegion;

    fn name(&self) -> &'static str {
        "caller"
    }

    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<UserRegion, RegistrarError> {
        let mut user_data: *mut c_void = std::ptr::null_mut();
        let (mut lkey, mut rkey) = (0u32, 0u32);
        // SAFETY: the caller's callback, called as its contract says, with
        // its ctx and three writable outputs on our stack.
        let rc = unsafe {
            (self.reg)(
                self.ctx,
                range.start() as *mut c_void,
                range.len() as usize,
                access.bits(),
                &mut user_data,
                &mut lkey,
                &mut rkey,
            )
        };
        const OK: c_int = regcache_reg_status::REGCACHE_REG_OK as c_int;
        const NO_RES: c_int = regcache_reg_status::REGCACHE_REG_NO_RESOURCES as c_int;
        const FAILED: c_int = regcache_reg_status::REGCACHE_REG_FAILED as c_int;
        match rc {
            OK => Ok(UserRegion {
                user_data: user_data as usize,
                keys: self.has_keys.then_some(Keys {
                    lkey: LKey(lkey),
                    rkey: RKey(rkey),
                }),
            }),
            NO_RES => Err(RegistrarError::NoResources {
                call: "reg callback",
                source: std::io::Error::other(format!("REGCACHE_REG_NO_RESOURCES for {range}")),
            }),
            FAILED => Err(RegistrarError::Os {
                call: "reg callback",
                source: std::io::Error::other(format!("REGCACHE_REG_FAILED for {range}")),
            }),
            other => Err(RegistrarError::Os {
                call: "reg callback",
                source: std::io::Error::other(format!(
                    "returned {other}, not a regcache_reg_status (taken as REGCACHE_REG_FAILED) for {range}"
                )),
            }),
        }
    }

    fn keys(&self, region: &UserRegion) -> Option<Keys> {
        region.keys
    }

    fn user_data(&self, region: &UserRegion) -> usize {
        region.user_data
    }

    fn deregister(&self, region: UserRegion) -> Result<(), RegistrarError> {
        // SAFETY: the caller's callback, with the word its `reg` produced,
        // once per successful `reg` (the cache's contract).
        let rc = unsafe { (self.dereg)(self.ctx, region.user_data as *mut c_void) };
        if rc == 0 {
            Ok(())
        } else {
            Err(RegistrarError::Os {
                call: "dereg callback",
                source: std::io::Error::other(format!("returned {rc}")),
            })
        }
    }
}

/// The configuration of a cache whose registrar is not chosen by
/// `config.registrar` (which is ignored): `config`, or the environment's.
///
/// # Safety
/// `config` is NULL or readable.
unsafe fn config_of(config: *const regcache_config) -> Result<regcache::Config, Error> {
    let c = if config.is_null() {
        env_config()?
    } else {
        // SAFETY: non-NULL config is readable (contract).
        let mut c = unsafe { config.read() };
        c.registrar = 0;
        c
    };
    Ok(checked(&c)?.1)
}

/// Build the cache over `registrar` and hand it out through `out`.
fn make(
    registrar: AnyRegistrar,
    config: regcache::Config,
    out: Out<*mut super::regcache_cache>,
) -> Result<(), Error> {
    let cache = Cache::try_new(registrar, config)?;
    // SAFETY: out is non-NULL and writable (the export's contract).
    unsafe { out.write(object::make(&CACHE, Inner { cache })) }
}

/// Create a cache that registers through the caller's callbacks `ops`
/// (copied; `ops->ctx` must stay valid until `regcache_cache_destroy`
/// returns, which deregisters everything through `ops->dereg`). `config`
/// as for `regcache_cache_new` (NULL: from the environment); its
/// `registrar` field is ignored. Every hit returns the `user_data` the
/// `reg` callback produced for its region (`regcache_handle_user_data`).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`ops`, `out`),
/// `REGCACHE_ERR_INVALID_ARGUMENT` (wrong `version`, unknown `flags`, NULL
/// `reg` or `dereg`, or a bad config as for `regcache_cache_new`),
/// `REGCACHE_ERR_CONFIG_ENV`, `REGCACHE_ERR_UNAVAILABLE` (the monitor asked
/// for is not here).
///
/// # Safety
/// `config` NULL or readable; `ops` NULL or readable, its callbacks
/// callable from any thread as documented; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_new_with_ops(
    config: *const regcache_config,
    ops: *const regcache_registrar_ops,
    out: *mut *mut super::regcache_cache,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        if ops.is_null() {
            return Err(Error::null("ops"));
        }
        // SAFETY: non-NULL and readable (contract).
        let registrar = OpsRegistrar::new(unsafe { ops.read() })?;
        // SAFETY: config contract.
        let config = unsafe { config_of(config) }?;
        make(AnyRegistrar::User(Box::new(registrar)), config, out)
    })
}

/// Create a cache whose registrar calls `ibv_reg_mr` in the caller's
/// protection domain `pd` (a `struct ibv_pd *`, passed as `void *` so this
/// header needs no `<infiniband/verbs.h>`): the MPI library's domain, where
/// its queue pairs live. `pd` must stay allocated until
/// `regcache_cache_destroy` returns. `config` as for
/// `regcache_cache_new_with_ops`.
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT` (`out`), `REGCACHE_ERR_UNAVAILABLE` (`pd`
/// NULL or with no device context), and `regcache_cache_new_with_ops`'s
/// config errors.
///
/// # Safety
/// `pd` NULL or a live `struct ibv_pd *` from `ibv_alloc_pd` in this
/// process; `config` NULL or readable; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_cache_new_with_pd(
    config: *const regcache_config,
    pd: *mut c_void,
    out: *mut *mut super::regcache_cache,
) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        // SAFETY: the export's contract on `pd`.
        let pd = unsafe { regcache::CallerPd::from_raw(pd) }?;
        // SAFETY: config contract.
        let config = unsafe { config_of(config) }?;
        make(
            AnyRegistrar::Verbs(regcache::VerbsRegistrar::on_caller_pd(pd)),
            config,
            out,
        )
    })
}
