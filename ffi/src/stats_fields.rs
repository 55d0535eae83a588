// The fields of `regcache_stats`: ONE list, in the C struct's order
// (append only; the order is ABI). Not a module: `include!`d by
// `config.rs`, whose `stats_fields!` makes of it the struct and its
// conversion from `regcache::Stats` (every field is a `u64` of the same
// name there), and by `cargo xtask codegen`, whose `stats_fields!` makes
// of it the struct's source for cbindgen (which does not expand macros).
stats_fields! {
    /// Cache statistics (`regcache_cache_stats`). Counts since creation;
    /// `*_bytes` in bytes; `registrar_ns` in nanoseconds.
    pub struct regcache_stats {
        /// Gets that returned a handle or a registration error (hits + misses).
        gets,
        /// Gets served by a cached region.
        hits,
        /// Gets that found no covering region.
        misses,
        /// Regions absorbed into a merged region.
        merges,
        /// Merged registrations that fell back to the request alone.
        merge_fallbacks,
        /// Idle regions evicted.
        evictions,
        /// Regions invalidated while idle.
        invalidations_idle,
        /// Regions invalidated while in use.
        invalidations_in_use,
        /// Successful registrations.
        registrations,
        /// Failed registrations.
        registration_failures,
        /// Deregistrations.
        deregistrations,
        /// Failed deregistrations.
        deregistration_failures,
        /// Registration retries after eviction on ENOMEM/EAGAIN.
        enomem_retries,
        /// Gets served by a one-off registration outside the cache.
        uncached,
        /// Registrations dropped because another thread cached the range first.
        lost_races,
        /// Regions cached now.
        regions,
        /// Most regions cached at once.
        peak_regions,
        /// Bytes registered now.
        bytes_registered,
        /// Most bytes registered at once.
        peak_bytes,
        /// Nanoseconds spent registering and deregistering.
        registrar_ns,
        /// Regions invalidated by the invalidation source (events and
        /// `regcache_cache_notify_unmapped`).
        monitor_invalidations,
        /// Gets served uncached because the source could not watch the memory
        /// (e.g. another userfaultfd owns it).
        unwatched,
        /// Registrations retried because their memory changed while they were
        /// being registered.
        doomed_retries,
        /// Nanoseconds spent in the invalidation source (draining events).
        monitor_ns,
        /// Hits checked against the pages they registered (`REGCACHE_VERIFY=pfn`).
        verify_checks,
        /// Checked hits whose pages had changed (invalidated and registered
        /// afresh).
        verify_mismatches,
    }
}
