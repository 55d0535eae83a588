/* rcache_component_test.c — the regcache rcache component driven through
 * Open MPI's own rcache framework, as a BTL drives it.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Run under mpirun (every rank runs the same checks on its own memory)
 * with the component's folder in mca_base_component_path. The program is
 * the BTL: it creates the rcache with mca_rcache_base_module_create
 * ("regcache", ...) and its own register_mem/deregister_mem, which mlock
 * and munlock the range (real pinning) and count calls; a registration
 * is its own subclass with a magic word, so a double deregistration or a
 * foreign registration is caught.
 *
 *   rcache_component_test basic     register, hit, find, deregister,
 *                                   evict, access upgrade, then munmap
 *                                   and re-map registered buffers (idle
 *                                   and in use) at the same address: the
 *                                   next register must call register_mem
 *   rcache_component_test bad       refused access bits and flags,
 *                                   register_mem out of resources (then
 *                                   fine after an eviction, or not),
 *                                   register_mem failing hard, cache
 *                                   bypass, a foreign deregister
 *   rcache_component_test threads   4 threads register, find and
 *                                   deregister overlapping ranges of one
 *                                   buffer and evict, concurrently: every
 *                                   reference comes back, nothing leaks
 *   rcache_component_test two       two rcache modules in one process (Open
 *                                   MPI makes one per device), one
 *                                   invalidation source: a munmap + re-map
 *                                   makes both register afresh
 *   rcache_component_test uncached  the component runs without a cache
 *                                   (bad configuration): every register
 *                                   calls register_mem, nothing is kept
 *   rcache_component_test absent    the component refused to open: no
 *                                   module, and the job still runs
 *
 * Every mode ends with every registration deregistered exactly once
 * (counted by this program, not by the component). Prints
 * "rcache_component_test <mode>: PASSED (N ranks)" from rank 0. */

#define _GNU_SOURCE
#include "opal_config.h"

#include <errno.h>
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "opal/constants.h"
#include "opal/mca/rcache/base/base.h"
#include "opal/mca/rcache/rcache.h"

#define MAGIC 0x42544c52u /* "RLTB" */

/* The BTL's registration subclass. */
struct test_reg {
  mca_rcache_base_registration_t base;
  unsigned magic;
  size_t locked;
};

/* The BTL's state (reg_data); atomics, since the threads mode calls
 * register_mem and deregister_mem from several threads. */
static struct {
  _Atomic long registers, registers_ok, deregisters, live;
  _Atomic long max_live; /* > 0: register_mem fails OUT_OF_RESOURCE at this many live */
  _Atomic int fail_hard; /* register_mem fails with OPAL_ERR_NOT_SUPPORTED */
  _Atomic int errors;
} btl;

static int rank;
static mca_rcache_base_module_t *rc, *rc2;

#define CHECK(cond, ...)                                                                       \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      fprintf(stderr, "rcache_component_test: rank %d: %s:%d: check failed: %s: ", rank,       \
              __FILE__, __LINE__, #cond);                                                      \
      fprintf(stderr, __VA_ARGS__);                                                            \
      fprintf(stderr, "\n");                                                                   \
      btl.errors++;                                                                            \
    }                                                                                          \
  } while (0)

static int test_register_mem(void *reg_data, void *base, size_t size,
                             mca_rcache_base_registration_t *reg) {
  struct test_reg *r = (struct test_reg *)reg;
  CHECK(reg_data == &btl, "reg_data %p", reg_data);
  CHECK(reg->base == base && reg->bound == (unsigned char *)base + size - 1,
        "reg [%p, %p] for [%p, +%zu)", (void *)reg->base, (void *)reg->bound, base, size);
  CHECK(NULL == rc || reg->rcache == rc || reg->rcache == rc2, "reg->rcache %p",
        (void *)reg->rcache);
  btl.registers++;
  if (btl.fail_hard) {
    return OPAL_ERR_NOT_SUPPORTED;
  }
  if (btl.max_live > 0 && btl.live >= btl.max_live) {
    return OPAL_ERR_OUT_OF_RESOURCE;
  }
  if (0 != mlock(base, size)) {
    return (ENOMEM == errno || EAGAIN == errno) ? OPAL_ERR_OUT_OF_RESOURCE : OPAL_ERROR;
  }
  r->magic = MAGIC;
  r->locked = size;
  btl.registers_ok++;
  btl.live++;
  return OPAL_SUCCESS;
}

static int test_deregister_mem(void *reg_data, mca_rcache_base_registration_t *reg) {
  struct test_reg *r = (struct test_reg *)reg;
  CHECK(reg_data == &btl, "reg_data %p", reg_data);
  CHECK(MAGIC == r->magic, "deregister_mem of %p: not a live registration (magic %x)",
        (void *)reg, r->magic);
  if (MAGIC != r->magic) {
    return OPAL_ERROR;
  }
  /* The range may be unmapped already (invalidated): munlock then fails
   * with ENOMEM, and the pages were unlocked by munmap. */
  (void)munlock(reg->base, r->locked);
  r->magic = 0;
  btl.deregisters++;
  btl.live--;
  return OPAL_SUCCESS;
}

static size_t page;

static char *map(size_t pages) {
  char *p = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (MAP_FAILED == p) {
    perror("mmap");
    exit(2);
  }
  memset(p, 0x5a, pages * page);
  return p;
}

/* munmap then map again at the same address (MAP_FIXED_NOREPLACE: never
 * over someone else's mapping). */
static int remap_same(char *p, size_t pages) {
  if (0 != munmap(p, pages * page)) {
    perror("munmap");
    return -1;
  }
  char *q = mmap(p, pages * page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (q != p) {
    fprintf(stderr, "rank %d: cannot re-map %p (got %p, %s)\n", rank, (void *)p, (void *)q,
            strerror(errno));
    return -1;
  }
  memset(q, 0xa5, pages * page);
  return 0;
}

static void evict_all(void) {
  int n = 0;
  while (rc->rcache_evict(rc) && n < 100000) {
    n++;
  }
}

static mca_rcache_base_registration_t *reg_ok(void *addr, size_t size, uint32_t flags,
                                              int32_t access) {
  mca_rcache_base_registration_t *r = NULL;
  int ret = rc->rcache_register(rc, addr, size, flags, access, &r);
  CHECK(OPAL_SUCCESS == ret && NULL != r, "register [%p, +%zu) flags %x access %x: %d",
        addr, size, flags, access, ret);
  if (NULL != r) {
    CHECK(r->base <= (unsigned char *)addr &&
              r->bound >= (unsigned char *)addr + size - 1,
          "registration [%p, %p] does not cover [%p, +%zu)", (void *)r->base,
          (void *)r->bound, addr, size);
    CHECK((r->access_flags & access) == access, "access_flags %x lacks %x", r->access_flags,
          access);
    CHECK(MAGIC == ((struct test_reg *)r)->magic, "not registered by register_mem");
  }
  return r;
}

static void dereg_ok(mca_rcache_base_registration_t *r) {
  if (NULL != r) {
    int ret = rc->rcache_deregister(rc, r);
    CHECK(OPAL_SUCCESS == ret, "deregister %p: %d", (void *)r, ret);
  }
}

static void basic(void) {
  char *a = map(4);
  /* A miss registers; a repeat is a hit on the same registration. */
  long before = btl.registers;
  mca_rcache_base_registration_t *r1 = reg_ok(a + 100, 8000, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  CHECK(btl.registers == before + 1, "miss: %ld register_mem calls", btl.registers - before);
  mca_rcache_base_registration_t *r2 = reg_ok(a + 200, 4000, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  CHECK(r2 == r1, "hit: a different registration %p != %p", (void *)r2, (void *)r1);
  CHECK(btl.registers == before + 1, "hit called register_mem");
  CHECK(2 == r1->ref_count, "ref_count %d after two registers", r1->ref_count);
  /* find takes a reference too and never registers. */
  mca_rcache_base_registration_t *f = NULL;
  CHECK(OPAL_SUCCESS == rc->rcache_find(rc, a + 300, 10, &f) && f == r1, "find gave %p",
        (void *)f);
  CHECK(3 == r1->ref_count, "ref_count %d after find", r1->ref_count);
  char *unreg = map(1);
  mca_rcache_base_registration_t *none = (void *)1;
  CHECK(OPAL_SUCCESS == rc->rcache_find(rc, unreg, 10, &none) && NULL == none,
        "find of unregistered memory gave %p", (void *)none);
  CHECK(btl.registers == before + 1, "find called register_mem");
  dereg_ok(f);
  dereg_ok(r2);
  dereg_ok(r1);
  CHECK(0 == btl.deregisters, "deregister of a cached registration called deregister_mem");
  /* Idle and cached: a new register inside it is a hit. */
  r1 = reg_ok(a, 2 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  CHECK(btl.registers == before + 1, "idle registration not reused");
  dereg_ok(r1);

  /* More access than cached: a fresh registration with the union, and
   * the access bits mapped back to Open MPI's. */
  r1 = reg_ok(a, page, 0, MCA_RCACHE_ACCESS_REMOTE_READ | MCA_RCACHE_ACCESS_REMOTE_WRITE);
  CHECK(btl.registers == before + 2, "access upgrade: %ld register_mem calls",
        btl.registers - before);
  if (NULL != r1) {
    CHECK((r1->access_flags & (MCA_RCACHE_ACCESS_REMOTE_READ | MCA_RCACHE_ACCESS_REMOTE_WRITE)) ==
              (MCA_RCACHE_ACCESS_REMOTE_READ | MCA_RCACHE_ACCESS_REMOTE_WRITE),
          "access_flags %x", r1->access_flags);
  }
  dereg_ok(r1);

  /* evict deregisters idle registrations, one per call, then says no. */
  evict_all();
  CHECK(0 == btl.live, "%ld registrations live after evicting everything", btl.live);
  CHECK(!rc->rcache_evict(rc), "evict with nothing cached said true");
  long deregs = btl.deregisters;
  r1 = reg_ok(a, page, 0, 0);
  dereg_ok(r1);
  CHECK(rc->rcache_evict(rc), "evict of an idle registration said false");
  CHECK(btl.deregisters == deregs + 1, "evict: %ld deregister_mem calls",
        btl.deregisters - deregs);
  CHECK(!rc->rcache_evict(rc), "second evict said true");

  /* munmap + re-map an idle registered buffer at the same address: the
   * next register is a fresh registration. */
  r1 = reg_ok(a, 4 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  dereg_ok(r1);
  before = btl.registers;
  deregs = btl.deregisters;
  if (0 == remap_same(a, 4)) {
    r2 = reg_ok(a, 4 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
    CHECK(btl.registers == before + 1,
          "register after munmap+mmap at the same address was served from the cache "
          "(register_mem calls %ld)",
          btl.registers - before);
    CHECK(btl.deregisters >= deregs + 1, "the unmapped idle registration was not deregistered");
    dereg_ok(r2);
  } else {
    btl.errors++;
  }

  /* The same while the registration is in use: the new register is
   * fresh, the old one dies at its last deregister. */
  char *b = map(2);
  mca_rcache_base_registration_t *held = reg_ok(b, 2 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  before = btl.registers;
  deregs = btl.deregisters;
  if (0 == remap_same(b, 2)) {
    r2 = reg_ok(b, 2 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
    CHECK(btl.registers == before + 1 && r2 != held,
          "register after munmap+mmap of an in-use registration was not fresh");
    dereg_ok(r2);
    dereg_ok(held);
    evict_all();
    CHECK(btl.deregisters >= deregs + 2, "the in-use invalidated registration was not "
                                         "deregistered after its last reference (%ld)",
          btl.deregisters - deregs);
  } else {
    btl.errors++;
    dereg_ok(held);
  }
  munmap(a, 4 * page);
  munmap(b, 2 * page);
  munmap(unreg, page);
}

static void bad(void) {
  char *a = map(4);
  mca_rcache_base_registration_t *r = (void *)1;
  long before = btl.registers;
  /* Access bits Open MPI's interface does not define. */
  int ret = rc->rcache_register(rc, a, page, 0, 0x10 | MCA_RCACHE_ACCESS_LOCAL_WRITE, &r);
  CHECK(OPAL_ERR_BAD_PARAM == ret && NULL == r, "access 0x11: %d %p", ret, (void *)r);
  /* A flag no caller may pass. */
  r = (void *)1;
  ret = rc->rcache_register(rc, a, page, MCA_RCACHE_FLAGS_INVALID, 0, &r);
  CHECK(OPAL_ERR_BAD_PARAM == ret && NULL == r, "flags INVALID: %d", ret);
  ret = rc->rcache_register(rc, a, 0, 0, 0, &r);
  CHECK(OPAL_ERR_BAD_PARAM == ret && NULL == r, "size 0: %d", ret);
  CHECK(btl.registers == before, "a refused request called register_mem");

  /* register_mem out of resources: an idle registration is evicted and
   * the registration retried. */
  evict_all();
  mca_rcache_base_registration_t *idle = reg_ok(a, page, 0, 0);
  dereg_ok(idle);
  long deregs = btl.deregisters;
  btl.max_live = 1;
  r = reg_ok(a + 2 * page, page, 0, 0);
  CHECK(btl.deregisters == deregs + 1, "out of resources did not evict the idle registration");
  /* ... and with nothing idle to evict: a clean OUT_OF_RESOURCE. */
  mca_rcache_base_registration_t *r2 = (void *)1;
  ret = rc->rcache_register(rc, a + 3 * page, page, 0, 0, &r2);
  CHECK(OPAL_ERR_OUT_OF_RESOURCE == ret && NULL == r2, "nothing evictable: %d", ret);
  btl.max_live = 0;
  dereg_ok(r);

  /* register_mem failing hard: its own error, nothing kept; then fine. */
  evict_all();
  btl.fail_hard = 1;
  r = (void *)1;
  ret = rc->rcache_register(rc, a, page, 0, 0, &r);
  CHECK(OPAL_ERR_NOT_SUPPORTED == ret && NULL == r, "hard failure: %d (want %d)", ret,
        OPAL_ERR_NOT_SUPPORTED);
  btl.fail_hard = 0;
  r = reg_ok(a, page, 0, 0);
  dereg_ok(r);

  /* Cache bypass: direct registrations, deregistered at once. */
  before = btl.registers;
  deregs = btl.deregisters;
  r = reg_ok(a, page, MCA_RCACHE_FLAGS_CACHE_BYPASS, 0);
  r2 = reg_ok(a, page, MCA_RCACHE_FLAGS_CACHE_BYPASS, 0);
  CHECK(btl.registers == before + 2 && r != r2, "bypass was cached");
  CHECK(NULL == r || (r->flags & MCA_RCACHE_FLAGS_CACHE_BYPASS), "bypass flag not in reg->flags");
  dereg_ok(r);
  dereg_ok(r2);
  CHECK(btl.deregisters == deregs + 2, "bypass registrations not deregistered at once");
  /* PERSIST and SO_MEM go the same direct way. */
  r = reg_ok(a, page, MCA_RCACHE_FLAGS_PERSIST | MCA_RCACHE_FLAGS_SO_MEM, 0);
  CHECK(NULL == r || (r->flags & MCA_RCACHE_FLAGS_SO_MEM), "SO_MEM not passed to register_mem");
  dereg_ok(r);

  /* A registration this rcache never made. */
  struct test_reg foreign;
  memset(&foreign, 0, sizeof foreign);
  ret = rc->rcache_deregister(rc, &foreign.base);
  CHECK(OPAL_ERR_BAD_PARAM == ret, "foreign deregister: %d", ret);
  munmap(a, 4 * page);
}

/* One thread of the threads mode: random overlapping ranges of `shared`
 * (64 pages), each taken by register (and sometimes find) and given back
 * in full. */
static char *shared;

static void *worker(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 7919u + (unsigned)rank;
  for (int i = 0; i < 3000; i++) {
    size_t first = (size_t)rand_r(&seed) % 60, pages = 1 + (size_t)rand_r(&seed) % 4;
    char *addr = shared + first * page + (size_t)rand_r(&seed) % 64;
    size_t len = pages * page - 64;
    int32_t access = (rand_r(&seed) % 3) ? MCA_RCACHE_ACCESS_LOCAL_WRITE
                                         : MCA_RCACHE_ACCESS_REMOTE_READ;
    mca_rcache_base_registration_t *r = reg_ok(addr, len, 0, access);
    mca_rcache_base_registration_t *f = NULL;
    if (NULL != r && 0 == rand_r(&seed) % 4) {
      CHECK(OPAL_SUCCESS == rc->rcache_find(rc, addr, len, &f), "find");
      CHECK(NULL == f || (f->base <= (unsigned char *)addr &&
                          f->bound >= (unsigned char *)addr + len - 1),
            "find gave a registration not covering the range");
    }
    if (NULL != r) {
      CHECK(r->ref_count >= 1, "ref_count %d while held", r->ref_count);
    }
    dereg_ok(f);
    dereg_ok(r);
    if (0 == rand_r(&seed) % 64) {
      (void)rc->rcache_evict(rc);
    }
  }
  /* regcache keeps each thread's last released references deferred
   * (counted as in use) until that thread calls again; evicting until
   * nothing is idle gives them back before the thread exits. */
  while (rc->rcache_evict(rc)) {
  }
  return NULL;
}

static void threads(void) {
  shared = map(64);
  pthread_t t[4];
  for (uintptr_t i = 0; i < 4; i++) {
    CHECK(0 == pthread_create(&t[i], NULL, worker, (void *)i), "pthread_create");
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
  }
  evict_all();
  CHECK(0 == btl.live, "%ld registrations live after every reference came back and evict",
        (long)btl.live);
  munmap(shared, 64 * page);
}

/* A second module beside `rc`, as a second device's. */
static void two(mca_rcache_base_resources_t *res) {
  rc2 = mca_rcache_base_module_create("regcache", NULL, res);
  CHECK(NULL != rc2 && rc2 != rc, "second module: %p", (void *)rc2);
  if (NULL == rc2) {
    return;
  }
  char *a = map(2);
  long before = btl.registers, deregs = btl.deregisters;
  mca_rcache_base_registration_t *r1 = reg_ok(a, 2 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  mca_rcache_base_registration_t *q1 = NULL;
  int ret = rc2->rcache_register(rc2, a, 2 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE, &q1);
  CHECK(OPAL_SUCCESS == ret && NULL != q1 && q1 != r1 && q1->rcache == rc2,
        "second module's register: %d %p", ret, (void *)q1);
  CHECK(btl.registers == before + 2, "two modules: %ld register_mem calls",
        btl.registers - before);
  dereg_ok(r1);
  if (NULL != q1) {
    CHECK(OPAL_SUCCESS == rc2->rcache_deregister(rc2, q1), "second module's deregister");
  }
  if (0 == remap_same(a, 2)) {
    r1 = reg_ok(a, 2 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
    q1 = NULL;
    ret = rc2->rcache_register(rc2, a, 2 * page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE, &q1);
    CHECK(OPAL_SUCCESS == ret && NULL != q1, "second module's register after re-map: %d", ret);
    CHECK(btl.registers == before + 4,
          "after munmap + re-map, %ld register_mem calls in all (want 4: both fresh)",
          btl.registers - before);
    CHECK(btl.deregisters >= deregs + 2, "the unmapped registrations were not deregistered");
    dereg_ok(r1);
    if (NULL != q1) {
      CHECK(OPAL_SUCCESS == rc2->rcache_deregister(rc2, q1), "second module's deregister");
    }
  } else {
    btl.errors++;
  }
  CHECK(OPAL_SUCCESS == mca_rcache_base_module_destroy(rc2), "second module destroy");
  rc2 = NULL;
  munmap(a, 2 * page);
}

static void uncached(void) {
  char *a = map(2);
  long before = btl.registers, deregs = btl.deregisters;
  mca_rcache_base_registration_t *r1 = reg_ok(a, page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  mca_rcache_base_registration_t *r2 = reg_ok(a, page, 0, MCA_RCACHE_ACCESS_LOCAL_WRITE);
  CHECK(btl.registers == before + 2, "uncached: %ld register_mem calls for two registers",
        btl.registers - before);
  dereg_ok(r1);
  dereg_ok(r2);
  CHECK(btl.deregisters == deregs + 2, "uncached: registrations kept after deregister");
  CHECK(!rc->rcache_evict(rc), "uncached: evict said true");
  mca_rcache_base_registration_t *f = (void *)1;
  CHECK(OPAL_SUCCESS == rc->rcache_find(rc, a, page, &f) && NULL == f, "uncached: find gave %p",
        (void *)f);
  munmap(a, 2 * page);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "basic";
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int size;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  page = (size_t)sysconf(_SC_PAGESIZE);

  mca_rcache_base_resources_t res = {.cache_name = "rcache_component_test",
                                     .reg_data = &btl,
                                     .sizeof_reg = sizeof(struct test_reg),
                                     .register_mem = test_register_mem,
                                     .deregister_mem = test_deregister_mem};
  rc = mca_rcache_base_module_create("regcache", NULL, &res);
  if (0 == strcmp(mode, "absent")) {
    CHECK(NULL == rc, "the component opened although it must refuse");
  } else if (NULL == rc) {
    CHECK(0, "mca_rcache_base_module_create(\"regcache\") failed: is the component in "
             "mca_base_component_path?");
  } else {
    CHECK(0 == strcmp(rc->rcache_component->rcache_version.mca_component_name, "regcache"),
          "component %s", rc->rcache_component->rcache_version.mca_component_name);
    if (0 == strcmp(mode, "basic")) {
      basic();
    } else if (0 == strcmp(mode, "bad")) {
      bad();
    } else if (0 == strcmp(mode, "threads")) {
      threads();
    } else if (0 == strcmp(mode, "two")) {
      two(&res);
    } else if (0 == strcmp(mode, "uncached")) {
      uncached();
    } else {
      CHECK(0, "unknown mode %s", mode);
    }
    CHECK(OPAL_SUCCESS == mca_rcache_base_module_destroy(rc), "module destroy");
    rc = NULL; /* so that valgrind sees a module finalize did not free */
    CHECK(0 == btl.live && btl.registers_ok == btl.deregisters,
          "leaked: %ld registered, %ld deregistered", btl.registers_ok, btl.deregisters);
  }
  int errors = btl.errors, total = 0;
  MPI_Reduce(&errors, &total, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
  if (0 == rank) {
    if (0 == total) {
      printf("rcache_component_test %s: PASSED (%d ranks)\n", mode, size);
    } else {
      printf("rcache_component_test %s: FAILED (%d errors)\n", mode, total);
    }
    fflush(stdout);
  }
  MPI_Finalize();
  return 0 == total ? 0 : 1;
}
