//! The error of a malformed environment variable.
//!
//! Every crate of the workspace reads its tunables from `REGCACHE_*`
//! variables (`regcache::Config::from_env`, the transport's
//! `dma::Config::from_env`), and all of them refuse a malformed value the
//! same way: with this error, naming the variable, the value and what is
//! accepted. It lives here, in the crate every other one depends on, so
//! that there is one such type.

/// A malformed `REGCACHE_*` variable: names the variable, the value and
/// what is accepted. `Display`: `VAR="value" is not valid: expected ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// The accepted values, in words.
    pub expected: &'static str,
}
