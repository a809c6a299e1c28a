/*
 * stallwriter.c - the application the benchmark watches: small buffered
 * writes to one file on one mount, each timed.  A write() on a frozen
 * filesystem sleeps in sb_start_write() until the thaw, so the longest
 * single write is the stall an application feels.
 *
 * Usage: stallwriter FILE INTERVAL_US
 *
 * Writes 4 KiB every INTERVAL_US microseconds (rewriting the first 1 MiB of
 * FILE over and over) and listens on stdin between writes:
 *   'r'  reset the statistics, answer "ok"
 *   'd'  answer "MAX_NS MAX_START_NS COUNT" for the writes since the reset
 *   'q' or EOF  exit
 * Times are CLOCK_MONOTONIC, comparable with the bench's own clock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define SPAN (1024 * 1024)

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void answer(const char *text)
{
	size_t len = strlen(text);

	/* stdout is a pipe to the bench; a short write here is fatal anyway. */
	if (write(STDOUT_FILENO, text, len) != (ssize_t)len)
		exit(1);
}

int main(int argc, char **argv)
{
	static char buf[BLOCK];
	struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
	struct timespec wait;
	int64_t max_ns = 0, max_start = 0, count = 0, t0, t1;
	off_t off = 0;
	char cmd, line[96];
	long interval_us;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: stallwriter FILE INTERVAL_US\n");
		return 2;
	}
	interval_us = strtol(argv[2], NULL, 10);
	wait.tv_sec = interval_us / 1000000;
	wait.tv_nsec = (interval_us % 1000000) * 1000;
	fd = open(argv[1], O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "stallwriter: %s: %s\n", argv[1],
			strerror(errno));
		return 1;
	}
	memset(buf, 'w', sizeof(buf));
	for (;;) {
		/* The poll timeout is the pause between writes. */
		if (ppoll(&pfd, 1, &wait, NULL) > 0) {
			if (read(STDIN_FILENO, &cmd, 1) != 1 || cmd == 'q')
				return 0;
			if (cmd == 'r') {
				max_ns = max_start = count = 0;
				answer("ok\n");
			} else if (cmd == 'd') {
				snprintf(line, sizeof(line), "%lld %lld %lld\n",
					 (long long)max_ns,
					 (long long)max_start,
					 (long long)count);
				answer(line);
			}
			continue;
		}
		t0 = now_ns();
		if (pwrite(fd, buf, BLOCK, off) != BLOCK) {
			fprintf(stderr, "stallwriter: write: %s\n",
				strerror(errno));
			return 1;
		}
		t1 = now_ns();
		off = (off + BLOCK) % SPAN;
		count++;
		if (t1 - t0 > max_ns) {
			max_ns = t1 - t0;
			max_start = t0;
		}
	}
}
