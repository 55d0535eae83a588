//! [`Config`]: the tunables of a registry handle, with
//! `REGCACHE_TRANSPORT_*` environment overrides.
//!
//! | field | variable | accepted | default |
//! |---|---|---|---|
//! | `force_bounce` | `REGCACHE_TRANSPORT_FORCE_BOUNCE` | `0`, `1` | 0 |
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

use crate::shm_signal::SpinPolicy;
use std::time::Duration;

/// Tunables of a registry handle.
#[derive(Debug, Clone)]
pub struct Config {
    /// Never try `process_vm_writev`; always bounce. Also set by the
    /// environment variable `REGCACHE_TRANSPORT_FORCE_BOUNCE=1`.
    pub force_bounce: bool,
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

const VARS: [EnvVar; 3] = [
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
            restock_wait: Duration::from_millis(100),
            spin: SpinPolicy::default(),
            unbind_wait: Duration::from_secs(10),
            cma_min_bytes: 8192,
            assist_min_bytes: ASSIST_MIN_BYTES,
            assist_wait: Duration::from_secs(10),
            assist_sender_idle: false,
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
            (c.cma_min_bytes, c.assist_min_bytes),
            (8192, ASSIST_MIN_BYTES)
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
            ]))
            .unwrap();
        assert!(!c.force_bounce);
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
