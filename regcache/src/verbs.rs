//! The `verbs` registrar: real `ibv_reg_mr` in an ibverbs protection domain.
//!
//! This is the one module that calls `ibv_reg_mr` and `ibv_dereg_mr`
//! (dangerous calls go through one place each). Everything else about the
//! device — listing, opening, the protection domain, queue pairs — goes
//! through [`sideway`], the safe layer over `rdma-mummy-sys`.
//!
//! ## Loading
//!
//! `rdma-mummy-sys` does not link against libibverbs: it `dlopen`s
//! `libibverbs.so.1` at run time, so the crate builds on a machine with no
//! RDMA packages (it needs `cmake` and libclang for its build script). On
//! such a machine every verb fails with `EOPNOTSUPP`, which
//! [`RdmaDevice::list`] reports as [`RegistrarError::Unavailable`] with the
//! reason in words. A kernel without RDMA support makes
//! `ibv_get_device_list` fail with `ENOSYS`; a kernel with support but no
//! device returns an empty list. All three are `Unavailable { what: "RDMA
//! device", .. }`, so `--registrar auto` ([`crate::open_registrar`]) falls
//! back to the `pin` registrar.
//!
//! ## Which device
//!
//! With several devices, [`VerbsRegistrar::open`] without a name takes the
//! one closest to the calling thread: the device whose NUMA node has the
//! smallest distance (`/sys/devices/system/node/nodeN/distance`) from the
//! node of the CPU the thread runs on (`sched_getcpu`). A PCI device's node
//! is `/sys/class/infiniband/<dev>/device/numa_node`. SoftRoCE (`rxe`) has
//! no PCI parent of its own: it is mapped through the network device it is
//! bound to (`/sys/class/infiniband/<dev>/parent`, else the first entry of
//! `ports/1/gid_attrs/ndevs/`), then that netdev's device, walking up the
//! sysfs device path to the first `numa_node`. Unknown nodes sort after
//! known close ones and ties keep libibverbs' order.
//!
//! By default this reads sysfs directly: the answer needed is one number
//! per device, and it keeps `libhwloc`/`libudev` out of the build. With the
//! `hwloc` feature, hwloc's topology decides first (the OS device — for
//! rxe, the OS device of its netdev — and whether its first non-I/O
//! ancestor's cpuset holds the CPU the thread last ran on), and sysfs is
//! the fallback when hwloc cannot place any device.
//!
//! ## Ownership
//!
//! A [`ProtectionDomain`] is a cheap `Arc` handle; every [`MemoryRegion`]
//! holds one, so a registration keeps its protection domain (and the
//! device context under it) alive. [`Registrar::deregister`] reports
//! `ibv_dereg_mr` failures; a `MemoryRegion` dropped without it is
//! deregistered by `Drop`, which logs a failure and never panics.

use crate::{AccessFlags, Keys, LKey, RKey, Registrar, RegistrarError};
use rdma_mummy_sys::{ibv_access_flags, ibv_dereg_mr, ibv_mr, ibv_reg_mr};
use sideway::ibverbs::device::{DeviceInfo, DeviceList, GetDeviceListErrorKind};
use sideway::ibverbs::device_context::DeviceContext;
use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use umn::AddrRange;

const WHAT: &str = "RDMA device";

/// One RDMA device as libibverbs lists it, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaDevice {
    /// The device name (`mlx5_0`, `rxe0`).
    pub name: String,
    /// The network device it is bound to, where there is one (always for
    /// RoCE and SoftRoCE).
    pub netdev: Option<String>,
    /// The NUMA node it is attached to, when sysfs knows it.
    pub numa_node: Option<u32>,
}

impl RdmaDevice {
    /// The RDMA devices of this host, in libibverbs' order.
    ///
    /// # Errors
    /// [`RegistrarError::Unavailable`] when libibverbs cannot be loaded,
    /// the kernel has no RDMA support, or there is no device.
    pub fn list() -> Result<Vec<RdmaDevice>, RegistrarError> {
        let list = device_list()?;
        let devices: Vec<RdmaDevice> = list.iter().map(|d| RdmaDevice::locate(d.name())).collect();
        if devices.is_empty() {
            return Err(no_device_error());
        }
        Ok(devices)
    }

    /// Look a device up in sysfs (netdev, NUMA node); see the module docs.
    fn locate(name: String) -> RdmaDevice {
        let base = Path::new("/sys/class/infiniband").join(&name);
        let netdev = read_trimmed(&base.join("parent"))
            .filter(|s| Path::new("/sys/class/net").join(s).exists())
            .or_else(|| {
                let ndevs = base.join("ports/1/gid_attrs/ndevs");
                read_trimmed(&ndevs.join("0")).filter(|s| !s.is_empty())
            });
        let numa_node = numa_of_device_dir(&base.join("device")).or_else(|| {
            netdev.as_ref().and_then(|n| {
                numa_of_device_dir(&Path::new("/sys/class/net").join(n).join("device"))
            })
        });
        RdmaDevice {
            name,
            netdev,
            numa_node,
        }
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Walk up a sysfs device directory to the first `numa_node` that is not -1.
fn numa_of_device_dir(dir: &Path) -> Option<u32> {
    let mut dir: PathBuf = std::fs::canonicalize(dir).ok()?;
    loop {
        if let Some(n) = read_trimmed(&dir.join("numa_node")).and_then(|s| s.parse::<i64>().ok()) {
            if n >= 0 {
                return u32::try_from(n).ok();
            }
        }
        if !dir.pop() || dir == Path::new("/sys/devices") || dir == Path::new("/") {
            return None;
        }
    }
}

/// The NUMA node of the CPU the calling thread runs on.
fn current_numa_node() -> Option<u32> {
    // SAFETY: sched_getcpu takes no arguments and only returns a number.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return None;
    }
    let dir = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}")).ok()?;
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
        .next()
}

/// SLIT distance from node `a` to node `b` (10 = local), when known.
fn numa_distance(a: u32, b: u32) -> Option<u32> {
    let s = read_trimmed(Path::new(&format!(
        "/sys/devices/system/node/node{a}/distance"
    )))?;
    s.split_whitespace().nth(b as usize)?.parse().ok()
}

/// Index into `devices` of the one closest to the calling thread.
fn closest(devices: &[RdmaDevice]) -> usize {
    #[cfg(feature = "hwloc")]
    if let Some(i) = hwloc_topology::closest(devices) {
        return i;
    }
    let here = current_numa_node();
    let score = |d: &RdmaDevice| -> u32 {
        match (here, d.numa_node) {
            (Some(h), Some(n)) if h == n => 10,
            (Some(h), Some(n)) => numa_distance(h, n).unwrap_or(20),
            _ => 1000,
        }
    };
    devices
        .iter()
        .enumerate()
        .min_by_key(|(i, d)| (score(d), *i))
        .map_or(0, |(i, _)| i)
}

/// Device locality with hwloc (feature `hwloc`): the device's OS-device
/// object (`OpenFabrics` type, named like the RDMA device), or for rxe the
/// network OS device of its netdev; its first non-I/O ancestor's cpuset
/// against the CPU the calling thread last ran on.
#[cfg(feature = "hwloc")]
mod hwloc_topology {
    use super::RdmaDevice;
    use hwlocality::Topology;
    use hwlocality::cpu::binding::CpuBindingFlags;
    use hwlocality::object::types::ObjectType;
    use hwlocality::topology::builder::TypeFilter;

    /// `None` when hwloc cannot say (no topology, device not found).
    pub(super) fn closest(devices: &[RdmaDevice]) -> Option<usize> {
        let topo = Topology::builder()
            .with_io_type_filter(TypeFilter::KeepImportant)
            .ok()?
            .build()
            .ok()?;
        let here = topo.last_cpu_location(CpuBindingFlags::THREAD).ok()?;
        let score = |d: &RdmaDevice| -> Option<u32> {
            let names: Vec<&str> = std::iter::once(d.name.as_str())
                .chain(d.netdev.as_deref())
                .collect();
            let osdev = topo.objects_with_type(ObjectType::OSDevice).find(|o| {
                o.name()
                    .and_then(|n| n.to_str().ok())
                    .is_some_and(|n| names.contains(&n))
            })?;
            let cpus = osdev.first_non_io_ancestor()?.cpuset()?;
            Some(if cpus.intersects(&here) { 0 } else { 1 })
        };
        let scores: Vec<Option<u32>> = devices.iter().map(score).collect();
        if scores.iter().all(Option::is_none) {
            return None;
        }
        scores
            .iter()
            .enumerate()
            .min_by_key(|(i, s)| (s.unwrap_or(2), *i))
            .map(|(i, _)| i)
    }
}

fn device_list() -> Result<DeviceList, RegistrarError> {
    DeviceList::new().map_err(|e| {
        let code = match &e.0 {
            GetDeviceListErrorKind::Ibverbs(io) => io.raw_os_error(),
            _ => None,
        };
        let reason = match code {
            Some(libc::EOPNOTSUPP) => {
                "libibverbs.so.1 could not be loaded (install rdma-core/libibverbs1)".to_owned()
            }
            Some(libc::ENOSYS) => {
                "the kernel has no RDMA support (ibv_get_device_list: ENOSYS)".to_owned()
            }
            _ => format!("ibv_get_device_list failed: {e:?}"),
        };
        RegistrarError::Unavailable { what: WHAT, reason }
    })
}

fn no_device_error() -> RegistrarError {
    RegistrarError::Unavailable {
        what: WHAT,
        reason: "no RDMA device found (for SoftRoCE: `modprobe rdma_rxe && \
                 rdma link add rxe0 type rxe netdev <interface>`)"
            .to_owned(),
    }
}

struct PdInner {
    /// Declared first: dropped (ibv_dealloc_pd) before the context it
    /// holds another reference to.
    pd: Arc<sideway::ibverbs::protection_domain::ProtectionDomain>,
    context: Arc<DeviceContext>,
    device: RdmaDevice,
}

/// An ibverbs protection domain on an open device. Cloning is cheap (an
/// `Arc`); the domain is deallocated when the last clone — including the
/// ones held by [`MemoryRegion`]s and queue pairs — goes away.
#[derive(Clone)]
pub struct ProtectionDomain(Arc<PdInner>);

impl fmt::Debug for ProtectionDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionDomain")
            .field("device", &self.0.device)
            .finish_non_exhaustive()
    }
}

impl ProtectionDomain {
    /// Open a device and allocate a protection domain on it. `name`
    /// selects the device (`"rxe0"`); `None` takes the one closest to the
    /// calling thread (see the module docs).
    ///
    /// # Errors
    /// [`RegistrarError::Unavailable`] when there is no such device (or
    /// none at all); [`RegistrarError::Os`] naming `ibv_open_device` or
    /// `ibv_alloc_pd` when those fail.
    pub fn open(name: Option<&str>) -> Result<ProtectionDomain, RegistrarError> {
        let list = device_list()?;
        let infos: Vec<RdmaDevice> = list.iter().map(|d| RdmaDevice::locate(d.name())).collect();
        if infos.is_empty() {
            return Err(no_device_error());
        }
        let index = match name {
            Some(want) => infos.iter().position(|d| d.name == want).ok_or_else(|| {
                RegistrarError::Unavailable {
                    what: WHAT,
                    reason: format!(
                        "no RDMA device named {want:?} (have: {})",
                        infos
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            })?,
            None => closest(&infos),
        };
        let device = list.get(index).ok_or_else(no_device_error)?;
        let context = device.open().map_err(|e| RegistrarError::Os {
            call: "ibv_open_device",
            source: io_of(&e),
        })?;
        let pd = context.alloc_pd().map_err(|e| RegistrarError::Os {
            call: "ibv_alloc_pd",
            source: io_of(&e),
        })?;
        Ok(ProtectionDomain(Arc::new(PdInner {
            pd,
            context,
            device: infos[index].clone(),
        })))
    }

    /// The device this domain lives on.
    pub fn device(&self) -> &RdmaDevice {
        &self.0.device
    }

    /// The open device context (for completion queues, port and GID
    /// queries).
    pub fn context(&self) -> &Arc<DeviceContext> {
        &self.0.context
    }

    /// The `sideway` protection domain (for queue pairs).
    pub fn as_sideway(&self) -> &Arc<sideway::ibverbs::protection_domain::ProtectionDomain> {
        &self.0.pd
    }

    /// Register `range` for `access` in this domain: `ibv_reg_mr`.
    ///
    /// The range is registered exactly as given (the NIC pins whole pages
    /// under it). The memory may later be unmapped by the application: the
    /// region then still pins the old pages, which is the stale-registration
    /// problem the cache's invalidation exists for; it is never undefined
    /// behaviour in this process.
    ///
    /// # Errors
    /// - empty range: [`RegistrarError::NotMapped`] with `EINVAL`;
    /// - `ENOMEM`/`EAGAIN` (e.g. `RLIMIT_MEMLOCK` for an unprivileged
    ///   process): [`RegistrarError::NoResources`];
    /// - `EFAULT` (part of the range not mapped, or not writable when write
    ///   access is asked): [`RegistrarError::NotMapped`];
    /// - `EACCES`, or `EINVAL`/`EOPNOTSUPP` for flags (remote write or
    ///   atomic without local write, flags the device lacks):
    ///   [`RegistrarError::AccessRefused`];
    /// - anything else: [`RegistrarError::Os`].
    pub fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<MemoryRegion, RegistrarError> {
        const CALL: &str = "ibv_reg_mr";
        if range.is_empty() || range.start() == 0 {
            return Err(RegistrarError::NotMapped {
                call: CALL,
                range,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
        let len = usize::try_from(range.len()).map_err(|_| RegistrarError::NotMapped {
            call: CALL,
            range,
            source: std::io::Error::from_raw_os_error(libc::EOVERFLOW),
        })?;
        let flags = ibv_access_flags(access.bits());
        // SAFETY: the PD pointer is valid while `self.0` lives (we hold it).
        // ibv_reg_mr does not dereference `addr` from user space: the
        // kernel pins the pages under [addr, addr+len) or fails with EFAULT
        // if they are not mapped, so any address is sound to pass.
        let mr = unsafe {
            ibv_reg_mr(
                self.0.pd.pd().as_ptr(),
                range.start() as *mut libc::c_void,
                len,
                flags.0 as i32,
            )
        };
        match NonNull::new(mr) {
            Some(mr) => Ok(MemoryRegion {
                mr: Some(mr),
                range,
                access,
                pd: self.clone(),
            }),
            None => Err(map_reg_error(
                std::io::Error::last_os_error(),
                range,
                access,
            )),
        }
    }
}

/// The `io::Error` inside a sideway error, or a generic one.
fn io_of(e: &(dyn std::error::Error + 'static)) -> std::io::Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return std::io::Error::from_raw_os_error(code);
            }
        }
        cur = err.source();
    }
    // sideway's error kinds are `#[error(transparent)]` around the
    // io::Error, which hides it from `source()`; its Debug form keeps the
    // OS error code.
    std::io::Error::other(format!("{e:?}"))
}

fn map_reg_error(err: std::io::Error, range: AddrRange, access: AccessFlags) -> RegistrarError {
    const CALL: &str = "ibv_reg_mr";
    let errno = err.raw_os_error().unwrap_or(0);
    let needs_local_write = access
        .intersects(AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_ATOMIC)
        && !access.contains(AccessFlags::LOCAL_WRITE);
    let unknown_bits = access.bits() & !AccessFlags::all().bits() != 0;
    match errno {
        libc::ENOMEM | libc::EAGAIN => RegistrarError::NoResources {
            call: CALL,
            source: err,
        },
        libc::EFAULT => RegistrarError::NotMapped {
            call: CALL,
            range,
            source: err,
        },
        libc::EACCES => RegistrarError::AccessRefused {
            call: CALL,
            range,
            source: err,
        },
        libc::EINVAL | libc::EOPNOTSUPP if needs_local_write || unknown_bits => {
            RegistrarError::AccessRefused {
                call: CALL,
                range,
                source: err,
            }
        }
        _ => RegistrarError::Os {
            call: CALL,
            source: err,
        },
    }
}

/// One `ibv_mr`. Holds its [`ProtectionDomain`]. Deregistered by
/// [`Registrar::deregister`], or by `Drop` (failure logged).
pub struct MemoryRegion {
    /// `None` once deregistered.
    mr: Option<NonNull<ibv_mr>>,
    range: AddrRange,
    access: AccessFlags,
    pd: ProtectionDomain,
}

// SAFETY: an ibv_mr is an immutable record after ibv_reg_mr returns (we
// only read lkey/rkey); libibverbs allows ibv_dereg_mr from any thread, and
// `deregister`/`Drop` take the region by value or `&mut`, so it happens once.
unsafe impl Send for MemoryRegion {}
// SAFETY: shared access only reads the immutable lkey/rkey fields.
unsafe impl Sync for MemoryRegion {}

impl fmt::Debug for MemoryRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryRegion")
            .field("range", &self.range)
            .field("access", &self.access)
            .field("keys", &self.keys())
            .field("device", &self.pd.device().name)
            .finish()
    }
}

impl MemoryRegion {
    /// The registered range.
    pub fn range(&self) -> AddrRange {
        self.range
    }

    /// The access flags it was registered with.
    pub fn access(&self) -> AccessFlags {
        self.access
    }

    /// Its local and remote keys.
    pub fn keys(&self) -> Keys {
        match self.mr {
            Some(mr) => {
                // SAFETY: `mr` is a live ibv_mr (not yet deregistered) and its
                // lkey/rkey fields never change after registration.
                let m = unsafe { mr.as_ref() };
                Keys {
                    lkey: LKey(m.lkey),
                    rkey: RKey(m.rkey),
                }
            }
            None => Keys {
                lkey: LKey(0),
                rkey: RKey(0),
            },
        }
    }

    /// The protection domain it belongs to.
    pub fn protection_domain(&self) -> &ProtectionDomain {
        &self.pd
    }

    fn dereg(&mut self) -> Result<(), RegistrarError> {
        let Some(mr) = self.mr.take() else {
            return Ok(());
        };
        // SAFETY: `mr` came from ibv_reg_mr and is deregistered exactly once
        // (taken out of the Option above). The PD is still alive: we hold it.
        let rc = unsafe { ibv_dereg_mr(mr.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(RegistrarError::Os {
                call: "ibv_dereg_mr",
                source: std::io::Error::from_raw_os_error(rc),
            })
        }
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        if let Err(e) = self.dereg() {
            log::error!("dropping {:?}: {e}", self.range);
        }
    }
}

/// The ibverbs registrar: `ibv_reg_mr` in one [`ProtectionDomain`].
#[derive(Debug, Clone)]
pub struct VerbsRegistrar {
    pd: ProtectionDomain,
}

impl VerbsRegistrar {
    /// Open the device named `name` (or the closest one, `None`) and
    /// allocate a protection domain: see [`ProtectionDomain::open`].
    ///
    /// # Errors
    /// As [`ProtectionDomain::open`].
    pub fn open(name: Option<&str>) -> Result<VerbsRegistrar, RegistrarError> {
        ProtectionDomain::open(name).map(VerbsRegistrar::new)
    }

    /// A registrar registering in an existing protection domain (the one
    /// the queue pairs live in).
    pub fn new(pd: ProtectionDomain) -> VerbsRegistrar {
        VerbsRegistrar { pd }
    }

    /// Its protection domain.
    pub fn protection_domain(&self) -> &ProtectionDomain {
        &self.pd
    }
}

impl Registrar for VerbsRegistrar {
    type Region = MemoryRegion;

    fn name(&self) -> &'static str {
        "verbs"
    }

    fn register(
        &self,
        range: AddrRange,
        access: AccessFlags,
    ) -> Result<MemoryRegion, RegistrarError> {
        self.pd.register(range, access)
    }

    fn keys(&self, region: &MemoryRegion) -> Option<Keys> {
        Some(region.keys())
    }

    fn deregister(&self, mut region: MemoryRegion) -> Result<(), RegistrarError> {
        region.dereg()
    }
}

/// Which registrar [`open_registrar`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrarKind {
    /// `verbs` when an RDMA device is there, else `pin` (logged).
    #[default]
    Auto,
    /// The `mlock` registrar.
    Pin,
    /// The ibverbs registrar; failing when there is no device.
    Verbs,
}

impl std::str::FromStr for RegistrarKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RegistrarKind::Auto),
            "pin" => Ok(RegistrarKind::Pin),
            "verbs" => Ok(RegistrarKind::Verbs),
            other => Err(format!(
                "unknown registrar {other:?} (expected auto, pin or verbs)"
            )),
        }
    }
}

/// Either registrar, chosen at run time by [`open_registrar`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyRegistrar {
    /// `mlock` pinning.
    Pin(crate::PinRegistrar),
    /// ibverbs.
    Verbs(VerbsRegistrar),
}

/// A registration of an [`AnyRegistrar`].
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyRegion {
    /// From the pin registrar.
    Pin(crate::PinnedRegion),
    /// From the verbs registrar.
    Verbs(MemoryRegion),
}

/// Make a registrar of `kind`. `device` names the RDMA device for `verbs`
/// and `auto` (`None`: the closest one).
///
/// # Errors
/// For [`RegistrarKind::Verbs`], the errors of [`VerbsRegistrar::open`].
/// `Auto` fails only when verbs fails with something other than
/// [`RegistrarError::Unavailable`] (a device that exists but cannot be
/// opened is reported, not papered over).
pub fn open_registrar(
    kind: RegistrarKind,
    device: Option<&str>,
) -> Result<AnyRegistrar, RegistrarError> {
    match kind {
        RegistrarKind::Pin => Ok(AnyRegistrar::Pin(crate::PinRegistrar::new())),
        RegistrarKind::Verbs => VerbsRegistrar::open(device).map(AnyRegistrar::Verbs),
        RegistrarKind::Auto => match VerbsRegistrar::open(device) {
            Ok(v) => Ok(AnyRegistrar::Verbs(v)),
            Err(RegistrarError::Unavailable { what, reason }) => {
                log::info!("registrar auto: no {what} ({reason}); using pin (mlock)");
                Ok(AnyRegistrar::Pin(crate::PinRegistrar::new()))
            }
            Err(e) => Err(e),
        },
    }
}

impl Registrar for AnyRegistrar {
    type Region = AnyRegion;

    fn name(&self) -> &'static str {
        match self {
            AnyRegistrar::Pin(p) => p.name(),
            AnyRegistrar::Verbs(v) => v.name(),
        }
    }

    fn register(&self, range: AddrRange, access: AccessFlags) -> Result<AnyRegion, RegistrarError> {
        match self {
            AnyRegistrar::Pin(p) => p.register(range, access).map(AnyRegion::Pin),
            AnyRegistrar::Verbs(v) => v.register(range, access).map(AnyRegion::Verbs),
        }
    }

    fn keys(&self, region: &AnyRegion) -> Option<Keys> {
        match region {
            AnyRegion::Pin(_) => None,
            AnyRegion::Verbs(r) => Some(r.keys()),
        }
    }

    fn deregister(&self, region: AnyRegion) -> Result<(), RegistrarError> {
        match (self, region) {
            (AnyRegistrar::Pin(p), AnyRegion::Pin(r)) => p.deregister(r),
            (AnyRegistrar::Verbs(v), AnyRegion::Verbs(r)) => v.deregister(r),
            (_, AnyRegion::Verbs(r)) => {
                // Not ours, but still a live MR: drop deregisters it.
                drop(r);
                Ok(())
            }
            (_, AnyRegion::Pin(_)) => Err(RegistrarError::Os {
                call: "munlock",
                source: std::io::Error::other("pin region given to a verbs registrar"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        let r = AddrRange::new(0x1000, 0x2000).unwrap();
        let e = |n| std::io::Error::from_raw_os_error(n);
        let rw = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE;
        assert!(map_reg_error(e(libc::ENOMEM), r, rw).is_resource_exhausted());
        assert!(map_reg_error(e(libc::EAGAIN), r, rw).is_resource_exhausted());
        assert!(matches!(
            map_reg_error(e(libc::EFAULT), r, rw),
            RegistrarError::NotMapped { .. }
        ));
        assert!(matches!(
            map_reg_error(e(libc::EACCES), r, rw),
            RegistrarError::AccessRefused { .. }
        ));
        assert!(matches!(
            map_reg_error(e(libc::EINVAL), r, AccessFlags::REMOTE_WRITE),
            RegistrarError::AccessRefused { .. }
        ));
        assert!(matches!(
            map_reg_error(e(libc::EINVAL), r, rw),
            RegistrarError::Os { .. }
        ));
    }

    #[test]
    fn kind_parses() {
        assert_eq!("auto".parse(), Ok(RegistrarKind::Auto));
        assert_eq!("pin".parse(), Ok(RegistrarKind::Pin));
        assert_eq!("verbs".parse(), Ok(RegistrarKind::Verbs));
        assert!("ucx".parse::<RegistrarKind>().is_err());
    }

    #[test]
    fn closest_prefers_known_local_node() {
        let d = |name: &str, n| RdmaDevice {
            name: name.into(),
            netdev: None,
            numa_node: n,
        };
        // Unknown node sorts last; ties keep list order.
        assert_eq!(closest(&[d("a", None), d("b", None)]), 0);
        if let Some(here) = current_numa_node() {
            assert_eq!(closest(&[d("a", None), d("b", Some(here))]), 1);
        }
    }
}
