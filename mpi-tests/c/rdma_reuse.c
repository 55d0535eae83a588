/* The case a stale registration cache corrupts, over a real RDMA BTL: two
 * ranks exchange messages (MPI_Sendrecv, both directions at once) from
 * buffers that are freed between exchanges, so the next buffer is new
 * memory, usually at the same virtual address. Large messages go through
 * the BTL's rendezvous protocol, which registers the user buffers through
 * the rcache (with mpi_leave_pinned, registrations are cached and reused
 * by address); a cache that misses the unmap hands the HCA the old pages
 * and the receiver gets the previous exchange's bytes. Every byte of every
 * message is checked against a pattern unique to (exchange, rank, kind).
 *
 * Two kinds of buffer, alternating:
 *   mmap   — mmap, munmap, then mmap again with the old address as a hint
 *            (MAP_FIXED_NOREPLACE: the same address unless something else
 *            took it);
 *   malloc — malloc/free with the mmap threshold pinned low, so glibc
 *            serves every message from a fresh mapping and free unmaps it
 *            (the address comes back by chance, as it does in real code).
 * Sizes alternate, two exchanges each, between 256 KiB and 1 MiB, above
 * every eager limit; mmap buffers are always mapped 1 MiB long, so that
 * they can come back at the same address whatever the message size.
 *
 * Usage: rdma_reuse [EXCHANGES [raw]]   (default 20 per kind). With `raw`
 * the mmap buffers are mapped and unmapped by raw system calls
 * (syscall(SYS_munmap)), which Open MPI's memory patcher does not see (it
 * patches the libc functions): an rcache that relies on those hooks keeps
 * serving the old registration, and this program must then report bad
 * bytes — the negative control that shows the check can fail. An rcache
 * with an invalidation source in the kernel (userfaultfd's unmap events,
 * the ummunotify device) still sees them. Each rank prints
 * "rdma_reuse: rank R: KIND: N exchanges, S same-address reuses, B bad
 * bytes, T s"; rank 0 prints "rdma_reuse: PASSED (2 ranks)" or FAILED and
 * the exit status of rank 0 is non-zero on failure. */
#define _GNU_SOURCE
#include <mpi.h>

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

enum kind { KIND_MMAP, KIND_MALLOC };
static const char *const kind_name[] = {"mmap", "malloc"};

/* 1: map and unmap the mmap buffers with raw system calls. */
static int raw;

static void *map(void *addr, size_t len, int flags)
{
    if (raw)
        return (void *)syscall(SYS_mmap, addr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
    return mmap(addr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
}

static void unmap(void *addr, size_t len)
{
    if (raw)
        syscall(SYS_munmap, addr, len);
    else
        munmap(addr, len);
}

#define MAX_LEN ((size_t)1 << 20)

/* Two exchanges of 256 KiB, two of 1 MiB, and so on. */
static size_t size_of(int i) { return i % 4 < 2 ? (size_t)256 << 10 : MAX_LEN; }

/* The byte at `off` of the message sent by `rank` in exchange `i`: differs
 * between exchanges, ranks and kinds at every offset. */
static unsigned char pattern(int i, int rank, int kind, size_t off)
{
    uint32_t x = (uint32_t)off * 2654435761u ^ (uint32_t)(i * 131 + rank * 17 + kind * 7919);
    return (unsigned char)(x ^ (x >> 11) ^ (x >> 23));
}

/* A buffer of `len` bytes of `kind`; `*hint` is the previous mmap buffer's
 * address (or NULL) and becomes this one's. */
static void *get_buf(int kind, size_t len, void **hint)
{
    if (kind == KIND_MALLOC)
        return malloc(len);
    void *p = MAP_FAILED;
    len = MAX_LEN;
    if (*hint)
        p = map(*hint, len, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE);
    if (p == MAP_FAILED)
        p = map(NULL, len, MAP_PRIVATE | MAP_ANONYMOUS);
    if (p == MAP_FAILED)
        return NULL;
    *hint = p;
    return p;
}

static void put_buf(int kind, void *p)
{
    if (kind == KIND_MALLOC)
        free(p);
    else
        unmap(p, MAX_LEN);
}

int main(int argc, char **argv)
{
    int rank, size, ok = 1, all = 0;
    int n = argc > 1 ? atoi(argv[1]) : 20;
    raw = argc > 2 && strcmp(argv[2], "raw") == 0;

    /* Every malloc above 64 KiB is its own mapping, unmapped by free
     * (a fixed threshold also stops glibc raising it dynamically). */
    mallopt(M_MMAP_THRESHOLD, 64 << 10);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2 || n < 1) {
        if (rank == 0)
            fprintf(stderr, "rdma_reuse: needs 2 ranks and EXCHANGES >= 1 (got %d, %d)\n",
                    size, n);
        MPI_Finalize();
        return 2;
    }
    int peer = 1 - rank;
    for (int kind = KIND_MMAP; kind <= KIND_MALLOC; kind++) {
        void *send_hint = NULL, *recv_hint = NULL;
        uintptr_t last_send = 0, last_recv = 0;
        long same = 0, bad = 0;
        double t0 = MPI_Wtime();
        for (int i = 0; i < n; i++) {
            size_t len = size_of(i);
            unsigned char *out = get_buf(kind, len, &send_hint);
            unsigned char *in = get_buf(kind, len, &recv_hint);
            if (!out || !in) {
                fprintf(stderr, "rdma_reuse: rank %d: FAILED: allocating %zu bytes\n", rank, len);
                MPI_Abort(MPI_COMM_WORLD, 3);
            }
            same += i > 0 && (uintptr_t)out == last_send;
            same += i > 0 && (uintptr_t)in == last_recv;
            last_send = (uintptr_t)out;
            last_recv = (uintptr_t)in;
            for (size_t off = 0; off < len; off++)
                out[off] = pattern(i, rank, kind, off);
            memset(in, 0, len);
            MPI_Sendrecv(out, (int)len, MPI_BYTE, peer, i, in, (int)len, MPI_BYTE, peer, i,
                         MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            long wrong = 0;
            size_t first = len;
            for (size_t off = 0; off < len; off++)
                if (in[off] != pattern(i, peer, kind, off)) {
                    if (!wrong)
                        first = off;
                    wrong++;
                }
            if (wrong) {
                fprintf(stderr,
                        "rdma_reuse: rank %d: FAILED: %s exchange %d (%zu bytes at %p): "
                        "%ld bad bytes from offset %zu\n",
                        rank, kind_name[kind], i, len, (void *)in, wrong, first);
                ok = 0;
            }
            bad += wrong;
            put_buf(kind, out);
            put_buf(kind, in);
        }
        printf("rdma_reuse: rank %d: %s%s: %d exchanges, %ld of %d same-address reuses, "
               "%ld bad bytes, %.3f s\n",
               rank, kind_name[kind], raw && kind == KIND_MMAP ? " (raw syscalls)" : "", n, same,
               2 * (n - 1), bad, MPI_Wtime() - t0);
        fflush(stdout);
    }
    MPI_Reduce(&ok, &all, 1, MPI_INT, MPI_LAND, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("rdma_reuse: %s (%d ranks)\n", all ? "PASSED" : "FAILED", size);
    MPI_Finalize();
    return all || rank != 0 ? 0 : 1;
}
