/* The library loaded with dlopen, not linked: it keeps its per-thread index
 * in initial-exec TLS (STATIC_TLS), so glibc must place and initialise its
 * TLS block for the thread that was already running before the dlopen and
 * for threads created after it. Each thread then gets and releases
 * handles on its own buffer; every call must succeed, double release must
 * stay detected, and the statistics must add up. Run under ASan+UBSan and
 * valgrind by `cargo xtask test`. */
#define _GNU_SOURCE
#include "test_common.h"

#include <dlfcn.h>
#include <pthread.h>

#define ROUNDS 2000

typedef enum regcache_result (*config_default_fn)(regcache_config *);
typedef enum regcache_result (*cache_new_fn)(const regcache_config *, regcache_cache **);
typedef enum regcache_result (*cache_get_fn)(const regcache_cache *, const void *, size_t,
                                             uint32_t, regcache_handle **);
typedef enum regcache_result (*release_fn)(regcache_handle *);
typedef enum regcache_result (*stats_fn)(const regcache_cache *, regcache_stats *);
typedef enum regcache_result (*destroy_fn)(regcache_cache *);

static cache_get_fn get;
static release_fn rel;
static regcache_cache *cache;
static pthread_barrier_t loaded;
static char bufs[3][1 << 14];

static int work(int i)
{
    regcache_handle *h;
    for (int r = 0; r < ROUNDS; r++) {
        if (get(cache, bufs[i], sizeof bufs[i], REGCACHE_ACCESS_LOCAL_WRITE, &h) != REGCACHE_OK)
            return 1;
        if (rel(h) != REGCACHE_OK) return 2;
    }
    if (rel(h) != REGCACHE_ERR_STALE_HANDLE) return 3;
    return 0;
}

/* Started before the dlopen; works after it. */
static void *early(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&loaded);
    return (void *)(intptr_t)work(1);
}

static void *late(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)work(2);
}

#define SYM(type, name)                                                    \
    type name##_p;                                                         \
    *(void **)&name##_p = dlsym(lib, #name);                               \
    if (!name##_p) {                                                       \
        fprintf(stderr, "dlopen_test: no symbol %s\n", #name);            \
        return 1;                                                          \
    }

int main(void)
{
    pthread_t t1, t2;
    void *r1, *r2;
    if (dlopen("libregcache.so.0", RTLD_NOW | RTLD_NOLOAD)) {
        /* Linked at startup (the build did not use --as-needed): the
         * dlopen case is not what would run. */
        printf("dlopen_test: FAILED: libregcache.so.0 is already loaded before dlopen\n");
        return 1;
    }
    pthread_barrier_init(&loaded, NULL, 2);
    if (pthread_create(&t1, NULL, early, NULL)) return 1;

    void *lib = dlopen("libregcache.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen_test: dlopen: %s\n", dlerror());
        return 1;
    }
    SYM(config_default_fn, regcache_config_default);
    SYM(cache_new_fn, regcache_cache_new);
    SYM(cache_get_fn, regcache_cache_get);
    SYM(release_fn, regcache_handle_release);
    SYM(stats_fn, regcache_cache_stats);
    SYM(destroy_fn, regcache_cache_destroy);
    get = regcache_cache_get_p;
    rel = regcache_handle_release_p;

    regcache_config cfg;
    regcache_config_default_p(&cfg);
    cfg.registrar = REGCACHE_REGISTRAR_PIN;
    cfg.monitor = REGCACHE_MONITOR_NONE;
    if (regcache_cache_new_p(&cfg, &cache) != REGCACHE_OK) return 1;

    pthread_barrier_wait(&loaded);
    if (pthread_create(&t2, NULL, late, NULL)) return 1;
    int main_rc = work(0);
    pthread_join(t1, &r1);
    pthread_join(t2, &r2);

    regcache_stats s;
    if (regcache_cache_stats_p(cache, &s) != REGCACHE_OK) return 1;
    int ok = main_rc == 0 && r1 == NULL && r2 == NULL && s.gets == 3 * ROUNDS &&
             s.hits + s.misses == s.gets && s.misses >= 3;
    if (!ok)
        fprintf(stderr, "dlopen_test: rc %d %ld %ld, gets %llu hits %llu misses %llu\n", main_rc,
                (long)(intptr_t)r1, (long)(intptr_t)r2, (unsigned long long)s.gets,
                (unsigned long long)s.hits, (unsigned long long)s.misses);
    if (regcache_cache_destroy_p(cache) != REGCACHE_OK) ok = 0;
    dlclose(lib);
    pthread_barrier_destroy(&loaded);
    CHECK(ok);
    return test_finish("dlopen_test");
}
