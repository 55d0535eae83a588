/* The C entry points MPI_<name> of libregcache_pmpi.so, one per row of
 * mpi_functions.def.
 *
 * Each works out which buffers the call moves, asks the cache for a
 * registration of each one (pmpi_common.c), calls PMPI_<name> and releases
 * the registrations when the operation completes: at return for blocking
 * calls, in MPI_Wait/Test and friends for nonblocking ones and for each
 * MPI_Start of a persistent request, at MPI_Win_free for window memory,
 * at the flush/unlock/fence that completes them for RMA origin buffers.
 *
 * A row becomes
 *
 *   int MPI_<name>(<its parameters>) C_<shape>(name, how, (<its arguments>))
 *
 * so the signature is the table's, checked by the compiler against mpi.h's
 * declaration of MPI_<name>, and PMPI_<name> is mpi.h's own. Each C_<shape>
 * below is the body of one shape of wrapper; `how` is the row's
 * registration expression (see mpi_functions.def).
 */
#include "pmpi_common.h"

#include <stdlib.h>
#include <string.h>

/* ---- init / finalize -------------------------------------------------- */

/* The PMPI call, then `then` if it succeeded. */
#define C_ON_SUCCESS(name, args, then)                                                       \
    {                                                                                        \
        int rc = PMPI_##name args;                                                           \
        if (rc == MPI_SUCCESS)                                                               \
            then;                                                                            \
        return rc;                                                                           \
    }

#define C_init(name, how, args) C_ON_SUCCESS(name, args, after_init())

#define C_finalize(name, how, args)                                                          \
    {                                                                                        \
        before_finalize();                                                                   \
        return PMPI_##name args;                                                             \
    }

/* ---- registered for the call, or until a request or a sync ------------ */

/* The row's registrations into t[0], t[1], the PMPI call, then `then`
 * (which releases or keeps them). */
#define C_REGISTERED(name, how, args, then)                                                  \
    {                                                                                        \
        uint64_t t[2] = {0, 0};                                                              \
        how;                                                                                 \
        int rc = PMPI_##name args;                                                           \
        then;                                                                                \
        return rc;                                                                           \
    }

#define C_blocking(name, how, args) C_REGISTERED(name, how, args, (put(t[0]), put(t[1])))
#define C_nonblocking(name, how, args) C_REGISTERED(name, how, args, attach2(rc, req, t))
#define C_origin(name, how, args)                                                            \
    C_REGISTERED(name, how, args,                                                            \
                 (origin(rc, win, target, t[0]), origin(rc, win, target, t[1])))

/* ---- persistent requests ---------------------------------------------- */
/* As an RDMA MPI does (Open MPI's ob1 runs its send/receive protocol, and
 * so its registration-cache lookup, afresh at each MPI_Start): the buffer
 * is remembered at *_init, registered at each MPI_Start and released when
 * that start completes (MPI_Wait/Test and friends) or at MPI_Request_free.
 * An inactive persistent request holds nothing. */

#define C_persistent(name, how, args)                                                        \
    {                                                                                        \
        int rc = PMPI_##name args;                                                           \
        persist(rc, req, RC_UNPAREN how);                                                    \
        return rc;                                                                           \
    }

#define C_start(name, how, args)                                                             \
    {                                                                                        \
        MPI_Request old = req != NULL ? *req : MPI_REQUEST_NULL;                             \
        int rc = PMPI_##name args;                                                           \
        if (rc == MPI_SUCCESS && req != NULL)                                                \
            started(old, *req);                                                              \
        return rc;                                                                           \
    }

#define C_startall(name, how, args)                                                          \
    {                                                                                        \
        MPI_Request stack[STACK_REQS], *old = NULL;                                          \
        int rc;                                                                              \
        if (n > 0 && reqs != NULL) {                                                         \
            old = n <= STACK_REQS ? stack : malloc(sizeof(MPI_Request) * (size_t)n);         \
            if (old != NULL)                                                                 \
                memcpy(old, reqs, sizeof(MPI_Request) * (size_t)n);                          \
        }                                                                                    \
        rc = PMPI_##name args;                                                               \
        if (rc == MPI_SUCCESS && reqs != NULL)                                               \
            for (int i = 0; i < n; i++)                                                      \
                started(old != NULL ? old[i] : reqs[i], reqs[i]);                            \
        if (old != stack)                                                                    \
            free(old);                                                                       \
        return rc;                                                                           \
    }

/* ---- completion ------------------------------------------------------- */
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

/* `all`: every request completed; `one`: index of the one that did (or
 * -1); `some`/`idx`: the list of those that did. */
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

/* The call's verdicts, for the rows' `how`: it succeeded; it set its flag;
 * the index it returned (0-based in C). */
#define OK (rc == MPI_SUCCESS)
#define FLAG (OK && flag != NULL && *flag)
#define INDEX (OK && idx != NULL && *idx != MPI_UNDEFINED ? *idx : -1)

#define C_complete(name, how, args) RC_APPLY(C_complete_, (name, args, RC_UNPAREN how))
#define C_complete_(name, args, n_, reqs_, all, one, some, idx_)                             \
    {                                                                                        \
        MPI_Request stack[STACK_REQS];                                                       \
        MPI_Request *old = save((n_), (reqs_), stack);                                       \
        int rc = PMPI_##name args;                                                           \
        completed((n_), (reqs_), old, stack, (all), (one), (some), (idx_));                  \
        return rc;                                                                           \
    }

/* A freed request (active or not, persistent or not) releases what it
 * holds at once: the application gave up the means to learn when it ends. */
#define C_request_free(name, how, args)                                                      \
    {                                                                                        \
        MPI_Request old = req != NULL ? *req : MPI_REQUEST_NULL;                             \
        int rc = PMPI_##name args;                                                           \
        if (rc == MPI_SUCCESS && old != MPI_REQUEST_NULL)                                    \
            rcpmpi_freed((uintptr_t)old);                                                    \
        return rc;                                                                           \
    }

/* ---- one-sided (RMA) -------------------------------------------------- */
/* Window memory: registered from creation (or attach) to MPI_Win_free (or
 * detach), kept under (KIND_WINDOW, window, base). */

#define C_win_create(name, how, args)                                                        \
    {                                                                                        \
        uint64_t t = real(base) && size > 0 ? rcpmpi_acquire(base, (size_t)size) : 0;        \
        int rc = PMPI_##name args;                                                           \
        if (rc == MPI_SUCCESS && win != NULL && *win != MPI_WIN_NULL)                        \
            rcpmpi_keep(KIND_WINDOW, (uintptr_t)*win, 0, t);                                 \
        else                                                                                 \
            put(t);                                                                          \
        return rc;                                                                           \
    }

#define C_win_allocate(name, how, args)                                                      \
    {                                                                                        \
        int rc = PMPI_##name args;                                                           \
        if (rc == MPI_SUCCESS && win != NULL && *win != MPI_WIN_NULL && baseptr != NULL &&   \
            size > 0) {                                                                      \
            void *base = *(void **)baseptr;                                                  \
            if (real(base))                                                                  \
                rcpmpi_keep(KIND_WINDOW, (uintptr_t)*win, 0,                                 \
                            rcpmpi_acquire(base, (size_t)size));                             \
        }                                                                                    \
        return rc;                                                                           \
    }

#define C_win_attach(name, how, args)                                                        \
    {                                                                                        \
        int rc = PMPI_##name args;                                                           \
        if (rc == MPI_SUCCESS && real(base) && size > 0)                                     \
            rcpmpi_keep(KIND_WINDOW, (uintptr_t)win, (uintptr_t)base,                        \
                        rcpmpi_acquire(base, (size_t)size));                                 \
        return rc;                                                                           \
    }

#define C_win_detach(name, how, args)                                                        \
    C_ON_SUCCESS(name, args, rcpmpi_complete(KIND_WINDOW, (uintptr_t)win, (uintptr_t)base))

#define C_win_free(name, how, args)                                                          \
    {                                                                                        \
        MPI_Win old = win != NULL ? *win : MPI_WIN_NULL;                                     \
        int rc = PMPI_##name args;                                                           \
        if (rc == MPI_SUCCESS && old != MPI_WIN_NULL) {                                      \
            rcpmpi_complete_all(KIND_ORIGIN, (uintptr_t)old);                                \
            rcpmpi_complete_all(KIND_WINDOW, (uintptr_t)old);                                \
        }                                                                                    \
        return rc;                                                                           \
    }

/* Origin buffers (C_origin): released by the synchronization that
 * completes them at the origin, for all targets or for one. */
#define C_sync_all(name, how, args)                                                          \
    C_ON_SUCCESS(name, args, rcpmpi_complete_all(KIND_ORIGIN, (uintptr_t)win))
#define C_sync_one(name, how, args)                                                          \
    C_ON_SUCCESS(name, args, rcpmpi_complete(KIND_ORIGIN, (uintptr_t)win, (uintptr_t)target))

/* ---- the table -------------------------------------------------------- */

#define MPI_FN(name, fortran, shape, how, ...)                                               \
    int MPI_##name C_PARAMS(__VA_ARGS__) C_##shape(name, how, C_ARGS(__VA_ARGS__))
#include "mpi_functions.def"
