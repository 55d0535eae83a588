/* Edge cases for libregcache_pmpi.so: run with the library preloaded and
 * REGCACHE_PMPI_MIN_BYTES=1 so that every buffer goes through the cache.
 * Results must be exactly what MPI computes without it: MPI_IN_PLACE,
 * NULL buffers with zero counts, a non-contiguous derived datatype,
 * nonblocking operations completed by Waitall/Waitany/Test, v-variant
 * collectives, a freed request. Rank 0 prints "pmpi_edge: PASSED". */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 4096

static int ok = 1;
static void check(int rank, int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "pmpi_edge: rank %d: FAILED: %s\n", rank, what);
        ok = 0;
    }
}

int main(int argc, char **argv)
{
    int rank, size, all = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int peer = (rank + 1) % size, from = (rank + size - 1) % size;
    double *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);

    /* MPI_IN_PLACE allreduce. */
    for (int i = 0; i < N; i++)
        a[i] = rank + i;
    MPI_Allreduce(MPI_IN_PLACE, a, N, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double want = 0;
    for (int r = 0; r < size; r++)
        want += r + 7;
    check(rank, a[7] == want, "in-place allreduce");

    /* Zero counts with NULL buffers. */
    MPI_Sendrecv(NULL, 0, MPI_DOUBLE, peer, 1, NULL, 0, MPI_DOUBLE, from, 1, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    MPI_Bcast(NULL, 0, MPI_INT, 0, MPI_COMM_WORLD);

    /* A strided derived datatype (every other double): skipped, still right. */
    MPI_Datatype vec;
    MPI_Type_vector(N / 2, 1, 2, MPI_DOUBLE, &vec);
    MPI_Type_commit(&vec);
    for (int i = 0; i < N; i++)
        a[i] = rank * 1000.0 + i, b[i] = -1;
    MPI_Sendrecv(a, 1, vec, peer, 2, b, 1, vec, from, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    check(rank, b[0] == from * 1000.0 && b[2] == from * 1000.0 + 2 && b[1] == -1,
          "vector datatype");
    MPI_Type_free(&vec);

    /* Nonblocking, completed by Waitall, Waitany and Test loops. */
    MPI_Request rq[2];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++)
            a[i] = rank + round, b[i] = -1;
        MPI_Irecv(b, N, MPI_DOUBLE, from, 3, MPI_COMM_WORLD, &rq[0]);
        MPI_Isend(a, N, MPI_DOUBLE, peer, 3, MPI_COMM_WORLD, &rq[1]);
        if (round == 0) {
            MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
        } else if (round == 1) {
            int idx;
            MPI_Waitany(2, rq, &idx, MPI_STATUS_IGNORE);
            MPI_Waitany(2, rq, &idx, MPI_STATUS_IGNORE);
        } else {
            int flag = 0;
            while (!flag)
                MPI_Testall(2, rq, &flag, MPI_STATUSES_IGNORE);
        }
        check(rank, b[N - 1] == from + round, "nonblocking exchange");
    }
    /* A request freed before completion. */
    MPI_Request fr;
    MPI_Isend(a, N, MPI_DOUBLE, peer, 4, MPI_COMM_WORLD, &fr);
    MPI_Request_free(&fr);
    MPI_Recv(b, N, MPI_DOUBLE, from, 4, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    check(rank, b[0] == from + 2, "freed request");

    /* v-variants. */
    int *counts = malloc(size * sizeof(int)), *displs = malloc(size * sizeof(int));
    for (int r = 0; r < size; r++)
        counts[r] = 100 + r, displs[r] = r * 200;
    for (int i = 0; i < N; i++)
        a[i] = rank, b[i] = -1;
    MPI_Allgatherv(a, 100 + rank, MPI_DOUBLE, b, counts, displs, MPI_DOUBLE, MPI_COMM_WORLD);
    for (int r = 0; r < size; r++)
        check(rank, b[displs[r]] == r && b[displs[r] + counts[r] - 1] == r, "allgatherv");
    MPI_Alltoall(a, 10, MPI_DOUBLE, b, 10, MPI_DOUBLE, MPI_COMM_WORLD);
    check(rank, b[10 * from] == from, "alltoall");
    MPI_Reduce(rank == 0 ? MPI_IN_PLACE : a, a, N, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0)
        check(rank, a[0] == size - 1, "in-place reduce");

    /* The same buffer reused after free + malloc. */
    free(a);
    a = malloc(N * sizeof *a);
    for (int i = 0; i < N; i++)
        a[i] = rank + 0.5;
    MPI_Sendrecv(a, N, MPI_DOUBLE, peer, 5, b, N, MPI_DOUBLE, from, 5, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    check(rank, b[N / 2] == from + 0.5, "reused buffer");

    MPI_Reduce(&ok, &all, 1, MPI_INT, MPI_LAND, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("pmpi_edge: %s (%d ranks)\n", all ? "PASSED" : "FAILED", size);
    free(a);
    free(b);
    free(counts);
    free(displs);
    MPI_Finalize();
    return rank == 0 && !all;
}
