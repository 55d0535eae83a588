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

/*
 * Extensions (regcache umn/kmod). A program written against the 2010
 * header never sees them: every feature is off until requested.
 *
 * Features, negotiated with UMMUNOTIFY_EXCHANGE_FEATURES: the caller
 * passes the bits it wants, the device enables and returns the subset it
 * supports (unknown bits are dropped). Features can be turned on, never
 * off, and only before the first mmap() and the first registration
 * (-EBUSY otherwise).
 *
 * UMMUNOTIFY_FEATURE_REGION_WORDS: a 64-bit word per registration in the
 * mmap'd area. With it, UMMUNOTIFY_REGISTER_REGION writes back into
 * `reserved` the index of the registration's word, counted in __u64 from
 * the start of the mapping (always >= first_word of struct
 * ummunotify_area, so never the counter at index 0). The word is 0 when
 * the registration is made and is incremented by every event that hits
 * it, before that event is queued: a cache validates a hit with one load
 * (word == 0). The word belongs to the registration until it is
 * unregistered; it may then be reused. Map the whole area
 * (struct ummunotify_area.length bytes, offset 0, PROT_READ).
 */
#define UMMUNOTIFY_FEATURE_REGION_WORDS	(1U << 0)

/* Result of UMMUNOTIFY_GET_AREA. */
struct ummunotify_area {
	__u64	length;		/* bytes that mmap() at offset 0 may map */
	__u32	max_regions;	/* registrations this file accepts (-ENOSPC beyond) */
	__u32	first_word;	/* index (in __u64) of the first region word; 0 if off */
};

#define UMMUNOTIFY_GET_AREA		_IOR(UMMUNOTIFY_MAGIC, 4, \
					     struct ummunotify_area)

#endif /* _UAPI_LINUX_UMMUNOTIFY_H */
