/* mca_rcache_regcache.so — an Open MPI 4.1 rcache component over regcache.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * # What this is
 *
 * Open MPI's BTLs (openib through `btl_openib_rcache`, and whoever names
 * an rcache in `mca_rcache_base_module_create`) do not register memory
 * themselves: they hand an rcache module their `register_mem` and
 * `deregister_mem` (resources at creation) and ask the module to
 * register, find and deregister ranges. This component is such a module,
 * `regcache` by name, whose cache is libregcache's: the BTL's callbacks
 * become a regcache registrar (`regcache_cache_new_with_ops`), so the
 * MRs live in the BTL's protection domain, and the invalidation comes
 * either from Open MPI's memory hooks (`invalidate_range`) or from
 * regcache's own source (kernel device or userfaultfd).
 *
 * Built against the installed Open MPI's internal headers by
 * `cargo xtask install` (xtask/src/ompi.rs), never by `cargo build`;
 * loaded by Open MPI from `<prefix>/lib/openmpi` once that folder is in
 * `mca_base_component_path`.
 *
 * # Use
 *
 *   cargo xtask install --prefix DIR
 *   mpirun --mca mca_base_component_path \
 *            DIR/lib/openmpi:$(ompi_info --path pkglibdir --parsable | cut -d: -f3) \
 *          --mca btl_openib_rcache regcache --mca rcache_regcache_verbose 1 ...
 *
 * (`mca_base_component_path` replaces Open MPI's default, so the system
 * folder is listed too; `ompi_info` reads it from the environment,
 * `OMPI_MCA_mca_base_component_path`, not from `--mca`.) MCA variables:
 *
 *   rcache_regcache_verbose      > 0: each rank prints its statistics at
 *                                finalize (hits, misses, register_mem and
 *                                deregister_mem calls, evictions,
 *                                invalidations, hook calls, refusals)
 *   rcache_regcache_monitor      auto | kernel | patch | uffd | external
 *   rcache_regcache_max_regions  cached registrations (0: regcache's)
 *   rcache_regcache_max_bytes    cached bytes (0: regcache's)
 *   rcache_regcache_merge        -1 (regcache's) | 0 | 1 | 2 (adaptive)
 *   rcache_regcache_verify       off | pfn (unset: regcache's)
 *
 * regcache's own REGCACHE_* variables apply first; the MCA variables
 * override them.
 *
 * # The mapping (Open MPI call -> regcache)
 *
 *   rcache_register          regcache_cache_get (a miss calls the BTL's
 *                            register_mem through `reg_cb`)
 *   rcache_find              regcache_cache_find (never registers)
 *   rcache_deregister        regcache_handle_release of the one handle
 *                            held while Open MPI holds references
 *   rcache_invalidate_range  regcache_cache_notify_unmapped (lock- and
 *                            allocation-free with a source open; skipped
 *                            on the kernel device, which sees every
 *                            unmap itself and refuses reports)
 *   rcache_evict             regcache_cache_evict(cache, 1)
 *   rcache_finalize          regcache_cache_stats (printed when
 *                            rcache_regcache_verbose > 0), then
 *                            regcache_cache_destroy
 *
 * # References: one regcache handle per registration
 *
 * Open MPI counts references in `reg->ref_count`: every register and
 * find that returns a registration takes one, every deregister gives one
 * back (grdma's contract; pml/ob1 and osc/rdma rely on it). regcache
 * counts handles: each `regcache_cache_get` returns a new one. Open
 * MPI's deregister names only the registration, not which of its
 * references it returns, so the component keeps exactly one regcache
 * handle per registration while `ref_count > 0` (`book->held`): the
 * first reference keeps the handle the get returned, later ones release
 * theirs at once, and the deregister that brings `ref_count` to 0
 * releases the held one. regcache then sees the region idle exactly
 * when Open MPI holds no reference, which is what eviction and
 * invalidation need. `module->lock` (a mutex; never taken in a memory
 * hook) orders the count and `held`; a regcache handle is released only
 * outside it, and no field of a registration is touched after its held
 * handle is released (the dereg callback may free it then).
 *
 * # Registrations are allocated by the reg callback
 *
 * `reg_cb` allocates `sizeof_reg` bytes (the BTL's registration subclass)
 * plus this component's bookkeeping (`struct rr_book`, at the next
 * max_align_t boundary), constructs it as an `mca_rcache_base_registration_t`
 * (as grdma's free list does), fills `rcache`, `base`, `bound`
 * (inclusive), `access_flags` (Open MPI bits) and `rcache_context` (the
 * bookkeeping), and calls the BTL's `register_mem`; the registration is
 * the regcache user data of the region, so every hit finds it with
 * `regcache_handle_user_data`. `dereg_cb` calls `deregister_mem` and
 * frees it. A cached registration's `flags` are 0: every flag that
 * reaches register_mem takes the direct path (below), since a region is
 * shared by every request it covers. The BTL's own error of a failed
 * register_mem reaches `rr_register_mem` through a thread-local
 * (`tl_last_rc`): regcache calls the callbacks on the thread that calls
 * get.
 *
 * # Flags (MCA_RCACHE_FLAGS_*)
 *
 *   CACHE_BYPASS        a direct registration: register_mem now, never
 *                       cached, deregister_mem when its last reference
 *                       is returned (grdma does the same).
 *   PERSIST             the same direct path: always a fresh
 *                       registration, deregistered at its last
 *                       reference. (grdma also lets later lookups hit a
 *                       persistent registration; here they do not.)
 *   SO_MEM, CUDA_GPU_MEM, CUDA_REGISTER_MEM, RESV0..RESV3
 *                       change what register_mem does (strong ordering,
 *                       GPU memory, a BTL's private meaning), so a
 *                       cached registration made without them cannot
 *                       serve them: the direct path, with the flags in
 *                       `reg->flags` for register_mem to read.
 *   INVALID, MOD_RESV0..MOD_RESV3, unknown bits
 *                       refused (OPAL_ERR_BAD_PARAM, message naming the
 *                       bits): INVALID marks dead registrations and the
 *                       MOD_RESV bits belong to the rcache module.
 *
 * Access: Open MPI's bits are LOCAL_WRITE=1, REMOTE_READ=2,
 * REMOTE_WRITE=4, REMOTE_ATOMIC=8 (rcache.h); regcache's are ibverbs'
 * (REMOTE_WRITE=2, REMOTE_READ=4). Any other bit is refused with
 * OPAL_ERR_BAD_PARAM and a message.
 *
 * # Invalidation, and what Open MPI is told
 *
 * With the memory patcher on (the default), Open MPI's hooks call
 * `invalidate_range` inside munmap/free: it only records the range with
 * `regcache_cache_notify_unmapped` (no lock, no allocation) and never
 * returns an error, since mca_rcache_base_mem_cb `_exit`s the process on
 * one. With `--mca memory ^patcher` there are no hooks; regcache's own
 * source (`rcache_regcache_monitor` auto: the kernel device, else
 * userfaultfd — never the libc patch here, see `new_cache`) keeps the
 * cache true. Open MPI's rcache base refuses
 * leave-pinned without hook support, so when (and only when) that source
 * opens, component open declares it with `opal_mem_hooks_set_support
 * (FREE|MUNMAP)` — before the first `mca_rcache_base_module_create`,
 * which is where the base checks. Wart: the declaration is process-wide,
 * so another caching rcache in the same process (grdma) would then cache
 * without hooks under `--mca memory ^patcher`; select this component
 * alone there (`--mca rcache regcache`). Module creation warns once when
 * that is the case (`warn_other_rcaches`).
 *
 * regcache keeps each thread's last released references deferred (a
 * repeat get is then a hit with no atomic read-modify-write), and a
 * region held only so counts as in use: `rcache_evict` gives back the
 * calling thread's, but a thread that exits keeps its own (at most 2 per
 * thread) until the cache is destroyed.
 *
 * # Running without the cache
 *
 * The job must run uncached rather than abort: when regcache cannot be
 * created (malformed REGCACHE_* variable, bad MCA value, no source for
 * `monitor`), when the cache would have nothing keeping it true (monitor
 * `external` and no Open MPI hooks), or under `mpi_leave_pinned 0`, the
 * module registers every request straight through register_mem (the
 * direct path) and says why at creation. A get that fails inside
 * regcache for a reason other than bad input or the BTL's own failure is
 * served on the direct path too (counted as `fallbacks`). Direct
 * registrations are kept on a list, so finalize deregisters any the BTL
 * never returned: nothing is leaked.
 *
 * # Version check
 *
 * The registration layout and the module table depend on the Open MPI
 * build (e.g. CUDA GDR support adds a field), so component open compares
 * OPAL_MAJOR/MINOR/RELEASE_VERSION this file was compiled with against
 * the loaded libopen-pal's `opal_version_string` and refuses to open,
 * by name, when they differ.
 */

#include "opal_config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "opal/constants.h"
#include "opal/mca/base/base.h"
#include "opal/mca/base/mca_base_var.h"
#include "opal/mca/mca.h"
#include "opal/mca/memory/memory.h"
#include "opal/mca/rcache/base/base.h"
#include "opal/mca/rcache/rcache.h"
#include "opal/memoryhooks/memory.h"
#include "opal/runtime/opal.h"
#include "opal/runtime/opal_params.h"
#include "opal/util/output.h"
#include "opal/util/proc.h"

#include "regcache.h"

/* Tests of the version check build a copy that claims another release. */
#ifndef RR_BUILT_RELEASE
#define RR_BUILT_RELEASE OPAL_RELEASE_VERSION
#endif

#define RR_NAME "rcache/regcache"
#define RR_BOOK_MAGIC UINT64_C(0x7263616368657267) /* "grehcacr" */

/* Flags that send a request to the direct path, outside the cache (see
 * "Flags" at the top). */
#define RR_FLAGS_DIRECT                                                                        \
  (MCA_RCACHE_FLAGS_CACHE_BYPASS | MCA_RCACHE_FLAGS_PERSIST | MCA_RCACHE_FLAGS_SO_MEM |        \
   MCA_RCACHE_FLAGS_CUDA_GPU_MEM | MCA_RCACHE_FLAGS_CUDA_REGISTER_MEM | MCA_RCACHE_FLAGS_RESV0 | \
   MCA_RCACHE_FLAGS_RESV1 | MCA_RCACHE_FLAGS_RESV2 | MCA_RCACHE_FLAGS_RESV3)
/* Flags a caller may pass at all. */
#define RR_FLAGS_ACCEPTED RR_FLAGS_DIRECT

/* The component: its MCA variables and what open found. */
typedef struct {
  mca_rcache_base_component_t super;
  int verbose;
  char *monitor;
  unsigned long long max_regions;
  unsigned long long max_bytes;
  int merge;
  char *verify;
  /* Set by open: regcache's own source opened, and this component
   * declared memory-hook support to Open MPI because of it. */
  bool own_source;
  bool declared_hooks;
} mca_rcache_regcache_component_t;

OPAL_MODULE_DECLSPEC extern mca_rcache_regcache_component_t mca_rcache_regcache_component;

/* Bookkeeping after each registration (`reg->rcache_context` points at
 * it). */
struct rr_book {
  uint64_t magic;
  mca_rcache_base_registration_t *reg;
  /* Cached registrations: the one regcache handle held while
   * `reg->ref_count > 0` (under the module lock). */
  struct regcache_handle *held;
  /* Direct registrations (outside regcache): on the module's list. */
  bool direct;
  struct rr_book *prev, *next;
};

typedef struct {
  mca_rcache_base_module_t super;
  mca_rcache_base_resources_t resources;
  char *cache_name;
  /* NULL: every request takes the direct path. */
  struct regcache_cache *cache;
  /* Open MPI's hooks are passed on to the cache (false with the kernel
   * device, which sees every unmap itself and refuses reports). */
  bool pass_hooks;
  /* Why the module caches or does not (for messages and statistics). */
  char mode[96];
  size_t book_offset;
  pthread_mutex_t lock;
  struct rr_book direct; /* list head of direct registrations */
  /* Counters (relaxed atomics; read at finalize). */
  atomic_uint_fast64_t register_mem_calls, register_mem_ok, register_mem_no_resources,
      register_mem_failed, deregister_mem_calls, deregister_mem_failed, direct_registrations,
      fallbacks, hook_calls, hook_failures, refused;
} rr_module_t;

/* register_mem's last hard failure on this thread (reset before each
 * regcache_cache_get that may call `reg_cb`). */
static __thread int tl_last_rc;

static int rr_register(void);
static int rr_open(void);
static int rr_close(void);
static mca_rcache_base_module_t *rr_init(mca_rcache_base_resources_t *resources);

mca_rcache_regcache_component_t mca_rcache_regcache_component = {
    .super =
        {
            .rcache_version =
                {
                    MCA_RCACHE_BASE_VERSION_3_0_0,
                    .mca_component_name = "regcache",
                    MCA_BASE_MAKE_VERSION(component, OPAL_MAJOR_VERSION, OPAL_MINOR_VERSION,
                                          RR_BUILT_RELEASE),
                    .mca_open_component = rr_open,
                    .mca_close_component = rr_close,
                    .mca_register_component_params = rr_register,
                },
            .rcache_data = {MCA_BASE_METADATA_PARAM_CHECKPOINT},
            .rcache_init = rr_init,
        },
    .verbose = 0,
    .monitor = NULL,
    .max_regions = 0,
    .max_bytes = 0,
    .merge = -1,
    .verify = NULL,
};

#define C (&mca_rcache_regcache_component)

static void count(atomic_uint_fast64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }
static uint64_t load(atomic_uint_fast64_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

/* The detail of the last failed regcache call on this thread. */
static const char *rc_detail(char *buf, size_t len) {
  size_t n;
  if (REGCACHE_OK != regcache_last_error(buf, len, &n)) {
    buf[0] = '\0';
  }
  return buf;
}

/* ---- MCA variables, open, close ------------------------------------------------------- */

static int rr_register(void) {
  mca_base_component_t *v = &C->super.rcache_version;
  C->verbose = 0;
  (void)mca_base_component_var_register(
      v, "verbose",
      "Verbosity of the regcache rcache: > 0 prints each rank's cache statistics at finalize "
      "(hits, misses, register_mem/deregister_mem calls, evictions, invalidations) and every "
      "refused request",
      MCA_BASE_VAR_TYPE_INT, NULL, 0, 0, OPAL_INFO_LVL_5, MCA_BASE_VAR_SCOPE_LOCAL, &C->verbose);
  C->monitor = "auto";
  (void)mca_base_component_var_register(
      v, "monitor",
      "regcache's own invalidation source: auto (kernel device /dev/ummunotify, else "
      "userfaultfd; when one opens the component tells Open MPI it provides memory-hook "
      "support, so --mca memory ^patcher works), kernel, uffd, patch (libc patched by "
      "regcache; refused when Open MPI's patcher patched first), or external (only Open MPI's "
      "memory hooks, through invalidate_range)",
      MCA_BASE_VAR_TYPE_STRING, NULL, 0, 0, OPAL_INFO_LVL_5, MCA_BASE_VAR_SCOPE_READONLY,
      &C->monitor);
  C->max_regions = 0;
  (void)mca_base_component_var_register(
      v, "max_regions",
      "Most registrations cached per rcache module (0: regcache's default or "
      "REGCACHE_MAX_REGIONS)",
      MCA_BASE_VAR_TYPE_UNSIGNED_LONG_LONG, NULL, 0, 0, OPAL_INFO_LVL_5,
      MCA_BASE_VAR_SCOPE_READONLY, &C->max_regions);
  C->max_bytes = 0;
  (void)mca_base_component_var_register(
      v, "max_bytes",
      "Most bytes registered in cached registrations per rcache module (0: regcache's default "
      "or REGCACHE_MAX_BYTES)",
      MCA_BASE_VAR_TYPE_UNSIGNED_LONG_LONG, NULL, 0, 0, OPAL_INFO_LVL_5,
      MCA_BASE_VAR_SCOPE_READONLY, &C->max_bytes);
  C->merge = -1;
  (void)mca_base_component_var_register(
      v, "merge",
      "Merge overlapping and adjacent registrations: 1 yes, 0 no, 2 adaptive (not across "
      "boundaries where an unmap killed a merged neighbour), -1 regcache's default or "
      "REGCACHE_MERGE",
      MCA_BASE_VAR_TYPE_INT, NULL, 0, 0, OPAL_INFO_LVL_5, MCA_BASE_VAR_SCOPE_READONLY,
      &C->merge);
  C->verify = NULL;
  (void)mca_base_component_var_register(
      v, "verify",
      "Check every hit against the pages it registered: pfn (compare /proc/self/pagemap frame "
      "numbers; a changed page invalidates and registers afresh; needs CAP_SYS_ADMIN) or off; "
      "unset: regcache's default or REGCACHE_VERIFY",
      MCA_BASE_VAR_TYPE_STRING, NULL, 0, 0, OPAL_INFO_LVL_5, MCA_BASE_VAR_SCOPE_READONLY,
      &C->verify);
  return OPAL_SUCCESS;
}

/* `rcache_regcache_monitor` as a regcache_monitor value. */
static bool parse_monitor(const char *s, uint32_t *out) {
  static const struct {
    const char *name;
    uint32_t value;
  } names[] = {{"auto", REGCACHE_MONITOR_AUTO},
               {"kernel", REGCACHE_MONITOR_KERNEL},
               {"uffd", REGCACHE_MONITOR_UFFD},
               {"patch", REGCACHE_MONITOR_PATCH},
               {"external", REGCACHE_MONITOR_EXTERNAL}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (NULL != s && 0 == strcmp(s, names[i].name)) {
      *out = names[i].value;
      return true;
    }
  }
  return false;
}

static const char *monitor_name(uint32_t m) {
  switch (m) {
  case REGCACHE_MONITOR_KERNEL:
    return "kernel";
  case REGCACHE_MONITOR_UFFD:
    return "uffd";
  case REGCACHE_MONITOR_PATCH:
    return "patch";
  case REGCACHE_MONITOR_EXTERNAL:
    return "external";
  case REGCACHE_MONITOR_NONE:
    return "none";
  default:
    return "auto";
  }
}

/* A regcache configuration: REGCACHE_* from the environment, then the
 * MCA variables. False (with a message) when either is malformed. */
static bool make_config(struct regcache_config *cfg, uint32_t monitor) {
  char detail[256];
  enum regcache_result rc = regcache_config_from_env(cfg);
  if (REGCACHE_OK != rc) {
    opal_output(0, "%s: cannot configure regcache: %s (%s)", RR_NAME, regcache_strerror(rc),
                rc_detail(detail, sizeof detail));
    return false;
  }
  if (C->max_regions) {
    cfg->max_regions = C->max_regions;
  }
  if (C->max_bytes) {
    cfg->max_bytes = C->max_bytes;
  }
  if (0 <= C->merge && C->merge <= 2) {
    cfg->merge = (uint32_t)C->merge;
  } else if (-1 != C->merge) {
    opal_output(0, "%s: rcache_regcache_merge=%d is not valid: expected -1, 0, 1 or 2", RR_NAME,
                C->merge);
    return false;
  }
  if (NULL != C->verify && '\0' != C->verify[0]) {
    if (0 == strcmp(C->verify, "off")) {
      cfg->verify = REGCACHE_VERIFY_OFF;
    } else if (0 == strcmp(C->verify, "pfn")) {
      cfg->verify = REGCACHE_VERIFY_PFN;
    } else {
      opal_output(0, "%s: rcache_regcache_verify=\"%s\" is not valid: expected off or pfn",
                  RR_NAME, C->verify);
      return false;
    }
  }
  cfg->monitor = monitor;
  return true;
}

/* The probe's registrar: it is never asked to register. */
static int probe_reg(void *ctx, void *addr, size_t len, uint32_t access, void **user_data,
                     uint32_t *lkey, uint32_t *rkey) {
  (void)ctx, (void)addr, (void)len, (void)access, (void)user_data, (void)lkey, (void)rkey;
  return REGCACHE_REG_FAILED;
}
static int probe_dereg(void *ctx, void *user_data) {
  (void)ctx, (void)user_data;
  return 0;
}

/* `regcache_cache_new_with_ops`, except that inside Open MPI "auto" never
 * means the libc patch: Open MPI's memory/patcher component overwrites
 * libc's munmap/mremap/madvise/... at its own initialisation, which can
 * come after this component's, and a patch overwritten after ours makes
 * regcache refuse every registration (Overwritten; served uncached). So
 * "auto" here is the kernel device, else userfaultfd; `patch` can still be
 * asked for by name. */
static enum regcache_result new_cache(struct regcache_config *cfg,
                                      const struct regcache_registrar_ops *ops,
                                      struct regcache_cache **out) {
  if (REGCACHE_MONITOR_AUTO != cfg->monitor) {
    return regcache_cache_new_with_ops(cfg, ops, out);
  }
  cfg->monitor = REGCACHE_MONITOR_KERNEL;
  enum regcache_result rc = regcache_cache_new_with_ops(cfg, ops, out);
  if (REGCACHE_OK != rc) {
    cfg->monitor = REGCACHE_MONITOR_UFFD;
    rc = regcache_cache_new_with_ops(cfg, ops, out);
  }
  cfg->monitor = REGCACHE_MONITOR_AUTO;
  return rc;
}

/* Whether regcache's own source (kernel device or userfaultfd) opens
 * with the configured monitor: a cache is created and destroyed. */
static bool own_source_opens(void) {
  uint32_t monitor;
  struct regcache_config cfg;
  if (!parse_monitor(C->monitor, &monitor) || REGCACHE_MONITOR_EXTERNAL == monitor) {
    return false;
  }
  if (!make_config(&cfg, monitor)) {
    return false;
  }
  struct regcache_registrar_ops ops = {.version = REGCACHE_REGISTRAR_OPS_VERSION,
                                       .flags = REGCACHE_OPS_NO_KEYS,
                                       .reg = probe_reg,
                                       .dereg = probe_dereg,
                                       .ctx = NULL};
  struct regcache_cache *probe = NULL;
  if (REGCACHE_OK != new_cache(&cfg, &ops, &probe)) {
    return false;
  }
  uint32_t got = REGCACHE_MONITOR_NONE;
  bool own = REGCACHE_OK == regcache_cache_monitor(probe, &got) &&
             (REGCACHE_MONITOR_KERNEL == got || REGCACHE_MONITOR_UFFD == got ||
              REGCACHE_MONITOR_PATCH == got);
  (void)regcache_cache_destroy(probe);
  return own;
}

static int rr_open(void) {
  int major = -1, minor = -1, release = -1;
  if (3 != sscanf(opal_version_string, "%d.%d.%d", &major, &minor, &release) ||
      OPAL_MAJOR_VERSION != major || OPAL_MINOR_VERSION != minor || RR_BUILT_RELEASE != release) {
    opal_output(0,
                "%s: built against Open MPI %d.%d.%d but loaded by Open MPI \"%s\": refusing "
                "to open (the registration layout may differ); rebuild it against this Open "
                "MPI with `cargo xtask install --prefix DIR`",
                RR_NAME, OPAL_MAJOR_VERSION, OPAL_MINOR_VERSION, RR_BUILT_RELEASE,
                opal_version_string);
    return OPAL_ERR_NOT_SUPPORTED;
  }
  C->own_source = own_source_opens();
  C->declared_hooks = false;
  const int both = OPAL_MEMORY_FREE_SUPPORT | OPAL_MEMORY_MUNMAP_SUPPORT;
  int level = opal_mem_hooks_support_level();
  if (C->own_source && both != (level & both)) {
    opal_mem_hooks_set_support(level | both);
    C->declared_hooks = true;
  }
  if (C->verbose > 0) {
    opal_output(0, "%s: open: own invalidation source %s%s", RR_NAME,
                C->own_source ? "available" : "not available",
                C->declared_hooks ? "; declared memory-hook support to Open MPI" : "");
  }
  return OPAL_SUCCESS;
}

static int rr_close(void) { return OPAL_SUCCESS; }

/* ---- registrations ---------------------------------------------------------------------- */

static struct rr_book *book_of(rr_module_t *m, mca_rcache_base_registration_t *reg) {
  return (struct rr_book *)((char *)reg + m->book_offset);
}

/* A registration of `m` Open MPI handed back, or NULL (with a message). */
static struct rr_book *checked_book(rr_module_t *m, mca_rcache_base_registration_t *reg,
                                    const char *what) {
  if (NULL == reg || reg->rcache != &m->super || reg->rcache_context != book_of(m, reg) ||
      RR_BOOK_MAGIC != book_of(m, reg)->magic) {
    opal_output(0, "%s: %s of %p, which is not a registration of rcache \"%s\": refused",
                RR_NAME, what, (void *)reg, m->cache_name);
    count(&m->refused);
    return NULL;
  }
  return book_of(m, reg);
}

/* Allocate and construct a registration of [base, base + len). */
static mca_rcache_base_registration_t *new_reg(rr_module_t *m, void *base, size_t len,
                                               uint32_t flags, int32_t access) {
  mca_rcache_base_registration_t *reg = calloc(1, m->book_offset + sizeof(struct rr_book));
  if (NULL == reg) {
    return NULL;
  }
  OBJ_CONSTRUCT(reg, mca_rcache_base_registration_t);
  struct rr_book *b = book_of(m, reg);
  b->magic = RR_BOOK_MAGIC;
  b->reg = reg;
  reg->rcache = &m->super;
  reg->base = base;
  reg->bound = (unsigned char *)base + len - 1;
  reg->alloc_base = base;
  reg->flags = flags;
  reg->access_flags = access;
  reg->ref_count = 0;
  reg->rcache_context = b;
  return reg;
}

static void free_reg(rr_module_t *m, mca_rcache_base_registration_t *reg) {
  book_of(m, reg)->magic = 0;
  OBJ_DESTRUCT(reg);
  free(reg);
}

/* regcache_access bits (ibverbs values) -> Open MPI's. */
static int32_t access_to_ompi(uint32_t a) {
  int32_t o = 0;
  if (a & REGCACHE_ACCESS_LOCAL_WRITE) o |= MCA_RCACHE_ACCESS_LOCAL_WRITE;
  if (a & REGCACHE_ACCESS_REMOTE_READ) o |= MCA_RCACHE_ACCESS_REMOTE_READ;
  if (a & REGCACHE_ACCESS_REMOTE_WRITE) o |= MCA_RCACHE_ACCESS_REMOTE_WRITE;
  if (a & REGCACHE_ACCESS_REMOTE_ATOMIC) o |= MCA_RCACHE_ACCESS_REMOTE_ATOMIC;
  return o;
}

/* Open MPI's access bits -> regcache's; false for bits it cannot map. */
static bool access_to_regcache(int32_t o, uint32_t *out) {
  if (o < 0 || (o & ~MCA_RCACHE_ACCESS_ANY)) {
    return false;
  }
  uint32_t a = 0;
  if (o & MCA_RCACHE_ACCESS_LOCAL_WRITE) a |= REGCACHE_ACCESS_LOCAL_WRITE;
  if (o & MCA_RCACHE_ACCESS_REMOTE_READ) a |= REGCACHE_ACCESS_REMOTE_READ;
  if (o & MCA_RCACHE_ACCESS_REMOTE_WRITE) a |= REGCACHE_ACCESS_REMOTE_WRITE;
  if (o & MCA_RCACHE_ACCESS_REMOTE_ATOMIC) a |= REGCACHE_ACCESS_REMOTE_ATOMIC;
  *out = a;
  return true;
}

/* The registrar regcache calls on a miss: the BTL's register_mem. */
static int reg_cb(void *ctx, void *addr, size_t len, uint32_t access, void **user_data,
                  uint32_t *lkey, uint32_t *rkey) {
  rr_module_t *m = ctx;
  mca_rcache_base_registration_t *reg =
      new_reg(m, addr, len, 0, access_to_ompi(access));
  if (NULL == reg) {
    return REGCACHE_REG_NO_RESOURCES;
  }
  count(&m->register_mem_calls);
  int rc = m->resources.register_mem(m->resources.reg_data, addr, len, reg);
  if (OPAL_SUCCESS != rc) {
    free_reg(m, reg);
    if (OPAL_ERR_OUT_OF_RESOURCE == rc) {
      count(&m->register_mem_no_resources);
      return REGCACHE_REG_NO_RESOURCES;
    }
    count(&m->register_mem_failed);
    tl_last_rc = rc;
    return REGCACHE_REG_FAILED;
  }
  count(&m->register_mem_ok);
  *user_data = reg;
  /* REGCACHE_OPS_NO_KEYS: the keys live in the BTL's registration. */
  (void)lkey, (void)rkey;
  return REGCACHE_REG_OK;
}

/* The deregistrar regcache calls when a region dies (evicted,
 * invalidated and idle, destroyed): the BTL's deregister_mem. */
static int dereg_cb(void *ctx, void *user_data) {
  rr_module_t *m = ctx;
  mca_rcache_base_registration_t *reg = user_data;
  count(&m->deregister_mem_calls);
  int rc = m->resources.deregister_mem(m->resources.reg_data, reg);
  if (OPAL_SUCCESS != rc) {
    count(&m->deregister_mem_failed);
  }
  free_reg(m, reg);
  return OPAL_SUCCESS == rc ? 0 : 1;
}

/* A registration outside regcache: register_mem now, on the module's
 * list until its last reference is returned. */
static int register_direct(rr_module_t *m, void *addr, size_t size, uint32_t flags,
                           int32_t access, mca_rcache_base_registration_t **out) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t base = (uintptr_t)addr & ~(page - 1);
  uintptr_t end = ((uintptr_t)addr + size + page - 1) & ~(page - 1);
  mca_rcache_base_registration_t *reg = new_reg(m, (void *)base, end - base, flags, access);
  if (NULL == reg) {
    return OPAL_ERR_OUT_OF_RESOURCE;
  }
  struct rr_book *b = book_of(m, reg);
  b->direct = true;
  count(&m->register_mem_calls);
  int rc;
  /* Out of resources: make room by evicting idle cached registrations,
   * as grdma does. */
  while (OPAL_ERR_OUT_OF_RESOURCE ==
         (rc = m->resources.register_mem(m->resources.reg_data, (void *)base, end - base, reg))) {
    size_t evicted = 0;
    count(&m->register_mem_no_resources);
    if (NULL == m->cache || REGCACHE_OK != regcache_cache_evict(m->cache, 1, &evicted) ||
        0 == evicted) {
      break;
    }
    count(&m->register_mem_calls);
  }
  if (OPAL_SUCCESS != rc) {
    if (OPAL_ERR_OUT_OF_RESOURCE != rc) {
      count(&m->register_mem_failed);
    }
    free_reg(m, reg);
    return rc;
  }
  count(&m->register_mem_ok);
  count(&m->direct_registrations);
  reg->ref_count = 1;
  pthread_mutex_lock(&m->lock);
  b->next = m->direct.next;
  b->prev = &m->direct;
  m->direct.next->prev = b;
  m->direct.next = b;
  pthread_mutex_unlock(&m->lock);
  *out = reg;
  return OPAL_SUCCESS;
}

/* Deregister a direct registration (its last reference is gone). */
static int deregister_direct(rr_module_t *m, mca_rcache_base_registration_t *reg) {
  count(&m->deregister_mem_calls);
  int rc = m->resources.deregister_mem(m->resources.reg_data, reg);
  if (OPAL_SUCCESS != rc) {
    count(&m->deregister_mem_failed);
  }
  free_reg(m, reg);
  return rc;
}

/* One more Open MPI reference on the registration of handle `h`. */
static mca_rcache_base_registration_t *take_reference(rr_module_t *m, struct regcache_handle *h) {
  void *ud = NULL;
  if (REGCACHE_OK != regcache_handle_user_data(h, &ud) || NULL == ud) {
    (void)regcache_handle_release(h);
    return NULL;
  }
  mca_rcache_base_registration_t *reg = ud;
  struct rr_book *b = book_of(m, reg);
  struct regcache_handle *spare = NULL;
  pthread_mutex_lock(&m->lock);
  if (NULL == b->held) {
    b->held = h;
    reg->ref_count = 1;
  } else {
    reg->ref_count++;
    spare = h;
  }
  pthread_mutex_unlock(&m->lock);
  if (NULL != spare) {
    (void)regcache_handle_release(spare);
  }
  return reg;
}

/* regcache's result as an OPAL error. */
static int opal_error_of(enum regcache_result rc) {
  switch (rc) {
  case REGCACHE_ERR_NO_RESOURCES:
    return OPAL_ERR_OUT_OF_RESOURCE;
  case REGCACHE_ERR_INVALID_RANGE:
  case REGCACHE_ERR_INVALID_ARGUMENT:
  case REGCACHE_ERR_ACCESS_REFUSED:
  case REGCACHE_ERR_NOT_MAPPED:
    return OPAL_ERR_BAD_PARAM;
  default:
    return OPAL_ERROR;
  }
}

/* ---- the module's operations ------------------------------------------------------------ */

static int rr_register_mem(mca_rcache_base_module_t *rcache, void *addr, size_t size,
                           uint32_t flags, int32_t access_flags,
                           mca_rcache_base_registration_t **reg) {
  rr_module_t *m = (rr_module_t *)rcache;
  uint32_t access;
  *reg = NULL;
  if (NULL == addr || 0 == size || (uintptr_t)addr + size < (uintptr_t)addr) {
    opal_output(0, "%s: register of [%p, +%zu) refused: empty or wrapping range", RR_NAME, addr,
                size);
    count(&m->refused);
    return OPAL_ERR_BAD_PARAM;
  }
  if (!access_to_regcache(access_flags, &access)) {
    opal_output(0,
                "%s: register of [%p, +%zu) refused: access flags 0x%x include bits 0x%x that "
                "Open MPI's rcache interface does not define (LOCAL_WRITE 0x1, REMOTE_READ "
                "0x2, REMOTE_WRITE 0x4, REMOTE_ATOMIC 0x8)",
                RR_NAME, addr, size, (unsigned)access_flags,
                (unsigned)access_flags & ~(unsigned)MCA_RCACHE_ACCESS_ANY);
    count(&m->refused);
    return OPAL_ERR_BAD_PARAM;
  }
  if (flags & ~(uint32_t)RR_FLAGS_ACCEPTED) {
    opal_output(0,
                "%s: register of [%p, +%zu) refused: flags 0x%x include 0x%x (INVALID, an "
                "rcache module's reserved bits, or unknown)",
                RR_NAME, addr, size, flags, flags & ~(uint32_t)RR_FLAGS_ACCEPTED);
    count(&m->refused);
    return OPAL_ERR_BAD_PARAM;
  }
  if (NULL == m->cache || (flags & RR_FLAGS_DIRECT)) {
    return register_direct(m, addr, size, flags, access_flags, reg);
  }

  struct regcache_handle *h = NULL;
  tl_last_rc = OPAL_SUCCESS;
  enum regcache_result rc = regcache_cache_get(m->cache, addr, size, access, &h);
  if (REGCACHE_OK == rc) {
    *reg = take_reference(m, h);
    return NULL != *reg ? OPAL_SUCCESS : OPAL_ERROR;
  }
  char detail[256];
  switch (rc) {
  case REGCACHE_ERR_REGISTRAR:
    /* The BTL's register_mem failed hard: its own error. */
    return OPAL_SUCCESS != tl_last_rc ? tl_last_rc : OPAL_ERROR;
  case REGCACHE_ERR_NO_RESOURCES:
    /* register_mem still out of resources after regcache evicted every
     * idle registration: grdma's answer too. */
    return OPAL_ERR_OUT_OF_RESOURCE;
  case REGCACHE_ERR_INVALID_RANGE:
  case REGCACHE_ERR_INVALID_ARGUMENT:
  case REGCACHE_ERR_ACCESS_REFUSED:
  case REGCACHE_ERR_NOT_MAPPED:
    opal_output(0, "%s: register of [%p, +%zu) access 0x%x refused: %s (%s)", RR_NAME, addr,
                size, (unsigned)access_flags, regcache_strerror(rc),
                rc_detail(detail, sizeof detail));
    count(&m->refused);
    return opal_error_of(rc);
  default:
    /* regcache itself failed: serve this request without the cache. */
    if (C->verbose > 0) {
      opal_output(0, "%s: register of [%p, +%zu) not cached: %s (%s); registering directly",
                  RR_NAME, addr, size, regcache_strerror(rc), rc_detail(detail, sizeof detail));
    }
    count(&m->fallbacks);
    return register_direct(m, addr, size, flags, access_flags, reg);
  }
}

static int rr_find(mca_rcache_base_module_t *rcache, void *addr, size_t size,
                   mca_rcache_base_registration_t **reg) {
  rr_module_t *m = (rr_module_t *)rcache;
  *reg = NULL;
  if (0 == size) {
    return OPAL_ERROR; /* as the rcache base's vma_find */
  }
  if (NULL == m->cache) {
    return OPAL_SUCCESS; /* nothing cached: found nothing */
  }
  struct regcache_handle *h = NULL;
  enum regcache_result rc = regcache_cache_find(m->cache, addr, size, 0, &h);
  if (REGCACHE_OK == rc) {
    *reg = take_reference(m, h);
    return OPAL_SUCCESS;
  }
  /* Not cached: *reg stays NULL with OPAL_SUCCESS, grdma's contract
   * (callers test *reg). */
  return REGCACHE_ERR_NOT_CACHED == rc ? OPAL_SUCCESS : opal_error_of(rc);
}

static int rr_deregister(mca_rcache_base_module_t *rcache, mca_rcache_base_registration_t *reg) {
  rr_module_t *m = (rr_module_t *)rcache;
  struct rr_book *b = checked_book(m, reg, "deregister");
  if (NULL == b) {
    return OPAL_ERR_BAD_PARAM;
  }
  struct regcache_handle *release = NULL;
  bool last = false;
  pthread_mutex_lock(&m->lock);
  if (reg->ref_count <= 0) {
    pthread_mutex_unlock(&m->lock);
    opal_output(0, "%s: deregister of %p, which holds no reference: refused", RR_NAME,
                (void *)reg);
    count(&m->refused);
    return OPAL_ERR_BAD_PARAM;
  }
  if (0 == --reg->ref_count) {
    last = true;
    if (b->direct) {
      b->prev->next = b->next;
      b->next->prev = b->prev;
    } else {
      release = b->held;
      b->held = NULL;
    }
  }
  pthread_mutex_unlock(&m->lock);
  if (!last) {
    return OPAL_SUCCESS;
  }
  if (b->direct) {
    return deregister_direct(m, reg);
  }
  /* From here `reg` may be freed by dereg_cb. */
  (void)regcache_handle_release(release);
  return OPAL_SUCCESS;
}

/* Called by Open MPI's memory hooks, inside munmap/free: record, never
 * fail (mca_rcache_base_mem_cb exits the process on an error). */
static int rr_invalidate_range(mca_rcache_base_module_t *rcache, void *addr, size_t size) {
  rr_module_t *m = (rr_module_t *)rcache;
  count(&m->hook_calls);
  struct regcache_cache *cache = m->cache;
  if (NULL != cache && m->pass_hooks && NULL != addr && 0 != size &&
      REGCACHE_OK != regcache_cache_notify_unmapped(cache, addr, size)) {
    count(&m->hook_failures);
  }
  return OPAL_SUCCESS;
}

static bool rr_evict(mca_rcache_base_module_t *rcache) {
  rr_module_t *m = (rr_module_t *)rcache;
  size_t evicted = 0;
  if (NULL == m->cache) {
    return false;
  }
  /* regcache_cache_evict gives back this thread's deferred references
   * first when they are all that keeps regions from being idle. */
  return REGCACHE_OK == regcache_cache_evict(m->cache, 1, &evicted) && evicted > 0;
}

static void print_stats(rr_module_t *m) {
  struct regcache_stats s;
  memset(&s, 0, sizeof s);
  if (NULL != m->cache) {
    (void)regcache_cache_stats(m->cache, &s);
  }
  opal_output(0,
              "%s: rank %" PRIu32 ": cache %s mode %s hits %" PRIu64 " misses %" PRIu64
              " registrations %" PRIu64 " register_mem %" PRIu64 " register_mem_ok %" PRIu64
              " register_mem_no_resources %" PRIu64 " register_mem_failed %" PRIu64
              " deregister_mem %" PRIu64 " deregister_mem_failed %" PRIu64 " evictions %" PRIu64
              " invalidations %" PRIu64 " invalidations_idle %" PRIu64
              " invalidations_in_use %" PRIu64 " monitor_invalidations %" PRIu64
              " enomem_retries %" PRIu64 " verify_checks %" PRIu64 " verify_mismatches %" PRIu64
              " direct %" PRIu64 " fallbacks %" PRIu64
              " hook_calls %" PRIu64 " hook_failures %" PRIu64 " refused %" PRIu64,
              RR_NAME, OPAL_PROC_MY_NAME.vpid, m->cache_name, m->mode, s.hits, s.misses,
              s.registrations, load(&m->register_mem_calls), load(&m->register_mem_ok),
              load(&m->register_mem_no_resources), load(&m->register_mem_failed),
              load(&m->deregister_mem_calls), load(&m->deregister_mem_failed), s.evictions,
              s.invalidations_idle + s.invalidations_in_use, s.invalidations_idle,
              s.invalidations_in_use, s.monitor_invalidations, s.enomem_retries, s.verify_checks,
              s.verify_mismatches,
              load(&m->direct_registrations), load(&m->fallbacks), load(&m->hook_calls),
              load(&m->hook_failures), load(&m->refused));
}

static void rr_finalize(mca_rcache_base_module_t *rcache) {
  rr_module_t *m = (rr_module_t *)rcache;
  /* Direct registrations the BTL never returned. */
  size_t leftover = 0;
  for (;;) {
    pthread_mutex_lock(&m->lock);
    struct rr_book *b = m->direct.next;
    if (b == &m->direct) {
      pthread_mutex_unlock(&m->lock);
      break;
    }
    b->prev->next = b->next;
    b->next->prev = b->prev;
    pthread_mutex_unlock(&m->lock);
    leftover++;
    (void)deregister_direct(m, b->reg);
  }
  if (C->verbose > 0) {
    print_stats(m);
    if (leftover) {
      opal_output(0, "%s: finalize deregistered %zu direct registration(s) still referenced",
                  RR_NAME, leftover);
    }
  }
  struct regcache_cache *cache = m->cache;
  m->cache = NULL;
  if (NULL != cache) {
    /* Releases every handle still held and deregisters every
     * registration (through dereg_cb). */
    (void)regcache_cache_destroy(cache);
  }
  if (C->verbose > 0) {
    /* Every registration the BTL made for this module, cached or direct,
     * must have been deregistered by now (the bad-input runs of the
     * openib suite check this line). */
    uint64_t ok = load(&m->register_mem_ok), dereg = load(&m->deregister_mem_calls),
             dereg_failed = load(&m->deregister_mem_failed);
    opal_output(0,
                "%s: rank %" PRIu32 ": finalize: register_mem_ok %" PRIu64
                " deregister_mem %" PRIu64 " deregister_mem_failed %" PRIu64 ": %s",
                RR_NAME, OPAL_PROC_MY_NAME.vpid, ok, dereg, dereg_failed,
                ok == dereg && 0 == dereg_failed ? "balanced" : "UNBALANCED");
  }
  pthread_mutex_destroy(&m->lock);
  free(m->cache_name);
  free(m);
}

/* ---- module creation -------------------------------------------------------------------- */

/* The wart of declaring hook support (see the top of the file): when
 * Open MPI has no memory component of its own (`--mca memory ^patcher`)
 * and another rcache component is loaded, say once that its
 * registrations have nothing invalidating them. */
static void warn_other_rcaches(void) {
  static bool warned;
  mca_base_component_list_item_t *cli;
  if (warned || !C->declared_hooks || NULL == opal_memory ||
      '\0' != opal_memory->memoryc_version.mca_component_name[0]) {
    return;
  }
  OPAL_LIST_FOREACH (cli, &opal_rcache_base_framework.framework_components,
                     mca_base_component_list_item_t) {
    const char *name = cli->cli_component->mca_component_name;
    if (0 != strcmp(name, "regcache")) {
      opal_output(0,
                  "%s: warning: Open MPI's memory hooks are off and this component told Open "
                  "MPI it provides hook support (its own invalidation source); rcache "
                  "component \"%s\" is loaded too and nothing would invalidate its "
                  "registrations: if a BTL uses it, select this component alone (--mca rcache "
                  "regcache)",
                  RR_NAME, name);
      warned = true;
      return;
    }
  }
}

/* Create the module's cache, or leave it NULL with `mode` saying why. */
static void create_cache(rr_module_t *m) {
  char detail[256];
  uint32_t monitor;
  struct regcache_config cfg;
  if (!parse_monitor(C->monitor, &monitor)) {
    opal_output(0,
                "%s: rcache_regcache_monitor=\"%s\" is not valid: expected auto, kernel, patch, uffd "
                "or external; running rcache \"%s\" without a cache",
                RR_NAME, C->monitor ? C->monitor : "", m->cache_name);
    snprintf(m->mode, sizeof m->mode, "uncached(bad-monitor)");
    return;
  }
  if (0 == opal_leave_pinned && !opal_leave_pinned_pipeline) {
    snprintf(m->mode, sizeof m->mode, "uncached(mpi_leave_pinned=0)");
    return;
  }
  if (!make_config(&cfg, monitor)) {
    opal_output(0, "%s: running rcache \"%s\" without a cache", RR_NAME, m->cache_name);
    snprintf(m->mode, sizeof m->mode, "uncached(bad-config)");
    return;
  }
  struct regcache_registrar_ops ops = {.version = REGCACHE_REGISTRAR_OPS_VERSION,
                                       .flags = REGCACHE_OPS_NO_KEYS,
                                       .reg = reg_cb,
                                       .dereg = dereg_cb,
                                       .ctx = m};
  enum regcache_result rc = new_cache(&cfg, &ops, &m->cache);
  if (REGCACHE_OK != rc && REGCACHE_MONITOR_AUTO == monitor) {
    /* No source of its own: Open MPI's hooks may still keep it true. */
    cfg.monitor = REGCACHE_MONITOR_EXTERNAL;
    rc = regcache_cache_new_with_ops(&cfg, &ops, &m->cache);
  }
  if (REGCACHE_OK != rc) {
    opal_output(0, "%s: cannot create regcache for rcache \"%s\": %s (%s); running without a "
                   "cache",
                RR_NAME, m->cache_name, regcache_strerror(rc), rc_detail(detail, sizeof detail));
    m->cache = NULL;
    snprintf(m->mode, sizeof m->mode, "uncached(create-failed)");
    return;
  }
  uint32_t got = REGCACHE_MONITOR_NONE;
  (void)regcache_cache_monitor(m->cache, &got);
  m->pass_hooks = REGCACHE_MONITOR_KERNEL != got;
  if (REGCACHE_MONITOR_KERNEL == got || REGCACHE_MONITOR_UFFD == got ||
      REGCACHE_MONITOR_PATCH == got) {
    snprintf(m->mode, sizeof m->mode, "cached(source=%s)", monitor_name(got));
    warn_other_rcaches();
    return;
  }
  /* An external-only cache is true only while Open MPI's hooks call
   * invalidate_range: the rcache base registered its release callback,
   * on a hook support this component did not declare itself. */
  const int both = OPAL_MEMORY_FREE_SUPPORT | OPAL_MEMORY_MUNMAP_SUPPORT;
  if (REGCACHE_MONITOR_EXTERNAL == got && mca_rcache_base_used_mem_hooks && !C->declared_hooks &&
      both == (opal_mem_hooks_support_level() & both)) {
    snprintf(m->mode, sizeof m->mode, "cached(source=ompi-hooks)");
    return;
  }
  opal_output(0,
              "%s: rcache \"%s\": no invalidation source (regcache's monitor is %s and Open "
              "MPI's memory hooks are not installed): running without a cache, since cached "
              "registrations could go stale",
              RR_NAME, m->cache_name, monitor_name(got));
  (void)regcache_cache_destroy(m->cache);
  m->cache = NULL;
  snprintf(m->mode, sizeof m->mode, "uncached(no-source)");
}

static mca_rcache_base_module_t *rr_init(mca_rcache_base_resources_t *resources) {
  if (NULL == resources || NULL == resources->register_mem ||
      NULL == resources->deregister_mem ||
      resources->sizeof_reg < sizeof(mca_rcache_base_registration_t)) {
    opal_output(0,
                "%s: module creation refused: the resources need register_mem, deregister_mem "
                "and sizeof_reg >= %zu (got %zu)",
                RR_NAME, sizeof(mca_rcache_base_registration_t),
                NULL != resources ? resources->sizeof_reg : (size_t)0);
    return NULL;
  }
  rr_module_t *m = calloc(1, sizeof *m);
  if (NULL == m) {
    return NULL;
  }
  m->super.rcache_component = &C->super;
  m->super.rcache_register = rr_register_mem;
  m->super.rcache_deregister = rr_deregister;
  m->super.rcache_find = rr_find;
  m->super.rcache_invalidate_range = rr_invalidate_range;
  m->super.rcache_finalize = rr_finalize;
  m->super.rcache_evict = rr_evict;
  m->resources = *resources;
  m->cache_name = strdup(NULL != resources->cache_name ? resources->cache_name : "");
  if (NULL == m->cache_name) {
    free(m);
    return NULL;
  }
  m->resources.cache_name = m->cache_name;
  const size_t align = _Alignof(max_align_t);
  m->book_offset = (resources->sizeof_reg + align - 1) / align * align;
  pthread_mutex_init(&m->lock, NULL);
  m->direct.next = m->direct.prev = &m->direct;
  create_cache(m);
  if (C->verbose > 0) {
    opal_output(0, "%s: rank %" PRIu32 ": rcache \"%s\" created: %s", RR_NAME,
                OPAL_PROC_MY_NAME.vpid, m->cache_name, m->mode);
  }
  return &m->super;
}
