/* The stale-registration scenario under mpirun: every rank gets a
 * registration for a buffer, exchanges it with its neighbour, unmaps it,
 * maps new memory at the same address (MAP_FIXED) and gets again. The
 * second get must miss and register anew (never hand back the registration
 * of the old pages), and the data exchanged through the new buffer must be
 * the new data. Rank 0 prints "stale_registration: PASSED (<n> ranks)".
 * The registrar is pin unless REGCACHE_REGISTRAR says otherwise (the VM
 * tier runs it with `verbs`: ibv_reg_mr on SoftRoCE, keys checked). */
#define _GNU_SOURCE
#include <mpi.h>
#include <regcache.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LEN (1u << 20)

static int check(int rank, int ok, const char *what)
{
    if (!ok)
        fprintf(stderr, "stale_registration: rank %d: FAILED: %s\n", rank, what);
    return ok;
}

/* 1 when the cache registers with ibv_reg_mr (the MR has an lkey). */
static int verbs;

static int exchange(regcache_cache *c, char *buf, unsigned char fill, int rank, int size,
                    regcache_stats *after)
{
    regcache_handle *h = NULL;
    int ok = 1, peer = (rank + 1) % size, from = (rank + size - 1) % size;
    static char in[LEN];
    memset(buf, fill + rank, LEN);
    ok &= check(rank, regcache_cache_get(c, buf, LEN, REGCACHE_ACCESS_LOCAL_WRITE, &h) == REGCACHE_OK,
                "get");
    if (h && verbs) {
        uint32_t lkey = 0, rkey = 0;
        ok &= check(rank, regcache_handle_lkey(h, &lkey) == REGCACHE_OK && lkey != 0, "verbs lkey");
        ok &= check(rank, regcache_handle_rkey(h, &rkey) == REGCACHE_OK, "verbs rkey");
    }
    MPI_Sendrecv(buf, LEN, MPI_BYTE, peer, 0, in, LEN, MPI_BYTE, from, 0, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    ok &= check(rank, (unsigned char)in[0] == (unsigned char)(fill + from) &&
                          (unsigned char)in[LEN - 1] == (unsigned char)(fill + from),
                "received data");
    if (h)
        ok &= check(rank, regcache_handle_release(h) == REGCACHE_OK, "release");
    ok &= check(rank, regcache_cache_stats(c, after) == REGCACHE_OK, "stats");
    return ok;
}

int main(int argc, char **argv)
{
    int rank, size, ok = 1, all = 0;
    regcache_config cfg;
    regcache_cache *c = NULL;
    regcache_stats s0, s1, s2;
    uint32_t monitor = 99;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    ok &= check(rank, regcache_config_from_env(&cfg) == REGCACHE_OK, "config_from_env");
    if (!getenv("REGCACHE_REGISTRAR"))
        cfg.registrar = REGCACHE_REGISTRAR_PIN;
    verbs = cfg.registrar == REGCACHE_REGISTRAR_VERBS;
    ok &= check(rank, regcache_cache_new(&cfg, &c) == REGCACHE_OK, "cache_new");
    ok &= check(rank, regcache_cache_monitor(c, &monitor) == REGCACHE_OK, "monitor");

    char *buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ok &= check(rank, buf != MAP_FAILED, "mmap");
    ok &= exchange(c, buf, 10, rank, size, &s0);
    ok &= exchange(c, buf, 20, rank, size, &s1);
    ok &= check(rank, s0.misses == 1 && s1.misses == 1 && s1.hits == 1, "second get is a hit");

    /* With no source of its own the host reports the unmap, as an MPI
     * library with its own memory hooks does. */
    if (monitor == REGCACHE_MONITOR_NONE || monitor == REGCACHE_MONITOR_EXTERNAL)
        ok &= check(rank, regcache_cache_notify_unmapped(c, buf, LEN) == REGCACHE_OK,
                    "notify_unmapped");
    ok &= check(rank, munmap(buf, LEN) == 0, "munmap");
    char *again = mmap(buf, LEN, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    ok &= check(rank, again == buf, "mmap MAP_FIXED at the same address");
    ok &= exchange(c, again, 30, rank, size, &s2);
    ok &= check(rank, s2.misses == s1.misses + 1, "get after remap is a miss");
    ok &= check(rank, s2.registrations == s1.registrations + 1, "new registration");
    ok &= check(rank, s2.invalidations_idle + s2.invalidations_in_use >= 1, "invalidation seen");
    printf("stale_registration: rank %d: monitor %u misses %llu registrations %llu "
           "invalidations %llu: %s\n",
           rank, monitor, (unsigned long long)s2.misses,
           (unsigned long long)s2.registrations,
           (unsigned long long)(s2.invalidations_idle + s2.invalidations_in_use),
           ok ? "ok" : "FAILED");
    fflush(stdout);

    ok &= check(rank, regcache_cache_destroy(c) == REGCACHE_OK, "destroy");
    munmap(again, LEN);
    MPI_Reduce(&ok, &all, 1, MPI_INT, MPI_LAND, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("stale_registration: %s (%d ranks)\n", all ? "PASSED" : "FAILED", size);
    MPI_Finalize();
    return all || rank != 0 ? 0 : 1;
}
