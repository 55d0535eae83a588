/*
 * regcache-bench's window onto UCX's registration cache (`ucs_rcache`),
 * for `regcache-bench --compare ucx`: the same trace replayed through
 * UCX's cache, with a registrar that does what regcache's does.
 *
 * Written against the public header ucs/memory/rcache.h of UCX 1.13
 * (Debian 12's libucx-dev) and ucm/api/ucm.h; no UCX source is copied.
 * Built by benches/build.rs only when those headers exist.
 *
 * How the replay drives it, and why:
 * - acquire = ucs_rcache_get() then ucs_rcache_region_put(), as an MPI
 *   library does around one rendezvous transfer. A get during which the
 *   registrar was called is a miss (UCX counts a merge that re-registers a
 *   larger region the same way regcache does: one registration).
 * - unmap = ucm_vm_munmap(), the "external event" path that UCX documents
 *   for a host with its own memory hooks (Open MPI): UCX's rcache queues
 *   the range and invalidates on its next get. The event handler is
 *   installed as external, so UCM patches no symbol in this process.
 * - the registrar: mlock/munlock when `pin` (regcache's PinRegistrar),
 *   else nothing (to compare the caches alone); its time is measured here
 *   and excluded from the cache's time, as regcache's registrar time is.
 */
#include <ucs/memory/rcache.h>
#include <ucm/api/ucm.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* What the Rust side reads back; keep in step with `UcxStats` in
 * benches/src/ucx.rs. */
typedef struct rb_ucx_stats {
    uint64_t registrations;
    uint64_t deregistrations;
    uint64_t registration_failures;
    uint64_t registrar_ns;
} rb_ucx_stats;

typedef struct rb_ucx {
    ucs_rcache_t *rcache;
    int pin;
    rb_ucx_stats stats;
} rb_ucx;

static uint64_t rb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static ucs_status_t rb_mem_reg(void *context, ucs_rcache_t *rcache, void *arg,
                               ucs_rcache_region_t *region, uint16_t flags)
{
    rb_ucx *u = context;
    void *start = (void *)region->super.start;
    size_t len = region->super.end - region->super.start;
    uint64_t t0 = rb_now_ns();
    int rc = u->pin ? mlock(start, len) : 0;
    u->stats.registrar_ns += rb_now_ns() - t0;
    (void)rcache; (void)arg; (void)flags;
    if (rc != 0) {
        u->stats.registration_failures++;
        return UCS_ERR_IO_ERROR;
    }
    u->stats.registrations++;
    return UCS_OK;
}

static void rb_mem_dereg(void *context, ucs_rcache_t *rcache, ucs_rcache_region_t *region)
{
    rb_ucx *u = context;
    uint64_t t0 = rb_now_ns();
    if (u->pin) {
        munlock((void *)region->super.start, region->super.end - region->super.start);
    }
    u->stats.registrar_ns += rb_now_ns() - t0;
    u->stats.deregistrations++;
    (void)rcache;
}

static void rb_dump_region(void *context, ucs_rcache_t *rcache, ucs_rcache_region_t *region,
                           char *buf, size_t max)
{
    (void)context; (void)rcache; (void)region;
    if (max > 0) buf[0] = '\0';
}

static const ucs_rcache_ops_t rb_ops = {rb_mem_reg, rb_mem_dereg, rb_dump_region};

/* A UCX rcache of at most `max_regions` regions and `max_bytes` bytes
 * (UCX's LRU eviction), registering with mlock when `pin`. Returns NULL
 * and writes why into `err` (NUL-terminated, at most `errlen` bytes). */
rb_ucx *rb_ucx_open(uint64_t max_regions, uint64_t max_bytes, int pin, char *err, size_t errlen)
{
    ucs_rcache_params_t p;
    ucs_status_t st;
    rb_ucx *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->pin = pin;
    /* Before the rcache adds its handler: UCM then installs no hooks and
     * only ucm_vm_munmap() delivers the event. */
    ucm_set_external_event(UCM_EVENT_VM_UNMAPPED);
    memset(&p, 0, sizeof(p));
    p.region_struct_size = sizeof(ucs_rcache_region_t);
    p.alignment = UCS_PGT_ADDR_ALIGN;
    p.max_alignment = (size_t)sysconf(_SC_PAGESIZE);
    p.ucm_events = UCM_EVENT_VM_UNMAPPED;
    p.ucm_event_priority = 1000;
    p.ops = &rb_ops;
    p.context = u;
    p.flags = UCS_RCACHE_FLAG_NO_PFN_CHECK;
    p.max_regions = (unsigned long)max_regions;
    p.max_size = (size_t)max_bytes;
    p.max_unreleased = SIZE_MAX;
    st = ucs_rcache_create(&p, "regcache-bench", NULL, &u->rcache);
    if (st != UCS_OK) {
        snprintf(err, errlen, "ucs_rcache_create: %s", ucs_status_string(st));
        free(u);
        return NULL;
    }
    return u;
}

/* Get and put back a registration of [addr, addr+len). Returns 1 for a
 * hit, 0 for a miss, -1 when ucs_rcache_get failed. */
int rb_ucx_acquire(rb_ucx *u, uint64_t addr, uint64_t len)
{
    ucs_rcache_region_t *r;
    uint64_t before = u->stats.registrations + u->stats.registration_failures;
    ucs_status_t st = ucs_rcache_get(u->rcache, (void *)addr, (size_t)len,
                                     PROT_READ | PROT_WRITE, NULL, &r);
    if (st != UCS_OK) return -1;
    ucs_rcache_region_put(u->rcache, r);
    return u->stats.registrations + u->stats.registration_failures == before;
}

/* [addr, addr+len) was unmapped: UCX's documented external event. */
void rb_ucx_unmap(rb_ucx *u, uint64_t addr, uint64_t len)
{
    (void)u;
    ucm_vm_munmap((void *)addr, (size_t)len);
}

void rb_ucx_stats_of(const rb_ucx *u, rb_ucx_stats *out)
{
    *out = u->stats;
}

/* Destroy the rcache (deregistering what it holds) and free `u`. */
void rb_ucx_close(rb_ucx *u)
{
    ucs_rcache_destroy(u->rcache);
    free(u);
}
