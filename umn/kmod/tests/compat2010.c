// SPDX-License-Identifier: GPL-2.0
/*
 * A program written against the 2010 ummunotify ABI only (no extension):
 * open, EXCHANGE_FEATURES(0), mmap the counter page, register, munmap,
 * check the counter moved before any read, read INVAL + LAST, unregister.
 * Exit 0 on success; prints what failed otherwise.
 *
 *   cc -Wall -Werror -I umn/include -o compat2010 umn/kmod/tests/compat2010.c
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ummunotify.h"

#define CHECK(c) do { if (!(c)) { \
	fprintf(stderr, "compat2010: %s:%d: %s failed (errno %d: %s)\n", \
		__FILE__, __LINE__, #c, errno, strerror(errno)); return 1; } } while (0)

int main(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	struct ummunotify_register_ioctl r;
	struct ummunotify_event ev[4];
	volatile const uint64_t *counter;
	uint64_t cookie = 0x2010;
	uint32_t features = 0;
	char *buf;
	ssize_t n;
	int fd;

	fd = open("/dev/ummunotify", O_RDONLY | O_NONBLOCK);
	CHECK(fd >= 0);
	CHECK(ioctl(fd, UMMUNOTIFY_EXCHANGE_FEATURES, &features) == 0);
	CHECK(features == 0);
	counter = mmap(NULL, pg, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(counter != MAP_FAILED);
	CHECK(*counter == 0);

	buf = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(buf != MAP_FAILED);
	memset(buf, 1, 4 * pg);
	memset(&r, 0, sizeof(r));
	r.start = (uintptr_t)buf;
	r.end = (uintptr_t)buf + 4 * pg;
	r.user_cookie = cookie;
	CHECK(ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r) == 0);
	CHECK(r.reserved == 0);

	CHECK(read(fd, ev, sizeof(ev)) < 0 && errno == EAGAIN);
	CHECK(munmap(buf + pg, pg) == 0);
	CHECK(*counter == 1);	/* before any read */

	n = read(fd, ev, sizeof(ev));
	CHECK(n == 2 * (ssize_t)sizeof(ev[0]));
	CHECK(ev[0].type == UMMUNOTIFY_EVENT_TYPE_INVAL);
	CHECK(ev[0].flags & UMMUNOTIFY_EVENT_FLAG_HINT);
	CHECK(ev[0].hint_start == (uintptr_t)buf + pg);
	CHECK(ev[0].hint_end == (uintptr_t)buf + 2 * pg);
	CHECK(ev[0].user_cookie_counter == cookie);
	CHECK(ev[1].type == UMMUNOTIFY_EVENT_TYPE_LAST);
	CHECK(ev[1].user_cookie_counter == 1);

	CHECK(ioctl(fd, UMMUNOTIFY_UNREGISTER_REGION, &cookie) == 0);
	CHECK(munmap(buf, pg) == 0 && munmap(buf + 2 * pg, 2 * pg) == 0);
	CHECK(*counter == 1);	/* unregistered: not counted */
	CHECK(close(fd) == 0);
	printf("compat2010: ok\n");
	return 0;
}
