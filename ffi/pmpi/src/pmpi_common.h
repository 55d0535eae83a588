/* What pmpi_c.c and pmpi_fortran.c share: the Rust side's functions, the
 * registration helpers of pmpi_common.c, and the preprocessor machinery
 * that turns a row of mpi_functions.def into a function.
 *
 * Every registration is a token from the Rust side (src/lib.rs): nonzero,
 * or 0 for "not registered" (below REGCACHE_PMPI_MIN_BYTES, skipped,
 * failed, cache disabled), which every helper here passes over. */
#ifndef REGCACHE_PMPI_COMMON_H
#define REGCACHE_PMPI_COMMON_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the Rust side (src/lib.rs), plain C types only ------------------ */
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

/* Request arrays up to this long are saved on the stack. */
#define STACK_REQS 64

/* Local helpers are hidden: the library exports the MPI entry points
 * (exports.h), the rest stays inside it. */
#define RC_INTERNAL __attribute__((visibility("hidden")))

/* ---- pmpi_common.c ---------------------------------------------------- */
RC_INTERNAL int real(const void *buf);
RC_INTERNAL uint64_t get(const void *buf, long long count, MPI_Datatype dt);
RC_INTERNAL void put(uint64_t t);
RC_INTERNAL int rank_of(MPI_Comm comm, int *size);
RC_INTERNAL int mpi_live(void);
RC_INTERNAL void after_init(void);
RC_INTERNAL void before_finalize(void);
RC_INTERNAL void attach2(int rc, MPI_Request *req, const uint64_t t[2]);
RC_INTERNAL void origin(int rc, MPI_Win win, int target, uint64_t t);
RC_INTERNAL void persist(int rc, MPI_Request *req, const void *buf, int count, MPI_Datatype dt);
RC_INTERNAL void started(MPI_Request old, MPI_Request now);
RC_INTERNAL void done(const MPI_Request *old, int i);

/* The buffers of each collective: t[0] the send buffer, t[1] the receive
 * buffer (0 where the rank moves none). */
RC_INTERNAL void regs_bcast(void *buf, int count, MPI_Datatype dt, int root, uint64_t t[2]);
RC_INTERNAL void regs_reduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt, int root,
                             MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_allreduce(const void *sbuf, void *rbuf, int count, MPI_Datatype dt,
                                uint64_t t[2]);
RC_INTERNAL void regs_rsb(const void *sbuf, void *rbuf, int rcount, MPI_Datatype dt,
                          MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_rs(const void *sbuf, void *rbuf, const int *rcounts, MPI_Datatype dt,
                         MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_gather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                             int rcount, MPI_Datatype rdt, int root, MPI_Comm comm,
                             uint64_t t[2]);
RC_INTERNAL void regs_gatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                              const int *rcounts, const int *displs, MPI_Datatype rdt, int root,
                              MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_scatter(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                              int rcount, MPI_Datatype rdt, int root, MPI_Comm comm,
                              uint64_t t[2]);
RC_INTERNAL void regs_scatterv(const void *sbuf, const int *scounts, const int *displs,
                               MPI_Datatype sdt, void *rbuf, int rcount, MPI_Datatype rdt,
                               int root, MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_allgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                                int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_allgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                                 const int *rcounts, const int *displs, MPI_Datatype rdt,
                                 MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_alltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                               int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_alltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                                MPI_Datatype sdt, void *rbuf, const int *rcounts,
                                const int *rdispls, MPI_Datatype rdt, MPI_Comm comm,
                                uint64_t t[2]);
RC_INTERNAL void regs_alltoallw(const void *sbuf, const int *scounts, const int *sdispls,
                                const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                                const int *rdispls, const MPI_Datatype *rdts, MPI_Comm comm,
                                uint64_t t[2]);
RC_INTERNAL void regs_nallgather(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                                 int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_nallgatherv(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                                  const int *rcounts, const int *displs, MPI_Datatype rdt,
                                  MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_nalltoall(const void *sbuf, int scount, MPI_Datatype sdt, void *rbuf,
                                int rcount, MPI_Datatype rdt, MPI_Comm comm, uint64_t t[2]);
RC_INTERNAL void regs_nalltoallv(const void *sbuf, const int *scounts, const int *sdispls,
                                 MPI_Datatype sdt, void *rbuf, const int *rcounts,
                                 const int *rdispls, MPI_Datatype rdt, MPI_Comm comm,
                                 uint64_t t[2]);
RC_INTERNAL void regs_nalltoallw(const void *sbuf, const int *scounts, const MPI_Aint *sdispls,
                                 const MPI_Datatype *sdts, void *rbuf, const int *rcounts,
                                 const MPI_Aint *rdispls, const MPI_Datatype *rdts,
                                 MPI_Comm comm, uint64_t t[2]);

/* ---- rows of mpi_functions.def into functions --------------------------
 * A row's parameters are (Kind, name) pairs. RC_MAP(m, pairs...) applies
 * m to each pair in order (m (Kind, name), so m is a two-argument macro);
 * the m of each use pastes the kind onto a prefix (C_TYPE_##Kind here,
 * F_PARAM_##Kind in pmpi_fortran.c) to pick what to emit. Rows have at
 * most 13 parameters (MPI_Rget_accumulate). */
#define RC_NARGS(...) RC_NARGS_(__VA_ARGS__, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define RC_NARGS_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, N, ...) N
#define RC_CAT(a, b) RC_CAT_(a, b)
#define RC_CAT_(a, b) a##b
#define RC_MAP(m, ...) RC_CAT(RC_MAP_, RC_NARGS(__VA_ARGS__))(m, __VA_ARGS__)
#define RC_MAP_1(m, x) m x
#define RC_MAP_2(m, x, ...) m x RC_MAP_1(m, __VA_ARGS__)
#define RC_MAP_3(m, x, ...) m x RC_MAP_2(m, __VA_ARGS__)
#define RC_MAP_4(m, x, ...) m x RC_MAP_3(m, __VA_ARGS__)
#define RC_MAP_5(m, x, ...) m x RC_MAP_4(m, __VA_ARGS__)
#define RC_MAP_6(m, x, ...) m x RC_MAP_5(m, __VA_ARGS__)
#define RC_MAP_7(m, x, ...) m x RC_MAP_6(m, __VA_ARGS__)
#define RC_MAP_8(m, x, ...) m x RC_MAP_7(m, __VA_ARGS__)
#define RC_MAP_9(m, x, ...) m x RC_MAP_8(m, __VA_ARGS__)
#define RC_MAP_10(m, x, ...) m x RC_MAP_9(m, __VA_ARGS__)
#define RC_MAP_11(m, x, ...) m x RC_MAP_10(m, __VA_ARGS__)
#define RC_MAP_12(m, x, ...) m x RC_MAP_11(m, __VA_ARGS__)
#define RC_MAP_13(m, x, ...) m x RC_MAP_12(m, __VA_ARGS__)
#define RC_MAP_14(m, x, ...) m x RC_MAP_13(m, __VA_ARGS__)
/* A list emitted with a comma before each item, without the first comma. */
#define RC_TAIL(...) RC_TAIL_(__VA_ARGS__)
#define RC_TAIL_(first, ...) __VA_ARGS__
/* (a, b) -> a, b */
#define RC_UNPAREN(...) __VA_ARGS__
/* m applied to a parenthesized list built by other macros. */
#define RC_APPLY(m, args) m args

/* The C type of each parameter kind, as mpi.h declares it. */
#define C_TYPE_Argc int *
#define C_TYPE_Argv char ***
#define C_TYPE_Int int
#define C_TYPE_IntOut int *
#define C_TYPE_Ints const int *
#define C_TYPE_Aint MPI_Aint
#define C_TYPE_Aints const MPI_Aint *
#define C_TYPE_CBuf const void *
#define C_TYPE_Buf void *
#define C_TYPE_Dt MPI_Datatype
#define C_TYPE_Dts const MPI_Datatype *
#define C_TYPE_Comm MPI_Comm
#define C_TYPE_Op MPI_Op
#define C_TYPE_Info MPI_Info
#define C_TYPE_Req MPI_Request *
#define C_TYPE_Status MPI_Status *
#define C_TYPE_Msg MPI_Message *
#define C_TYPE_Win MPI_Win
#define C_TYPE_WinOut MPI_Win *

/* The C parameter list and argument list of a row. MPI_Finalize's one
 * parameter is (Void, ): `void`, and no argument. */
#define C_TYPE_Void void
#define C_PARAM(k, n) , C_TYPE_##k n
#define C_ARG(k, n) , n
#define C_PARAMS(...) (RC_TAIL(RC_MAP(C_PARAM, __VA_ARGS__)))
#define C_ARGS(...) (RC_TAIL(RC_MAP(C_ARG, __VA_ARGS__)))

#endif
