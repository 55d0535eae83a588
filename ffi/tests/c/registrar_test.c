/* The caller's registrar through the C API (issue 12): a cache driven by
 * the caller's reg/dereg callbacks, as an MPI library drives its rcache,
 * on real memory pinned with mlock.
 *
 * The callbacks keep an "MR object" per registration (malloc'd, holding
 * the range and a serial number that is also its lkey/rkey) and count
 * what they did; the tests check user data on every hit, find, evict,
 * invalidate, the three reg results and garbage ones, a failing dereg,
 * a registrar without keys, callbacks calling back into the cache, and
 * that destroy leaves nothing registered. */
#include "test_common.h"

#include <sys/mman.h>

struct mr_object {
    void *addr;
    size_t len;
    uint32_t serial;
};

struct registrar {
    int regs, deregs, live;
    int cap;          /* live registrations allowed; beyond: NO_RESOURCES */
    int force;        /* nonzero: reg returns this (a bad or failing status) */
    int dereg_rc;     /* what dereg returns */
    regcache_cache *reenter; /* non-NULL: dereg calls into this cache */
    void *reenter_buf;
};

static int reg_cb(void *ctx, void *addr, size_t len, uint32_t access, void **user_data,
                  uint32_t *lkey, uint32_t *rkey)
{
    struct registrar *r = ctx;
    struct mr_object *mr;
    (void)access;
    if (r->force != 0)
        return r->force;
    if (r->live >= r->cap)
        return REGCACHE_REG_NO_RESOURCES;
    if (mlock(addr, len) != 0)
        return REGCACHE_REG_FAILED;
    mr = malloc(sizeof *mr);
    if (mr == NULL) {
        munlock(addr, len);
        return REGCACHE_REG_NO_RESOURCES;
    }
    mr->addr = addr;
    mr->len = len;
    mr->serial = (uint32_t)++r->regs;
    r->live++;
    *user_data = mr;
    *lkey = mr->serial;
    *rkey = mr->serial;
    return REGCACHE_REG_OK;
}

static int dereg_cb(void *ctx, void *user_data)
{
    struct registrar *r = ctx;
    struct mr_object *mr = user_data;
    if (r->reenter != NULL) {
        regcache_handle *h = NULL;
        regcache_stats st;
        EXPECT(regcache_cache_stats(r->reenter, &st), REGCACHE_OK);
        EXPECT(regcache_cache_get(r->reenter, r->reenter_buf, page, REGCACHE_ACCESS_LOCAL_WRITE, &h),
               REGCACHE_OK);
        EXPECT(regcache_handle_release(h), REGCACHE_OK);
    }
    munlock(mr->addr, mr->len);
    free(mr);
    r->deregs++;
    r->live--;
    return r->dereg_rc;
}

static regcache_cache *new_cache(struct registrar *r, uint32_t monitor, uint32_t flags)
{
    regcache_config cfg;
    regcache_registrar_ops ops = {REGCACHE_REGISTRAR_OPS_VERSION, flags, reg_cb, dereg_cb, r};
    regcache_cache *c = NULL;
    EXPECT(regcache_config_default(&cfg), REGCACHE_OK);
    cfg.merge = 0;
    cfg.monitor = monitor;
    cfg.registrar = 77; /* ignored with callbacks */
    EXPECT(regcache_cache_new_with_ops(&cfg, &ops, &c), REGCACHE_OK);
    return c;
}

static void test_bad_ops(void)
{
    struct registrar r = {.cap = 8};
    regcache_registrar_ops ok = {REGCACHE_REGISTRAR_OPS_VERSION, 0, reg_cb, dereg_cb, &r};
    regcache_registrar_ops bad;
    regcache_cache *c = (regcache_cache *)0x1;
    char buf[256];
    size_t n;

    EXPECT(regcache_cache_new_with_ops(NULL, NULL, &c), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_cache_new_with_ops(NULL, &ok, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    bad = ok;
    bad.version = 0;
    EXPECT(regcache_cache_new_with_ops(NULL, &bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    regcache_last_error(buf, sizeof buf, &n);
    CHECK(strstr(buf, "version") != NULL);
    bad = ok;
    bad.reg = NULL;
    EXPECT(regcache_cache_new_with_ops(NULL, &bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = ok;
    bad.dereg = NULL;
    EXPECT(regcache_cache_new_with_ops(NULL, &bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = ok;
    bad.flags = 0x10;
    EXPECT(regcache_cache_new_with_ops(NULL, &bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    CHECK(c == (regcache_cache *)0x1); /* untouched on error */
    EXPECT(regcache_cache_new_with_pd(NULL, NULL, &c), REGCACHE_ERR_UNAVAILABLE);
    CHECK(c == (regcache_cache *)0x1);
    CHECK(r.regs == 0);
}

static void test_user_data_find_evict_invalidate(void)
{
    struct registrar r = {.cap = 64};
    regcache_cache *c = new_cache(&r, REGCACHE_MONITOR_NONE, 0);
    char *buf = map_anon(4 * page);
    regcache_handle *h = NULL, *h2 = NULL, *keep = (regcache_handle *)0x1;
    void *ud = NULL, *ud2 = NULL;
    uint32_t key = 0, kind = 0;
    size_t n = 99;
    regcache_stats st;

    EXPECT(regcache_cache_registrar(c, &kind), REGCACHE_OK);
    CHECK(kind == REGCACHE_REGISTRAR_CALLER);
    EXPECT(regcache_cache_find(c, buf, page, REGCACHE_ACCESS_LOCAL_WRITE, &keep),
           REGCACHE_ERR_NOT_CACHED);
    CHECK(keep == (regcache_handle *)0x1 && r.regs == 0);

    EXPECT(regcache_cache_get(c, buf, 2 * page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_user_data(h, &ud), REGCACHE_OK);
    CHECK(ud != NULL && ((struct mr_object *)ud)->addr == buf);
    EXPECT(regcache_handle_lkey(h, &key), REGCACHE_OK);
    CHECK(key == ((struct mr_object *)ud)->serial);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_handle_user_data(h, &ud2), REGCACHE_ERR_STALE_HANDLE);

    /* Every hit, and find, return the same MR object. */
    EXPECT(regcache_cache_get(c, buf + 10, 100, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_user_data(h, &ud2), REGCACHE_OK);
    CHECK(ud2 == ud);
    EXPECT(regcache_cache_find(c, buf + page, page, REGCACHE_ACCESS_LOCAL_WRITE, &h2), REGCACHE_OK);
    EXPECT(regcache_handle_user_data(h2, &ud2), REGCACHE_OK);
    CHECK(ud2 == ud && h2 != h);
    EXPECT(regcache_handle_release(h2), REGCACHE_OK);
    EXPECT(regcache_cache_find(c, buf, page, REGCACHE_ACCESS_REMOTE_WRITE | REGCACHE_ACCESS_LOCAL_WRITE,
                               &keep),
           REGCACHE_ERR_NOT_CACHED);
    EXPECT(regcache_cache_find(c, NULL, page, 1, &keep), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_find(c, buf, page, 0x100, &keep), REGCACHE_ERR_INVALID_ARGUMENT);
    CHECK(r.regs == 1);

    /* In use: not evicted. Released (and this thread's deferred references
     * given back): evicted. */
    EXPECT(regcache_cache_evict(c, 1, &n), REGCACHE_OK);
    CHECK(n == 0 && r.deregs == 0);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_evict(c, 1, NULL), REGCACHE_OK);
    CHECK(r.deregs == 1 && r.live == 0);
    EXPECT(regcache_cache_evict(NULL, 1, &n), REGCACHE_ERR_NULL_ARGUMENT);

    /* Synchronous invalidation. */
    EXPECT(regcache_cache_get(c, buf, page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_invalidate(c, buf, 4 * page, &n), REGCACHE_OK);
    CHECK(n == 1);
    EXPECT(regcache_cache_find(c, buf, page, REGCACHE_ACCESS_LOCAL_WRITE, &keep),
           REGCACHE_ERR_NOT_CACHED);
    EXPECT(regcache_cache_invalidate(c, NULL, page, &n), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_stats(c, &st), REGCACHE_OK);
    CHECK(st.registrations == 2 && st.deregistrations == 2);

    EXPECT(regcache_cache_get(c, buf, page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_cache_destroy(c), REGCACHE_OK);
    CHECK(r.live == 0 && r.regs == r.deregs);
    munmap(buf, 4 * page);
}

static void test_reg_results(void)
{
    struct registrar r = {.cap = 1};
    regcache_cache *c = new_cache(&r, REGCACHE_MONITOR_NONE, 0);
    char *a = map_anon(page), *b = map_anon(page);
    regcache_handle *h = NULL, *keep = (regcache_handle *)0x1;
    regcache_stats st;
    char d[256];
    size_t n;

    /* NO_RESOURCES: evict the idle region and retry. */
    EXPECT(regcache_cache_get(c, a, page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_get(c, b, page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_cache_stats(c, &st), REGCACHE_OK);
    CHECK(st.enomem_retries >= 1 && r.live == 1);
    /* ... and with nothing idle, the get fails with NO_RESOURCES. */
    EXPECT(regcache_cache_get(c, a, page, REGCACHE_ACCESS_LOCAL_WRITE, &keep),
           REGCACHE_ERR_NO_RESOURCES);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);

    /* FAILED and garbage: a clear error, nothing cached, nothing leaked. */
    r.cap = 8;
    r.force = REGCACHE_REG_FAILED;
    EXPECT(regcache_cache_get(c, a, page, REGCACHE_ACCESS_LOCAL_WRITE, &keep),
           REGCACHE_ERR_REGISTRAR);
    r.force = 42;
    EXPECT(regcache_cache_get(c, a, page, REGCACHE_ACCESS_LOCAL_WRITE, &keep),
           REGCACHE_ERR_REGISTRAR);
    regcache_last_error(d, sizeof d, &n);
    CHECK(strstr(d, "42") != NULL);
    r.force = -1;
    EXPECT(regcache_cache_get(c, a, page, REGCACHE_ACCESS_LOCAL_WRITE, &keep),
           REGCACHE_ERR_REGISTRAR);
    CHECK(keep == (regcache_handle *)0x1);
    r.force = 0;

    /* A failing dereg is counted; the cache goes on. */
    r.dereg_rc = -5;
    EXPECT(regcache_cache_flush(c, &n), REGCACHE_OK);
    CHECK(n == 1);
    EXPECT(regcache_cache_stats(c, &st), REGCACHE_OK);
    CHECK(st.deregistration_failures == 1 && st.regions == 0);
    r.dereg_rc = 0;
    EXPECT(regcache_cache_get(c, a, page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_destroy(c), REGCACHE_OK);
    CHECK(r.live == 0);
    munmap(a, page);
    munmap(b, page);
}

static void test_no_keys_and_reentry(uint32_t monitor)
{
    struct registrar r = {.cap = 64};
    regcache_cache *c = new_cache(&r, monitor, REGCACHE_OPS_NO_KEYS);
    char *buf = map_anon(4 * page), *other = map_anon(page);
    regcache_handle *h = NULL;
    uint32_t key = 7;
    size_t n;

    EXPECT(regcache_cache_get(c, buf, page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_lkey(h, &key), REGCACHE_ERR_NO_KEYS);
    CHECK(key == 7);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_quiesce(c), REGCACHE_OK);

    /* dereg calls back into the cache: never under one of its locks. */
    r.reenter = c;
    r.reenter_buf = other;
    if (monitor != REGCACHE_MONITOR_NONE) {
        void *ud = NULL;
        int regs = r.regs;
        munmap(buf, 4 * page); /* the source sees it; the next get drains */
        CHECK(mmap(buf, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                   -1, 0) == buf);
        memset(buf, 1, 4 * page);
        EXPECT(regcache_cache_get(c, buf, page, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
        EXPECT(regcache_handle_user_data(h, &ud), REGCACHE_OK);
        CHECK(r.regs > regs); /* a fresh registration after the re-map */
        EXPECT(regcache_handle_release(h), REGCACHE_OK);
        EXPECT(regcache_cache_quiesce(c), REGCACHE_OK);
    }
    EXPECT(regcache_cache_evict(c, 100, &n), REGCACHE_OK);
    CHECK(n >= 1);
    r.reenter = NULL;
    EXPECT(regcache_cache_destroy(c), REGCACHE_OK);
    CHECK(r.live == 0 && r.regs == r.deregs);
    munmap(buf, 4 * page);
    munmap(other, page);
}

int main(void)
{
    int no_uffd;
    test_init();
    no_uffd = getenv("REGCACHE_TEST_NO_UFFD") != NULL;
    test_bad_ops();
    test_user_data_find_evict_invalidate();
    test_reg_results();
    test_no_keys_and_reentry(REGCACHE_MONITOR_NONE);
    if (!no_uffd)
        test_no_keys_and_reentry(REGCACHE_MONITOR_AUTO);
    return test_finish("registrar_test");
}
