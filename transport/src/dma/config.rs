//! [`Config`]: the tunables of a registry handle, with
//! `REGCACHE_TRANSPORT_*` environment overrides.
//!
//! | field | variable | accepted | default |
//! |---|---|---|---|
//! | `force_bounce` | `REGCACHE_TRANSPORT_FORCE_BOUNCE` | `0`, `1` | 0 |
//! | `eager_max_bytes` | `REGCACHE_TRANSPORT_EAGER_MAX_BYTES` | decimal bytes | 4096 |
//! | `cma_min_bytes` | `REGCACHE_TRANSPORT_CMA_MIN_BYTES` | decimal bytes | 8192 |
//! | `assist_min_bytes` | `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES` | decimal bytes, `off` | 262144 |
//!
//! Two readers of the environment, as in the cache's `regcache::Config`:
//!
//! - [`Config::from_env`] (and the constructors that take no config,
//!   [`super::Registry::create`], [`super::Registry::open`],
//!   [`super::Registry::open_or_create`]) refuse a malformed value with a
//!   [`ConfigError`] naming the variable, its value and what is accepted.
//!   Until issue 18 a malformed value was silently ignored (or, for the
//!   assist threshold, logged) and the default used: a typo in a job
//!   script turned into a silent performance difference. This is the one
//!   intended behaviour change of that restructuring.
//! - [`Config::default`] cannot fail: it applies the variables that parse
//!   and keeps the built-in default for a malformed one, logging it (what
//!   it always did for the values it accepts). The C API's
//!   `regcache_dma_config_default` is built on it.
//!
//! Values are trimmed of surrounding white space before parsing.
//!
//! ## Choosing a copy path by size
//!
//! [`Config::path_for`] is the one place a message size becomes a path
//! ([`PathChoice`]), from three thresholds:
//!
//! | bytes `n` | path | cost |
//! |---|---|---|
//! | `n <= eager_max_bytes` | eager: copied into the descriptor (inline, up to [`INLINE_BYTES`](super::INLINE_BYTES)) or its bounce area and out by the receiver | two `memcpy`s, no system call |
//! | `n < cma_min_bytes` | bounce: the same two copies through the bounce area, pipelined from 64 KiB (`send`, "Pipelined bounce") | two `memcpy`s, overlapped on two cores when the receiver polls |
//! | `n < assist_min_bytes` | single copy: one `process_vm_writev` | a system call, pinning, one copy |
//! | otherwise | receiver-assisted single copy | the copy split between both cores |
//!
//! The defaults are the crossovers measured on the development machine
//! (docs/ARCHITECTURE.md, "Choosing a copy path"); `cargo bench -p
//! regcache-transport --bench intranode` with `RC_BENCH_ONLY=calibrate`
//! measures them on another and prints the variables to set. A forced
//! bounce (`force_bounce`, or a kernel that refuses `process_vm_writev`)
//! sends every message past `eager_max_bytes` through the bounce area.

use crate::shm_signal::SpinPolicy;
use std::time::Duration;

/// Tunables of a registry handle.
#[derive(Debug, Clone)]
pub struct Config {
    /// Never try `process_vm_writev`; always bounce. Also set by the
    /// environment variable `REGCACHE_TRANSPORT_FORCE_BOUNCE=1`.
    pub force_bounce: bool,
    /// Messages of at most this many bytes take the eager path: copied
    /// into shared memory (inline in the descriptor when they fit in
    /// [`INLINE_BYTES`](super::INLINE_BYTES)) and out by the receiver, no
    /// system call (module docs, "Choosing a copy path by size"). Default
    /// [`EAGER_MAX_BYTES`]; 0 turns it off. Also set by
    /// `REGCACHE_TRANSPORT_EAGER_MAX_BYTES`.
    pub eager_max_bytes: u64,
    /// How long a sender with no free descriptor waits for the receiver's
    /// restock doorbell before its one retry. Default 100 ms.
    pub restock_wait: Duration,
    /// Spin before sleeping in [`super::Receiver::recv`].
    pub spin: SpinPolicy,
    /// Bounded wait of unbind for in-flight sends. Default 10 s.
    pub unbind_wait: Duration,
    /// Messages shorter than this many bytes take the bounce path even
    /// when single copy is permitted: a `process_vm_writev` costs a system
    /// call plus pinning the remote pages, more than two `memcpy`s of a
    /// small message (the eager/rendezvous split of MPI libraries).
    /// Default 8192; 0 means "always try single copy". Also set by
    /// `REGCACHE_TRANSPORT_CMA_MIN_BYTES`.
    pub cma_min_bytes: u64,
    /// Single-copy sends of at least this many bytes are split with a
    /// receiver that waits in [`super::Receiver::recv`] (see
    /// the `dma::assisted` module docs,
    /// "Receiver-assisted copy"). Default 256 KiB: below that the extra
    /// doorbell and chunk system calls cost more than the second core
    /// saves. `u64::MAX` disables it. Also set by
    /// `REGCACHE_TRANSPORT_ASSIST_MIN_BYTES` (bytes, or `off`).
    pub assist_min_bytes: u64,
    /// How long a sender waits for a live receiver to finish the chunks it
    /// claimed before cutting the binding off. Default 10 s.
    pub assist_wait: Duration,
    /// Testing only: in an assisted copy the sender copies no chunk itself
    /// and waits for the receiver to take them all (it still redoes the
    /// chunks the receiver reports failed). Makes the receiver's side of
    /// the protocol deterministic in tests.
    #[doc(hidden)]
    pub assist_sender_idle: bool,
}

/// Default [`Config::assist_min_bytes`].
pub const ASSIST_MIN_BYTES: u64 = 256 << 10;

/// Default [`Config::eager_max_bytes`]: 4 KiB, one page, the usual eager
/// limit of MPI shared-memory transports (Open MPI's vader fast boxes hold
/// messages of a few KiB); the bench's calibration prints the crossover of
/// this machine (module docs).
pub const EAGER_MAX_BYTES: u64 = 4096;

/// The copy path [`Config::path_for`] picks for a message size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathChoice {
    /// Copied into shared memory and out by the receiver, on the sender's
    /// cached validation, inline when it fits.
    Eager,
    /// Through the descriptor's bounce area (two copies).
    Bounce,
    /// One `process_vm_writev`.
    Single,
    /// A single copy split with the waiting receiver.
    Assisted,
}

/// A malformed variable (the workspace's one such error, from `umn`).
pub use umn::ConfigError;

/// One environment override: its variable, what it accepts (in words),
/// and how a value sets the config (`None`: malformed).
struct EnvVar {
    name: &'static str,
    expected: &'static str,
    apply: fn(&mut Config, &str) -> Option<()>,
}

/// A byte count: a decimal integer (as `u64::from_str` reads it, so an
/// optional leading `+`: the values accepted before issue 18 stay valid).
fn bytes(v: &str) -> Option<u64> {
    v.trim().parse().ok()
}

const VARS: [EnvVar; 4] = [
    EnvVar {
        name: "REGCACHE_TRANSPORT_EAGER_MAX_BYTES",
        expected: "a byte count (decimal integer)",
        apply: |c, v| {
            c.eager_max_bytes = bytes(v)?;
            Some(())
        },
    },
    EnvVar {
        name: "REGCACHE_TRANSPORT_FORCE_BOUNCE",
        expected: "0 or 1",
        apply: |c, v| {
            c.force_bounce = match v.trim() {
                "0" => false,
                "1" => true,
                _ => return None,
            };
            Some(())
        },
    },
    EnvVar {
        name: "REGCACHE_TRANSPORT_CMA_MIN_BYTES",
        expected: "a byte count (decimal integer)",
        apply: |c, v| {
            c.cma_min_bytes = bytes(v)?;
            Some(())
        },
    },
    EnvVar {
        name: "REGCACHE_TRANSPORT_ASSIST_MIN_BYTES",
        expected: "a byte count (decimal integer) or off",
        apply: |c, v| {
            c.assist_min_bytes = if v.trim() == "off" {
                u64::MAX
            } else {
                bytes(v)?
            };
            Some(())
        },
    },
];

impl Config {
    /// The built-in defaults, without looking at the environment.
    pub fn builtin() -> Self {
        Self {
            force_bounce: false,
            eager_max_bytes: EAGER_MAX_BYTES,
            restock_wait: Duration::from_millis(100),
            spin: SpinPolicy::default(),
            unbind_wait: Duration::from_secs(10),
            cma_min_bytes: 8192,
            assist_min_bytes: ASSIST_MIN_BYTES,
            assist_wait: Duration::from_secs(10),
            assist_sender_idle: false,
        }
    }

    /// The path of an `n`-byte message (module docs, "Choosing a copy
    /// path by size"), before the kernel has a say: a single copy it
    /// refuses becomes a bounce.
    pub fn path_for(&self, n: u64) -> PathChoice {
        if n <= self.eager_max_bytes {
            PathChoice::Eager
        } else if self.force_bounce || n < self.cma_min_bytes {
            PathChoice::Bounce
        } else if n >= self.assist_min_bytes {
            PathChoice::Assisted
        } else {
            PathChoice::Single
        }
    }

    /// The built-in defaults, overridden by the `REGCACHE_TRANSPORT_*`
    /// variables that are set (module docs).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first malformed variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::builtin().with_overrides(|k| std::env::var(k).ok())
    }

    /// Apply overrides from a lookup function (the environment, or a
    /// test's map).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first malformed variable.
    pub fn with_overrides(self, get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        self.apply(get, Err)
    }

    /// Apply every variable `get` returns; a malformed one is handed to
    /// `bad`, which either stops with the error or keeps the field as it
    /// was.
    fn apply(
        mut self,
        get: impl Fn(&str) -> Option<String>,
        bad: impl Fn(ConfigError) -> Result<(), ConfigError>,
    ) -> Result<Self, ConfigError> {
        for var in &VARS {
            if let Some(value) = get(var.name) {
                if (var.apply)(&mut self, &value).is_none() {
                    bad(ConfigError {
                        variable: var.name,
                        value,
                        expected: var.expected,
                    })?;
                }
            }
        }
        Ok(self)
    }
}

impl Default for Config {
    /// The built-in defaults with the well-formed `REGCACHE_TRANSPORT_*`
    /// overrides; a malformed one is logged and the default kept (module
    /// docs; [`Config::from_env`] refuses it instead).
    fn default() -> Self {
        let lenient = Self::builtin().apply(
            |k| std::env::var(k).ok(),
            |e| {
                log::error!("regcache-transport: {e}; keeping the default");
                Ok(())
            },
        );
        lenient.unwrap_or_else(|_| Self::builtin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn good_values_override_the_defaults() {
        let c = Config::builtin().with_overrides(env(&[])).unwrap();
        assert!(!c.force_bounce);
        assert_eq!(
            (c.eager_max_bytes, c.cma_min_bytes, c.assist_min_bytes),
            (EAGER_MAX_BYTES, 8192, ASSIST_MIN_BYTES)
        );
        let c = Config::builtin()
            .with_overrides(env(&[
                ("REGCACHE_TRANSPORT_FORCE_BOUNCE", "1"),
                ("REGCACHE_TRANSPORT_CMA_MIN_BYTES", "0"),
                ("REGCACHE_TRANSPORT_ASSIST_MIN_BYTES", " off "),
            ]))
            .unwrap();
        assert!(c.force_bounce);
        assert_eq!((c.cma_min_bytes, c.assist_min_bytes), (0, u64::MAX));
        let c = Config::builtin()
            .with_overrides(env(&[
                ("REGCACHE_TRANSPORT_FORCE_BOUNCE", "0"),
                ("REGCACHE_TRANSPORT_CMA_MIN_BYTES", "65536"),
                ("REGCACHE_TRANSPORT_ASSIST_MIN_BYTES", "1048576"),
                ("REGCACHE_TRANSPORT_EAGER_MAX_BYTES", " 512 "),
            ]))
            .unwrap();
        assert!(!c.force_bounce);
        assert_eq!(c.eager_max_bytes, 512);
        assert_eq!((c.cma_min_bytes, c.assist_min_bytes), (65536, 1 << 20));
    }

    #[test]
    fn malformed_values_are_errors_naming_the_variable() {
        for (var, value, expected) in [
            ("REGCACHE_TRANSPORT_FORCE_BOUNCE", "yes", "0 or 1"),
            ("REGCACHE_TRANSPORT_FORCE_BOUNCE", "", "0 or 1"),
            ("REGCACHE_TRANSPORT_CMA_MIN_BYTES", "8k", "decimal integer"),
            ("REGCACHE_TRANSPORT_CMA_MIN_BYTES", "-1", "decimal integer"),
            (
                "REGCACHE_TRANSPORT_CMA_MIN_BYTES",
                "99999999999999999999",
                "decimal integer",
            ),
            ("REGCACHE_TRANSPORT_ASSIST_MIN_BYTES", "never", "or off"),
            ("REGCACHE_TRANSPORT_ASSIST_MIN_BYTES", "0x100", "or off"),
            ("REGCACHE_TRANSPORT_ASSIST_MIN_BYTES", "", "or off"),
            (
                "REGCACHE_TRANSPORT_EAGER_MAX_BYTES",
                "4KiB",
                "decimal integer",
            ),
            (
                "REGCACHE_TRANSPORT_EAGER_MAX_BYTES",
                "-4096",
                "decimal integer",
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([(var, value)]));
            let e = Config::builtin().with_overrides(env(pairs)).unwrap_err();
            assert_eq!((e.variable, e.value.as_str()), (var, value));
            let text = e.to_string();
            assert!(text.starts_with(&format!("{var}={value:?}")), "{text}");
            assert!(text.contains(expected), "{text}");
        }
    }

    #[test]
    fn the_path_follows_the_thresholds_at_their_edges() {
        let c = Config {
            eager_max_bytes: 4096,
            cma_min_bytes: 8192,
            assist_min_bytes: 1 << 20,
            ..Config::builtin()
        };
        let at = |n| c.path_for(n);
        assert_eq!(
            [at(1), at(4096), at(4097), at(8191), at(8192)],
            [
                PathChoice::Eager,
                PathChoice::Eager,
                PathChoice::Bounce,
                PathChoice::Bounce,
                PathChoice::Single
            ]
        );
        assert_eq!(
            [at((1 << 20) - 1), at(1 << 20), at(u64::MAX)],
            [
                PathChoice::Single,
                PathChoice::Assisted,
                PathChoice::Assisted
            ]
        );
        let bounce = Config {
            force_bounce: true,
            ..c.clone()
        };
        assert_eq!(bounce.path_for(100), PathChoice::Eager);
        assert_eq!(bounce.path_for(1 << 30), PathChoice::Bounce);
        let no_eager = Config {
            eager_max_bytes: 0,
            ..c
        };
        assert_eq!(no_eager.path_for(1), PathChoice::Bounce);
    }

    #[test]
    fn lenient_apply_keeps_the_default_of_a_malformed_value_only() {
        let c = Config::builtin()
            .apply(
                env(&[
                    ("REGCACHE_TRANSPORT_FORCE_BOUNCE", "true"),
                    ("REGCACHE_TRANSPORT_CMA_MIN_BYTES", "100"),
                ]),
                |_| Ok(()),
            )
            .unwrap();
        assert!(!c.force_bounce);
        assert_eq!(c.cma_min_bytes, 100);
    }
}
