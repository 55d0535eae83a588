// The result codes: ONE table of code, number, doc and text. Not a
// module: `include!`d by `result.rs`, whose `result_codes!` makes of it
// the `regcache_result` enum, `ALL` and the texts of `regcache_strerror`,
// and by `cargo xtask codegen`, whose `result_codes!` makes of it the
// enum's source for cbindgen (which does not expand macros). Add a code
// at the end with the next number; never renumber or reuse one (a
// retired code stays here as a comment).
result_codes! {
    /// The result of every fallible `regcache_*` function.
    ///
    /// `REGCACHE_OK` is 0; errors live in their own range, 4701 and up, so they
    /// never look like an errno or another library's code. **Codes are never
    /// renumbered**: a retired code stays here as a comment and its number is
    /// not reused. `regcache_strerror` gives the text; `regcache_last_error`
    /// the detail of the last failure on the calling thread.
    pub enum regcache_result {
        /// Success.
        REGCACHE_OK = 0 => c"success",
        /// A required pointer argument was NULL.
        REGCACHE_ERR_NULL_ARGUMENT = 4701 => c"a required pointer argument was NULL",
        /// An address range was empty, started at NULL or overflowed the
        /// address space.
        REGCACHE_ERR_INVALID_RANGE = 4702 => c"invalid address range (empty, NULL start, or overflowing)",
        /// An argument had a value outside its domain (unknown access bits, a
        /// zero limit, an unknown registrar or monitor).
        REGCACHE_ERR_INVALID_ARGUMENT = 4703 => c"an argument is outside its domain",
        /// A `REGCACHE_*` environment variable is malformed; the detail names it.
        REGCACHE_ERR_CONFIG_ENV = 4704 => c"a REGCACHE_* environment variable is malformed",
        /// Part of the range is not mapped.
        REGCACHE_ERR_NOT_MAPPED = 4705 => c"the memory range is not (entirely) mapped",
        /// Out of registration resources (ENOMEM/EAGAIN, RLIMIT_MEMLOCK) and
        /// evicting every idle region did not help.
        REGCACHE_ERR_NO_RESOURCES = 4706 => c"out of registration resources (ENOMEM, EAGAIN or RLIMIT_MEMLOCK)",
        /// The device refused the access flags for this memory.
        REGCACHE_ERR_ACCESS_REFUSED = 4707 => c"access flags refused for this memory",
        /// The requested registrar or event source is not available here (no
        /// RDMA device, no /dev/ummunotify, no userfaultfd).
        REGCACHE_ERR_UNAVAILABLE = 4708 => c"registrar or event source not available",
        /// A registration call failed otherwise (see the detail).
        REGCACHE_ERR_REGISTRAR = 4709 => c"registration call failed",
        /// The handle was already released (or its cache destroyed), or is not
        /// a handle this library made.
        REGCACHE_ERR_STALE_HANDLE = 4710 => c"handle already released or not valid",
        /// The cache or notifier was already destroyed.
        REGCACHE_ERR_DESTROYED = 4711 => c"cache or notifier already destroyed",
        /// The registrar has no keys (the `pin` registrar).
        REGCACHE_ERR_NO_KEYS = 4712 => c"this registrar has no lkey/rkey",
        /// A Rust panic was caught at the boundary (a bug: please report).
        REGCACHE_ERR_PANIC = 4713 => c"internal error (panic caught at the C boundary)",
        /// Another userfaultfd owns the memory (EBUSY).
        REGCACHE_ERR_BUSY = 4714 => c"another userfaultfd owns the memory (EBUSY)",
        /// The cookie is already registered.
        REGCACHE_ERR_DUPLICATE_COOKIE = 4715 => c"cookie already registered",
        /// The cookie is not registered.
        REGCACHE_ERR_UNKNOWN_COOKIE = 4716 => c"cookie not registered",
        /// The notifier was inherited across fork; open a new one.
        REGCACHE_ERR_FORKED = 4717 => c"notifier inherited across fork; open a new one",
        /// The operation is not supported by this event source.
        REGCACHE_ERR_UNSUPPORTED = 4718 => c"operation not supported by this event source",
        /// An event source's own system call failed (see the detail).
        REGCACHE_ERR_NOTIFIER = 4719 => c"event source system call failed",
        /// The output buffer is too small; the required size was written.
        REGCACHE_ERR_BUFFER_TOO_SMALL = 4720 => c"output buffer too small",
        /// Nothing arrived before the timeout (or, with a zero timeout, nothing
        /// was ready): `regcache_dma_receiver_recv`, `regcache_shm_signal_wait`.
        REGCACHE_ERR_TIMED_OUT = 4721 => c"timed out: nothing arrived (or nothing ready)",
        /// The shared segment or registry already exists (`EEXIST`).
        REGCACHE_ERR_EXISTS = 4722 => c"shared segment already exists",
        /// The shared segment or registry does not exist (`ENOENT`).
        REGCACHE_ERR_NOT_FOUND = 4723 => c"shared segment does not exist",
        /// A shared-segment system call (`open`, `ftruncate`, `fstat`, `mmap`,
        /// `unlink`, `dup`) failed otherwise (see the detail).
        REGCACHE_ERR_SHM = 4724 => c"shared segment system call failed",
        /// A shared record does not fit in the segment or is misaligned.
        REGCACHE_ERR_SEGMENT_TOO_SMALL = 4725 => c"shared segment too small or record misaligned",
        /// A shm_signal descriptor or DMA registry has the wrong magic, version
        /// or geometry (another build, or not initialised).
        REGCACHE_ERR_BAD_SHARED_LAYOUT = 4726 => c"shared descriptor or registry has the wrong magic, version or layout",
        /// Computing a DMA key failed (`fstat`, `/proc/self/maps`).
        REGCACHE_ERR_KEY = 4727 => c"computing a DMA key failed",
        /// The address is not in a shared, file-backed mapping.
        REGCACHE_ERR_NOT_SHARED = 4728 => c"address is not in a shared file mapping",
        /// Another live process already bound this DMA key.
        REGCACHE_ERR_KEY_IN_USE = 4729 => c"DMA key already bound by another process",
        /// Every binding slot of the DMA registry is taken.
        REGCACHE_ERR_REGISTRY_FULL = 4730 => c"DMA registry is full",
        /// No other process has this DMA key bound.
        REGCACHE_ERR_NO_RECEIVER = 4731 => c"no receiver bound to the DMA key",
        /// The receiver had no free descriptor, even after a restock request and
        /// one retry.
        REGCACHE_ERR_NO_FREE_DESCRIPTOR = 4732 => c"receiver has no free descriptor",
        /// A DMA descriptor in shared memory failed validation (sender: the
        /// binding is cut off; receiver: it was repaired and freed).
        REGCACHE_ERR_CORRUPT_DESCRIPTOR = 4733 => c"corrupt DMA descriptor",
        /// The DMA binding was cut off after corruption: unbind and bind again.
        REGCACHE_ERR_CUT_OFF = 4734 => c"DMA binding cut off after corruption",
        /// `process_vm_writev` failed with something other than `EPERM` (the
        /// receiver died or unmapped its buffer).
        REGCACHE_ERR_COPY_FAILED = 4735 => c"cross-process copy (process_vm_writev) failed",
        /// Unbind timed out waiting for in-flight sends: the buffers must stay
        /// valid (the receiver handle is closed all the same).
        REGCACHE_ERR_UNBIND_BUSY = 4736 => c"unbind timed out waiting for in-flight sends",
        /// Another transport failure (see the detail).
        REGCACHE_ERR_TRANSPORT = 4737 => c"transport operation failed",
        /// `regcache_cache_find`: no cached registration covers the range
        /// (nothing was registered).
        REGCACHE_ERR_NOT_CACHED = 4738 => c"no cached registration covers the range",
    }
}
