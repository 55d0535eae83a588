/* What every C test program of the C API shares: the failure counter and
 * its CHECK and EXPECT macros, the page size, test memory, and the one
 * line each program ends with. Included by api_test.c, transport_test.c
 * dlopen_test.c and dlclose_test.c (from this directory: `#include "test_common.h"`).
 *
 * Header-only on purpose, and only macros and static inline functions:
 * dlopen_test.c must not link libregcache at startup (it is built with
 * -Wl,--as-needed and loads the library with dlopen), so nothing here may
 * reference a library symbol unless a program uses it. EXPECT calls
 * regcache_last_error and regcache_strerror, and is a macro for that
 * reason. A failed check does not stop the program: it is counted, named
 * with the process id (the transport test forks), file and line, and the
 * program's exit status says whether any failed (test_finish). */
#ifndef REGCACHE_TEST_COMMON_H
#define REGCACHE_TEST_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <regcache.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Failed checks so far; the page size, set by test_init. */
static int failures __attribute__((unused));
static size_t page __attribute__((unused));

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "[%d] %s:%d: CHECK failed: %s\n", (int)getpid(), __FILE__, \
                    __LINE__, #cond);                                                   \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

/* `call` returns `code`; otherwise print what it returned, with the
 * library's last error message. */
#define EXPECT(call, code)                                                              \
    do {                                                                                \
        regcache_result rc_ = (call);                                                   \
        if (rc_ != (code)) {                                                            \
            char d_[256];                                                               \
            size_t n_;                                                                  \
            d_[0] = '\0';                                                               \
            regcache_last_error(d_, sizeof d_, &n_);                                    \
            fprintf(stderr, "[%d] %s:%d: %s returned %d (%s; %s), expected %s\n",      \
                    (int)getpid(), __FILE__, __LINE__, #call, (int)rc_,                 \
                    regcache_strerror(rc_), d_, #code);                                 \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

static inline void *test_mmap_(void *at, size_t len, int flags, int fd, const char *file,
                               int line)
{
    void *p = mmap(at, len, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "[%d] %s:%d: mmap of %zu bytes failed: %s\n", (int)getpid(), file, line,
                len, strerror(errno));
        failures++;
    }
    return p;
}

/* `len` bytes of fresh private anonymous read-write memory (MAP_FAILED,
 * counted as a failure, when mmap fails). */
#define map_anon(len) test_mmap_(NULL, (len), MAP_PRIVATE | MAP_ANONYMOUS, -1, __FILE__, __LINE__)

/* Fresh anonymous memory exactly over [at, at + len) (MAP_FIXED: what was
 * there is replaced). */
#define map_anon_fixed(at, len)                                                         \
    test_mmap_((at), (len), MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, __FILE__, __LINE__)

/* The first `len` bytes of file `fd`, shared, read-write. */
#define map_shared(fd, len) test_mmap_(NULL, (len), MAP_SHARED, (fd), __FILE__, __LINE__)

/* Call first. */
static inline void test_init(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
}

/* The program's last line and exit status: `<name>: all checks passed`
 * and 0, or `<name>: N check(s) FAILED` and 1. */
static inline int test_finish(const char *name)
{
    if (failures) {
        fprintf(stderr, "%s: %d check(s) FAILED\n", name, failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
