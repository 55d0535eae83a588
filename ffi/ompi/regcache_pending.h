/* regcache_pending.h — TEMPORARY: the caller's-registrar C API of issue 12
 * (spec: the lead's /work/logs/capi-spec.md), declared here so that the
 * Open MPI component compiles before ffi/include/regcache.h has it.
 *
 * Include it after regcache.h. Once regcache.h defines
 * REGCACHE_REGISTRAR_OPS_VERSION (the lead's code on main) everything
 * below is skipped, and this file is to be deleted.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */

#ifndef REGCACHE_PENDING_H
#define REGCACHE_PENDING_H

#ifndef REGCACHE_REGISTRAR_OPS_VERSION

#define REGCACHE_REGISTRAR_OPS_VERSION 1
#define REGCACHE_OPS_NO_KEYS 1
#define REGCACHE_ERR_NOT_CACHED ((enum regcache_result)4738)

enum regcache_reg_status {
  REGCACHE_REG_OK = 0,
  REGCACHE_REG_NO_RESOURCES = 1,
  REGCACHE_REG_FAILED = 2,
};

struct regcache_registrar_ops {
  uint32_t version;
  uint32_t flags;
  int (*reg)(void *ctx, void *addr, size_t len, uint32_t access, void **user_data, uint32_t *lkey,
             uint32_t *rkey);
  int (*dereg)(void *ctx, void *user_data);
  void *ctx;
};

enum regcache_result regcache_cache_new_with_ops(const struct regcache_config *config,
                                                 const struct regcache_registrar_ops *ops,
                                                 struct regcache_cache **out);
enum regcache_result regcache_handle_user_data(const struct regcache_handle *handle, void **out);
enum regcache_result regcache_cache_find(const struct regcache_cache *cache, const void *addr,
                                         size_t len, uint32_t access,
                                         struct regcache_handle **out);
enum regcache_result regcache_cache_evict(const struct regcache_cache *cache, size_t max,
                                          size_t *out_evicted);

#endif /* REGCACHE_REGISTRAR_OPS_VERSION */
#endif /* REGCACHE_PENDING_H */
