//! The plain C types of a cache (`regcache_config`, `regcache_stats`, the
//! registrar, monitor and access enums), their conversions to and from
//! the `regcache` crate's, and `regcache_config_*`.
//!
//! Conversions happen here and nowhere else: a C number becomes a Rust
//! enum only through `kind_of` / `monitor_of`, which refuse unknown
//! values (C enums are plain integers: anything can arrive).

use crate::object::{Out, ffi_guard, write_out};
use crate::result::{Error, regcache_result};
use regcache::{Config, Eviction, Merge, MonitorKind, RegistrarKind, Stats, Verify};
use regcache_result::*;

/// Which registrar a cache registers with (`regcache_config.registrar`,
/// `REGCACHE_REGISTRAR=auto|pin|verbs`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_registrar {
    /// ibverbs when an RDMA device is present, else `pin`.
    REGCACHE_REGISTRAR_AUTO = 0,
    /// `mlock` pinning (no keys).
    REGCACHE_REGISTRAR_PIN = 1,
    /// ibverbs `ibv_reg_mr` on the closest (or `REGCACHE_RDMA_DEVICE`) device,
    /// or in the caller's protection domain (`regcache_cache_new_with_pd`).
    REGCACHE_REGISTRAR_VERBS = 2,
    /// The caller's callbacks (`regcache_cache_new_with_ops`). Reported by
    /// `regcache_cache_registrar`; not a value for `regcache_config`.
    REGCACHE_REGISTRAR_CALLER = 3,
}

/// Which invalidation source feeds a cache or notifier
/// (`regcache_config.monitor`, `REGCACHE_MONITOR`, `regcache_notifier_open`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_monitor {
    /// The kernel device if present, else the libc patch, else
    /// userfaultfd.
    REGCACHE_MONITOR_AUTO = 0,
    /// `/dev/ummunotify`.
    REGCACHE_MONITOR_KERNEL = 1,
    /// userfaultfd with a monitor thread.
    REGCACHE_MONITOR_UFFD = 2,
    /// Only what the host reports with `*_notify_unmapped`.
    REGCACHE_MONITOR_EXTERNAL = 3,
    /// No invalidation source (caches only; the host must call
    /// `regcache_cache_notify_unmapped` before memory goes away).
    REGCACHE_MONITOR_NONE = 4,
    /// libc's unmap-like functions patched to invalidate before the
    /// system call (no module, no privilege; blind to raw system calls).
    REGCACHE_MONITOR_PATCH = 5,
}

/// Access flags for `regcache_cache_get`, with the values of `enum
/// ibv_access_flags`. Combine with `|`.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_access {
    /// `IBV_ACCESS_LOCAL_WRITE`.
    REGCACHE_ACCESS_LOCAL_WRITE = 1,
    /// `IBV_ACCESS_REMOTE_WRITE`.
    REGCACHE_ACCESS_REMOTE_WRITE = 2,
    /// `IBV_ACCESS_REMOTE_READ`.
    REGCACHE_ACCESS_REMOTE_READ = 4,
    /// `IBV_ACCESS_REMOTE_ATOMIC`.
    REGCACHE_ACCESS_REMOTE_ATOMIC = 8,
}

/// Cache configuration. Fill with `regcache_config_default` or
/// `regcache_config_from_env`, then adjust.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
pub struct regcache_config {
    /// Maximum cached regions (≥ 1). `REGCACHE_MAX_REGIONS`.
    pub max_regions: u64,
    /// Maximum bytes in cached regions (≥ 1). `REGCACHE_MAX_BYTES`.
    pub max_bytes: u64,
    /// Merge overlapping and adjacent regions: 0 off, 1 on (the default),
    /// 2 adaptive. `REGCACHE_MERGE`.
    pub merge: u32,
    /// A `regcache_registrar` value. `REGCACHE_REGISTRAR`.
    pub registrar: u32,
    /// A `regcache_monitor` value. `REGCACHE_MONITOR`.
    pub monitor: u32,
    /// A `regcache_verify` value (0, off, is the default). `REGCACHE_VERIFY`.
    /// This field was `reserved` (must be 0) before verify mode: same place,
    /// same meaning of 0.
    pub verify: u32,
}

/// The hit check (`regcache_config.verify`, `REGCACHE_VERIFY=off|pfn`).
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum regcache_verify {
    /// No check (the default).
    REGCACHE_VERIFY_OFF = 0,
    /// Every hit compares the physical frame numbers of the request's pages
    /// (`/proc/self/pagemap`) with those recorded at registration; a
    /// mismatch invalidates, registers afresh, is reported once on stderr
    /// and counted (`regcache_stats.verify_mismatches`). Needs
    /// `CAP_SYS_ADMIN`; without it the cache logs why and runs unchecked.
    REGCACHE_VERIFY_PFN = 1,
}

/// Makes the C statistics struct and its conversion from
/// [`regcache::Stats`] from the one list of its fields
/// (`stats_fields.rs`; `cargo xtask codegen` reads the same list).
macro_rules! stats_fields {
    (
        $(#[doc = $sdoc:literal])*
        pub struct regcache_stats {
            $( $(#[doc = $doc:literal])* $field:ident, )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[repr(C)]
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct regcache_stats {
            $( $(#[doc = $doc])* pub $field: u64, )*
        }

        impl From<Stats> for regcache_stats {
            fn from(s: Stats) -> Self {
                Self { $( $field: s.$field, )* }
            }
        }
    };
}

include!("stats_fields.rs");

pub(crate) fn kind_of(v: u32) -> Option<RegistrarKind> {
    Some(match v {
        0 => RegistrarKind::Auto,
        1 => RegistrarKind::Pin,
        2 => RegistrarKind::Verbs,
        _ => return None,
    })
}

pub(crate) fn monitor_of(v: u32) -> Option<regcache_monitor> {
    use regcache_monitor::*;
    Some(match v {
        0 => REGCACHE_MONITOR_AUTO,
        1 => REGCACHE_MONITOR_KERNEL,
        2 => REGCACHE_MONITOR_UFFD,
        3 => REGCACHE_MONITOR_EXTERNAL,
        4 => REGCACHE_MONITOR_NONE,
        5 => REGCACHE_MONITOR_PATCH,
        _ => return None,
    })
}

pub(crate) fn monitor_to_c(m: MonitorKind) -> regcache_monitor {
    use regcache_monitor::*;
    match m {
        MonitorKind::Auto => REGCACHE_MONITOR_AUTO,
        MonitorKind::Kernel => REGCACHE_MONITOR_KERNEL,
        MonitorKind::Uffd => REGCACHE_MONITOR_UFFD,
        MonitorKind::External => REGCACHE_MONITOR_EXTERNAL,
        MonitorKind::Patch => REGCACHE_MONITOR_PATCH,
        _ => REGCACHE_MONITOR_NONE,
    }
}

fn monitor_from_c(m: regcache_monitor) -> MonitorKind {
    use regcache_monitor::*;
    match m {
        REGCACHE_MONITOR_AUTO => MonitorKind::Auto,
        REGCACHE_MONITOR_KERNEL => MonitorKind::Kernel,
        REGCACHE_MONITOR_UFFD => MonitorKind::Uffd,
        REGCACHE_MONITOR_EXTERNAL => MonitorKind::External,
        REGCACHE_MONITOR_NONE => MonitorKind::None,
        REGCACHE_MONITOR_PATCH => MonitorKind::Patch,
    }
}

fn merge_to_c(m: Merge) -> u32 {
    match m {
        Merge::Off => 0,
        Merge::On => 1,
        Merge::Adaptive => 2,
    }
}

fn default_config() -> regcache_config {
    let c = Config::default();
    regcache_config {
        max_regions: c.max_regions as u64,
        max_bytes: c.max_bytes,
        merge: merge_to_c(c.merge),
        registrar: regcache_registrar::REGCACHE_REGISTRAR_AUTO as u32,
        monitor: monitor_to_c(c.monitor) as u32,
        verify: regcache_verify::REGCACHE_VERIFY_OFF as u32,
    }
}

pub(crate) fn env_config() -> Result<regcache_config, Error> {
    let env_err = |e: String| Error::new(REGCACHE_ERR_CONFIG_ENV, e);
    let c = Config::from_env().map_err(|e| env_err(e.to_string()))?;
    let mut out = default_config();
    out.max_regions = c.max_regions as u64;
    out.max_bytes = c.max_bytes;
    out.merge = merge_to_c(c.merge);
    if let Ok(v) = std::env::var("REGCACHE_REGISTRAR") {
        out.registrar = match v.trim() {
            "auto" => 0,
            "pin" => 1,
            "verbs" => 2,
            _ => {
                return Err(env_err(format!(
                    "REGCACHE_REGISTRAR={v:?} is not valid: expected one of auto, pin, verbs"
                )));
            }
        };
    }
    out.monitor = monitor_to_c(c.monitor) as u32;
    out.verify = match c.verify {
        Verify::Off => regcache_verify::REGCACHE_VERIFY_OFF,
        Verify::Pfn => regcache_verify::REGCACHE_VERIFY_PFN,
    } as u32;
    Ok(out)
}

/// Fill `out` with the built-in defaults (no environment).
///
/// # Errors
/// `REGCACHE_ERR_NULL_ARGUMENT`.
///
/// # Safety
/// `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_config_default(out: *mut regcache_config) -> regcache_result {
    // SAFETY: out is NULL or writable (contract).
    ffi_guard(|| unsafe { write_out(out, "out", default_config()) })
}

/// Fill `out` with the defaults overridden by `REGCACHE_MAX_REGIONS`,
/// `REGCACHE_MAX_BYTES`, `REGCACHE_MERGE`, `REGCACHE_REGISTRAR` and
/// `REGCACHE_MONITOR` where set.
///
/// # Errors
/// `REGCACHE_ERR_CONFIG_ENV` for a malformed variable: `regcache_last_error`
/// names the variable, its value and what is accepted; `out` is untouched.
///
/// # Safety
/// `out` is NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn regcache_config_from_env(out: *mut regcache_config) -> regcache_result {
    ffi_guard(|| {
        let out = Out::new(out, "out")?;
        let c = env_config()?;
        // SAFETY: out is non-NULL and writable (contract).
        unsafe { out.write(c) }
    })
}

/// Check a C configuration and convert it: the registrar to open and the
/// cache's configuration.
///
/// # Errors
/// `REGCACHE_ERR_INVALID_ARGUMENT`: a zero limit, `merge` not 0, 1 or 2, an
/// unknown registrar, monitor or verify mode.
pub(crate) fn checked(c: &regcache_config) -> Result<(RegistrarKind, Config), Error> {
    let bad = |what: String| Error::new(REGCACHE_ERR_INVALID_ARGUMENT, what);
    if c.max_regions == 0 || c.max_bytes == 0 {
        return Err(bad("max_regions and max_bytes must be at least 1".into()));
    }
    if c.merge > 2 || c.verify > 1 {
        return Err(bad(format!(
            "merge must be 0 (off), 1 (on) or 2 (adaptive) (is {}), verify must be 0 (off) or 1 (pfn) (is {})",
            c.merge, c.verify
        )));
    }
    let kind =
        kind_of(c.registrar).ok_or_else(|| bad(format!("unknown registrar {}", c.registrar)))?;
    let monitor =
        monitor_of(c.monitor).ok_or_else(|| bad(format!("unknown monitor {}", c.monitor)))?;
    let config = Config {
        max_regions: usize::try_from(c.max_regions).unwrap_or(usize::MAX),
        max_bytes: c.max_bytes,
        merge: match c.merge {
            0 => Merge::Off,
            1 => Merge::On,
            _ => Merge::Adaptive,
        },
        // Not in the C struct (its layout is the ABI): the default.
        eviction: Eviction::default(),
        monitor: monitor_from_c(monitor),
        verify: if c.verify == 1 {
            Verify::Pfn
        } else {
            Verify::Off
        },
    };
    Ok((kind, config))
}
