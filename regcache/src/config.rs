//! [`Config`]: limits and policy, with `REGCACHE_*` environment overrides.

use std::fmt;

/// Cache configuration. Build with [`Config::default`] and adjust fields, or
/// read overrides from the environment with [`Config::from_env`].
///
/// | field | variable | default |
/// |---|---|---|
/// | `max_regions` | `REGCACHE_MAX_REGIONS` | 16384 |
/// | `max_bytes` | `REGCACHE_MAX_BYTES` | ¼ of physical memory |
/// | `merge` | `REGCACHE_MERGE` | `adaptive` |
/// | `eviction` | `REGCACHE_EVICTION` | `lru` |
/// | `monitor` | `REGCACHE_MONITOR` | `auto` |
/// | `verify` | `REGCACHE_VERIFY` | `off` |
///
/// Why these defaults (unlimited defaults are UCX's most reported rcache
/// problem: pinned memory that the OS can never reclaim):
/// - **16384 regions**: every region costs a kernel MR object and a NIC
///   translation-table entry (MPT/MTT on Mellanox hardware), and an MPI
///   rank's rendezvous working set is a few hundred to a few thousand
///   buffers; 16384 leaves headroom while bounding NIC context and the
///   cost of invalidation walks.
/// - **¼ of physical memory** (`sysconf(_SC_PHYS_PAGES) × page size / 4`):
///   pinned pages cannot be swapped or migrated; pinning more than a
///   quarter of RAM per rank starves the page cache and other ranks on the
///   node. `RLIMIT_MEMLOCK` is *not* used as the limit: the registrar's
///   `ENOMEM` already makes the cache evict and retry against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Maximum number of cached regions (≥ 1).
    pub max_regions: usize,
    /// Maximum bytes in cached regions (≥ one page). A request larger than
    /// this is served uncached.
    pub max_bytes: u64,
    /// Whether a miss merges overlapping and adjacent regions into one
    /// registration (see [`Merge`]).
    pub merge: Merge,
    /// Which idle region goes first when a limit is reached (see
    /// [`Eviction`]).
    pub eviction: Eviction,
    /// Where invalidation events come from (see [`MonitorKind`]).
    pub monitor: MonitorKind,
    /// Check every hit against the pages it registered (see [`Verify`]).
    pub verify: Verify,
}

/// Merging on a miss (`REGCACHE_MERGE`): `on`, `off` or `adaptive`.
///
/// Merging registers the hull of the request and the cached regions it
/// overlaps or touches, as UCX's rcache does: later requests spanning
/// neighbours hit. Its cost: an unmap of any part kills the whole merged
/// registration, so a short-lived buffer merged with a long-lived
/// neighbour takes the neighbour down (docs/RESULTS.md, `collective`:
/// 22.9 % merged against 49.8 % unmerged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Merge {
    /// Never merge: overlapping regions coexist.
    Off,
    /// Always merge (UCX's behaviour). The default: `Adaptive` has not
    /// met issue 17's targets (docs/RESULTS.md, "Policies": `halo` one hit
    /// short, registrar time above the better fixed mode on four traces),
    /// and over Open MPI's openib it lost the RDMA pipeline protocol's
    /// merging: once a reallocated buffer's memory was seen invalidated,
    /// its chunks (at offsets that shift every message) never merged
    /// again — NetPIPE to 4 MiB, 256 misses per rank against 19 with `On`
    /// (`cargo xtask bench --rdma`, docs/notes-openib-rxe.md).
    #[default]
    On,
    /// Merge, except across a boundary where an invalidation once killed
    /// a merged region whose other side survived, and not in memory seen
    /// invalidated while cached (the cache's "do not merge across" table;
    /// see docs/ARCHITECTURE.md, "Policy"). Its hit rate is at least the
    /// better of `on` and `off` on every built-in workload and recorded
    /// trace at 16384, 64 and 16 regions but `halo`, where learning costs
    /// one hit of 16 200 (docs/RESULTS.md, "Policies").
    Adaptive,
}

impl Merge {
    /// The name used in `REGCACHE_MERGE` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Merge::Off => "off",
            Merge::On => "on",
            Merge::Adaptive => "adaptive",
        }
    }

    /// Parse a `REGCACHE_MERGE` value: `adaptive`, or a boolean (`on`,
    /// `1`, `true`, `yes` / `off`, `0`, `false`, `no`).
    pub fn parse(s: &str) -> Option<Merge> {
        if s.trim().eq_ignore_ascii_case("adaptive") {
            return Some(Merge::Adaptive);
        }
        parse_bool(s).map(|b| if b { Merge::On } else { Merge::Off })
    }

    /// `true` unless [`Merge::Off`].
    pub fn merges(self) -> bool {
        self != Merge::Off
    }
}

impl From<bool> for Merge {
    fn from(on: bool) -> Self {
        if on { Merge::On } else { Merge::Off }
    }
}

/// Eviction order (`REGCACHE_EVICTION`): which idle region goes when a
/// limit (regions, bytes, or the registrar's `ENOMEM`) needs room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Eviction {
    /// Exact least recently used (release order).
    #[default]
    Lru,
    /// Cost-aware: among the [`crate::COST_WINDOW`] least recently used
    /// idle regions, the one whose re-registration would cost least per
    /// unit of the limit it holds (GreedyDual-Size's ratio, over an LRU
    /// window; cost model [`crate::registration_cost_ns`]). See
    /// docs/ARCHITECTURE.md, "Cost-aware eviction".
    Cost,
}

impl Eviction {
    /// The name used in `REGCACHE_EVICTION` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Eviction::Lru => "lru",
            Eviction::Cost => "cost",
        }
    }

    /// Parse a `REGCACHE_EVICTION` value (`lru` or `cost`).
    pub fn parse(s: &str) -> Option<Eviction> {
        [Self::Lru, Self::Cost]
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// The hit check (`REGCACHE_VERIFY`): what a user turns on when they
/// suspect the cache hands out stale registrations, as UCX's
/// `UCX_RCACHE_CHECK_PFN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Verify {
    /// No check (the default; the hit path pays nothing for the mode).
    #[default]
    Off,
    /// Every hit compares the physical frame numbers of the request's
    /// pages (`/proc/self/pagemap`) with those recorded at registration; a
    /// mismatch invalidates the region, registers afresh, is reported once
    /// per range on stderr and counted ([`crate::Stats::verify_mismatches`]).
    /// Needs `CAP_SYS_ADMIN` (without it the kernel shows every PFN as 0:
    /// the cache then logs why and runs unchecked,
    /// [`crate::Cache::verify_error`]).
    Pfn,
}

impl Verify {
    /// The name used in `REGCACHE_VERIFY` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Verify::Off => "off",
            Verify::Pfn => "pfn",
        }
    }
}

/// The invalidation source a cache opens (`REGCACHE_MONITOR`).
///
/// Without a source, a cached registration outlives the application's
/// `munmap`/`free` and later transfers silently use the old pages: use
/// [`MonitorKind::None`] only when the caller invalidates every unmapped
/// range itself with [`crate::Cache::invalidate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MonitorKind {
    /// The best that works here: the kernel device, else the libc patch,
    /// else userfaultfd.
    /// If neither opens, the cache runs with no source and says so in its
    /// statistics and log.
    Auto,
    /// `/dev/ummunotify` (the project's kernel module).
    Kernel,
    /// userfaultfd with a monitor thread (no module needed).
    Uffd,
    /// libc's unmap-like functions patched to invalidate before the
    /// system call (`umn::Source::Patch`; no module, no privilege).
    Patch,
    /// Only what the host reports through [`crate::Cache::notify_unmapped`].
    External,
    /// No source at all.
    None,
}

impl MonitorKind {
    /// The name used in `REGCACHE_MONITOR` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            MonitorKind::Auto => "auto",
            MonitorKind::Kernel => "kernel",
            MonitorKind::Uffd => "uffd",
            MonitorKind::Patch => "patch",
            MonitorKind::External => "external",
            MonitorKind::None => "none",
        }
    }

    /// Parse a `REGCACHE_MONITOR` value.
    pub fn parse(s: &str) -> Option<MonitorKind> {
        [
            Self::Auto,
            Self::Kernel,
            Self::Uffd,
            Self::Patch,
            Self::External,
            Self::None,
        ]
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_regions: 16384,
            max_bytes: default_max_bytes(),
            merge: Merge::default(),
            eviction: Eviction::default(),
            monitor: MonitorKind::Auto,
            verify: Verify::Off,
        }
    }
}

fn default_max_bytes() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    if pages > 0 {
        (pages as u64).saturating_mul(umn::page_size()) / 4
    } else {
        1 << 30
    }
}

/// A malformed variable (the workspace's one such error, from `umn`).
pub use umn::ConfigError;

const SIZE_HELP: &str =
    "a positive decimal integer, optionally followed by K, M, G or T (powers of 1024)";
const MERGE_HELP: &str = "one of adaptive, 1, 0, true, false, yes, no, on, off";

impl Config {
    /// The defaults, overridden by `REGCACHE_MAX_REGIONS`,
    /// `REGCACHE_MAX_BYTES`, `REGCACHE_MERGE`, `REGCACHE_EVICTION`,
    /// `REGCACHE_MONITOR` and `REGCACHE_VERIFY` where set.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first malformed variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::default().with_overrides(|k| std::env::var(k).ok())
    }

    /// Apply overrides from a lookup function (the environment, or a test's
    /// map).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first malformed variable.
    pub fn with_overrides(
        mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if let Some(v) = get("REGCACHE_MAX_REGIONS") {
            self.max_regions = parse_size(&v)
                .filter(|&n| n >= 1 && n <= u32::MAX as u64 / 2)
                .ok_or(ConfigError {
                    variable: "REGCACHE_MAX_REGIONS",
                    value: v,
                    expected: SIZE_HELP,
                })? as usize;
        }
        if let Some(v) = get("REGCACHE_MAX_BYTES") {
            self.max_bytes = parse_size(&v).filter(|&n| n >= 1).ok_or(ConfigError {
                variable: "REGCACHE_MAX_BYTES",
                value: v,
                expected: SIZE_HELP,
            })?;
        }
        if let Some(v) = get("REGCACHE_MONITOR") {
            self.monitor = MonitorKind::parse(&v).ok_or(ConfigError {
                variable: "REGCACHE_MONITOR",
                value: v,
                expected: "one of auto, kernel, patch, uffd, external, none",
            })?;
        }
        if let Some(v) = get("REGCACHE_VERIFY") {
            self.verify = match v.trim().to_ascii_lowercase().as_str() {
                "pfn" => Verify::Pfn,
                "off" | "0" | "no" | "none" => Verify::Off,
                _ => {
                    return Err(ConfigError {
                        variable: "REGCACHE_VERIFY",
                        value: v,
                        expected: "one of off, pfn",
                    });
                }
            };
        }
        if let Some(v) = get("REGCACHE_MERGE") {
            self.merge = Merge::parse(&v).ok_or(ConfigError {
                variable: "REGCACHE_MERGE",
                value: v,
                expected: MERGE_HELP,
            })?;
        }
        if let Some(v) = get("REGCACHE_EVICTION") {
            self.eviction = Eviction::parse(&v).ok_or(ConfigError {
                variable: "REGCACHE_EVICTION",
                value: v,
                expected: "one of lru, cost",
            })?;
        }
        Ok(self)
    }
}

/// `"64K"` → 65536. `None` when malformed or overflowing.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        (i, 't' | 'T') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_regions={} max_bytes={} merge={} eviction={} monitor={} verify={}",
            self.max_regions,
            self.max_bytes,
            self.merge.name(),
            self.eviction.name(),
            self.monitor.name(),
            self.verify.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_errors_name_the_variable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Config::default()
            .with_overrides(env(&[
                ("REGCACHE_MAX_REGIONS", "100"),
                ("REGCACHE_MAX_BYTES", "64M"),
                ("REGCACHE_MERGE", "off"),
                ("REGCACHE_MONITOR", "external"),
                ("REGCACHE_VERIFY", "pfn"),
            ]))
            .unwrap();
        assert_eq!(c.verify, Verify::Pfn);
        let e = Config::default()
            .with_overrides(env(&[("REGCACHE_VERIFY", "md5")]))
            .unwrap_err();
        assert_eq!(e.variable, "REGCACHE_VERIFY");
        assert_eq!(
            (c.max_regions, c.max_bytes, c.merge),
            (100, 64 << 20, Merge::Off)
        );
        let m = |v: &'static str| {
            Config::default()
                .with_overrides(move |k| (k == "REGCACHE_MERGE").then(|| v.to_string()))
                .map(|c| c.merge)
        };
        assert_eq!(m("Adaptive").unwrap(), Merge::Adaptive);
        assert_eq!(m("on").unwrap(), Merge::On);
        assert_eq!(m("0").unwrap(), Merge::Off);
        assert_eq!(Config::default().merge, Merge::On);
        let e = Config::default()
            .with_overrides(|k| (k == "REGCACHE_EVICTION").then(|| "lfu".to_string()))
            .unwrap_err();
        assert_eq!(e.variable, "REGCACHE_EVICTION");
        assert!(e.to_string().contains("lru, cost"), "{e}");
        let cost = Config::default()
            .with_overrides(|k| (k == "REGCACHE_EVICTION").then(|| "COST".to_string()))
            .unwrap();
        assert_eq!(cost.eviction, Eviction::Cost);
        assert_eq!(c.monitor, MonitorKind::External);
        let e = Config::default()
            .with_overrides(env(&[("REGCACHE_MONITOR", "ptrace")]))
            .unwrap_err();
        assert!(
            e.to_string().contains("auto, kernel, patch, uffd, external, none"),
            "{e}"
        );
        let e = Config::default()
            .with_overrides(env(&[("REGCACHE_MERGE", "maybe")]))
            .unwrap_err();
        assert_eq!(e.variable, "REGCACHE_MERGE");
        assert!(e.to_string().contains("REGCACHE_MERGE=\"maybe\""), "{e}");
        let e = Config::default()
            .with_overrides(env(&[("REGCACHE_MAX_BYTES", "12Q")]))
            .unwrap_err();
        assert_eq!(e.variable, "REGCACHE_MAX_BYTES");
        assert!(
            Config::default()
                .with_overrides(env(&[("REGCACHE_MAX_REGIONS", "0")]))
                .is_err()
        );
        assert_eq!(parse_size("99999999999999999999"), None);
        assert_eq!(parse_size("17179869184T"), None);
        assert!(Config::default().max_bytes >= umn::page_size());
    }
}
