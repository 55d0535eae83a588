/* C API hit-path loop for docs/RESULTS.md: ./hitloop N [monitor]; build with
 * cc -O2 hitloop.c $(pkg-config --cflags --libs regcache). */
#include <regcache.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    regcache_config cfg;
    regcache_cache *c;
    regcache_handle *h;
    static char buf[65536];
    struct timespec a, b;
    regcache_config_default(&cfg);
    cfg.registrar = REGCACHE_REGISTRAR_PIN;
    if (argc > 2) cfg.monitor = (uint32_t)atoi(argv[2]);
    if (regcache_cache_new(&cfg, &c)) return 1;
    regcache_cache_get(c, buf, sizeof buf, 1, &h);
    regcache_handle_release(h);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++) {
        if (regcache_cache_get(c, buf, sizeof buf, 1, &h)) return 2;
        regcache_handle_release(h);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    printf("%.1f ns per get+release (thread CPU)\n",
           ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    regcache_cache_destroy(c);
    return 0;
}
