/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * ummunotify UAPI: userspace notification of memory-map changes for
 * registered address ranges. Bit-compatible with the ummunotify proposal
 * (R. Dreier, 2009-2010). Shared by the regcache `umn` crate (the Rust
 * mirror lives in umn/src/abi.rs; a test compares the two) and by the
 * kernel module (umn/kmod).
 *
 * Ranges are half-open: [start, end).
 */
#ifndef _UAPI_LINUX_UMMUNOTIFY_H
#define _UAPI_LINUX_UMMUNOTIFY_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <linux/types.h>
#include <sys/ioctl.h>
#endif

/* Event types (struct ummunotify_event.type). */
enum {
	UMMUNOTIFY_EVENT_TYPE_INVAL = 0,
	UMMUNOTIFY_EVENT_TYPE_LAST  = 1,
};

/* Event flags (struct ummunotify_event.flags). */
enum {
	/* hint_start/hint_end hold the invalidated part of the range. */
	UMMUNOTIFY_EVENT_FLAG_HINT = 1 << 0,
};

/*
 * One record returned by read(2). INVAL: user_cookie_counter is the cookie
 * of the invalidated registration. LAST (ends a read that drained the
 * queue): user_cookie_counter is the generation counter.
 */
struct ummunotify_event {
	__u32	type;
	__u32	flags;
	__u64	hint_start;
	__u64	hint_end;
	__u64	user_cookie_counter;
};

/* Argument of UMMUNOTIFY_REGISTER_REGION. flags and reserved must be 0. */
struct ummunotify_register_ioctl {
	__u64	start;
	__u64	end;
	__u64	user_cookie;
	__u32	flags;
	__u32	reserved;
};

#define UMMUNOTIFY_MAGIC		'U'

#define UMMUNOTIFY_EXCHANGE_FEATURES	_IOWR(UMMUNOTIFY_MAGIC, 1, __u32)
#define UMMUNOTIFY_REGISTER_REGION	_IOW(UMMUNOTIFY_MAGIC, 2, \
					     struct ummunotify_register_ioctl)
#define UMMUNOTIFY_UNREGISTER_REGION	_IOW(UMMUNOTIFY_MAGIC, 3, __u64)

#endif /* _UAPI_LINUX_UMMUNOTIFY_H */
