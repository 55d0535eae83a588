/* The registration helpers both languages' wrappers use: which bytes a
 * buffer spans (from the datatype's true extent), the registration of a
 * span, what each collective registers, and what keeps a registration
 * past its call (a request, a window, an RMA target).
 *
 * Never change results, never crash the application: every buffer that
 * cannot be ranged safely is skipped (MPI_IN_PLACE, MPI_BOTTOM/NULL, zero
 * counts, MPI_DATATYPE_NULL, negative extents, spans far larger than the
 * data, intercommunicator roots). The PMPI call's result is always what
 * the application sees.
 */
#include "pmpi_common.h"

#include <stdlib.h>

/* A buffer's registered span may be larger than the bytes it moves
 * (datatypes with holes, v-variants with gaps); past this factor it is
 * skipped, as an RDMA MPI would pack such data instead of registering it. */
#define MAX_SPREAD 16

/* The byte span [*lo, *hi) relative to buf touched by `count` elements of
 * `dt` starting `disp` bytes from buf, and the bytes moved; 0 when it cannot
 * be ranged (MPI_DATATYPE_NULL, zero-size types, negative extents). The span
 * is the true extent: a negative lower bound starts it before buf, holes
 * inside the type are included. */
static int layout(long long disp, long long count, MPI_Datatype dt, long long *lo,
                  long long *hi, long long *bytes)
{
    int size = 0;
    MPI_Aint lb, extent, true_lb, true_extent;
    if (count <= 0 || dt == MPI_DATATYPE_NULL)
        return 0;
    if (PMPI_Type_size(dt, &size) != MPI_SUCCESS || size <= 0)
        return 0;
    if (PMPI_Type_get_extent(dt, &lb, &extent) != MPI_SUCCESS ||
        PMPI_Type_get_true_extent(dt, &true_lb, &true_extent) != MPI_SUCCESS)
        return 0;
    if (extent <= 0 || true_extent <= 0) {
        rcpmpi_skipped();
        return 0;
    }
    *lo = disp + (long long)true_lb;
    *hi = *lo + (count - 1) * (long long)extent + (long long)true_extent;
    *bytes = count * (long long)size;
    return 1;
}

/* A real buffer: not NULL (== MPI_BOTTOM in Open MPI: absolute addresses in
 * a datatype are not ranged) and not MPI_IN_PLACE. */
int real(const void *buf)
{
    return buf != NULL && buf != MPI_IN_PLACE && buf != MPI_BOTTOM;
}

/* Register [buf+lo, buf+hi) for `bytes` moved, unless spread too thin. */
static uint64_t get_span(const void *buf, long long lo, long long hi, long long bytes)
{
    if (hi <= lo || bytes <= 0)
        return 0;
    if (hi - lo > MAX_SPREAD * bytes) {
        rcpmpi_skipped();
        return 0;
    }
    return rcpmpi_acquire((const char *)buf + lo, (size_t)(hi - lo));
}

/* Bytes spanned by `count` elements of `dt` at `buf` (0 when skipped). */
static size_t span(const void *buf, long long count, MPI_Datatype dt, const char **start)
{
    long long lo, hi, bytes;
    if (!real(buf) || !layout(0, count, dt, &lo, &hi, &bytes))
        return 0;
    if (hi - lo > MAX_SPREAD * bytes) {
        rcpmpi_skipped();
        return 0;
    }
    *start = (const char *)buf + lo;
    return (size_t)(hi - lo);
}

uint64_t get(const void *buf, long long count, MPI_Datatype dt)
{
    long long lo, hi, bytes;
    if (!real(buf) || !layout(0, count, dt, &lo, &hi, &bytes))
        return 0;
    return get_span(buf, lo, hi, bytes);
}

/* Add the block [l, h) of b bytes to the hull [*lo, *hi) of *bytes
 * (empty while *bytes is 0). */
static void widen(long long *lo, long long *hi, long long *bytes, long long l, long long h,
                  long long b)
{
    if (*bytes == 0 || l < *lo)
        *lo = l;
    if (*bytes == 0 || h > *hi)
        *hi = h;
    *bytes += b;
}

/* The hull of the blocks of a v-variant buffer: counts[i] elements at
 * displs[i] extents of dt from buf, i < n. */
static uint64_t getv(const void *buf, const int *counts, const int *displs, MPI_Datatype dt,
                     int n)
{
    long long lo = 0, hi = 0, bytes = 0, l, h, b;
    MPI_Aint lb, extent;
    if (!real(buf) || counts == NULL || displs == NULL || n <= 0 || dt == MPI_DATATYPE_NULL ||
        PMPI_Type_get_extent(dt, &lb, &extent) != MPI_SUCCESS)
        return 0;
    for (int i = 0; i < n; i++) {
        if (counts[i] <= 0)
            continue;
        if (!layout((long long)displs[i] * extent, counts[i], dt, &l, &h, &b))
            return 0;
        widen(&lo, &hi, &bytes, l, h, b);
    }
    return get_span(buf, lo, hi, bytes);
}

/* The same for MPI_Alltoallw: displacements in bytes (int for
 * MPI_Alltoallw, MPI_Aint for MPI_Neighbor_alltoallw: one of idispls and
 * adispls is NULL), a datatype each. */
static uint64_t getw(const void *buf, const int *counts, const int *idispls,
                     const MPI_Aint *adispls, const MPI_Datatype *dts, int n)
{
    long long lo = 0, hi = 0, bytes = 0, l, h, b;
    if (!real(buf) || counts == NULL || (idispls == NULL && adispls == NULL) || dts == NULL ||
        n <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        long long disp = idispls != NULL ? idispls[i] : (long long)adispls[i];
        if (counts[i] <= 0)
            continue;
        if (!layout(disp, counts[i], dts[i], &l, &h, &b))
            return 0;
        widen(&lo, &hi, &bytes, l, h, b);
    }
    return get_span(buf, lo, hi, bytes);
}

void put(uint64_t t)
{
    if (t)
        rcpmpi_release(t);
}

/* Rank in an intracommunicator, or -1 for an intercommunicator (roots of
 * intercommunicator collectives are not ranged). */
int rank_of(MPI_Comm comm, int *size)
{
    int inter = 0, rank = -1;
    *size = 0;
    if (comm == MPI_COMM_NULL || PMPI_Comm_test_inter(comm, &inter) != MPI_SUCCESS || inter)
        return -1;
    if (PMPI_Comm_rank(comm, &rank) != MPI_SUCCESS || PMPI_Comm_size(comm, size) != MPI_SUCCESS)
        return -1;
    return rank;
}

/* ---- init / finalize ------------------------------------------------- */

/* 1 between a successful MPI_Init (C or Fortran) and MPI_Finalize: the
 * Fortran wrappers convert handles (MPI_*_f2c) only then. */
static int live;

int mpi_live(void)
{
    return __atomic_load_n(&live, __ATOMIC_ACQUIRE);
}

void after_init(void)
{
    int rank = 0;
    PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
    rcpmpi_init(rank);
    __atomic_store_n(&live, 1, __ATOMIC_RELEASE);
}

void before_finalize(void)
{
    __atomic_store_n(&live, 0, __ATOMIC_RELEASE);
    rcpmpi_finalize();
}

/* ---- requests -------------------------------------------------------- */

/* Keep the tokens of a started nonblocking operation until its request
 * completes; release them at once when it did not start. */
void attach2(int rc, MPI_Request *req, const uint64_t t[2])
{
    for (int i = 0; i < 2; i++) {
        if (!t[i])
            continue;
        if (rc == MPI_SUCCESS && req != NULL && *req != MPI_REQUEST_NULL)
            rcpmpi_keep(KIND_REQUEST, (uintptr_t)*req, 0, t[i]);
        else
            rcpmpi_release(t[i]);
    }
}

/* As an RDMA MPI does (Open MPI's ob1 runs its send/receive protocol, and
 * so its registration-cache lookup, afresh at each MPI_Start): the buffer
 * is remembered at *_init, registered at each MPI_Start and released when
 * that start completes (MPI_Wait/Test and friends) or at MPI_Request_free.
 * An inactive persistent request holds nothing. */

void persist(int rc, MPI_Request *req, const void *buf, int count, MPI_Datatype dt)
{
    const char *start = NULL;
    size_t len;
    if (rc != MPI_SUCCESS || req == NULL || *req == MPI_REQUEST_NULL)
        return;
    len = span(buf, count, dt, &start);
    rcpmpi_persist((uintptr_t)*req, start, len);
}

/* Open MPI's ob1 may hand back a new request from MPI_Start (when the PML
 * still holds the previous start): the remembered buffer moves with it. */
void started(MPI_Request old, MPI_Request now)
{
    if (now == MPI_REQUEST_NULL)
        return;
    if (now != old && old != MPI_REQUEST_NULL)
        rcpmpi_moved((uintptr_t)old, (uintptr_t)now);
    rcpmpi_start((uintptr_t)now);
}

/* Request i of a completion call completed: release what its saved handle
 * holds. */
void done(const MPI_Request *old, int i)
{
    if (old[i] != MPI_REQUEST_NULL)
        rcpmpi_complete(KIND_REQUEST, (uintptr_t)old[i], 0);
}

/* ---- collectives ----------------------------------------------------- */
/* Each collective's buffers are worked out once (regs_*), then either
 * released at return (blocking) or kept on the request (nonblocking). */

/* In an intercommunicator's root group the root passes MPI_ROOT and the
 * others MPI_PROC_NULL; MPI ignores the root's send buffer of a gather or
 * reduce (its receive buffer of a scatter) and every buffer of the others:
 * they may be garbage, so they are not ranged. */
static int ignored_root(int root)
{
    return root == MPI_ROOT || root == MPI_PROC_NULL;
}

void regs_bcast(void *buf, int count, MPI_Datatype dt, int root, uint64_t t[2])
{
    t[0] = root == MPI_PROC_NULL ? 0 : get(buf, count, dt);
}

void regs_reduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, int root,
                        MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = ignored_root(root) ? 0 : get(sbuf, count, dt);
    t[1] = rank >= 0 && rank == root ? get(rbuf, count, dt) : 0;
}

void regs_allreduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt,
                           uint64_t t[2])
{
    t[0] = get(sbuf, count, dt);
    t[1] = get(rbuf, count, dt);
}

void regs_rsb(const void *sbuf, void *rbuf, int rcount, MPI_Datatype dt, MPI_Comm comm,
                     uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? get(sbuf, (long long)rcount * size, dt) : 0;
    t[1] = get(rbuf, rcount, dt);
}

void regs_rs(const void *sbuf, void *rbuf, const int *rcounts, MPI_Datatype dt,
                    MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    long long total = 0;
    if (rank >= 0 && rcounts != NULL) {
        for (int i = 0; i < size; i++)
            total += rcounts[i] > 0 ? rcounts[i] : 0;
        t[0] = get(sbuf, total, dt);
        t[1] = get(rbuf, rcounts[rank], dt);
    }
}

void regs_gather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                        MPI_Datatype rdt, int root, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = ignored_root(root) ? 0 : get(sbuf, scount, sdt);
    t[1] = rank >= 0 && rank == root ? get(rbuf, (long long)rcount * size, rdt) : 0;
}

void regs_gatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                         const int *rcounts, const int *displs, MPI_Datatype rdt, int root,
                         MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = ignored_root(root) ? 0 : get(sbuf, scount, sdt);
    t[1] = rank >= 0 && rank == root ? getv(rbuf, rcounts, displs, rdt, size) : 0;
}

void regs_scatter(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                         MPI_Datatype rdt, int root, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 && rank == root ? get(sbuf, (long long)scount * size, sdt) : 0;
    t[1] = ignored_root(root) ? 0 : get(rbuf, rcount, rdt);
}

void regs_scatterv(const void *sbuf, const int *scounts, const int *displs,
                          MPI_Datatype sdt, void *rbuf, int rcount, MPI_Datatype rdt, int root,
                          MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 && rank == root ? getv(sbuf, scounts, displs, sdt, size) : 0;
    t[1] = ignored_root(root) ? 0 : get(rbuf, rcount, rdt);
}

void regs_allgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                           int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = get(sbuf, scount, sdt);
    t[1] = rank >= 0 ? get(rbuf, (long long)rcount * size, rdt) : 0;
}

void regs_allgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                            const int *rcounts, const int *displs, MPI_Datatype rdt,
                            MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = get(sbuf, scount, sdt);
    t[1] = rank >= 0 ? getv(rbuf, rcounts, displs, rdt, size) : 0;
}

void regs_alltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                          int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? get(sbuf, (long long)scount * size, sdt) : 0;
    t[1] = rank >= 0 ? get(rbuf, (long long)rcount * size, rdt) : 0;
}

void regs_alltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                           MPI_Datatype sdt, void *rbuf, const int *rcounts,
                           const int *rdispls, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? getv(sbuf, scounts, sdispls, sdt, size) : 0;
    t[1] = rank >= 0 ? getv(rbuf, rcounts, rdispls, rdt, size) : 0;
}

void regs_alltoallw(const void *sbuf, const int *scounts, const int *sdispls,
                           const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                           const int *rdispls, const MPI_Datatype *rdts, MPI_Comm comm,
                           uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? getw(sbuf, scounts, sdispls, NULL, sdts, size) : 0;
    t[1] = rank >= 0 ? getw(rbuf, rcounts, rdispls, NULL, rdts, size) : 0;
}

/* ---- neighborhood collectives -------------------------------------- */
/* Buffers hold one block per neighbor, MPI_PROC_NULL neighbors of a
 * Cartesian topology included: `in` blocks received, `out` sent. */
static int neighbors(MPI_Comm comm, int *in, int *out)
{
    int topo = MPI_UNDEFINED, rank, n = 0, weighted;
    *in = *out = 0;
    if (comm == MPI_COMM_NULL || PMPI_Topo_test(comm, &topo) != MPI_SUCCESS)
        return 0;
    if (topo == MPI_CART) {
        if (PMPI_Cartdim_get(comm, &n) != MPI_SUCCESS)
            return 0;
        *in = *out = 2 * n;
    } else if (topo == MPI_GRAPH) {
        if (PMPI_Comm_rank(comm, &rank) != MPI_SUCCESS ||
            PMPI_Graph_neighbors_count(comm, rank, &n) != MPI_SUCCESS)
            return 0;
        *in = *out = n;
    } else if (topo == MPI_DIST_GRAPH) {
        if (PMPI_Dist_graph_neighbors_count(comm, in, out, &weighted) != MPI_SUCCESS)
            return 0;
    } else {
        return 0;
    }
    return 1;
}

void regs_nallgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                            int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = out > 0 ? get(sbuf, scount, sdt) : 0;
    t[1] = get(rbuf, (long long)rcount * in, rdt);
}

void regs_nallgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                             const int *rcounts, const int *displs, MPI_Datatype rdt,
                             MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = out > 0 ? get(sbuf, scount, sdt) : 0;
    t[1] = getv(rbuf, rcounts, displs, rdt, in);
}

void regs_nalltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                           int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = get(sbuf, (long long)scount * out, sdt);
    t[1] = get(rbuf, (long long)rcount * in, rdt);
}

void regs_nalltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                            MPI_Datatype sdt, void *rbuf, const int *rcounts,
                            const int *rdispls, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = getv(sbuf, scounts, sdispls, sdt, out);
    t[1] = getv(rbuf, rcounts, rdispls, rdt, in);
}

void regs_nalltoallw(const void *sbuf, const int *scounts, const MPI_Aint *sdispls,
                            const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                            const MPI_Aint *rdispls, const MPI_Datatype *rdts, MPI_Comm comm,
                            uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = getw(sbuf, scounts, NULL, sdispls, sdts, out);
    t[1] = getw(rbuf, rcounts, NULL, rdispls, rdts, in);
}

/* ---- one-sided (RMA) ------------------------------------------------- */
/* ---- one-sided (RMA) ----------------------------------------------- */
/* Window memory is registered for the window's lifetime, as an RDMA MPI
 * registers it at creation so that peers can target it: MPI_Win_create's
 * buffer and MPI_Win_allocate's memory until MPI_Win_free, MPI_Win_attach's
 * until MPI_Win_detach (or MPI_Win_free). Origin buffers of MPI_Put/Get/
 * Accumulate/Get_accumulate are registered until the synchronization that
 * completes them at the origin: MPI_Win_flush(_local)/MPI_Win_unlock for
 * that target, MPI_Win_fence/flush(_local)_all/unlock_all/complete/free for
 * all. The request-based MPI_Rput/Rget/Raccumulate/Rget_accumulate keep
 * theirs on the request. Shared-memory windows (MPI_Win_allocate_shared),
 * MPI_Compare_and_swap and MPI_Fetch_and_op (one element) are not ranged. */

/* An origin buffer kept until its target is synchronized. */
void origin(int rc, MPI_Win win, int target, uint64_t t)
{
    if (rc == MPI_SUCCESS && win != MPI_WIN_NULL && target >= 0)
        rcpmpi_keep(KIND_ORIGIN, (uintptr_t)win, (uintptr_t)target, t);
    else
        put(t);
}
