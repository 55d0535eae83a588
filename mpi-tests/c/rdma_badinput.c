/* Bad input for an rcache under a real RDMA BTL (issue 16): what an
 * erroneous or unlucky MPI program does to the registration cache. Two
 * ranks; rendezvous-sized messages (1 MiB, above every eager limit), so
 * the BTL registers the user buffers through the rcache.
 *
 * Usage: rdma_badinput MODE [ARGS]
 *   memlock NBUF ROUNDS  — a working set of NBUF 1 MiB buffers per rank,
 *       sent round-robin ROUNDS times in both directions, every byte
 *       checked. Run as an unprivileged user under the VM's 8 MiB
 *       RLIMIT_MEMLOCK with NBUF > 8, registrations fail with ENOMEM once
 *       the limit is reached: the rcache must evict and retry (or let
 *       the BTL fall back) and the job must complete with every byte
 *       right.
 *   free-inflight ROUNDS — rank 0 starts MPI_Isend from an mmap'd buffer,
 *       unmaps it while the send is in flight (erroneous: MPI owns the
 *       buffer until MPI_Wait), maps new memory (usually at the same
 *       address) with a second pattern, waits, then sends the new buffer.
 *       The first message's bytes are whatever the HCA read (reported,
 *       not checked: the program broke the rules); the second message
 *       must be exactly the second pattern — an rcache that kept the
 *       registration of the unmapped pages would send the old bytes.
 *   die — rank 1 receives two messages, posts a third receive and exits
 *       (_exit(3)) while rank 0's 1 MiB send to it is in flight: the job
 *       must end with Open MPI's own error within the deadline, and no
 *       rank may die on a signal.
 * Each mode ends with "rdma_badinput MODE: PASSED" on rank 0 (or FAILED
 * and a non-zero status); the die mode prints "rank 1 exits" and never
 * passes by design: its outcome is judged by the suite. */
#define _GNU_SOURCE
#include <mpi.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MSG (1 << 20)

static unsigned char pattern(uint64_t seed, size_t i)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + i;
    x ^= x >> 29;
    return (unsigned char)(x * 0xbf58476d1ce4e5b9ull >> 56);
}

static void fill(unsigned char *b, uint64_t seed)
{
    for (size_t i = 0; i < MSG; i++) b[i] = pattern(seed, i);
}

static size_t bad_bytes(const unsigned char *b, uint64_t seed)
{
    size_t bad = 0;
    for (size_t i = 0; i < MSG; i++) bad += b[i] != pattern(seed, i);
    return bad;
}

static unsigned char *map_buf(void *hint)
{
    void *p = mmap(hint, MSG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("rdma_badinput: mmap");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

static int memlock(int rank, int nbuf, int rounds)
{
    unsigned char **b = calloc((size_t)nbuf, sizeof *b);
    if (!b) return 1;
    for (int i = 0; i < nbuf; i++) b[i] = map_buf(NULL);
    size_t bad = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < nbuf; i++) {
            for (int dir = 0; dir < 2; dir++) {
                uint64_t seed = ((uint64_t)r * nbuf + i) * 2 + dir;
                if (rank == dir) {
                    fill(b[i], seed);
                    MPI_Send(b[i], MSG, MPI_BYTE, 1 - dir, 0, MPI_COMM_WORLD);
                } else {
                    memset(b[i], 0, MSG);
                    MPI_Recv(b[i], MSG, MPI_BYTE, dir, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    bad += bad_bytes(b[i], seed);
                }
            }
        }
    }
    for (int i = 0; i < nbuf; i++) munmap(b[i], MSG);
    free(b);
    printf("rdma_badinput memlock: rank %d: %d buffers of 1 MiB, %d rounds, %zu bad bytes\n", rank,
           nbuf, rounds, bad);
    return bad != 0;
}

static int free_inflight(int rank, int rounds)
{
    size_t bad = 0, first_bad = 0;
    int same = 0;
    unsigned char *keep = map_buf(NULL); /* rank 1's receive buffer */
    for (int r = 0; r < rounds; r++) {
        uint64_t s1 = 2 * (uint64_t)r + 1000, s2 = 2 * (uint64_t)r + 1001;
        if (rank == 0) {
            unsigned char *a = map_buf(NULL);
            fill(a, s1);
            MPI_Request req;
            MPI_Isend(a, MSG, MPI_BYTE, 1, 1, MPI_COMM_WORLD, &req);
            /* Erroneous on purpose: the buffer goes while MPI owns it. */
            munmap(a, MSG);
            unsigned char *b = map_buf(a);
            same += b == a;
            fill(b, s2);
            MPI_Wait(&req, MPI_STATUS_IGNORE);
            MPI_Send(b, MSG, MPI_BYTE, 1, 2, MPI_COMM_WORLD);
            munmap(b, MSG);
        } else {
            MPI_Recv(keep, MSG, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            first_bad += bad_bytes(keep, s1);
            memset(keep, 0, MSG);
            MPI_Recv(keep, MSG, MPI_BYTE, 0, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            bad += bad_bytes(keep, s2);
        }
    }
    munmap(keep, MSG);
    if (rank == 0)
        printf("rdma_badinput free-inflight: rank 0: %d rounds, %d same-address remaps\n", rounds,
               same);
    else
        printf("rdma_badinput free-inflight: rank 1: in-flight message %zu bad bytes (not "
               "checked), next message %zu bad bytes\n",
               first_bad, bad);
    return bad != 0;
}

static int die(int rank)
{
    unsigned char *b = map_buf(NULL);
    for (int r = 0; r < 3; r++) {
        if (rank == 0) {
            fill(b, (uint64_t)r);
            MPI_Send(b, MSG, MPI_BYTE, 1, 3, MPI_COMM_WORLD);
        } else if (r < 2) {
            MPI_Recv(b, MSG, MPI_BYTE, 0, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Request req;
            MPI_Irecv(b, MSG, MPI_BYTE, 0, 3, MPI_COMM_WORLD, &req);
            printf("rdma_badinput die: rank 1 exits with a receive in flight\n");
            fflush(stdout);
            _exit(3);
        }
    }
    printf("rdma_badinput die: rank 0: all sends returned\n");
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *mode = argc > 1 ? argv[1] : "";
    if (size != 2) {
        if (rank == 0) fprintf(stderr, "rdma_badinput: needs exactly 2 ranks\n");
        MPI_Finalize();
        return 2;
    }
    int failed;
    if (!strcmp(mode, "memlock") && argc == 4) {
        failed = memlock(rank, atoi(argv[2]), atoi(argv[3]));
    } else if (!strcmp(mode, "free-inflight") && argc == 3) {
        failed = free_inflight(rank, atoi(argv[2]));
    } else if (!strcmp(mode, "die") && argc == 2) {
        failed = die(rank);
    } else {
        if (rank == 0)
            fprintf(stderr, "usage: rdma_badinput memlock NBUF ROUNDS | free-inflight ROUNDS | die\n");
        MPI_Finalize();
        return 2;
    }
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) printf("rdma_badinput %s: %s (2 ranks)\n", mode, any ? "FAILED" : "PASSED");
    MPI_Finalize();
    return any;
}
