/* Coverage of libregcache_pmpi.so beyond plain point-to-point and blocking
 * collectives: persistent requests, nonblocking collectives, matched probe
 * receives, one-sided windows and origin buffers, MPI_Cancel, every
 * completion call (with MPI_STATUS(ES)_IGNORE), and datatypes with holes,
 * negative lower bounds, MPI_BOTTOM and zero counts.
 *
 * Run with 2 ranks, the library preloaded and REGCACHE_PMPI_MIN_BYTES=1 so
 * that every buffer goes through the cache. Every result is compared byte
 * for byte with what MPI must compute. When the library is preloaded its
 * accessor regcache_pmpi_held() (found with dlsym) must be 0 whenever no
 * operation is in flight and no window is alive, and, when the cache is
 * active and takes every buffer (REGCACHE_PMPI_MIN_BYTES at most 16K),
 * positive while a window or a started operation holds memory. Rank 0 prints
 * "pmpi_coverage: PASSED (2 ranks)". */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 4096

static int ok = 1, rank, size, peer, from;
static size_t (*held)(void), (*acquired)(void);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "pmpi_coverage: rank %d: FAILED: %s\n", rank, what);
        ok = 0;
    }
}

/* Registrations held now: exactly `want` (-1: at least one). */
static void expect_held(long want, const char *what)
{
    char msg[160];
    size_t h;
    if (held == NULL || (want < 0 && acquired == NULL))
        return;
    h = held();
    if (want < 0)
        snprintf(msg, sizeof msg, "%s: %zu registrations held, expected some", what, h);
    else
        snprintf(msg, sizeof msg, "%s: %zu registrations held, expected %ld", what, h, want);
    check(want < 0 ? h > 0 : h == (size_t)want, msg);
}

static void fill(double *p, int n, double base)
{
    for (int i = 0; i < n; i++)
        p[i] = base + i;
}

static void set(double *p, int n, double v)
{
    for (int i = 0; i < n; i++)
        p[i] = v;
}

static int same(const double *p, int n, double base)
{
    for (int i = 0; i < n; i++)
        if (p[i] != base + i)
            return 0;
    return 1;
}

static void persistent(double *a, double *b)
{
    MPI_Request rq[2];
    /* Send_init/Recv_init started three times, completed three ways. */
    MPI_Recv_init(b, N, MPI_DOUBLE, from, 10, MPI_COMM_WORLD, &rq[0]);
    MPI_Send_init(a, N, MPI_DOUBLE, peer, 10, MPI_COMM_WORLD, &rq[1]);
    expect_held(0, "persistent requests before MPI_Start");
    for (int round = 0; round < 8; round++) {
        size_t taken = acquired != NULL ? acquired() : 0;
        fill(a, N, rank * 100 + round);
        set(b, N, -1);
        if (round % 4 == 0) {
            MPI_Start(&rq[0]);
            MPI_Start(&rq[1]);
        } else {
            MPI_Startall(2, rq);
        }
        if (round % 4 == 0) {
            MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
            MPI_Wait(&rq[1], MPI_STATUS_IGNORE);
        } else if (round % 4 == 1) {
            MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
        } else if (round % 4 == 2) {
            int n = 0, idx[2], total = 0;
            while (total < 2) {
                MPI_Testsome(2, rq, &n, idx, MPI_STATUSES_IGNORE);
                total += n == MPI_UNDEFINED ? 0 : n;
            }
        } else {
            int idx, flag = 0, total = 0;
            MPI_Waitany(2, rq, &idx, MPI_STATUS_IGNORE);
            while (total < 1) {
                MPI_Testany(2, rq, &idx, &flag, MPI_STATUS_IGNORE);
                if (flag && idx != MPI_UNDEFINED)
                    total++;
            }
        }
        check(same(b, N, from * 100 + round), "persistent send/recv data");
        expect_held(0, "persistent requests completed");
        /* Both buffers registered at every start (a request that MPI_Start
         * replaced keeps its buffer). */
        if (acquired != NULL)
            check(acquired() - taken == 2, "persistent buffers registered at each start");
    }
    MPI_Request_free(&rq[0]);
    MPI_Request_free(&rq[1]);

    /* Ssend_init, Rsend_init (receive posted first), Bsend_init. */
    MPI_Recv_init(b, N, MPI_DOUBLE, from, 11, MPI_COMM_WORLD, &rq[0]);
    MPI_Ssend_init(a, N, MPI_DOUBLE, peer, 11, MPI_COMM_WORLD, &rq[1]);
    fill(a, N, rank + 0.25);
    MPI_Startall(2, rq);
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
    check(same(b, N, from + 0.25), "Ssend_init data");
    MPI_Request_free(&rq[1]);
    MPI_Rsend_init(a, N, MPI_DOUBLE, peer, 11, MPI_COMM_WORLD, &rq[1]);
    fill(a, N, rank + 0.5);
    MPI_Start(&rq[0]);
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Start(&rq[1]);
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
    check(same(b, N, from + 0.5), "Rsend_init data");
    MPI_Request_free(&rq[1]);
    int bsize = N * sizeof(double) + MPI_BSEND_OVERHEAD;
    void *bbuf = malloc(bsize);
    MPI_Buffer_attach(bbuf, bsize);
    MPI_Bsend_init(a, N, MPI_DOUBLE, peer, 11, MPI_COMM_WORLD, &rq[1]);
    fill(a, N, rank + 0.75);
    MPI_Startall(2, rq);
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
    check(same(b, N, from + 0.75), "Bsend_init data");
    MPI_Request_free(&rq[1]);
    MPI_Buffer_detach(&bbuf, &bsize);
    free(bbuf);

    /* A started persistent receive freed before completion; the sender
     * then matches it (freeing an active request lets it complete). */
    set(b, N, -1);
    MPI_Start(&rq[0]);
    expect_held(-1, "started persistent receive");
    MPI_Request_free(&rq[0]);
    expect_held(0, "freed active persistent receive");
    fill(a, N, rank + 3);
    MPI_Send(a, N, MPI_DOUBLE, peer, 11, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    check(same(b, N, from + 3), "freed active persistent receive data");
}

static void nonblocking_collectives(double *a, double *b)
{
    MPI_Request rq[4];
    int counts[2], displs[2];
    double want;

    fill(a, N, rank);
    set(b, N, -1);
    if (rank == 0)
        fill(b, N, 42);
    MPI_Ibcast(b, N, MPI_DOUBLE, 0, MPI_COMM_WORLD, &rq[0]);
    expect_held(-1, "Ibcast in flight");
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, N, 42), "Ibcast");

    set(b, N, -1);
    MPI_Iallreduce(a, b, N, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &rq[0]);
    MPI_Waitall(1, rq, MPI_STATUSES_IGNORE);
    want = 0;
    for (int r = 0; r < size; r++)
        want += r;
    check(b[0] == want && b[N - 1] == want + size * (double)(N - 1), "Iallreduce");

    /* MPI_IN_PLACE and a zero count. */
    fill(b, N, rank);
    MPI_Iallreduce(MPI_IN_PLACE, b, N, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD, &rq[0]);
    MPI_Iallreduce(MPI_IN_PLACE, NULL, 0, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD, &rq[1]);
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
    check(same(b, N, size - 1), "in-place Iallreduce");

    set(b, N, -1);
    MPI_Ireduce(a, b, N, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD, &rq[0]);
    {
        int idx;
        MPI_Waitany(1, rq, &idx, MPI_STATUS_IGNORE);
    }
    if (rank == 0)
        check(b[5] == want + size * 5.0, "Ireduce");

    set(b, N, -1);
    MPI_Iscan(a, b, N / 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &rq[0]);
    MPI_Iexscan(a, b + N / 2, N / 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &rq[1]);
    {
        int n, idx[2], total = 0;
        while (total < 2) {
            MPI_Waitsome(2, rq, &n, idx, MPI_STATUSES_IGNORE);
            total += n == MPI_UNDEFINED ? 2 : n;
        }
    }
    /* Iscan's first half; Iexscan wrote the second half (rank 1: rank 0's). */
    check(b[0] == rank * (rank + 1) / 2.0, "Iscan");
    if (rank == 1)
        check(b[N / 2] == 0 && b[N / 2 + 3] == 3, "Iexscan");

    set(b, N, -1);
    MPI_Ireduce_scatter_block(a, b, N / size, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(b[0] == want + size * (double)(rank * (N / size)), "Ireduce_scatter_block");
    for (int r = 0; r < size; r++)
        counts[r] = N / size;
    set(b, N, -1);
    MPI_Ireduce_scatter(a, b, counts, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(b[1] == want + size * (double)(rank * (N / size) + 1), "Ireduce_scatter");

    /* Gathers and scatters: N/2 per rank. */
    int h = N / 2;
    fill(a, N, rank * 1000.0);
    set(b, N, -1);
    MPI_Igather(a, h, MPI_DOUBLE, b, h, MPI_DOUBLE, 0, MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    if (rank == 0)
        check(same(b, h, 0) && same(b + h, h, 1000), "Igather");
    for (int r = 0; r < size; r++)
        counts[r] = h - r, displs[r] = r * h;
    set(b, N, -1);
    MPI_Igatherv(a, h - rank, MPI_DOUBLE, b, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD,
                 &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    if (rank == 0)
        check(same(b, h, 0) && same(b + h, h - 1, 1000) && b[N - 1] == -1, "Igatherv");
    set(b, N, -1);
    MPI_Iscatter(a, h, MPI_DOUBLE, b, h, MPI_DOUBLE, 1, MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, h, 1000 + rank * h) && b[h] == -1, "Iscatter");
    set(b, N, -1);
    MPI_Iscatterv(a, counts, displs, MPI_DOUBLE, b, h - rank, MPI_DOUBLE, 1, MPI_COMM_WORLD,
                  &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, h - rank, 1000 + rank * h) && b[h - rank] == -1, "Iscatterv");
    set(b, N, -1);
    MPI_Iallgather(a, h, MPI_DOUBLE, b, h, MPI_DOUBLE, MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, h, 0) && same(b + h, h, 1000), "Iallgather");
    set(b, N, -1);
    MPI_Iallgatherv(a, h - rank, MPI_DOUBLE, b, counts, displs, MPI_DOUBLE, MPI_COMM_WORLD,
                    &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, h, 0) && same(b + h, h - 1, 1000) && b[N - 1] == -1, "Iallgatherv");
    set(b, N, -1);
    MPI_Ialltoall(a, h, MPI_DOUBLE, b, h, MPI_DOUBLE, MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, h, rank * h) && same(b + h, h, 1000 + rank * h), "Ialltoall");
    set(b, N, -1);
    int sc[2] = {h, h}, sd[2] = {0, h};
    MPI_Ialltoallv(a, sc, sd, MPI_DOUBLE, b, sc, sd, MPI_DOUBLE, MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, h, rank * h) && same(b + h, h, 1000 + rank * h), "Ialltoallv");
    set(b, N, -1);
    int wd[2] = {0, h * (int)sizeof(double)};
    MPI_Datatype wt[2] = {MPI_DOUBLE, MPI_DOUBLE};
    MPI_Ialltoallw(a, sc, wd, wt, b, sc, wd, wt, MPI_COMM_WORLD, &rq[0]);
    {
        int flag = 0;
        while (!flag)
            MPI_Test(&rq[0], &flag, MPI_STATUS_IGNORE);
    }
    check(same(b, h, rank * h) && same(b + h, h, 1000 + rank * h), "Ialltoallw");
    set(b, N, -1);
    MPI_Alltoallw(a, sc, wd, wt, b, sc, wd, wt, MPI_COMM_WORLD);
    check(same(b, h, rank * h) && same(b + h, h, 1000 + rank * h), "Alltoallw");
    MPI_Ibarrier(MPI_COMM_WORLD, &rq[0]);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    expect_held(0, "nonblocking collectives completed");
}

static void matched_probe(double *a, double *b)
{
    MPI_Message msg;
    MPI_Request rq[2];
    int flag = 0;
    fill(a, N, rank + 7);
    set(b, N, -1);
    MPI_Isend(a, N, MPI_DOUBLE, peer, 20, MPI_COMM_WORLD, &rq[0]);
    MPI_Mprobe(from, 20, MPI_COMM_WORLD, &msg, MPI_STATUS_IGNORE);
    MPI_Mrecv(b, N, MPI_DOUBLE, &msg, MPI_STATUS_IGNORE);
    MPI_Wait(&rq[0], MPI_STATUS_IGNORE);
    check(same(b, N, from + 7), "Mrecv");
    set(b, N, -1);
    MPI_Isend(a, N, MPI_DOUBLE, peer, 21, MPI_COMM_WORLD, &rq[0]);
    while (!flag)
        MPI_Improbe(from, 21, MPI_COMM_WORLD, &flag, &msg, MPI_STATUS_IGNORE);
    MPI_Imrecv(b, N, MPI_DOUBLE, &msg, &rq[1]);
    expect_held(-1, "Imrecv in flight");
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
    check(same(b, N, from + 7), "Imrecv");
    expect_held(0, "matched probes completed");
}

static void cancelled(double *b)
{
    MPI_Request rq;
    MPI_Status st;
    int c = 0;
    MPI_Irecv(b, N, MPI_DOUBLE, from, 99, MPI_COMM_WORLD, &rq);
    expect_held(-1, "pending receive");
    MPI_Cancel(&rq);
    MPI_Wait(&rq, &st);
    MPI_Test_cancelled(&st, &c);
    check(c, "receive cancelled");
    expect_held(0, "cancelled receive completed");
}

static void one_sided(double *a, double *b)
{
    MPI_Win win;
    MPI_Request rq;
    double *w;
    int h = N / 2;

    /* Win_create: fence epochs with Put, Get, Accumulate, Get_accumulate. */
    set(b, N, -1);
    MPI_Win_create(b, N * sizeof(double), sizeof(double), MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    expect_held(-1, "window alive");
    MPI_Win_fence(0, win);
    fill(a, N, rank * 10.0);
    MPI_Put(a, h, MPI_DOUBLE, peer, 0, h, MPI_DOUBLE, win);
    if (held != NULL && acquired != NULL) {
        size_t before = held();
        MPI_Win_fence(0, win);
        check(held() == before - 1, "Put's origin buffer released at the fence");
    } else {
        MPI_Win_fence(0, win);
    }
    check(same(b, h, from * 10.0) && b[h] == -1, "Put under fence");
    MPI_Get(a + h, h, MPI_DOUBLE, peer, 0, h, MPI_DOUBLE, win);
    MPI_Win_fence(0, win);
    check(same(a + h, h, rank * 10.0), "Get under fence");
    fill(a, N, 1);
    MPI_Accumulate(a, h, MPI_DOUBLE, peer, 0, h, MPI_DOUBLE, MPI_SUM, win);
    MPI_Win_fence(0, win);
    check(b[0] == from * 10.0 + 1 && b[h - 1] == from * 10.0 + h - 1 + h, "Accumulate");
    double *res = malloc(h * sizeof *res);
    MPI_Get_accumulate(a, h, MPI_DOUBLE, res, h, MPI_DOUBLE, peer, 0, h, MPI_DOUBLE, MPI_SUM,
                       win);
    MPI_Win_fence(MPI_MODE_NOSUCCEED, win);
    check(res[0] == rank * 10.0 + 1 && b[0] == from * 10.0 + 2, "Get_accumulate");

    /* Passive target: lock/unlock, flush, Rput/Rget. */
    fill(a, N, rank + 0.5);
    MPI_Win_lock(MPI_LOCK_SHARED, peer, 0, win);
    MPI_Put(a, h, MPI_DOUBLE, peer, h, h, MPI_DOUBLE, win);
    MPI_Win_flush(peer, win);
    MPI_Rget(res, h, MPI_DOUBLE, peer, h, h, MPI_DOUBLE, win, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    check(same(res, h, rank + 0.5), "Put + flush + Rget");
    MPI_Rput(a + h, h, MPI_DOUBLE, peer, 0, h, MPI_DOUBLE, win, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    MPI_Win_unlock(peer, win);
    MPI_Win_lock_all(0, win);
    MPI_Raccumulate(a, 1, MPI_DOUBLE, peer, N - 1, 1, MPI_DOUBLE, MPI_REPLACE, win, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    MPI_Rget_accumulate(NULL, 0, MPI_DOUBLE, res, 1, MPI_DOUBLE, peer, N - 1, 1, MPI_DOUBLE,
                        MPI_NO_OP, win, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    check(res[0] == rank + 0.5, "Raccumulate + Rget_accumulate");
    MPI_Get(res, 1, MPI_DOUBLE, peer, 0, 1, MPI_DOUBLE, win);
    MPI_Win_flush_all(win);
    check(res[0] == rank + 0.5 + h, "Rput");
    MPI_Win_unlock_all(win);
    MPI_Barrier(MPI_COMM_WORLD);
    check(same(b + h, h - 1, from + 0.5) && same(b, h, from + 0.5 + h), "target memory");
    MPI_Win_free(&win);
    expect_held(0, "Win_free");

    /* Win_allocate. */
    MPI_Win_allocate(N * sizeof(double), sizeof(double), MPI_INFO_NULL, MPI_COMM_WORLD, &w,
                     &win);
    expect_held(-1, "allocated window");
    set(w, N, -1);
    MPI_Win_fence(0, win);
    fill(a, N, rank + 9);
    MPI_Put(a, N, MPI_DOUBLE, peer, 0, N, MPI_DOUBLE, win);
    MPI_Win_fence(0, win);
    check(same(w, N, from + 9), "Put into allocated window");
    MPI_Win_free(&win);
    expect_held(0, "allocated window freed");

    /* A dynamic window: attach, put, detach. */
    MPI_Aint addr, remote;
    set(b, N, -1);
    MPI_Win_create_dynamic(MPI_INFO_NULL, MPI_COMM_WORLD, &win);
    MPI_Win_attach(win, b, N * sizeof(double));
    expect_held(-1, "attached memory");
    MPI_Get_address(b, &addr);
    MPI_Sendrecv(&addr, 1, MPI_AINT, peer, 30, &remote, 1, MPI_AINT, from, 30, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    /* `remote` is the address of `from`'s buffer; we put into `peer`'s:
     * with 2 ranks they are the same rank. */
    MPI_Win_lock(MPI_LOCK_EXCLUSIVE, peer, 0, win);
    fill(a, N, rank + 11);
    MPI_Put(a, N, MPI_DOUBLE, peer, remote, N, MPI_DOUBLE, win);
    MPI_Win_unlock(peer, win);
    MPI_Barrier(MPI_COMM_WORLD);
    check(same(b, N, from + 11), "Put into attached memory");
    MPI_Win_detach(win, b);
    expect_held(0, "detached memory");
    MPI_Win_free(&win);
    free(res);
}

static void datatypes(double *a, double *b)
{
    MPI_Datatype t, u;
    /* Holes: every other double (span 2x the bytes moved, registered). */
    MPI_Type_vector(N / 2, 1, 2, MPI_DOUBLE, &t);
    MPI_Type_commit(&t);
    fill(a, N, rank * 100.0);
    set(b, N, -1);
    MPI_Sendrecv(a, 1, t, peer, 40, b, 1, t, from, 40, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    check(b[0] == from * 100.0 && b[2] == from * 100.0 + 2 && b[1] == -1 && b[N - 1] == -1,
          "vector datatype");
    MPI_Type_free(&t);

    /* Too spread out (1 double in 64): skipped, still right. */
    MPI_Type_vector(N / 64, 1, 64, MPI_DOUBLE, &t);
    MPI_Type_commit(&t);
    set(b, N, -1);
    MPI_Sendrecv(a, 1, t, peer, 41, b, 1, t, from, 41, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    check(b[64] == from * 100.0 + 64 && b[1] == -1, "sparse vector datatype");
    MPI_Type_free(&t);

    /* A negative lower bound: the elements start 8 doubles before buf. */
    int bl[1] = {N / 2};
    int disp[1] = {-8};
    MPI_Type_indexed(1, bl, disp, MPI_DOUBLE, &t);
    MPI_Type_commit(&t);
    set(b, N, -1);
    MPI_Sendrecv(a + 8, 1, t, peer, 42, b + 8, 1, t, from, 42, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    check(same(b, N / 2, from * 100.0) && b[N / 2] == -1, "negative lower bound");
    /* The same through a resized type with a negative lb, count 2. */
    MPI_Type_create_resized(t, -8 * (MPI_Aint)sizeof(double), (N / 2) * sizeof(double), &u);
    MPI_Type_commit(&u);
    set(b, N, -1);
    MPI_Request rq[2];
    MPI_Irecv(b + 8, 2, u, from, 43, MPI_COMM_WORLD, &rq[0]);
    MPI_Isend(a + 8, 2, u, peer, 43, MPI_COMM_WORLD, &rq[1]);
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
    check(same(b, N, from * 100.0), "resized type, negative lb");
    MPI_Type_free(&u);
    MPI_Type_free(&t);

    /* MPI_BOTTOM with absolute addresses: not ranged, still right. */
    MPI_Aint abs_a, abs_b;
    int one = N;
    MPI_Get_address(a, &abs_a);
    MPI_Get_address(b, &abs_b);
    MPI_Datatype ts, tr, dbl = MPI_DOUBLE;
    MPI_Type_create_struct(1, &one, &abs_a, &dbl, &ts);
    MPI_Type_create_struct(1, &one, &abs_b, &dbl, &tr);
    MPI_Type_commit(&ts);
    MPI_Type_commit(&tr);
    set(b, N, -1);
    MPI_Sendrecv(MPI_BOTTOM, 1, ts, peer, 44, MPI_BOTTOM, 1, tr, from, 44, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    check(same(b, N, from * 100.0), "MPI_BOTTOM");
    MPI_Type_free(&ts);
    MPI_Type_free(&tr);

    /* Zero counts on nonblocking and persistent calls. */
    MPI_Irecv(NULL, 0, MPI_DOUBLE, from, 45, MPI_COMM_WORLD, &rq[0]);
    MPI_Send_init(NULL, 0, MPI_DOUBLE, peer, 45, MPI_COMM_WORLD, &rq[1]);
    MPI_Start(&rq[1]);
    MPI_Waitall(2, rq, MPI_STATUSES_IGNORE);
    MPI_Request_free(&rq[1]);
    expect_held(0, "datatypes");
}

/* An intercommunicator (rank 0 | rank 1): the root group's buffers that
 * MPI ignores are not ranged (they may be garbage); the data is right. */
static void intercomm(double *a, double *b)
{
    MPI_Comm half, inter;
    MPI_Request rq;
    size_t taken;
    MPI_Comm_split(MPI_COMM_WORLD, rank, 0, &half);
    MPI_Intercomm_create(half, 0, MPI_COMM_WORLD, peer, 50, &inter);
    fill(a, N, rank + 60);
    set(b, N, -1);
    taken = acquired != NULL ? acquired() : 0;
    /* Rank 0 is the root (MPI_ROOT): its send buffer is ignored. */
    MPI_Gather(a, N, MPI_DOUBLE, b, N, MPI_DOUBLE, rank == 0 ? MPI_ROOT : 0, inter);
    if (rank == 0)
        check(same(b, N, 61), "intercommunicator gather");
    if (acquired != NULL)
        check(acquired() - taken == (rank == 0 ? 0u : 1u),
              "intercommunicator gather: ignored buffers not ranged");
    set(b, N, -1);
    MPI_Ibcast(rank == 0 ? a : b, N, MPI_DOUBLE, rank == 0 ? MPI_ROOT : 0, inter, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    if (rank == 1)
        check(same(b, N, 60), "intercommunicator Ibcast");
    if (acquired != NULL)
        check(acquired() - taken == (rank == 0 ? 1u : 2u),
              "intercommunicator Ibcast: both sides ranged");
    MPI_Comm_free(&inter);
    MPI_Comm_free(&half);
    expect_held(0, "intercommunicator");
}

/* Neighborhood collectives on a non-periodic line of 2: rank 0's
 * neighbors are (MPI_PROC_NULL, 1), rank 1's (0, MPI_PROC_NULL); the
 * MPI_PROC_NULL block of the receive buffer stays untouched. */
static void neighborhood(double *a, double *b)
{
    MPI_Comm line;
    MPI_Request rq;
    int dims[1] = {2}, periods[1] = {0}, q = N / 2;
    int counts[2] = {q, q}, displs[2] = {0, q};
    MPI_Aint bdispls[2] = {0, (MPI_Aint)q * (MPI_Aint)sizeof(double)};
    MPI_Datatype types[2] = {MPI_DOUBLE, MPI_DOUBLE};
    /* Where the neighbor's block lands, and which of its blocks it is. */
    double *got = rank == 0 ? b + q : b, *none = rank == 0 ? b : b + q;
    MPI_Cart_create(MPI_COMM_WORLD, 1, dims, periods, 0, &line);
    fill(a, N, rank * 1000.0);

    set(b, N, -1);
    MPI_Neighbor_allgather(a, q, MPI_DOUBLE, b, q, MPI_DOUBLE, line);
    check(same(got, q, from * 1000.0) && none[0] == -1 && none[q - 1] == -1,
          "Neighbor_allgather");
    set(b, N, -1);
    MPI_Ineighbor_allgatherv(a, q, MPI_DOUBLE, b, counts, displs, MPI_DOUBLE, line, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    check(same(got, q, from * 1000.0) && none[0] == -1, "Ineighbor_allgatherv");

    /* Rank 1 receives rank 0's block 1 (sent right), rank 0 rank 1's
     * block 0 (sent left). */
    double want = rank == 0 ? 1000.0 : q;
    set(b, N, -1);
    MPI_Neighbor_alltoall(a, q, MPI_DOUBLE, b, q, MPI_DOUBLE, line);
    check(same(got, q, want) && none[0] == -1, "Neighbor_alltoall");
    set(b, N, -1);
    MPI_Ineighbor_alltoall(a, q, MPI_DOUBLE, b, q, MPI_DOUBLE, line, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    check(same(got, q, want) && none[0] == -1, "Ineighbor_alltoall");
    set(b, N, -1);
    MPI_Ineighbor_alltoallv(a, counts, displs, MPI_DOUBLE, b, counts, displs, MPI_DOUBLE, line,
                            &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    check(same(got, q, want) && none[0] == -1, "Ineighbor_alltoallv");
    set(b, N, -1);
    MPI_Neighbor_alltoallw(a, counts, bdispls, types, b, counts, bdispls, types, line);
    check(same(got, q, want) && none[0] == -1, "Neighbor_alltoallw");
    set(b, N, -1);
    MPI_Ineighbor_alltoallw(a, counts, bdispls, types, b, counts, bdispls, types, line, &rq);
    MPI_Wait(&rq, MPI_STATUS_IGNORE);
    check(same(got, q, want) && none[0] == -1, "Ineighbor_alltoallw");
    MPI_Comm_free(&line);
    expect_held(0, "neighborhood collectives");
}

int main(int argc, char **argv)
{
    int all = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    peer = (rank + 1) % size;
    from = (rank + size - 1) % size;
    *(void **)&held = dlsym(RTLD_DEFAULT, "regcache_pmpi_held");
    *(void **)&acquired = dlsym(RTLD_DEFAULT, "regcache_pmpi_acquired");
    if (size != 2) {
        if (rank == 0)
            fprintf(stderr, "pmpi_coverage: needs 2 ranks\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    double *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    if (acquired != NULL) {
        /* Is the cache active and taking 16 KiB buffers? If not (disabled,
         * a higher REGCACHE_PMPI_MIN_BYTES) only the balance is checked. */
        size_t before = acquired();
        MPI_Sendrecv(a, N / 2, MPI_DOUBLE, 0, 0, b, N / 2, MPI_DOUBLE, 0, 0,
                     MPI_COMM_SELF, MPI_STATUS_IGNORE);
        if (acquired() == before)
            acquired = NULL;
    }
    expect_held(0, "start");
    persistent(a, b);
    nonblocking_collectives(a, b);
    matched_probe(a, b);
    cancelled(b);
    one_sided(a, b);
    datatypes(a, b);
    intercomm(a, b);
    neighborhood(a, b);

    MPI_Reduce(&ok, &all, 1, MPI_INT, MPI_LAND, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("pmpi_coverage: %s (%d ranks%s)\n", all ? "PASSED" : "FAILED", size,
               held ? "" : ", library not preloaded");
    free(a);
    free(b);
    MPI_Finalize();
    return rank == 0 && !all;
}
