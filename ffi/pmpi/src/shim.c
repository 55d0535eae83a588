/* The MPI side of libregcache_pmpi.so.
 *
 * Rust defines the exported MPI_* symbols (a Rust cdylib exports only Rust
 * symbols) and forwards each to the rc_MPI_* function here, which knows the
 * MPI types: it works out which buffers the call moves, asks the cache for
 * a registration of each one at or above REGCACHE_PMPI_MIN_BYTES (as an RDMA
 * MPI does for its rendezvous protocol), calls the PMPI_ entry point, and
 * releases the registrations when the operation completes: at return for
 * blocking calls, in MPI_Wait/Test and friends for nonblocking ones.
 *
 * Never change results, never crash the application: every buffer that
 * cannot be ranged safely is skipped (MPI_IN_PLACE, MPI_BOTTOM/NULL, zero
 * counts, MPI_DATATYPE_NULL, non-contiguous derived datatypes, negative
 * displacements, intercommunicator roots). The PMPI call's result is
 * always what the application sees.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Rust side (src/lib.rs). Tokens are nonzero; 0 means "not registered". */
extern uint64_t rcpmpi_acquire(const void *addr, size_t len);
extern void rcpmpi_release(uint64_t token);
extern void rcpmpi_attach(uintptr_t request, uint64_t token);
extern void rcpmpi_complete(uintptr_t request);
extern size_t rcpmpi_pending(void);
extern void rcpmpi_skipped(void);
extern void rcpmpi_init(int rank);
extern void rcpmpi_finalize(void);

/* Bytes of `count` elements of `dt` at `buf` when they form one contiguous
 * block, else 0 (and counted as skipped when the buffer was real). */
static size_t span(const void *buf, long long count, MPI_Datatype dt)
{
    int size = 0;
    MPI_Aint lb, extent, true_lb, true_extent;
    if (buf == NULL || buf == MPI_IN_PLACE || buf == MPI_BOTTOM || count <= 0 ||
        dt == MPI_DATATYPE_NULL)
        return 0;
    if (PMPI_Type_size(dt, &size) != MPI_SUCCESS || size <= 0)
        return 0;
    if (PMPI_Type_get_extent(dt, &lb, &extent) != MPI_SUCCESS ||
        PMPI_Type_get_true_extent(dt, &true_lb, &true_extent) != MPI_SUCCESS)
        return 0;
    if (true_lb != 0 || true_extent != size || extent != size) {
        rcpmpi_skipped();
        return 0;
    }
    return (size_t)count * (size_t)size;
}

static uint64_t get(const void *buf, long long count, MPI_Datatype dt)
{
    size_t len = span(buf, count, dt);
    return len ? rcpmpi_acquire(buf, len) : 0;
}

/* The hull of the blocks of a v-variant buffer: counts[i] elements at
 * displs[i] elements from buf, i < n. */
static uint64_t getv(const void *buf, const int *counts, const int *displs, MPI_Datatype dt,
                     int n)
{
    long long lo = -1, hi = 0;
    size_t elem;
    if (buf == NULL || buf == MPI_IN_PLACE || counts == NULL || displs == NULL || n <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        if (counts[i] <= 0)
            continue;
        if (displs[i] < 0) {
            rcpmpi_skipped();
            return 0;
        }
        if (lo < 0 || displs[i] < lo)
            lo = displs[i];
        if ((long long)displs[i] + counts[i] > hi)
            hi = (long long)displs[i] + counts[i];
    }
    if (lo < 0)
        return 0;
    elem = span(buf, 1, dt);
    if (!elem)
        return 0;
    return rcpmpi_acquire((const char *)buf + (size_t)lo * elem, (size_t)(hi - lo) * elem);
}

static void put(uint64_t t)
{
    if (t)
        rcpmpi_release(t);
}

/* Rank in an intracommunicator, or -1 for an intercommunicator (roots of
 * intercommunicator collectives are not ranged). */
static int rank_of(MPI_Comm comm, int *size)
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

static void after_init(void)
{
    int rank = 0;
    PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
    rcpmpi_init(rank);
}

int rc_MPI_Init(int *argc, char ***argv)
{
    int rc = PMPI_Init(argc, argv);
    if (rc == MPI_SUCCESS)
        after_init();
    return rc;
}

int rc_MPI_Init_thread(int *argc, char ***argv, int required, int *provided)
{
    int rc = PMPI_Init_thread(argc, argv, required, provided);
    if (rc == MPI_SUCCESS)
        after_init();
    return rc;
}

int rc_MPI_Finalize(void)
{
    rcpmpi_finalize();
    return PMPI_Finalize();
}

/* ---- blocking point-to-point --------------------------------------- */

#define BLOCKING_SEND(NAME)                                                                  \
    int rc_MPI_##NAME(const void *buf, int count, MPI_Datatype dt, int dest, int tag,        \
                      MPI_Comm comm)                                                         \
    {                                                                                        \
        uint64_t t = get(buf, count, dt);                                                    \
        int rc = PMPI_##NAME(buf, count, dt, dest, tag, comm);                               \
        put(t);                                                                              \
        return rc;                                                                           \
    }
BLOCKING_SEND(Send)
BLOCKING_SEND(Ssend)
BLOCKING_SEND(Rsend)
BLOCKING_SEND(Bsend)

int rc_MPI_Recv(void *buf, int count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                MPI_Status *st)
{
    uint64_t t = get(buf, count, dt);
    int rc = PMPI_Recv(buf, count, dt, src, tag, comm, st);
    put(t);
    return rc;
}

int rc_MPI_Sendrecv(const void *sbuf, int scount, MPI_Datatype sdt, int dest, int stag,
                    void *rbuf, int rcount, MPI_Datatype rdt, int src, int rtag, MPI_Comm comm,
                    MPI_Status *st)
{
    uint64_t a = get(sbuf, scount, sdt), b = get(rbuf, rcount, rdt);
    int rc = PMPI_Sendrecv(sbuf, scount, sdt, dest, stag, rbuf, rcount, rdt, src, rtag, comm, st);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Sendrecv_replace(void *buf, int count, MPI_Datatype dt, int dest, int stag, int src,
                            int rtag, MPI_Comm comm, MPI_Status *st)
{
    uint64_t t = get(buf, count, dt);
    int rc = PMPI_Sendrecv_replace(buf, count, dt, dest, stag, src, rtag, comm, st);
    put(t);
    return rc;
}

/* ---- nonblocking point-to-point ------------------------------------ */

static void attach(int rc, MPI_Request *req, uint64_t t)
{
    if (!t)
        return;
    if (rc == MPI_SUCCESS && req != NULL && *req != MPI_REQUEST_NULL)
        rcpmpi_attach((uintptr_t)*req, t);
    else
        rcpmpi_release(t);
}

#define NONBLOCKING_SEND(NAME)                                                               \
    int rc_MPI_##NAME(const void *buf, int count, MPI_Datatype dt, int dest, int tag,        \
                      MPI_Comm comm, MPI_Request *req)                                       \
    {                                                                                        \
        uint64_t t = get(buf, count, dt);                                                    \
        int rc = PMPI_##NAME(buf, count, dt, dest, tag, comm, req);                          \
        attach(rc, req, t);                                                                  \
        return rc;                                                                           \
    }
NONBLOCKING_SEND(Isend)
NONBLOCKING_SEND(Issend)
NONBLOCKING_SEND(Irsend)
NONBLOCKING_SEND(Ibsend)

int rc_MPI_Irecv(void *buf, int count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                 MPI_Request *req)
{
    uint64_t t = get(buf, count, dt);
    int rc = PMPI_Irecv(buf, count, dt, src, tag, comm, req);
    attach(rc, req, t);
    return rc;
}

/* ---- completion ---------------------------------------------------- */
/* A nonpersistent request that completes is set to MPI_REQUEST_NULL: every
 * request that was not NULL before the call and is NULL after it completed
 * (or was freed). Registrations are attached only to nonpersistent
 * requests, so persistent ones never match. */

#define STACK_REQS 64

static MPI_Request *save(int n, const MPI_Request *reqs, MPI_Request *stack)
{
    MPI_Request *old;
    if (n <= 0 || reqs == NULL || rcpmpi_pending() == 0)
        return NULL;
    old = n <= STACK_REQS ? stack : malloc(sizeof(MPI_Request) * (size_t)n);
    if (old != NULL)
        memcpy(old, reqs, sizeof(MPI_Request) * (size_t)n);
    return old;
}

static void completed(int n, const MPI_Request *reqs, MPI_Request *old, MPI_Request *stack)
{
    if (old == NULL)
        return;
    for (int i = 0; i < n; i++)
        if (old[i] != MPI_REQUEST_NULL && reqs[i] == MPI_REQUEST_NULL)
            rcpmpi_complete((uintptr_t)old[i]);
    if (old != stack)
        free(old);
}

#define COMPLETION(NAME, N, REQS, PARAMS, ARGS)                                              \
    int rc_MPI_##NAME PARAMS                                                                 \
    {                                                                                        \
        MPI_Request stack[STACK_REQS];                                                       \
        MPI_Request *old = save((N), (REQS), stack);                                         \
        int rc = PMPI_##NAME ARGS;                                                           \
        completed((N), (REQS), old, stack);                                                  \
        return rc;                                                                           \
    }

COMPLETION(Wait, 1, req, (MPI_Request * req, MPI_Status *st), (req, st))
COMPLETION(Test, 1, req, (MPI_Request * req, int *flag, MPI_Status *st), (req, flag, st))
COMPLETION(Request_free, 1, req, (MPI_Request * req), (req))
COMPLETION(Waitall, n, reqs, (int n, MPI_Request *reqs, MPI_Status *sts), (n, reqs, sts))
COMPLETION(Testall, n, reqs, (int n, MPI_Request *reqs, int *flag, MPI_Status *sts),
           (n, reqs, flag, sts))
COMPLETION(Waitany, n, reqs, (int n, MPI_Request *reqs, int *idx, MPI_Status *st),
           (n, reqs, idx, st))
COMPLETION(Testany, n, reqs, (int n, MPI_Request *reqs, int *idx, int *flag, MPI_Status *st),
           (n, reqs, idx, flag, st))
COMPLETION(Waitsome, n, reqs, (int n, MPI_Request *reqs, int *outn, int *idx, MPI_Status *sts),
           (n, reqs, outn, idx, sts))
COMPLETION(Testsome, n, reqs, (int n, MPI_Request *reqs, int *outn, int *idx, MPI_Status *sts),
           (n, reqs, outn, idx, sts))

/* ---- collectives --------------------------------------------------- */

int rc_MPI_Bcast(void *buf, int count, MPI_Datatype dt, int root, MPI_Comm comm)
{
    uint64_t t = get(buf, count, dt);
    int rc = PMPI_Bcast(buf, count, dt, root, comm);
    put(t);
    return rc;
}

int rc_MPI_Reduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, MPI_Op op, int root,
                  MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = get(sbuf, count, dt), b = rank == root ? get(rbuf, count, dt) : 0;
    int rc = PMPI_Reduce(sbuf, rbuf, count, dt, op, root, comm);
    put(a);
    put(b);
    return rc;
}

#define REDUCE_ALL(NAME)                                                                     \
    int rc_MPI_##NAME(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, MPI_Op op,   \
                      MPI_Comm comm)                                                         \
    {                                                                                        \
        uint64_t a = get(sbuf, count, dt), b = get(rbuf, count, dt);                         \
        int rc = PMPI_##NAME(sbuf, rbuf, count, dt, op, comm);                               \
        put(a);                                                                              \
        put(b);                                                                              \
        return rc;                                                                           \
    }
REDUCE_ALL(Allreduce)
REDUCE_ALL(Scan)
REDUCE_ALL(Exscan)

int rc_MPI_Reduce_scatter_block(const void *sbuf, void *rbuf, int rcount, MPI_Datatype dt,
                                MPI_Op op, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = rank >= 0 ? get(sbuf, (long long)rcount * size, dt) : 0;
    uint64_t b = get(rbuf, rcount, dt);
    int rc = PMPI_Reduce_scatter_block(sbuf, rbuf, rcount, dt, op, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Reduce_scatter(const void *sbuf, void *rbuf, const int *rcounts, MPI_Datatype dt,
                          MPI_Op op, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    long long total = 0;
    uint64_t a = 0, b = 0;
    if (rank >= 0 && rcounts != NULL) {
        for (int i = 0; i < size; i++)
            total += rcounts[i] > 0 ? rcounts[i] : 0;
        a = get(sbuf, total, dt);
        b = get(rbuf, rcounts[rank], dt);
    }
    int rc = PMPI_Reduce_scatter(sbuf, rbuf, rcounts, dt, op, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Gather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                  MPI_Datatype rdt, int root, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = get(sbuf, scount, sdt);
    uint64_t b = rank >= 0 && rank == root ? get(rbuf, (long long)rcount * size, rdt) : 0;
    int rc = PMPI_Gather(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Gatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                   const int *rcounts, const int *displs, MPI_Datatype rdt, int root,
                   MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = get(sbuf, scount, sdt);
    uint64_t b = rank >= 0 && rank == root ? getv(rbuf, rcounts, displs, rdt, size) : 0;
    int rc = PMPI_Gatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Scatter(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                   MPI_Datatype rdt, int root, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = rank >= 0 && rank == root ? get(sbuf, (long long)scount * size, sdt) : 0;
    uint64_t b = get(rbuf, rcount, rdt);
    int rc = PMPI_Scatter(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Scatterv(const void *sbuf, const int *scounts, const int *displs, MPI_Datatype sdt,
                    void *rbuf, int rcount, MPI_Datatype rdt, int root, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = rank >= 0 && rank == root ? getv(sbuf, scounts, displs, sdt, size) : 0;
    uint64_t b = get(rbuf, rcount, rdt);
    int rc = PMPI_Scatterv(sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Allgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                     MPI_Datatype rdt, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = get(sbuf, scount, sdt);
    uint64_t b = rank >= 0 ? get(rbuf, (long long)rcount * size, rdt) : 0;
    int rc = PMPI_Allgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Allgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                      const int *rcounts, const int *displs, MPI_Datatype rdt, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = get(sbuf, scount, sdt);
    uint64_t b = rank >= 0 ? getv(rbuf, rcounts, displs, rdt, size) : 0;
    int rc = PMPI_Allgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Alltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                    MPI_Datatype rdt, MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = rank >= 0 ? get(sbuf, (long long)scount * size, sdt) : 0;
    uint64_t b = rank >= 0 ? get(rbuf, (long long)rcount * size, rdt) : 0;
    int rc = PMPI_Alltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm);
    put(a);
    put(b);
    return rc;
}

int rc_MPI_Alltoallv(const void *sbuf, const int *scounts, const int *sdispls, MPI_Datatype sdt,
                     void *rbuf, const int *rcounts, const int *rdispls, MPI_Datatype rdt,
                     MPI_Comm comm)
{
    int size, rank = rank_of(comm, &size);
    uint64_t a = rank >= 0 ? getv(sbuf, scounts, sdispls, sdt, size) : 0;
    uint64_t b = rank >= 0 ? getv(rbuf, rcounts, rdispls, rdt, size) : 0;
    int rc = PMPI_Alltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm);
    put(a);
    put(b);
    return rc;
}
