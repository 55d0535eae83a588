// SPDX-License-Identifier: GPL-2.0
/*
 * A storm of unmaps over live registrations, then exit with them live:
 * what the module must survive before `rmmod` (run by `cargo xtask kmod`
 * in the VM, several load/unload cycles, dmesg checked for WARN/BUG).
 *
 *   storm [PAGES] [THREADS] [hold]
 *
 * Opens /dev/ummunotify with per-region words, registers every page of a
 * PAGES-page mapping (cookie = page index), then THREADS threads each
 * munmap their share page by page while the main thread reads events
 * (non-blocking) and another thread maps and unmaps memory nobody
 * registered. Nothing is unregistered and events are left unread at
 * exit: the kernel's exit path and release() free them. With "hold", it
 * prints its result and waits for SIGUSR1 before exiting, so that the
 * caller can try `rmmod` while the device is certainly open. Exit status 0
 * when every page's word moved and the generation counter moved; 1,
 * with a message, otherwise (2: a system call failed).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ummunotify.h"

static long pagesz;
static char *base;
static long pages;
static int threads;
static volatile int stop;

static volatile sig_atomic_t released;

static void on_usr1(int sig)
{
	(void)sig;
	released = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "storm: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void *unmapper(void *arg)
{
	long t = (long)arg;

	for (long i = t; i < pages; i += threads)
		if (munmap(base + i * pagesz, pagesz))
			die("munmap");
	return NULL;
}

static void *churn(void *arg)
{
	(void)arg;
	while (!stop) {
		void *p = mmap(NULL, 16 * pagesz, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			die("mmap (churn)");
		memset(p, 1, 16 * pagesz);
		if (munmap(p, 16 * pagesz))
			die("munmap (churn)");
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct ummunotify_area area;
	struct ummunotify_event ev[64];
	pthread_t tid[64], churner;
	uint32_t *word_idx;
	__u32 features = UMMUNOTIFY_FEATURE_REGION_WORDS;
	volatile const uint64_t *map;
	long read_events = 0;
	int fd;

	int hold = argc > 3 && !strcmp(argv[3], "hold");
	sigset_t usr1, old;

	/* Blocked from the start, so a SIGUSR1 sent early is not lost. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	signal(SIGUSR1, on_usr1);
	sigprocmask(SIG_BLOCK, &usr1, &old);
	pagesz = sysconf(_SC_PAGESIZE);
	pages = argc > 1 ? atol(argv[1]) : 4096;
	threads = argc > 2 ? atoi(argv[2]) : 4;
	if (pages < 1 || threads < 1 || threads > 64) {
		fprintf(stderr, "usage: storm [PAGES >= 1] [THREADS 1..64]\n");
		return 2;
	}
	fd = open("/dev/ummunotify", O_RDWR | O_NONBLOCK);
	if (fd < 0)
		die("open /dev/ummunotify");
	if (ioctl(fd, UMMUNOTIFY_EXCHANGE_FEATURES, &features))
		die("EXCHANGE_FEATURES");
	if (!(features & UMMUNOTIFY_FEATURE_REGION_WORDS)) {
		fprintf(stderr, "storm: the device did not grant REGION_WORDS\n");
		return 1;
	}
	if (ioctl(fd, UMMUNOTIFY_GET_AREA, &area))
		die("GET_AREA");
	if (area.max_regions < pages) {
		fprintf(stderr, "storm: max_regions %u < %ld pages\n", area.max_regions, pages);
		return 2;
	}
	map = mmap(NULL, area.length, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap (area)");
	base = mmap(NULL, pages * pagesz, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("mmap (pages)");
	memset(base, 1, pages * pagesz);
	word_idx = calloc(pages, sizeof(*word_idx));
	if (!word_idx)
		die("calloc");
	for (long i = 0; i < pages; i++) {
		struct ummunotify_register_ioctl r = {
			.start = (uintptr_t)(base + i * pagesz),
			.end = (uintptr_t)(base + (i + 1) * pagesz),
			.user_cookie = (uint64_t)i,
		};

		if (ioctl(fd, UMMUNOTIFY_REGISTER_REGION, &r))
			die("REGISTER_REGION");
		word_idx[i] = r.reserved;
		if (r.reserved < area.first_word || r.reserved >= area.length / 8) {
			fprintf(stderr, "storm: word index %u outside the area\n", r.reserved);
			return 1;
		}
	}
	if (pthread_create(&churner, NULL, churn, NULL))
		die("pthread_create");
	for (long t = 0; t < threads; t++)
		if (pthread_create(&tid[t], NULL, unmapper, (void *)t))
			die("pthread_create");
	/* Read some events while the storm runs; leave the rest queued. */
	for (int k = 0; k < 50; k++) {
		ssize_t n = read(fd, ev, sizeof(ev));

		if (n > 0)
			read_events += n / (ssize_t)sizeof(ev[0]);
		else if (n < 0 && errno != EAGAIN)
			die("read");
	}
	for (long t = 0; t < threads; t++)
		pthread_join(tid[t], NULL);
	stop = 1;
	pthread_join(churner, NULL);
	for (long i = 0; i < pages; i++) {
		if (map[word_idx[i]] == 0) {
			fprintf(stderr, "storm: page %ld unmapped but its word is 0\n", i);
			return 1;
		}
	}
	if (map[0] == 0) {
		fprintf(stderr, "storm: the counter never moved\n");
		return 1;
	}
	printf("storm: %ld registrations, %d unmapping threads: every word moved, counter %llu, "
	       "%ld records read, the rest left queued; exiting with all registrations live\n",
	       pages, threads, (unsigned long long)map[0], read_events);
	fflush(stdout);
	if (hold) {
		sigdelset(&old, SIGUSR1);
		while (!released)
			sigsuspend(&old);
	}
	return 0;
}
