/* Every function of regcache.h, every error code the library can be made
 * to return from a test, NULL and overflowing arguments, stale handles and
 * destroyed objects, and the stale-registration scenario. Compiled against
 * the installed header and regcache.pc; run under ASan+UBSan and valgrind
 * by `cargo xtask test`. */
#define _GNU_SOURCE
#include "test_common.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* Set by the valgrind run: valgrind holds its global lock across munmap,
 * so a userfaultfd monitor thread can never read the event munmap waits
 * for (a deadlock in valgrind, not in the library). Those parts run under
 * ASan only. */
static int no_uffd;

static const int all_codes[] = {
    REGCACHE_OK,
    REGCACHE_ERR_NULL_ARGUMENT,
    REGCACHE_ERR_INVALID_RANGE,
    REGCACHE_ERR_INVALID_ARGUMENT,
    REGCACHE_ERR_CONFIG_ENV,
    REGCACHE_ERR_NOT_MAPPED,
    REGCACHE_ERR_NO_RESOURCES,
    REGCACHE_ERR_ACCESS_REFUSED,
    REGCACHE_ERR_UNAVAILABLE,
    REGCACHE_ERR_REGISTRAR,
    REGCACHE_ERR_STALE_HANDLE,
    REGCACHE_ERR_DESTROYED,
    REGCACHE_ERR_NO_KEYS,
    REGCACHE_ERR_PANIC,
    REGCACHE_ERR_BUSY,
    REGCACHE_ERR_DUPLICATE_COOKIE,
    REGCACHE_ERR_UNKNOWN_COOKIE,
    REGCACHE_ERR_FORKED,
    REGCACHE_ERR_UNSUPPORTED,
    REGCACHE_ERR_NOTIFIER,
    REGCACHE_ERR_BUFFER_TOO_SMALL,
};

static void test_strerror_and_version(void)
{
    const char *unknown = regcache_strerror(12345);
    CHECK(unknown != NULL && strstr(unknown, "unknown") != NULL);
    for (size_t i = 0; i < sizeof all_codes / sizeof all_codes[0]; i++) {
        const char *s = regcache_strerror(all_codes[i]);
        CHECK(s != NULL && s[0] != '\0' && s != unknown);
        /* Codes live in their own range: 0, then 4701.. with no gaps. */
        CHECK(all_codes[i] == 0 || all_codes[i] == 4700 + (int)i);
    }
    CHECK(strcmp(regcache_version(), "0.1.0") == 0);
}

static void test_last_error(void)
{
    char buf[256];
    size_t n = 99;
    regcache_config cfg;
    EXPECT(regcache_config_default(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_last_error(NULL, 10, &n), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_last_error(buf, sizeof buf, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_last_error(buf, sizeof buf, &n), REGCACHE_OK);
    CHECK(n == strlen(buf) && strstr(buf, "out") != NULL);
    /* Too small: only the length is written. */
    memset(buf, 'x', sizeof buf);
    EXPECT(regcache_last_error(buf, 3, &n), REGCACHE_ERR_BUFFER_TOO_SMALL);
    CHECK(n > 3 && buf[0] == 'x');
    EXPECT(regcache_config_default(&cfg), REGCACHE_OK);
    CHECK(cfg.max_regions >= 1 && cfg.max_bytes >= page && cfg.merge == 1);
    CHECK(cfg.registrar == REGCACHE_REGISTRAR_AUTO && cfg.monitor == REGCACHE_MONITOR_AUTO);
}

static void test_config_env(void)
{
    regcache_config cfg, before;
    regcache_cache *c = (regcache_cache *)0x1;
    char buf[512];
    size_t n;

    setenv("REGCACHE_MAX_BYTES", "64M", 1);
    setenv("REGCACHE_MERGE", "off", 1);
    setenv("REGCACHE_REGISTRAR", "pin", 1);
    setenv("REGCACHE_MONITOR", "none", 1);
    EXPECT(regcache_config_from_env(&cfg), REGCACHE_OK);
    CHECK(cfg.max_bytes == 64u << 20 && cfg.merge == 0);
    CHECK(cfg.registrar == REGCACHE_REGISTRAR_PIN && cfg.monitor == REGCACHE_MONITOR_NONE);

    const char *bad[][2] = {
        {"REGCACHE_MAX_BYTES", "12Q"},
        {"REGCACHE_MAX_REGIONS", "0"},
        {"REGCACHE_MERGE", "maybe"},
        {"REGCACHE_REGISTRAR", "gpu"},
        {"REGCACHE_MONITOR", "psychic"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *old = getenv(bad[i][0]) ? strdup(getenv(bad[i][0])) : NULL;
        setenv(bad[i][0], bad[i][1], 1);
        before = cfg;
        EXPECT(regcache_config_from_env(&cfg), REGCACHE_ERR_CONFIG_ENV);
        CHECK(memcmp(&before, &cfg, sizeof cfg) == 0); /* untouched on error */
        EXPECT(regcache_last_error(buf, sizeof buf, &n), REGCACHE_OK);
        CHECK(strstr(buf, bad[i][0]) != NULL && strstr(buf, bad[i][1]) != NULL);
        /* NULL config means "from the environment": same error, no cache. */
        EXPECT(regcache_cache_new(NULL, &c), REGCACHE_ERR_CONFIG_ENV);
        CHECK(c == (regcache_cache *)0x1);
        if (old) {
            setenv(bad[i][0], old, 1);
            free(old);
        } else {
            unsetenv(bad[i][0]);
        }
    }
    unsetenv("REGCACHE_MAX_BYTES");
    unsetenv("REGCACHE_MERGE");
    unsetenv("REGCACHE_REGISTRAR");
    unsetenv("REGCACHE_MONITOR");
}

static regcache_cache *new_cache(uint32_t monitor, uint32_t merge)
{
    regcache_config cfg;
    regcache_cache *c = NULL;
    EXPECT(regcache_config_default(&cfg), REGCACHE_OK);
    cfg.registrar = REGCACHE_REGISTRAR_PIN;
    cfg.monitor = monitor;
    cfg.merge = merge;
    EXPECT(regcache_cache_new(&cfg, &c), REGCACHE_OK);
    return c;
}

static void test_cache_new_errors(void)
{
    regcache_config cfg, bad;
    regcache_cache *c = NULL;
    EXPECT(regcache_config_default(&cfg), REGCACHE_OK);
    EXPECT(regcache_cache_new(&cfg, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    bad = cfg; bad.max_regions = 0;
    EXPECT(regcache_cache_new(&bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = cfg; bad.max_bytes = 0;
    EXPECT(regcache_cache_new(&bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = cfg; bad.merge = 3;
    EXPECT(regcache_cache_new(&bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = cfg; bad.registrar = 77;
    EXPECT(regcache_cache_new(&bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = cfg; bad.monitor = 77;
    EXPECT(regcache_cache_new(&bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = cfg; bad.verify = 2;
    EXPECT(regcache_cache_new(&bad, &c), REGCACHE_ERR_INVALID_ARGUMENT);
    CHECK(c == NULL);
    /* No RDMA device on the host tier: verbs is unavailable. In the VM
     * tier (rxe) it opens; both are fine, a crash is not. */
    bad = cfg; bad.registrar = REGCACHE_REGISTRAR_PIN; bad.monitor = REGCACHE_MONITOR_KERNEL;
    if (access("/dev/ummunotify", F_OK) != 0) {
        EXPECT(regcache_cache_new(&bad, &c), REGCACHE_ERR_UNAVAILABLE);
        CHECK(c == NULL);
    }
    bad = cfg; bad.registrar = REGCACHE_REGISTRAR_VERBS; bad.monitor = REGCACHE_MONITOR_NONE;
    regcache_result r = regcache_cache_new(&bad, &c);
    CHECK(r == REGCACHE_OK || r == REGCACHE_ERR_UNAVAILABLE);
    if (r == REGCACHE_OK) {
        uint32_t k = 0;
        EXPECT(regcache_cache_registrar(c, &k), REGCACHE_OK);
        CHECK(k == REGCACHE_REGISTRAR_VERBS);
        EXPECT(regcache_cache_destroy(c), REGCACHE_OK);
    } else {
        printf("verbs registrar: SKIPPED (no RDMA device: REGCACHE_ERR_UNAVAILABLE)\n");
    }
}

static void test_get_release(void)
{
    regcache_cache *c = new_cache(REGCACHE_MONITOR_NONE, 1);
    size_t len = 16 * page;
    char *buf = map_anon(len);
    regcache_handle *h = NULL, *h2 = NULL, *keep = (regcache_handle *)0x1;
    uintptr_t start = 0;
    size_t rlen = 0, n = 0;
    uint32_t key = 0, kind = 99, mon = 99;
    bool cached = false;
    regcache_stats st;

    CHECK(buf != MAP_FAILED);
    memset(buf, 1, len);

    /* Argument checks. */
    EXPECT(regcache_cache_get(NULL, buf, 100, 1, &h), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_cache_get(c, buf, 100, 1, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_cache_get(c, NULL, 100, 1, &keep), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_get(c, buf, 0, 1, &keep), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_get(c, (void *)(UINTPTR_MAX - 10), 100, 1, &keep),
           REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_get(c, buf, SIZE_MAX, 1, &keep), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_get(c, buf, 100, 0x100, &keep), REGCACHE_ERR_INVALID_ARGUMENT);
    CHECK(keep == (regcache_handle *)0x1); /* outputs untouched on error */

    /* Miss, then hit. */
    EXPECT(regcache_cache_get(c, buf + 100, 1000,
                              REGCACHE_ACCESS_LOCAL_WRITE | REGCACHE_ACCESS_REMOTE_READ, &h),
           REGCACHE_OK);
    CHECK(h != NULL);
    EXPECT(regcache_handle_range(h, &start, &rlen), REGCACHE_OK);
    CHECK(start == (uintptr_t)buf && rlen == page);
    EXPECT(regcache_handle_range(h, NULL, &rlen), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_handle_range(h, &start, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_handle_range(NULL, &start, &rlen), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_handle_is_cached(h, &cached), REGCACHE_OK);
    CHECK(cached);
    EXPECT(regcache_handle_is_cached(h, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_handle_is_cached(NULL, &cached), REGCACHE_ERR_NULL_ARGUMENT);
    /* The pin registrar has no keys. */
    EXPECT(regcache_handle_lkey(h, &key), REGCACHE_ERR_NO_KEYS);
    EXPECT(regcache_handle_rkey(h, &key), REGCACHE_ERR_NO_KEYS);
    EXPECT(regcache_handle_lkey(h, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_handle_rkey(NULL, &key), REGCACHE_ERR_NULL_ARGUMENT);

    EXPECT(regcache_cache_get(c, buf + 200, 10, REGCACHE_ACCESS_LOCAL_WRITE, &h2), REGCACHE_OK);
    CHECK(h2 != h);
    EXPECT(regcache_handle_release(h2), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);

    /* Released twice, used after release: detected. */
    EXPECT(regcache_handle_release(h), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_release(h2), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_range(h, &start, &rlen), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_lkey(h, &key), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_rkey(h, &key), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_is_cached(h, &cached), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_release(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_handle_release((regcache_handle *)(uintptr_t)0xdeadbeef12345ull),
           REGCACHE_ERR_STALE_HANDLE);
    /* Released twice while another handle holds the same region (the
     * region's count stays > 0): still detected, and the other handle's
     * reference is untouched. */
    EXPECT(regcache_cache_get(c, buf, 10, 1, &h), REGCACHE_OK);
    EXPECT(regcache_cache_get(c, buf + 10, 10, 1, &h2), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_range(h2, &start, &rlen), REGCACHE_OK);
    CHECK(start == (uintptr_t)buf);
    EXPECT(regcache_handle_release(h2), REGCACHE_OK);
    EXPECT(regcache_handle_release(h2), REGCACHE_ERR_STALE_HANDLE);
    /* The entry is reused by the next get: the old value stays stale. */
    EXPECT(regcache_cache_get(c, buf, 10, 1, &h2), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_ERR_STALE_HANDLE);
    EXPECT(regcache_handle_release(h2), REGCACHE_OK);

    /* Unmapped memory: a fixed address far from every mapping (a freshly
     * unmapped hole could be reused by the allocator meanwhile). */
    unsigned char vec[1];
    static const uintptr_t candidates[] = {0x100000000000ull, 0x500000000000ull,
                                           0x300000000000ull};
    char *hole = NULL;
    for (size_t i = 0; i < 3 && hole == NULL; i++)
        if (mincore((void *)candidates[i], page, vec) != 0 && errno == ENOMEM)
            hole = (char *)candidates[i];
#ifdef __SANITIZE_ADDRESS__
    /* ASan intercepts mlock(2) as a no-op that succeeds, so the pin
     * registrar cannot see unmapped memory here; the valgrind run checks it. */
    printf("unmapped case: SKIPPED under ASan (mlock is intercepted)\n");
    hole = NULL;
#endif
    if (hole != NULL) {
        EXPECT(regcache_cache_get(c, hole, page, 1, &keep), REGCACHE_ERR_NOT_MAPPED);
        CHECK(keep == (regcache_handle *)0x1);
    } else {
#ifndef __SANITIZE_ADDRESS__
        printf("unmapped case: SKIPPED (no unmapped candidate address)\n");
#endif
    }

    /* Statistics. */
    EXPECT(regcache_cache_stats(c, &st), REGCACHE_OK);
    CHECK(st.gets == st.hits + st.misses && st.hits >= 2 && st.misses >= 1);
    CHECK(st.regions == 1 && st.registrations >= 1);
    EXPECT(regcache_cache_stats(c, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_cache_stats(NULL, &st), REGCACHE_ERR_NULL_ARGUMENT);

    EXPECT(regcache_cache_monitor(c, &mon), REGCACHE_OK);
    CHECK(mon == REGCACHE_MONITOR_NONE);
    EXPECT(regcache_cache_monitor(c, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_cache_registrar(c, &kind), REGCACHE_OK);
    CHECK(kind == REGCACHE_REGISTRAR_PIN);
    EXPECT(regcache_cache_registrar(NULL, &kind), REGCACHE_ERR_NULL_ARGUMENT);

    /* notify_unmapped (no source of its own: invalidates at once). */
    EXPECT(regcache_cache_notify_unmapped(c, buf, len), REGCACHE_OK);
    EXPECT(regcache_cache_stats(c, &st), REGCACHE_OK);
    CHECK(st.regions == 0 && st.invalidations_idle + st.invalidations_in_use == 1);
    EXPECT(regcache_cache_notify_unmapped(c, buf, 0), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_notify_unmapped(c, NULL, 10), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_notify_unmapped(c, buf, SIZE_MAX), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_cache_notify_unmapped(NULL, buf, len), REGCACHE_ERR_NULL_ARGUMENT);

    /* flush / quiesce. */
    EXPECT(regcache_cache_get(c, buf, len, 1, &h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_quiesce(c), REGCACHE_OK);
    EXPECT(regcache_cache_flush(c, &n), REGCACHE_OK);
    CHECK(n == 1);
    EXPECT(regcache_cache_flush(c, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_cache_flush(NULL, &n), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_cache_quiesce(NULL), REGCACHE_ERR_NULL_ARGUMENT);

    /* Destroy with a handle still out: the handle goes stale. */
    EXPECT(regcache_cache_get(c, buf, len, 1, &h), REGCACHE_OK);
    EXPECT(regcache_cache_destroy(c), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_ERR_STALE_HANDLE);
    /* A destroyed cache used again. */
    EXPECT(regcache_cache_destroy(c), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_get(c, buf, len, 1, &keep), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_stats(c, &st), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_notify_unmapped(c, buf, len), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_flush(c, &n), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_quiesce(c), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_monitor(c, &mon), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_registrar(c, &kind), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_cache_destroy(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    munmap(buf, len);
}

/* get, munmap, mmap again at the same address (MAP_FIXED), get: the second
 * get must be a miss with a new registration, never the stale one. With a
 * cache that watches memory itself (uffd, patch, kernel) nothing else is needed;
 * with EXTERNAL/NONE the host reports the unmap, as an MPI library with its
 * own hooks does. */
static void test_stale_registration(uint32_t monitor)
{
    regcache_cache *c = new_cache(monitor, 1);
    size_t len = 8 * page;
    uint32_t active = 99;
    regcache_handle *h = NULL;
    regcache_stats s0, s1;

    EXPECT(regcache_cache_monitor(c, &active), REGCACHE_OK);
    CHECK(monitor == REGCACHE_MONITOR_AUTO ? (active == REGCACHE_MONITOR_UFFD ||
                                              active == REGCACHE_MONITOR_PATCH ||
                                              active == REGCACHE_MONITOR_KERNEL)
                                           : active == monitor);
    char *buf = map_anon(len);
    CHECK(buf != MAP_FAILED);
    memset(buf, 1, len);
    EXPECT(regcache_cache_get(c, buf, len, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_get(c, buf, len, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_stats(c, &s0), REGCACHE_OK);
    CHECK(s0.misses == 1 && s0.hits == 1);

    if (active == REGCACHE_MONITOR_EXTERNAL || active == REGCACHE_MONITOR_NONE)
        EXPECT(regcache_cache_notify_unmapped(c, buf, len), REGCACHE_OK);
    CHECK(munmap(buf, len) == 0);
    char *again = map_anon_fixed(buf, len);
    CHECK(again == buf);
    memset(again, 2, len);
    EXPECT(regcache_cache_get(c, again, len, REGCACHE_ACCESS_LOCAL_WRITE, &h), REGCACHE_OK);
    EXPECT(regcache_handle_release(h), REGCACHE_OK);
    EXPECT(regcache_cache_stats(c, &s1), REGCACHE_OK);
    CHECK(s1.misses == s0.misses + 1);
    CHECK(s1.registrations == s0.registrations + 1);
    CHECK(s1.invalidations_idle + s1.invalidations_in_use >= 1);
    printf("stale registration (monitor %u asked, %u active): miss and new registration: %s\n",
           monitor, active, s1.misses == s0.misses + 1 ? "ok" : "FAILED");
    EXPECT(regcache_cache_destroy(c), REGCACHE_OK);
    munmap(again, len);
}

static void test_external_notifier(void);

static void test_notifier(void)
{
    regcache_notifier *nt = NULL, *keep = (regcache_notifier *)0x1;
    regcache_event ev[8];
    size_t n = 0;
    uint64_t gen0 = 0, gen1 = 0;
    uint32_t src = 99;
    int fd = -1;
    size_t len = 4 * page;
    char *buf = map_anon(len);
    CHECK(buf != MAP_FAILED);

    EXPECT(regcache_notifier_open(REGCACHE_MONITOR_AUTO, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_notifier_open(REGCACHE_MONITOR_NONE, &keep), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_notifier_open(99, &keep), REGCACHE_ERR_INVALID_ARGUMENT);
    regcache_result r = regcache_notifier_open(REGCACHE_MONITOR_KERNEL, &keep);
    CHECK(r == REGCACHE_ERR_UNAVAILABLE || r == REGCACHE_OK);
    if (r == REGCACHE_OK) {
        EXPECT(regcache_notifier_notify_unmapped(keep, buf, len), REGCACHE_ERR_UNSUPPORTED);
        EXPECT(regcache_notifier_close(keep), REGCACHE_OK);
        keep = (regcache_notifier *)0x1;
    } else {
        printf("kernel notifier: SKIPPED (no /dev/ummunotify: REGCACHE_ERR_UNAVAILABLE)\n");
    }
    CHECK(keep == (regcache_notifier *)0x1);

    /* userfaultfd source: a real munmap is reported. */
    r = no_uffd ? REGCACHE_ERR_UNAVAILABLE : regcache_notifier_open(REGCACHE_MONITOR_UFFD, &nt);
    if (r != REGCACHE_OK) {
        printf("uffd notifier: SKIPPED (%s)\n",
               no_uffd ? "REGCACHE_TEST_NO_UFFD: under valgrind" : regcache_strerror(r));
        munmap(buf, len);
        test_external_notifier();
        return;
    }
    EXPECT(regcache_notifier_source(nt, &src), REGCACHE_OK);
    CHECK(src == REGCACHE_MONITOR_UFFD);
    EXPECT(regcache_notifier_source(nt, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_notifier_fd(nt, &fd), REGCACHE_OK);
    CHECK(fd >= 0);
    EXPECT(regcache_notifier_fd(nt, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_notifier_register(nt, buf, len, 42), REGCACHE_OK);
    EXPECT(regcache_notifier_register(nt, buf, len, 42), REGCACHE_ERR_DUPLICATE_COOKIE);
    EXPECT(regcache_notifier_register(nt, buf, 0, 43), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_notifier_register(nt, NULL, len, 43), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_notifier_register(nt, buf, SIZE_MAX, 43), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_notifier_register(NULL, buf, len, 43), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_notifier_unregister(nt, 77), REGCACHE_ERR_UNKNOWN_COOKIE);
    EXPECT(regcache_notifier_generation(nt, &gen0), REGCACHE_OK);
    EXPECT(regcache_notifier_generation(nt, NULL), REGCACHE_ERR_NULL_ARGUMENT);

    /* Nothing pending: just LAST. */
    EXPECT(regcache_notifier_read(nt, ev, 8, &n), REGCACHE_OK);
    CHECK(n >= 1 && ev[n - 1].type_ == REGCACHE_EVENT_LAST);
    EXPECT(regcache_notifier_read(nt, ev, 0, &n), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_notifier_read(nt, NULL, 8, &n), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_notifier_read(nt, ev, 8, NULL), REGCACHE_ERR_NULL_ARGUMENT);

    /* Unmap the middle two pages: one INVAL with the hint, then LAST. */
    EXPECT(regcache_notifier_generation(nt, &gen0), REGCACHE_OK);
    CHECK(munmap(buf + page, 2 * page) == 0);
    EXPECT(regcache_notifier_generation(nt, &gen1), REGCACHE_OK);
    CHECK(gen1 != gen0);
    int inval = 0, last = 0;
    for (int round = 0; round < 100 && !inval; round++) {
        EXPECT(regcache_notifier_read(nt, ev, 8, &n), REGCACHE_OK);
        for (size_t i = 0; i < n; i++) {
            if (ev[i].type_ == REGCACHE_EVENT_INVAL) {
                inval++;
                CHECK(ev[i].user_cookie_counter == 42);
                CHECK(ev[i].flags == 1);
                CHECK(ev[i].hint_start == (uintptr_t)buf + page &&
                      ev[i].hint_end == (uintptr_t)buf + 3 * page);
            } else {
                last++;
            }
        }
    }
    CHECK(inval == 1 && last >= 1);

    /* External report on a notifier that also watches by itself. */
    EXPECT(regcache_notifier_notify_unmapped(nt, buf, page), REGCACHE_OK);
    EXPECT(regcache_notifier_notify_unmapped(nt, buf, 0), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_notifier_notify_unmapped(NULL, buf, page), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_notifier_unregister(nt, 42), REGCACHE_OK);
    EXPECT(regcache_notifier_unregister(nt, 42), REGCACHE_ERR_UNKNOWN_COOKIE);
    EXPECT(regcache_notifier_unregister(NULL, 42), REGCACHE_ERR_NULL_ARGUMENT);

    /* A region owned by another userfaultfd: EBUSY. */
    char *other = map_anon(page);
    int ufd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    struct uffdio_api api = {.api = UFFD_API};
    struct uffdio_register reg = {
        .range = {.start = (uintptr_t)other, .len = page}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ufd >= 0 && ioctl(ufd, UFFDIO_API, &api) == 0 && ioctl(ufd, UFFDIO_REGISTER, &reg) == 0) {
        EXPECT(regcache_notifier_register(nt, other, page, 44), REGCACHE_ERR_BUSY);
    } else {
        printf("EBUSY case: SKIPPED (no userfaultfd of our own: %s)\n", strerror(errno));
    }
    if (ufd >= 0)
        close(ufd);
    munmap(other, page);

    /* After fork the child's copy is inert. */
    pid_t pid = fork();
    if (pid == 0) {
        regcache_result fr = regcache_notifier_register(nt, buf, page, 45);
        _exit(fr == REGCACHE_ERR_FORKED ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    EXPECT(regcache_notifier_close(nt), REGCACHE_OK);
    EXPECT(regcache_notifier_close(nt), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_register(nt, buf, page, 1), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_read(nt, ev, 8, &n), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_generation(nt, &gen0), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_fd(nt, &fd), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_source(nt, &src), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_unregister(nt, 1), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_notify_unmapped(nt, buf, page), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_notifier_close(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    munmap(buf, len);
    munmap(buf + 3 * page, page);
    test_external_notifier();
}

static void test_external_notifier(void)
{
    regcache_notifier *nt = NULL;
    regcache_event ev[8];
    size_t n = 0, len = 4 * page;
    char *buf;

    EXPECT(regcache_notifier_open(REGCACHE_MONITOR_EXTERNAL, &nt), REGCACHE_OK);
    buf = map_anon(len);
    EXPECT(regcache_notifier_register(nt, buf, len, 7), REGCACHE_OK);
    EXPECT(regcache_notifier_notify_unmapped(nt, buf, page), REGCACHE_OK);
    EXPECT(regcache_notifier_read(nt, ev, 8, &n), REGCACHE_OK);
    CHECK(n == 2 && ev[0].type_ == REGCACHE_EVENT_INVAL && ev[0].user_cookie_counter == 7 &&
          ev[1].type_ == REGCACHE_EVENT_LAST && ev[1].user_cookie_counter >= 1);
    EXPECT(regcache_notifier_close(nt), REGCACHE_OK);
    munmap(buf, len);
}

int main(void)
{
    test_init();
    no_uffd = getenv("REGCACHE_TEST_NO_UFFD") != NULL;
    if (no_uffd)
        setenv("REGCACHE_MONITOR", "none", 1);
    test_strerror_and_version();
    test_last_error();
    test_config_env();
    test_cache_new_errors();
    test_get_release();
    if (!no_uffd)
        test_stale_registration(REGCACHE_MONITOR_AUTO);
    test_stale_registration(REGCACHE_MONITOR_EXTERNAL);
    test_stale_registration(REGCACHE_MONITOR_NONE);
    test_notifier();
    return test_finish("api_test");
}
