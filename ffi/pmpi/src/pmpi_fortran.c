/* The Fortran entry points of libregcache_pmpi.so (mpif.h, `use mpi`),
 * one set per row of mpi_functions.def marked F(lower, UPPER).
 *
 * Open MPI's Fortran bindings (libmpi_mpifh: mpi_send_ and its other
 * manglings, which the `use mpi` module's interfaces also name) convert
 * their arguments and call the PMPI_ C entry points directly, so the C
 * wrappers of pmpi_c.c never see a Fortran program. The functions here,
 * defined under the four manglings Open MPI defines (mpi_send_, mpi_send,
 * mpi_send__, MPI_SEND: aliases of one static rcf_send), do the same work
 * from the Fortran arguments: handles go through MPI_*_f2c, counts are
 * MPI_Fint, MPI_BOTTOM and MPI_IN_PLACE are the addresses of Open MPI's
 * common blocks. The call itself goes to the Fortran profiling entry
 * (pmpi_send_, found with dlsym(RTLD_NEXT)), so Open MPI does its own
 * conversion and writes ierr; registrations are released or kept exactly
 * as on the C path, nonblocking ones keyed by the C request that
 * MPI_Request_f2c gives for the returned Fortran request.
 *
 * A row's Fortran parameters are its C parameters, each by reference,
 * then ierr (MPI_Init's argc and argv are C only). Each template below
 * first converts the Fortran arguments it needs into C values named as
 * the C parameters (F_CONVERT: the Fortran argument is f_<name>), so the
 * row's `how` reads the same in both languages.
 *
 * The mpi_f08 bindings (libmpi_usempif08) call Open MPI's internal
 * ompi_*_f functions directly, not these symbols: not covered.
 *
 * Handles are converted only between MPI_Init and MPI_Finalize (mpi_live;
 * the f2c functions need MPI running); an invalid Fortran handle converts
 * to NULL, taken as the null handle, so the buffer is skipped and Open
 * MPI's own wrapper reports the error. */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "pmpi_common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

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
    if ((t[0] || t[1]) && fok(ierr) && req != NULL && mpi_live())
        c = freq(*req);
    attach2(c != MPI_REQUEST_NULL ? MPI_SUCCESS : MPI_ERR_REQUEST, &c, t);
}


/* -- completion -- */
/* As on the C path, with the C handles of the Fortran requests saved
 * before the call (a completed nonpersistent request is set to the
 * Fortran MPI_REQUEST_NULL and its C object freed). Waitany/Testany and
 * Waitsome/Testsome return 1-based indices. */

static MPI_Request *fsave(int n, const MPI_Fint *reqs, MPI_Request *stack)
{
    MPI_Request *old;
    if (n <= 0 || reqs == NULL || !mpi_live() || rcpmpi_pending() == 0)
        return NULL;
    old = n <= STACK_REQS ? stack : malloc(sizeof(MPI_Request) * (size_t)n);
    if (old != NULL)
        for (int i = 0; i < n; i++)
            old[i] = freq(reqs[i]);
    return old;
}

/* `all`: every request completed; `one`: 0-based index of the one that
 * did (or -1); `some`/`idx`: the 1-based list of those that did. */
static void fcompleted(int n, const MPI_Fint *reqs, MPI_Request *old, MPI_Request *stack, int all,
                       int one, const MPI_Fint *some, const MPI_Fint *idx)
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


/* MPI_Alltoallw: a datatype per peer, converted into temporary arrays
 * (the other arguments are converted by the template). */
static void fregs_alltoallw(const void *sbuf, const int *scounts, const int *sdispls,
                            const MPI_Fint *sdts, void *rbuf, const int *rcounts,
                            const int *rdispls, const MPI_Fint *rdts, MPI_Comm comm,
                            uint64_t t[2])
{
    int size, rank = rank_of(comm, &size);
    MPI_Datatype *s, *r;
    if (rank < 0)
        return;
    s = ftypes(sdts, size);
    r = ftypes(rdts, size);
    if (s != NULL && r != NULL)
        regs_alltoallw(sbuf, scounts, sdispls, s, rbuf, rcounts, rdispls, r, comm, t);
    free(s);
    free(r);
}
/* ... which the Alltoallw rows name as the C rows do. */
#define regs_alltoallw fregs_alltoallw

/* ---- rows of mpi_functions.def into functions -------------------------- */

/* Each parameter kind's Fortran parameter (with a trailing comma: ierr
 * comes last), its argument to Open MPI's pmpi_<lower>_, and its
 * conversion to the C value. Converted kinds arrive as f_<name>; the
 * others (outputs, and handles no `how` reads) keep their name and stay
 * Fortran. */
#define F_PARAM(k, n) F_PARAM_##k(n)
#define F_ARG(k, n) F_ARG_##k(n)
#define F_CONV(k, n) F_CONV_##k(n)
#define F_CONVERTED(n) MPI_Fint *f_##n,
#define F_KEPT(n) MPI_Fint *n,
#define F_UNUSED __attribute__((unused))

#define F_PARAM_Argc(n)
#define F_PARAM_Argv(n)
#define F_PARAM_Void(n)
#define F_PARAM_CBuf(n) void *f_##n,
#define F_PARAM_Buf(n) void *f_##n,
#define F_PARAM_Int F_CONVERTED
#define F_PARAM_Ints F_CONVERTED
#define F_PARAM_Dt F_CONVERTED
#define F_PARAM_Comm F_CONVERTED
#define F_PARAM_Dts F_KEPT
#define F_PARAM_IntOut F_KEPT
#define F_PARAM_Op F_KEPT
#define F_PARAM_Req F_KEPT
#define F_PARAM_Status F_KEPT
#define F_PARAM_Msg F_KEPT

#define F_ARG_Argc(n)
#define F_ARG_Argv(n)
#define F_ARG_Void(n)
#define F_ARG_CONVERTED(n) f_##n,
#define F_ARG_KEPT(n) n,
#define F_ARG_CBuf F_ARG_CONVERTED
#define F_ARG_Buf F_ARG_CONVERTED
#define F_ARG_Int F_ARG_CONVERTED
#define F_ARG_Ints F_ARG_CONVERTED
#define F_ARG_Dt F_ARG_CONVERTED
#define F_ARG_Comm F_ARG_CONVERTED
#define F_ARG_Dts F_ARG_KEPT
#define F_ARG_IntOut F_ARG_KEPT
#define F_ARG_Op F_ARG_KEPT
#define F_ARG_Req F_ARG_KEPT
#define F_ARG_Status F_ARG_KEPT
#define F_ARG_Msg F_ARG_KEPT

#define F_CONV_Argc(n)
#define F_CONV_Argv(n)
#define F_CONV_Void(n)
#define F_CONV_CBuf(n) F_UNUSED const void *n = fbuf(f_##n);
#define F_CONV_Buf(n) F_UNUSED void *n = (void *)fbuf(f_##n);
#define F_CONV_Int(n) F_UNUSED int n = fint(f_##n);
#define F_CONV_Ints(n) F_UNUSED const int *n = fints(f_##n);
#define F_CONV_Dt(n) F_UNUSED MPI_Datatype n = ftype(f_##n);
#define F_CONV_Comm(n) F_UNUSED MPI_Comm n = fcomm(f_##n);
#define F_CONV_Dts(n)
#define F_CONV_IntOut(n)
#define F_CONV_Op(n)
#define F_CONV_Req(n)
#define F_CONV_Status(n)
#define F_CONV_Msg(n)

#define F_CONVERT(params) RC_MAP(F_CONV, RC_UNPAREN params)

/* ---- the templates: (lower, how, signature, arguments, parameters) ------ */

#define F_init(l, how, sig, args, params)                                                    \
    {                                                                                        \
        FCALL(l, sig, args);                                                                 \
        if (fok(ierr))                                                                       \
            after_init();                                                                    \
    }

#define F_finalize(l, how, sig, args, params)                                                \
    {                                                                                        \
        before_finalize();                                                                   \
        FCALL(l, sig, args);                                                                 \
    }

/* The row's registrations into t[0], t[1], while MPI is running. */
#define F_REGISTER(how, params)                                                              \
    uint64_t t[2] = {0, 0};                                                                  \
    if (mpi_live()) {                                                                        \
        F_CONVERT(params)                                                                    \
        how;                                                                                 \
    }

#define F_blocking(l, how, sig, args, params)                                                \
    {                                                                                        \
        F_REGISTER(how, params)                                                              \
        FCALL(l, sig, args);                                                                 \
        put(t[0]);                                                                           \
        put(t[1]);                                                                           \
    }

#define F_nonblocking(l, how, sig, args, params)                                             \
    {                                                                                        \
        F_REGISTER(how, params)                                                              \
        FCALL(l, sig, args);                                                                 \
        fattach2(ierr, req, t);                                                              \
    }

/* Persistent requests: the buffer remembered at init (as on the C path),
 * registered at each start. */
#define F_persistent(l, how, sig, args, params)                                              \
    {                                                                                        \
        FCALL(l, sig, args);                                                                 \
        if (fok(ierr) && req != NULL && mpi_live()) {                                        \
            MPI_Request c = freq(*req);                                                      \
            F_CONVERT(params)                                                                \
            persist(MPI_SUCCESS, &c, RC_UNPAREN how);                                        \
        }                                                                                    \
    }

#define F_start(l, how, sig, args, params)                                                   \
    {                                                                                        \
        int live = mpi_live() && req != NULL;                                                \
        MPI_Request old = live ? freq(*req) : MPI_REQUEST_NULL;                              \
        FCALL(l, sig, args);                                                                 \
        if (live && fok(ierr))                                                               \
            started(old, freq(*req));                                                        \
    }

#define F_startall(l, how, sig, args, params)                                                \
    {                                                                                        \
        F_CONVERT(params)                                                                    \
        MPI_Request stack[STACK_REQS], *old = NULL;                                          \
        if (mpi_live() && n > 0 && reqs != NULL) {                                           \
            old = n <= STACK_REQS ? stack : malloc(sizeof(MPI_Request) * (size_t)n);         \
            if (old != NULL)                                                                 \
                for (int i = 0; i < n; i++)                                                  \
                    old[i] = freq(reqs[i]);                                                  \
        }                                                                                    \
        FCALL(l, sig, args);                                                                 \
        if (old != NULL && fok(ierr))                                                        \
            for (int i = 0; i < n; i++)                                                      \
                started(old[i], freq(reqs[i]));                                              \
        if (old != stack)                                                                    \
            free(old);                                                                       \
    }

/* The call's verdicts, for the rows' `how`: it succeeded; it set its flag;
 * the index it returned (1-based in Fortran, made 0-based). */
#define OK fok(ierr)
#define FLAG (OK && flag != NULL && *flag)
#define INDEX (OK && idx != NULL && *idx != MPI_UNDEFINED ? *idx - 1 : -1)

#define F_complete(l, how, sig, args, params)                                                \
    RC_APPLY(F_complete_, (l, sig, args, params, RC_UNPAREN how))
#define F_complete_(l, sig, args, params, n_, reqs_, all, one, some, idx_)                   \
    {                                                                                        \
        F_CONVERT(params)                                                                    \
        MPI_Request stack[STACK_REQS];                                                       \
        MPI_Request *old = fsave((n_), (reqs_), stack);                                      \
        FCALL(l, sig, args);                                                                 \
        fcompleted((n_), (reqs_), old, stack, (all), (one), (some), (idx_));                 \
    }

#define F_request_free(l, how, sig, args, params)                                            \
    {                                                                                        \
        MPI_Request old = mpi_live() && req != NULL ? freq(*req) : MPI_REQUEST_NULL;         \
        FCALL(l, sig, args);                                                                 \
        if (fok(ierr) && old != MPI_REQUEST_NULL)                                            \
            rcpmpi_freed((uintptr_t)old);                                                    \
    }

/* ---- the table ---------------------------------------------------------- */

/* A row: C only (F_ROW_0), or the static rcf_<lower> and its four
 * manglings (F_ROW_1). */
#define MPI_FN(name, fortran, shape, how, ...)                                               \
    F_ROW_SPLIT(F_NAMES_##fortran, shape, how, __VA_ARGS__)
#define F_ROW_SPLIT(...) F_ROW(__VA_ARGS__)
#define F_NAMES_C 0, ,
#define F_NAMES_F(lower, UPPER) 1, lower, UPPER
#define F_ROW(has, l, U, shape, how, ...) RC_CAT(F_ROW_, has)(l, U, shape, how, __VA_ARGS__)
#define F_ROW_0(...)
#define F_ROW_1(l, U, shape, how, ...)                                                       \
    F_ENTRY(l, U, shape, how, (RC_MAP(F_PARAM, __VA_ARGS__) MPI_Fint *ierr),                 \
            (RC_MAP(F_ARG, __VA_ARGS__) ierr), (__VA_ARGS__))
#define F_ALIAS(l) __attribute__((alias("rcf_" #l)))
#define F_ENTRY(l, U, shape, how, sig, args, params)                                         \
    static void rcf_##l sig;                                                                 \
    void mpi_##l##_ sig F_ALIAS(l);                                                          \
    void mpi_##l sig F_ALIAS(l);                                                             \
    void mpi_##l##__ sig F_ALIAS(l);                                                         \
    void MPI_##U sig F_ALIAS(l);                                                             \
    static void rcf_##l sig F_##shape(l, how, sig, args, params)
#include "mpi_functions.def"
