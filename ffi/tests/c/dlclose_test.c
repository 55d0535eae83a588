/* The library loaded by a plugin that is later unloaded, as Open MPI does
 * with its rcache component (mca_rcache_regcache.so links libregcache.so;
 * MPI_Finalize dlcloses the component, and with it the last reference to
 * libregcache.so). The process-wide userfaultfd source runs a monitor
 * thread inside libregcache.so that outlives every cache: were the library
 * unmapped under it, the thread's next wake-up (any munmap of watched
 * memory during the rest of the process's exit) would return into
 * unmapped code. Seen: hpcc over openib with regcache died with SIGSEGV
 * at a `...f60` address in both ranks at finalize, after its results
 * were written (CI run of 2026-12-08).
 *
 * The library is therefore linked `-z nodelete` (ffi/build.rs): dlclose
 * leaves it mapped. This test checks that contract directly (RTLD_NOLOAD
 * still finds it after the last dlclose), then does what a process exit
 * does: unmaps memory the source watched and keeps going, with the
 * monitor thread alive. Under valgrind (REGCACHE_TEST_NO_UFFD) the cache
 * has no source; the contract check still runs. */
#define _GNU_SOURCE
#include "test_common.h"

#include <dlfcn.h>
#include <pthread.h>

typedef enum regcache_result (*config_default_fn)(regcache_config *);
typedef enum regcache_result (*cache_new_fn)(const regcache_config *, regcache_cache **);
typedef enum regcache_result (*cache_get_fn)(const regcache_cache *, const void *, size_t,
                                             uint32_t, regcache_handle **);
typedef enum regcache_result (*release_fn)(regcache_handle *);
typedef enum regcache_result (*destroy_fn)(regcache_cache *);

#define SYM(type, name)                                                    \
    type name##_p;                                                         \
    *(void **)&name##_p = dlsym(lib, #name);                               \
    if (!name##_p) {                                                       \
        fprintf(stderr, "dlclose_test: no symbol %s\n", #name);           \
        return (void *)1;                                                  \
    }

/* What the component does, on a thread of its own that then exits: a
 * thread-local destructor registered by the library pins it only until
 * its thread exits (glibc's l_tls_dtor_count), and Open MPI's progress and
 * async threads come and go; the main thread must not be what keeps the
 * library mapped in this test. */
static void *lib;
static char *buf;
static size_t pg;
enum { PAGES = 16 };

static void *use_library(void *arg)
{
    int no_uffd = *(int *)arg;
    lib = dlopen("libregcache.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlclose_test: dlopen: %s\n", dlerror());
        return (void *)1;
    }
    SYM(config_default_fn, regcache_config_default);
    SYM(cache_new_fn, regcache_cache_new);
    SYM(cache_get_fn, regcache_cache_get);
    SYM(release_fn, regcache_handle_release);
    SYM(destroy_fn, regcache_cache_destroy);

    regcache_config cfg;
    regcache_config_default_p(&cfg);
    cfg.registrar = REGCACHE_REGISTRAR_PIN;
    cfg.monitor = no_uffd ? REGCACHE_MONITOR_NONE : REGCACHE_MONITOR_UFFD;
    regcache_cache *cache;
    if (regcache_cache_new_p(&cfg, &cache) != REGCACHE_OK) return (void *)1;
    /* Watched memory that outlives the cache and the library's last
     * reference, as an application's buffers do. */
    memset(buf, 1, PAGES * pg);
    regcache_handle *h;
    CHECK(regcache_cache_get_p(cache, buf, PAGES * pg, REGCACHE_ACCESS_LOCAL_WRITE, &h) ==
          REGCACHE_OK);
    CHECK(regcache_handle_release_p(h) == REGCACHE_OK);
    CHECK(regcache_cache_destroy_p(cache) == REGCACHE_OK);
    return NULL;
}

int main(void)
{
    int no_uffd = getenv("REGCACHE_TEST_NO_UFFD") != NULL;
    pg = (size_t)sysconf(_SC_PAGESIZE);
    if (dlopen("libregcache.so.0", RTLD_NOW | RTLD_NOLOAD)) {
        printf("dlclose_test: FAILED: libregcache.so.0 is already loaded before dlopen\n");
        return 1;
    }
    buf = mmap(NULL, PAGES * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(buf != MAP_FAILED);
    if (buf == MAP_FAILED) return test_finish("dlclose_test");
    pthread_t t;
    void *r = (void *)1;
    CHECK(pthread_create(&t, NULL, use_library, &no_uffd) == 0);
    CHECK(pthread_join(t, &r) == 0);
    CHECK(r == NULL);
    if (failures || !lib) return test_finish("dlclose_test");

    CHECK(dlclose(lib) == 0);
    /* The contract: still mapped (DF_1_NODELETE). */
    void *again = dlopen("libregcache.so.0", RTLD_NOW | RTLD_NOLOAD);
    if (!again)
        fprintf(stderr, "dlclose_test: libregcache.so.0 was unloaded by its last dlclose "
                        "(not linked -z nodelete): its monitor thread would run unmapped code\n");
    CHECK(again != NULL);
    if (again) dlclose(again);

    /* What the rest of an exit does: unmap watched memory, page by page
     * (each a userfaultfd event for the monitor thread), and churn. */
    for (int i = 0; i < PAGES; i++) CHECK(munmap(buf + (size_t)i * pg, pg) == 0);
    for (int i = 0; i < 64; i++) {
        char *p = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(p != MAP_FAILED);
        if (p != MAP_FAILED) {
            p[0] = 1;
            CHECK(munmap(p, 4 * pg) == 0);
        }
    }
    usleep(100 * 1000);
    return test_finish("dlclose_test");
}
