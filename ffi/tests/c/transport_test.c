/* The intra-node transport through the C API: keyed DMA between a parent
 * (sender) and a forked child (receiver) that maps the key's memfd at a
 * different address, scatter-gather sends checked byte for byte,
 * shm_signal doorbells, every error path with NULL, overflowing and
 * out-of-domain arguments, double close and use after close, recv and
 * wait timeouts. Compiled against the installed header and regcache.pc;
 * run under ASan+UBSan and valgrind by `cargo xtask test`. */
#define _GNU_SOURCE
#include "test_common.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>


#define MS 1000000LL
#define NMSG 60
#define NBUF 4

/* Receive buffer geometry (offsets into the child's private area). */
static const size_t sec_off[3] = {100, 1000, 5000};
static const size_t sec_len[3] = {100, 3000, 1000};
#define CAPACITY (100 + 3000 + 1000)

/* Message `seq` is `len` bytes: a 4-byte little-endian seq, then
 * (seq * 31 + i) & 0xff. Its length cycles through sizes that end inside
 * each section, exactly at the capacity, and beyond it (truncated). */
static size_t msg_len(unsigned seq)
{
    static const size_t lens[] = {4, 100, 101, 3100, 3101, CAPACITY, CAPACITY + 900, 777};
    return lens[seq % (sizeof lens / sizeof lens[0])];
}

static void fill(unsigned char *m, unsigned seq, size_t len)
{
    for (size_t i = 0; i < len; i++)
        m[i] = (unsigned char)((seq * 31u + i) & 0xff);
    memcpy(m, &seq, 4);
}

static const int new_codes[] = {
    REGCACHE_ERR_TIMED_OUT,        REGCACHE_ERR_EXISTS,
    REGCACHE_ERR_NOT_FOUND,        REGCACHE_ERR_SHM,
    REGCACHE_ERR_SEGMENT_TOO_SMALL, REGCACHE_ERR_BAD_SHARED_LAYOUT,
    REGCACHE_ERR_KEY,              REGCACHE_ERR_NOT_SHARED,
    REGCACHE_ERR_KEY_IN_USE,       REGCACHE_ERR_REGISTRY_FULL,
    REGCACHE_ERR_NO_RECEIVER,      REGCACHE_ERR_NO_FREE_DESCRIPTOR,
    REGCACHE_ERR_CORRUPT_DESCRIPTOR, REGCACHE_ERR_CUT_OFF,
    REGCACHE_ERR_COPY_FAILED,      REGCACHE_ERR_UNBIND_BUSY,
    REGCACHE_ERR_TRANSPORT,
};

static void test_codes(void)
{
    const char *unknown = regcache_strerror(12345);
    for (size_t i = 0; i < sizeof new_codes / sizeof new_codes[0]; i++) {
        const char *s = regcache_strerror(new_codes[i]);
        CHECK(s != NULL && s[0] != '\0' && s != unknown);
        /* Appended after REGCACHE_ERR_BUFFER_TOO_SMALL (4720), no gaps. */
        CHECK(new_codes[i] == 4721 + (int)i);
    }
    CHECK(REGCACHE_ERR_BUFFER_TOO_SMALL == 4720);
}

static int make_memfd(size_t len)
{
    int fd = memfd_create("regcache-ctest", 0);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)len) == 0);
    return fd;
}

static int same_key(regcache_dma_key a, regcache_dma_key b)
{
    return a.dev == b.dev && a.ino == b.ino && a.offset == b.offset;
}

static void test_keys(int fd, unsigned char *map)
{
    regcache_dma_key k = {1, 2, 3}, k2, sentinel = {1, 2, 3};
    int x = 0;
    EXPECT(regcache_dma_key_from_fd(fd, 0, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_key_from_fd(-1, 0, &k), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_key_from_fd(1 << 20, 0, &k), REGCACHE_ERR_KEY); /* EBADF */
    EXPECT(regcache_dma_key_from_addr(NULL, &k), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_key_from_addr(map, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_key_from_addr(&x, &k), REGCACHE_ERR_NOT_SHARED); /* stack */
    CHECK(same_key(k, sentinel)); /* outputs only on success */
    EXPECT(regcache_dma_key_from_fd(fd, 4096 + 12, &k), REGCACHE_OK);
    EXPECT(regcache_dma_key_from_addr(map + 4096 + 12, &k2), REGCACHE_OK);
    CHECK(same_key(k, k2) && k.offset == 4096 + 12 && k.ino != 0);
}

static void test_config(void)
{
    regcache_dma_config c, d;
    EXPECT(regcache_dma_config_default(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    unsetenv("REGCACHE_TRANSPORT_CMA_MIN_BYTES");
    unsetenv("REGCACHE_TRANSPORT_FORCE_BOUNCE");
    EXPECT(regcache_dma_config_default(&c), REGCACHE_OK);
    CHECK(c.force_bounce == 0 && c.cma_min_bytes == 8192 && c.spin_iters > 0);
    CHECK(c.restock_wait_ns == 100 * MS && c.unbind_wait_ns == 10000 * MS);
    CHECK(c.assist_min_bytes == 262144 && c.assist_wait_ns == 10000 * MS);
    CHECK(c.reserved[0] == 0 && c.reserved[1] == 0);
    setenv("REGCACHE_TRANSPORT_CMA_MIN_BYTES", "0", 1);
    setenv("REGCACHE_TRANSPORT_FORCE_BOUNCE", "1", 1);
    setenv("REGCACHE_TRANSPORT_ASSIST_MIN_BYTES", "off", 1);
    EXPECT(regcache_dma_config_default(&d), REGCACHE_OK);
    CHECK(d.force_bounce == 1 && d.cma_min_bytes == 0 && d.assist_min_bytes == UINT64_MAX);
    unsetenv("REGCACHE_TRANSPORT_CMA_MIN_BYTES");
    unsetenv("REGCACHE_TRANSPORT_FORCE_BOUNCE");
    unsetenv("REGCACHE_TRANSPORT_ASSIST_MIN_BYTES");

    /* A malformed variable is an error naming it, never a silent default;
     * the output is left as it was. */
    setenv("REGCACHE_TRANSPORT_CMA_MIN_BYTES", "lots", 1);
    regcache_dma_config e = d;
    EXPECT(regcache_dma_config_default(&e), REGCACHE_ERR_CONFIG_ENV);
    CHECK(memcmp(&e, &d, sizeof e) == 0);
    char why[256];
    size_t n = 0;
    EXPECT(regcache_last_error(why, sizeof why, &n), REGCACHE_OK);
    CHECK(strstr(why, "REGCACHE_TRANSPORT_CMA_MIN_BYTES") != NULL);
    regcache_dma_registry *r = (regcache_dma_registry *)0x1;
    EXPECT(regcache_dma_registry_open("regcache-transport-test-badenv", REGCACHE_DMA_CREATE, NULL,
                                      &r),
           REGCACHE_ERR_CONFIG_ENV);
    CHECK(r == (regcache_dma_registry *)0x1);
    unsetenv("REGCACHE_TRANSPORT_CMA_MIN_BYTES");
}

static void test_registry_errors(const char *name)
{
    regcache_dma_registry *r = (regcache_dma_registry *)0x1;
    regcache_dma_config c;
    regcache_dma_stats st;
    EXPECT(regcache_dma_config_default(&c), REGCACHE_OK);
    EXPECT(regcache_dma_registry_open(NULL, REGCACHE_DMA_CREATE, NULL, &r),
           REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_CREATE, NULL, NULL),
           REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_registry_open("", REGCACHE_DMA_CREATE, NULL, &r),
           REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_registry_open("a/b", REGCACHE_DMA_CREATE, NULL, &r),
           REGCACHE_ERR_INVALID_ARGUMENT);
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    EXPECT(regcache_dma_registry_open(longname, REGCACHE_DMA_CREATE, NULL, &r),
           REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_registry_open("\xff\xfe", REGCACHE_DMA_CREATE, NULL, &r),
           REGCACHE_ERR_INVALID_ARGUMENT); /* not UTF-8 */
    EXPECT(regcache_dma_registry_open(name, 7, NULL, &r), REGCACHE_ERR_INVALID_ARGUMENT);
    c.force_bounce = 2;
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_CREATE, &c, &r),
           REGCACHE_ERR_INVALID_ARGUMENT);
    c.force_bounce = 0;
    c.reserved[1] = 1;
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_CREATE, &c, &r),
           REGCACHE_ERR_INVALID_ARGUMENT);
    c.reserved[1] = 0;
    c.assist_wait_ns = 0;
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_CREATE, &c, &r),
           REGCACHE_ERR_INVALID_ARGUMENT);
    c.assist_wait_ns = 1;
    c.unbind_wait_ns = 0;
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_CREATE, &c, &r),
           REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_OPEN, NULL, &r),
           REGCACHE_ERR_NOT_FOUND);
    EXPECT(regcache_dma_registry_unlink(name), REGCACHE_ERR_NOT_FOUND);
    EXPECT(regcache_dma_registry_unlink(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_registry_unlink("x/y"), REGCACHE_ERR_INVALID_ARGUMENT);
    CHECK(r == (regcache_dma_registry *)0x1);
    EXPECT(regcache_dma_registry_close(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_registry_stats(NULL, &st), REGCACHE_ERR_NULL_ARGUMENT);

    /* A file of the wrong size or contents is not a registry. */
    char path[256];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 1 << 20) == 0);
    close(fd);
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_OPEN, NULL, &r),
           REGCACHE_ERR_BAD_SHARED_LAYOUT);
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_CREATE, NULL, &r),
           REGCACHE_ERR_EXISTS);
    fd = open(path, O_RDWR | O_TRUNC);
    CHECK(fd >= 0 && ftruncate(fd, 64) == 0);
    close(fd);
    EXPECT(regcache_dma_registry_open(name, REGCACHE_DMA_OPEN, NULL, &r),
           REGCACHE_ERR_SEGMENT_TOO_SMALL);
    EXPECT(regcache_dma_registry_unlink(name), REGCACHE_OK);
    CHECK(r == (regcache_dma_registry *)0x1);
}

/* bind/send/recv errors on one process (no peer). */
static void test_local_errors(regcache_dma_registry *reg, regcache_dma_key key)
{
    size_t len = 4 * page;
    unsigned char *area = map_anon(len);
    CHECK(area != MAP_FAILED);
    regcache_iovec range = {area, len};
    regcache_iovec secs[9];
    for (int i = 0; i < 9; i++)
        secs[i] = (regcache_iovec){area + (size_t)i * 64, 64};
    regcache_dma_buffer buf = {secs, 2};
    regcache_dma_buffer bufs[33];
    for (int i = 0; i < 33; i++)
        bufs[i] = buf;
    regcache_dma_receiver *rx = (regcache_dma_receiver *)0x1, *rx2 = (regcache_dma_receiver *)0x1;
    regcache_iovec bad;

    EXPECT(regcache_dma_bind(NULL, key, &range, 1, &buf, 1, &rx), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &buf, 1, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, NULL, 1, &buf, 1, &rx), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, 1, NULL, 1, &rx), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, 0, &buf, 1, &rx), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, 5, &buf, 1, &rx), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, SIZE_MAX, &buf, 1, &rx),
           REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &buf, 0, &rx), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, 1, bufs, 33, &rx), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_bind(reg, key, &range, 1, bufs, SIZE_MAX, &rx),
           REGCACHE_ERR_INVALID_ARGUMENT);
    bad = (regcache_iovec){NULL, 64};
    EXPECT(regcache_dma_bind(reg, key, &bad, 1, &buf, 1, &rx), REGCACHE_ERR_INVALID_RANGE);
    bad = (regcache_iovec){area, 0};
    EXPECT(regcache_dma_bind(reg, key, &bad, 1, &buf, 1, &rx), REGCACHE_ERR_INVALID_RANGE);
    bad = (regcache_iovec){(void *)(UINTPTR_MAX - 10), 100};
    EXPECT(regcache_dma_bind(reg, key, &bad, 1, &buf, 1, &rx), REGCACHE_ERR_INVALID_RANGE);
    regcache_dma_buffer b2 = {secs, 0};
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &b2, 1, &rx), REGCACHE_ERR_INVALID_ARGUMENT);
    b2 = (regcache_dma_buffer){secs, 9};
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &b2, 1, &rx), REGCACHE_ERR_INVALID_ARGUMENT);
    b2 = (regcache_dma_buffer){NULL, 1};
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &b2, 1, &rx), REGCACHE_ERR_NULL_ARGUMENT);
    bad = (regcache_iovec){area + len - 10, 20}; /* straddles the range's end */
    b2 = (regcache_dma_buffer){&bad, 1};
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &b2, 1, &rx), REGCACHE_ERR_INVALID_ARGUMENT);
    bad = (regcache_iovec){(void *)(UINTPTR_MAX - 10), 100};
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &b2, 1, &rx), REGCACHE_ERR_INVALID_RANGE);
    CHECK(rx == (regcache_dma_receiver *)0x1);

    /* A good binding; the same key again is in use. */
    EXPECT(regcache_dma_bind(reg, key, &range, 1, bufs, 32, &rx), REGCACHE_OK);
    CHECK(rx != NULL && rx != (regcache_dma_receiver *)0x1);
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &buf, 1, &rx2), REGCACHE_ERR_KEY_IN_USE);
    CHECK(rx2 == (regcache_dma_receiver *)0x1);
    regcache_dma_key k2;
    EXPECT(regcache_dma_receiver_key(rx, &k2), REGCACHE_OK);
    CHECK(same_key(key, k2));
    EXPECT(regcache_dma_receiver_key(rx, NULL), REGCACHE_ERR_NULL_ARGUMENT);

    /* recv: nothing arrives (no other process sends); out untouched. */
    regcache_dma_delivery d = {.len = 77};
    EXPECT(regcache_dma_receiver_recv(rx, 0, &d), REGCACHE_ERR_TIMED_OUT);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    EXPECT(regcache_dma_receiver_recv(rx, 20 * MS, &d), REGCACHE_ERR_TIMED_OUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec) >= 20 * MS);
    CHECK(d.len == 77);
    EXPECT(regcache_dma_receiver_wait(rx, 0), REGCACHE_ERR_TIMED_OUT);
    EXPECT(regcache_dma_receiver_wait(rx, 5 * MS), REGCACHE_ERR_TIMED_OUT);
    EXPECT(regcache_dma_receiver_wait(NULL, 0), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_receiver_recv(rx, 0, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_receiver_recv(NULL, 0, &d), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_receiver_restock(rx, 32), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_receiver_restock(rx, UINT32_MAX), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_receiver_restock(rx, 0), REGCACHE_OK);
    uint32_t want = 9;
    EXPECT(regcache_dma_receiver_restock_requested(rx, &want), REGCACHE_OK);
    CHECK(want == 0);
    EXPECT(regcache_dma_receiver_restock_requested(rx, NULL), REGCACHE_ERR_NULL_ARGUMENT);

    /* send errors. The process's own binding never receives. */
    unsigned char msg[64] = {1};
    regcache_iovec src[2] = {{msg, 32}, {msg + 32, 32}};
    regcache_dma_send_report rep = {.copied = 5};
    EXPECT(regcache_dma_send(reg, key, src, 2, &rep), REGCACHE_ERR_NO_RECEIVER);
    EXPECT(regcache_dma_send(NULL, key, src, 2, &rep), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_send(reg, key, src, 2, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_send(reg, key, NULL, 2, &rep), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_dma_send(reg, key, src, 0, &rep), REGCACHE_ERR_INVALID_RANGE);
    regcache_iovec zero[2] = {{NULL, 0}, {msg, 0}};
    EXPECT(regcache_dma_send(reg, key, zero, 2, &rep), REGCACHE_ERR_INVALID_RANGE);
    regcache_iovec nul = {NULL, 5};
    EXPECT(regcache_dma_send(reg, key, &nul, 1, &rep), REGCACHE_ERR_INVALID_RANGE);
    regcache_iovec wrap = {(void *)(UINTPTR_MAX - 10), 100};
    EXPECT(regcache_dma_send(reg, key, &wrap, 1, &rep), REGCACHE_ERR_INVALID_RANGE);
    regcache_iovec high = {(void *)((uintptr_t)1 << 63), 100};
    EXPECT(regcache_dma_send(reg, key, &high, 1, &rep), REGCACHE_ERR_INVALID_RANGE);
    EXPECT(regcache_dma_send(reg, key, src, 1025, &rep), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_dma_send(reg, key, src, SIZE_MAX, &rep), REGCACHE_ERR_INVALID_ARGUMENT);
    regcache_dma_key nobody = key;
    nobody.offset += 1;
    EXPECT(regcache_dma_send(reg, nobody, src, 2, &rep), REGCACHE_ERR_NO_RECEIVER);
    CHECK(rep.copied == 5);

    /* Unbind; a closed receiver is an error, not a crash. */
    EXPECT(regcache_dma_receiver_unbind(rx), REGCACHE_OK);
    EXPECT(regcache_dma_receiver_unbind(rx), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_receiver_recv(rx, 0, &d), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_receiver_restock(rx, 0), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_receiver_wait(rx, 0), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_receiver_key(rx, &k2), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_receiver_restock_requested(rx, &want), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_receiver_unbind(NULL), REGCACHE_ERR_NULL_ARGUMENT);
    /* The wrong kind of object is refused too. */
    EXPECT(regcache_dma_receiver_recv((regcache_dma_receiver *)reg, 0, &d),
           REGCACHE_ERR_DESTROYED);
    /* The key is free again. */
    EXPECT(regcache_dma_bind(reg, key, &range, 1, &buf, 1, &rx), REGCACHE_OK);
    EXPECT(regcache_dma_receiver_unbind(rx), REGCACHE_OK);
    munmap(area, len);
}

static void test_signal_local(int fd)
{
    regcache_shm_signal *n = (regcache_shm_signal *)0x1, *s = NULL;
    regcache_irq_stats st = {.notifies = 42};
    uint32_t woke = 9;

    CHECK(REGCACHE_SHM_SIGNAL_SIZE == 192);
    EXPECT(regcache_shm_signal_open_fd(fd, 256, REGCACHE_SHM_SIGNAL_NORTH,
                                       REGCACHE_SHM_SIGNAL_CREATE, NULL),
           REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_shm_signal_open_fd(-1, 256, 0, 0, &n), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_shm_signal_open_fd(1 << 20, 256, 0, 0, &n), REGCACHE_ERR_SHM); /* EBADF */
    EXPECT(regcache_shm_signal_open_fd(fd, 256, 2, 0, &n), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_shm_signal_open_fd(fd, 256, 0, 5, &n), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_shm_signal_open_fd(fd, 257, 0, 0, &n), REGCACHE_ERR_SEGMENT_TOO_SMALL);
    EXPECT(regcache_shm_signal_open_fd(fd, 1 << 30, 0, 0, &n), REGCACHE_ERR_SEGMENT_TOO_SMALL);
    EXPECT(regcache_shm_signal_open_fd(fd, SIZE_MAX - 63, 0, 0, &n),
           REGCACHE_ERR_SEGMENT_TOO_SMALL);
    /* Zero-filled memory is no descriptor to attach to. */
    EXPECT(regcache_shm_signal_open_fd(fd, 512, 0, REGCACHE_SHM_SIGNAL_ATTACH, &n),
           REGCACHE_ERR_BAD_SHARED_LAYOUT);
    EXPECT(regcache_shm_signal_open_named(NULL, 0, 0, 0, &n), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_shm_signal_open_named("regcache-ctest-none", 0, 0, 0, &n),
           REGCACHE_ERR_NOT_FOUND);
    EXPECT(regcache_shm_signal_open_named("a/b", 0, 0, 0, &n), REGCACHE_ERR_INVALID_ARGUMENT);
    int empty = memfd_create("regcache-ctest-empty", 0);
    EXPECT(regcache_shm_signal_open_fd(empty, 0, 0, 0, &n), REGCACHE_ERR_SHM);
    close(empty);
    CHECK(n == (regcache_shm_signal *)0x1);

    /* A pair in one process: south rings north. */
    EXPECT(regcache_shm_signal_open_fd(fd, 256, REGCACHE_SHM_SIGNAL_NORTH,
                                       REGCACHE_SHM_SIGNAL_CREATE, &n),
           REGCACHE_OK);
    EXPECT(regcache_shm_signal_open_fd(fd, 256, REGCACHE_SHM_SIGNAL_SOUTH,
                                       REGCACHE_SHM_SIGNAL_ATTACH, &s),
           REGCACHE_OK);
    EXPECT(regcache_shm_signal_wait(n, 0), REGCACHE_ERR_TIMED_OUT);
    EXPECT(regcache_shm_signal_wait(n, 5 * MS), REGCACHE_ERR_TIMED_OUT);
    EXPECT(regcache_shm_signal_notify(s, &woke), REGCACHE_OK);
    CHECK(woke == 0); /* north is not asleep */
    EXPECT(regcache_shm_signal_notify(s, NULL), REGCACHE_OK);
    EXPECT(regcache_shm_signal_wait(n, -1), REGCACHE_OK);
    EXPECT(regcache_shm_signal_wait(n, 0), REGCACHE_ERR_TIMED_OUT); /* consumed */
    EXPECT(regcache_shm_signal_notify(s, NULL), REGCACHE_OK);
    EXPECT(regcache_shm_signal_wait(n, 0), REGCACHE_OK);
    EXPECT(regcache_shm_signal_stats(n, REGCACHE_SHM_SIGNAL_NORTH, &st), REGCACHE_OK);
    CHECK(st.notifies == 3 && st.sleeps >= 1);
    EXPECT(regcache_shm_signal_stats(s, REGCACHE_SHM_SIGNAL_SOUTH, &st), REGCACHE_OK);
    CHECK(st.notifies == 0);
    EXPECT(regcache_shm_signal_stats(n, 2, &st), REGCACHE_ERR_INVALID_ARGUMENT);
    EXPECT(regcache_shm_signal_stats(n, 0, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_shm_signal_stats(NULL, 0, &st), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_shm_signal_notify(NULL, NULL), REGCACHE_ERR_NULL_ARGUMENT);
    EXPECT(regcache_shm_signal_wait(NULL, 0), REGCACHE_ERR_NULL_ARGUMENT);

    EXPECT(regcache_shm_signal_close(n), REGCACHE_OK);
    EXPECT(regcache_shm_signal_close(n), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_shm_signal_notify(n, NULL), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_shm_signal_wait(n, 0), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_shm_signal_stats(n, 0, &st), REGCACHE_ERR_DESTROYED);
    /* The peer still works (its own mapping). */
    EXPECT(regcache_shm_signal_notify(s, NULL), REGCACHE_OK);
    EXPECT(regcache_shm_signal_close(s), REGCACHE_OK);
    EXPECT(regcache_shm_signal_close(NULL), REGCACHE_ERR_NULL_ARGUMENT);

    /* A named segment. */
    char name[64], path[80];
    snprintf(name, sizeof name, "regcache-ctest-sig-%d", (int)getpid());
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    int nfd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(nfd >= 0 && ftruncate(nfd, 4096) == 0);
    close(nfd);
    EXPECT(regcache_shm_signal_open_named(name, 64, REGCACHE_SHM_SIGNAL_SOUTH,
                                          REGCACHE_SHM_SIGNAL_CREATE, &s),
           REGCACHE_OK);
    EXPECT(regcache_shm_signal_open_named(name, 64, REGCACHE_SHM_SIGNAL_NORTH,
                                          REGCACHE_SHM_SIGNAL_ATTACH, &n),
           REGCACHE_OK);
    unlink(path);
    EXPECT(regcache_shm_signal_notify(n, NULL), REGCACHE_OK);
    EXPECT(regcache_shm_signal_wait(s, 1000 * MS), REGCACHE_OK);
    EXPECT(regcache_shm_signal_close(n), REGCACHE_OK);
    EXPECT(regcache_shm_signal_close(s), REGCACHE_OK);
}

/* The receiving child: its own registry handle, the key computed from its
 * own mapping of the memfd (at another address than the parent's), NBUF
 * scatter buffers. Returns the number of failures. */
static int child(const char *regname, int fd, unsigned char *parent_map, size_t maplen)
{
    regcache_dma_registry *reg;
    regcache_dma_receiver *rx;
    regcache_shm_signal *sig;
    regcache_dma_key key;

    unsigned char *map = map_shared(fd, maplen);
    CHECK(map != MAP_FAILED && map != parent_map);
    EXPECT(regcache_dma_key_from_addr(map + 4096, &key), REGCACHE_OK);
    EXPECT(regcache_dma_registry_open(regname, REGCACHE_DMA_OPEN, NULL, &reg), REGCACHE_OK);
    EXPECT(regcache_shm_signal_open_fd(fd, 0, REGCACHE_SHM_SIGNAL_SOUTH,
                                       REGCACHE_SHM_SIGNAL_ATTACH, &sig),
           REGCACHE_OK);

    size_t arealen = NBUF * 2 * page + 8192;
    unsigned char *area = map_anon(arealen);
    CHECK(area != MAP_FAILED);
    memset(area, 0xee, arealen);
    regcache_iovec ranges[2] = {{area, arealen / 2}, {area + arealen / 2, arealen / 2}};
    regcache_iovec secs[NBUF][3];
    regcache_dma_buffer bufs[NBUF];
    size_t stride = arealen / NBUF;
    for (int b = 0; b < NBUF; b++) {
        for (int s = 0; s < 3; s++)
            secs[b][s] = (regcache_iovec){area + (size_t)b * stride + sec_off[s], sec_len[s]};
        bufs[b] = (regcache_dma_buffer){secs[b], 3};
    }
    /* Each buffer must lie in one range: with stride = arealen/4 and
     * sections within [100, 6000) < stride, buffers 0,1 are in range 0. */
    CHECK(stride >= 6000);
    EXPECT(regcache_dma_bind(reg, key, ranges, 2, bufs, NBUF, &rx), REGCACHE_OK);
    /* The receiver keeps its registry mapping: closing the handle it was
     * bound through does not end it. */
    EXPECT(regcache_dma_registry_close(reg), REGCACHE_OK);
    EXPECT(regcache_shm_signal_notify(sig, NULL), REGCACHE_OK); /* bound */

    int seen[NMSG] = {0};
    unsigned char expect[CAPACITY + 1000];
    for (int got = 0; got < NMSG; got++) {
        regcache_dma_delivery d;
        regcache_result rc;
        if (got == 0) {
            /* The first one through the doorbell, then a non-blocking recv. */
            EXPECT(regcache_dma_receiver_wait(rx, 30000 * MS), REGCACHE_OK);
            rc = regcache_dma_receiver_recv(rx, 0, &d);
            if (rc == REGCACHE_ERR_TIMED_OUT)
                rc = regcache_dma_receiver_recv(rx, 30000 * MS, &d);
        } else {
            rc = regcache_dma_receiver_recv(rx, 30000 * MS, &d);
        }
        EXPECT(rc, REGCACHE_OK);
        if (rc != REGCACHE_OK)
            break;
        CHECK(d.index < NBUF && d.sender_pid == (uint32_t)getppid());
        CHECK(d.path == REGCACHE_DMA_PATH_CMA || d.path == REGCACHE_DMA_PATH_BOUNCE);
        CHECK(d.len >= 4 && d.len <= CAPACITY);
        /* Gather the sections back into one message. */
        unsigned char m[CAPACITY];
        size_t at = 0;
        for (int s = 0; s < 3 && at < d.len; s++) {
            size_t k = d.len - at < sec_len[s] ? d.len - at : sec_len[s];
            memcpy(m + at, secs[d.index][s].base, k);
            at += k;
        }
        unsigned seq;
        memcpy(&seq, m, 4);
        CHECK(seq < NMSG);
        if (seq < NMSG) {
            size_t want = msg_len(seq) < CAPACITY ? msg_len(seq) : CAPACITY;
            CHECK(d.len == want);
            CHECK(!seen[seq]);
            seen[seq] = 1;
            fill(expect, seq, msg_len(seq));
            CHECK(memcmp(m, expect, d.len) == 0);
        }
        /* Bytes past the message in its last section are untouched or
         * from an earlier message, never beyond the section: check the
         * guard bytes between sections stay 0xee. */
        unsigned char *base = area + (size_t)d.index * stride;
        CHECK(base[0] == 0xee && base[99] == 0xee && base[200] == 0xee && base[4000] == 0xee &&
              base[6000] == 0xee);
        EXPECT(regcache_dma_receiver_restock(rx, d.index), REGCACHE_OK);
    }
    int all = 1;
    for (int i = 0; i < NMSG; i++)
        all &= seen[i];
    CHECK(all);
    regcache_dma_delivery d;
    EXPECT(regcache_dma_receiver_recv(rx, 0, &d), REGCACHE_ERR_TIMED_OUT);
    EXPECT(regcache_dma_receiver_recv(rx, 10 * MS, &d), REGCACHE_ERR_TIMED_OUT);
    EXPECT(regcache_dma_receiver_unbind(rx), REGCACHE_OK);
    EXPECT(regcache_dma_receiver_unbind(rx), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_shm_signal_notify(sig, NULL), REGCACHE_OK); /* unbound */
    EXPECT(regcache_shm_signal_close(sig), REGCACHE_OK);
    EXPECT(regcache_dma_registry_close(reg), REGCACHE_ERR_DESTROYED);
    munmap(area, arealen);
    munmap(map, maplen);
    return failures;
}

static void test_fork(const char *regname)
{
    size_t maplen = 16 * page;
    int fd = make_memfd(maplen);
    unsigned char *map = map_shared(fd, maplen);
    CHECK(map != MAP_FAILED);
    regcache_dma_key key;
    EXPECT(regcache_dma_key_from_fd(fd, 4096, &key), REGCACHE_OK);

    regcache_dma_config cfg;
    regcache_dma_registry *reg, *cma, *bounce;
    EXPECT(regcache_dma_config_default(&cfg), REGCACHE_OK);
    cfg.restock_wait_ns = 2000 * MS;
    EXPECT(regcache_dma_registry_open(regname, REGCACHE_DMA_CREATE, &cfg, &reg), REGCACHE_OK);
    EXPECT(regcache_dma_registry_open(regname, REGCACHE_DMA_CREATE, &cfg, &cma),
           REGCACHE_ERR_EXISTS);
    cfg.cma_min_bytes = 0;
    EXPECT(regcache_dma_registry_open(regname, REGCACHE_DMA_OPEN_OR_CREATE, &cfg, &cma),
           REGCACHE_OK);
    cfg.force_bounce = 1;
    EXPECT(regcache_dma_registry_open(regname, REGCACHE_DMA_OPEN, &cfg, &bounce), REGCACHE_OK);

    regcache_shm_signal *sig;
    EXPECT(regcache_shm_signal_open_fd(fd, 0, REGCACHE_SHM_SIGNAL_NORTH,
                                       REGCACHE_SHM_SIGNAL_CREATE, &sig),
           REGCACHE_OK);

    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        /* exit, not _exit: library destructors run, so valgrind (which
         * checks the child too) sees no leak from skipped destructors. */
        exit(child(regname, fd, map, maplen) ? 1 : 0);

    EXPECT(regcache_shm_signal_wait(sig, 30000 * MS), REGCACHE_OK); /* child bound */
    unsigned char m[CAPACITY + 1000];
    unsigned sent[3] = {0};
    for (unsigned seq = 0; seq < NMSG; seq++) {
        size_t len = msg_len(seq);
        fill(m, seq, len);
        /* Three uneven pieces and an empty one with a NULL base. */
        size_t a = len / 3, b = len / 2;
        regcache_iovec src[4] = {{m, a}, {NULL, 0}, {m + a, b - a}, {m + b, len - b}};
        regcache_dma_registry *via = seq % 3 == 0 ? reg : seq % 3 == 1 ? cma : bounce;
        regcache_dma_send_report rep;
        regcache_result rc;
        /* A slow receiver (valgrind) may hold every buffer: back off. */
        while ((rc = regcache_dma_send(via, key, src, 4, &rep)) == REGCACHE_ERR_NO_FREE_DESCRIPTOR)
            usleep(1000);
        EXPECT(rc, REGCACHE_OK);
        if (rc != REGCACHE_OK)
            break;
        sent[seq % 3]++;
        CHECK(rep.copied == (len < CAPACITY ? len : CAPACITY));
        CHECK(rep.truncated == (len > CAPACITY));
        CHECK(rep.index < NBUF && rep.reserved == 0);
        CHECK(rep.retried <= 1);
        if (via == bounce)
            CHECK(rep.path == REGCACHE_DMA_PATH_BOUNCE);
        if (via == reg && len < 8192)
            CHECK(rep.path == REGCACHE_DMA_PATH_BOUNCE); /* under cma_min_bytes */
    }
    EXPECT(regcache_shm_signal_wait(sig, 30000 * MS), REGCACHE_OK); /* child unbound */
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    regcache_dma_stats st;
    regcache_dma_registry *via[3] = {reg, cma, bounce};
    for (int i = 0; i < 3; i++) {
        EXPECT(regcache_dma_registry_stats(via[i], &st), REGCACHE_OK);
        CHECK(st.cma_sends + st.bounce_sends == sent[i]);
        CHECK(st.cutoffs == 0 && st.reserved[0] == 0);
    }
    EXPECT(regcache_dma_registry_stats(cma, &st), REGCACHE_OK);
    /* Single copy needs ptrace permission over the child; where it is
     * refused (EPERM) the send bounces and counts a refusal. */
    printf("transport_test: %u sends through cma_min_bytes=0: %llu single-copy, %llu bounced "
           "(%llu EPERM refusals)\n",
           sent[1], (unsigned long long)st.cma_sends, (unsigned long long)st.bounce_sends,
           (unsigned long long)st.cma_refusals);
    CHECK(st.cma_sends > 0 || st.cma_refusals > 0);
    EXPECT(regcache_dma_registry_stats(bounce, &st), REGCACHE_OK);
    CHECK(st.cma_sends == 0 && st.bounce_sends == sent[2]);
    EXPECT(regcache_dma_registry_stats(reg, NULL), REGCACHE_ERR_NULL_ARGUMENT);

    /* The child unbound: nobody receives. */
    regcache_iovec one = {m, 10};
    regcache_dma_send_report rep;
    EXPECT(regcache_dma_send(reg, key, &one, 1, &rep), REGCACHE_ERR_NO_RECEIVER);

    /* Close twice; a closed registry is an error, not a crash. */
    EXPECT(regcache_dma_registry_close(cma), REGCACHE_OK);
    EXPECT(regcache_dma_registry_close(cma), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_registry_stats(cma, &st), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_send(cma, key, &one, 1, &rep), REGCACHE_ERR_DESTROYED);
    regcache_dma_receiver *rx;
    regcache_iovec r = {m, sizeof m};
    regcache_dma_buffer b = {&r, 1};
    EXPECT(regcache_dma_bind(cma, key, &r, 1, &b, 1, &rx), REGCACHE_ERR_DESTROYED);
    EXPECT(regcache_dma_registry_close(bounce), REGCACHE_OK);
    EXPECT(regcache_dma_registry_unlink(regname), REGCACHE_OK);
    EXPECT(regcache_dma_registry_unlink(regname), REGCACHE_ERR_NOT_FOUND);
    /* An unlinked registry's open handle still works. */
    EXPECT(regcache_dma_registry_stats(reg, &st), REGCACHE_OK);
    EXPECT(regcache_dma_registry_close(reg), REGCACHE_OK);
    EXPECT(regcache_shm_signal_close(sig), REGCACHE_OK);
    munmap(map, maplen);
    close(fd);
}

int main(void)
{
    test_init();
    char regname[64];
    snprintf(regname, sizeof regname, "regcache-ctest-dma-%d", (int)getpid());

    test_codes();
    test_config();
    int fd = make_memfd(16 * page);
    unsigned char *map = map_shared(fd, 16 * page);
    CHECK(map != MAP_FAILED);
    test_keys(fd, map);
    test_registry_errors(regname);
    regcache_dma_registry *reg;
    EXPECT(regcache_dma_registry_open(regname, REGCACHE_DMA_OPEN_OR_CREATE, NULL, &reg),
           REGCACHE_OK);
    regcache_dma_key key;
    EXPECT(regcache_dma_key_from_fd(fd, 8192, &key), REGCACHE_OK);
    test_local_errors(reg, key);
    EXPECT(regcache_dma_registry_close(reg), REGCACHE_OK);
    EXPECT(regcache_dma_registry_unlink(regname), REGCACHE_OK);
    test_signal_local(fd);
    munmap(map, 16 * page);
    close(fd);

    test_fork(regname);

    return test_finish("transport_test");
}
