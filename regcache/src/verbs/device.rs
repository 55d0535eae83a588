//! Which RDMA device: listing them, where each sits (netdev, NUMA node),
//! and the choice of the one closest to the calling thread.
//!
//! With several devices, [`crate::VerbsRegistrar::open`] without a name takes the
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

use super::WHAT;
use crate::RegistrarError;
use sideway::ibverbs::device::{DeviceInfo, DeviceList, GetDeviceListErrorKind};
use std::path::{Path, PathBuf};

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
        locate_all(&device_list()?)
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

/// Every device of `list`, located, in its order.
///
/// # Errors
/// [`RegistrarError::Unavailable`] when the list is empty.
pub(super) fn locate_all(list: &DeviceList) -> Result<Vec<RdmaDevice>, RegistrarError> {
    let devices: Vec<RdmaDevice> = list.iter().map(|d| RdmaDevice::locate(d.name())).collect();
    if devices.is_empty() {
        return Err(no_device_error());
    }
    Ok(devices)
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
pub(super) fn closest(devices: &[RdmaDevice]) -> usize {
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

pub(super) fn device_list() -> Result<DeviceList, RegistrarError> {
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

pub(super) fn no_device_error() -> RegistrarError {
    RegistrarError::Unavailable {
        what: WHAT,
        reason: "no RDMA device found (for SoftRoCE: `modprobe rdma_rxe && \
                 rdma link add rxe0 type rxe netdev <interface>`)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
