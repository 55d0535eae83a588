/* One-sided MPI_Put and MPI_Get over a real RDMA BTL (`--mca osc rdma`),
 * whose osc/rdma registers the window and the origin buffers through the
 * BTL's rcache. Each round maps a new window buffer and new origin buffers
 * (mmap, at the previous round's addresses when the kernel allows:
 * MAP_FIXED_NOREPLACE with the old address as hint), so a registration
 * cache that misses the unmaps would hand the HCA the previous round's
 * pages. Every byte is checked:
 *   Put — each rank writes its pattern into the peer's window (fence);
 *         the owner checks its window holds the peer's pattern;
 *   Get — each rank reads the peer's window into a new origin buffer
 *         (fence) and checks it holds what this rank Put there: its own
 *         pattern.
 *
 * Usage: osc_reuse [ROUNDS]   (default 10; 1 MiB windows). Each rank
 * prints "osc_reuse: rank R: N rounds, S of M same-address reuses, B bad
 * bytes, T s"; rank 0 prints "osc_reuse: PASSED (2 ranks)" or FAILED. */
#define _GNU_SOURCE
#include <mpi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define LEN ((size_t)1 << 20)

static unsigned char pattern(int round, int rank, size_t off)
{
    uint32_t x = (uint32_t)off * 2654435761u ^ (uint32_t)(round * 131 + rank * 17 + 5);
    return (unsigned char)(x ^ (x >> 11) ^ (x >> 23));
}

/* A new LEN-byte mapping, at `*hint` when possible; `*hint` becomes it. */
static unsigned char *map_at(void **hint)
{
    void *p = MAP_FAILED;
    if (*hint)
        p = mmap(*hint, LEN, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == MAP_FAILED)
        p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    *hint = p;
    return p;
}

/* Bytes of `buf` that differ from (round, rank)'s pattern; reports the
 * first. */
static long count_bad(const unsigned char *buf, int round, int rank, int me, const char *what)
{
    long wrong = 0;
    for (size_t off = 0; off < LEN; off++)
        if (buf[off] != pattern(round, rank, off)) {
            if (!wrong)
                fprintf(stderr, "osc_reuse: rank %d: FAILED: %s round %d: byte %zu is %u, not %u\n",
                        me, what, round, off, buf[off], pattern(round, rank, off));
            wrong++;
        }
    return wrong;
}

int main(int argc, char **argv)
{
    int rank, size, ok = 1, all = 0;
    int n = argc > 1 ? atoi(argv[1]) : 10;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2 || n < 1) {
        if (rank == 0)
            fprintf(stderr, "osc_reuse: needs 2 ranks and ROUNDS >= 1 (got %d, %d)\n", size, n);
        MPI_Finalize();
        return 2;
    }
    int peer = 1 - rank;
    void *hints[3] = {NULL, NULL, NULL};
    uintptr_t last[3] = {0, 0, 0};
    long same = 0, bad = 0;
    double t0 = MPI_Wtime();
    for (int r = 0; r < n; r++) {
        unsigned char *bufs[3];
        for (int b = 0; b < 3; b++) {
            bufs[b] = map_at(&hints[b]);
            if (!bufs[b]) {
                fprintf(stderr, "osc_reuse: rank %d: FAILED: mmap\n", rank);
                MPI_Abort(MPI_COMM_WORLD, 3);
            }
            same += r > 0 && (uintptr_t)bufs[b] == last[b];
            last[b] = (uintptr_t)bufs[b];
        }
        unsigned char *base = bufs[0], *put_src = bufs[1], *get_dst = bufs[2];
        MPI_Win win;
        memset(base, 0, LEN);
        MPI_Win_create(base, (MPI_Aint)LEN, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &win);
        for (size_t off = 0; off < LEN; off++)
            put_src[off] = pattern(r, rank, off);
        memset(get_dst, 0, LEN);
        MPI_Win_fence(0, win);
        MPI_Put(put_src, (int)LEN, MPI_BYTE, peer, 0, (int)LEN, MPI_BYTE, win);
        MPI_Win_fence(0, win);
        long wrong = count_bad(base, r, peer, rank, "window after the peer's Put");
        MPI_Win_fence(0, win);
        MPI_Get(get_dst, (int)LEN, MPI_BYTE, peer, 0, (int)LEN, MPI_BYTE, win);
        MPI_Win_fence(0, win);
        wrong += count_bad(get_dst, r, rank, rank, "Get of the peer's window");
        MPI_Win_free(&win);
        ok &= wrong == 0;
        bad += wrong;
        for (int b = 0; b < 3; b++)
            munmap(bufs[b], LEN);
    }
    printf("osc_reuse: rank %d: %d rounds, %ld of %d same-address reuses, %ld bad bytes, %.3f s\n",
           rank, n, same, 3 * (n - 1), bad, MPI_Wtime() - t0);
    fflush(stdout);
    MPI_Reduce(&ok, &all, 1, MPI_INT, MPI_LAND, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("osc_reuse: %s (%d ranks)\n", all ? "PASSED" : "FAILED", size);
    MPI_Finalize();
    return all || rank != 0 ? 0 : 1;
}
