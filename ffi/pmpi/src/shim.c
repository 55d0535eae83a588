/* The MPI side of libregcache_pmpi.so.
 *
 * Rust defines the exported MPI_* symbols (a Rust cdylib exports only Rust
 * symbols) and forwards each to the rc_MPI_* function here, which knows the
 * MPI types: it works out which buffers the call moves, asks the cache for
 * a registration of each one at or above REGCACHE_PMPI_MIN_BYTES (as an RDMA
 * MPI does for its rendezvous protocol), calls the PMPI_ entry point, and
 * releases the registrations when the operation completes: at return for
 * blocking calls, in MPI_Wait/Test and friends for nonblocking ones and
 * for each MPI_Start of a persistent request, at MPI_Win_free for window
 * memory, at the flush/unlock/fence that completes them for RMA origin
 * buffers.
 *
 * Never change results, never crash the application: every buffer that
 * cannot be ranged safely is skipped (MPI_IN_PLACE, MPI_BOTTOM/NULL, zero
 * counts, MPI_DATATYPE_NULL, negative extents, spans far larger than the
 * data, intercommunicator roots). The PMPI call's result is always what
 * the application sees.
 */
#define _GNU_SOURCE /* RTLD_NEXT */
#include <dlfcn.h>
#include <mpi.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Rust side (src/lib.rs). Tokens are nonzero; 0 means "not registered". */
extern uint64_t rcpmpi_acquire(const void *addr, size_t len);
extern void rcpmpi_release(uint64_t token);
extern void rcpmpi_keep(int kind, uintptr_t key, uintptr_t sub, uint64_t token);
extern void rcpmpi_complete(int kind, uintptr_t key, uintptr_t sub);
extern void rcpmpi_complete_all(int kind, uintptr_t key);
extern void rcpmpi_persist(uintptr_t request, const void *addr, size_t len);
extern void rcpmpi_start(uintptr_t request);
extern void rcpmpi_moved(uintptr_t old, uintptr_t now);
extern void rcpmpi_freed(uintptr_t request);
extern size_t rcpmpi_pending(void);
extern void rcpmpi_skipped(void);
extern void rcpmpi_init(int rank);
extern void rcpmpi_finalize(void);

/* What keeps a token past its call (rcpmpi_keep's kind). */
#define KIND_REQUEST 0 /* key: the request; released when it completes or is freed */
#define KIND_WINDOW 1  /* key: the window, sub: the base; released at Win_detach/Win_free */
#define KIND_ORIGIN 2  /* key: the window, sub: the target; released at its flush/unlock/fence */

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
static int real(const void *buf)
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

static uint64_t get(const void *buf, long long count, MPI_Datatype dt)
{
    long long lo, hi, bytes;
    if (!real(buf) || !layout(0, count, dt, &lo, &hi, &bytes))
        return 0;
    return get_span(buf, lo, hi, bytes);
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
        if (bytes == 0 || l < lo)
            lo = l;
        if (bytes == 0 || h > hi)
            hi = h;
        bytes += b;
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
        if (bytes == 0 || l < lo)
            lo = l;
        if (bytes == 0 || h > hi)
            hi = h;
        bytes += b;
    }
    return get_span(buf, lo, hi, bytes);
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

/* 1 between a successful MPI_Init (C or Fortran) and MPI_Finalize: the
 * Fortran wrappers convert handles (MPI_*_f2c) only then. */
static int mpi_live;

static void after_init(void)
{
    int rank = 0;
    PMPI_Comm_rank(MPI_COMM_WORLD, &rank);
    rcpmpi_init(rank);
    __atomic_store_n(&mpi_live, 1, __ATOMIC_RELEASE);
}

static void before_finalize(void)
{
    __atomic_store_n(&mpi_live, 0, __ATOMIC_RELEASE);
    rcpmpi_finalize();
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
    before_finalize();
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

/* Keep the tokens of a started nonblocking operation until its request
 * completes; release them at once when it did not start. */
static void attach2(int rc, MPI_Request *req, const uint64_t t[2])
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

static void attach(int rc, MPI_Request *req, uint64_t t)
{
    uint64_t two[2] = {t, 0};
    attach2(rc, req, two);
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

/* ---- matched probe receives ---------------------------------------- */

int rc_MPI_Mrecv(void *buf, int count, MPI_Datatype dt, MPI_Message *msg, MPI_Status *st)
{
    uint64_t t = get(buf, count, dt);
    int rc = PMPI_Mrecv(buf, count, dt, msg, st);
    put(t);
    return rc;
}

int rc_MPI_Imrecv(void *buf, int count, MPI_Datatype dt, MPI_Message *msg, MPI_Request *req)
{
    uint64_t t = get(buf, count, dt);
    int rc = PMPI_Imrecv(buf, count, dt, msg, req);
    attach(rc, req, t);
    return rc;
}

/* Request arrays up to this long are saved on the stack. */
#define STACK_REQS 64

/* ---- persistent requests ------------------------------------------- */
/* As an RDMA MPI does (Open MPI's ob1 runs its send/receive protocol, and
 * so its registration-cache lookup, afresh at each MPI_Start): the buffer
 * is remembered at *_init, registered at each MPI_Start and released when
 * that start completes (MPI_Wait/Test and friends) or at MPI_Request_free.
 * An inactive persistent request holds nothing. */

static void persist(int rc, MPI_Request *req, const void *buf, int count, MPI_Datatype dt)
{
    const char *start = NULL;
    size_t len;
    if (rc != MPI_SUCCESS || req == NULL || *req == MPI_REQUEST_NULL)
        return;
    len = span(buf, count, dt, &start);
    rcpmpi_persist((uintptr_t)*req, start, len);
}

#define PERSISTENT_SEND(NAME)                                                                \
    int rc_MPI_##NAME(const void *buf, int count, MPI_Datatype dt, int dest, int tag,        \
                      MPI_Comm comm, MPI_Request *req)                                       \
    {                                                                                        \
        int rc = PMPI_##NAME(buf, count, dt, dest, tag, comm, req);                          \
        persist(rc, req, buf, count, dt);                                                    \
        return rc;                                                                           \
    }
PERSISTENT_SEND(Send_init)
PERSISTENT_SEND(Ssend_init)
PERSISTENT_SEND(Rsend_init)
PERSISTENT_SEND(Bsend_init)

int rc_MPI_Recv_init(void *buf, int count, MPI_Datatype dt, int src, int tag, MPI_Comm comm,
                     MPI_Request *req)
{
    int rc = PMPI_Recv_init(buf, count, dt, src, tag, comm, req);
    persist(rc, req, buf, count, dt);
    return rc;
}

/* Open MPI's ob1 may hand back a new request from MPI_Start (when the PML
 * still holds the previous start): the remembered buffer moves with it. */
static void started(MPI_Request old, MPI_Request now)
{
    if (now == MPI_REQUEST_NULL)
        return;
    if (now != old && old != MPI_REQUEST_NULL)
        rcpmpi_moved((uintptr_t)old, (uintptr_t)now);
    rcpmpi_start((uintptr_t)now);
}

int rc_MPI_Start(MPI_Request *req)
{
    MPI_Request old = req != NULL ? *req : MPI_REQUEST_NULL;
    int rc = PMPI_Start(req);
    if (rc == MPI_SUCCESS && req != NULL)
        started(old, *req);
    return rc;
}

int rc_MPI_Startall(int n, MPI_Request *reqs)
{
    MPI_Request stack[STACK_REQS], *old = NULL;
    int rc;
    if (n > 0 && reqs != NULL) {
        old = n <= STACK_REQS ? stack : malloc(sizeof(MPI_Request) * (size_t)n);
        if (old != NULL)
            memcpy(old, reqs, sizeof(MPI_Request) * (size_t)n);
    }
    rc = PMPI_Startall(n, reqs);
    if (rc == MPI_SUCCESS && reqs != NULL)
        for (int i = 0; i < n; i++)
            started(old != NULL ? old[i] : reqs[i], reqs[i]);
    if (old != stack)
        free(old);
    return rc;
}

/* ---- completion ---------------------------------------------------- */
/* A request's registrations are released when it completes. The handles
 * are saved before the call because a nonpersistent request that completes
 * is set to MPI_REQUEST_NULL. Request i completed when it was not NULL
 * before and is after (nonpersistent), or when the call says so: MPI_Wait
 * and MPI_Waitall returned MPI_SUCCESS, MPI_Test/Testall set the flag,
 * MPI_Waitany/Testany returned its index, MPI_Waitsome/Testsome listed it
 * (persistent requests stay non-NULL). Statuses are never read, so
 * MPI_STATUS(ES)_IGNORE is fine. A cancelled request completes the same
 * way (MPI_Cancel itself is not wrapped). */

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

static void done(const MPI_Request *old, int i)
{
    if (old[i] != MPI_REQUEST_NULL)
        rcpmpi_complete(KIND_REQUEST, (uintptr_t)old[i], 0);
}

/* `all`: every request completed; `one`: index of the one that did (or
 * MPI_UNDEFINED/-1); `some`/`idx`: the list of those that did. */
static void completed(int n, const MPI_Request *reqs, MPI_Request *old, MPI_Request *stack,
                      int all, int one, const int *some, const int *idx)
{
    if (old == NULL)
        return;
    for (int i = 0; i < n; i++)
        if (all || (reqs[i] == MPI_REQUEST_NULL))
            done(old, i);
    if (one >= 0 && one < n)
        done(old, one);
    if (some != NULL && idx != NULL && *some != MPI_UNDEFINED)
        for (int k = 0; k < *some && k < n; k++)
            if (idx[k] >= 0 && idx[k] < n)
                done(old, idx[k]);
    if (old != stack)
        free(old);
}

#define COMPLETION(NAME, N, REQS, PARAMS, ARGS, ALL, ONE, SOME, IDX)                         \
    int rc_MPI_##NAME PARAMS                                                                 \
    {                                                                                        \
        MPI_Request stack[STACK_REQS];                                                       \
        MPI_Request *old = save((N), (REQS), stack);                                         \
        int rc = PMPI_##NAME ARGS;                                                           \
        completed((N), (REQS), old, stack, (ALL), (ONE), (SOME), (IDX));                     \
        return rc;                                                                           \
    }

#define OK (rc == MPI_SUCCESS)
#define FLAG (rc == MPI_SUCCESS && flag != NULL && *flag)
#define INDEX (rc == MPI_SUCCESS && idx != NULL ? *idx : -1)
COMPLETION(Wait, 1, req, (MPI_Request * req, MPI_Status *st), (req, st), OK, -1, NULL, NULL)
COMPLETION(Test, 1, req, (MPI_Request * req, int *flag, MPI_Status *st), (req, flag, st), FLAG,
           -1, NULL, NULL)
COMPLETION(Waitall, n, reqs, (int n, MPI_Request *reqs, MPI_Status *sts), (n, reqs, sts), OK,
           -1, NULL, NULL)
COMPLETION(Testall, n, reqs, (int n, MPI_Request *reqs, int *flag, MPI_Status *sts),
           (n, reqs, flag, sts), FLAG, -1, NULL, NULL)
COMPLETION(Waitany, n, reqs, (int n, MPI_Request *reqs, int *idx, MPI_Status *st),
           (n, reqs, idx, st), 0, INDEX, NULL, NULL)
COMPLETION(Testany, n, reqs, (int n, MPI_Request *reqs, int *idx, int *flag, MPI_Status *st),
           (n, reqs, idx, flag, st), 0, FLAG ? INDEX : -1, NULL, NULL)
COMPLETION(Waitsome, n, reqs, (int n, MPI_Request *reqs, int *outn, int *idx, MPI_Status *sts),
           (n, reqs, outn, idx, sts), 0, -1, rc == MPI_SUCCESS ? outn : NULL, idx)
COMPLETION(Testsome, n, reqs, (int n, MPI_Request *reqs, int *outn, int *idx, MPI_Status *sts),
           (n, reqs, outn, idx, sts), 0, -1, rc == MPI_SUCCESS ? outn : NULL, idx)
#undef OK
#undef FLAG
#undef INDEX

/* A freed request (active or not, persistent or not) releases what it
 * holds at once: the application gave up the means to learn when it ends. */
int rc_MPI_Request_free(MPI_Request *req)
{
    MPI_Request old = req != NULL ? *req : MPI_REQUEST_NULL;
    int rc = PMPI_Request_free(req);
    if (rc == MPI_SUCCESS && old != MPI_REQUEST_NULL)
        rcpmpi_freed((uintptr_t)old);
    return rc;
}

/* ---- collectives --------------------------------------------------- */
/* Each collective's buffers are worked out once (REGS_*), then either
 * released at return (blocking) or kept on the request (nonblocking). */

#define BLOCKING(REGS, CALL)                                                                 \
    {                                                                                        \
        uint64_t t[2] = {0, 0};                                                              \
        REGS;                                                                                \
        int rc = CALL;                                                                       \
        put(t[0]);                                                                           \
        put(t[1]);                                                                           \
        return rc;                                                                           \
    }
#define NONBLOCKING(REGS, CALL)                                                              \
    {                                                                                        \
        uint64_t t[2] = {0, 0};                                                              \
        REGS;                                                                                \
        int rc = CALL;                                                                       \
        attach2(rc, req, t);                                                                 \
        return rc;                                                                           \
    }

/* In an intercommunicator's root group the root passes MPI_ROOT and the
 * others MPI_PROC_NULL; MPI ignores the root's send buffer of a gather or
 * reduce (its receive buffer of a scatter) and every buffer of the others:
 * they may be garbage, so they are not ranged. */
static int ignored_root(int root)
{
    return root == MPI_ROOT || root == MPI_PROC_NULL;
}

static void regs_bcast(void *buf, int count, MPI_Datatype dt, int root, uint64_t t[2])
{
    t[0] = root == MPI_PROC_NULL ? 0 : get(buf, count, dt);
}

static void regs_reduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, int root,
                        MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = ignored_root(root) ? 0 : get(sbuf, count, dt);
    t[1] = rank >= 0 && rank == root ? get(rbuf, count, dt) : 0;
}

static void regs_allreduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt,
                           uint64_t t[2])
{
    t[0] = get(sbuf, count, dt);
    t[1] = get(rbuf, count, dt);
}

static void regs_rsb(const void *sbuf, void *rbuf, int rcount, MPI_Datatype dt, MPI_Comm comm,
                     uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? get(sbuf, (long long)rcount * size, dt) : 0;
    t[1] = get(rbuf, rcount, dt);
}

static void regs_rs(const void *sbuf, void *rbuf, const int *rcounts, MPI_Datatype dt,
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

static void regs_gather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                        MPI_Datatype rdt, int root, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = ignored_root(root) ? 0 : get(sbuf, scount, sdt);
    t[1] = rank >= 0 && rank == root ? get(rbuf, (long long)rcount * size, rdt) : 0;
}

static void regs_gatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                         const int *rcounts, const int *displs, MPI_Datatype rdt, int root,
                         MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = ignored_root(root) ? 0 : get(sbuf, scount, sdt);
    t[1] = rank >= 0 && rank == root ? getv(rbuf, rcounts, displs, rdt, size) : 0;
}

static void regs_scatter(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                         MPI_Datatype rdt, int root, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 && rank == root ? get(sbuf, (long long)scount * size, sdt) : 0;
    t[1] = ignored_root(root) ? 0 : get(rbuf, rcount, rdt);
}

static void regs_scatterv(const void *sbuf, const int *scounts, const int *displs,
                          MPI_Datatype sdt, void *rbuf, int rcount, MPI_Datatype rdt, int root,
                          MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 && rank == root ? getv(sbuf, scounts, displs, sdt, size) : 0;
    t[1] = ignored_root(root) ? 0 : get(rbuf, rcount, rdt);
}

static void regs_allgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                           int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = get(sbuf, scount, sdt);
    t[1] = rank >= 0 ? get(rbuf, (long long)rcount * size, rdt) : 0;
}

static void regs_allgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                            const int *rcounts, const int *displs, MPI_Datatype rdt,
                            MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = get(sbuf, scount, sdt);
    t[1] = rank >= 0 ? getv(rbuf, rcounts, displs, rdt, size) : 0;
}

static void regs_alltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                          int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? get(sbuf, (long long)scount * size, sdt) : 0;
    t[1] = rank >= 0 ? get(rbuf, (long long)rcount * size, rdt) : 0;
}

static void regs_alltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                           MPI_Datatype sdt, void *rbuf, const int *rcounts,
                           const int *rdispls, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? getv(sbuf, scounts, sdispls, sdt, size) : 0;
    t[1] = rank >= 0 ? getv(rbuf, rcounts, rdispls, rdt, size) : 0;
}

static void regs_alltoallw(const void *sbuf, const int *scounts, const int *sdispls,
                           const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                           const int *rdispls, const MPI_Datatype *rdts, MPI_Comm comm,
                           uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    t[0] = rank >= 0 ? getw(sbuf, scounts, sdispls, NULL, sdts, size) : 0;
    t[1] = rank >= 0 ? getw(rbuf, rcounts, rdispls, NULL, rdts, size) : 0;
}

int rc_MPI_Bcast(void *buf, int count, MPI_Datatype dt, int root, MPI_Comm comm)
    BLOCKING(regs_bcast(buf, count, dt, root, t), PMPI_Bcast(buf, count, dt, root, comm))
int rc_MPI_Ibcast(void *buf, int count, MPI_Datatype dt, int root, MPI_Comm comm,
                  MPI_Request *req)
    NONBLOCKING(regs_bcast(buf, count, dt, root, t), PMPI_Ibcast(buf, count, dt, root, comm, req))

int rc_MPI_Reduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, MPI_Op op, int root,
                  MPI_Comm comm)
    BLOCKING(regs_reduce(sbuf, rbuf, count, dt, root, comm, t),
             PMPI_Reduce(sbuf, rbuf, count, dt, op, root, comm))
int rc_MPI_Ireduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, MPI_Op op,
                   int root, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_reduce(sbuf, rbuf, count, dt, root, comm, t),
                PMPI_Ireduce(sbuf, rbuf, count, dt, op, root, comm, req))

#define REDUCE_ALL(NAME, INAME)                                                              \
    int rc_MPI_##NAME(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, MPI_Op op,   \
                      MPI_Comm comm)                                                         \
        BLOCKING(regs_allreduce(sbuf, rbuf, count, dt, t),                                   \
                 PMPI_##NAME(sbuf, rbuf, count, dt, op, comm))                               \
    int rc_MPI_##INAME(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, MPI_Op op,  \
                       MPI_Comm comm, MPI_Request *req)                                      \
        NONBLOCKING(regs_allreduce(sbuf, rbuf, count, dt, t),                                \
                    PMPI_##INAME(sbuf, rbuf, count, dt, op, comm, req))
REDUCE_ALL(Allreduce, Iallreduce)
REDUCE_ALL(Scan, Iscan)
REDUCE_ALL(Exscan, Iexscan)

int rc_MPI_Reduce_scatter_block(const void *sbuf, void *rbuf, int rcount, MPI_Datatype dt,
                                MPI_Op op, MPI_Comm comm)
    BLOCKING(regs_rsb(sbuf, rbuf, rcount, dt, comm, t),
             PMPI_Reduce_scatter_block(sbuf, rbuf, rcount, dt, op, comm))
int rc_MPI_Ireduce_scatter_block(const void *sbuf, void *rbuf, int rcount, MPI_Datatype dt,
                                 MPI_Op op, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_rsb(sbuf, rbuf, rcount, dt, comm, t),
                PMPI_Ireduce_scatter_block(sbuf, rbuf, rcount, dt, op, comm, req))

int rc_MPI_Reduce_scatter(const void *sbuf, void *rbuf, const int *rcounts, MPI_Datatype dt,
                          MPI_Op op, MPI_Comm comm)
    BLOCKING(regs_rs(sbuf, rbuf, rcounts, dt, comm, t),
             PMPI_Reduce_scatter(sbuf, rbuf, rcounts, dt, op, comm))
int rc_MPI_Ireduce_scatter(const void *sbuf, void *rbuf, const int *rcounts, MPI_Datatype dt,
                           MPI_Op op, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_rs(sbuf, rbuf, rcounts, dt, comm, t),
                PMPI_Ireduce_scatter(sbuf, rbuf, rcounts, dt, op, comm, req))

int rc_MPI_Gather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                  MPI_Datatype rdt, int root, MPI_Comm comm)
    BLOCKING(regs_gather(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, t),
             PMPI_Gather(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm))
int rc_MPI_Igather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                   MPI_Datatype rdt, int root, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_gather(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, t),
                PMPI_Igather(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, req))

int rc_MPI_Gatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                   const int *rcounts, const int *displs, MPI_Datatype rdt, int root,
                   MPI_Comm comm)
    BLOCKING(regs_gatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm, t),
             PMPI_Gatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm))
int rc_MPI_Igatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                    const int *rcounts, const int *displs, MPI_Datatype rdt, int root,
                    MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_gatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm, t),
                PMPI_Igatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm, req))

int rc_MPI_Scatter(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                   MPI_Datatype rdt, int root, MPI_Comm comm)
    BLOCKING(regs_scatter(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, t),
             PMPI_Scatter(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm))
int rc_MPI_Iscatter(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                    MPI_Datatype rdt, int root, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_scatter(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, t),
                PMPI_Iscatter(sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, req))

int rc_MPI_Scatterv(const void *sbuf, const int *scounts, const int *displs, MPI_Datatype sdt,
                    void *rbuf, int rcount, MPI_Datatype rdt, int root, MPI_Comm comm)
    BLOCKING(regs_scatterv(sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm, t),
             PMPI_Scatterv(sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm))
int rc_MPI_Iscatterv(const void *sbuf, const int *scounts, const int *displs, MPI_Datatype sdt,
                     void *rbuf, int rcount, MPI_Datatype rdt, int root, MPI_Comm comm,
                     MPI_Request *req)
    NONBLOCKING(regs_scatterv(sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm, t),
                PMPI_Iscatterv(sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm, req))

int rc_MPI_Allgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                     MPI_Datatype rdt, MPI_Comm comm)
    BLOCKING(regs_allgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
             PMPI_Allgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm))
int rc_MPI_Iallgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                      MPI_Datatype rdt, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_allgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
                PMPI_Iallgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm, req))

int rc_MPI_Allgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                      const int *rcounts, const int *displs, MPI_Datatype rdt, MPI_Comm comm)
    BLOCKING(regs_allgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, t),
             PMPI_Allgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm))
int rc_MPI_Iallgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                       const int *rcounts, const int *displs, MPI_Datatype rdt, MPI_Comm comm,
                       MPI_Request *req)
    NONBLOCKING(regs_allgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, t),
                PMPI_Iallgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, req))

int rc_MPI_Alltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                    MPI_Datatype rdt, MPI_Comm comm)
    BLOCKING(regs_alltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
             PMPI_Alltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm))
int rc_MPI_Ialltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf, int rcount,
                     MPI_Datatype rdt, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_alltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
                PMPI_Ialltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm, req))

int rc_MPI_Alltoallv(const void *sbuf, const int *scounts, const int *sdispls, MPI_Datatype sdt,
                     void *rbuf, const int *rcounts, const int *rdispls, MPI_Datatype rdt,
                     MPI_Comm comm)
    BLOCKING(regs_alltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm, t),
             PMPI_Alltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm))
int rc_MPI_Ialltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                      MPI_Datatype sdt, void *rbuf, const int *rcounts, const int *rdispls,
                      MPI_Datatype rdt, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_alltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm,
                               t),
                PMPI_Ialltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm,
                                req))

int rc_MPI_Alltoallw(const void *sbuf, const int *scounts, const int *sdispls,
                     const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                     const int *rdispls, const MPI_Datatype *rdts, MPI_Comm comm)
    BLOCKING(regs_alltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm,
                            t),
             PMPI_Alltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm))
int rc_MPI_Ialltoallw(const void *sbuf, const int *scounts, const int *sdispls,
                      const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                      const int *rdispls, const MPI_Datatype *rdts, MPI_Comm comm,
                      MPI_Request *req)
    NONBLOCKING(regs_alltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts,
                               comm, t),
                PMPI_Ialltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts,
                                comm, req))

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

static void regs_nallgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                            int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = out > 0 ? get(sbuf, scount, sdt) : 0;
    t[1] = get(rbuf, (long long)rcount * in, rdt);
}

static void regs_nallgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                             const int *rcounts, const int *displs, MPI_Datatype rdt,
                             MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = out > 0 ? get(sbuf, scount, sdt) : 0;
    t[1] = getv(rbuf, rcounts, displs, rdt, in);
}

static void regs_nalltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                           int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = get(sbuf, (long long)scount * out, sdt);
    t[1] = get(rbuf, (long long)rcount * in, rdt);
}

static void regs_nalltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                            MPI_Datatype sdt, void *rbuf, const int *rcounts,
                            const int *rdispls, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2])
{
    int in, out;
    if (!neighbors(comm, &in, &out))
        return;
    t[0] = getv(sbuf, scounts, sdispls, sdt, out);
    t[1] = getv(rbuf, rcounts, rdispls, rdt, in);
}

static void regs_nalltoallw(const void *sbuf, const int *scounts, const MPI_Aint *sdispls,
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

int rc_MPI_Neighbor_allgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                              int rcount, MPI_Datatype rdt, MPI_Comm comm)
    BLOCKING(regs_nallgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
             PMPI_Neighbor_allgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm))
int rc_MPI_Ineighbor_allgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                               int rcount, MPI_Datatype rdt, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_nallgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
                PMPI_Ineighbor_allgather(sbuf, scount, sdt, rbuf, rcount, rdt, comm, req))

int rc_MPI_Neighbor_allgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                               const int *rcounts, const int *displs, MPI_Datatype rdt,
                               MPI_Comm comm)
    BLOCKING(regs_nallgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, t),
             PMPI_Neighbor_allgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm))
int rc_MPI_Ineighbor_allgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                                const int *rcounts, const int *displs, MPI_Datatype rdt,
                                MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_nallgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, t),
                PMPI_Ineighbor_allgatherv(sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm,
                                          req))

int rc_MPI_Neighbor_alltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                             int rcount, MPI_Datatype rdt, MPI_Comm comm)
    BLOCKING(regs_nalltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
             PMPI_Neighbor_alltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm))
int rc_MPI_Ineighbor_alltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                              int rcount, MPI_Datatype rdt, MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_nalltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm, t),
                PMPI_Ineighbor_alltoall(sbuf, scount, sdt, rbuf, rcount, rdt, comm, req))

int rc_MPI_Neighbor_alltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                              MPI_Datatype sdt, void *rbuf, const int *rcounts,
                              const int *rdispls, MPI_Datatype rdt, MPI_Comm comm)
    BLOCKING(regs_nalltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm, t),
             PMPI_Neighbor_alltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt,
                                     comm))
int rc_MPI_Ineighbor_alltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                               MPI_Datatype sdt, void *rbuf, const int *rcounts,
                               const int *rdispls, MPI_Datatype rdt, MPI_Comm comm,
                               MPI_Request *req)
    NONBLOCKING(regs_nalltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm,
                                t),
                PMPI_Ineighbor_alltoallv(sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls,
                                         rdt, comm, req))

int rc_MPI_Neighbor_alltoallw(const void *sbuf, const int *scounts, const MPI_Aint *sdispls,
                              const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                              const MPI_Aint *rdispls, const MPI_Datatype *rdts, MPI_Comm comm)
    BLOCKING(regs_nalltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm,
                             t),
             PMPI_Neighbor_alltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts,
                                     comm))
int rc_MPI_Ineighbor_alltoallw(const void *sbuf, const int *scounts, const MPI_Aint *sdispls,
                               const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                               const MPI_Aint *rdispls, const MPI_Datatype *rdts,
                               MPI_Comm comm, MPI_Request *req)
    NONBLOCKING(regs_nalltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts,
                                comm, t),
                PMPI_Ineighbor_alltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls,
                                         rdts, comm, req))

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

int rc_MPI_Win_create(void *base, MPI_Aint size, int disp_unit, MPI_Info info, MPI_Comm comm,
                      MPI_Win *win)
{
    uint64_t t = real(base) && size > 0 ? rcpmpi_acquire(base, (size_t)size) : 0;
    int rc = PMPI_Win_create(base, size, disp_unit, info, comm, win);
    if (rc == MPI_SUCCESS && win != NULL && *win != MPI_WIN_NULL)
        rcpmpi_keep(KIND_WINDOW, (uintptr_t)*win, 0, t);
    else
        put(t);
    return rc;
}

int rc_MPI_Win_allocate(MPI_Aint size, int disp_unit, MPI_Info info, MPI_Comm comm,
                        void *baseptr, MPI_Win *win)
{
    int rc = PMPI_Win_allocate(size, disp_unit, info, comm, baseptr, win);
    if (rc == MPI_SUCCESS && win != NULL && *win != MPI_WIN_NULL && baseptr != NULL &&
        size > 0) {
        void *base = *(void **)baseptr;
        if (real(base))
            rcpmpi_keep(KIND_WINDOW, (uintptr_t)*win, 0, rcpmpi_acquire(base, (size_t)size));
    }
    return rc;
}

int rc_MPI_Win_attach(MPI_Win win, void *base, MPI_Aint size)
{
    int rc = PMPI_Win_attach(win, base, size);
    if (rc == MPI_SUCCESS && real(base) && size > 0)
        rcpmpi_keep(KIND_WINDOW, (uintptr_t)win, (uintptr_t)base,
                    rcpmpi_acquire(base, (size_t)size));
    return rc;
}

int rc_MPI_Win_detach(MPI_Win win, const void *base)
{
    int rc = PMPI_Win_detach(win, base);
    if (rc == MPI_SUCCESS)
        rcpmpi_complete(KIND_WINDOW, (uintptr_t)win, (uintptr_t)base);
    return rc;
}

int rc_MPI_Win_free(MPI_Win *win)
{
    MPI_Win old = win != NULL ? *win : MPI_WIN_NULL;
    int rc = PMPI_Win_free(win);
    if (rc == MPI_SUCCESS && old != MPI_WIN_NULL) {
        rcpmpi_complete_all(KIND_ORIGIN, (uintptr_t)old);
        rcpmpi_complete_all(KIND_WINDOW, (uintptr_t)old);
    }
    return rc;
}

#define SYNC_ALL(NAME, PARAMS, ARGS)                                                         \
    int rc_MPI_##NAME PARAMS                                                                 \
    {                                                                                        \
        int rc = PMPI_##NAME ARGS;                                                           \
        if (rc == MPI_SUCCESS)                                                               \
            rcpmpi_complete_all(KIND_ORIGIN, (uintptr_t)win);                                \
        return rc;                                                                           \
    }
SYNC_ALL(Win_fence, (int assert, MPI_Win win), (assert, win))
SYNC_ALL(Win_complete, (MPI_Win win), (win))
SYNC_ALL(Win_unlock_all, (MPI_Win win), (win))
SYNC_ALL(Win_flush_all, (MPI_Win win), (win))
SYNC_ALL(Win_flush_local_all, (MPI_Win win), (win))

#define SYNC_ONE(NAME)                                                                       \
    int rc_MPI_##NAME(int target, MPI_Win win)                                               \
    {                                                                                        \
        int rc = PMPI_##NAME(target, win);                                                   \
        if (rc == MPI_SUCCESS)                                                               \
            rcpmpi_complete(KIND_ORIGIN, (uintptr_t)win, (uintptr_t)target);                 \
        return rc;                                                                           \
    }
SYNC_ONE(Win_unlock)
SYNC_ONE(Win_flush)
SYNC_ONE(Win_flush_local)

/* An origin buffer kept until its target is synchronized. */
static void origin(int rc, MPI_Win win, int target, uint64_t t)
{
    if (rc == MPI_SUCCESS && win != MPI_WIN_NULL && target >= 0)
        rcpmpi_keep(KIND_ORIGIN, (uintptr_t)win, (uintptr_t)target, t);
    else
        put(t);
}

int rc_MPI_Put(const void *obuf, int ocount, MPI_Datatype odt, int target, MPI_Aint tdisp,
               int tcount, MPI_Datatype tdt, MPI_Win win)
{
    uint64_t t = get(obuf, ocount, odt);
    int rc = PMPI_Put(obuf, ocount, odt, target, tdisp, tcount, tdt, win);
    origin(rc, win, target, t);
    return rc;
}

int rc_MPI_Get(void *obuf, int ocount, MPI_Datatype odt, int target, MPI_Aint tdisp, int tcount,
               MPI_Datatype tdt, MPI_Win win)
{
    uint64_t t = get(obuf, ocount, odt);
    int rc = PMPI_Get(obuf, ocount, odt, target, tdisp, tcount, tdt, win);
    origin(rc, win, target, t);
    return rc;
}

int rc_MPI_Accumulate(const void *obuf, int ocount, MPI_Datatype odt, int target,
                      MPI_Aint tdisp, int tcount, MPI_Datatype tdt, MPI_Op op, MPI_Win win)
{
    uint64_t t = get(obuf, ocount, odt);
    int rc = PMPI_Accumulate(obuf, ocount, odt, target, tdisp, tcount, tdt, op, win);
    origin(rc, win, target, t);
    return rc;
}

int rc_MPI_Get_accumulate(const void *obuf, int ocount, MPI_Datatype odt, void *rbuf,
                          int rcount, MPI_Datatype rdt, int target, MPI_Aint tdisp, int tcount,
                          MPI_Datatype tdt, MPI_Op op, MPI_Win win)
{
    uint64_t a = get(obuf, ocount, odt), b = get(rbuf, rcount, rdt);
    int rc = PMPI_Get_accumulate(obuf, ocount, odt, rbuf, rcount, rdt, target, tdisp, tcount,
                                 tdt, op, win);
    origin(rc, win, target, a);
    origin(rc, win, target, b);
    return rc;
}

int rc_MPI_Rput(const void *obuf, int ocount, MPI_Datatype odt, int target, MPI_Aint tdisp,
                int tcount, MPI_Datatype tdt, MPI_Win win, MPI_Request *req)
{
    uint64_t t = get(obuf, ocount, odt);
    int rc = PMPI_Rput(obuf, ocount, odt, target, tdisp, tcount, tdt, win, req);
    attach(rc, req, t);
    return rc;
}

int rc_MPI_Rget(void *obuf, int ocount, MPI_Datatype odt, int target, MPI_Aint tdisp,
                int tcount, MPI_Datatype tdt, MPI_Win win, MPI_Request *req)
{
    uint64_t t = get(obuf, ocount, odt);
    int rc = PMPI_Rget(obuf, ocount, odt, target, tdisp, tcount, tdt, win, req);
    attach(rc, req, t);
    return rc;
}

int rc_MPI_Raccumulate(const void *obuf, int ocount, MPI_Datatype odt, int target,
                       MPI_Aint tdisp, int tcount, MPI_Datatype tdt, MPI_Op op, MPI_Win win,
                       MPI_Request *req)
{
    uint64_t t = get(obuf, ocount, odt);
    int rc = PMPI_Raccumulate(obuf, ocount, odt, target, tdisp, tcount, tdt, op, win, req);
    attach(rc, req, t);
    return rc;
}

int rc_MPI_Rget_accumulate(const void *obuf, int ocount, MPI_Datatype odt, void *rbuf,
                           int rcount, MPI_Datatype rdt, int target, MPI_Aint tdisp,
                           int tcount, MPI_Datatype tdt, MPI_Op op, MPI_Win win,
                           MPI_Request *req)
{
    uint64_t t[2] = {get(obuf, ocount, odt), get(rbuf, rcount, rdt)};
    int rc = PMPI_Rget_accumulate(obuf, ocount, odt, rbuf, rcount, rdt, target, tdisp, tcount,
                                  tdt, op, win, req);
    attach2(rc, req, t);
    return rc;
}

/* ---- Fortran bindings (mpif.h, use mpi) ---------------------------- */
/* Open MPI's Fortran bindings (libmpi_mpifh: mpi_send_ and its other
 * manglings, which the `use mpi` module's interfaces also name) convert
 * their arguments and call the PMPI_ C entry points directly, so the C
 * wrappers above never see a Fortran program. These rcf_* functions, which
 * src/lib.rs exports under the four manglings Open MPI defines (mpi_send_,
 * mpi_send, mpi_send__, MPI_SEND), do the same work from the Fortran
 * arguments: handles go through MPI_*_f2c, counts are MPI_Fint, MPI_BOTTOM
 * and MPI_IN_PLACE are the addresses of Open MPI's common blocks. The call
 * itself goes to the Fortran profiling entry (pmpi_send_, found with
 * dlsym(RTLD_NEXT)), so Open MPI does its own conversion and writes ierr;
 * registrations are released or kept exactly as on the C path, nonblocking
 * ones keyed by the C request that MPI_Request_f2c gives for the returned
 * Fortran request.
 *
 * The mpi_f08 bindings (libmpi_usempif08) call Open MPI's internal
 * ompi_*_f functions directly, not these symbols: not covered.
 *
 * Handles are converted only between MPI_Init and MPI_Finalize (mpi_live;
 * the f2c functions need MPI running); an invalid Fortran handle converts
 * to NULL, taken as the null handle, so the buffer is skipped and Open
 * MPI's own wrapper reports the error. */

/* The Fortran MPI_BOTTOM and MPI_IN_PLACE: the common blocks
 * mpi_fortran_bottom and mpi_fortran_in_place. A gfortran program defines
 * (and exports) its own copy, which the dynamic linker makes the one Open
 * MPI compares with, so dlsym(RTLD_DEFAULT) finds the same address. Every
 * mangling is looked up; an absent one is NULL, which real() skips
 * anyway. */
#define FSENTINELS 8
static const void *fsentinel[FSENTINELS];
static pthread_once_t fsentinel_once = PTHREAD_ONCE_INIT;

static void fsentinel_resolve(void)
{
    static const char *const names[FSENTINELS] = {
        "mpi_fortran_bottom_",   "mpi_fortran_bottom",   "mpi_fortran_bottom__",
        "MPI_FORTRAN_BOTTOM",    "mpi_fortran_in_place_", "mpi_fortran_in_place",
        "mpi_fortran_in_place__", "MPI_FORTRAN_IN_PLACE",
    };
    for (int i = 0; i < FSENTINELS; i++)
        fsentinel[i] = dlsym(RTLD_DEFAULT, names[i]);
}

/* A Fortran buffer as the C helpers take it: NULL (skipped) for the
 * Fortran MPI_BOTTOM and MPI_IN_PLACE. */
static const void *fbuf(const void *buf)
{
    pthread_once(&fsentinel_once, fsentinel_resolve);
    for (int i = 0; i < FSENTINELS; i++)
        if (fsentinel[i] != NULL && buf == fsentinel[i])
            return NULL;
    return buf;
}

static int flive(void)
{
    return __atomic_load_n(&mpi_live, __ATOMIC_ACQUIRE);
}

static int fint(const MPI_Fint *f)
{
    return f != NULL ? (int)*f : 0;
}

/* An INTEGER array as the C helpers' int array (NULL, so skipped, if the
 * Fortran INTEGER is not a C int). */
static const int *fints(const MPI_Fint *f)
{
    return sizeof(MPI_Fint) == sizeof(int) ? (const int *)f : NULL;
}

static MPI_Datatype ftype(const MPI_Fint *f)
{
    MPI_Datatype d = f != NULL ? PMPI_Type_f2c(*f) : MPI_DATATYPE_NULL;
    return d != NULL ? d : MPI_DATATYPE_NULL;
}

static MPI_Comm fcomm(const MPI_Fint *f)
{
    MPI_Comm c = f != NULL ? PMPI_Comm_f2c(*f) : MPI_COMM_NULL;
    return c != NULL ? c : MPI_COMM_NULL;
}

static MPI_Request freq(MPI_Fint f)
{
    MPI_Request r = PMPI_Request_f2c(f);
    return r != NULL ? r : MPI_REQUEST_NULL;
}

/* `n` Fortran datatypes as a malloc'd C array (NULL when it cannot be). */
static MPI_Datatype *ftypes(const MPI_Fint *f, int n)
{
    MPI_Datatype *c;
    if (f == NULL || n <= 0 || (c = malloc(sizeof(MPI_Datatype) * (size_t)n)) == NULL)
        return NULL;
    for (int i = 0; i < n; i++)
        c[i] = ftype(&f[i]);
    return c;
}

/* The Fortran call succeeded (Open MPI's wrapper wrote ierr). */
static int fok(const MPI_Fint *ierr)
{
    return ierr != NULL && *ierr == MPI_SUCCESS;
}

/* The next definition of a Fortran entry point: the profiling one
 * (pmpi_send_), else the plain one after this library (mpi_send_), cached. */
static void *fnext(void **slot, const char *pname, const char *name)
{
    void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (f == NULL) {
        f = dlsym(RTLD_NEXT, pname);
        if (f == NULL)
            f = dlsym(RTLD_NEXT, name);
        if (f == NULL) {
            static const char msg[] = "regcache-pmpi: a Fortran MPI entry point has no "
                                      "profiling definition: the call returns MPI_ERR_INTERN\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
        }
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

/* Call Open MPI's Fortran entry NAME with PARAMS types and ARGS (the last
 * of which is ierr). Without one (it cannot happen: the application called
 * NAME from a Fortran MPI library) ierr says MPI_ERR_INTERN. */
#define FCALL(NAME, PARAMS, ARGS)                                                            \
    do {                                                                                     \
        static void *slot;                                                                   \
        void (*f) PARAMS = (void (*) PARAMS)fnext(&slot, "pmpi_" #NAME "_", "mpi_" #NAME "_"); \
        if (f != NULL)                                                                       \
            f ARGS;                                                                          \
        else if (ierr != NULL)                                                               \
            *ierr = MPI_ERR_INTERN;                                                          \
    } while (0)

/* Keep the tokens of a started nonblocking operation on the C request of
 * the Fortran request it returned; release them when it did not start. */
static void fattach2(const MPI_Fint *ierr, const MPI_Fint *req, const uint64_t t[2])
{
    MPI_Request c = MPI_REQUEST_NULL;
    if ((t[0] || t[1]) && fok(ierr) && req != NULL && flive())
        c = freq(*req);
    attach2(c != MPI_REQUEST_NULL ? MPI_SUCCESS : MPI_ERR_REQUEST, &c, t);
}

typedef MPI_Fint F; /* pointer arguments below are all MPI_Fint * but buffers */

/* -- init / finalize -- */

void rcf_init(F *ierr)
{
    FCALL(init, (F *), (ierr));
    if (fok(ierr))
        after_init();
}

void rcf_init_thread(F *required, F *provided, F *ierr)
{
    FCALL(init_thread, (F *, F *, F *), (required, provided, ierr));
    if (fok(ierr))
        after_init();
}

void rcf_finalize(F *ierr)
{
    before_finalize();
    FCALL(finalize, (F *), (ierr));
}

/* -- point-to-point -- */

#define FBLOCKING_SEND(NAME)                                                                 \
    void rcf_##NAME(void *buf, F *count, F *dt, F *dest, F *tag, F *comm, F *ierr)           \
    {                                                                                        \
        uint64_t t = flive() ? get(fbuf(buf), fint(count), ftype(dt)) : 0;                    \
        FCALL(NAME, (void *, F *, F *, F *, F *, F *, F *),                                  \
              (buf, count, dt, dest, tag, comm, ierr));                                      \
        put(t);                                                                              \
    }
FBLOCKING_SEND(send)
FBLOCKING_SEND(ssend)
FBLOCKING_SEND(rsend)
FBLOCKING_SEND(bsend)

void rcf_recv(void *buf, F *count, F *dt, F *src, F *tag, F *comm, F *st, F *ierr)
{
    uint64_t t = flive() ? get(fbuf(buf), fint(count), ftype(dt)) : 0;
    FCALL(recv, (void *, F *, F *, F *, F *, F *, F *, F *),
          (buf, count, dt, src, tag, comm, st, ierr));
    put(t);
}

void rcf_sendrecv(void *sbuf, F *scount, F *sdt, F *dest, F *stag, void *rbuf, F *rcount,
                  F *rdt, F *src, F *rtag, F *comm, F *st, F *ierr)
{
    uint64_t a = 0, b = 0;
    if (flive()) {
        a = get(fbuf(sbuf), fint(scount), ftype(sdt));
        b = get(fbuf(rbuf), fint(rcount), ftype(rdt));
    }
    FCALL(sendrecv, (void *, F *, F *, F *, F *, void *, F *, F *, F *, F *, F *, F *, F *),
          (sbuf, scount, sdt, dest, stag, rbuf, rcount, rdt, src, rtag, comm, st, ierr));
    put(a);
    put(b);
}

void rcf_sendrecv_replace(void *buf, F *count, F *dt, F *dest, F *stag, F *src, F *rtag,
                          F *comm, F *st, F *ierr)
{
    uint64_t t = flive() ? get(fbuf(buf), fint(count), ftype(dt)) : 0;
    FCALL(sendrecv_replace, (void *, F *, F *, F *, F *, F *, F *, F *, F *, F *),
          (buf, count, dt, dest, stag, src, rtag, comm, st, ierr));
    put(t);
}

/* Isend/Issend/Irsend/Ibsend/Irecv have the same arguments. */
#define FNONBLOCKING(NAME)                                                                   \
    void rcf_##NAME(void *buf, F *count, F *dt, F *peer, F *tag, F *comm, F *req, F *ierr)   \
    {                                                                                        \
        uint64_t t[2] = {flive() ? get(fbuf(buf), fint(count), ftype(dt)) : 0, 0};            \
        FCALL(NAME, (void *, F *, F *, F *, F *, F *, F *, F *),                             \
              (buf, count, dt, peer, tag, comm, req, ierr));                                 \
        fattach2(ierr, req, t);                                                              \
    }
FNONBLOCKING(isend)
FNONBLOCKING(issend)
FNONBLOCKING(irsend)
FNONBLOCKING(ibsend)
FNONBLOCKING(irecv)

void rcf_mrecv(void *buf, F *count, F *dt, F *msg, F *st, F *ierr)
{
    uint64_t t = flive() ? get(fbuf(buf), fint(count), ftype(dt)) : 0;
    FCALL(mrecv, (void *, F *, F *, F *, F *, F *), (buf, count, dt, msg, st, ierr));
    put(t);
}

void rcf_imrecv(void *buf, F *count, F *dt, F *msg, F *req, F *ierr)
{
    uint64_t t[2] = {flive() ? get(fbuf(buf), fint(count), ftype(dt)) : 0, 0};
    FCALL(imrecv, (void *, F *, F *, F *, F *, F *), (buf, count, dt, msg, req, ierr));
    fattach2(ierr, req, t);
}

/* Persistent requests: the buffer remembered at init (as on the C path),
 * registered at each start. */
#define FPERSISTENT(NAME)                                                                    \
    void rcf_##NAME(void *buf, F *count, F *dt, F *peer, F *tag, F *comm, F *req, F *ierr)   \
    {                                                                                        \
        FCALL(NAME, (void *, F *, F *, F *, F *, F *, F *, F *),                             \
              (buf, count, dt, peer, tag, comm, req, ierr));                                 \
        if (fok(ierr) && req != NULL && flive()) {                                           \
            MPI_Request c = freq(*req);                                                      \
            persist(MPI_SUCCESS, &c, fbuf(buf), fint(count), ftype(dt));                     \
        }                                                                                    \
    }
FPERSISTENT(send_init)
FPERSISTENT(ssend_init)
FPERSISTENT(rsend_init)
FPERSISTENT(bsend_init)
FPERSISTENT(recv_init)

void rcf_start(F *req, F *ierr)
{
    int live = flive() && req != NULL;
    MPI_Request old = live ? freq(*req) : MPI_REQUEST_NULL;
    FCALL(start, (F *, F *), (req, ierr));
    if (live && fok(ierr))
        started(old, freq(*req));
}

void rcf_startall(F *n, F *reqs, F *ierr)
{
    MPI_Request stack[STACK_REQS], *old = NULL;
    int count = fint(n);
    if (flive() && count > 0 && reqs != NULL) {
        old = count <= STACK_REQS ? stack : malloc(sizeof(MPI_Request) * (size_t)count);
        if (old != NULL)
            for (int i = 0; i < count; i++)
                old[i] = freq(reqs[i]);
    }
    FCALL(startall, (F *, F *, F *), (n, reqs, ierr));
    if (old != NULL && fok(ierr))
        for (int i = 0; i < count; i++)
            started(old[i], freq(reqs[i]));
    if (old != stack)
        free(old);
}

/* -- completion -- */
/* As on the C path, with the C handles of the Fortran requests saved
 * before the call (a completed nonpersistent request is set to the
 * Fortran MPI_REQUEST_NULL and its C object freed). Waitany/Testany and
 * Waitsome/Testsome return 1-based indices. */

static MPI_Request *fsave(int n, const F *reqs, MPI_Request *stack)
{
    MPI_Request *old;
    if (n <= 0 || reqs == NULL || !flive() || rcpmpi_pending() == 0)
        return NULL;
    old = n <= STACK_REQS ? stack : malloc(sizeof(MPI_Request) * (size_t)n);
    if (old != NULL)
        for (int i = 0; i < n; i++)
            old[i] = freq(reqs[i]);
    return old;
}

/* `all`: every request completed; `one`: 0-based index of the one that
 * did (or -1); `some`/`idx`: the 1-based list of those that did. */
static void fcompleted(int n, const F *reqs, MPI_Request *old, MPI_Request *stack, int all,
                       int one, const F *some, const F *idx)
{
    if (old == NULL)
        return;
    for (int i = 0; i < n; i++)
        if (all || freq(reqs[i]) == MPI_REQUEST_NULL)
            done(old, i);
    if (one >= 0 && one < n)
        done(old, one);
    if (some != NULL && idx != NULL && *some != MPI_UNDEFINED)
        for (int k = 0; k < *some && k < n; k++)
            if (idx[k] >= 1 && idx[k] <= n)
                done(old, idx[k] - 1);
    if (old != stack)
        free(old);
}

#define FCOMPLETION(NAME, N, REQS, PARAMS, TYPES, ARGS, ALL, ONE, SOME, IDX)                 \
    void rcf_##NAME PARAMS                                                                   \
    {                                                                                        \
        MPI_Request stack[STACK_REQS];                                                       \
        int n_ = (N);                                                                        \
        MPI_Request *old = fsave(n_, (REQS), stack);                                         \
        FCALL(NAME, TYPES, ARGS);                                                            \
        fcompleted(n_, (REQS), old, stack, (ALL), (ONE), (SOME), (IDX));                     \
    }

#define OK fok(ierr)
#define FLAG (fok(ierr) && flag != NULL && *flag)
#define INDEX (fok(ierr) && idx != NULL && *idx != MPI_UNDEFINED ? *idx - 1 : -1)
FCOMPLETION(wait, 1, req, (F * req, F *st, F *ierr), (F *, F *, F *), (req, st, ierr), OK, -1,
            NULL, NULL)
FCOMPLETION(test, 1, req, (F * req, F *flag, F *st, F *ierr), (F *, F *, F *, F *),
            (req, flag, st, ierr), FLAG, -1, NULL, NULL)
FCOMPLETION(waitall, fint(n), reqs, (F * n, F *reqs, F *sts, F *ierr), (F *, F *, F *, F *),
            (n, reqs, sts, ierr), OK, -1, NULL, NULL)
FCOMPLETION(testall, fint(n), reqs, (F * n, F *reqs, F *flag, F *sts, F *ierr),
            (F *, F *, F *, F *, F *), (n, reqs, flag, sts, ierr), FLAG, -1, NULL, NULL)
FCOMPLETION(waitany, fint(n), reqs, (F * n, F *reqs, F *idx, F *st, F *ierr),
            (F *, F *, F *, F *, F *), (n, reqs, idx, st, ierr), 0, INDEX, NULL, NULL)
FCOMPLETION(testany, fint(n), reqs, (F * n, F *reqs, F *idx, F *flag, F *st, F *ierr),
            (F *, F *, F *, F *, F *, F *), (n, reqs, idx, flag, st, ierr), 0,
            FLAG ? INDEX : -1, NULL, NULL)
FCOMPLETION(waitsome, fint(n), reqs, (F * n, F *reqs, F *outn, F *idx, F *sts, F *ierr),
            (F *, F *, F *, F *, F *, F *), (n, reqs, outn, idx, sts, ierr), 0, -1,
            fok(ierr) ? outn : NULL, idx)
FCOMPLETION(testsome, fint(n), reqs, (F * n, F *reqs, F *outn, F *idx, F *sts, F *ierr),
            (F *, F *, F *, F *, F *, F *), (n, reqs, outn, idx, sts, ierr), 0, -1,
            fok(ierr) ? outn : NULL, idx)
#undef OK
#undef FLAG
#undef INDEX

void rcf_request_free(F *req, F *ierr)
{
    MPI_Request old = flive() && req != NULL ? freq(*req) : MPI_REQUEST_NULL;
    FCALL(request_free, (F *, F *), (req, ierr));
    if (fok(ierr) && old != MPI_REQUEST_NULL)
        rcpmpi_freed((uintptr_t)old);
}

/* -- collectives -- */
/* The C path's REGS_* helpers on the converted arguments; FBLOCKING
 * releases at return, FNONBLOCKING keeps on the request. */

#define FBLOCKING(NAME, REGS, TYPES, ARGS)                                                   \
    {                                                                                        \
        uint64_t t[2] = {0, 0};                                                              \
        if (flive()) {                                                                       \
            REGS;                                                                            \
        }                                                                                    \
        FCALL(NAME, TYPES, ARGS);                                                            \
        put(t[0]);                                                                           \
        put(t[1]);                                                                           \
    }
#define FNONBLOCKING_COLL(NAME, REGS, TYPES, ARGS)                                           \
    {                                                                                        \
        uint64_t t[2] = {0, 0};                                                              \
        if (flive()) {                                                                       \
            REGS;                                                                            \
        }                                                                                    \
        FCALL(NAME, TYPES, ARGS);                                                            \
        fattach2(ierr, req, t);                                                              \
    }

/* Fortran arguments of each shape, converted, for the REGS helpers. */
#define B(x) ((void *)fbuf(x))
#define T(x) ftype(x)
#define C(x) fcomm(x)
#define N(x) fint(x)
#define V(x) fints(x)

void rcf_bcast(void *buf, F *count, F *dt, F *root, F *comm, F *ierr)
    FBLOCKING(bcast, regs_bcast(B(buf), N(count), T(dt), N(root), t),
              (void *, F *, F *, F *, F *, F *), (buf, count, dt, root, comm, ierr))
void rcf_ibcast(void *buf, F *count, F *dt, F *root, F *comm, F *req, F *ierr)
    FNONBLOCKING_COLL(ibcast, regs_bcast(B(buf), N(count), T(dt), N(root), t),
                      (void *, F *, F *, F *, F *, F *, F *),
                      (buf, count, dt, root, comm, req, ierr))

void rcf_reduce(void *sbuf, void *rbuf, F *count, F *dt, F *op, F *root, F *comm, F *ierr)
    FBLOCKING(reduce, regs_reduce(B(sbuf), B(rbuf), N(count), T(dt), N(root), C(comm), t),
              (void *, void *, F *, F *, F *, F *, F *, F *),
              (sbuf, rbuf, count, dt, op, root, comm, ierr))
void rcf_ireduce(void *sbuf, void *rbuf, F *count, F *dt, F *op, F *root, F *comm, F *req,
                 F *ierr)
    FNONBLOCKING_COLL(ireduce,
                      regs_reduce(B(sbuf), B(rbuf), N(count), T(dt), N(root), C(comm), t),
                      (void *, void *, F *, F *, F *, F *, F *, F *, F *),
                      (sbuf, rbuf, count, dt, op, root, comm, req, ierr))

#define FREDUCE_ALL(NAME, INAME)                                                             \
    void rcf_##NAME(void *sbuf, void *rbuf, F *count, F *dt, F *op, F *comm, F *ierr)        \
        FBLOCKING(NAME, regs_allreduce(B(sbuf), B(rbuf), N(count), T(dt), t),                \
                  (void *, void *, F *, F *, F *, F *, F *),                                 \
                  (sbuf, rbuf, count, dt, op, comm, ierr))                                   \
    void rcf_##INAME(void *sbuf, void *rbuf, F *count, F *dt, F *op, F *comm, F *req,        \
                     F *ierr)                                                                \
        FNONBLOCKING_COLL(INAME, regs_allreduce(B(sbuf), B(rbuf), N(count), T(dt), t),       \
                          (void *, void *, F *, F *, F *, F *, F *, F *),                    \
                          (sbuf, rbuf, count, dt, op, comm, req, ierr))
FREDUCE_ALL(allreduce, iallreduce)
FREDUCE_ALL(scan, iscan)
FREDUCE_ALL(exscan, iexscan)

void rcf_reduce_scatter_block(void *sbuf, void *rbuf, F *rcount, F *dt, F *op, F *comm,
                              F *ierr)
    FBLOCKING(reduce_scatter_block, regs_rsb(B(sbuf), B(rbuf), N(rcount), T(dt), C(comm), t),
              (void *, void *, F *, F *, F *, F *, F *),
              (sbuf, rbuf, rcount, dt, op, comm, ierr))
void rcf_ireduce_scatter_block(void *sbuf, void *rbuf, F *rcount, F *dt, F *op, F *comm,
                               F *req, F *ierr)
    FNONBLOCKING_COLL(ireduce_scatter_block,
                      regs_rsb(B(sbuf), B(rbuf), N(rcount), T(dt), C(comm), t),
                      (void *, void *, F *, F *, F *, F *, F *, F *),
                      (sbuf, rbuf, rcount, dt, op, comm, req, ierr))

void rcf_reduce_scatter(void *sbuf, void *rbuf, F *rcounts, F *dt, F *op, F *comm, F *ierr)
    FBLOCKING(reduce_scatter, regs_rs(B(sbuf), B(rbuf), V(rcounts), T(dt), C(comm), t),
              (void *, void *, F *, F *, F *, F *, F *),
              (sbuf, rbuf, rcounts, dt, op, comm, ierr))
void rcf_ireduce_scatter(void *sbuf, void *rbuf, F *rcounts, F *dt, F *op, F *comm, F *req,
                         F *ierr)
    FNONBLOCKING_COLL(ireduce_scatter,
                      regs_rs(B(sbuf), B(rbuf), V(rcounts), T(dt), C(comm), t),
                      (void *, void *, F *, F *, F *, F *, F *, F *),
                      (sbuf, rbuf, rcounts, dt, op, comm, req, ierr))

/* Gather, Scatter, Allgather and Alltoall: (sbuf, scount, sdt, rbuf,
 * rcount, rdt[, root], comm[, req], ierr). */
#define FROOTED(NAME, INAME, REGS)                                                           \
    void rcf_##NAME(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcount, F *rdt, F *root,   \
                    F *comm, F *ierr)                                                        \
        FBLOCKING(NAME,                                                                      \
                  REGS(B(sbuf), N(scount), T(sdt), B(rbuf), N(rcount), T(rdt), N(root),      \
                       C(comm), t),                                                          \
                  (void *, F *, F *, void *, F *, F *, F *, F *, F *),                       \
                  (sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, ierr))                  \
    void rcf_##INAME(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcount, F *rdt, F *root,  \
                     F *comm, F *req, F *ierr)                                               \
        FNONBLOCKING_COLL(INAME,                                                             \
                          REGS(B(sbuf), N(scount), T(sdt), B(rbuf), N(rcount), T(rdt),       \
                               N(root), C(comm), t),                                         \
                          (void *, F *, F *, void *, F *, F *, F *, F *, F *, F *),          \
                          (sbuf, scount, sdt, rbuf, rcount, rdt, root, comm, req, ierr))
FROOTED(gather, igather, regs_gather)
FROOTED(scatter, iscatter, regs_scatter)

#define FALL(NAME, INAME, REGS)                                                              \
    void rcf_##NAME(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcount, F *rdt, F *comm,   \
                    F *ierr)                                                                 \
        FBLOCKING(NAME,                                                                      \
                  REGS(B(sbuf), N(scount), T(sdt), B(rbuf), N(rcount), T(rdt), C(comm), t),  \
                  (void *, F *, F *, void *, F *, F *, F *, F *),                            \
                  (sbuf, scount, sdt, rbuf, rcount, rdt, comm, ierr))                        \
    void rcf_##INAME(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcount, F *rdt, F *comm,  \
                     F *req, F *ierr)                                                        \
        FNONBLOCKING_COLL(INAME,                                                             \
                          REGS(B(sbuf), N(scount), T(sdt), B(rbuf), N(rcount), T(rdt),       \
                               C(comm), t),                                                  \
                          (void *, F *, F *, void *, F *, F *, F *, F *, F *),               \
                          (sbuf, scount, sdt, rbuf, rcount, rdt, comm, req, ierr))
FALL(allgather, iallgather, regs_allgather)
FALL(alltoall, ialltoall, regs_alltoall)

void rcf_gatherv(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcounts, F *displs, F *rdt,
                 F *root, F *comm, F *ierr)
    FBLOCKING(gatherv,
              regs_gatherv(B(sbuf), N(scount), T(sdt), B(rbuf), V(rcounts), V(displs), T(rdt),
                           N(root), C(comm), t),
              (void *, F *, F *, void *, F *, F *, F *, F *, F *, F *),
              (sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm, ierr))
void rcf_igatherv(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcounts, F *displs, F *rdt,
                  F *root, F *comm, F *req, F *ierr)
    FNONBLOCKING_COLL(igatherv,
                      regs_gatherv(B(sbuf), N(scount), T(sdt), B(rbuf), V(rcounts), V(displs),
                                   T(rdt), N(root), C(comm), t),
                      (void *, F *, F *, void *, F *, F *, F *, F *, F *, F *, F *),
                      (sbuf, scount, sdt, rbuf, rcounts, displs, rdt, root, comm, req, ierr))

void rcf_scatterv(void *sbuf, F *scounts, F *displs, F *sdt, void *rbuf, F *rcount, F *rdt,
                  F *root, F *comm, F *ierr)
    FBLOCKING(scatterv,
              regs_scatterv(B(sbuf), V(scounts), V(displs), T(sdt), B(rbuf), N(rcount), T(rdt),
                            N(root), C(comm), t),
              (void *, F *, F *, F *, void *, F *, F *, F *, F *, F *),
              (sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm, ierr))
void rcf_iscatterv(void *sbuf, F *scounts, F *displs, F *sdt, void *rbuf, F *rcount, F *rdt,
                   F *root, F *comm, F *req, F *ierr)
    FNONBLOCKING_COLL(iscatterv,
                      regs_scatterv(B(sbuf), V(scounts), V(displs), T(sdt), B(rbuf), N(rcount),
                                    T(rdt), N(root), C(comm), t),
                      (void *, F *, F *, F *, void *, F *, F *, F *, F *, F *, F *),
                      (sbuf, scounts, displs, sdt, rbuf, rcount, rdt, root, comm, req, ierr))

void rcf_allgatherv(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcounts, F *displs, F *rdt,
                    F *comm, F *ierr)
    FBLOCKING(allgatherv,
              regs_allgatherv(B(sbuf), N(scount), T(sdt), B(rbuf), V(rcounts), V(displs),
                              T(rdt), C(comm), t),
              (void *, F *, F *, void *, F *, F *, F *, F *, F *),
              (sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, ierr))
void rcf_iallgatherv(void *sbuf, F *scount, F *sdt, void *rbuf, F *rcounts, F *displs, F *rdt,
                     F *comm, F *req, F *ierr)
    FNONBLOCKING_COLL(iallgatherv,
                      regs_allgatherv(B(sbuf), N(scount), T(sdt), B(rbuf), V(rcounts),
                                      V(displs), T(rdt), C(comm), t),
                      (void *, F *, F *, void *, F *, F *, F *, F *, F *, F *),
                      (sbuf, scount, sdt, rbuf, rcounts, displs, rdt, comm, req, ierr))

void rcf_alltoallv(void *sbuf, F *scounts, F *sdispls, F *sdt, void *rbuf, F *rcounts,
                   F *rdispls, F *rdt, F *comm, F *ierr)
    FBLOCKING(alltoallv,
              regs_alltoallv(B(sbuf), V(scounts), V(sdispls), T(sdt), B(rbuf), V(rcounts),
                             V(rdispls), T(rdt), C(comm), t),
              (void *, F *, F *, F *, void *, F *, F *, F *, F *, F *),
              (sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm, ierr))
void rcf_ialltoallv(void *sbuf, F *scounts, F *sdispls, F *sdt, void *rbuf, F *rcounts,
                    F *rdispls, F *rdt, F *comm, F *req, F *ierr)
    FNONBLOCKING_COLL(ialltoallv,
                      regs_alltoallv(B(sbuf), V(scounts), V(sdispls), T(sdt), B(rbuf),
                                     V(rcounts), V(rdispls), T(rdt), C(comm), t),
                      (void *, F *, F *, F *, void *, F *, F *, F *, F *, F *, F *),
                      (sbuf, scounts, sdispls, sdt, rbuf, rcounts, rdispls, rdt, comm, req,
                       ierr))

/* MPI_Alltoallw: a datatype per peer, converted into a temporary array. */
static void fregs_alltoallw(const void *sbuf, const F *scounts, const F *sdispls, const F *sdts,
                            void *rbuf, const F *rcounts, const F *rdispls, const F *rdts,
                            const F *comm, uint64_t t[2])
{
    MPI_Comm c = fcomm(comm);
    int size, rank = rank_of(c, &size);
    MPI_Datatype *s, *r;
    if (rank < 0)
        return;
    s = ftypes(sdts, size);
    r = ftypes(rdts, size);
    if (s != NULL && r != NULL)
        regs_alltoallw(fbuf(sbuf), fints(scounts), fints(sdispls), s, (void *)fbuf(rbuf),
                       fints(rcounts), fints(rdispls), r, c, t);
    free(s);
    free(r);
}

void rcf_alltoallw(void *sbuf, F *scounts, F *sdispls, F *sdts, void *rbuf, F *rcounts,
                   F *rdispls, F *rdts, F *comm, F *ierr)
    FBLOCKING(alltoallw,
              fregs_alltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm,
                              t),
              (void *, F *, F *, F *, void *, F *, F *, F *, F *, F *),
              (sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm, ierr))
void rcf_ialltoallw(void *sbuf, F *scounts, F *sdispls, F *sdts, void *rbuf, F *rcounts,
                    F *rdispls, F *rdts, F *comm, F *req, F *ierr)
    FNONBLOCKING_COLL(ialltoallw,
                      fregs_alltoallw(sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls,
                                      rdts, comm, t),
                      (void *, F *, F *, F *, void *, F *, F *, F *, F *, F *, F *),
                      (sbuf, scounts, sdispls, sdts, rbuf, rcounts, rdispls, rdts, comm, req,
                       ierr))

#undef B
#undef T
#undef C
#undef N
#undef V
