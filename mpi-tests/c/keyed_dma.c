/* keyed_dma.c — MPI ranks exchange messages through regcache keyed DMA.
 *
 * MPI only bootstraps (job name broadcast, barriers) and reduces the
 * verdict; every payload byte goes through regcache_transport::dma
 * (process_vm_writev single copy, or the bounce path when refused).
 * Ranks pair up (0<->1, 2<->3, ...): the even rank sends a message of
 * each size, the odd rank checks it byte for byte and sends it back with
 * a different pattern, which the even rank checks. Sizes 1 B .. 64 MiB.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int64_t rt_init(const char *job, int create);
int64_t rt_bind(int rank, uint8_t *buf, size_t len, int nsections);
int64_t rt_send(int dest, const uint8_t *buf, size_t len, int npieces);
int64_t rt_recv(int64_t timeout_ms);
int64_t rt_restock(void);
int64_t rt_stats(uint64_t *out);
int64_t rt_fini(int unlink);

#define MAX_SIZE (64u << 20)

static uint8_t pattern(size_t i, size_t size, int from) {
    return (uint8_t)(i * 131u + (i >> 9) + size * 7u + (unsigned)from * 61u);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, np;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &np);
    long errors = 0;

    char job[64] = {0};
    if (rank == 0) snprintf(job, sizeof job, "regcache-mpi-%ld", (long)getpid());
    MPI_Bcast(job, sizeof job, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank == 0 && rt_init(job, 1) != 0) MPI_Abort(MPI_COMM_WORLD, 2);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank != 0 && rt_init(job, 0) != 0) MPI_Abort(MPI_COMM_WORLD, 2);

    uint8_t *rbuf = malloc(MAX_SIZE), *sbuf = malloc(MAX_SIZE);
    if (!rbuf || !sbuf) MPI_Abort(MPI_COMM_WORLD, 3);
    memset(rbuf, 0, MAX_SIZE);
    if (rt_bind(rank, rbuf, MAX_SIZE, 7) != 0) MPI_Abort(MPI_COMM_WORLD, 4);
    MPI_Barrier(MPI_COMM_WORLD); /* every key is bound */

    int peer = rank ^ 1;
    int active = peer < np;
    size_t sizes[64];
    int nsizes = 0;
    for (size_t s = 1; s <= MAX_SIZE; s *= 2) {
        sizes[nsizes++] = s;
        if (s >= 4 && s < MAX_SIZE) sizes[nsizes++] = s + s / 2 + 1; /* odd sizes too */
    }
    for (int k = 0; active && k < nsizes; k++) {
        size_t size = sizes[k];
        int sender_first = (rank % 2 == 0);
        for (int leg = 0; leg < 2; leg++) {
            int i_send = (leg == 0) == sender_first;
            if (i_send) {
                for (size_t i = 0; i < size; i++) sbuf[i] = pattern(i, size, rank);
                int64_t n;
                int tries = 0;
                /* -3: the peer has not restocked yet (it does after checking). */
                while ((n = rt_send(peer, sbuf, size, 5)) == -3 && tries++ < 1000) usleep(100);
                if ((size_t)n != size) { fprintf(stderr, "rank %d: sent %lld of %zu\n", rank, (long long)n, size); errors++; }
            } else {
                int64_t n = rt_recv(60000);
                if ((size_t)n != size) {
                    fprintf(stderr, "rank %d: received %lld, expected %zu\n", rank, (long long)n, size);
                    errors++;
                    break;
                }
                size_t bad = 0;
                for (size_t i = 0; i < size; i++) bad += rbuf[i] != pattern(i, size, peer);
                if (bad) { fprintf(stderr, "rank %d: %zu bad bytes at size %zu\n", rank, bad, size); errors++; }
                rt_restock();
            }
        }
    }
    uint64_t st[5] = {0};
    rt_stats(st);
    long total = 0;
    MPI_Reduce(&errors, &total, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    printf("rank %d: %d sizes, 1 B..64 MiB, cma=%llu bounce=%llu refusals=%llu "
           "assisted=%llu chunks_for_peers=%llu errors=%ld\n",
           rank, active ? nsizes : 0, (unsigned long long)st[0], (unsigned long long)st[1],
           (unsigned long long)st[2], (unsigned long long)st[3], (unsigned long long)st[4], errors);
    MPI_Barrier(MPI_COMM_WORLD);
    rt_fini(rank == 0);
    if (rank == 0) printf("keyed_dma: %s\n", total == 0 ? "PASS" : "FAIL");
    free(rbuf);
    free(sbuf);
    MPI_Finalize();
    return total == 0 ? 0 : 1;
}
