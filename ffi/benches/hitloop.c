/* C API hit-path loop for docs/RESULTS.md: ./hitloop N [monitor] [ops];
 * build with cc -O2 hitloop.c $(pkg-config --cflags --libs regcache).
 * With a third argument of 1 the cache registers through the caller's
 * callbacks (regcache_cache_new_with_ops, mlock), else the built-in pin
 * registrar: the hit costs the same either way (issue 12). */
#include <regcache.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static int reg_cb(void *ctx, void *addr, size_t len, uint32_t access, void **user_data,
                  uint32_t *lkey, uint32_t *rkey)
{
    (void)ctx; (void)access; (void)lkey; (void)rkey;
    if (mlock(addr, len) != 0) return REGCACHE_REG_FAILED;
    *user_data = addr;
    return REGCACHE_REG_OK;
}

static int dereg_cb(void *ctx, void *user_data)
{
    (void)ctx; (void)user_data;
    return 0; /* munlock at exit is implied; the loop never evicts */
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int ops = argc > 3 && atoi(argv[3]) == 1;
    regcache_config cfg;
    regcache_cache *c;
    regcache_handle *h;
    static char buf[65536];
    struct timespec a, b;
    regcache_registrar_ops o = {REGCACHE_REGISTRAR_OPS_VERSION, REGCACHE_OPS_NO_KEYS, reg_cb,
                                dereg_cb, NULL};
    regcache_config_default(&cfg);
    cfg.registrar = REGCACHE_REGISTRAR_PIN;
    if (argc > 2) cfg.monitor = (uint32_t)atoi(argv[2]);
    if (ops ? regcache_cache_new_with_ops(&cfg, &o, &c) : regcache_cache_new(&cfg, &c)) return 1;
    regcache_cache_get(c, buf, sizeof buf, 1, &h);
    regcache_handle_release(h);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++) {
        if (regcache_cache_get(c, buf, sizeof buf, 1, &h)) return 2;
        regcache_handle_release(h);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    printf("%.1f ns per get+release (thread CPU, %s registrar)\n",
           ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n,
           ops ? "caller's" : "built-in");
    regcache_cache_destroy(c);
    return 0;
}
